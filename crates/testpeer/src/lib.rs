//! A str0m peer in a browser's place for the call tests: full ICE, DTLS and SRTP over UDP on
//! 127.0.0.1. It offers audio and video lines (and receive-only ones, as the call page does for a
//! call of three), sends frames whose payloads carry markers, "A/patient/audio/1/7" (group, who,
//! kind, phase, number), and records every frame that arrives with the line it came on, so that
//! every delivery can be checked against where it must and must not go. Signaling is the caller's:
//! the peer makes offers and takes answers as SDP strings.

use std::collections::BTreeSet;
use std::ops::DerefMut;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, KeyframeRequestKind, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;

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

    /// The sender's group, the label's first part: "A" of "A/patient".
    pub fn group(&self) -> &str {
        self.label.split('/').next().unwrap()
    }
}

/// The numbers of `label`'s frames of `kind` in `phase` among `markers`.
pub fn numbers<'a>(
    markers: impl IntoIterator<Item = &'a Marker>,
    label: &str,
    kind: &str,
    phase: u32,
) -> BTreeSet<u32> {
    markers
        .into_iter()
        .filter(|m| m.label == label && m.kind == kind && m.phase == phase)
        .map(|m| m.n)
        .collect()
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
    /// Every frame that arrived, with the line it came on.
    received: Vec<(Mid, Marker)>,
    pub keyframe_requests: usize,
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
            keyframe_requests: 0,
        };
        peer.drain();
        peer
    }

    /// The send-and-receive audio line.
    pub fn audio(&self) -> Option<Mid> {
        self.audio
    }

    /// The send-and-receive video line, while there is one.
    pub fn video(&self) -> Option<Mid> {
        self.video
    }

    /// An offer with a send-and-receive audio line and, if `video`, a video line, as a browser makes.
    pub fn offer(&mut self, video: bool) -> String {
        self.offer_lines(video, 0)
    }

    /// As [`offer`](Self::offer), with `receive_only` more receiving lines of each kind offered.
    pub fn offer_lines(&mut self, video: bool, receive_only: usize) -> String {
        let mut api = self.rtc.sdp_api();
        self.audio = Some(api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None));
        if video {
            self.video = Some(api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None));
        }
        for _ in 0..receive_only {
            api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
            if video {
                api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
            }
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

    /// Takes the SFU's answer to the offer in flight.
    pub fn accept(&mut self, answer: &str) {
        let answer = SdpAnswer::from_sdp_string(answer).expect("the SFU's answer parses");
        let pending = self.pending.take().expect("an offer in flight");
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .expect("the SFU's answer is accepted");
        self.drain();
    }

    /// Forgets the offer in flight: the other side refused it.
    pub fn refused(&mut self) {
        self.pending = None;
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
                Output::Event(Event::KeyframeRequest(_)) => self.keyframe_requests += 1,
                Output::Event(Event::MediaData(data)) => {
                    let kind = self.rtc.media(data.mid).unwrap().kind();
                    let marker = Marker::of_frame(kind == MediaKind::Video, &data.data);
                    assert_eq!(
                        marker.kind,
                        kind_name(kind),
                        "{}: {marker:?} on the wrong line",
                        self.label
                    );
                    self.received.push((data.mid, marker));
                }
                Output::Event(_) => {}
            }
        }
    }

    /// Sends frame `n` of `phase` on the line of `kind`; a video frame's first byte is VP8's
    /// (inverse) keyframe flag, set for frame 0.
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

    /// Asks, as a browser's decoder would, for a keyframe of the video it receives.
    pub fn request_keyframe(&mut self) {
        self.request_keyframe_on(self.video.expect("a video line"));
    }

    /// Asks for a keyframe of the video that arrives on line `mid`.
    pub fn request_keyframe_on(&mut self, mid: Mid) {
        let mut writer = self.rtc.writer(mid).expect("a writer");
        writer
            .request_keyframe(None, KeyframeRequestKind::Pli)
            .expect("video to have arrived");
        self.drain();
    }

    /// The markers of every frame that arrived, in order.
    pub fn markers(&self) -> impl Iterator<Item = &Marker> {
        self.received.iter().map(|(_, m)| m)
    }

    /// The numbers of `label`'s frames of `kind` in `phase` that arrived here.
    pub fn received(&self, label: &str, kind: &str, phase: u32) -> BTreeSet<u32> {
        numbers(self.markers(), label, kind, phase)
    }

    /// The lines frames of `kind` from `label` came on.
    pub fn lines_from(&self, label: &str, kind: &str) -> BTreeSet<Mid> {
        self.received
            .iter()
            .filter(|(_, m)| m.label == label && m.kind == kind)
            .map(|(mid, _)| *mid)
            .collect()
    }

    /// The one line all frames of `kind` from `label` came on.
    pub fn line_from(&self, label: &str, kind: &str) -> Mid {
        let lines = self.lines_from(label, kind);
        assert_eq!(lines.len(), 1, "{}: {kind} from {label} on {lines:?}", self.label);
        *lines.first().unwrap()
    }

    /// Panics unless every frame that arrived came from another member of this peer's group.
    pub fn assert_only_from_own_group(&self) {
        let group = self.label.split('/').next().unwrap();
        for marker in self.markers() {
            assert_eq!(marker.group(), group, "{} got {marker:?}", self.label);
            assert_ne!(marker.label, self.label, "{} got its own frame back", self.label);
        }
    }
}

