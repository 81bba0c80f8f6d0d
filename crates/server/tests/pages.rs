//! The HTML pages, driven like a browser without JavaScript: cookies kept, redirects not followed.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use confide_domain::identity::{Email, PersonName, Role};
use confide_domain::password::NewPassword;
use confide_domain::practice::{Address, PracticeName, TimeZoneName};
use confide_domain::{PracticeId, UserId};
use confide_server::auth::{hash_password, new_token, new_totp_secret, totp_code};
use confide_server::{Running, ServerConfig, SystemClock};
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
        let dir = tempfile::tempdir().unwrap();
        let config = ServerConfig::embedded(dir.path().to_path_buf(), "127.0.0.1:0".parse().unwrap());
        let running = confide_server::spawn(config, Arc::new(SystemClock))
            .await
            .unwrap();
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
