//! Guests: the clinician of a running consultation invites someone without an account (an interpreter),
//! who redeems a single-use link into a guest session and takes part in that one call: joins, chats and
//! decides about their own recording, and nothing else. Nobody but the clinician invites, lists or
//! revokes; a spent or revoked link is a 404 like any unknown one; and every step is in the patient's
//! "who accessed my data". The call itself is tested with str0m peers in the browsers' place, three in a
//! room, and the guest's frames must be in the recording under the guest's own id.

use std::collections::BTreeSet;
use std::time::Duration;

use confide_domain::consultation::ConsultationMode;
use confide_domain::identity::Role;
use confide_domain::policy::actions::JoinConsultation;
use confide_media::MasterKey;
use confide_server::api::calls::join_call;
use confide_server::api::guests::{GUEST_COOKIE, InCall, call_grant};
use confide_server::auth::token_hash;
use confide_server::error::ApiError;
use confide_server::gate::RequestId;
use confide_store::testing::TestDatabase;
use jiff::civil::Date;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::consultation::{Booked, Recording};
use crate::helpers::{Client, TestApp, not_found_body};
use crate::helpers::{at, next_monday, set_clock};
use crate::peer::{Marker, Peer, Peers, numbers};

const FRAMES: u32 = 10;
const WAIT: Duration = Duration::from_secs(5);

/// A practice whose clinician works Mondays 09:00 to 12:00 and a registered patient booked at `hour`:00
/// (the clock must be before 09:00).
async fn booked(app: &TestApp, name: &str, monday: Date, hour: i8) -> Booked {
    let practice = app.practice(&format!("{name} Surgery")).await;
    Booked::new(app, practice, monday, hour).await
}

/// The patient checks in and the clinician starts the consultation, five minutes before `hour`:00.
async fn start(app: &TestApp, r: &Booked, monday: Date, hour: i8) {
    set_clock(&app.clock, at(monday, hour - 1, 55));
    r.check_in_and_start().await;
}

