//! Video calls end to end: two consultations at once, each a patient and their clinician with str0m
//! peers in the browsers' place, signaling through the API and sending media through the server's SFU.
//! Each side must get the other's frames and nobody else's; the recordings must hold each call's frames,
//! encrypted under its own key, in the segments the store numbered, and never the other call's.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use confide_domain::consultation::{ConsultationMode, SegmentReason};
use confide_domain::identity::Role;
use confide_domain::policy::{Context, Principal, actions, authorize};
use confide_domain::{AppointmentId, PracticeId, Timestamp};
use confide_media::sfu::recorder::segment_path;
use confide_media::{MasterKey, SegmentError, SegmentReader, Track, WrappedKey};
use confide_server::{AppState, Clock as _, ManualClock, ServerConfig};
use confide_store::testing::TestDatabase;
use jiff::civil::{Date, Weekday};
use reqwest::StatusCode;
use serde_json::{Value, json};
use str0m::media::MediaKind;

use crate::helpers::{Client, PASSWORD, Seeded, TestApp, not_found_body, register};
use crate::helpers::{at, london, set_clock};
use crate::peer::{Marker, Peer};

/// Frames of each kind each peer sends per phase.
const FRAMES: u32 = 10;
/// Bound on each wait; the whole test takes a few seconds when it passes.
const WAIT: Duration = Duration::from_secs(5);

fn all() -> BTreeSet<u32> {
    (0..FRAMES).collect()
}

/// One consultation: a patient and their clinician, with their API clients and peers.
struct Pair {
    name: &'static str,
    practice: PracticeId,
    patient: Seeded,
    patient_api: Client,
    clinician: Seeded,
    clinician_api: Client,
    appointment: String,
}

impl Pair {
    fn path(&self, what: &str) -> String {
        format!("/api/v1/appointments/{}/{what}", self.appointment)
    }

    fn label(&self, who: &str) -> String {
        format!("{}/{who}", self.name)
    }
}

