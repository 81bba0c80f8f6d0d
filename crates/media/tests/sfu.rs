//! The SFU end to end over UDP on 127.0.0.1: str0m clients stand in for browsers (full ICE,
//! DTLS, SRTP), join rooms through the driver and send frames whose payloads name their room,
//! sender, kind, phase and number, so that every delivery (and the line it came on) and every
//! recorded frame can be checked against where it must and must not go. Clients offer one line
//! per kind, as older pages did, or a send-and-receive line and a receive-only one per kind, as
//! the call page does for a call with a guest.

use std::collections::{BTreeSet, HashMap};
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use confide_media::Track;
use confide_media::sfu::driver::{self, DriverConfig, DriverError, SfuHandle};
use confide_media::sfu::{
    MAX_PARTICIPANTS, Participant, ParticipantId, RecordedFrame, Role, RoomId, Sfu, SfuError,
};
use confide_testpeer::{Marker, Peer, Peers};
use str0m::media::Mid;
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

/// A test peer in the browser's role, in `room` as `who`, joining through the driver.
struct Client {
    peer: Peer,
    room: RoomId,
    who: Participant,
}

impl Client {
    async fn new(label: &str, room: RoomId, who: Participant) -> Client {
        Client {
            peer: Peer::new(label).await,
            room,
            who,
        }
    }

    async fn join(&mut self, sfu: &SfuHandle, video: bool) {
        self.join_with_lines(sfu, video, 0).await;
    }

    /// Joins as the call page does: a receive-only line of each kind per participant beyond two.
    async fn join_as_page(&mut self, sfu: &SfuHandle) {
        self.join_with_lines(sfu, true, MAX_PARTICIPANTS - 2).await;
    }

    async fn join_with_lines(&mut self, sfu: &SfuHandle, video: bool, receive_only: usize) {
        let offer = self.offer_lines(video, receive_only);
        let answer = sfu.join(self.room, self.who, offer).await.expect("join");
        self.accept(&answer);
    }
}

impl Deref for Client {
    type Target = Peer;

    fn deref(&self) -> &Peer {
        &self.peer
    }
}

impl DerefMut for Client {
    fn deref_mut(&mut self) -> &mut Peer {
        &mut self.peer
    }
}

