//! A str0m peer in a browser's place (full ICE, DTLS, SRTP over UDP on 127.0.0.1), signaling through
//! the API. Its frames carry markers, "A/patient/audio/1/7" (label, kind, phase, number), so that every
//! delivery and every recorded frame can be checked against where it must and must not go.

use std::time::Instant;

use reqwest::StatusCode;
use serde_json::{Value, json};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;

use crate::helpers::Client;

/// A marker a frame's payload carries.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Marker {
    /// Who sent it: "A/patient".
    pub label: String,
    pub kind: &'static str,
    pub phase: u32,
    pub n: u32,
}

impl Marker {
    pub fn parse(payload: &[u8]) -> Marker {
        let text = std::str::from_utf8(payload).expect("a marker payload");
        let parts: Vec<&str> = text.split('/').collect();
        assert_eq!(parts.len(), 5, "not a marker: {text}");
        Marker {
            label: format!("{}/{}", parts[0], parts[1]),
            kind: if parts[2] == "audio" { "audio" } else { "video" },
            phase: parts[3].parse().unwrap(),
            n: parts[4].parse().unwrap(),
        }
    }

    /// The marker in a frame's payload: after VP8's first byte in video.
    pub fn of_frame(video: bool, payload: &[u8]) -> Marker {
        Marker::parse(if video { &payload[1..] } else { payload })
    }
}

fn kind_name(kind: MediaKind) -> &'static str {
    if kind == MediaKind::Audio {
        "audio"
    } else {
        "video"
    }
}

pub struct Peer {
    pub label: String,
    rtc: Rtc,
    socket: UdpSocket,
    timeout: Instant,
    pub connected: bool,
    audio: Option<Mid>,
    video: Option<Mid>,
    pending: Option<SdpPendingOffer>,
    sent: [u64; 2],
    pub received: Vec<Marker>,
}

impl Peer {
    pub async fn new(label: &str) -> Peer {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let now = Instant::now();
        let mut rtc = Rtc::builder().build(now);
        rtc.add_local_candidate(Candidate::host(socket.local_addr().unwrap(), "udp").unwrap());
        let mut peer = Peer {
            label: label.to_owned(),
            rtc,
            socket,
            timeout: now,
            connected: false,
            audio: None,
            video: None,
            pending: None,
            sent: [0, 0],
            received: Vec::new(),
        };
        peer.drain();
        peer
    }

    /// An offer with a send-and-receive audio line and, if `video`, a video line, as a browser makes.
    pub fn offer(&mut self, video: bool) -> String {
        let mut api = self.rtc.sdp_api();
        self.audio = Some(api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None));
        if video {
            self.video = Some(api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None));
        }
        let change = api.apply().expect("a change to offer");
        self.sent_offer(change)
    }

    /// Switching to audio only: the video line is removed.
    pub fn offer_without_video(&mut self) -> String {
        let mut api = self.rtc.sdp_api();
        api.stop_media(self.video.take().expect("video to stop"));
        let change = api.apply().expect("a change to offer");
        self.sent_offer(change)
    }

    /// Switching back to video: a new video line, as a browser adds when the camera comes back on.
    pub fn offer_with_video(&mut self) -> String {
        let mut api = self.rtc.sdp_api();
        self.video = Some(api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None));
        let change = api.apply().expect("a change to offer");
        self.sent_offer(change)
    }

    fn sent_offer(&mut self, (offer, pending): (SdpOffer, SdpPendingOffer)) -> String {
        self.pending = Some(pending);
        self.drain();
        offer.to_sdp_string()
    }

    fn accept(&mut self, answer: &str) {
        let answer = SdpAnswer::from_sdp_string(answer).expect("the SFU's answer parses");
        let pending = self.pending.take().expect("an offer in flight");
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .expect("the SFU's answer is accepted");
        self.drain();
    }

    /// Posts `offer` to `path` as `client`, as someone who agrees to be recorded; on 200, takes the
    /// answer. Returns what the API said.
    pub async fn signal(
        &mut self,
        client: &Client,
        path: &str,
        offer: String,
        mode: &str,
    ) -> (StatusCode, Value) {
        let (status, body) = client
            .post(path, json!({"sdp": offer, "mode": mode, "consent": "given"}))
            .await;
        if status == StatusCode::OK {
            self.accept(body["sdp"].as_str().expect("an answer"));
        } else {
            self.pending = None;
        }
        (status, body)
    }

    /// Feeds whatever arrived on the socket and the due timeout into the Rtc.
    pub fn pump(&mut self) {
        let mut buf = vec![0; 2048];
        while let Ok((n, source)) = self.socket.try_recv_from(&mut buf) {
            let destination = self.socket.local_addr().unwrap();
            let Ok(receive) = Receive::new(Protocol::Udp, source, destination, &buf[..n]) else {
                continue;
            };
            self.rtc
                .handle_input(Input::Receive(Instant::now(), receive))
                .unwrap();
            self.drain();
        }
        let now = Instant::now();
        if self.timeout <= now {
            self.rtc.handle_input(Input::Timeout(now)).unwrap();
            self.drain();
        }
    }

    fn drain(&mut self) {
        loop {
            match self.rtc.poll_output().unwrap() {
                Output::Timeout(t) => {
                    self.timeout = t;
                    return;
                }
                Output::Transmit(t) => {
                    // Loopback takes these at once; a full buffer would show up as lost frames.
                    let _ = self.socket.try_send_to(&t.contents, t.destination);
                }
                Output::Event(Event::Connected) => self.connected = true,
                Output::Event(Event::MediaData(data)) => {
                    let kind = self.rtc.media(data.mid).unwrap().kind();
                    let marker = Marker::of_frame(kind == MediaKind::Video, &data.data);
                    assert_eq!(
                        marker.kind,
                        kind_name(kind),
                        "{}: {marker:?} on the wrong line",
                        self.label
                    );
                    self.received.push(marker);
                }
                Output::Event(_) => {}
            }
        }
    }

    /// Sends frame `n` of `phase` on the line of `kind`; a video frame's first byte is VP8's
    /// (inverse) keyframe flag.
    pub fn send(&mut self, kind: MediaKind, phase: u32, n: u32) {
        let (mid, codec, rate, step) = match kind {
            MediaKind::Audio => (self.audio, Codec::Opus, Frequency::FORTY_EIGHT_KHZ, 960),
            MediaKind::Video => (self.video, Codec::Vp8, Frequency::NINETY_KHZ, 3000),
        };
        let mid = mid.expect("a line to send on");
        let marker = format!("{}/{}/{phase}/{n}", self.label, kind_name(kind));
        let payload = if kind == MediaKind::Video {
            let mut payload = vec![if n == 0 { 0x00 } else { 0x01 }];
            payload.extend_from_slice(marker.as_bytes());
            payload
        } else {
            marker.into_bytes()
        };
        let slot = usize::from(kind == MediaKind::Video);
        let time = MediaTime::new(self.sent[slot] * step, rate);
        self.sent[slot] += 1;
        let writer = self.rtc.writer(mid).expect("a writer");
        let pt = writer
            .payload_params()
            .find(|p| p.spec().codec == codec)
            .expect("codec negotiated")
            .pt();
        writer.write(pt, Instant::now(), time, payload).unwrap();
        self.drain();
    }

    /// The numbers of `label`'s frames of `kind` in `phase` that arrived here.
    pub fn received(&self, label: &str, kind: &str, phase: u32) -> std::collections::BTreeSet<u32> {
        self.received
            .iter()
            .filter(|m| m.label == label && m.kind == kind && m.phase == phase)
            .map(|m| m.n)
            .collect()
    }
}
