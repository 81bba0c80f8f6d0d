//! The HTML pages, driven like a browser without JavaScript: cookies kept, redirects not followed.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use confide_domain::identity::{Email, PersonName, Role};
use confide_domain::password::NewPassword;
use confide_domain::practice::{Address, PracticeName, TimeZoneName};
use confide_domain::{PracticeId, Timestamp, UserId};
use confide_server::auth::{hash_password, new_token, new_totp_secret, totp_code};
use confide_server::{Clock, ManualClock, Running, ServerConfig, SystemClock};
use confide_store::{NewPractice, NewUser, OneTimeToken, TokenPurpose};
use reqwest::header::{CONTENT_TYPE, LOCATION, SET_COOKIE};
use reqwest::{Client, StatusCode};
use uuid::Uuid;

const PASSWORD: &str = "violet-otter-sails-at-dawn";

struct App {
    running: Running,
    _dir: tempfile::TempDir,
}

impl App {
    async fn start() -> App {
        Self::start_with(Arc::new(SystemClock)).await
    }

    /// The app on a clock that stands still at `at` until the test moves it.
    async fn start_at(at: Timestamp) -> (App, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(at));
        (Self::start_with(clock.clone()).await, clock)
    }

    async fn start_with(clock: Arc<dyn Clock>) -> App {
        let dir = tempfile::tempdir().unwrap();
        let config = ServerConfig::embedded(dir.path().to_path_buf(), "127.0.0.1:0".parse().unwrap());
        let running = confide_server::spawn(config, clock).await.unwrap();
        App { running, _dir: dir }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.url())
    }

    async fn get(&self, client: &Client, path: &str) -> (StatusCode, String) {
        let response = client.get(self.url(path)).send().await.unwrap();
        (response.status(), response.text().await.unwrap())
    }

    /// Loads the page at `form_page` and posts `fields` to `path` with the page's CSRF token.
    async fn submit(
        &self,
        client: &Client,
        form_page: &str,
        path: &str,
        fields: &[(&str, &str)],
    ) -> reqwest::Response {
        let (status, html) = self.get(client, form_page).await;
        assert_eq!(status, StatusCode::OK, "{form_page}: {html}");
        let csrf = csrf_of(&html);
        let mut form = vec![("csrf", csrf.as_str())];
        form.extend_from_slice(fields);
        client.post(self.url(path)).form(&form).send().await.unwrap()
    }

    async fn account_exists(&self, email: &str) -> bool {
        self.running
            .state
            .store
            .account_by_email(&Email::parse(email).unwrap())
            .await
            .unwrap()
            .is_some()
    }

    async fn stop(self) {
        self.running.stop().await.unwrap();
    }
}