/// The clinician invites an interpreter; returns the guest's id and the link's token.
async fn invite(r: &Booked) -> (String, String) {
    let (status, body) = r
        .clinician_api
        .post(
            &r.path("guests"),
            json!({"name": "Ana Tolmač", "role": "interpreter"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let link = body["link"].as_str().unwrap();
    let token = link.rsplit_once("/join/").expect("a join link").1.to_owned();
    // 32 random bytes, base64url.
    assert_eq!(token.len(), 43, "{link}");
    (body["guest_id"].as_str().unwrap().to_owned(), token)
}

fn csrf_of(html: &str) -> String {
    let start = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF field")
        + 19;
    html[start..].split('"').next().unwrap().to_owned()
}

/// Opens the link's page in `browser` and answers its question; returns the redemption's status and,
/// on success, where it sent the browser and the guest session's token from its cookie.
async fn redeem(
    browser: &Client,
    base: &str,
    token: &str,
    consent: &str,
) -> (StatusCode, Option<String>, Option<String>) {
    let (status, page) = browser.get(&format!("/join/{token}")).await;
    if status != StatusCode::OK {
        return (status, None, None);
    }
    let csrf = csrf_of(page.as_str().unwrap());
    let response = browser
        .http
        .post(format!("{base}/join/{token}"))
        .form(&[("csrf", csrf.as_str()), ("consent", consent)])
        .send()
        .await
        .unwrap();
    let status = response.status();
    let location = response
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned());
    let session = response.headers().get_all("set-cookie").iter().find_map(|c| {
        let (value, _) = c
            .to_str()
            .ok()?
            .strip_prefix(GUEST_COOKIE)?
            .strip_prefix('=')?
            .split_once(';')?;
        Some(value.to_owned())
    });
    (status, location, session)
}

async fn guests_get_one_link_one_call_and_nothing_else(db: Option<TestDatabase>) {
    let app = TestApp::spawn_with(db, |_| {}).await;
    let base = app.url("");
    let monday = next_monday();
    set_clock(&app.clock, at(monday, 8, 0));
    let other = booked(&app, "Other", monday, 10).await;
    let r = booked(&app, "Guest", monday, 11).await;
    start(&app, &other, monday, 10).await;
    start(&app, &r, monday, 11).await;

    // Before anyone invites, nobody but the clinician may invite, list or revoke.
    let stranger = app.user(Role::Patient, None, false).await;
    let stranger_api = app.login(&stranger).await;
    let colleague = app.user(Role::Clinician, Some(r.practice), true).await;
    let colleague_api = app.login(&colleague).await;
    let revoke_path = r.path(&format!("guests/{}", uuid::Uuid::new_v4()));
    for (who, api) in [
        ("an unrelated patient", &stranger_api),
        ("an unrelated clinician", &other.clinician_api),
        ("a colleague at the practice", &colleague_api),
        ("the consultation's own patient", &r.patient_api),
    ] {
        let (status, body) = api
            .post(&r.path("guests"), json!({"name": "Eve", "role": "interpreter"}))
            .await;
        assert_eq!(
            (status, body),
            (StatusCode::NOT_FOUND, not_found_body()),
            "{who} invites"
        );
        let (status, body) = api.get(&r.path("guests")).await;
        assert_eq!(
            (status, body),
            (StatusCode::NOT_FOUND, not_found_body()),
            "{who} lists"
        );
        let (status, body) = api.delete(&revoke_path).await;
        assert_eq!(
            (status, body),
            (StatusCode::NOT_FOUND, not_found_body()),
            "{who} revokes"
        );
    }
    let anonymous = app.anonymous();
    for (status, _) in [
        anonymous
            .post(&r.path("guests"), json!({"name": "Eve", "role": "interpreter"}))
            .await,
        anonymous.get(&r.path("guests")).await,
        anonymous.delete(&revoke_path).await,
    ] {
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, body) = r
        .clinician_api
        .post(&r.path("guests"), json!({"name": "Eve", "role": ""}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = r.clinician_api.delete(&revoke_path).await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, not_found_body()),
        "an unknown guest"
    );

    let (guest_id, token) = invite(&r).await;
    let (status, list) = r.clinician_api.get(&r.path("guests")).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list[0]["guest_id"], json!(guest_id));
    assert_eq!(list[0]["redeemed_at"], Value::Null);

    // The link's page names the clinician and the practice, not the patient.
    let guest = app.anonymous();
    let (status, page) = guest.get(&format!("/join/{token}")).await;
    assert_eq!(status, StatusCode::OK);
    let page = page.as_str().unwrap();
    assert!(
        page.contains("Guest Surgery") && page.contains("interpreter"),
        "{page}"
    );
    let patient_name = r.patient_api.get("/api/v1/me").await.1["name"].clone();
    assert!(
        !page.contains(patient_name.as_str().unwrap()),
        "the page names the patient"
    );

    // Redeemed once; the second time, from anywhere, it is a 404 like any unknown link.
    let (status, location, _) = redeem(&guest, &base, &token, "given").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let call_page = location.unwrap();
    assert_eq!(call_page, format!("/guest/appointments/{}/call", r.appointment));
    let (status, page) = guest.get(&call_page).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let me = format!("data-me=\"{guest_id}\"");
    assert!(page.as_str().unwrap().contains(&me), "{page}");
    for browser in [&guest, &app.anonymous()] {
        let (status, _, _) = redeem(browser, &base, &token, "given").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let (status, _) = app.anonymous().get("/join/not-a-token").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, list) = r.clinician_api.get(&r.path("guests")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(list[0]["redeemed_at"].is_string(), "{list}");

    // In their own consultation the guest consents, chats and reads the chat.
    let (status, body) = guest
        .post(&r.path("call/consent"), json!({"decision": "given"}))
        .await;
    assert_eq!(
        (status, &body["changed"]),
        (StatusCode::OK, &json!(false)),
        "given on the link's page"
    );
    let (status, body) = guest
        .post(&r.path("messages"), json!({"body": "Dobar dan"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["sender_role"], json!("guest"));
    assert_eq!(body["sender_id"], json!(guest_id));
    let (status, messages) = r.patient_api.get(&r.path("messages")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(messages[0]["sender_role"], json!("guest"), "{messages}");
    let (status, body) = r
        .patient_api
        .post(&r.path("messages"), json!({"body": "Hello"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, messages) = guest.get(&r.path("messages")).await;
    assert_eq!((status, messages.as_array().unwrap().len()), (StatusCode::OK, 2));
    let (status, log) = r.clinician_api.get(&r.path("call/consent")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        log["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["role"] == "guest"
                && d["participant_id"] == json!(guest_id)
                && d["decision"] == "given"),
        "{log}"
    );

    // A guest may not switch the call's mode.
    let (status, body) = guest
        .post(&r.path("call/mode"), json!({"sdp": "v=0", "mode": "audio_only"}))
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::CONFLICT, &json!("invalid_state")),
        "{body}"
    );

    // Another consultation's call and record are not there for the guest.
    for (path, body) in [
        ("call", json!({"sdp": "v=0", "mode": "video"})),
        ("call/consent", json!({"decision": "given"})),
        ("messages", json!({"body": "hi"})),
        ("guests", json!({"name": "Eve", "role": "interpreter"})),
    ] {
        let (status, answer) = guest.post(&other.path(path), body).await;
        let expected = if path == "guests" {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::NOT_FOUND
        };
        assert_eq!(status, expected, "another consultation's {path}: {answer}");
    }
    let (status, body) = guest.get(&other.path("messages")).await;
    assert_eq!((status, body), (StatusCode::NOT_FOUND, not_found_body()));
    let (status, _) = guest
        .get(&format!("/guest/appointments/{}/call", other.appointment))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Nor is anything an account would see: to those endpoints a guest is logged out.
    for path in [
        format!("/api/v1/appointments/{}", r.appointment),
        "/api/v1/recordings".to_owned(),
        format!("/api/v1/patients/{}/record", r.patient.id),
        r.path("guests"),
        "/api/v1/me".to_owned(),
    ] {
        let (status, body) = guest.get(&path).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
    }

    // Revoked: the guest's session and the link are dead.
    let (status, body) = r
        .clinician_api
        .delete(&r.path(&format!("guests/{guest_id}")))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _) = guest
        .post(&r.path("messages"), json!({"body": "still here?"}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = guest.get(&format!("/join/{token}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, list) = r.clinician_api.get(&r.path("guests")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(list[0]["revoked_at"].is_string(), "{list}");

    // A link not used before it was revoked is refused too, and the first redemption of a fresh one
    // that is revoked in between gets nowhere.
    let (second, token) = invite(&r).await;
    let (status, _) = r.clinician_api.delete(&r.path(&format!("guests/{second}"))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = redeem(&app.anonymous(), &base, &token, "given").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Once the consultation is over, no one is invited any more.
    let (status, body) = r.clinician_api.post(&r.path("complete"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = r
        .clinician_api
        .post(&r.path("guests"), json!({"name": "Late", "role": "interpreter"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // Every step is on the patient's "who accessed my data".
    let (status, log) = r
        .patient_api
        .get(&format!("/api/v1/patients/{}/access-log", r.patient.id))
        .await;
    assert_eq!(status, StatusCode::OK, "{log}");
    let log = log.as_array().unwrap();
    let has = |action: &str, outcome: &str, reason: &str| {
        log.iter().any(|e| {
            e["action"] == action && e["outcome"] == outcome && e["reason"].as_str().unwrap().contains(reason)
        })
    };
    let guest_tag = format!("guest:{guest_id}");
    assert!(
        has(
            "consultation.invite_guest",
            "allowed",
            "clinician_of_consultation"
        ),
        "{log:#?}"
    );
    assert!(
        has("consultation.invite_guest", "denied", "not_their_consultation"),
        "{log:#?}"
    );
    assert!(
        has("consultation.guest_invited", "allowed", &guest_tag),
        "{log:#?}"
    );
    assert!(
        has("consultation.guest_link_redeemed", "allowed", &guest_tag),
        "{log:#?}"
    );
    assert!(
        has("consultation.guest_link", "denied", "link_already_used"),
        "{log:#?}"
    );
    assert!(
        has("consultation.guest_link", "denied", "guest_revoked"),
        "{log:#?}"
    );
    assert!(has("consultation.chat.post", "allowed", &guest_tag), "{log:#?}");
    assert!(
        has("consultation.guest_revoked", "allowed", &guest_tag),
        "{log:#?}"
    );
    // The other consultation's patient sees the guest's attempt on their consultation.
    let (status, log) = other
        .patient_api
        .get(&format!("/api/v1/patients/{}/access-log", other.patient.id))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        log.as_array().unwrap().iter().any(|e| e["outcome"] == "denied"
            && e["action"] == "consultation.join"
            && e["reason"].as_str().unwrap().contains(&guest_tag)),
        "{log:#}"
    );

    // The guest endpoints are described.
    let (status, doc) = app.anonymous().get("/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["paths"]["/api/v1/appointments/{id}/guests"]["post"].is_object());
    assert!(doc["paths"]["/api/v1/appointments/{id}/guests"]["get"].is_object());
    assert!(doc["paths"]["/api/v1/appointments/{id}/guests/{guest_id}"]["delete"].is_object());
    app.stop().await;
}

#[tokio::test]
async fn guests_get_one_link_one_call_and_nothing_else_sqlite() {
    guests_get_one_link_one_call_and_nothing_else(None).await;
}

#[tokio::test]
async fn guests_get_one_link_one_call_and_nothing_else_postgres() {
    if let Some(db) = TestDatabase::postgres().await {
        guests_get_one_link_one_call_and_nothing_else(Some(db)).await;
    }
}

/// Whether the guest's browser got nothing of `phase` from anyone.
fn guest_got_nothing_of(peers: &Peers<Peer>, phase: u32) -> bool {
    let guest = peers.get("G/guest");
    ["G/patient", "G/clinician"].iter().all(|from| {
        ["audio", "video"]
            .iter()
            .all(|kind| guest.received(from, kind, phase).is_empty())
    })
}

/// Three in a call: the patient, the clinician and the guest, each with one audio and one video line.
/// The SFU seats the patient, the clinician and the guest in that order, and a browser's first line of
/// each kind carries the first of the others: the patient gets the clinician, the clinician and the
/// guest get the patient. The recorder keeps everyone who consented, the guest under their own id.
#[tokio::test]
async fn a_consenting_guest_is_in_the_call_and_in_the_recording() {
    let app = TestApp::spawn().await;
    let base = app.url("");
    let monday = next_monday();
    set_clock(&app.clock, at(monday, 8, 0));
    let r = booked(&app, "Three", monday, 9).await;
    start(&app, &r, monday, 9).await;
    let (guest_id, token) = invite(&r).await;
    let guest = app.anonymous();
    let (status, _, _) = redeem(&guest, &base, &token, "given").await;
    assert_eq!(status, StatusCode::SEE_OTHER);

    let mut peers = Peers::new(WAIT);
    for (who, api) in [
        ("patient", &r.patient_api),
        ("clinician", &r.clinician_api),
        ("guest", &guest),
    ] {
        peers.put(Peer::join(api, &r.path("call"), &format!("G/{who}")).await);
    }
    peers
        .run_until("all three to connect", Peers::all_connected)
        .await;
    let three = [("G/patient", true), ("G/clinician", true), ("G/guest", true)];
    peers.run_for(Duration::from_millis(200)).await;
    peers.send_phase(1, FRAMES, &three).await;
    let all: BTreeSet<u32> = (0..FRAMES).collect();
    peers
        .run_until("the frames to arrive", |ps| {
            ["audio", "video"].iter().all(|kind| {
                ps.get("G/patient").received("G/clinician", kind, 1) == all
                    && ps.get("G/clinician").received("G/patient", kind, 1) == all
                    && ps.get("G/guest").received("G/patient", kind, 1) == all
            })
        })
        .await;
    peers.run_for(Duration::from_millis(200)).await;

    // Revoked mid-call, the guest is dropped: what they send after it reaches nobody and is not
    // recorded, while the others carry on.
    let (status, body) = r
        .clinician_api
        .delete(&r.path(&format!("guests/{guest_id}")))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    peers.send_phase(2, FRAMES, &three).await;
    peers
        .run_until("the others' frames to arrive", |ps| {
            ["audio", "video"].iter().all(|kind| {
                ps.get("G/patient").received("G/clinician", kind, 2) == all
                    && ps.get("G/clinician").received("G/patient", kind, 2) == all
            })
        })
        .await;
    peers.run_for(Duration::from_millis(200)).await;
    assert!(
        guest_got_nothing_of(&peers, 2),
        "the revoked guest still got frames"
    );

    let (status, body) = r.clinician_api.post(&r.path("complete"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let master = MasterKey::load(&app.dir.path().join("master.key")).unwrap();
    let rec = Recording::read(&app.running.state, &master, &r.appointment, &r.patient).await;
    let recorded: Vec<&(uuid::Uuid, Marker)> = rec.frames.iter().flatten().collect();
    let guest_uuid: uuid::Uuid = guest_id.parse().unwrap();
    for (label, id) in [
        ("G/patient", r.patient.id.as_uuid()),
        ("G/clinician", r.clinician.id.as_uuid()),
        ("G/guest", guest_uuid),
    ] {
        for kind in ["audio", "video"] {
            let markers = recorded.iter().map(|(_, m)| m);
            assert_eq!(
                numbers(markers, label, kind, 1),
                all,
                "{label} {kind} in the recording"
            );
        }
        assert!(
            recorded
                .iter()
                .filter(|(_, m)| m.label == label)
                .all(|(sender, _)| *sender == id),
            "{label}'s frames are stored as theirs"
        );
    }
    assert!(
        !recorded.iter().any(|(_, m)| m.label == "G/guest" && m.phase == 2),
        "the revoked guest was recorded"
    );
    for label in ["G/patient", "G/clinician"] {
        assert!(
            recorded.iter().any(|(_, m)| m.label == label && m.phase == 2),
            "{label} was not recorded after the guest left"
        );
    }
    app.stop().await;
}

/// A guest's join that the gate let in just before the clinician revoked them must not finish after the
/// revocation has cleared the room: that would put the revoked guest in the call. The join is taken
/// from its grant on, as the handler would go on after the gate.
async fn a_join_let_in_before_its_guest_was_revoked_stays_out_of_the_call(db: Option<TestDatabase>) {
    let app = TestApp::spawn_with(db, |_| {}).await;
    let state = &app.running.state;
    let monday = next_monday();
    set_clock(&app.clock, at(monday, 8, 0));
    let r = booked(&app, "Late", monday, 9).await;
    start(&app, &r, monday, 9).await;
    let (guest_id, token) = invite(&r).await;
    let (status, _, session) = redeem(&app.anonymous(), &app.url(""), &token, "given").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let session = state
        .store
        .guest_session(&token_hash(&session.expect("a guest cookie")), state.clock.now())
        .await
        .unwrap()
        .expect("a live guest session");
    let appointment: uuid::Uuid = r.appointment.parse().unwrap();
    let request = RequestId("late-join".into());
    let grant = call_grant::<JoinConsultation>(state, &InCall::Guest(session), appointment, &request)
        .await
        .expect("the gate lets the guest in");

    let (status, body) = r
        .clinician_api
        .delete(&r.path(&format!("guests/{guest_id}")))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    let mut late = confide_testpeer::Peer::new("late guest").await;
    let joined = join_call(
        state,
        &grant,
        late.offer(true),
        ConsultationMode::Video,
        state.clock.now_ms(),
        &request,
    )
    .await;
    match joined {
        Err(ApiError::NotFound) => {}
        Err(e) => panic!("the revoked guest's join failed otherwise: {e}"),
        Ok(_) => panic!("the revoked guest's join was answered"),
    }
    // The patient sees the gate's yes and, after it, the refusal.
    let (status, log) = r
        .patient_api
        .get(&format!("/api/v1/patients/{}/access-log", r.patient.id))
        .await;
    assert_eq!(status, StatusCode::OK, "{log}");
    let guest_tag = format!("guest:{guest_id}");
    let joins: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "consultation.join" && e["reason"].as_str().unwrap().contains(&guest_tag))
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert!(joins.contains(&"allowed") && joins.contains(&"denied"), "{log:#}");
    // The patient and clinician still get in.
    let mut peers = Peers::new(WAIT);
    for (who, api) in [("patient", &r.patient_api), ("clinician", &r.clinician_api)] {
        peers.put(Peer::join(api, &r.path("call"), &format!("L/{who}")).await);
    }
    peers.run_until("both to connect", Peers::all_connected).await;
    app.stop().await;
}

#[tokio::test]
async fn a_join_let_in_before_its_guest_was_revoked_stays_out_of_the_call_sqlite() {
    a_join_let_in_before_its_guest_was_revoked_stays_out_of_the_call(None).await;
}

#[tokio::test]
async fn a_join_let_in_before_its_guest_was_revoked_stays_out_of_the_call_postgres() {
    if let Some(db) = TestDatabase::postgres().await {
        a_join_let_in_before_its_guest_was_revoked_stays_out_of_the_call(Some(db)).await;
    }
}
