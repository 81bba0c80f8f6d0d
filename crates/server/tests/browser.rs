//! End to end in real browsers: headless Chromium against the app on 127.0.0.1, driven over the DevTools
//! protocol. The harness is in `browser/chromium.rs`; without Chromium installed these tests say they are
//! skipped and pass (under CI they fail: `.ci/run` installs it).

#[path = "browser/chromium.rs"]
mod chromium;
#[path = "browser/network.rs"]
mod network;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use confide_domain::consultation::{ConsultationMode, SegmentReason};
use confide_domain::identity::{Email, PersonName, Role};
use confide_domain::password::NewPassword;
use confide_domain::practice::{Address, PracticeName, TimeZoneName};
use confide_domain::{PracticeId, Timestamp, UserId};
use confide_server::auth::{hash_password, new_totp_secret, totp_code};
use confide_server::{Clock, ManualClock, Running, ServerConfig};
use confide_store::{NewPractice, NewUser};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use chromium::{Chromium, Tab, chromium_or_skip, js_string};
use network::NetworkPath;

const PASSWORD: &str = "violet-otter-sails-at-dawn";
const LONDON: &str = "Europe/London";
const WAITING: &str = "You are in the waiting room. Your clinician will start the consultation.";
const IN_CONSULTATION: &str = "Your clinician is ready: the consultation has started.";

/// The app on a temporary data directory and a manual clock, with one practice in London, a clinician who
/// has an authenticator, and a patient registered there.
struct Surgery {
    running: Running,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
    practice: PracticeId,
    day: jiff::civil::Date,
    clinician: Account,
    patient: Account,
}

struct Account {
    id: UserId,
    email: &'static str,
    totp_secret: Option<String>,
}

/// `hh:mm` on `day` in London.
fn london(day: jiff::civil::Date, hour: i8, minute: i8) -> Timestamp {
    day.at(hour, minute, 0, 0).in_tz(LONDON).unwrap().timestamp()
}

impl Surgery {
    /// Opens at 08:54 tomorrow (London); the clinician works 09:00 to 11:00 that day.
    async fn open() -> Surgery {
        Surgery::open_with(|_| {}).await
    }

