//! Scheduling over HTTP: availability, booking, changes, the waiting room and reminders.
//!
//! Every test first moves the app's clock to a Monday 08:00 in London a couple of weeks ahead, so that
//! slot times are known; clinicians work 09:00 to 12:00 in 15-minute slots unless a test says otherwise.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use confide_domain::identity::Role;
use confide_domain::{AppointmentId, PracticeId, Timestamp, UserId};
use confide_server::{AppState, ManualClock, Running, ServerConfig};
use confide_store::testing::TestDatabase;
use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Client, PASSWORD, Seeded, TestApp, not_found_body, register};
use crate::helpers::{at, london, set_clock};

/// The first Monday at least two weeks from today in London.
fn monday_ahead() -> Date {
    Timestamp::now()
        .to_zoned(london())
        .date()
        .checked_add(jiff::Span::new().days(14))
        .unwrap()
        .nth_weekday(1, Weekday::Monday)
        .unwrap()
}

fn code(body: &Value) -> Option<&str> {
    body["error"]["code"].as_str()
}

fn ts(value: &Value) -> Timestamp {
    value.as_str().expect("a time").parse().expect("an RFC 3339 time")
}

fn rule(weekday: i64, start: &str, end: &str, kinds: &str) -> Value {
    json!({"weekday": weekday, "start": start, "end": end, "slot_minutes": 15, "kinds": kinds})
}

async fn add_rule(by: &Client, clinician: UserId, rule: Value) -> (StatusCode, Value) {
    by.post(
        &format!("/api/v1/clinicians/{clinician}/availability/rules"),
        rule,
    )
    .await
}

async fn book(patient: &Client, clinician: UserId, start: Timestamp, kind: &str) -> (StatusCode, Value) {
    patient
        .post(
            "/api/v1/appointments",
            json!({"clinician_id": clinician.to_string(), "start": start.to_string(), "kind": kind,
                   "reason": "Persistent cough"}),
        )
        .await
}

