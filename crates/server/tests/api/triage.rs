//! The symptom checker over HTTP: whole conversations to an emergency and to a routine result, going back,
//! anonymous use that keeps nothing, a patient's kept conversations that nobody else can reach, and the
//! summary handed to the clinician of an appointment booked from a result. On SQLite, and on PostgreSQL
//! when configured.

use confide_domain::identity::Role;
use confide_server::Clock;
use confide_store::testing::TestDatabase;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Client, TestApp, not_found_body, register};

fn code(body: &Value) -> Option<&str> {
    body["error"]["code"].as_str()
}

const CHEST: &str = "I've got a heavy pressure in my chest and feel sweaty and sick";
const BLADDER: &str = "I've had a burning pain when I pee and need to go all the time, since yesterday";

/// Answers yes to questions whose wording contains any of `yes_to`, don't know to choices, no otherwise.
fn answer_for(question: &Value, yes_to: &[&str]) -> String {
    if question["kind"] == "choice" {
        return "unknown".to_owned();
    }
    let text = question["text"].as_str().unwrap().to_lowercase();
    let id = question["id"].as_str().unwrap().to_lowercase();
    if yes_to.iter().any(|w| text.contains(w) || id.contains(w)) {
        "yes".to_owned()
    } else {
        "no".to_owned()
    }
}

/// Answers until the result, through `answer` (stored or anonymous); returns the final view and how many
/// questions were asked.
async fn walk(
    mut view: Value,
    yes_to: &[&str],
    mut answer: impl AsyncFnMut(&Value, &str, &str) -> (StatusCode, Value),
) -> Value {
    for _ in 0..30 {
        if view["status"] == "result" {
            return view;
        }
        assert_eq!(view["status"], "question", "{view}");
        let q = &view["question"];
        assert!(!q["text"].as_str().unwrap().is_empty());
        let (status, next) = answer(&view, q["id"].as_str().unwrap(), &answer_for(q, yes_to)).await;
        assert_eq!(status, StatusCode::OK, "{next}");
        assert!(next["answered"].as_u64() > view["answered"].as_u64(), "{next}");
        view = next;
    }
    panic!("no result after 30 answers: {view}");
}

async fn walk_stored(client: &Client, view: Value, yes_to: &[&str]) -> Value {
    let id = view["id"].as_str().unwrap().to_owned();
    walk(view, yes_to, async |_, q, a| {
        client
            .post(
                &format!("/api/v1/triage/sessions/{id}/answers"),
                json!({"question": q, "answer": a}),
            )
            .await
    })
    .await
}

async fn walk_anonymous(client: &Client, view: Value, yes_to: &[&str]) -> Value {
    walk(view, yes_to, async |v, q, a| {
        let (status, next) = client
            .post(
                "/api/v1/triage/anonymous/answers",
                json!({"state": v["state"], "question": q, "answer": a}),
            )
            .await;
        if status == StatusCode::OK {
            assert!(next["id"].is_null() && next["state"].is_string(), "{next}");
        }
        (status, next)
    })
    .await
}

fn assert_emergency(result: &Value) {
    assert_eq!(result["disposition"], "emergency", "{result}");
    let headline = result["headline"].as_str().unwrap();
    assert!(headline.contains("999"), "{headline}");
    assert!(result["advice"].as_str().unwrap().contains("999"), "{result}");
    assert!(!result["safety_net"].as_str().unwrap().is_empty());
    assert_eq!(result["can_book"], false);
    assert!(!result["conditions"].as_array().unwrap().is_empty());
}