/// Peers in a test, each known by its label, whose sockets and timers are driven while the test
/// waits. `P` is a peer or a test's wrapper of one.
pub struct Peers<P> {
    peers: Vec<P>,
    /// Bound on each [`run_until`](Self::run_until).
    wait: Duration,
}

impl<P: DerefMut<Target = Peer>> Peers<P> {
    pub fn new(wait: Duration) -> Self {
        Peers {
            peers: Vec::new(),
            wait,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &P> {
        self.peers.iter()
    }

    pub fn get(&self, label: &str) -> &P {
        self.peers
            .iter()
            .find(|p| p.label == label)
            .unwrap_or_else(|| panic!("no peer {label}"))
    }

    pub fn get_mut(&mut self, label: &str) -> &mut P {
        self.peers
            .iter_mut()
            .find(|p| p.label == label)
            .unwrap_or_else(|| panic!("no peer {label}"))
    }

    /// Adds `peer`, in place of the one with its label if there is one: a rejoin from a new socket.
    pub fn put(&mut self, peer: P) {
        match self.peers.iter().position(|p| p.label == peer.label) {
            Some(old) => self.peers[old] = peer,
            None => self.peers.push(peer),
        }
    }

    /// Drops the peer labelled `label`, if any, as a closed browser tab.
    pub fn remove(&mut self, label: &str) {
        self.peers.retain(|p| p.label != label);
    }

    pub fn all_connected(&self) -> bool {
        self.peers.iter().all(|p| p.connected)
    }

    fn pump(&mut self) {
        for peer in &mut self.peers {
            peer.pump();
        }
    }

    /// Pumps every peer for `duration` (at least once), letting the runtime's other tasks (the
    /// SFU's, when it runs on this runtime) run in between.
    pub async fn run_for(&mut self, duration: Duration) {
        let end = Instant::now() + duration;
        loop {
            self.pump();
            if Instant::now() >= end {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Pumps until `done`; panics, naming `what`, if that takes longer than the wait.
    pub async fn run_until(&mut self, what: &str, done: impl Fn(&Self) -> bool) {
        let end = Instant::now() + self.wait;
        while !done(self) {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            self.run_for(Duration::from_millis(2)).await;
        }
    }

    /// Each listed peer sends `frames` frames of `phase`: audio every 20 ms and, for those marked
    /// so, video with it.
    pub async fn send_phase(&mut self, phase: u32, frames: u32, senders: &[(&str, bool)]) {
        for n in 0..frames {
            for (label, video) in senders {
                let peer = self.get_mut(label);
                peer.send(MediaKind::Audio, phase, n);
                if *video {
                    peer.send(MediaKind::Video, phase, n);
                }
            }
            self.run_for(Duration::from_millis(20)).await;
        }
    }
}