/// Waits until the app's job runner has sent every email that is due by the app's clock.
///
/// Tests change nothing while it works: on SQLite, a write that meets the runner's audit entry can fail
/// with "database is locked" (see `one_slot_goes_to_one_of_twenty_patients_on_sqlite`).
async fn settle(state: &AppState) {
    for _ in 0..500 {
        if state
            .store
            .unfinished_due_jobs(state.clock.now_ms())
            .await
            .unwrap()
            == 0
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the job runner left due jobs unsent");
}

/// A practice in London whose clinician works Mondays 09:00 to 12:00 (15-minute slots, video or audio),
/// with the clock at 08:00 on `monday`.
struct Clinic {
    app: TestApp,
    practice: PracticeId,
    gp_user: Seeded,
    gp: Client,
    monday: Date,
}

async fn clinic(db: Option<TestDatabase>, adjust: impl FnOnce(&mut ServerConfig)) -> Clinic {
    let app = TestApp::spawn_with(db, |config| {
        config.job_poll = Duration::from_millis(20);
        adjust(config);
    })
    .await;
    let monday = monday_ahead();
    set_clock(&app.clock, at(monday, 8, 0));
    let practice = app.practice("North Surgery").await;
    let gp_user = app.user(Role::Clinician, Some(practice), true).await;
    let gp = app.login(&gp_user).await;
    let (status, body) = add_rule(&gp, gp_user.id, rule(1, "09:00", "12:00", "either")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    Clinic {
        app,
        practice,
        gp_user,
        gp,
        monday,
    }
}

impl Clinic {
    /// A patient registered here, logged in.
    async fn patient(&self) -> (Seeded, Client) {
        let user = self.app.user(Role::Patient, None, false).await;
        let client = self.app.login(&user).await;
        register(&client, &self.gp, self.practice).await;
        (user, client)
    }

    /// Books `start` with the clinician, which must succeed, and waits for the confirmation to go out;
    /// returns the appointment id.
    async fn booked(&self, patient: &Client, start: Timestamp) -> String {
        let (status, body) = book(patient, self.gp_user.id, start, "video").await;
        assert_eq!(status, StatusCode::CREATED, "booking {start}: {body}");
        assert_eq!(ts(&body["start"]), start);
        self.settle().await;
        body["id"].as_str().unwrap().to_owned()
    }

    async fn settle(&self) {
        settle(&self.app.running.state).await;
    }

    /// Moves the clock to `to` and waits for the emails that fell due.
    async fn move_clock(&self, to: Timestamp) {
        set_clock(&self.app.clock, to);
        self.settle().await;
    }

    fn day(&self, offset: i64) -> Date {
        self.monday.checked_add(jiff::Span::new().days(offset)).unwrap()
    }
}

/// Who did what to a patient's data, as the patient sees it: (actor id, action, outcome).
async fn access_log(patient: &Client, id: UserId) -> Vec<(String, String, String)> {
    let (status, body) = patient.get(&format!("/api/v1/patients/{id}/access-log")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor_id"].as_str().unwrap_or("").to_owned(),
                e["action"].as_str().unwrap().to_owned(),
                e["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn logged(log: &[(String, String, String)], actor: &str, action: &str, outcome: &str) -> usize {
    log.iter()
        .filter(|(a, b, c)| a == actor && b == action && c == outcome)
        .count()
}

#[tokio::test]
async fn clinicians_and_their_practice_admins_set_weekly_availability() {
    let Clinic {
        app,
        practice,
        gp_user,
        gp,
        ..
    } = clinic(None, |_| {}).await;

    let (status, body) = gp
        .get(&format!("/api/v1/clinicians/{}/availability", gp_user.id))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["time_zone"], "Europe/London");
    let rules = body["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        (
            &rules[0]["weekday"],
            &rules[0]["start"],
            &rules[0]["end"],
            &rules[0]["slot_minutes"],
            &rules[0]["kinds"]
        ),
        (
            &json!(1),
            &json!("09:00"),
            &json!("12:00"),
            &json!(15),
            &json!("either")
        )
    );

    let (status, body) = add_rule(&gp, gp_user.id, rule(1, "11:45", "13:00", "video")).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, Some("availability_overlaps")),
        "{body}"
    );

    let invalid = [
        (
            json!({"weekday": 2, "start": "09:00", "end": "12:00", "slot_minutes": 25, "kinds": "either"}),
            "invalid_slot_length",
            "25",
        ),
        (rule(2, "9am", "12:00", "either"), "invalid_availability", "9am"),
        (
            rule(8, "09:00", "12:00", "either"),
            "invalid_availability",
            "weekday",
        ),
        (
            rule(2, "12:00", "09:00", "either"),
            "invalid_availability",
            "end after",
        ),
        (
            rule(2, "09:00", "12:00", "hologram"),
            "invalid_availability",
            "hologram",
        ),
        (
            rule(2, "09:03", "12:00", "either"),
            "invalid_availability",
            "five-minute",
        ),
    ];
    for (new, expected, mentions) in invalid {
        let (status, body) = add_rule(&gp, gp_user.id, new.clone()).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::BAD_REQUEST, Some(expected)),
            "{new}: {body}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(mentions),
            "{new}: {message:?} should mention {mentions:?}"
        );
    }

    let admin = app
        .login(&app.user(Role::PracticeAdmin, Some(practice), true).await)
        .await;
    let (status, body) = add_rule(&admin, gp_user.id, rule(2, "14:00", "16:00", "audio")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!((&body["weekday"], &body["kinds"]), (&json!(2), &json!("audio")));

    let colleague = app.user(Role::Clinician, Some(practice), true).await;
    let colleague_client = app.login(&colleague).await;
    let south = app.practice("South Surgery").await;
    let stranger = app
        .login(&app.user(Role::Clinician, Some(south), true).await)
        .await;
    for other in [&stranger, &colleague_client] {
        assert_eq!(
            add_rule(other, gp_user.id, rule(3, "09:00", "10:00", "either")).await,
            (StatusCode::NOT_FOUND, not_found_body()),
            "only the clinician and their practice's admins manage their availability"
        );
        assert_eq!(
            other
                .get(&format!("/api/v1/clinicians/{}/availability", gp_user.id))
                .await,
            (StatusCode::NOT_FOUND, not_found_body())
        );
    }
    let (_, body) = gp
        .get(&format!("/api/v1/clinicians/{}/availability", gp_user.id))
        .await;
    let weekdays: Vec<&Value> = body["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["weekday"])
        .collect();
    assert_eq!(weekdays, [&json!(1), &json!(2)], "refused rules were not stored");
    app.stop().await;
}

#[tokio::test]
async fn registered_patients_see_free_slots_in_the_time_zone_they_ask_for() {
    let c = clinic(None, |_| {}).await;
    let (_, ann) = c.patient().await;
    let path = format!("/api/v1/practices/{}/slots?days=7", c.practice);

    let (status, slots) = ann.get(&path).await;
    assert_eq!(status, StatusCode::OK, "{slots}");
    let slots = slots.as_array().unwrap();
    assert_eq!(
        slots.len(),
        12,
        "Monday 09:00 to 12:00 in 15-minute slots: {slots:?}"
    );
    let first = at(c.monday, 9, 0);
    assert_eq!(ts(&slots[0]["start"]), first);
    assert_eq!(ts(&slots[0]["end"]), at(c.monday, 9, 15));
    assert_eq!(ts(&slots[11]["start"]), at(c.monday, 11, 45));
    assert_eq!(slots[0]["clinician_id"], c.gp_user.id.to_string());
    assert_eq!(slots[0]["kinds"], "either");
    assert_eq!(
        slots[0]["local_start"],
        format!("{}T09:00{}", c.monday, first.to_zoned(london()).strftime("%:z"))
    );

    let (status, in_new_york) = ann.get(&format!("{path}&tz=America/New_York")).await;
    assert_eq!(status, StatusCode::OK, "{in_new_york}");
    let local = in_new_york[0]["local_start"].as_str().unwrap();
    assert!(local.ends_with("-05:00") || local.ends_with("-04:00"), "{local}");
    let expected = first
        .to_zoned(TimeZone::get("America/New_York").unwrap())
        .strftime("%Y-%m-%dT%H:%M%:z")
        .to_string();
    assert_eq!(local, expected);
    assert_eq!(ts(&in_new_york[0]["start"]), first, "the instant is the same");

    let (status, body) = ann.get(&format!("{path}&tz=Mars/Base")).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, Some("invalid_time_zone")),
        "{body}"
    );

    let stranger = c.app.login(&c.app.user(Role::Patient, None, false).await).await;
    assert_eq!(
        stranger.get(&path).await,
        (StatusCode::NOT_FOUND, not_found_body()),
        "slots are for the practice's own patients"
    );
    c.app.stop().await;
}

