//! Registering with a practice, moving practice, and what each side sees.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use confide_domain::identity::Role;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, not_found_body, register};

#[tokio::test]
async fn moving_practice_moves_access_and_the_patient_sees_who_looked() {
    let app = TestApp::spawn().await;
    let (north, south) = (
        app.practice("North Surgery").await,
        app.practice("South Surgery").await,
    );
    let north_gp = app
        .login(&app.user(Role::Clinician, Some(north), true).await)
        .await;
    let south_gp_user = app.user(Role::Clinician, Some(south), true).await;
    let south_gp = app.login(&south_gp_user).await;
    let ann_user = app.user(Role::Patient, None, false).await;
    let ann = app.login(&ann_user).await;
    let record = format!("/api/v1/patients/{}/record", ann_user.id);

    assert_eq!(
        north_gp.get(&record).await,
        (StatusCode::NOT_FOUND, not_found_body())
    );
    register(&ann, &north_gp, north).await;
    let (status, body) = north_gp
        .post(
            &format!("/api/v1/patients/{}/notes", ann_user.id),
            json!({"body": "BP 120/80"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(north_gp.get(&record).await.0, StatusCode::OK);

    app.clock.advance(std::time::Duration::from_secs(60));
    let (status, pending) = ann
        .post("/api/v1/registrations", json!({"practice_id": south}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        north_gp.get(&record).await.0,
        StatusCode::OK,
        "the old practice keeps access until the new one accepts"
    );
    let (status, _) = south_gp
        .post(
            &format!("/api/v1/registrations/{}/accept", pending["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        north_gp.get(&record).await,
        (StatusCode::NOT_FOUND, not_found_body())
    );
    let (status, body) = south_gp.get(&record).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["notes"][0]["body"], "BP 120/80");

    let (status, mine) = ann.get("/api/v1/registrations").await;
    assert_eq!(status, StatusCode::OK);
    let statuses: Vec<&str> = mine
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["accepted", "ended"]);

    let (status, log) = ann
        .get(&format!("/api/v1/patients/{}/access-log", ann_user.id))
        .await;
    assert_eq!(status, StatusCode::OK);
    let entries = log.as_array().unwrap();
    assert!(
        entries.iter().all(|e| e["actor_id"] != ann_user.id.to_string()),
        "only others' accesses"
    );
    let newest = &entries[0];
    assert_eq!(newest["actor_id"], south_gp_user.id.to_string());
    assert_eq!(newest["action"], "patient.record.read");
    assert!(
        entries.iter().any(|e| e["outcome"] == "denied"),
        "the refused attempt is shown too"
    );

    let emails = app.outbox();
    assert!(
        emails
            .iter()
            .any(|m| m.contains("You are registered with South Surgery"))
    );
    app.stop().await;
}

#[tokio::test]
async fn a_decided_request_cannot_be_decided_again() {
    let app = TestApp::spawn().await;
    let north = app.practice("North Surgery").await;
    let admin = app
        .login(&app.user(Role::PracticeAdmin, Some(north), true).await)
        .await;
    let ann = app.login(&app.user(Role::Patient, None, false).await).await;
    let (_, pending) = ann
        .post("/api/v1/registrations", json!({"practice_id": north}))
        .await;
    let id = pending["id"].as_str().unwrap();
    let (status, body) = admin
        .get(&format!("/api/v1/practices/{north}/registration-requests"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body[0]["registration_id"], id);
    assert_eq!(
        admin
            .post(&format!("/api/v1/registrations/{id}/decline"), json!({}))
            .await
            .0,
        StatusCode::OK
    );
    let (status, body) = admin
        .post(&format!("/api/v1/registrations/{id}/accept"), json!({}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("already_decided"))
    );
    let (status, body) = ann
        .post("/api/v1/registrations", json!({"practice_id": north}))
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "a declined patient may ask again: {body}"
    );
    let (status, body) = ann
        .post("/api/v1/registrations", json!({"practice_id": north}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("registration_exists"))
    );
    app.stop().await;
}

#[tokio::test]
async fn a_record_read_is_answered_only_once_its_audit_entry_is_committed() {
    let app = TestApp::spawn().await;
    let north = app.practice("North Surgery").await;
    let north_gp = app
        .login(&app.user(Role::Clinician, Some(north), true).await)
        .await;
    let ann_user = app.user(Role::Patient, None, false).await;
    let ann = app.login(&ann_user).await;
    register(&ann, &north_gp, north).await;
    let record = format!("/api/v1/patients/{}/record", ann_user.id);
    assert_eq!(ann.get(&record).await.0, StatusCode::OK);

    // Another connection holds the audit log's write lock, so no entry can be committed until it lets go.
    let log = confide_store::sqlite_audit_path(&app.dir.path().join("confide.db"));
    let lock = rusqlite::Connection::open(log).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let answered = AtomicBool::new(false);
    let read = async {
        let answer = ann.get(&record).await;
        answered.store(true, Ordering::SeqCst);
        answer
    };
    let release = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let early = answered.load(Ordering::SeqCst);
        lock.execute_batch("COMMIT").unwrap();
        early
    };
    let ((status, body), early) = tokio::join!(read, release);
    assert!(
        !early,
        "the record was answered before its audit entry was committed"
    );
    assert_eq!(status, StatusCode::OK, "{body}");

    let store = &app.running.state.store;
    let (seq, _) = store.audit_head().await.unwrap();
    let last = store.audit_page(seq - 1, 1).await.unwrap();
    assert_eq!(last[0].event.action, "patient.record.read");
    assert_eq!(last[0].event.actor, Some(ann_user.id));
}