/// Anonymous: a whole conversation to an emergency and to a routine result, going back, and a token that
/// was changed or made up is refused. Nothing is stored or audited.
#[tokio::test]
async fn anonymous_conversations_reach_their_result_and_keep_nothing() {
    let app = TestApp::spawn().await;
    let anon = app.anonymous();
    let audit_before = app
        .running
        .state
        .store
        .unscoped_count(confide_store::UnscopedTable::AuditLog)
        .await
        .unwrap();

    let (status, first) = anon
        .post(
            "/api/v1/triage/sessions",
            json!({"text": CHEST, "age": 62, "sex": "male"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert!(first["id"].is_null(), "{first}");
    assert!(
        first["understood"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["present"] == true),
        "{first}"
    );
    let done = walk_anonymous(
        &anon,
        first.clone(),
        &["sweat", "breath", "chest", "jaw", "arm", "sick"],
    )
    .await;
    assert_emergency(&done["result"]);
    assert_eq!(done["progress"], 1.0);

    let (status, first) = anon
        .post(
            "/api/v1/triage/sessions",
            json!({"text": BLADDER, "age": 25, "sex": "female"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let done = walk_anonymous(&anon, first, &["urin", "pee", "burn", "often", "cloudy"]).await;
    let result = &done["result"];
    assert_eq!(result["disposition"], "routine", "{done}");
    assert_eq!(result["can_book"], true);

    // Back takes the last answer away, and the conversation asks again.
    assert!(done["answered"].as_u64().unwrap() >= 1, "{done}");
    let (status, back) = anon
        .post("/api/v1/triage/anonymous/back", json!({"state": done["state"]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{back}");
    assert_eq!(back["status"], "question", "{back}");
    assert_eq!(
        back["answered"].as_u64().unwrap() + 1,
        done["answered"].as_u64().unwrap()
    );

    // A token that was altered, or never given out, is refused clearly.
    let state = back["state"].as_str().unwrap();
    let mut altered = state.to_owned();
    let flipped = if altered.ends_with('A') { "B" } else { "A" };
    altered.replace_range(altered.len() - 1.., flipped);
    let q = back["question"]["id"].clone();
    for bad in [altered.as_str(), "t1.bm9wZQ", "nonsense"] {
        let (status, body) = anon
            .post(
                "/api/v1/triage/anonymous/answers",
                json!({"state": bad, "question": q, "answer": "no"}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(code(&body), Some("invalid_state"));
    }
    // Answering some other question than the one asked is refused.
    let (status, body) = anon
        .post(
            "/api/v1/triage/anonymous/answers",
            json!({"state": state, "question": "not-the-question", "answer": "yes"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    let store = &app.running.state.store;
    assert_eq!(
        store
            .unscoped_count(confide_store::UnscopedTable::AuditLog)
            .await
            .unwrap(),
        audit_before,
        "anonymous use writes nothing to the audit log"
    );
    app.stop().await;
}

/// Bad input gets a clear 4xx, never a 500.
#[tokio::test]
async fn bad_input_is_refused_clearly() {
    let app = TestApp::spawn().await;
    let anon = app.anonymous();
    for (body, expected) in [
        (json!({"text": "", "age": 30, "sex": "female"}), "text_required"),
        (
            json!({"text": "x".repeat(2001), "age": 30, "sex": "female"}),
            "text_too_long",
        ),
        (
            json!({"text": "cough", "age": 300, "sex": "female"}),
            "invalid_age",
        ),
        (
            json!({"text": "cough", "age_months": 30, "sex": "female"}),
            "invalid_age",
        ),
        (json!({"text": "cough", "sex": "female"}), "age_required"),
        (json!({"text": "cough", "age": 30, "sex": "other"}), "invalid_sex"),
        (
            json!({"text": "cough", "age": 30, "sex": "male", "region": "atlantis"}),
            "invalid_region",
        ),
        (
            json!({"text": "cough", "age": 30, "sex": "male", "extra": 1}),
            "invalid_body",
        ),
        (json!({"text": "cough", "age": -1, "sex": "male"}), "invalid_body"),
    ] {
        let (status, got) = anon.post("/api/v1/triage/sessions", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {got}");
        assert_eq!(code(&got), Some(expected), "{body} → {got}");
    }
    let (status, first) = anon
        .post(
            "/api/v1/triage/sessions",
            json!({"text": "sore throat", "age": 30, "sex": "male", "region": "us"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["region"], "us");
    if first["status"] == "question" {
        let (status, body) = anon
            .post(
                "/api/v1/triage/anonymous/answers",
                json!({"state": first["state"], "question": first["question"]["id"], "answer": "perhaps"}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(code(&body), Some("invalid_answer"));
    }
    let (status, body) = anon
        .post("/api/v1/triage/anonymous/back", json!({"state": first["state"]}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "nothing to take back yet: {body}");
    let (status, spec) = anon.get("/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    for path in [
        "/api/v1/triage/sessions",
        "/api/v1/triage/sessions/{id}",
        "/api/v1/triage/sessions/{id}/answers",
        "/api/v1/triage/sessions/{id}/back",
        "/api/v1/triage/anonymous/answers",
        "/api/v1/triage/anonymous/back",
    ] {
        assert!(spec["paths"].get(path).is_some(), "{path} is not documented");
    }
    app.stop().await;
}

async fn patient_conversations_are_theirs_alone(db: Option<TestDatabase>) {
    let app = TestApp::spawn_with(db, |_| {}).await;
    let practice = app.practice("Triage Practice").await;
    let other_practice = app.practice("Elsewhere Practice").await;
    let gp_user = app.user(Role::Clinician, Some(practice), true).await;
    let colleague_user = app.user(Role::Clinician, Some(practice), true).await;
    let stranger_gp_user = app.user(Role::Clinician, Some(other_practice), true).await;
    let patient_user = app.user(Role::Patient, None, false).await;
    let other_user = app.user(Role::Patient, None, false).await;
    let (gp, colleague, stranger_gp) = (
        app.login(&gp_user).await,
        app.login(&colleague_user).await,
        app.login(&stranger_gp_user).await,
    );
    let (patient, other) = (app.login(&patient_user).await, app.login(&other_user).await);
    let anon = app.anonymous();
    register(&patient, &gp, practice).await;
    register(&other, &gp, practice).await;

    // The patient's own conversation: age from their profile, kept, listed, audited.
    let (status, first) = patient
        .post(
            "/api/v1/triage/sessions",
            json!({"text": BLADDER, "sex": "female"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let id = first["id"].as_str().unwrap().to_owned();
    assert!(first["state"].is_null());
    let done = walk_stored(&patient, first, &["urin", "pee", "burn", "often", "cloudy"]).await;
    assert_eq!(done["result"]["disposition"], "routine", "{done}");
    let (status, back) = patient
        .post(&format!("/api/v1/triage/sessions/{id}/back"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{back}");
    assert_eq!(back["status"], "question");
    let done = walk_stored(&patient, back, &["urin", "pee", "burn", "often", "cloudy"]).await;
    assert_eq!(done["result"]["disposition"], "routine", "{done}");
    let (status, got) = patient.get(&format!("/api/v1/triage/sessions/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got, done);
    let (status, list) = patient.get("/api/v1/triage/sessions").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["disposition"], "routine");
    // Every read and answer went through the gate and its audit log.
    let audit = || async {
        app.running
            .state
            .store
            .unscoped_count(confide_store::UnscopedTable::AuditLog)
            .await
            .unwrap()
    };
    // (On PostgreSQL the server's role cannot count the log outside a scope.)
    let sqlite = app.running.state.store.backend() == confide_store::Backend::Sqlite;
    let before = audit().await;
    let (status, _) = patient.get(&format!("/api/v1/triage/sessions/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    if sqlite {
        assert_eq!(audit().await, before + 1);
    }

    // Nobody else reaches it: another patient, the patient's own GP, a clinician elsewhere, nobody logged out.
    let (status, none) = other.get("/api/v1/triage/sessions").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(none, json!([]));
    for who in [&other, &gp, &stranger_gp, &anon] {
        let (status, body) = who.get(&format!("/api/v1/triage/sessions/{id}")).await;
        let expected = if std::ptr::eq(who, &anon) {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::NOT_FOUND
        };
        assert_eq!(status, expected, "{body}");
        if expected == StatusCode::NOT_FOUND {
            assert_eq!(body, not_found_body());
        }
        for (path, body) in [
            (
                format!("/api/v1/triage/sessions/{id}/answers"),
                json!({"question": "x", "answer": "yes"}),
            ),
            (format!("/api/v1/triage/sessions/{id}/back"), json!({})),
        ] {
            let (status, got) = who.post(&path, body).await;
            assert_eq!(status, expected, "{path}: {got}");
        }
    }
    // Staff trying the checker get an anonymous conversation; nothing of the patient's shows.
    let (status, staff_try) = gp
        .post(
            "/api/v1/triage/sessions",
            json!({"text": "cough", "age": 40, "sex": "male"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{staff_try}");
    assert!(staff_try["id"].is_null() && staff_try["state"].is_string());
    let (status, body) = gp.get("/api/v1/triage/sessions").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    // An unknown id is the same 404.
    let (status, body) = patient
        .get(&format!("/api/v1/triage/sessions/{}", uuid::Uuid::new_v4()))
        .await;
    assert_eq!((status, body), (StatusCode::NOT_FOUND, not_found_body()));

    // The other patient cannot attach this conversation to their own booking.
    for weekday in 1..=7 {
        let (status, body) = gp
            .post(
                &format!("/api/v1/clinicians/{}/availability/rules", gp_user.id),
                json!({"weekday": weekday, "start": "09:00", "end": "12:00", "slot_minutes": 15, "kinds": "either"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let day = jiff::Timestamp::from_millisecond(app.clock.now_ms())
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::get("Europe/London").unwrap())
        .date()
        .checked_add(jiff::Span::new().days(2))
        .unwrap();
    let (status, slots) = patient
        .get(&format!("/api/v1/practices/{practice}/slots?from={day}&days=1"))
        .await;
    assert_eq!(status, StatusCode::OK, "{slots}");
    let booking = |slot: usize, triage: &str| {
        json!({"clinician_id": gp_user.id, "start": slots[slot]["start"], "kind": "audio",
               "reason": "Burning when I pee", "triage_session_id": triage})
    };
    let (status, body) = other.post("/api/v1/appointments", booking(0, &id)).await;
    assert_eq!((status, body), (StatusCode::NOT_FOUND, not_found_body()));

    // An unfinished conversation cannot be shared.
    let (status, unfinished) = patient
        .post(
            "/api/v1/triage/sessions",
            json!({"text": "I have a cough", "age": 40, "sex": "female"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{unfinished}");
    if unfinished["status"] == "question" {
        let (status, body) = patient
            .post(
                "/api/v1/appointments",
                booking(1, unfinished["id"].as_str().unwrap()),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
    }

    // Booked with the summary shared: the patient and the appointment's clinician see it, nobody else.
    let (status, booked) = patient.post("/api/v1/appointments", booking(2, &id)).await;
    assert_eq!(status, StatusCode::CREATED, "{booked}");
    let appointment = booked["id"].as_str().unwrap().to_owned();
    assert_eq!(booked["triage_summary"]["triage_session_id"], id.as_str());
    assert_eq!(booked["triage_summary"]["disposition"], "routine");
    for (who, sees) in [(&patient, true), (&gp, true), (&colleague, false)] {
        let (status, got) = who.get(&format!("/api/v1/appointments/{appointment}")).await;
        assert_eq!(status, StatusCode::OK, "{got}");
        assert_eq!(got.get("triage_summary").is_some(), sees, "{got}");
        if sees {
            let summary = &got["triage_summary"];
            assert_eq!(summary["complaint"], BLADDER);
            assert!(!summary["transcript"].as_array().unwrap().is_empty(), "{summary}");
            assert!(!summary["present"].as_array().unwrap().is_empty(), "{summary}");
        }
    }
    for who in [&other, &stranger_gp] {
        let (status, body) = who.get(&format!("/api/v1/appointments/{appointment}")).await;
        assert_eq!((status, body), (StatusCode::NOT_FOUND, not_found_body()));
    }
    // The clinician reads it on a page, linked from their schedule; nobody else but the patient does.
    let page = format!("/schedule/appointments/{appointment}/symptom-check");
    let date = &booked["local_start"].as_str().unwrap()[..10];
    let (status, schedule) = gp
        .get(&format!("/schedule?date={date}&clinician={}", gp_user.id))
        .await;
    assert_eq!(status, StatusCode::OK, "{schedule}");
    assert!(schedule.as_str().unwrap().contains(&page), "{schedule}");
    for who in [&gp, &patient] {
        let (status, html) = who.get(&page).await;
        assert_eq!(status, StatusCode::OK, "{html}");
        assert!(
            html.as_str().unwrap().contains("burning pain when I pee"),
            "{html}"
        );
    }
    for who in [&colleague, &stranger_gp, &other] {
        let (status, html) = who.get(&page).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{html}");
    }
    let (status, _) = anon.get(&page).await;
    assert!(status.is_redirection(), "{status}");
    // A booking without sharing carries no summary.
    let (status, plain) = patient
        .post(
            "/api/v1/appointments",
            json!({"clinician_id": gp_user.id, "start": slots[3]["start"], "kind": "audio", "reason": ""}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{plain}");
    let (_, got) = gp
        .get(&format!("/api/v1/appointments/{}", plain["id"].as_str().unwrap()))
        .await;
    assert!(got.get("triage_summary").is_none(), "{got}");
    app.stop().await;
}

#[tokio::test]
async fn a_patients_conversations_are_theirs_alone_on_sqlite() {
    patient_conversations_are_theirs_alone(None).await;
}

#[tokio::test]
async fn a_patients_conversations_are_theirs_alone_on_postgres() {
    let Some(db) = TestDatabase::postgres().await else {
        return;
    };
    patient_conversations_are_theirs_alone(Some(db)).await;
}

/// An emergency in a kept conversation: the result says so first, and it cannot be booked as routine.
#[tokio::test]
async fn a_kept_conversation_reaches_an_emergency() {
    let app = TestApp::spawn().await;
    let patient_user = app.user(Role::Patient, None, false).await;
    let patient = app.login(&patient_user).await;
    let (status, first) = patient
        .post(
            "/api/v1/triage/sessions",
            json!({"text": "pain in my chest", "age": 62, "sex": "male"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let done = walk_stored(
        &patient,
        first,
        &[
            "sweat", "breath", "chest", "jaw", "arm", "sick", "pressure", "heavy",
        ],
    )
    .await;
    assert_emergency(&done["result"]);
    assert!(
        !done["result"]["warnings"].as_array().unwrap().is_empty(),
        "{done}"
    );
    let (status, list) = patient.get("/api/v1/triage/sessions").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list[0]["disposition"], "emergency");
    app.stop().await;
}