/// Someone in a test: their client's label, their room, and who they are in it.
type Person = (&'static str, RoomId, Participant);

/// The clients, and the recorder's side of the driver.
struct World {
    sfu: SfuHandle,
    recorder: Recorder,
    clients: Peers<Client>,
    /// The room and participant each label's frames must be recorded under.
    senders: HashMap<String, (RoomId, Participant)>,
}

impl World {
    /// A driver with rooms A and B open and `people` in them, connected: with the call page's lines
    /// those `as_page` picks, with one line per kind the others.
    async fn start(people: &[Person], as_page: impl Fn(&str) -> bool) -> World {
        let (sfu, recorded_rx) = driver::start(DriverConfig::default()).await.unwrap();
        assert!(sfu.public_addr().ip().is_loopback());
        sfu.open_room(ROOM_A).await.unwrap();
        sfu.open_room(ROOM_B).await.unwrap();
        let mut clients = Peers::new(PHASE_TIMEOUT);
        for &(label, room, who) in people {
            let mut client = Client::new(label, room, who).await;
            if as_page(label) {
                client.join_as_page(&sfu).await;
            } else {
                client.join(&sfu, true).await;
            }
            clients.put(client);
        }
        let mut world = World {
            sfu,
            recorder: Recorder::start(recorded_rx),
            clients,
            senders: people
                .iter()
                .map(|(label, room, who)| (label.to_string(), (*room, *who)))
                .collect(),
        };
        world
            .clients
            .run_until("everyone to connect", Peers::all_connected)
            .await;
        // The SFU's side of each connection comes up a moment after the client's.
        world.clients.run_for(Duration::from_millis(200)).await;
        world
    }

    /// Waits until the recorder has all of each sender's audio of `phase`, and video of those marked so.
    async fn wait_recorded(&mut self, phase: u32, senders: &[(&str, bool)]) {
        let recorder = &self.recorder;
        self.clients
            .run_until(&format!("phase {phase} to be recorded"), |_| {
                senders.iter().all(|(label, video)| {
                    recorder.numbers(label, Track::Audio, phase) == all()
                        && (!video || recorder.numbers(label, Track::Video, phase) == all())
                })
            })
            .await;
    }

    /// `person` joins (again) from a new socket as the call page does, and connects.
    async fn join_as_page(&mut self, (label, room, who): Person) {
        let mut client = Client::new(label, room, who).await;
        client.join_as_page(&self.sfu).await;
        self.clients.put(client);
        self.clients
            .run_until(&format!("{label} to connect"), |w| w.get(label).connected)
            .await;
        self.clients.run_for(Duration::from_millis(200)).await;
    }

    /// Everyone in `rooms` sends `phase`'s audio and video, and gets all of everyone else's in
    /// their room.
    async fn exchange(&mut self, phase: u32, rooms: &[&[&str]]) {
        let senders: Vec<(&str, bool)> = rooms.iter().flat_map(|r| r.iter()).map(|l| (*l, true)).collect();
        self.clients.send_phase(phase, FRAMES, &senders).await;
        let all_pairs: Vec<_> = rooms.iter().flat_map(|r| pairs(r)).collect();
        self.clients
            .run_until(&format!("phase {phase} to arrive"), |w| {
                all_pairs.iter().all(|(to, from)| {
                    KINDS
                        .iter()
                        .all(|kind| w.get(to).received(from, kind, phase) == all())
                })
            })
            .await;
    }

    /// Every frame any client received came from another client of its own room, and every
    /// recorded frame is filed under the room and the sender it came from.
    fn check(&self) {
        for client in self.clients.iter() {
            client.assert_only_from_own_group();
        }
        self.recorder.assert_tags(&self.senders);
    }
}

/// What the driver hands the recorder, collected by a task of its own as it comes.
struct Recorder(Arc<Mutex<Vec<RecordedFrame>>>);

impl Recorder {
    fn start(mut rx: mpsc::Receiver<RecordedFrame>) -> Recorder {
        let frames = Arc::new(Mutex::new(Vec::new()));
        let sink = frames.clone();
        tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                sink.lock().unwrap().push(frame);
            }
        });
        Recorder(frames)
    }

    fn numbers(&self, label: &str, track: Track, phase: u32) -> BTreeSet<u32> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|f| f.frame.track == track)
            .map(recorded_marker)
            .filter(|m| m.label == label && m.phase == phase)
            .map(|m| m.n)
            .collect()
    }

    /// Every recorded frame names the room and the sender its payload says it came from.
    fn assert_tags(&self, senders: &HashMap<String, (RoomId, Participant)>) {
        for frame in self.0.lock().unwrap().iter() {
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
    Marker::of_frame(frame.frame.track == Track::Video, &frame.frame.payload)
}

fn all() -> BTreeSet<u32> {
    (0..FRAMES).collect()
}

#[tokio::test]
async fn two_rooms_forward_record_switch_and_reconnect() {
    let people = [
        ("room-A/c1", ROOM_A, participant(1, Role::Patient)),
        ("room-A/c2", ROOM_A, participant(2, Role::Clinician)),
        ("room-B/c1", ROOM_B, participant(3, Role::Patient)),
        ("room-B/c2", ROOM_B, participant(4, Role::Clinician)),
    ];
    let mut world = World::start(&people, |_| false).await;

    // Phase 1: everyone sends audio and video.
    let everyone = [
        ("room-A/c1", true),
        ("room-A/c2", true),
        ("room-B/c1", true),
        ("room-B/c2", true),
    ];
    world.clients.send_phase(1, FRAMES, &everyone).await;
    let pairs = [
        ("room-A/c1", "room-A/c2"),
        ("room-A/c2", "room-A/c1"),
        ("room-B/c1", "room-B/c2"),
        ("room-B/c2", "room-B/c1"),
    ];
    world
        .clients
        .run_until("phase 1 to arrive", |w| {
            pairs.iter().all(|(to, from)| {
                let c = w.get(to);
                c.received(from, "audio", 1) == all() && c.received(from, "video", 1) == all()
            })
        })
        .await;
    world.wait_recorded(1, &everyone).await;
    world.check();

    // Phase 2: room A's first client switches to audio only; both rooms go on.
    let offer = world.clients.get_mut("room-A/c1").offer_without_video();
    let a1 = world.clients.get("room-A/c1").who.id;
    let answer = world.sfu.renegotiate(ROOM_A, a1, offer).await.unwrap();
    world.clients.get_mut("room-A/c1").accept(&answer);
    world.clients.run_for(Duration::from_millis(100)).await;
    let phase2 = [
        ("room-A/c1", false),
        ("room-A/c2", true),
        ("room-B/c1", true),
        ("room-B/c2", true),
    ];
    world.clients.send_phase(2, FRAMES, &phase2).await;
    world
        .clients
        .run_until("phase 2 audio to arrive", |w| {
            pairs
                .iter()
                .all(|(to, from)| w.get(to).received(from, "audio", 2) == all())
        })
        .await;
    world
        .clients
        .run_until("phase 2 video in room B and in the recorder", |w| {
            w.get("room-B/c1").received("room-B/c2", "video", 2) == all()
                && world.recorder.numbers("room-A/c2", Track::Video, 2) == all()
        })
        .await;
    assert!(
        world
            .clients
            .get("room-A/c1")
            .received("room-A/c2", "video", 2)
            .is_empty(),
        "an audio-only participant has no video line to receive on"
    );
    assert!(world.recorder.numbers("room-A/c1", Track::Video, 2).is_empty());

    // Phase 3: video back on, on a new line; the other side is asked for a keyframe at once.
    let requests_before = world.clients.get("room-A/c2").keyframe_requests;
    let offer = world.clients.get_mut("room-A/c1").offer_with_video();
    let answer = world.sfu.renegotiate(ROOM_A, a1, offer).await.unwrap();
    world.clients.get_mut("room-A/c1").accept(&answer);
    world
        .clients
        .run_until("a keyframe request for the returning video", |w| {
            w.get("room-A/c2").keyframe_requests > requests_before
        })
        .await;
    world
        .clients
        .send_phase(3, FRAMES, &[("room-A/c1", true), ("room-A/c2", true)])
        .await;
    world
        .clients
        .run_until("phase 3 to arrive", |w| {
            let (c1, c2) = (w.get("room-A/c1"), w.get("room-A/c2"));
            c1.received("room-A/c2", "video", 3) == all()
                && c1.received("room-A/c2", "audio", 3) == all()
                && c2.received("room-A/c1", "video", 3) == all()
                && c2.received("room-A/c1", "audio", 3) == all()
        })
        .await;

    // A receiver's keyframe request reaches the sender.
    let requests_before = world.clients.get("room-A/c1").keyframe_requests;
    world.clients.get_mut("room-A/c2").request_keyframe();
    world
        .clients
        .run_until("room-A/c2's keyframe request to reach room-A/c1", |w| {
            w.get("room-A/c1").keyframe_requests > requests_before
        })
        .await;

    // Phase 4: room B's first client loses its connection and joins again from a new socket;
    // the other side is asked for a keyframe for it.
    let (label, room, who) = people[2];
    let requests_before = world.clients.get("room-B/c2").keyframe_requests;
    let mut fresh = Client::new(label, room, who).await;
    fresh.join(&world.sfu, true).await;
    world.clients.put(fresh);
    world
        .clients
        .run_until("the rejoin to connect and get a keyframe", |w| {
            w.get("room-B/c1").connected && w.get("room-B/c2").keyframe_requests > requests_before
        })
        .await;
    world.clients.run_for(Duration::from_millis(200)).await;
    world
        .clients
        .send_phase(4, FRAMES, &[("room-B/c1", true), ("room-B/c2", true)])
        .await;
    world
        .clients
        .run_until("phase 4 to arrive", |w| {
            let (c1, c2) = (w.get("room-B/c1"), w.get("room-B/c2"));
            c1.received("room-B/c2", "audio", 4) == all()
                && c2.received("room-B/c1", "audio", 4) == all()
                && c2.received("room-B/c1", "video", 4) == all()
        })
        .await;
    world.wait_recorded(4, &[("room-B/c1", true)]).await;

    world.check();
    assert_eq!(world.sfu.recorder_dropped(), 0);
    let stats = world.sfu.stats();
    assert!(
        stats.datagrams_received > 0 && stats.datagrams_sent > 0 && stats.bytes_sent > stats.datagrams_sent,
        "the socket's traffic is counted: {stats:?}"
    );
}

const KINDS: [&str; 2] = ["audio", "video"];

/// Every ordered (receiver, sender) pair among `labels`.
fn pairs<'a>(labels: &[&'a str]) -> Vec<(&'a str, &'a str)> {
    labels
        .iter()
        .flat_map(|to| {
            labels
                .iter()
                .filter(move |from| *from != to)
                .map(move |from| (*to, *from))
        })
        .collect()
}

