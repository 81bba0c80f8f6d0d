//! What a consultation keeps beside its media: recording consent and the in-call chat.
//!
//! Consent is tested in a real call, str0m peers in the browsers' place: the patient withdraws their
//! consent in the middle and gives it again, and the recording, decrypted with its key from the store,
//! holds none of the patient's frames from the time between and all of the clinician's. The chat is
//! tested for its bounds, its live stream, its record after the call, and that nobody but the
//! consultation's two people can read or write it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use confide_domain::identity::Role;
use confide_media::MasterKey;
use confide_store::testing::TestDatabase;
use confide_store::{Role as StoreRole, Store, UnscopedTable};
use jiff::civil::Date;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::consultation::{Booked, Recording};
use crate::helpers::{Client, Seeded, TestApp, not_found_body, register};
use crate::helpers::{at, next_monday, set_clock};
use crate::peer::{Peer, Peers, numbers};

const FRAMES: u32 = 10;
const WAIT: Duration = Duration::from_secs(5);

/// A practice whose clinician works Mondays 09:00 to 12:00, a registered patient booked at 09:00, and
/// the consultation started at 08:55.
async fn running(app: &TestApp, monday: Date) -> Booked {
    set_clock(&app.clock, at(monday, 8, 0));
    let practice = app.practice("Consent Surgery").await;
    let r = Booked::new(app, practice, monday, 9).await;
    set_clock(&app.clock, at(monday, 8, 55));
    r.check_in().await;
    // Before the consultation starts, there is nothing to consent to or chat in.
    for (path, body) in [
        ("call/consent", json!({"decision": "given"})),
        ("messages", json!({"body": "early"})),
    ] {
        let (status, answer) = r.patient_api.post(&r.path(path), body).await;
        assert_eq!(
            (status, answer),
            (StatusCode::NOT_FOUND, not_found_body()),
            "{path}"
        );
    }
    r.start().await;
    r
}

/// Both send a phase's audio and video, and each gets all of the other's: the call itself goes on
/// whatever anyone's consent to the recording.
async fn exchange(peers: &mut Peers<Peer>, phase: u32) {
    let both = [("C/patient", true), ("C/clinician", true)];
    peers.send_phase(phase, FRAMES, &both).await;
    let all: BTreeSet<u32> = (0..FRAMES).collect();
    peers
        .run_until("the phase to arrive", |ps| {
            ["audio", "video"].iter().all(|kind| {
                ps.get("C/patient").received("C/clinician", kind, phase) == all
                    && ps.get("C/clinician").received("C/patient", kind, phase) == all
            })
        })
        .await;
    peers.run_for(Duration::from_millis(200)).await;
}

