//! The SFU end to end over UDP on 127.0.0.1: str0m clients stand in for browsers (full ICE,
//! DTLS, SRTP), join two rooms at once through the driver and send frames whose payloads name
//! their room, sender, kind, phase and number, so that every delivery and every recorded frame
//! can be checked against where it must and must not go.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use confide_media::Track;
use confide_media::sfu::driver::{self, DriverConfig, DriverError, SfuHandle};
use confide_media::sfu::{Participant, ParticipantId, RecordedFrame, Role, RoomId, Sfu, SfuError};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, KeyframeRequestKind, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use uuid::Uuid;

const ROOM_A: RoomId = RoomId(Uuid::from_u128(0xA));
const ROOM_B: RoomId = RoomId(Uuid::from_u128(0xB));
/// Frames of each kind each client sends per phase.
const FRAMES: u32 = 10;
/// Bound on each wait; the whole test takes a few seconds when it passes.
const PHASE_TIMEOUT: Duration = Duration::from_secs(4);

fn participant(n: u128, role: Role) -> Participant {
    Participant {
        id: ParticipantId(Uuid::from_u128(n)),
        role,
    }
}

/// A marker a frame's payload carries: "room-A/c1/audio/2/7".
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Marker {
    label: String,
    kind: &'static str,
    phase: u32,
    n: u32,
}

impl Marker {
    fn parse(payload: &[u8]) -> Marker {
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

    fn room_label(&self) -> &str {
        self.label.split('/').next().unwrap()
    }
}

fn kind_name(kind: MediaKind) -> &'static str {
    if kind == MediaKind::Audio {
        "audio"
    } else {
        "video"
    }
}

/// A VP8 payload: the first byte's low bit is VP8's inverse keyframe flag, then the marker.
fn vp8_payload(keyframe: bool, marker: &str) -> Vec<u8> {
    let mut payload = vec![if keyframe { 0x00 } else { 0x01 }];
    payload.extend_from_slice(marker.as_bytes());
    payload
}

/// A str0m peer in the browser's role: full ICE, one socket, audio and video lines it offers.
struct Client {
    label: String,
    room: RoomId,
    who: Participant,
    rtc: Rtc,
    socket: UdpSocket,
    timeout: Instant,
    connected: bool,
    audio: Option<Mid>,
    video: Option<Mid>,
    pending: Option<SdpPendingOffer>,
    sent: [u64; 2],
    received: Vec<Marker>,
    keyframe_requests: usize,
}