fn browser() -> Client {
    Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The value of the first hidden `csrf` field in a page.
fn csrf_of(html: &str) -> String {
    let marker = r#"name="csrf" value=""#;
    let start = html.find(marker).expect("the page has a CSRF field") + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

fn location(response: &reqwest::Response) -> &str {
    response.headers()[LOCATION].to_str().unwrap()
}

fn sets_cookie(response: &reqwest::Response, name: &str) -> bool {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .any(|v| v.to_str().unwrap().starts_with(&format!("{name}=")))
}

async fn sign_up(app: &App, client: &Client, name: &str, email: &str) -> reqwest::Response {
    app.submit(
        client,
        "/signup",
        "/signup",
        &[
            ("name", name),
            ("email", email),
            ("password", PASSWORD),
            ("date_of_birth", "1980-01-02"),
        ],
    )
    .await
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test]
async fn signing_up_leads_home_with_a_session() {
    let app = App::start().await;
    let client = browser();

    let response = client.get(app.url("/signup")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let cookie = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("confide_csrf="))
        .expect("the form page sets the CSRF cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.contains("Path=/"));
    let html = response.text().await.unwrap();
    assert!(html.contains(r#"<html lang="en">"#) && html.contains(r##"href="#main""##));
    assert!(html.contains(r#"<label for="date_of_birth">"#) && html.contains(r#"type="date""#));

    let response = sign_up(&app, &client, "Ann Example", "ann@example.org").await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/home");
    assert!(sets_cookie(&response, "confide_session"));

    let (status, html) = app.get(&client, "/home").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Hello, Ann Example"), "{html}");
    assert!(html.contains("2 January 1980"));
    assert!(html.contains(r#"action="/logout""#));

    let (status, html) = app.get(&client, "/signup").await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");

    let response = app.submit(&client, "/home", "/logout", &[]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/login?notice=logged_out");
    let (status, html) = app.get(&client, "/login?notice=logged_out").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("You are logged out."));
    assert_eq!(app.get(&client, "/home").await.0, StatusCode::SEE_OTHER);
    app.stop().await;
}

#[tokio::test]
async fn a_signup_error_shows_the_form_again_without_the_password() {
    let app = App::start().await;
    let client = browser();
    let response = app
        .submit(
            &client,
            "/signup",
            "/signup",
            &[
                ("name", "Bea Example"),
                ("email", "not-an-email"),
                ("password", PASSWORD),
                ("date_of_birth", "1990-05-06"),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let html = response.text().await.unwrap();
    assert!(html.contains(r#"role="alert""#));
    assert!(html.contains("Email address is not valid."), "{html}");
    assert!(html.contains(r#"aria-describedby="email-error""#));
    assert!(html.contains(r#"value="Bea Example""#) && html.contains(r#"value="1990-05-06""#));
    assert!(!html.contains(PASSWORD));
    app.stop().await;
}

/// Eve's sign-up, with `csrf` if given.
fn eve_signup(csrf: Option<&str>) -> Vec<(&str, &str)> {
    let mut form = vec![
        ("name", "Eve Example"),
        ("email", "eve@example.org"),
        ("password", PASSWORD),
        ("date_of_birth", "1980-01-02"),
    ];
    form.extend(csrf.map(|c| ("csrf", c)));
    form
}

#[tokio::test]
async fn forms_without_the_right_csrf_token_are_refused_and_change_nothing() {
    let app = App::start().await;
    let client = browser();
    let (_, html) = app.get(&client, "/signup").await;
    let token = csrf_of(&html);
    let missing = client
        .post(app.url("/signup"))
        .form(&eve_signup(None))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::FORBIDDEN);
    assert!(missing.text().await.unwrap().contains("That form has expired"));

    let wrong = "A".repeat(token.len());
    let response = client
        .post(app.url("/signup"))
        .form(&eve_signup(Some(&wrong)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    // The right token, but from a browser without the cookie: what a forged cross-site form looks like.
    let stranger = browser();
    let response = stranger
        .post(app.url("/signup"))
        .form(&eve_signup(Some(&token)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    assert!(!app.account_exists("eve@example.org").await);

    sign_up(&app, &client, "Eve Example", "eve@example.org").await;
    let response = client
        .post(app.url("/logout"))
        .form(&[("csrf", wrong.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        app.get(&client, "/home").await.0,
        StatusCode::OK,
        "still logged in"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_password_shows_the_form_again_without_a_session() {
    let app = App::start().await;
    sign_up(&app, &browser(), "Cai Example", "cai@example.org").await;

    let client = browser();
    let response = app
        .submit(
            &client,
            "/login",
            "/login",
            &[
                ("email", "cai@example.org"),
                ("password", "not-the-password-at-all"),
                ("code", ""),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(!sets_cookie(&response, "confide_session"));
    let html = response.text().await.unwrap();
    assert!(html.contains(r#"role="alert""#));
    assert!(html.contains("Email or password is incorrect."));
    assert!(html.contains(r#"value="cai@example.org""#));
    assert!(!html.contains("not-the-password-at-all"));
    let (status, _) = app.get(&client, "/home").await;
    assert_eq!(status, StatusCode::SEE_OTHER);

    let response = app
        .submit(
            &client,
            "/login",
            "/login",
            &[("email", "cai@example.org"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/home");
    assert_eq!(app.get(&client, "/home").await.0, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn logged_out_pages_send_to_login_and_unknown_paths_are_not_found() {
    let app = App::start().await;
    let client = browser();
    for path in ["/home", "/record", "/access-log", "/practice/queue", "/mfa/setup"] {
        let response = client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(location(&response), "/login", "{path}");
    }

    let response = client.get(app.url("/no-such-page")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(response.text().await.unwrap().contains("Page not found"));
    let response = client.get(app.url("/api/v1/no-such-thing")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");

    let response = client.get(app.url("/static/confide.css")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    assert!(response.text().await.unwrap().contains(":focus-visible"));
    app.stop().await;
}

#[tokio::test]
async fn a_patient_sees_a_clinicians_access_with_the_name_escaped() {
    let app = App::start().await;
    let store = &app.running.state.store;
    let practice = PracticeId::from_uuid(Uuid::now_v7());
    store
        .create_practice(NewPractice {
            id: practice,
            name: &PracticeName::parse("Riverside Surgery").unwrap(),
            address: &Address::parse("1 High Street, Leeds").unwrap(),
            time_zone: &TimeZoneName::parse("Europe/London").unwrap(),
            at_ms: now_ms(),
        })
        .await
        .unwrap();
    let clinician = UserId::from_uuid(Uuid::now_v7());
    store
        .create_user(NewUser {
            id: clinician,
            email: &Email::parse("grey@riverside.example").unwrap(),
            name: &PersonName::parse("Dr <script>alert(1)</script> Grey").unwrap(),
            role: Role::Clinician,
            practice: Some(practice),
            password_hash: Some(hash_password(&NewPassword::parse(PASSWORD, &[]).unwrap())),
            date_of_birth: None,
            at_ms: now_ms(),
        })
        .await
        .unwrap();
    let secret = new_totp_secret();
    store.enable_totp(clinician, &secret, &[]).await.unwrap();

    let patient = browser();
    sign_up(&app, &patient, "Dee Example", "dee@example.org").await;
    let (status, html) = app.get(&patient, "/practices?q=river").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Riverside Surgery") && html.contains("Ask to register"));
    let response = app
        .submit(
            &patient,
            "/practices?q=river",
            "/practices/register",
            &[("practice_id", &practice.as_uuid().to_string()), ("q", "river")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/home?notice=requested");
    let (_, html) = app.get(&patient, "/home?notice=requested").await;
    assert!(html.contains("Your request was sent") && html.contains("Waiting for the practice"));
    let (status, _) = app.get(&patient, "/practice/queue").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "patients have no queue");

    let staff = browser();
    let response = app
        .submit(
            &staff,
            "/login",
            "/login",
            &[("email", "grey@riverside.example"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let html = response.text().await.unwrap();
    assert!(
        html.contains(r#"aria-describedby="code-hint code-error""#),
        "{html}"
    );
    let code = totp_code(&secret, (now_ms() / 1000) as u64).unwrap();
    let response = app
        .submit(
            &staff,
            "/login",
            "/login",
            &[
                ("email", "grey@riverside.example"),
                ("password", PASSWORD),
                ("code", &code),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/home");

    let (status, html) = app.get(&staff, "/practice/queue").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Dee Example"), "{html}");
    let registration = html
        .split(r#"name="registration" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let response = app
        .submit(
            &staff,
            "/practice/queue",
            "/practice/queue",
            &[("registration", &registration), ("decision", "accept")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/practice/queue?notice=accepted");
    let (_, html) = app.get(&staff, "/home").await;
    assert!(html.contains("Patients registered at Riverside Surgery") && html.contains("Dee Example"));
    assert_eq!(app.get(&staff, "/access-log").await.0, StatusCode::NOT_FOUND);

    let me: serde_json::Value = patient
        .get(app.url("/api/v1/me"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let patient_id = me["id"].as_str().unwrap();
    let response = staff
        .get(app.url(&format!("/api/v1/patients/{patient_id}/record")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let (status, html) = app.get(&patient, "/access-log").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Read your record"), "{html}");
    assert!(html.contains("Decided your registration request"));
    assert!(
        html.contains("Dr &#60;script&#62;alert(1)&#60;/script&#62; Grey (Clinician)"),
        "{html}"
    );
    assert!(!html.contains("<script>"));
    assert!(html.contains("UTC</time>"));
    let (_, html) = app.get(&patient, "/home").await;
    assert!(html.contains("<dd>Riverside Surgery</dd>"), "{html}");
    app.stop().await;
}

#[tokio::test]
async fn a_weak_new_password_keeps_the_reset_link_usable() {
    let app = App::start().await;
    sign_up(&app, &browser(), "Fay Example", "fay@example.org").await;
    let client = browser();
    let response = app
        .submit(
            &client,
            "/reset-password",
            "/reset-password",
            &[("email", "fay@example.org")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("If an account exists for that address")
    );

    let account = app
        .running
        .state
        .store
        .account_by_email(&Email::parse("fay@example.org").unwrap())
        .await
        .unwrap()
        .unwrap();
    let (token, hash) = new_token();
    app.running
        .state
        .store
        .create_token(&OneTimeToken {
            token_hash: hash,
            purpose: TokenPurpose::PasswordReset,
            user: Some(account.id),
            email: None,
            name: None,
            role: None,
            practice: None,
            created_at_ms: now_ms(),
            expires_at_ms: now_ms() + 60_000,
        })
        .await
        .unwrap();
    let page = format!("/reset-password?token={token}");
    let weak = app
        .submit(
            &client,
            &page,
            "/reset-password",
            &[("token", &token), ("password", "short")],
        )
        .await;
    assert_eq!(weak.status(), StatusCode::BAD_REQUEST);
    assert!(weak.text().await.unwrap().contains(r#"aria-invalid="true""#));
    let strong = app
        .submit(
            &client,
            &page,
            "/reset-password",
            &[("token", &token), ("password", "gravel-puffin-oboe-castle-7")],
        )
        .await;
    assert_eq!(strong.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&strong), "/login?notice=password_changed");
    let login = app
        .submit(
            &client,
            "/login",
            "/login",
            &[
                ("email", "fay@example.org"),
                ("password", "gravel-puffin-oboe-castle-7"),
            ],
        )
        .await;
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    app.stop().await;
}

/// A practice in London with a clinician and a practice admin, on a clock standing at 07:00 tomorrow
/// (London time), so that the day's slots are all ahead.
struct Surgery {
    app: App,
    clock: Arc<ManualClock>,
    practice: PracticeId,
    /// The day the clock stands on, in the practice's zone.
    day: jiff::civil::Date,
    clinician: StaffLogin,
    admin: StaffLogin,
}

struct StaffLogin {
    email: &'static str,
    secret: String,
}

const LONDON: &str = "Europe/London";

/// `time` ("09:15") on `day` in London, as the RFC 3339 instant the pages send.
fn london(day: jiff::civil::Date, time: &str) -> String {
    let (h, m) = time.split_once(':').unwrap();
    day.at(h.parse().unwrap(), m.parse().unwrap(), 0, 0)
        .in_tz(LONDON)
        .unwrap()
        .timestamp()
        .to_string()
}

impl Surgery {
    async fn open() -> Surgery {
        let tomorrow = Timestamp::now().in_tz(LONDON).unwrap().date().tomorrow().unwrap();
        let seven = tomorrow.at(7, 0, 0, 0).in_tz(LONDON).unwrap().timestamp();
        let (app, clock) = App::start_at(seven).await;
        let store = &app.running.state.store;
        let practice = PracticeId::from_uuid(Uuid::now_v7());
        store
            .create_practice(NewPractice {
                id: practice,
                name: &PracticeName::parse("Riverside Surgery").unwrap(),
                address: &Address::parse("1 High Street, Leeds").unwrap(),
                time_zone: &TimeZoneName::parse(LONDON).unwrap(),
                at_ms: clock.now_ms(),
            })
            .await
            .unwrap();
        let mut surgery = Surgery {
            app,
            clock,
            practice,
            day: tomorrow,
            clinician: StaffLogin {
                email: "grey@riverside.example",
                secret: String::new(),
            },
            admin: StaffLogin {
                email: "admin@riverside.example",
                secret: String::new(),
            },
        };
        surgery.clinician.secret = surgery
            .staff(Role::Clinician, "Dr Ada Grey", surgery.clinician.email)
            .await;
        surgery.admin.secret = surgery
            .staff(Role::PracticeAdmin, "Pat Admin", surgery.admin.email)
            .await;
        surgery
    }

    /// A staff account with an authenticator; its secret.
    async fn staff(&self, role: Role, name: &str, email: &str) -> String {
        let store = &self.app.running.state.store;
        let id = UserId::from_uuid(Uuid::now_v7());
        store
            .create_user(NewUser {
                id,
                email: &Email::parse(email).unwrap(),
                name: &PersonName::parse(name).unwrap(),
                role,
                practice: Some(self.practice),
                password_hash: Some(hash_password(&NewPassword::parse(PASSWORD, &[]).unwrap())),
                date_of_birth: None,
                at_ms: self.clock.now_ms(),
            })
            .await
            .unwrap();
        let secret = new_totp_secret();
        store.enable_totp(id, &secret, &[]).await.unwrap();
        secret
    }

    async fn log_in(&self, staff: &StaffLogin) -> Client {
        let client = browser();
        let code = totp_code(&staff.secret, (self.clock.now_ms() / 1000) as u64).unwrap();
        let response = self
            .app
            .submit(
                &client,
                "/login",
                "/login",
                &[("email", staff.email), ("password", PASSWORD), ("code", &code)],
            )
            .await;
        assert_eq!(
            response.status(),
            StatusCode::SEE_OTHER,
            "login of {}",
            staff.email
        );
        client
    }

    /// A patient who signed up and whom the practice accepted.
    async fn registered_patient(&self, staff: &Client, name: &str, email: &str) -> Client {
        let patient = browser();
        sign_up(&self.app, &patient, name, email).await;
        let response = self
            .app
            .submit(
                &patient,
                "/practices",
                "/practices/register",
                &[("practice_id", &self.practice.as_uuid().to_string())],
            )
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let (_, html) = self.app.get(staff, "/practice/queue").await;
        let registration = field_after(&html, name, "registration");
        let response = self
            .app
            .submit(
                staff,
                "/practice/queue",
                "/practice/queue",
                &[("registration", &registration), ("decision", "accept")],
            )
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        patient
    }

    /// The clinician's weekly session on the clock's weekday, from 09:00 to 11:00 in 15-minute slots,
    /// added through the availability page; the clinician's id.
    async fn weekly_session(&self, clinician: &Client) -> String {
        let (status, html) = self.app.get(clinician, "/availability").await;
        assert_eq!(status, StatusCode::OK, "{html}");
        let id = field_after(&html, r#"action="/availability/rules""#, "clinician");
        let weekday = self.day.weekday().to_monday_one_offset().to_string();
        let response = self
            .app
            .submit(
                clinician,
                "/availability",
                "/availability/rules",
                &[
                    ("clinician", &id),
                    ("weekday", &weekday),
                    ("start", "09:00"),
                    ("end", "11:00"),
                    ("slot_minutes", "15"),
                    ("kinds", "either"),
                    ("valid_from", ""),
                    ("valid_until", ""),
                ],
            )
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            location(&response),
            format!("/availability?clinician={id}&notice=rule_added")
        );
        id
    }
}

/// The value of the first field named `name` after `marker` in a page.
fn field_after(html: &str, marker: &str, name: &str) -> String {
    let rest = &html[html
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} in {html}"))..];
    let field = format!(r#"name="{name}" value=""#);
    let start = rest
        .find(&field)
        .unwrap_or_else(|| panic!("field {name} after {marker:?}"))
        + field.len();
    rest[start..].split('"').next().unwrap().to_owned()
}

/// Books an audio call at `start` through the booking form; the appointment's id.
async fn book(app: &App, patient: &Client, clinician_id: &str, start: &str) -> String {
    let form = [
        ("clinician_id", clinician_id),
        ("start", start),
        ("kind", "audio"),
    ];
    let response = app
        .submit(patient, "/appointments/book", "/appointments/book", &form)
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    appointment_id(location(&response))
}

/// Presses one of an appointment's buttons on the schedule page.
async fn act(
    app: &App,
    clinician: &Client,
    schedule: &str,
    id: &str,
    fields: [(&str, &str); 3],
) -> reqwest::Response {
    app.submit(
        clinician,
        schedule,
        &format!("/schedule/appointments/{id}"),
        &fields,
    )
    .await
}

/// The appointment id in `/appointments/{id}?notice=...`.
fn appointment_id(location: &str) -> String {
    location
        .strip_prefix("/appointments/")
        .and_then(|rest| rest.split('?').next())
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_clinician_sets_availability_and_a_patient_books_through_the_pages() {
    let s = Surgery::open().await;
    let app = &s.app;
    let clinician = s.log_in(&s.clinician).await;
    let (_, html) = app.get(&clinician, "/home").await;
    assert!(html.contains(r#"href="/schedule""#) && html.contains(r#"href="/availability""#));

    let clinician_id = s.weekly_session(&clinician).await;
    let (status, html) = app
        .get(
            &clinician,
            &format!("/availability?clinician={clinician_id}&notice=rule_added"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("The weekly session was added.") && html.contains("09:00 to 11:00"),
        "{html}"
    );

    // A session that overlaps is refused, and the form keeps what was entered.
    let weekday = s.day.weekday().to_monday_one_offset().to_string();
    let overlap = app
        .submit(
            &clinician,
            "/availability",
            "/availability/rules",
            &[
                ("clinician", &clinician_id),
                ("weekday", &weekday),
                ("start", "10:00"),
                ("end", "12:00"),
                ("slot_minutes", "15"),
                ("kinds", "video"),
            ],
        )
        .await;
    assert_eq!(overlap.status(), StatusCode::BAD_REQUEST);
    let html = overlap.text().await.unwrap();
    assert!(
        html.contains(r#"role="alert""#) && html.contains("overlaps"),
        "{html}"
    );
    assert!(html.contains(r#"value="10:00""#) && html.contains(r#"<option value="video" selected>"#));

    // A day off next week, then removed again.
    let next_week = s.day.checked_add(jiff::Span::new().days(7)).unwrap().to_string();
    let response = app
        .submit(
            &clinician,
            "/availability",
            "/availability/exceptions",
            &[
                ("clinician", &clinician_id),
                ("date", &next_week),
                ("kind", "blocked"),
                ("start", ""),
                ("end", ""),
                ("slot_minutes", "15"),
                ("kinds", "either"),
                ("note", "Annual leave"),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (_, html) = app.get(&clinician, location(&response)).await;
    assert!(
        html.contains("Annual leave") && html.contains("All day"),
        "{html}"
    );
    let exception = field_after(&html, r#"action="/availability/exceptions/remove""#, "id");
    let response = app
        .submit(
            &clinician,
            "/availability",
            "/availability/exceptions/remove",
            &[("clinician", &clinician_id), ("id", &exception)],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (_, html) = app.get(&clinician, location(&response)).await;
    assert!(!html.contains("Annual leave") && html.contains("The change for that day was removed."));

    // Before registering, a patient is told how to be able to book.
    let unregistered = browser();
    sign_up(app, &unregistered, "Eve Other", "eve@example.org").await;
    let (status, html) = app.get(&unregistered, "/appointments/book").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("You can book once a practice has registered you")
            && html.contains(r#"href="/practices""#)
    );

    let patient = s
        .registered_patient(&clinician, "Dee Example", "dee@example.org")
        .await;
    let (_, html) = app.get(&patient, "/home").await;
    assert!(html.contains(r#"href="/appointments""#));
    let (status, html) = app.get(&patient, "/appointments").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains(r#"href="/appointments/book""#) && html.contains("You have no upcoming appointments.")
    );

    let (status, html) = app.get(&patient, "/appointments/book").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let nine = london(s.day, "09:00");
    assert!(html.contains(&s.day.strftime("%A %-d %B").to_string()), "{html}");
    assert!(
        html.contains(r#"<span class="slot-time">09:00</span> Dr Ada Grey"#),
        "{html}"
    );
    assert!(html.contains(&format!(r#"name="start" value="{nine}""#)));
    assert!(html.contains(r#"<option value="audio">Audio call</option>"#));
    let form = [
        ("clinician_id", clinician_id.as_str()),
        ("start", nine.as_str()),
        ("kind", "video"),
        ("reason", "A sore throat"),
        ("tz", ""),
        ("from", ""),
    ];
    let response = app
        .submit(&patient, "/appointments/book", "/appointments/book", &form)
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let id = appointment_id(location(&response));
    assert_eq!(location(&response), format!("/appointments/{id}?notice=booked"));

    // The same time again is taken: the page says so and offers the next free times.
    let taken = app
        .submit(&patient, "/appointments/book", "/appointments/book", &form)
        .await;
    assert_eq!(taken.status(), StatusCode::CONFLICT);
    let html = taken.text().await.unwrap();
    assert!(
        html.contains("That time has just been booked by someone else"),
        "{html}"
    );
    assert!(html.contains("Free times you could choose instead") && html.contains(&london(s.day, "09:15")));

    let (_, html) = app.get(&patient, "/appointments").await;
    assert!(html.contains(&format!(r#"href="/appointments/{id}""#)), "{html}");
    assert!(html.contains("Dr Ada Grey") && html.contains("Video call") && html.contains("<td>Booked</td>"));
    let (status, html) = app
        .get(&patient, &format!("/appointments/{id}?notice=booked"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains(&format!(
            r#"id="live-status" class="live-status" data-appointment="{id}""#
        )),
        "{html}"
    );
    assert!(html.contains("Your appointment is booked.") && html.contains("A sore throat"));
    assert!(html.contains(r#"<script src="/static/waiting-room.js" defer></script>"#));
    assert!(html.contains("09:00 "), "the local start time: {html}");

    let (status, html) = app.get(&clinician, &format!("/schedule?date={}", s.day)).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("Schedule of Dr Ada Grey") && html.contains("Dee Example"),
        "{html}"
    );
    assert!(html.contains("<th scope=\"row\">09:00</th>") && html.contains("Nobody is waiting."));
    assert!(html.contains(r#"data-refresh-seconds="30""#));

    // Someone else's appointment is not there for them, whatever the page.
    for path in [
        format!("/appointments/{id}"),
        format!("/appointments/{id}/reschedule"),
    ] {
        let (status, html) = app.get(&unregistered, &path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(!html.contains("A sore throat"));
    }
    let response = app
        .submit(
            &unregistered,
            "/appointments",
            &format!("/appointments/{id}/cancel"),
            &[],
        )
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        app.get(&clinician, &format!("/appointments/{id}")).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, html) = app.get(&patient, &format!("/appointments/{id}")).await;
    assert!(
        html.contains("<dt>How</dt><dd>Video call</dd>"),
        "still booked: {html}"
    );
    s.app.stop().await;
}

#[tokio::test]
async fn the_waiting_room_goes_from_check_in_to_the_end_of_the_consultation() {
    let s = Surgery::open().await;
    let app = &s.app;
    let clinician = s.log_in(&s.clinician).await;
    let clinician_id = s.weekly_session(&clinician).await;
    let patient = s
        .registered_patient(&clinician, "Dee Example", "dee@example.org")
        .await;
    let id = book(app, &patient, &clinician_id, &london(s.day, "09:00")).await;
    let page = format!("/appointments/{id}");

    // Moved to 09:15 through the reschedule page.
    let (status, html) = app.get(&patient, &format!("{page}/reschedule")).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let quarter_past = london(s.day, "09:15");
    assert!(
        html.contains(&format!(r#"name="start" value="{quarter_past}""#)),
        "{html}"
    );
    let response = app
        .submit(
            &patient,
            &format!("{page}/reschedule"),
            &format!("{page}/reschedule"),
            &[
                ("start", &quarter_past),
                ("kind", "audio"),
                ("tz", ""),
                ("from", ""),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), format!("{page}?notice=rescheduled"));

    // Too early to check in: the page says when it opens.
    let early = app
        .submit(&patient, &page, &format!("{page}/check-in"), &[])
        .await;
    assert_eq!(early.status(), StatusCode::CONFLICT);
    let html = early.text().await.unwrap();
    assert!(
        html.contains("Check-in opens 10 minutes before the appointment"),
        "{html}"
    );
    assert!(html.contains(r#"id="live-status""#) && html.contains(">Booked</p>"));

    s.clock.advance(std::time::Duration::from_secs(2 * 3600 + 8 * 60)); // 09:08
    let response = app
        .submit(&patient, &page, &format!("{page}/check-in"), &[])
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), format!("{page}?notice=checked_in"));
    let (_, html) = app.get(&patient, &page).await;
    assert!(html.contains("You are in the waiting room. Your clinician will start the consultation."));
    assert!(html.contains(r#"data-status="checked_in""#));

    s.clock.advance(std::time::Duration::from_secs(5 * 60));
    let (_, html) = app.get(&clinician, "/schedule").await;
    assert!(
        html.contains("Patients waiting, longest first") && html.contains("5 minutes"),
        "{html}"
    );
    let schedule = format!("/schedule?date={}&clinician={clinician_id}", s.day);
    let day = s.day.to_string();
    let run = |action| {
        let fields = [
            ("action", action),
            ("date", day.as_str()),
            ("clinician", clinician_id.as_str()),
        ];
        act(app, &clinician, &schedule, &id, fields)
    };
    let response = run("start").await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), format!("{schedule}&notice=started"));
    let (_, html) = app.get(&patient, &page).await;
    assert!(
        html.contains("Your clinician is ready: the consultation has started."),
        "{html}"
    );
    assert!(!html.contains(r#"/check-in""#), "no check-in once started");

    // Starting twice is refused on the schedule page itself.
    let again = run("start").await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let html = again.text().await.unwrap();
    assert!(
        html.contains(r#"role="alert""#) && !html.contains("data-refresh-seconds"),
        "{html}"
    );

    let response = run("complete").await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (_, html) = app.get(&patient, &page).await;
    assert!(html.contains(r#"data-status="completed""#) && html.contains("The consultation is complete."));
    let (_, html) = app.get(&patient, "/appointments").await;
    assert!(html.contains("You have no upcoming appointments.") && html.contains("<td>Completed</td>"));

    // The practice cancels another appointment with a message the patient reads.
    let later = book(app, &patient, &clinician_id, &london(s.day, "10:30")).await;
    let response = app
        .submit(
            &clinician,
            &schedule,
            &format!("/schedule/appointments/{later}"),
            &[
                ("action", "cancel"),
                ("message", "Dr Grey is unwell today. Please book again."),
                ("date", &s.day.to_string()),
                ("clinician", &clinician_id),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (_, html) = app.get(&patient, &format!("/appointments/{later}")).await;
    assert!(
        html.contains("Message from the practice") && html.contains("Dr Grey is unwell today."),
        "{html}"
    );
    assert!(html.contains("This appointment was cancelled."));
    s.app.stop().await;
}

#[tokio::test]
async fn scheduling_pages_need_the_right_person() {
    let s = Surgery::open().await;
    let app = &s.app;
    let anonymous = browser();
    let id = Uuid::now_v7();
    for path in [
        "/appointments".to_owned(),
        "/appointments/book".to_owned(),
        format!("/appointments/{id}"),
        format!("/appointments/{id}/reschedule"),
        "/schedule".to_owned(),
        "/availability".to_owned(),
    ] {
        let response = anonymous.get(app.url(&path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(location(&response), "/login", "{path}");
    }
    let response = anonymous
        .get(app.url("/static/waiting-room.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/javascript")
    );
    assert!(response.text().await.unwrap().contains("EventSource"));

    let patient = browser();
    sign_up(app, &patient, "Dee Example", "dee@example.org").await;
    for path in ["/schedule", "/availability", "/appointments/not-an-id"] {
        assert_eq!(app.get(&patient, path).await.0, StatusCode::NOT_FOUND, "{path}");
    }
    assert_eq!(
        app.get(&patient, &format!("/appointments/{id}")).await.0,
        StatusCode::NOT_FOUND
    );

    // A practice admin picks a clinician, and sets the practice's cutoff.
    let admin = s.log_in(&s.admin).await;
    let (status, html) = app.get(&admin, "/availability").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("Dr Ada Grey") && html.contains(r#"action="/availability/cutoff""#));
    let (status, html) = app.get(&admin, "/schedule").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Choose a clinician") && html.contains("Dr Ada Grey"));
    let refused = app
        .submit(
            &admin,
            "/availability",
            "/availability/cutoff",
            &[("minutes", "soon")],
        )
        .await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let html = refused.text().await.unwrap();
    assert!(
        html.contains(r#"id="minutes-error""#) && html.contains(r#"value="soon""#),
        "{html}"
    );
    let response = app
        .submit(
            &admin,
            "/availability",
            "/availability/cutoff",
            &[("minutes", "120")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/availability?notice=cutoff_saved");

    // A clinician manages only their own availability, and has no cutoff form.
    let clinician = s.log_in(&s.clinician).await;
    let (_, html) = app.get(&clinician, "/availability").await;
    assert!(!html.contains(r#"action="/availability/cutoff""#));
    let response = app
        .submit(
            &clinician,
            "/availability",
            "/availability/cutoff",
            &[("minutes", "0")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    s.app.stop().await;
}

/// Answers the symptom checker's questions on its page until the result: yes to wording with any of
/// `yes_to`, don't know to choices, no otherwise. Returns the result page.
async fn walk_triage(app: &App, client: &Client, mut html: String, yes_to: &[&str]) -> String {
    for _ in 0..30 {
        if html.contains("What it might be") {
            return html;
        }
        let csrf = csrf_of(&html);
        let marker = r#"action="/triage/answer""#;
        let (id, state, question) = (
            field_after(&html, marker, "id"),
            field_after(&html, marker, "state"),
            field_after(&html, marker, "question"),
        );
        let legend = &html[html.find("<legend>").expect("a question")..];
        let legend = legend[..legend.find("</legend>").unwrap()].to_lowercase();
        let answer = if !html.contains(r#"name="answer" value="yes""#) {
            "unknown"
        } else if yes_to.iter().any(|w| legend.contains(w)) {
            "yes"
        } else {
            "no"
        };
        let form = [
            ("csrf", csrf.as_str()),
            ("id", id.as_str()),
            ("state", state.as_str()),
            ("question", question.as_str()),
            ("answer", answer),
        ];
        let response = client
            .post(app.url("/triage/answer"))
            .form(&form)
            .send()
            .await
            .unwrap();
        html = if response.status() == StatusCode::SEE_OTHER {
            let to = location(&response).to_owned();
            let (status, html) = app.get(client, &to).await;
            assert_eq!(status, StatusCode::OK, "{html}");
            html
        } else {
            assert_eq!(response.status(), StatusCode::OK);
            response.text().await.unwrap()
        };
    }
    panic!("no result after 30 answers: {html}");
}

#[tokio::test]
async fn the_symptom_checker_works_as_plain_forms_and_keeps_a_patients_check_for_them_alone() {
    let app = App::start().await;
    // Anonymous: everything travels in the forms; the emergency is said first.
    let anon = browser();
    let response = app
        .submit(
            &anon,
            "/triage",
            "/triage",
            &[
                ("text", "heavy pressure in my chest and I feel sweaty and sick"),
                ("age", "62"),
                ("sex", "male"),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let html = response.text().await.unwrap();
    let result = walk_triage(
        &app,
        &anon,
        html,
        &["sweat", "breath", "chest", "jaw", "arm", "sick"],
    )
    .await;
    let alert = result
        .find(r#"class="alert""#)
        .expect("the emergency is an alert");
    assert!(alert < result.find("What it might be").unwrap());
    assert!(result.contains("999"), "{result}");
    assert!(!result.contains("Book an appointment"));

    // A form without its CSRF token changes nothing.
    let refused = anon
        .post(app.url("/triage"))
        .form(&[("text", "cough"), ("age", "30"), ("sex", "male")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    // A logged-in patient's check is kept at its own address, which nobody else can open.
    let ann = browser();
    assert_eq!(
        sign_up(&app, &ann, "Ann Patient", "ann-triage@example.org")
            .await
            .status(),
        StatusCode::SEE_OTHER
    );
    let response = app
        .submit(
            &ann,
            "/triage",
            "/triage",
            &[
                ("text", "burning pain when I pee and going all the time"),
                ("sex", "female"),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let own = location(&response).to_owned();
    assert!(own.starts_with("/triage/"), "{own}");
    let (status, html) = app.get(&ann, &own).await;
    assert_eq!(status, StatusCode::OK);
    let result = walk_triage(&app, &ann, html, &["urin", "pee", "burn", "often", "cloudy"]).await;
    assert!(result.contains("Book an appointment"), "{result}");
    assert!(result.contains(r#"name="share" value="yes" checked"#));
    // Back reopens the last question.
    let form = [
        ("csrf", csrf_of(&result)),
        ("id", own.trim_start_matches("/triage/").to_owned()),
        ("state", String::new()),
    ];
    let response = ann
        .post(app.url("/triage/back"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (_, html) = app.get(&ann, &own).await;
    assert!(html.contains("<legend>"), "{html}");

    let bob = browser();
    assert_eq!(
        sign_up(&app, &bob, "Bob Patient", "bob-triage@example.org")
            .await
            .status(),
        StatusCode::SEE_OTHER
    );
    let (status, _) = app.get(&bob, &own).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let response = anon.get(app.url(&own)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/login");
    app.stop().await;
}