async fn consent(api: &Client, r: &Booked, decision: &str) -> Value {
    let (status, body) = api
        .post(&r.path("call/consent"), json!({"decision": decision}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn withdrawn_consent_leaves_the_patient_out_of_the_recording(db: Option<TestDatabase>) {
    let postgres_url = db.as_ref().map(|d| d.url.clone());
    let app = TestApp::spawn_with(db, |_| {}).await;
    let r = running(&app, next_monday()).await;

    // Both join agreeing to be recorded (the peers answer the question as they join).
    let mut peers = Peers::new(WAIT);
    for (who, api) in [("patient", &r.patient_api), ("clinician", &r.clinician_api)] {
        peers.put(Peer::join(api, &r.path("call"), &format!("C/{who}")).await);
    }
    peers.run_until("both to connect", Peers::all_connected).await;
    peers.run_for(Duration::from_millis(200)).await;
    exchange(&mut peers, 1).await;

    // The patient withdraws: from then on only the clinician is recorded. Saying it twice adds nothing.
    let body = consent(&r.patient_api, &r, "withdrawn").await;
    assert_eq!(body, json!({"decision": "withdrawn", "changed": true}));
    let body = consent(&r.patient_api, &r, "withdrawn").await;
    assert_eq!(body, json!({"decision": "withdrawn", "changed": false}));
    exchange(&mut peers, 2).await;

    // And gives it again: recorded once more.
    let body = consent(&r.patient_api, &r, "given").await;
    assert_eq!(body["changed"], json!(true));
    exchange(&mut peers, 3).await;

    let (status, body) = r
        .patient_api
        .post(&r.path("call/consent"), json!({"decision": "maybe"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // The log holds each decision in order, for both of them to read.
    let (status, log) = r.clinician_api.get(&r.path("call/consent")).await;
    assert_eq!(status, StatusCode::OK, "{log}");
    let decisions: Vec<(String, String)> = log["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["role"].as_str().unwrap().to_owned(),
                d["decision"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("patient", "given"),
        ("clinician", "given"),
        ("patient", "withdrawn"),
        ("patient", "given"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    assert_eq!(decisions, expected);

    let (status, body) = r.clinician_api.post(&r.path("complete"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Once the consultation is over there is nothing left to consent to.
    let (status, body) = r
        .patient_api
        .post(&r.path("call/consent"), json!({"decision": "withdrawn"}))
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::CONFLICT, &json!("invalid_state")),
        "{body}"
    );

    // The recording, read with its own key as the patient's grant gives it.
    let state = &app.running.state;
    let store = &state.store;
    let master = MasterKey::load(&app.dir.path().join("master.key")).unwrap();
    let rec = Recording::read(state, &master, &r.appointment, &r.patient).await;
    let unscoped = store
        .unscoped_count(UnscopedTable::ConsultationConsents)
        .await
        .unwrap();
    assert_eq!(
        unscoped,
        if postgres_url.is_some() { 0 } else { 4 },
        "row-level security"
    );
    // Consent changes no segment: the call stayed in its first one.
    assert_eq!(rec.segments.len(), 1);
    let numbers = |label: &str, kind: &str, phase: u32| numbers(rec.markers(0), label, kind, phase);
    let all: BTreeSet<u32> = (0..FRAMES).collect();
    for kind in ["audio", "video"] {
        for phase in [1, 2, 3] {
            assert_eq!(
                numbers("C/clinician", kind, phase),
                all,
                "clinician {kind} {phase}"
            );
        }
        assert_eq!(numbers("C/patient", kind, 1), all, "patient {kind} before");
        assert!(
            numbers("C/patient", kind, 2).is_empty(),
            "the patient's {kind} was recorded after they withdrew"
        );
        assert_eq!(
            numbers("C/patient", kind, 3),
            all,
            "patient {kind} after giving again"
        );
    }
    // Each frame is stored as its sender's.
    for (sender, marker) in &rec.frames[0] {
        let expected = if marker.label == "C/patient" {
            r.patient.id
        } else {
            r.clinician.id
        };
        assert_eq!(*sender, expected.as_uuid(), "{marker:?}");
    }

    // Every decision is audited. The patient's "who accessed my data" shows the clinician's; their own
    // are in the audit chain, read here as its owner (on PostgreSQL the server's role may not).
    let (status, log) = r
        .patient_api
        .get(&format!("/api/v1/patients/{}/access-log", r.patient.id))
        .await;
    assert_eq!(status, StatusCode::OK, "{log}");
    assert!(
        log.as_array().unwrap().iter().any(|e| {
            e["action"] == "consultation.consent_given" && e["actor_id"] == json!(r.clinician.id)
        }),
        "{log:#}"
    );
    let owner = match &postgres_url {
        Some(url) => Some(Store::open(url, StoreRole::Owner).await.unwrap()),
        None => None,
    };
    let chain = owner
        .as_ref()
        .unwrap_or(store)
        .audit_page(0, 100_000)
        .await
        .unwrap();
    let count = |action: &str, actor: &Seeded| {
        chain
            .iter()
            .filter(|e| {
                e.event.action == action
                    && e.event.actor == Some(actor.id)
                    && e.event.subject_patient == Some(r.patient.id)
            })
            .count()
    };
    assert_eq!(count("consultation.consent_given", &r.patient), 2);
    assert_eq!(count("consultation.consent_withdrawn", &r.patient), 1);
    assert_eq!(count("consultation.consent_given", &r.clinician), 1);
    if let Some(owner) = owner {
        owner.close().await;
    }
    app.stop().await;
}

#[tokio::test]
async fn withdrawn_consent_leaves_the_patient_out_of_the_recording_on_sqlite() {
    withdrawn_consent_leaves_the_patient_out_of_the_recording(None).await;
}

#[tokio::test]
async fn withdrawn_consent_leaves_the_patient_out_of_the_recording_on_postgres() {
    if let Some(db) = TestDatabase::postgres().await {
        withdrawn_consent_leaves_the_patient_out_of_the_recording(Some(db)).await;
    }
}

/// Reads server-sent events from `url` until `n` `message` events have come, and returns their data.
async fn read_events(http: &reqwest::Client, url: &str, n: usize) -> Vec<Value> {
    let mut response = http.get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut text = String::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + WAIT;
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, response.chunk())
            .await
            .expect("the messages to arrive")
            .unwrap()
            .expect("the stream to stay open");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            if event.lines().any(|l| l == "event: message") {
                let data = event.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
                out.push(serde_json::from_str(data).unwrap());
            }
        }
    }
    out
}

async fn chat_is_kept_and_seen_only_by_the_two(db: Option<TestDatabase>) {
    let postgres = db.is_some();
    let app = TestApp::spawn_with(db, |_| {}).await;
    let r = running(&app, next_monday()).await;
    let stranger = app.user(Role::Patient, None, false).await;
    let stranger_api = app.login(&stranger).await;
    register(&stranger_api, &r.clinician_api, r.practice).await;
    let colleague = app.user(Role::Clinician, Some(r.practice), true).await;
    let colleague_api = app.login(&colleague).await;
    let elsewhere = app.practice("Elsewhere Surgery").await;
    let other_clinician = app.user(Role::Clinician, Some(elsewhere), true).await;
    let other_api = app.login(&other_clinician).await;

    // The clinician's page listens before anything is said.
    let events_url = app.url(&r.path("messages/events"));
    // The same browser as the clinician's API client: its cookies.
    let http = r.clinician_api.http.clone();
    let listening = tokio::spawn(async move { read_events(&http, &events_url, 2).await });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (status, body) = r
        .patient_api
        .post(&r.path("messages"), json!({"body": "Hello, can you hear me?"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["seq"], 1);
    assert_eq!(body["sender_role"], "patient");
    assert_eq!(body["sender_id"], json!(r.patient.id));
    let (status, body) = r
        .clinician_api
        .post(&r.path("messages"), json!({"body": "Yes — go ahead."}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["sender_role"], "clinician");

    for (text, code) in [
        (String::new(), "empty_message"),
        ("   \n ".to_owned(), "empty_message"),
        ("x".repeat(2001), "message_too_long"),
    ] {
        let (status, body) = r
            .patient_api
            .post(&r.path("messages"), json!({"body": text}))
            .await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (StatusCode::BAD_REQUEST, &json!(code)),
            "{body}"
        );
    }
    let (status, body) = r
        .patient_api
        .post(&r.path("messages"), json!({"body": "é".repeat(2000)}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "2000 characters are allowed: {body}");

    let live = listening.await.unwrap();
    let bodies: Vec<&str> = live.iter().map(|m| m["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["Hello, can you hear me?", "Yes — go ahead."]);

    // Outsiders: the same 404 as for nothing at all, whatever they try; logged out, 401.
    let appointment_gone = format!("/api/v1/appointments/{}/messages", uuid::Uuid::new_v4());
    let (status, body) = r.patient_api.get(&appointment_gone).await;
    assert_eq!((status, body), (StatusCode::NOT_FOUND, not_found_body()));
    let anonymous = app.anonymous();
    for (who, api) in [
        ("a patient of the same practice", &stranger_api),
        ("a colleague of the clinician", &colleague_api),
        ("a clinician elsewhere", &other_api),
        ("nobody logged in", &anonymous),
    ] {
        let expected = if who == "nobody logged in" {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::NOT_FOUND
        };
        for path in ["messages", "messages/events", "call/consent"] {
            let (status, body) = api.open_stream(&r.path(path)).await;
            assert_eq!(status, expected, "GET {path} by {who}: {body}");
        }
        let (status, _) = api.post(&r.path("messages"), json!({"body": "let me in"})).await;
        assert_eq!(status, expected, "POST messages by {who}");
        let (status, _) = api
            .post(&r.path("call/consent"), json!({"decision": "given"}))
            .await;
        assert_eq!(status, expected, "POST consent by {who}");
    }

    // After the call the chat stays in the consultation's record, read-only.
    let (status, body) = r.clinician_api.post(&r.path("complete"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = r
        .patient_api
        .post(&r.path("messages"), json!({"body": "one more"}))
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::CONFLICT, &json!("invalid_state")),
        "{body}"
    );
    for api in [&r.patient_api, &r.clinician_api] {
        let (status, list) = api.get(&r.path("messages")).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        let seqs: Vec<i64> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_i64().unwrap())
            .collect();
        assert_eq!(seqs, [1, 2, 3]);
    }
    let (status, list) = r.patient_api.get(&r.path("messages?after=2")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1);
    // On PostgreSQL, row-level security hides the messages from the server outside a grant's scope.
    let unscoped = app
        .running
        .state
        .store
        .unscoped_count(UnscopedTable::ConsultationMessages)
        .await
        .unwrap();
    assert_eq!(unscoped, if postgres { 0 } else { 3 });

    // Every read was the gate's decision, audited; the outsiders' tries are in the patient's log.
    let (status, log) = r
        .patient_api
        .get(&format!("/api/v1/patients/{}/access-log", r.patient.id))
        .await;
    assert_eq!(status, StatusCode::OK, "{log}");
    let tried = |actor: &Seeded, action: &str, outcome: &str| {
        log.as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor_id"] == json!(actor.id) && e["action"] == action && e["outcome"] == outcome)
    };
    assert!(
        tried(&r.clinician, "consultation.record.read", "allowed"),
        "{log:#}"
    );
    for outsider in [&stranger, &colleague, &other_clinician] {
        assert!(tried(outsider, "consultation.record.read", "denied"), "{log:#}");
        assert!(tried(outsider, "consultation.chat.post", "denied"), "{log:#}");
        assert!(!tried(outsider, "consultation.record.read", "allowed"), "{log:#}");
    }
    app.stop().await;
}

#[tokio::test]
async fn chat_is_kept_and_seen_only_by_the_two_on_sqlite() {
    chat_is_kept_and_seen_only_by_the_two(None).await;
}

#[tokio::test]
async fn chat_is_kept_and_seen_only_by_the_two_on_postgres() {
    if let Some(db) = TestDatabase::postgres().await {
        chat_is_kept_and_seen_only_by_the_two(Some(db)).await;
    }
}