    /// As [`open`](Self::open), with the app's configuration changed by `configure` first.
    async fn open_with(configure: impl FnOnce(&mut ServerConfig)) -> Surgery {
        let day = Timestamp::now().in_tz(LONDON).unwrap().date().tomorrow().unwrap();
        let clock = Arc::new(ManualClock::new(london(day, 8, 54)));
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig::embedded(dir.path().to_path_buf(), "127.0.0.1:0".parse().unwrap());
        // Emails go out at once, so that the job runner is idle while the browsers write.
        config.job_poll = Duration::from_millis(20);
        configure(&mut config);
        let running = confide_server::spawn(config, clock.clone()).await.unwrap();
        let practice = PracticeId::from_uuid(Uuid::now_v7());
        running
            .state
            .store
            .create_practice(NewPractice {
                id: practice,
                name: &PracticeName::parse("Riverside Surgery").unwrap(),
                address: &Address::parse("1 High Street, Leeds").unwrap(),
                time_zone: &TimeZoneName::parse(LONDON).unwrap(),
                at_ms: clock.now_ms(),
            })
            .await
            .unwrap();
        let surgery = Surgery {
            running,
            clock,
            _dir: dir,
            practice,
            day,
            clinician: Account {
                id: UserId::from_uuid(Uuid::now_v7()),
                email: "grey@riverside.example",
                totp_secret: Some(new_totp_secret()),
            },
            patient: Account {
                id: UserId::from_uuid(Uuid::now_v7()),
                email: "dee@example.org",
                totp_secret: None,
            },
        };
        surgery
            .create(&surgery.clinician, Role::Clinician, "Dr Ada Grey")
            .await;
        surgery
            .create(&surgery.patient, Role::Patient, "Dee Example")
            .await;

        let clinician = surgery.api_login(&surgery.clinician).await;
        let weekday = day.weekday().to_monday_one_offset();
        let (status, body) = post(
            &surgery,
            &clinician,
            &format!("/api/v1/clinicians/{}/availability/rules", surgery.clinician.id),
            json!({"weekday": weekday, "start": "09:00", "end": "11:00", "slot_minutes": 15, "kinds": "either"}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "availability: {body}");
        let patient = surgery.api_login(&surgery.patient).await;
        let (status, body) = post(
            &surgery,
            &patient,
            "/api/v1/registrations",
            json!({"practice_id": surgery.practice}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "registration: {body}");
        let registration = body["id"].as_str().unwrap();
        let (status, body) = post(
            &surgery,
            &clinician,
            &format!("/api/v1/registrations/{registration}/accept"),
            json!({}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "accepting the registration: {body}");
        surgery.settle().await;
        // A minute on, so that the clinician's next code (typed in the browser) is not the one spent here.
        surgery.clock.advance(Duration::from_secs(60));
        surgery
    }

    /// Creates `account` in the store; a clinician works at the surgery.
    async fn create(&self, account: &Account, role: Role, name: &str) {
        let store = &self.running.state.store;
        store
            .create_user(NewUser {
                id: account.id,
                email: &Email::parse(account.email).unwrap(),
                name: &PersonName::parse(name).unwrap(),
                role,
                practice: (role != Role::Patient).then_some(self.practice),
                password_hash: Some(hash_password(&NewPassword::parse(PASSWORD, &[]).unwrap())),
                date_of_birth: (role == Role::Patient).then(|| "1984-03-14".to_owned()),
                at_ms: self.clock.now_ms(),
            })
            .await
            .unwrap();
        if let Some(secret) = &account.totp_secret {
            store.enable_totp(account.id, secret, &[]).await.unwrap();
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.url())
    }

    /// The current authenticator code for `account`, by the app's clock.
    fn code(&self, account: &Account) -> Option<String> {
        let now_secs = (self.clock.now_ms() / 1000) as u64;
        account
            .totp_secret
            .as_ref()
            .map(|secret| totp_code(secret, now_secs).unwrap())
    }

    /// A JSON API client logged in as `account`.
    async fn api_login(&self, account: &Account) -> reqwest::Client {
        let client = reqwest::Client::builder().cookie_store(true).build().unwrap();
        let (status, body) = post(
            self,
            &client,
            "/api/v1/auth/login",
            json!({"email": account.email, "password": PASSWORD, "totp": self.code(account)}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "login of {}: {body}", account.email);
        client
    }

    /// Waits until the job runner has sent every email due by the app's clock: on SQLite, a write that
    /// meets the runner's can fail with "database is locked".
    async fn settle(&self) {
        let state = &self.running.state;
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

    async fn stop(self) {
        match tokio::time::timeout(Duration::from_secs(10), self.running.stop()).await {
            Ok(result) => result.unwrap(),
            Err(_) => panic!("the app did not stop within 10 s (a request still open?)"),
        }
    }
}

async fn post(surgery: &Surgery, client: &reqwest::Client, path: &str, body: Value) -> (StatusCode, Value) {
    let response = client.post(surgery.url(path)).json(&body).send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Logs in through the login page as a person would: types into the fields and presses the button, so that
/// the browser posts the form with its CSRF cookie and token.
async fn log_in(tab: &Tab, s: &Surgery, account: &Account) {
    tab.goto(&s.url("/login")).await;
    tab.type_into("#email", account.email).await;
    tab.type_into("#password", PASSWORD).await;
    if let Some(code) = s.code(account) {
        tab.type_into("#code", &code).await;
    }
    tab.click("main form[action='/login'] button[type=submit]").await;
    tab.wait_for(
        &format!("{} to land on /home", account.email),
        "location.pathname === '/home' && document.readyState === 'complete'",
    )
    .await;
}

fn assert_no_problems(tab: &Tab) {
    let problems = tab.problems();
    assert!(
        problems.is_empty(),
        "{}: the browser reported {problems:#?}",
        tab.name()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_patients_page_follows_the_waiting_room_live() {
    let Some(executable) = chromium_or_skip("the_patients_page_follows_the_waiting_room_live") else {
        return;
    };
    let s = Surgery::open().await;

    // An appointment 5 minutes from now, booked through the API by the patient.
    let start = london(s.day, 9, 0);
    assert_eq!(start.as_millisecond() - s.clock.now_ms(), 5 * 60_000);
    let patient_api = s.api_login(&s.patient).await;
    let (status, body) = post(
        &s,
        &patient_api,
        "/api/v1/appointments",
        json!({"clinician_id": s.clinician.id, "start": start.to_string(), "kind": "video",
               "reason": "A sore throat"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "booking: {body}");
    let id = body["id"].as_str().unwrap().to_owned();
    s.settle().await;

    let (patient_browser, clinician_browser) =
        tokio::join!(Chromium::launch(&executable), Chromium::launch(&executable));
    let patient = patient_browser.tab("patient").await;
    let clinician = clinician_browser.tab("clinician").await;

    // The patient logs in, opens the appointment and checks in.
    log_in(&patient, &s, &s.patient).await;
    let page = s.url(&format!("/appointments/{id}"));
    patient.goto(&page).await;
    assert_eq!(patient.text("#live-status").await.as_deref(), Some("Booked"));
    patient
        .click(&format!(
            "form[action='/appointments/{id}/check-in'] button[type=submit]"
        ))
        .await;
    patient
        .wait_for(
            "the check-in to come back to the appointment",
            &format!(
                "location.pathname === {} && location.search.includes('notice=checked_in') \
                 && document.readyState === 'complete'",
                js_string(&format!("/appointments/{id}"))
            ),
        )
        .await;
    let status_is = |text: &str| {
        format!(
            "(document.getElementById('live-status') || {{}}).textContent === {}",
            js_string(text)
        )
    };
    patient
        .wait_for("the waiting-room text", &status_is(WAITING))
        .await;
    // Marks this document: a reload would lose the mark.
    patient.value("window.confideNotReloaded = true").await;

    // The clinician logs in with their authenticator code and starts the consultation from the schedule.
    log_in(&clinician, &s, &s.clinician).await;
    clinician.goto(&s.url("/schedule")).await;
    let start_button = "section[aria-labelledby='queue-heading'] button[name=action][value=start]";
    clinician
        .wait_for(
            "the patient in the schedule's waiting room",
            &format!("document.querySelector({}) !== null", js_string(start_button)),
        )
        .await;
    clinician.click(start_button).await;
    clinician
        .wait_for(
            "the schedule to say the consultation started",
            "location.pathname === '/schedule' && location.search.includes('notice=started') \
             && document.readyState === 'complete'",
        )
        .await;

    // The patient's page changes by itself, within seconds, without a reload.
    patient
        .wait_for_within(
            Duration::from_secs(5),
            "the in-consultation text",
            &status_is(IN_CONSULTATION),
        )
        .await;
    assert_eq!(
        patient.value("window.confideNotReloaded === true").await,
        Value::Bool(true)
    );
    assert_eq!(
        patient
            .value("document.getElementById('live-status').getAttribute('data-status')")
            .await,
        json!("in_consultation")
    );
    assert_no_problems(&patient);
    assert_no_problems(&clinician);

    // The check above can see a CSP violation: an image from another origin is refused and reported (and
    // nothing is fetched: CSP stops it before any request).
    patient
        .value(
            "document.body.appendChild(Object.assign(document.createElement('img'), \
             {src: 'http://localhost:9/csp-probe.png'})) && true",
        )
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !patient
        .problems()
        .iter()
        .any(|p| p.contains("Content-Security-Policy violation") && p.contains("csp-probe"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "a cross-origin image was not reported as a CSP violation: {:?}",
            patient.problems()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    drop((patient, clinician));
    tokio::join!(patient_browser.close(), clinician_browser.close());
    s.stop().await;
}

/// `window.confideCallStats()` summed by kind: whether audio and video (decoded frames) both arrive.
const MEDIA_ARRIVES: &str = "window.confideCallStats().then(function (stats) { \
     var bytes = {audio: 0, video: 0}, frames = 0; \
     stats.forEach(function (r) { if (r.type === 'inbound-rtp') { bytes[r.kind] += r.bytesReceived || 0; \
       if (r.kind === 'video') { frames += r.framesDecoded || 0; } } }); \
     return bytes.audio > 0 && bytes.video > 0 && frames > 0; })";

/// Waits until `tab`'s call receives audio and video and shows pictures, 20 s at most.
async fn media_arrives(tab: &Tab, what: &str) {
    tab.wait_for_within(Duration::from_secs(20), what, MEDIA_ARRIVES)
        .await;
}

/// What has arrived in a call page so far, from its `inbound-rtp` statistics.
#[derive(Debug, Clone, Copy)]
struct Inbound {
    audio_bytes: u64,
    video_bytes: u64,
    video_frames: u64,
}

async fn inbound(tab: &Tab) -> Inbound {
    let totals = tab
        .value(
            "window.confideCallStats().then(function (stats) { \
             var t = {audio_bytes: 0, video_bytes: 0, video_frames: 0}; \
             stats.forEach(function (r) { if (r.type !== 'inbound-rtp') { return; } \
               if (r.kind === 'audio') { t.audio_bytes += r.bytesReceived || 0; } \
               else { t.video_bytes += r.bytesReceived || 0; t.video_frames += r.framesDecoded || 0; } }); \
             return t; })",
        )
        .await;
    let n = |key: &str| totals[key].as_u64().unwrap_or(0);
    Inbound {
        audio_bytes: n("audio_bytes"),
        video_bytes: n("video_bytes"),
        video_frames: n("video_frames"),
    }
}

/// What had arrived in `tab`, and what had `over` later.
async fn inbound_over(tab: &Tab, over: Duration) -> (Inbound, Inbound) {
    let before = inbound(tab).await;
    tokio::time::sleep(over).await;
    (before, inbound(tab).await)
}

async fn get_json(surgery: &Surgery, client: &reqwest::Client, path: &str) -> Value {
    let response = client.get(surgery.url(path)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    response.json().await.unwrap()
}

/// A browser each for the patient and the clinician, each logged in on a tab.
async fn log_both_in(s: &Surgery, executable: &Path) -> ((Chromium, Tab), (Chromium, Tab)) {
    let (patient_browser, clinician_browser) =
        tokio::join!(Chromium::launch(executable), Chromium::launch(executable));
    let patient = patient_browser.tab("patient").await;
    let clinician = clinician_browser.tab("clinician").await;
    log_in(&patient, s, &s.patient).await;
    log_in(&clinician, s, &s.clinician).await;
    ((patient_browser, patient), (clinician_browser, clinician))
}

/// Books the patient a video appointment at 09:00 with the clinician, and checks them in; its id.
async fn book_video_and_check_in(s: &Surgery, patient_api: &reqwest::Client) -> String {
    let (status, body) = post(
        s,
        patient_api,
        "/api/v1/appointments",
        json!({"clinician_id": s.clinician.id, "start": london(s.day, 9, 0).to_string(), "kind": "video"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "booking: {body}");
    let id = body["id"].as_str().unwrap().to_owned();
    s.settle().await;
    let (status, body) = post(
        s,
        patient_api,
        &format!("/api/v1/appointments/{id}/check-in"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "check-in: {body}");
    id
}

/// The clinician starts consultation `id` and joins from the schedule; the patient's page, the
/// appointment's, offers the call by itself, and the patient joins from there. Each is asked before
/// joining whether they may be recorded, and agrees. When the second of them joined.
async fn start_and_join(s: &Surgery, patient: &Tab, clinician: &Tab, id: &str) -> Instant {
    clinician.goto(&s.url("/schedule")).await;
    let start_button = "section[aria-labelledby='queue-heading'] button[name=action][value=start]";
    clinician.click(start_button).await;
    let join_link = format!("a[href='/appointments/{id}/call']");
    clinician
        .wait_for(
            "the schedule to offer the call",
            &format!("document.querySelector({}) !== null", js_string(&join_link)),
        )
        .await;
    clinician.click(&join_link).await;
    patient
        .wait_for(
            "the link into the call",
            "!document.getElementById('join-call').hidden",
        )
        .await;
    patient.click(&join_link).await;

    let call_page = s.url(&format!("/appointments/{id}/call"));
    for tab in [patient, clinician] {
        tab.wait_for(
            "the call page",
            &format!("location.href === {}", js_string(&call_page)),
        )
        .await;
        tab.wait_for(
            "the question about recording",
            "!document.getElementById('call-join-recorded').disabled",
        )
        .await;
        tab.click("#call-join-recorded").await;
    }
    Instant::now()
}

/// The segments of consultation `id`'s recording so far, read as its patient may.
async fn segments(s: &Surgery, id: &str) -> Vec<(SegmentReason, ConsultationMode)> {
    let store = &s.running.state.store;
    let facts = store
        .consultation_ref(id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let grant = confide_domain::policy::authorize::<confide_domain::policy::actions::JoinConsultation>(
        &confide_domain::policy::Principal {
            user: s.patient.id,
            role: Role::Patient,
            practice: None,
        },
        facts,
        &confide_domain::policy::Context { mfa_verified: true },
    )
    .unwrap();
    store
        .consultation_call(&grant)
        .await
        .unwrap()
        .unwrap()
        .segments
        .iter()
        .map(|s| (s.reason, s.mode))
        .collect()
}

/// The whole recorded consultation through the pages: join with consent, media both ways, audio only and
/// back, the patient's page coming back into the call, chat, hang up and complete; then the recording
/// plays for both participants, as long as the call, and is not there at all for anyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patient_and_their_clinician_see_and_hear_each_other() {
    let Some(executable) = chromium_or_skip("a_patient_and_their_clinician_see_and_hear_each_other") else {
        return;
    };
    let s = Surgery::open().await;
    let patient_api = s.api_login(&s.patient).await;
    let id = book_video_and_check_in(&s, &patient_api).await;

    let ((patient_browser, patient), (clinician_browser, clinician)) = log_both_in(&s, &executable).await;

    // Before the clinician starts it, there is no call to join.
    let call_page = s.url(&format!("/appointments/{id}/call"));
    let response = patient_api.get(&call_page).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    patient.goto(&s.url(&format!("/appointments/{id}"))).await;
    assert_eq!(
        patient.value("document.getElementById('join-call').hidden").await,
        json!(true)
    );

    let joined = start_and_join(&s, &patient, &clinician, &id).await;
    for tab in [&patient, &clinician] {
        media_arrives(tab, "audio and video from the other side").await;
        assert_eq!(tab.text("#call-status").await.as_deref(), Some("Connected."));
        // The devices in use can be chosen, and the connection's quality is shown from its statistics.
        for select in ["call-microphone", "call-camera-choice"] {
            tab.wait_for(
                "a device to choose",
                &format!("document.getElementById('{select}').options.length > 0"),
            )
            .await;
        }
        tab.wait_for(
            "a good connection on loopback",
            "document.getElementById('call-quality').getAttribute('data-quality') === 'good'",
        )
        .await;
        let shown = tab.text("#call-quality").await.unwrap_or_default();
        assert!(shown.contains("round trip"), "{}: {shown}", tab.name());
    }

    // The patient switches to audio only: the video stops both ways, the sound goes on.
    patient.click("#call-mode").await;
    patient
        .wait_for(
            "audio only",
            "document.getElementById('call-status').textContent === 'Connected, audio only.'",
        )
        .await;
    assert_eq!(
        patient.text("#call-mode").await.as_deref(),
        Some("Switch to video")
    );
    // Packets already on their way still arrive for a moment.
    tokio::time::sleep(Duration::from_millis(700)).await;
    for tab in [&patient, &clinician] {
        let (before, after) = inbound_over(tab, Duration::from_millis(1500)).await;
        assert!(
            after.audio_bytes > before.audio_bytes,
            "{}: the sound stopped in audio-only mode: {before:?} then {after:?}",
            tab.name()
        );
        assert!(
            after.video_frames <= before.video_frames,
            "{}: video frames still arrive in audio-only mode: {before:?} then {after:?}",
            tab.name()
        );
    }

    // And back to video: the pictures come back both ways.
    let frames_before: Vec<u64> = vec![
        inbound(&patient).await.video_frames,
        inbound(&clinician).await.video_frames,
    ];
    patient.click("#call-mode").await;
    patient
        .wait_for(
            "video again",
            "document.getElementById('call-status').textContent === 'Connected.' \
             && document.getElementById('call-mode').textContent === 'Switch to audio only'",
        )
        .await;
    for (tab, before) in [&patient, &clinician].into_iter().zip(frames_before) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let now = inbound(tab).await;
            if now.video_frames > before + 10 && now.video_bytes > 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: video did not resume after switching back: {before} frames before, now {now:?}",
                tab.name()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (before, after) = inbound_over(tab, Duration::from_millis(1000)).await;
        assert!(
            after.audio_bytes > before.audio_bytes && after.video_frames > before.video_frames,
            "{}: media stopped after switching back to video: {before:?} then {after:?}",
            tab.name()
        );
    }

    // The patient's page loads again, as a browser does after a crash or a dropped network: the patient
    // comes back into the same consultation with a new connection. The clinician's page keeps the line
    // that carried the patient, and it now carries a new stream (its own SSRC, sequence numbers and VP8
    // picture ids), which the SFU renumbers onto the line; the clinician's browser must decode it.
    patient.goto(&call_page).await;
    patient
        .wait_for(
            "the question about recording, again",
            "!document.getElementById('call-join-recorded').disabled",
        )
        .await;
    patient.click("#call-join-recorded").await;
    media_arrives(&patient, "audio and video from the clinician after coming back").await;
    let back = inbound(&clinician).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = inbound(&clinician).await;
        if now.video_frames > back.video_frames + 10 && now.audio_bytes > back.audio_bytes {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "clinician: the patient's video is not decoded after the patient came back: {back:?} then {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every switch, and the return, is a new segment of the one recording.
    let segments = segments(&s, &id).await;
    assert_eq!(
        segments,
        [
            (SegmentReason::Start, ConsultationMode::Video),
            (SegmentReason::ModeSwitch, ConsultationMode::AudioOnly),
            (SegmentReason::ModeSwitch, ConsultationMode::Video),
            (SegmentReason::Reconnect, ConsultationMode::Video),
        ]
    );

    // A chat message each way arrives on the other page.
    for (from, to, text) in [
        (&patient, &clinician, "My throat is worse in the mornings."),
        (&clinician, &patient, "Thank you, let us have a look."),
    ] {
        from.type_into("#chat-body", text).await;
        from.click("#chat-send").await;
        to.wait_for_within(
            Duration::from_secs(10),
            "the other side's chat message",
            &format!(
                "Array.from(document.querySelectorAll('#chat-messages li p')).some(function (p) {{ \
                 return p.textContent === {}; }})",
                js_string(text)
            ),
        )
        .await;
    }

    // A call of at least 15 s, so that connecting (well under a second here) is a small part of its length.
    tokio::time::sleep(Duration::from_secs(15).saturating_sub(joined.elapsed())).await;

    // The clinician hangs up, then the patient, and the clinician completes the consultation.
    for tab in [&clinician, &patient] {
        tab.click("#call-hang-up").await;
        tab.wait_for(
            "leaving",
            "document.getElementById('call-status').textContent === 'You have left the call.'",
        )
        .await;
    }
    let call_ms = joined.elapsed().as_millis() as i64;
    clinician.goto(&s.url("/schedule")).await;
    clinician
        .click(&format!(
            "form[action='/schedule/appointments/{id}'] button[name=action][value=complete]"
        ))
        .await;
    clinician
        .wait_for(
            "the schedule to say the consultation is complete",
            "location.pathname === '/schedule' && location.search.includes('notice=completed') \
             && document.readyState === 'complete'",
        )
        .await;

    // The recording is remuxed by a job; each participant's list shows it, ready.
    let deadline = Instant::now() + Duration::from_secs(20);
    let recording = loop {
        let list = get_json(&s, &patient_api, "/api/v1/recordings").await;
        let found = list
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["appointment_id"] == json!(id))
            .cloned();
        if let Some(r) = found.filter(|r| r["status"] == "ready") {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "the recording was not ready within 20 s: {list}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let recording_id = recording["id"].as_str().unwrap().to_owned();
    let duration_ms = recording["duration_ms"].as_i64().unwrap();
    assert!(
        (duration_ms - call_ms).abs() * 10 <= call_ms,
        "the recording lasts {duration_ms} ms, the call {call_ms} ms"
    );
    let link = format!("a[href='/recordings/{recording_id}']");
    for tab in [&patient, &clinician] {
        tab.goto(&s.url("/recordings")).await;
        assert_eq!(
            tab.value(&format!("document.querySelectorAll({}).length", js_string(&link)))
                .await,
            json!(1),
            "{}: the recording in the list",
            tab.name()
        );
        assert!(
            tab.value("document.querySelector('main tbody').textContent.includes('Ready to play')")
                .await
                == json!(true),
            "{}: the recording is not listed as ready",
            tab.name()
        );
    }

    // It plays in the browser: each participant's copy side by side, both heard and seen, each as long
    // as the call, driven together by one play/pause button and one position slider.
    const PLAYERS: &str = "Array.prototype.slice.call(document.querySelectorAll('#recording-players video'))";
    for tab in [&patient, &clinician] {
        tab.click(&link).await;
        tab.wait_for(
            "the playback page",
            &format!(
                "location.pathname === {} && document.readyState === 'complete'",
                js_string(&format!("/recordings/{recording_id}"))
            ),
        )
        .await;
        tab.wait_for_within(
            Duration::from_secs(10),
            "a player per participant to load",
            &format!(
                "(function (vs) {{ return vs.length === 2 && vs.every(function (v) {{ return v.readyState >= 1; }}) \
                 && !document.getElementById('recording-controls').hidden; }})({PLAYERS})"
            ),
        )
        .await;
        tab.click("#recording-play").await;
        tab.wait_for_within(
            Duration::from_secs(15),
            "both participants to play, picture and sound",
            &format!(
                "{PLAYERS}.every(function (v) {{ return !v.error && !v.paused && v.readyState >= 2 \
                 && v.currentTime > 1.5 && v.getVideoPlaybackQuality().totalVideoFrames > 0 \
                 && v.webkitAudioDecodedByteCount > 0; }})"
            ),
        )
        .await;
        let players = tab
            .value(&format!(
                "{PLAYERS}.map(function (v) {{ return {{duration: isFinite(v.duration) ? v.duration : null, \
                 width: v.videoWidth, frames: v.getVideoPlaybackQuality().totalVideoFrames, \
                 audio: v.webkitAudioDecodedByteCount, muted: v.muted, volume: v.volume, \
                 at: Number(v.dataset.offsetMs) / 1000 + v.currentTime}}; }})"
            ))
            .await;
        let players = players.as_array().unwrap();
        for player in players {
            assert!(
                player["width"].as_u64().unwrap_or(0) > 0 && player["frames"].as_u64().unwrap_or(0) > 0,
                "{}: a participant shows no picture: {player}",
                tab.name()
            );
            assert!(
                player["audio"].as_u64().unwrap_or(0) > 0 && player["muted"] == json!(false),
                "{}: a participant is not heard: {player}",
                tab.name()
            );
            let played_ms = player["duration"]
                .as_f64()
                .map(|seconds| (seconds * 1000.0) as i64)
                .unwrap_or_else(|| panic!("{}: the player knows no duration: {player}", tab.name()));
            assert!(
                (played_ms - call_ms).abs() * 10 <= call_ms,
                "{}: a player says {played_ms} ms, the call lasted {call_ms} ms",
                tab.name()
            );
        }
        let (a, b) = (
            players[0]["at"].as_f64().unwrap(),
            players[1]["at"].as_f64().unwrap(),
        );
        assert!(
            (a - b).abs() < 0.5,
            "{}: the participants play out of step: {players:?}",
            tab.name()
        );
        // One button pauses both, one slider moves both.
        tab.click("#recording-play").await;
        tab.wait_for_within(
            Duration::from_secs(5),
            "both players to pause",
            &format!("{PLAYERS}.every(function (v) {{ return v.paused; }})"),
        )
        .await;
        tab.value(
            "(function (s) { s.value = '5000'; s.dispatchEvent(new Event('input')); return true; })\
             (document.getElementById('recording-seek'))",
        )
        .await;
        tab.wait_for_within(
            Duration::from_secs(5),
            "both players to move to 5 s",
            &format!(
                "{PLAYERS}.every(function (v) {{ \
                 return Math.abs(Number(v.dataset.offsetMs) / 1000 + v.currentTime - 5) < 0.3 && v.paused; }})"
            ),
        )
        .await;
        eprintln!(
            "{}: call {call_ms} ms, recording {duration_ms} ms, players {players:?}",
            tab.name()
        );
    }
    assert_no_problems(&patient);
    assert_no_problems(&clinician);

    // Another patient and a clinician who was not in the call find nothing, even with a participant's
    // media ticket.
    let (status, ticket) = post(
        &s,
        &patient_api,
        &format!("/api/v1/recordings/{recording_id}/playback"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "playback: {ticket}");
    let ticketed = ticket["media_url"].as_str().unwrap().to_owned();
    assert_eq!(
        ticket["participants"].as_array().map(Vec::len),
        Some(2),
        "a copy per participant: {ticket}"
    );
    let outsiders = [
        (
            Account {
                id: UserId::from_uuid(Uuid::now_v7()),
                email: "eve@example.org",
                totp_secret: None,
            },
            Role::Patient,
            "Eve Other",
        ),
        (
            Account {
                id: UserId::from_uuid(Uuid::now_v7()),
                email: "black@riverside.example",
                totp_secret: Some(new_totp_secret()),
            },
            Role::Clinician,
            "Dr Bo Black",
        ),
    ];
    for (account, role, name) in &outsiders {
        s.create(account, *role, name).await;
        let client = s.api_login(account).await;
        let mut paths = vec![
            format!("/recordings/{recording_id}"),
            format!("/api/v1/recordings/{recording_id}"),
            format!("/api/v1/recordings/{recording_id}/media"),
            ticketed.clone(),
        ];
        for copy in ticket["participants"].as_array().unwrap() {
            paths.push(copy["media_url"].as_str().unwrap().to_owned());
            paths.push(format!(
                "/api/v1/recordings/{recording_id}/media/{}",
                copy["participant_id"].as_str().unwrap()
            ));
        }
        for path in paths {
            let response = client
                .get(s.url(&path))
                .header("Range", "bytes=0-")
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::NOT_FOUND,
                "{} on {path}",
                account.email
            );
        }
        let (status, body) = post(
            &s,
            &client,
            &format!("/api/v1/recordings/{recording_id}/playback"),
            json!({}),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "{}: playback {body}",
            account.email
        );
        let list = get_json(&s, &client, "/api/v1/recordings").await;
        assert_eq!(list, json!([]), "{}: their recordings", account.email);
        let page = client.get(s.url("/recordings")).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let page = page.text().await.unwrap();
        assert!(
            page.contains("You have no recordings.") && !page.contains(&recording_id),
            "{}: their recordings page lists {page}",
            account.email
        );
    }

    assert_no_problems(&patient);
    assert_no_problems(&clinician);

    drop((patient, clinician));
    tokio::join!(patient_browser.close(), clinician_browser.close());
    s.stop().await;
}

/// A network drop in the middle of a call: nothing between the browsers and the server gets through for
/// a while. Each page notices its connection is lost and keeps trying to join again; once the network is
/// back, each is back in the same consultation from new ports, media flowing both ways, and each return is
/// a reconnect segment of the one recording.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_network_drop_both_pages_reconnect_into_the_same_call() {
    let Some(executable) = chromium_or_skip("after_a_network_drop_both_pages_reconnect_into_the_same_call")
    else {
        return;
    };
    // One path to each SFU worker, of which there is one per core.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (path, sfu) = NetworkPath::open(workers);
    let s = Surgery::open_with(|config| {
        config.media_udp = sfu;
        config.media_public = Some(path.public_addr());
    })
    .await;
    let patient_api = s.api_login(&s.patient).await;
    let id = book_video_and_check_in(&s, &patient_api).await;
    let ((patient_browser, patient), (clinician_browser, clinician)) = log_both_in(&s, &executable).await;
    patient.goto(&s.url(&format!("/appointments/{id}"))).await;
    start_and_join(&s, &patient, &clinician, &id).await;
    for tab in [&patient, &clinician] {
        media_arrives(tab, "audio and video from the other side").await;
    }

    // The network is gone, for the pages' requests too: their first attempts to join again get no answer,
    // and they keep trying until it is back.
    path.cut();
    let cut = Instant::now();
    for tab in [&patient, &clinician] {
        tab.set_offline(true).await;
    }
    for tab in [&patient, &clinician] {
        tab.wait_for_within(
            Duration::from_secs(40),
            "an attempt to join again that got no answer",
            "document.getElementById('call-status').textContent \
             === 'The connection was lost. Trying again to reconnect…'",
        )
        .await;
    }
    eprintln!(
        "both pages were trying to join again {} ms after the drop",
        cut.elapsed().as_millis()
    );
    path.restore();
    for tab in [&patient, &clinician] {
        tab.set_offline(false).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reconnects = segments(&s, &id)
            .await
            .iter()
            .filter(|(reason, _)| *reason == SegmentReason::Reconnect)
            .count();
        if reconnects == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{reconnects} of the 2 pages joined again within 60 s of the drop"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for tab in [&patient, &clinician] {
        media_arrives(tab, "media over the new connection").await;
        let (before, after) = inbound_over(tab, Duration::from_millis(1000)).await;
        assert!(
            after.audio_bytes > before.audio_bytes && after.video_frames > before.video_frames,
            "{}: media does not flow after reconnecting: {before:?} then {after:?}",
            tab.name()
        );
        assert_eq!(tab.text("#call-status").await.as_deref(), Some("Connected."));
    }
    eprintln!(
        "both pages were back in the call {} ms after the drop",
        cut.elapsed().as_millis()
    );
    assert_eq!(
        segments(&s, &id).await,
        [
            (SegmentReason::Start, ConsultationMode::Video),
            (SegmentReason::Reconnect, ConsultationMode::Video),
            (SegmentReason::Reconnect, ConsultationMode::Video),
        ]
    );
    // Requests that failed while the network was gone are all the browsers complain of.
    for tab in [&patient, &clinician] {
        let problems: Vec<String> = tab
            .problems()
            .into_iter()
            .filter(|p| !p.starts_with("log (Network)"))
            .collect();
        assert!(
            problems.is_empty(),
            "{}: the browser reported {problems:#?}",
            tab.name()
        );
    }
    drop((patient, clinician));
    tokio::join!(patient_browser.close(), clinician_browser.close());
    s.stop().await;
}