#[tokio::test]
async fn booking_takes_a_free_slot_and_says_why_when_it_cannot() {
    let c = clinic(None, |_| {}).await;
    let (ann_user, ann) = c.patient().await;
    let (_, bob) = c.patient().await;
    let gp = c.gp_user.id;
    let nine_thirty = at(c.monday, 9, 30);

    let (status, body) = book(&ann, gp, nine_thirty, "video").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    c.settle().await;
    assert_eq!(
        (&body["status"], &body["kind"], &body["reason"], &body["sequence"]),
        (
            &json!("booked"),
            &json!("video"),
            &json!("Persistent cough"),
            &json!(0)
        )
    );
    assert_eq!(ts(&body["start"]), nine_thirty);
    assert_eq!(ts(&body["end"]), at(c.monday, 9, 45));
    assert_eq!(body["patient_id"], ann_user.id.to_string());
    assert_eq!(body["clinician_id"], gp.to_string());

    let (status, body) = book(&bob, gp, nine_thirty, "video").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, Some("slot_taken")),
        "{body}"
    );
    let alternatives = body["error"]["next_free_slots"].as_array().unwrap();
    assert!(!alternatives.is_empty(), "{body}");
    assert!(
        alternatives.iter().all(|s| ts(&s["start"]) != nine_thirty),
        "the taken time is not offered again: {body}"
    );
    assert_eq!(ts(&alternatives[0]["start"]), at(c.monday, 9, 0));
    let (_, slots) = bob
        .get(&format!("/api/v1/practices/{}/slots?days=1", c.practice))
        .await;
    let starts: Vec<Timestamp> = slots
        .as_array()
        .unwrap()
        .iter()
        .map(|s| ts(&s["start"]))
        .collect();
    assert_eq!(starts.len(), 11);
    assert!(!starts.contains(&nine_thirty));

    for (start, expected) in [
        (at(c.monday, 9, 5), "outside_availability"),
        (at(c.monday, 13, 0), "outside_availability"),
        (at(c.day(1), 9, 0), "outside_availability"),
        (at(c.day(-7), 9, 0), "in_the_past"),
    ] {
        let (status, body) = book(&bob, gp, start, "video").await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::BAD_REQUEST, Some(expected)),
            "{start}: {body}"
        );
    }
    let (status, body) = book(&bob, gp, at(c.monday, 10, 0), "hologram").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, Some("invalid_kind")),
        "{body}"
    );

    let (status, body) = add_rule(&c.gp, gp, rule(3, "14:00", "15:00", "audio")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let wednesday = at(c.day(2), 14, 0);
    let (status, body) = book(&bob, gp, wednesday, "video").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, Some("kind_not_offered")),
        "{body}"
    );
    let (status, body) = book(&bob, gp, wednesday, "audio").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    c.settle().await;
    assert_eq!(body["kind"], "audio");

    let south = c.app.practice("South Surgery").await;
    let south_gp = c.app.user(Role::Clinician, Some(south), true).await;
    let south_client = c.app.login(&south_gp).await;
    let (status, body) = add_rule(&south_client, south_gp.id, rule(1, "09:00", "12:00", "either")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        book(&ann, south_gp.id, at(c.monday, 10, 0), "video").await,
        (StatusCode::NOT_FOUND, not_found_body()),
        "only at the practice the patient is registered with"
    );
    c.app.stop().await;
}