/// The line each receiver gets each sender's media of each kind on, checking that there is one
/// and that two senders never share a receiver's line.
fn lines(world: &World, labels: &[&str]) -> HashMap<(String, String, &'static str), Mid> {
    let mut lines = HashMap::new();
    for to in labels {
        for kind in KINDS {
            let mut used = BTreeSet::new();
            for from in labels.iter().filter(|from| *from != to) {
                let mid = world.clients.get(to).line_from(from, kind);
                assert!(used.insert(mid), "{to} gets two senders' {kind} on {mid:?}");
                lines.insert((to.to_string(), from.to_string(), kind), mid);
            }
        }
    }
    lines
}

/// Three people in a room, joined guest first: each gets both others' audio and video, each
/// sender on a line of its own; a keyframe request on a line reaches that line's sender only; a
/// fourth is refused; a reconnect, a leave and a return move nobody else's lines. Meanwhile, in
/// another room, a page and an older client offering one line per kind make a two-party call.
#[tokio::test]
async fn three_in_a_room_each_on_lines_of_their_own() {
    let people = [
        ("room-A/g", ROOM_A, participant(3, Role::Guest)),
        ("room-A/p", ROOM_A, participant(1, Role::Patient)),
        ("room-A/c", ROOM_A, participant(2, Role::Clinician)),
        ("room-B/p", ROOM_B, participant(4, Role::Patient)),
        ("room-B/c", ROOM_B, participant(5, Role::Clinician)),
    ];
    let mut world = World::start(&people, |label| label != "room-B/c").await;

    // Phase 1: everyone sends audio and video, and gets everyone else's in their room.
    let trio = ["room-A/g", "room-A/p", "room-A/c"];
    world.exchange(1, &[&trio, &["room-B/p", "room-B/c"]]).await;
    let everyone: Vec<(&str, bool)> = people.iter().map(|(label, ..)| (*label, true)).collect();
    world.wait_recorded(1, &everyone).await;
    world.check();
    let before = lines(&world, &trio);
    // Seats go by role, not by who came first: the patient and the clinician get each other on
    // their own send-and-receive lines (slot 0), and so does the guest the patient.
    for (to, from) in [
        ("room-A/p", "room-A/c"),
        ("room-A/c", "room-A/p"),
        ("room-A/g", "room-A/p"),
    ] {
        let client = world.clients.get(to);
        for (kind, own) in [("audio", client.audio()), ("video", client.video())] {
            let line = before[&(to.to_string(), from.to_string(), kind)];
            assert_eq!(Some(line), own, "{to} gets {from}'s {kind} in slot 0");
        }
    }
    let page = world.clients.get("room-B/p");
    assert_eq!(
        page.line_from("room-B/c", "video"),
        page.video().unwrap(),
        "in a call of two, the other side comes on the page's own line"
    );

    // A keyframe request on a line reaches the sender on that line and nobody else. Loss makes the
    // SFU ask for keyframes of its own now and then, so the other participant may see one or two
    // requests meanwhile; one sent on to everyone would reach them every time.
    const REQUESTS: usize = 6;
    for (sender, other) in [("room-A/c", "room-A/p"), ("room-A/p", "room-A/c")] {
        let count = |w: &Peers<Client>, label: &str| w.get(label).keyframe_requests;
        let other_before = count(&world.clients, other);
        let mid = before[&("room-A/g".to_string(), sender.to_string(), "video")];
        for _ in 0..REQUESTS {
            let sender_before = count(&world.clients, sender);
            world.clients.get_mut("room-A/g").request_keyframe_on(mid);
            world
                .clients
                .run_until("the keyframe request to reach its sender", |w| {
                    count(w, sender) > sender_before
                })
                .await;
        }
        world.clients.run_for(Duration::from_millis(200)).await;
        let reached_other = count(&world.clients, other) - other_before;
        assert!(
            reached_other < REQUESTS / 2,
            "{other} was asked for {sender}'s keyframe: {reached_other} requests during {REQUESTS} for {sender}"
        );
    }

    // A fourth is refused.
    let mut fourth = Client::new("room-A/x", ROOM_A, participant(6, Role::Guest)).await;
    let err = world
        .sfu
        .join(ROOM_A, fourth.who, fourth.offer_lines(true, MAX_PARTICIPANTS - 2))
        .await
        .unwrap_err();
    assert!(
        matches!(err, DriverError::Sfu(SfuError::RoomFull(ROOM_A))),
        "{err:?}"
    );

    // Phase 2: the patient joins again from a new socket; the others' lines stay.
    world.join_as_page(people[1]).await;
    world.exchange(2, &[&trio]).await;
    let after_reconnect = lines(&world, &trio);
    for ((to, from, kind), mid) in &before {
        if to != "room-A/p" {
            assert_eq!(
                after_reconnect[&(to.clone(), from.clone(), *kind)],
                *mid,
                "{to}'s line for {from}"
            );
        }
    }

    // Phase 3: the clinician leaves; the patient and the guest go on, on their lines.
    let clinician = people[2].2.id;
    assert!(world.sfu.leave(ROOM_A, clinician).await.unwrap());
    world.clients.remove("room-A/c");
    let pair = ["room-A/g", "room-A/p"];
    world.exchange(3, &[&pair]).await;
    for ((to, from, kind), mid) in lines(&world, &pair) {
        assert_eq!(
            after_reconnect[&(to.clone(), from.clone(), kind)],
            mid,
            "{to}'s line for {from}"
        );
    }

    // Phase 4: the clinician comes back and takes their old lines at the others.
    world.join_as_page(people[2]).await;
    world.exchange(4, &[&trio]).await;
    for ((to, from, kind), mid) in lines(&world, &trio) {
        if to != "room-A/c" {
            assert_eq!(
                after_reconnect[&(to.clone(), from.clone(), kind)],
                mid,
                "{to}'s line for {from}"
            );
        }
    }

    world.check();
    assert_eq!(world.sfu.recorder_dropped(), 0);
}