/// A practice in London whose clinician works Mondays 09:00 to 12:00, and a registered patient who
/// books Monday 09:00 (the clock must be before it).
async fn pair(app: &TestApp, name: &'static str, monday: Date) -> Pair {
    let practice = app.practice(&format!("{name} Surgery")).await;
    let clinician = app.user(Role::Clinician, Some(practice), true).await;
    let clinician_api = app.login(&clinician).await;
    let (status, body) = clinician_api
        .post(
            &format!("/api/v1/clinicians/{}/availability/rules", clinician.id),
            json!({"weekday": 1, "start": "09:00", "end": "12:00", "slot_minutes": 15, "kinds": "either"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let patient = app.user(Role::Patient, None, false).await;
    let patient_api = app.login(&patient).await;
    register(&patient_api, &clinician_api, practice).await;
    let (status, body) = patient_api
        .post(
            "/api/v1/appointments",
            json!({"clinician_id": clinician.id, "start": at(monday, 9, 0).to_string(), "kind": "video"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    Pair {
        name,
        practice,
        patient,
        patient_api,
        clinician,
        clinician_api,
        appointment: body["id"].as_str().unwrap().to_owned(),
    }
}

/// Every peer's sockets and timers are driven while the test waits.
struct Peers(Vec<Peer>);

impl Peers {
    fn get(&self, label: &str) -> &Peer {
        self.0.iter().find(|p| p.label == label).unwrap()
    }

    fn get_mut(&mut self, label: &str) -> &mut Peer {
        self.0.iter_mut().find(|p| p.label == label).unwrap()
    }

    async fn run_for(&mut self, duration: Duration) {
        let end = Instant::now() + duration;
        while Instant::now() < end {
            for peer in &mut self.0 {
                peer.pump();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn run_until(&mut self, what: &str, done: impl Fn(&Peers) -> bool) {
        let end = Instant::now() + WAIT;
        while !done(self) {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            self.run_for(Duration::from_millis(2)).await;
        }
    }

    /// Each listed peer sends a phase's frames: audio every 20 ms and, if marked so, video with it.
    async fn send_phase(&mut self, phase: u32, senders: &[(&str, bool)]) {
        for n in 0..FRAMES {
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

/// The recording of a pair's consultation, as its patient's grant reads it: segment (index, reason,
/// mode) and the markers in each segment's file, decrypted with the recording's unwrapped key.
struct Recorded {
    segments: Vec<(u32, SegmentReason, ConsultationMode)>,
    markers: Vec<Vec<Marker>>,
    /// Each segment's first and last frame time.
    times: Vec<(u64, u64)>,
}

async fn recorded(
    state: &AppState,
    data_dir: &Path,
    pair: &Pair,
    other_key: Option<&confide_media::DataKey>,
) -> Recorded {
    let store = &state.store;
    let appointment: AppointmentId = pair.appointment.parse().unwrap();
    let facts = store.consultation_ref(appointment).await.unwrap().unwrap();
    let patient = Principal {
        user: pair.patient.id,
        role: Role::Patient,
        practice: None,
    };
    let grant =
        authorize::<actions::JoinConsultation>(&patient, facts, &Context { mfa_verified: true }).unwrap();
    let call = store.consultation_call(&grant).await.unwrap().unwrap();
    let master = MasterKey::load(&data_dir.join("master.key")).unwrap();
    let wrapped = hex::decode(store.recording_key(&grant).await.unwrap().expect("a key")).unwrap();
    let key = WrappedKey::from_bytes(&wrapped)
        .unwrap()
        .unwrap(&master, call.recording.as_uuid())
        .unwrap();
    let dir = data_dir.join("recordings");
    let (mut markers, mut times) = (Vec::new(), Vec::new());
    for segment in &call.segments {
        let path = segment_path(&dir, call.recording.as_uuid(), segment.index);
        assert!(path.exists(), "{}: {} is missing", pair.name, path.display());
        if let Some(other) = other_key {
            assert!(
                matches!(
                    SegmentReader::open(&path, other, call.recording.as_uuid(), segment.index),
                    Err(SegmentError::WrongKey)
                ),
                "{}: another recording's key opens {}",
                pair.name,
                path.display()
            );
        }
        let frames: Vec<_> = SegmentReader::open(&path, &key, call.recording.as_uuid(), segment.index)
            .unwrap()
            .map(|frame| frame.expect("a finished segment reads whole"))
            .collect();
        let stamps = frames.iter().map(|f| f.timestamp_us);
        times.push((stamps.clone().min().unwrap_or(0), stamps.max().unwrap_or(0)));
        markers.push(
            frames
                .iter()
                .map(|f| Marker::of_frame(f.track == Track::Video, &f.payload))
                .collect(),
        );
    }
    Recorded {
        segments: call
            .segments
            .iter()
            .map(|s| (s.index, s.reason, s.mode))
            .collect(),
        markers,
        times,
    }
}

/// The numbers of `label`'s `kind` frames of `phase` among `markers`.
fn numbers(markers: &[Marker], label: &str, kind: &str, phase: u32) -> BTreeSet<u32> {
    markers
        .iter()
        .filter(|m| m.label == label && m.kind == kind && m.phase == phase)
        .map(|m| m.n)
        .collect()
}

async fn two_consultations_call_switch_reconnect_and_record_apart(db: Option<TestDatabase>) {
    let app = TestApp::spawn_with(db, |_| {}).await;
    let monday = Timestamp::now()
        .to_zoned(london())
        .date()
        .checked_add(jiff::Span::new().days(14))
        .unwrap()
        .nth_weekday(1, Weekday::Monday)
        .unwrap();
    set_clock(&app.clock, at(monday, 8, 0));
    let a = pair(&app, "A", monday).await;
    let b = pair(&app, "B", monday).await;
    // Someone else's patient at A's practice, and A's clinician's colleague.
    let stranger = app.user(Role::Patient, None, false).await;
    let stranger_api = app.login(&stranger).await;
    register(&stranger_api, &a.clinician_api, a.practice).await;
    let colleague = app.user(Role::Clinician, Some(a.practice), true).await;
    let colleague_api = app.login(&colleague).await;

    let mut peers = Peers(Vec::new());
    let offer = Peer::new("A/x").await.offer(true);
    let (status, body) = a
        .patient_api
        .post(&a.path("call"), json!({"sdp": offer, "mode": "video"}))
        .await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, not_found_body()),
        "not started yet"
    );

    set_clock(&app.clock, at(monday, 8, 55));
    for p in [&a, &b] {
        let (status, body) = p.patient_api.post(&p.path("check-in"), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = p.clinician_api.post(&p.path("start"), json!({})).await;
        assert_eq!(
            (status, &body["status"]),
            (StatusCode::OK, &json!("in_consultation")),
            "{body}"
        );
    }

    // Only the consultation's own patient and clinician get in.
    for (who, api, expected) in [
        (
            "a patient of the same practice",
            &stranger_api,
            StatusCode::NOT_FOUND,
        ),
        (
            "a colleague at the same practice",
            &colleague_api,
            StatusCode::NOT_FOUND,
        ),
        (
            "the other consultation's clinician",
            &b.clinician_api,
            StatusCode::NOT_FOUND,
        ),
        ("nobody logged in", &app.anonymous(), StatusCode::UNAUTHORIZED),
    ] {
        for step in ["call", "call/mode"] {
            let offer = Peer::new("A/x").await.offer(true);
            let (status, body) = api
                .post(&a.path(step), json!({"sdp": offer, "mode": "video"}))
                .await;
            assert_eq!(status, expected, "{step} by {who}: {body}");
            if expected == StatusCode::NOT_FOUND {
                assert_eq!(body, not_found_body(), "{step} by {who}");
            }
        }
        let (status, _) = api.post(&a.path("call/leave"), json!({})).await;
        assert_eq!(status, expected, "leave by {who}");
    }
    let (status, body) = a
        .patient_api
        .post(&a.path("call"), json!({"sdp": "not sdp", "mode": "video"}))
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_offer"))
    );
    let offer = Peer::new("A/x").await.offer(true);
    let (status, body) = a
        .patient_api
        .post(&a.path("call/mode"), json!({"sdp": offer, "mode": "audio_only"}))
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::CONFLICT, &json!("invalid_state")),
        "{body}"
    );

    for p in [&a, &b] {
        for (who, api) in [("patient", &p.patient_api), ("clinician", &p.clinician_api)] {
            let mut peer = Peer::new(&p.label(who)).await;
            let offer = peer.offer(true);
            let (status, body) = peer.signal(api, &p.path("call"), offer, "video").await;
            assert_eq!(status, StatusCode::OK, "{} joins: {body}", peer.label);
            peers.0.push(peer);
        }
    }
    peers
        .run_until("all four to connect", |ps| ps.0.iter().all(|p| p.connected))
        .await;
    // The SFU's side of each connection comes up a moment after the peer's.
    peers.run_for(Duration::from_millis(200)).await;

    // Phase 1: everyone sends audio and video.
    let everyone = [
        ("A/patient", true),
        ("A/clinician", true),
        ("B/patient", true),
        ("B/clinician", true),
    ];
    let partners = [
        ("A/patient", "A/clinician"),
        ("A/clinician", "A/patient"),
        ("B/patient", "B/clinician"),
        ("B/clinician", "B/patient"),
    ];
    peers.send_phase(1, &everyone).await;
    peers
        .run_until("phase 1 to arrive", |ps| {
            partners.iter().all(|(to, from)| {
                let p = ps.get(to);
                p.received(from, "audio", 1) == all() && p.received(from, "video", 1) == all()
            })
        })
        .await;
    peers.run_for(Duration::from_millis(200)).await;

    // Phase 2: A's patient switches to audio only; B's clinician loses their connection and joins again
    // from a new socket.
    let peer = peers.get_mut("A/patient");
    let offer = peer.offer_without_video();
    let (status, body) = peer
        .signal(&a.patient_api, &a.path("call/mode"), offer, "audio_only")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut fresh = Peer::new("B/clinician").await;
    let offer = fresh.offer(true);
    let (status, body) = fresh
        .signal(&b.clinician_api, &b.path("call"), offer, "video")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let old = peers.0.iter().position(|p| p.label == "B/clinician").unwrap();
    peers.0[old] = fresh;
    peers
        .run_until("the rejoin to connect", |ps| ps.get("B/clinician").connected)
        .await;
    peers.run_for(Duration::from_millis(300)).await;
    let phase2 = [
        ("A/patient", false),
        ("A/clinician", true),
        ("B/patient", true),
        ("B/clinician", true),
    ];
    peers.send_phase(2, &phase2).await;
    peers
        .run_until("phase 2 to arrive", |ps| {
            partners
                .iter()
                .all(|(to, from)| ps.get(to).received(from, "audio", 2) == all())
                && ps.get("B/patient").received("B/clinician", "video", 2) == all()
                && ps.get("B/clinician").received("B/patient", "video", 2) == all()
        })
        .await;
    peers.run_for(Duration::from_millis(200)).await;

    for peer in &peers.0 {
        let pair = &peer.label[..1];
        for marker in &peer.received {
            assert!(marker.label.starts_with(pair), "{} got {marker:?}", peer.label);
            assert_ne!(marker.label, peer.label, "{} got its own frame back", peer.label);
        }
    }

    for p in [&a, &b] {
        let (status, body) = p.clinician_api.post(&p.path("complete"), json!({})).await;
        assert_eq!(
            (status, &body["status"]),
            (StatusCode::OK, &json!("completed")),
            "{body}"
        );
    }
    let mut peer = Peer::new("A/patient").await;
    let offer = peer.offer(true);
    let (status, body) = peer.signal(&a.patient_api, &a.path("call"), offer, "video").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::CONFLICT, &json!("invalid_state")),
        "{body}"
    );
    assert_eq!(app.running.state.calls.sfu().recorder_dropped(), 0);

    // The recordings: A switched mode, B reconnected; each segment holds its own call's frames only.
    let rec_a = recorded(&app.running.state, app.dir.path(), &a, None).await;
    use ConsultationMode::*;
    use SegmentReason::*;
    assert_eq!(rec_a.segments, [(0, Start, Video), (1, ModeSwitch, AudioOnly)]);
    let rec_b = recorded(&app.running.state, app.dir.path(), &b, None).await;
    assert_eq!(rec_b.segments, [(0, Start, Video), (1, Reconnect, Video)]);
    for (p, rec) in [(&a, &rec_a), (&b, &rec_b)] {
        for (i, markers) in rec.markers.iter().enumerate() {
            for m in markers {
                assert!(m.label.starts_with(p.name), "{m:?} in {}'s segment {i}", p.name);
            }
        }
        let (first, second) = (&rec.markers[0], &rec.markers[1]);
        for who in ["patient", "clinician"] {
            let label = p.label(who);
            for kind in ["audio", "video"] {
                assert_eq!(
                    numbers(first, &label, kind, 1),
                    all(),
                    "{label} {kind} in segment 0"
                );
                assert!(
                    numbers(first, &label, kind, 2).is_empty(),
                    "{label} {kind} 2 in segment 0"
                );
                assert!(
                    numbers(second, &label, kind, 1).is_empty(),
                    "{label} {kind} 1 in segment 1"
                );
            }
            assert_eq!(
                numbers(second, &label, "audio", 2),
                all(),
                "{label} audio in segment 1"
            );
        }
    }
    assert_eq!(numbers(&rec_a.markers[1], "A/clinician", "video", 2), all());
    for rec in [&rec_a, &rec_b] {
        assert!(rec.times[0].1 < rec.times[1].0, "one clock: {:?}", rec.times);
    }
    assert!(
        numbers(&rec_a.markers[1], "A/patient", "video", 2).is_empty(),
        "A's patient sent no video"
    );
    assert_eq!(numbers(&rec_b.markers[1], "B/patient", "video", 2), all());

    // Neither recording's key opens the other's files.
    let store = &app.running.state.store;
    let master = MasterKey::load(&app.dir.path().join("master.key")).unwrap();
    let b_facts = store
        .consultation_ref(b.appointment.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let b_grant = authorize::<actions::JoinConsultation>(
        &Principal {
            user: b.clinician.id,
            role: Role::Clinician,
            practice: Some(b.practice),
        },
        b_facts,
        &Context { mfa_verified: true },
    )
    .unwrap();
    let b_recording = store
        .consultation_call(&b_grant)
        .await
        .unwrap()
        .unwrap()
        .recording;
    let b_key =
        WrappedKey::from_bytes(&hex::decode(store.recording_key(&b_grant).await.unwrap().unwrap()).unwrap())
            .unwrap()
            .unwrap(&master, b_recording.as_uuid())
            .unwrap();
    recorded(&app.running.state, app.dir.path(), &a, Some(&b_key)).await;

    // A's patient sees who tried to get into their call.
    let (status, log) = a
        .patient_api
        .get(&format!("/api/v1/patients/{}/access-log", a.patient.id))
        .await;
    assert_eq!(status, StatusCode::OK, "{log}");
    let tried = |actor: &Seeded, outcome: &str| {
        log.as_array().unwrap().iter().any(|e: &Value| {
            e["actor_id"] == json!(actor.id) && e["action"] == "consultation.join" && e["outcome"] == outcome
        })
    };
    for outsider in [&stranger, &colleague, &b.clinician] {
        assert!(tried(outsider, "denied"), "{log:#}");
        assert!(!tried(outsider, "allowed"), "{log:#}");
    }
    assert!(tried(&a.clinician, "allowed"), "{log:#}");
    app.stop().await;
}

#[tokio::test]
async fn two_consultations_call_and_record_apart_on_sqlite() {
    two_consultations_call_switch_reconnect_and_record_apart(None).await;
}

#[tokio::test]
async fn two_consultations_call_and_record_apart_on_postgres() {
    if let Some(db) = TestDatabase::postgres().await {
        two_consultations_call_switch_reconnect_and_record_apart(Some(db)).await;
    }
}

/// A client of `running` logged in as `user`, with a code from `clock` for staff.
async fn login(running: &confide_server::Running, clock: &ManualClock, user: &Seeded) -> Client {
    let client = Client::new(running.url());
    let totp = user
        .totp_secret
        .as_ref()
        .map(|s| confide_server::auth::totp_code(s, (clock.now_ms() / 1000) as u64).unwrap());
    let (status, body) = client
        .post(
            "/api/v1/auth/login",
            json!({"email": user.email, "password": PASSWORD, "totp": totp}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    client
}

/// `pair`'s patient and clinician join through `patient_api` and `clinician_api`, and connect.
async fn join_both(pair: &Pair, patient_api: &Client, clinician_api: &Client) -> Peers {
    let mut peers = Peers(Vec::new());
    for (who, api) in [("patient", patient_api), ("clinician", clinician_api)] {
        let mut peer = Peer::new(&pair.label(who)).await;
        let offer = peer.offer(true);
        let (status, body) = peer.signal(api, &pair.path("call"), offer, "video").await;
        assert_eq!(status, StatusCode::OK, "{} joins: {body}", peer.label);
        peers.0.push(peer);
    }
    peers
        .run_until("both to connect", |ps| ps.0.iter().all(|p| p.connected))
        .await;
    peers.run_for(Duration::from_millis(200)).await;
    peers
}

/// Both send a phase's audio and video, and each gets all of the other's.
async fn exchange(peers: &mut Peers, pair: &Pair, phase: u32) {
    let (patient, clinician) = (pair.label("patient"), pair.label("clinician"));
    peers
        .send_phase(phase, &[(patient.as_str(), true), (clinician.as_str(), true)])
        .await;
    peers
        .run_until("the phase to arrive", |ps| {
            ["audio", "video"].iter().all(|kind| {
                ps.get(&patient).received(&clinician, kind, phase) == all()
                    && ps.get(&clinician).received(&patient, kind, phase) == all()
            })
        })
        .await;
    peers.run_for(Duration::from_millis(200)).await;
}

/// The server stops in the middle of a call and starts again: the segment it was writing is finished,
/// the call carries on in a new segment of the same recording (never the same index again), and the new
/// segment's frames come after the old one's on the recording's one clock.
#[tokio::test]
async fn a_call_carries_on_after_a_restart_in_a_new_segment() {
    let app = TestApp::spawn().await;
    let monday = Timestamp::now()
        .to_zoned(london())
        .date()
        .checked_add(jiff::Span::new().days(14))
        .unwrap()
        .nth_weekday(1, Weekday::Monday)
        .unwrap();
    set_clock(&app.clock, at(monday, 8, 0));
    let a = pair(&app, "A", monday).await;
    set_clock(&app.clock, at(monday, 8, 55));
    let (status, body) = a.patient_api.post(&a.path("check-in"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = a.clinician_api.post(&a.path("start"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut peers = join_both(&a, &a.patient_api, &a.clinician_api).await;
    exchange(&mut peers, &a, 1).await;

    // Stopped as a deployment stops it, in the middle of the call, and served again from its data.
    let TestApp {
        running, clock, dir, ..
    } = app;
    running.stop().await.unwrap();
    drop(peers);
    // A minute on, so that the clinician's next authenticator code is not the one already spent.
    clock.advance(Duration::from_secs(60));
    let config = ServerConfig::embedded(dir.path().to_owned(), "127.0.0.1:0".parse().unwrap());
    let running = confide_server::spawn(config, clock.clone()).await.unwrap();
    let patient_api = login(&running, &clock, &a.patient).await;
    let clinician_api = login(&running, &clock, &a.clinician).await;
    let mut peers = join_both(&a, &patient_api, &clinician_api).await;
    exchange(&mut peers, &a, 2).await;
    let (status, body) = clinician_api.post(&a.path("complete"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let rec = recorded(&running.state, dir.path(), &a, None).await;
    use ConsultationMode::*;
    use SegmentReason::*;
    assert_eq!(rec.segments, [(0, Start, Video), (1, Restart, Video)]);
    for who in ["patient", "clinician"] {
        let label = a.label(who);
        for kind in ["audio", "video"] {
            assert_eq!(
                numbers(&rec.markers[0], &label, kind, 1),
                all(),
                "{label} {kind} before"
            );
            assert_eq!(
                numbers(&rec.markers[1], &label, kind, 2),
                all(),
                "{label} {kind} after"
            );
            assert!(numbers(&rec.markers[0], &label, kind, 2).is_empty());
            assert!(numbers(&rec.markers[1], &label, kind, 1).is_empty());
        }
    }
    assert!(rec.times[0].1 < rec.times[1].0, "one clock: {:?}", rec.times);
    running.stop().await.unwrap();
}