/// Twenty registered patients ask for one slot at once: one gets it, the rest are told it was taken.
async fn twenty_patients_race_for_one_slot(db: Option<TestDatabase>) {
    let c = clinic(db, |_| {}).await;
    let mut patients = Vec::new();
    for _ in 0..20 {
        patients.push(c.patient().await.1);
    }
    let slot = at(c.monday, 10, 30);
    let gp = c.gp_user.id;
    let barrier = Arc::new(tokio::sync::Barrier::new(patients.len()));
    let tasks: Vec<_> = patients
        .into_iter()
        .map(|patient| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                book(&patient, gp, slot, "video").await
            })
        })
        .collect();
    let mut created = 0;
    for answer in futures_util::future::join_all(tasks).await {
        let (status, body) = answer.unwrap();
        match status {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => assert_eq!(code(&body), Some("slot_taken"), "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(created, 1, "exactly one booking wins");

    let (status, day) =
        c.gp.get(&format!("/api/v1/clinicians/{gp}/schedule?date={}", c.monday))
            .await;
    assert_eq!(status, StatusCode::OK, "{day}");
    let appointments = day["appointments"].as_array().unwrap();
    assert_eq!(appointments.len(), 1, "{day}");
    assert_eq!(ts(&appointments[0]["start"]), slot);
    assert_eq!(appointments[0]["status"], "booked");
    c.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_slot_goes_to_one_of_twenty_patients_on_sqlite() {
    twenty_patients_race_for_one_slot(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_slot_goes_to_one_of_twenty_patients_on_postgres() {
    let Some(db) = TestDatabase::postgres().await else {
        eprintln!("one_slot_goes_to_one_of_twenty_patients_on_postgres: skipped, no PostgreSQL");
        return;
    };
    twenty_patients_race_for_one_slot(Some(db)).await;
}

/// The emails about one appointment: those whose invitation or link names it.
fn mails_about(app: &TestApp, id: &str) -> Vec<String> {
    app.outbox()
        .into_iter()
        .filter(|m| m.contains(&format!("UID:{id}@confide")) || m.contains(&format!("/appointments/{id}")))
        .collect()
}

fn ics_time(t: Timestamp) -> String {
    t.strftime("%Y%m%dT%H%M%SZ").to_string()
}

#[tokio::test]
async fn changes_send_calendar_updates_and_patients_keep_to_the_cutoff() {
    let c = clinic(None, |_| {}).await;
    let (ann_user, ann) = c.patient().await;
    let gp = c.gp_user.id;
    let state = &c.app.running.state;

    let id = c.booked(&ann, at(c.monday, 11, 0)).await;
    assert_eq!(
        state.run_due_jobs().await.unwrap(),
        0,
        "the app's runner has sent it already"
    );
    let mails = mails_about(&c.app, &id);
    assert_eq!(mails.len(), 1, "{mails:#?}");
    for line in [
        "METHOD:REQUEST".to_owned(),
        format!("UID:{id}@confide"),
        "SEQUENCE:0".to_owned(),
        format!("DTSTART:{}", ics_time(at(c.monday, 11, 0))),
    ] {
        assert!(mails[0].contains(&line), "{line} in {}", mails[0]);
    }

    let (status, body) = ann
        .post(
            &format!("/api/v1/appointments/{id}/reschedule"),
            json!({"start": at(c.monday, 11, 30).to_string()}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (&body["sequence"], &body["status"]),
        (&json!(1), &json!("booked"))
    );
    assert_eq!(ts(&body["start"]), at(c.monday, 11, 30));
    c.settle().await;
    let mails = mails_about(&c.app, &id);
    assert_eq!(mails.len(), 2, "{mails:#?}");
    let moved: Vec<&String> = mails.iter().filter(|m| m.contains("SEQUENCE:1")).collect();
    assert_eq!(moved.len(), 1, "{mails:#?}");
    assert!(moved[0].contains("METHOD:REQUEST") && moved[0].contains(&format!("UID:{id}@confide")));
    assert!(moved[0].contains(&format!("DTSTART:{}", ics_time(at(c.monday, 11, 30)))));

    let (status, body) = ann
        .post(&format!("/api/v1/appointments/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (&body["sequence"], &body["status"]),
        (&json!(2), &json!("cancelled"))
    );
    c.settle().await;
    let mails = mails_about(&c.app, &id);
    assert_eq!(mails.len(), 3, "{mails:#?}");
    let cancelled: Vec<&String> = mails.iter().filter(|m| m.contains("METHOD:CANCEL")).collect();
    assert_eq!(cancelled.len(), 1, "{mails:#?}");
    assert!(cancelled[0].contains("SEQUENCE:2") && cancelled[0].contains(&format!("UID:{id}@confide")));

    // An hour before the start, past the default two-hour cutoff: the patient must ask the practice.
    let late = c.booked(&ann, at(c.monday, 11, 0)).await;
    c.move_clock(at(c.monday, 10, 0)).await;
    let (status, body) = ann
        .post(&format!("/api/v1/appointments/{late}/cancel"), json!({}))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, Some("past_cutoff")),
        "{body}"
    );
    let (status, body) = ann
        .post(
            &format!("/api/v1/appointments/{late}/reschedule"),
            json!({"start": at(c.monday, 11, 45).to_string()}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, Some("past_cutoff")),
        "{body}"
    );
    let message = "Dr is unwell today, please book another time";
    let (status, body) =
        c.gp.post(
            &format!("/api/v1/appointments/{late}/cancel"),
            json!({"message": message}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the practice may cancel at any time: {body}"
    );
    assert_eq!(
        (&body["status"], &body["cancel_message"]),
        (&json!("cancelled"), &json!(message))
    );
    c.settle().await;
    let mails = mails_about(&c.app, &late);
    let cancelled: Vec<&String> = mails.iter().filter(|m| m.contains("METHOD:CANCEL")).collect();
    assert_eq!(cancelled.len(), 1, "{mails:#?}");
    assert!(cancelled[0].contains(message), "{}", cancelled[0]);
    let (_, seen) = ann.get(&format!("/api/v1/appointments/{late}")).await;
    assert_eq!(
        (&seen["status"], &seen["cancel_message"]),
        (&json!("cancelled"), &json!(message))
    );

    let admin = c
        .app
        .login(&c.app.user(Role::PracticeAdmin, Some(c.practice), true).await)
        .await;
    let cutoff = format!("/api/v1/practices/{}/booking-cutoff", c.practice);
    assert_eq!(
        c.gp.put(&cutoff, json!({"minutes": 0})).await,
        (StatusCode::NOT_FOUND, not_found_body()),
        "the cutoff is the practice admin's to set"
    );
    let (status, body) = admin.put(&cutoff, json!({"minutes": 20000})).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, Some("invalid_cutoff"))
    );
    assert_eq!(
        admin.put(&cutoff, json!({"minutes": 30})).await,
        (StatusCode::OK, json!({"minutes": 30}))
    );
    let within = c.booked(&ann, at(c.monday, 11, 0)).await;
    let (status, body) = ann
        .post(&format!("/api/v1/appointments/{within}/cancel"), json!({}))
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "an hour ahead is outside a 30-minute cutoff: {body}"
    );
    c.settle().await;

    let log = access_log(&ann, ann_user.id).await;
    let gp_id = gp.to_string();
    assert_eq!(
        logged(&log, &gp_id, "appointment.cancel", "allowed"),
        1,
        "{log:#?}"
    );
    assert_eq!(
        logged(&log, &gp_id, "appointment.cancelled", "allowed"),
        1,
        "{log:#?}"
    );
    c.app.stop().await;
}

/// Serves `dir` again on `clock`, as after a restart, with a job runner that looks every 20 ms.
async fn serve_again(dir: &Path, clock: &Arc<ManualClock>) -> Running {
    let mut config = ServerConfig::embedded(dir.to_owned(), "127.0.0.1:0".parse().unwrap());
    config.job_poll = Duration::from_millis(20);
    confide_server::spawn(config, clock.clone()).await.unwrap()
}

/// A patient (no second factor) logged in to `running`.
async fn patient_login(running: &Running, user: &Seeded) -> Client {
    let client = Client::new(running.url());
    let (status, body) = client
        .post(
            "/api/v1/auth/login",
            json!({"email": user.email, "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    client
}

/// The outbox's emails with the name of the job that sent each (the file name), soft line breaks undone.
fn outbox_in(dir: &Path) -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(dir.join("outbox")) else {
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .map(|p| {
            let raw = std::fs::read_to_string(&p).unwrap();
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, raw.replace("=\r\n", "").replace("=\n", ""))
        })
        .collect();
    out.sort();
    out
}

/// How many emails about appointment `id` of `kind` (booked, reminder_24h, …) the outbox holds.
fn sent(dir: &Path, id: &str, kind: &str) -> usize {
    let prefix = format!("appointment-{id}-{kind}-");
    outbox_in(dir)
        .iter()
        .filter(|(name, _)| name.starts_with(&prefix))
        .count()
}

fn containing(dir: &Path, text: &str) -> usize {
    outbox_in(dir).iter().filter(|(_, m)| m.contains(text)).count()
}

/// The jobs of appointment `id`: (kind, state).
async fn jobs(running: &Running, id: &str) -> Vec<(String, String)> {
    let id = AppointmentId::from_uuid(id.parse::<Uuid>().unwrap());
    let jobs = running.state.store.appointment_jobs(id).await.unwrap();
    jobs.into_iter().map(|(kind, state, _)| (kind, state)).collect()
}

#[tokio::test]
async fn reminders_are_sent_once_across_restarts_and_not_for_cancelled_appointments() {
    let c = clinic(None, |_| {}).await;
    let (status, body) = add_rule(&c.gp, c.gp_user.id, rule(4, "09:00", "12:00", "either")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (ann_user, ann) = c.patient().await;
    let (bob_user, bob) = c.patient().await;
    let start = at(c.day(3), 9, 0);
    let kept = c.booked(&ann, start).await;
    let dropped = c.booked(&bob, at(c.day(3), 9, 15)).await;
    let (status, body) = bob
        .post(&format!("/api/v1/appointments/{dropped}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    c.settle().await;

    let Clinic { app, .. } = c;
    let TestApp {
        running, clock, dir, ..
    } = app;
    let data = dir.path();
    assert_eq!(sent(data, &kept, "booked"), 1);
    assert_eq!(
        jobs(&running, &kept).await,
        [
            ("booked".to_owned(), "done".to_owned()),
            ("reminder_24h".to_owned(), "pending".to_owned()),
            ("reminder_1h".to_owned(), "pending".to_owned()),
        ]
    );
    assert_eq!(containing(data, "Reminder: appointment tomorrow"), 0);

    running.stop().await.unwrap();
    set_clock(
        &clock,
        start.checked_sub(jiff::SignedDuration::from_hours(23)).unwrap(),
    );
    let running = serve_again(data, &clock).await;
    settle(&running.state).await;
    assert_eq!(
        sent(data, &kept, "reminder_24h"),
        1,
        "sent by the restarted app's runner"
    );
    assert_eq!(containing(data, "Reminder: appointment tomorrow"), 1);
    assert_eq!(sent(data, &kept, "reminder_1h"), 0, "not yet");

    running.stop().await.unwrap();
    let running = serve_again(data, &clock).await;
    assert_eq!(
        running.state.run_due_jobs().await.unwrap(),
        0,
        "nothing is due again"
    );
    assert_eq!(containing(data, "Reminder: appointment tomorrow"), 1);
    let ann = patient_login(&running, &ann_user).await;
    let log = access_log(&ann, ann_user.id).await;
    assert_eq!(
        logged(&log, "", "appointment.email.reminder_24h", "allowed"),
        1,
        "sent once, not again after the restart: {log:#?}"
    );

    set_clock(
        &clock,
        start.checked_sub(jiff::SignedDuration::from_mins(59)).unwrap(),
    );
    settle(&running.state).await;
    assert_eq!(sent(data, &kept, "reminder_1h"), 1);
    assert_eq!(running.state.run_due_jobs().await.unwrap(), 0);
    assert_eq!(containing(data, "starts in an hour"), 1);
    assert_eq!(containing(data, "Reminder: appointment tomorrow"), 1);

    for kind in ["reminder_24h", "reminder_1h"] {
        assert_eq!(
            sent(data, &dropped, kind),
            0,
            "no {kind} for a cancelled appointment"
        );
    }
    assert_eq!(
        jobs(&running, &dropped).await,
        [
            ("booked".to_owned(), "done".to_owned()),
            ("cancelled".to_owned(), "done".to_owned()),
            ("reminder_24h".to_owned(), "cancelled".to_owned()),
            ("reminder_1h".to_owned(), "cancelled".to_owned()),
        ]
    );
    let bob = patient_login(&running, &bob_user).await;
    let log = access_log(&bob, bob_user.id).await;
    assert!(
        log.iter()
            .all(|(_, action, _)| !action.starts_with("appointment.email.reminder")),
        "{log:#?}"
    );
    running.stop().await.unwrap();
}

/// Reads server-sent events from `response` until `count` `status` events have arrived, or fails after a
/// few seconds.
async fn statuses(
    response: &mut reqwest::Response,
    buffer: &mut String,
    seen: &mut Vec<String>,
    count: usize,
) {
    let read = async {
        while seen.len() < count {
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                let mut name = None;
                let mut data = None;
                for line in event.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data = Some(v.trim().to_owned());
                    }
                }
                if name.as_deref() == Some("status") {
                    seen.push(data.unwrap_or_default());
                }
            }
            if seen.len() >= count {
                break;
            }
            let chunk = response.chunk().await.unwrap().expect("the stream stays open");
            buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .unwrap_or_else(|_| panic!("no status event {count} within 5 s; seen {seen:?}"));
}

#[tokio::test]
async fn the_waiting_room_opens_ten_minutes_before_and_streams_status_changes() {
    let c = clinic(None, |_| {}).await;
    let (ann_user, ann) = c.patient().await;
    let (bob_user, bob) = c.patient().await;
    let gp_id = c.gp_user.id;
    let id = c.booked(&ann, at(c.monday, 9, 0)).await;
    let other = c.booked(&bob, at(c.monday, 9, 15)).await;
    let path = |action: &str| format!("/api/v1/appointments/{id}/{action}");

    c.move_clock(at(c.monday, 8, 49)).await;
    let (status, body) = ann.post(&path("check-in"), json!({})).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, Some("check_in_not_open")),
        "{body}"
    );
    c.move_clock(at(c.monday, 8, 50)).await;
    let (status, body) = ann.post(&path("check-in"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "checked_in");
    assert_eq!(ts(&body["checked_in_at"]), at(c.monday, 8, 50));

    let mut stream = ann.http.get(c.app.url(&path("events"))).send().await.unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let content_type = stream.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/event-stream"), "{content_type}");
    let (mut buffer, mut seen) = (String::new(), Vec::new());
    statuses(&mut stream, &mut buffer, &mut seen, 1).await;
    assert_eq!(seen, ["checked_in"]);

    c.move_clock(at(c.monday, 8, 57)).await;
    let (status, day) =
        c.gp.get(&format!("/api/v1/clinicians/{gp_id}/schedule?date={}", c.monday))
            .await;
    assert_eq!(status, StatusCode::OK, "{day}");
    assert_eq!(day["appointments"].as_array().unwrap().len(), 2, "{day}");
    let queue = day["queue"].as_array().unwrap();
    assert_eq!(queue.len(), 1, "{day}");
    assert_eq!(
        (
            &queue[0]["appointment_id"],
            &queue[0]["patient_id"],
            &queue[0]["waiting_minutes"]
        ),
        (&json!(id), &json!(ann_user.id.to_string()), &json!(7))
    );

    let (status, body) =
        c.gp.post(&format!("/api/v1/appointments/{other}/complete"), json!({}))
            .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, Some("invalid_state")),
        "a booked appointment cannot be completed: {body}"
    );
    let (status, body) =
        c.gp.post(&format!("/api/v1/appointments/{other}/start"), json!({}))
            .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, Some("invalid_state")),
        "nor started before the patient checks in: {body}"
    );

    let (status, body) = c.gp.post(&path("start"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "in_consultation");
    statuses(&mut stream, &mut buffer, &mut seen, 2).await;
    assert_eq!(seen, ["checked_in", "in_consultation"]);
    let (status, body) = c.gp.post(&path("start"), json!({})).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, Some("invalid_state")),
        "{body}"
    );
    let (_, day) =
        c.gp.get(&format!("/api/v1/clinicians/{gp_id}/schedule?date={}", c.monday))
            .await;
    assert_eq!(day["queue"], json!([]), "{day}");

    let (status, body) = c.gp.post(&path("complete"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "completed");
    statuses(&mut stream, &mut buffer, &mut seen, 3).await;
    assert_eq!(seen, ["checked_in", "in_consultation", "completed"]);
    drop(stream);
    let (status, body) = ann.get(&format!("/api/v1/appointments/{id}")).await;
    assert_eq!((status, &body["status"]), (StatusCode::OK, &json!("completed")));

    // Another patient of the practice learns nothing about the appointment, not even that it exists.
    for (status, body) in [
        bob.get(&format!("/api/v1/appointments/{id}")).await,
        bob.open_stream(&path("events")).await,
        bob.post(&path("cancel"), json!({})).await,
        bob.post(&path("check-in"), json!({})).await,
        bob.post(
            &path("reschedule"),
            json!({"start": at(c.monday, 11, 0).to_string()}),
        )
        .await,
    ] {
        assert_eq!((status, body), (StatusCode::NOT_FOUND, not_found_body()));
    }

    // The patient sees who acted on their appointment, and who tried to.
    let log = access_log(&ann, ann_user.id).await;
    let (gp, bob_id) = (gp_id.to_string(), bob_user.id.to_string());
    assert_eq!(
        logged(&log, &gp, "appointment.run", "allowed"),
        3,
        "start, start again, complete: {log:#?}"
    );
    assert_eq!(logged(&log, &gp, "appointment.started", "allowed"), 1, "{log:#?}");
    assert_eq!(
        logged(&log, &gp, "appointment.completed", "allowed"),
        1,
        "{log:#?}"
    );
    assert_eq!(
        logged(&log, &bob_id, "appointment.read", "denied"),
        2,
        "GET and events: {log:#?}"
    );
    assert_eq!(
        logged(&log, &bob_id, "appointment.cancel", "denied"),
        1,
        "{log:#?}"
    );
    assert_eq!(
        logged(&log, &bob_id, "appointment.check_in", "denied"),
        1,
        "{log:#?}"
    );
    assert_eq!(
        logged(&log, &bob_id, "appointment.reschedule", "denied"),
        1,
        "{log:#?}"
    );
    assert!(
        log.iter().all(|(actor, _, _)| *actor != ann_user.id.to_string()),
        "the patient's own actions are not listed"
    );
    c.app.stop().await;
}