impl Client {
    async fn new(label: &str, room: RoomId, who: Participant) -> Client {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let now = Instant::now();
        let mut rtc = Rtc::builder().build(now);
        rtc.add_local_candidate(Candidate::host(socket.local_addr().unwrap(), "udp").unwrap());
        let mut client = Client {
            label: label.to_owned(),
            room,
            who,
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
        client.drain();
        client
    }

    /// An offer with a send-and-receive audio line and, if `video`, a video line.
    fn offer(&mut self, video: bool) -> String {
        let mut api = self.rtc.sdp_api();
        self.audio = Some(api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None));
        if video {
            self.video = Some(api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None));
        }
        let change = api.apply().expect("a change to offer");
        self.sent_offer(change)
    }

    fn sent_offer(&mut self, (offer, pending): (SdpOffer, SdpPendingOffer)) -> String {
        self.pending = Some(pending);
        self.drain();
        offer.to_sdp_string()
    }

    /// Switches to audio only: the video line is removed.
    fn offer_without_video(&mut self) -> String {
        let mut api = self.rtc.sdp_api();
        api.stop_media(self.video.take().expect("video to stop"));
        let change = api.apply().expect("a change to offer");
        self.sent_offer(change)
    }

    fn offer_with_video(&mut self) -> String {
        let mut api = self.rtc.sdp_api();
        self.video = Some(api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None));
        let change = api.apply().expect("a change to offer");
        self.sent_offer(change)
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

    async fn join(&mut self, sfu: &SfuHandle, video: bool) {
        let offer = self.offer(video);
        let answer = sfu.join(self.room, self.who, offer).await.expect("join");
        self.accept(&answer);
    }

    /// Feeds whatever arrived on the socket and the due timeout into the Rtc.
    fn pump(&mut self) {
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
                    let payload = if kind == MediaKind::Video {
                        &data.data[1..]
                    } else {
                        &data.data[..]
                    };
                    let marker = Marker::parse(payload);
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

    /// Sends frame `n` of `phase` on the line of `kind`.
    fn send(&mut self, kind: MediaKind, phase: u32, n: u32) {
        let (mid, codec, rate, step) = match kind {
            MediaKind::Audio => (self.audio, Codec::Opus, Frequency::FORTY_EIGHT_KHZ, 960),
            MediaKind::Video => (self.video, Codec::Vp8, Frequency::NINETY_KHZ, 3000),
        };
        let mid = mid.expect("a line to send on");
        let marker = format!("{}/{}/{phase}/{n}", self.label, kind_name(kind));
        let payload = if kind == MediaKind::Video {
            vp8_payload(n == 0, &marker)
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
    fn request_keyframe(&mut self) {
        let mid = self.video.expect("a video line");
        let mut writer = self.rtc.writer(mid).expect("a writer");
        writer
            .request_keyframe(None, KeyframeRequestKind::Pli)
            .expect("video to have arrived");
        self.drain();
    }

    fn received(&self, label: &str, kind: &str, phase: u32) -> BTreeSet<u32> {
        self.received
            .iter()
            .filter(|m| m.label == label && m.kind == kind && m.phase == phase)
            .map(|m| m.n)
            .collect()
    }
}

/// The clients plus the recorder's side of the driver.
struct World {
    sfu: SfuHandle,
    recorded_rx: mpsc::Receiver<RecordedFrame>,
    recorded: Vec<RecordedFrame>,
    clients: Vec<Client>,
}

impl World {
    fn client(&mut self, label: &str) -> &mut Client {
        self.clients.iter_mut().find(|c| c.label == label).unwrap()
    }

    fn get(&self, label: &str) -> &Client {
        self.clients.iter().find(|c| c.label == label).unwrap()
    }

    async fn step(&mut self) {
        for client in &mut self.clients {
            client.pump();
        }
        while let Ok(frame) = self.recorded_rx.try_recv() {
            self.recorded.push(frame);
        }
        // The SFU task runs on this runtime while the test sleeps.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    async fn run_for(&mut self, duration: Duration) {
        let end = Instant::now() + duration;
        while Instant::now() < end {
            self.step().await;
        }
    }

    async fn run_until(&mut self, what: &str, done: impl Fn(&World) -> bool) {
        let end = Instant::now() + PHASE_TIMEOUT;
        while !done(self) {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            self.step().await;
        }
    }

    /// Each listed client sends a phase's frames, an audio frame every 20 ms and, for those
    /// marked so, a video frame with it.
    async fn send_phase(&mut self, phase: u32, senders: &[(&str, bool)]) {
        for n in 0..FRAMES {
            for (label, video) in senders {
                let client = self.client(label);
                client.send(MediaKind::Audio, phase, n);
                if *video {
                    client.send(MediaKind::Video, phase, n);
                }
            }
            self.run_for(Duration::from_millis(20)).await;
        }
    }

    fn recorded_numbers(&self, label: &str, track: Track, phase: u32) -> BTreeSet<u32> {
        self.recorded
            .iter()
            .filter(|f| f.frame.track == track)
            .map(recorded_marker)
            .filter(|m| m.label == label && m.phase == phase)
            .map(|m| m.n)
            .collect()
    }

    /// Every frame any client received came from the other client of its own room.
    fn assert_no_leaks(&self) {
        for client in &self.clients {
            let room_label = client.label.split('/').next().unwrap();
            for marker in &client.received {
                assert_eq!(marker.room_label(), room_label, "{} got {marker:?}", client.label);
                assert_ne!(
                    marker.label, client.label,
                    "{} got its own frame back",
                    client.label
                );
            }
        }
    }

    /// Every recorded frame names the room and the sender its payload says it came from.
    fn assert_recorder_tags(&self, senders: &HashMap<String, (RoomId, Participant)>) {
        for frame in &self.recorded {
            let marker = recorded_marker(frame);
            let (room, who) = senders[&marker.label];
            assert_eq!(frame.room, room, "{marker:?} recorded under the wrong room");
            assert_eq!(frame.sender, who, "{marker:?} recorded under the wrong sender");
            let track = if marker.kind == "audio" {
                Track::Audio
            } else {
                Track::Video
            };
            assert_eq!(frame.frame.track, track, "{marker:?} recorded on the wrong track");
            if track == Track::Video {
                assert_eq!(frame.frame.keyframe, marker.n == 0, "{marker:?} keyframe flag");
            }
        }
    }
}

fn recorded_marker(frame: &RecordedFrame) -> Marker {
    match frame.frame.track {
        Track::Audio => Marker::parse(&frame.frame.payload),
        Track::Video => Marker::parse(&frame.frame.payload[1..]),
    }
}

fn all() -> BTreeSet<u32> {
    (0..FRAMES).collect()
}

#[tokio::test]
async fn two_rooms_forward_record_switch_and_reconnect() {
    let (sfu, recorded_rx) = driver::start(DriverConfig::default()).await.unwrap();
    assert!(sfu.public_addr().ip().is_loopback());
    sfu.open_room(ROOM_A).await.unwrap();
    sfu.open_room(ROOM_B).await.unwrap();

    let people = [
        ("room-A/c1", ROOM_A, participant(1, Role::Patient)),
        ("room-A/c2", ROOM_A, participant(2, Role::Clinician)),
        ("room-B/c1", ROOM_B, participant(3, Role::Patient)),
        ("room-B/c2", ROOM_B, participant(4, Role::Clinician)),
    ];
    let senders: HashMap<String, (RoomId, Participant)> = people
        .iter()
        .map(|(label, room, who)| (label.to_string(), (*room, *who)))
        .collect();
    let mut clients = Vec::new();
    for (label, room, who) in people {
        let mut client = Client::new(label, room, who).await;
        client.join(&sfu, true).await;
        clients.push(client);
    }
    let mut world = World {
        sfu,
        recorded_rx,
        recorded: Vec::new(),
        clients,
    };
    world
        .run_until("all four to connect", |w| w.clients.iter().all(|c| c.connected))
        .await;
    // The SFU's side of each connection comes up a moment after the client's.
    world.run_for(Duration::from_millis(200)).await;

    // Phase 1: everyone sends audio and video.
    let everyone = [
        ("room-A/c1", true),
        ("room-A/c2", true),
        ("room-B/c1", true),
        ("room-B/c2", true),
    ];
    world.send_phase(1, &everyone).await;
    let pairs = [
        ("room-A/c1", "room-A/c2"),
        ("room-A/c2", "room-A/c1"),
        ("room-B/c1", "room-B/c2"),
        ("room-B/c2", "room-B/c1"),
    ];
    world
        .run_until("phase 1 to arrive", |w| {
            pairs.iter().all(|(to, from)| {
                let c = w.get(to);
                c.received(from, "audio", 1) == all() && c.received(from, "video", 1) == all()
            })
        })
        .await;
    world
        .run_until("phase 1 to be recorded", |w| {
            everyone.iter().all(|(label, _)| {
                w.recorded_numbers(label, Track::Audio, 1) == all()
                    && w.recorded_numbers(label, Track::Video, 1) == all()
            })
        })
        .await;
    world.assert_no_leaks();
    world.assert_recorder_tags(&senders);

    // Phase 2: room A's first client switches to audio only; both rooms go on.
    let offer = world.client("room-A/c1").offer_without_video();
    let a1 = world.get("room-A/c1").who.id;
    let answer = world.sfu.renegotiate(ROOM_A, a1, offer).await.unwrap();
    world.client("room-A/c1").accept(&answer);
    world.run_for(Duration::from_millis(100)).await;
    let phase2 = [
        ("room-A/c1", false),
        ("room-A/c2", true),
        ("room-B/c1", true),
        ("room-B/c2", true),
    ];
    world.send_phase(2, &phase2).await;
    world
        .run_until("phase 2 audio to arrive", |w| {
            pairs
                .iter()
                .all(|(to, from)| w.get(to).received(from, "audio", 2) == all())
        })
        .await;
    world
        .run_until("phase 2 video in room B and in the recorder", |w| {
            w.get("room-B/c1").received("room-B/c2", "video", 2) == all()
                && w.recorded_numbers("room-A/c2", Track::Video, 2) == all()
        })
        .await;
    assert!(
        world
            .get("room-A/c1")
            .received("room-A/c2", "video", 2)
            .is_empty(),
        "an audio-only participant has no video line to receive on"
    );
    assert!(world.recorded_numbers("room-A/c1", Track::Video, 2).is_empty());

    // Phase 3: video back on, on a new line; the other side is asked for a keyframe at once.
    let requests_before = world.get("room-A/c2").keyframe_requests;
    let offer = world.client("room-A/c1").offer_with_video();
    let answer = world.sfu.renegotiate(ROOM_A, a1, offer).await.unwrap();
    world.client("room-A/c1").accept(&answer);
    world
        .run_until("a keyframe request for the returning video", |w| {
            w.get("room-A/c2").keyframe_requests > requests_before
        })
        .await;
    world
        .send_phase(3, &[("room-A/c1", true), ("room-A/c2", true)])
        .await;
    world
        .run_until("phase 3 to arrive", |w| {
            let (c1, c2) = (w.get("room-A/c1"), w.get("room-A/c2"));
            c1.received("room-A/c2", "video", 3) == all()
                && c1.received("room-A/c2", "audio", 3) == all()
                && c2.received("room-A/c1", "video", 3) == all()
                && c2.received("room-A/c1", "audio", 3) == all()
        })
        .await;

    // A receiver's keyframe request reaches the sender.
    let requests_before = world.get("room-A/c1").keyframe_requests;
    world.client("room-A/c2").request_keyframe();
    world
        .run_until("room-A/c2's keyframe request to reach room-A/c1", |w| {
            w.get("room-A/c1").keyframe_requests > requests_before
        })
        .await;

    // Phase 4: room B's first client loses its connection and joins again from a new socket;
    // the other side is asked for a keyframe for it.
    let old = world.clients.iter().position(|c| c.label == "room-B/c1").unwrap();
    let (label, room, who) = people[2];
    let requests_before = world.get("room-B/c2").keyframe_requests;
    let mut fresh = Client::new(label, room, who).await;
    fresh.join(&world.sfu, true).await;
    world.clients[old] = fresh;
    world
        .run_until("the rejoin to connect and get a keyframe", |w| {
            w.get("room-B/c1").connected && w.get("room-B/c2").keyframe_requests > requests_before
        })
        .await;
    world.run_for(Duration::from_millis(200)).await;
    world
        .send_phase(4, &[("room-B/c1", true), ("room-B/c2", true)])
        .await;
    world
        .run_until("phase 4 to arrive", |w| {
            let (c1, c2) = (w.get("room-B/c1"), w.get("room-B/c2"));
            c1.received("room-B/c2", "audio", 4) == all()
                && c2.received("room-B/c1", "audio", 4) == all()
                && c2.received("room-B/c1", "video", 4) == all()
        })
        .await;
    world
        .run_until("phase 4 to be recorded", |w| {
            w.recorded_numbers("room-B/c1", Track::Audio, 4) == all()
                && w.recorded_numbers("room-B/c1", Track::Video, 4) == all()
        })
        .await;

    world.assert_no_leaks();
    world.assert_recorder_tags(&senders);
    assert_eq!(world.sfu.recorder_dropped(), 0);
    let stats = world.sfu.stats();
    assert!(
        stats.datagrams_received > 0 && stats.datagrams_sent > 0 && stats.bytes_sent > stats.datagrams_sent,
        "the socket's traffic is counted: {stats:?}"
    );
}

/// Signaling mistakes are refused without touching the rooms, in the sans-IO core.
#[tokio::test]
async fn refuses_unknown_rooms_full_rooms_and_bad_offers() {
    let now = Instant::now();
    let mut sfu = Sfu::new("127.0.0.1:3478".parse().unwrap()).unwrap();
    let offer = || Client::new("room-A/x", ROOM_A, participant(9, Role::Patient));
    let (p1, p2, p3) = (
        participant(1, Role::Patient),
        participant(2, Role::Clinician),
        participant(3, Role::Clinician),
    );

    let sdp = offer().await.offer(true);
    assert!(matches!(
        sfu.join(ROOM_A, p1, &sdp, now),
        Err(SfuError::UnknownRoom(ROOM_A))
    ));
    sfu.open_room(ROOM_A, now).unwrap();
    assert!(matches!(
        sfu.open_room(ROOM_A, now),
        Err(SfuError::RoomExists(ROOM_A))
    ));
    assert!(matches!(
        sfu.join(ROOM_A, p1, "not sdp", now),
        Err(SfuError::BadOffer(_))
    ));

    assert!(sfu.join(ROOM_A, p1, &sdp, now).unwrap().contains("a=ice-lite"));
    assert!(sfu.join(ROOM_A, p2, &offer().await.offer(true), now).is_ok());
    let third = offer().await.offer(true);
    assert!(matches!(
        sfu.join(ROOM_A, p3, &third, now),
        Err(SfuError::RoomFull(ROOM_A))
    ));
    // Joining again is a reconnect, not a third participant.
    assert!(sfu.join(ROOM_A, p1, &offer().await.offer(false), now).is_ok());
    assert!(matches!(
        sfu.renegotiate(ROOM_A, p3.id, &third, now),
        Err(SfuError::UnknownParticipant(ROOM_A, id)) if id == p3.id
    ));

    assert!(sfu.leave(ROOM_A, p2.id));
    assert!(!sfu.leave(ROOM_A, p2.id));
    assert!(
        sfu.join(ROOM_A, p3, &third, now).is_ok(),
        "a place freed by leaving can be taken"
    );
    assert!(sfu.close_room(ROOM_A));
    assert!(matches!(
        sfu.join(ROOM_A, p1, &sdp, now),
        Err(SfuError::UnknownRoom(ROOM_A))
    ));
}

/// The announced address must be one a browser can send to.
#[test]
fn refuses_an_unspecified_public_address() {
    assert!(matches!(
        Sfu::new("0.0.0.0:3478".parse().unwrap()),
        Err(SfuError::BadAddress(..))
    ));
}

/// Through the driver, the core's refusals come back typed.
#[tokio::test]
async fn driver_reports_errors() {
    let (sfu, _recorded) = driver::start(DriverConfig::default()).await.unwrap();
    let offer = Client::new("room-A/x", ROOM_A, participant(1, Role::Patient))
        .await
        .offer(true);
    let err = sfu
        .join(ROOM_A, participant(1, Role::Patient), offer)
        .await
        .unwrap_err();
    assert!(
        matches!(err, DriverError::Sfu(SfuError::UnknownRoom(ROOM_A))),
        "{err:?}"
    );
    assert!(!sfu.close_room(ROOM_A).await.unwrap());
}
