//! Video calls end to end: two consultations at once, each a patient and their clinician with str0m
//! peers in the browsers' place, signaling through the API and sending media through the server's SFU.
//! Each side must get the other's frames and nobody else's; the recordings must hold each call's frames,
//! encrypted under its own key, in the segments the store numbered, and never the other call's.

use std::collections::BTreeSet;
use std::ops::Deref;
use std::time::Duration;

use confide_domain::consultation::{ConsultationMode, SegmentReason};
use confide_domain::identity::Role;
use confide_media::{MasterKey, SegmentError, SegmentReader};
use confide_server::{Clock as _, ManualClock, ServerConfig};
use confide_store::testing::TestDatabase;
use jiff::civil::Date;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::consultation::{Booked, Recording};
use crate::helpers::{Client, PASSWORD, Seeded, TestApp, not_found_body, register};
use crate::helpers::{at, next_monday, set_clock};
use crate::peer::{Peer, Peers, numbers};

/// Frames of each kind each peer sends per phase.
const FRAMES: u32 = 10;
/// Bound on each wait; the whole test takes a few seconds when it passes.
const WAIT: Duration = Duration::from_secs(5);

fn all() -> BTreeSet<u32> {
    (0..FRAMES).collect()
}

/// One consultation, named for its peers' labels.
struct Pair {
    name: &'static str,
    booked: Booked,
}

impl Deref for Pair {
    type Target = Booked;

    fn deref(&self) -> &Booked {
        &self.booked
    }
}

impl Pair {
    fn label(&self, who: &str) -> String {
        format!("{}/{who}", self.name)
    }
}

/// A practice in London whose clinician works Mondays 09:00 to 12:00, and a registered patient who
/// books Monday 09:00 (the clock must be before it).
async fn pair(app: &TestApp, name: &'static str, monday: Date) -> Pair {
    let practice = app.practice(&format!("{name} Surgery")).await;
    Pair {
        name,
        booked: Booked::new(app, practice, monday, 9).await,
    }
}