/// Signaling mistakes are refused without touching the rooms, in the sans-IO core.
#[tokio::test]
async fn refuses_unknown_rooms_full_rooms_and_bad_offers() {
    let now = Instant::now();
    let mut sfu = Sfu::new("127.0.0.1:3478".parse().unwrap()).unwrap();
    let offer = || Client::new("room-A/x", ROOM_A, participant(9, Role::Patient));
    let (p1, p2, p3, p4) = (
        participant(1, Role::Patient),
        participant(2, Role::Clinician),
        participant(3, Role::Guest),
        participant(4, Role::Guest),
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
    assert!(sfu.join(ROOM_A, p3, &offer().await.offer(true), now).is_ok());
    let fourth = offer().await.offer(true);
    assert!(matches!(
        sfu.join(ROOM_A, p4, &fourth, now),
        Err(SfuError::RoomFull(ROOM_A))
    ));
    // Joining again is a reconnect, not a fourth participant.
    assert!(sfu.join(ROOM_A, p1, &offer().await.offer(false), now).is_ok());
    assert!(matches!(
        sfu.renegotiate(ROOM_A, p4.id, &fourth, now),
        Err(SfuError::UnknownParticipant(ROOM_A, id)) if id == p4.id
    ));

    assert!(sfu.leave(ROOM_A, p3.id));
    assert!(!sfu.leave(ROOM_A, p3.id));
    assert!(
        sfu.join(ROOM_A, p4, &fourth, now).is_ok(),
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