async fn two_consultations_call_switch_reconnect_and_record_apart(db: Option<TestDatabase>) {
    let app = TestApp::spawn_with(db, |_| {}).await;
    let monday = next_monday();
    set_clock(&app.clock, at(monday, 8, 0));
    let a = pair(&app, "A", monday).await;
    let b = pair(&app, "B", monday).await;
    // Someone else's patient at A's practice, and A's clinician's colleague.
    let stranger = app.user(Role::Patient, None, false).await;
    let stranger_api = app.login(&stranger).await;
    register(&stranger_api, &a.clinician_api, a.practice).await;
    let colleague = app.user(Role::Clinician, Some(a.practice), true).await;
    let colleague_api = app.login(&colleague).await;

    let mut peers = Peers::new(WAIT);
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
        p.check_in_and_start().await;
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
            peers.put(Peer::join(api, &p.path("call"), &p.label(who)).await);
        }
    }
    peers
        .run_until("all four to connect", |ps| ps.all_connected())
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
    peers.send_phase(1, FRAMES, &everyone).await;
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
    peers.put(Peer::join(&b.clinician_api, &b.path("call"), "B/clinician").await);
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
    peers.send_phase(2, FRAMES, &phase2).await;
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

    for peer in peers.iter() {
        peer.assert_only_from_own_group();
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
    let state = &app.running.state;
    let master = MasterKey::load(&app.dir.path().join("master.key")).unwrap();
    let rec_a = Recording::read(state, &master, &a.appointment, &a.patient).await;
    use ConsultationMode::*;
    use SegmentReason::*;
    assert_eq!(rec_a.segments, [(0, Start, Video), (1, ModeSwitch, AudioOnly)]);
    let rec_b = Recording::read(state, &master, &b.appointment, &b.patient).await;
    assert_eq!(rec_b.segments, [(0, Start, Video), (1, Reconnect, Video)]);
    for (p, rec) in [(&a, &rec_a), (&b, &rec_b)] {
        for (i, frames) in rec.frames.iter().enumerate() {
            for (_, m) in frames {
                assert!(m.label.starts_with(p.name), "{m:?} in {}'s segment {i}", p.name);
            }
        }
        for who in ["patient", "clinician"] {
            let label = p.label(who);
            for kind in ["audio", "video"] {
                assert_eq!(
                    numbers(rec.markers(0), &label, kind, 1),
                    all(),
                    "{label} {kind} in segment 0"
                );
                assert!(
                    numbers(rec.markers(0), &label, kind, 2).is_empty(),
                    "{label} {kind} 2 in segment 0"
                );
                assert!(
                    numbers(rec.markers(1), &label, kind, 1).is_empty(),
                    "{label} {kind} 1 in segment 1"
                );
            }
            assert_eq!(
                numbers(rec.markers(1), &label, "audio", 2),
                all(),
                "{label} audio in segment 1"
            );
        }
    }
    assert_eq!(numbers(rec_a.markers(1), "A/clinician", "video", 2), all());
    for rec in [&rec_a, &rec_b] {
        assert!(rec.times[0].1 < rec.times[1].0, "one clock: {:?}", rec.times);
    }
    assert!(
        numbers(rec_a.markers(1), "A/patient", "video", 2).is_empty(),
        "A's patient sent no video"
    );
    assert_eq!(numbers(rec_b.markers(1), "B/patient", "video", 2), all());

    // B's clinician reaches the same recording and key; neither recording's key opens the other's files.
    let b_by_clinician = Recording::read(state, &master, &b.appointment, &b.clinician).await;
    assert_eq!(b_by_clinician.id, rec_b.id);
    for (rec, other) in [(&rec_a, &b_by_clinician), (&rec_b, &rec_a)] {
        for (&(index, ..), path) in rec.segments.iter().zip(&rec.paths) {
            assert!(
                matches!(
                    SegmentReader::open(path, &other.key, rec.id.as_uuid(), index),
                    Err(SegmentError::WrongKey)
                ),
                "another recording's key opens {}",
                path.display()
            );
        }
    }

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

    // The calls' datagrams were counted and timed, and /metrics shows it: a histogram whose buckets
    // rise to its count.
    let (status, metrics) = app.anonymous().get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let metrics = metrics.as_str().unwrap();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    let received = value("confide_sfu_datagrams_received_total");
    assert!(received > 0.0, "{metrics}");
    let timed = value("confide_sfu_forward_delay_seconds_count");
    assert!(timed > 0.0 && timed <= received, "{metrics}");
    let buckets: Vec<f64> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("confide_sfu_forward_delay_seconds_bucket"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(buckets.len(), 11, "{metrics}");
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{metrics}");
    assert_eq!(buckets.last(), Some(&timed));
    assert!(value("confide_sfu_forward_delay_seconds_sum") > 0.0, "{metrics}");
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
async fn join_both(pair: &Pair, patient_api: &Client, clinician_api: &Client) -> Peers<Peer> {
    let mut peers = Peers::new(WAIT);
    for (who, api) in [("patient", patient_api), ("clinician", clinician_api)] {
        peers.put(Peer::join(api, &pair.path("call"), &pair.label(who)).await);
    }
    peers.run_until("both to connect", |ps| ps.all_connected()).await;
    peers.run_for(Duration::from_millis(200)).await;
    peers
}

/// Both send a phase's audio and video, and each gets all of the other's.
async fn exchange(peers: &mut Peers<Peer>, pair: &Pair, phase: u32) {
    let (patient, clinician) = (pair.label("patient"), pair.label("clinician"));
    peers
        .send_phase(
            phase,
            FRAMES,
            &[(patient.as_str(), true), (clinician.as_str(), true)],
        )
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
    let monday = next_monday();
    set_clock(&app.clock, at(monday, 8, 0));
    let a = pair(&app, "A", monday).await;
    set_clock(&app.clock, at(monday, 8, 55));
    a.check_in_and_start().await;
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

    let master = MasterKey::load(&dir.path().join("master.key")).unwrap();
    let rec = Recording::read(&running.state, &master, &a.appointment, &a.patient).await;
    use ConsultationMode::*;
    use SegmentReason::*;
    assert_eq!(rec.segments, [(0, Start, Video), (1, Restart, Video)]);
    for who in ["patient", "clinician"] {
        let label = a.label(who);
        for kind in ["audio", "video"] {
            assert_eq!(
                numbers(rec.markers(0), &label, kind, 1),
                all(),
                "{label} {kind} before"
            );
            assert_eq!(
                numbers(rec.markers(1), &label, kind, 2),
                all(),
                "{label} {kind} after"
            );
            assert!(numbers(rec.markers(0), &label, kind, 2).is_empty());
            assert!(numbers(rec.markers(1), &label, kind, 1).is_empty());
        }
    }
    assert!(rec.times[0].1 < rec.times[1].0, "one clock: {:?}", rec.times);
    running.stop().await.unwrap();
}
