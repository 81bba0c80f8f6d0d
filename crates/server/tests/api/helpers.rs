//! A fresh app per test, and clients that act as its users.

use std::sync::{Arc, LazyLock};

use confide_domain::identity::{Email, PersonName, Role};
use confide_domain::password::NewPassword;
use confide_domain::practice::{Address, PracticeName, TimeZoneName};
use confide_domain::{PracticeId, Timestamp, UserId};
use confide_server::{Clock, ManualClock, Running, ServerConfig, auth};
use confide_store::testing::TestDatabase;
use confide_store::{NewPractice, NewUser};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

pub const PASSWORD: &str = "violet-otter-sails-at-dawn";

/// One Argon2 hash for every seeded account: hashing is deliberately slow, and tests seed many users.
static PASSWORD_HASH: LazyLock<String> =
    LazyLock::new(|| auth::hash_password(&NewPassword::parse(PASSWORD, &[]).unwrap()));

pub struct TestApp {
    pub running: Running,
    pub clock: Arc<ManualClock>,
    pub dir: tempfile::TempDir,
    _db: Option<TestDatabase>,
}

#[derive(Clone, Debug)]
pub struct Seeded {
    pub id: UserId,
    pub email: String,
    pub role: Role,
    pub practice: Option<PracticeId>,
    pub totp_secret: Option<String>,
}

impl TestApp {
    /// The app on SQLite in a temporary data directory.
    pub async fn spawn() -> TestApp {
        Self::spawn_with(None, |_| {}).await
    }

    /// The app on `db` (PostgreSQL, for example) or on SQLite in its data directory when `None`.
    pub async fn spawn_with(db: Option<TestDatabase>, adjust: impl FnOnce(&mut ServerConfig)) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig::embedded(dir.path().to_owned(), "127.0.0.1:0".parse().unwrap());
        config.database_url = db.as_ref().map(|d| d.url.clone());
        adjust(&mut config);
        let clock = Arc::new(ManualClock::new(Timestamp::now()));
        let running = confide_server::spawn(config, clock.clone()).await.unwrap();
        TestApp {
            running,
            clock,
            dir,
            _db: db,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.url())
    }

    pub fn now_secs(&self) -> u64 {
        (self.clock.now_ms() / 1000) as u64
    }

    pub async fn stop(self) {
        self.running.stop().await.unwrap();
    }

    pub async fn practice(&self, name: &str) -> PracticeId {
        let id = PracticeId::from_uuid(Uuid::new_v4());
        self.running
            .state
            .store
            .create_practice(NewPractice {
                id,
                name: &PracticeName::parse(name).unwrap(),
                address: &Address::parse("1 High Street, Town").unwrap(),
                time_zone: &TimeZoneName::parse("Europe/London").unwrap(),
                at_ms: self.clock.now_ms(),
            })
            .await
            .unwrap();
        id
    }

    /// An account with [`PASSWORD`]; staff get an authenticator secret unless `mfa` is false.
    pub async fn user(&self, role: Role, practice: Option<PracticeId>, mfa: bool) -> Seeded {
        let id = UserId::from_uuid(Uuid::new_v4());
        let email = format!(
            "{}-{}@example.org",
            role.as_str().replace('_', "-"),
            &id.to_string()[..8]
        );
        let store = &self.running.state.store;
        store
            .create_user(NewUser {
                id,
                email: &Email::parse(&email).unwrap(),
                name: &PersonName::parse(&format!("{} {}", role.as_str(), &id.to_string()[..4])).unwrap(),
                role,
                practice,
                password_hash: Some(PASSWORD_HASH.clone()),
                date_of_birth: (role == Role::Patient).then(|| "1984-03-14".to_owned()),
                at_ms: self.clock.now_ms(),
            })
            .await
            .unwrap();
        let totp_secret = if mfa && role.requires_mfa() {
            let secret = auth::new_totp_secret();
            store.enable_totp(id, &secret, &[]).await.unwrap();
            Some(secret)
        } else {
            None
        };
        Seeded {
            id,
            email,
            role,
            practice,
            totp_secret,
        }
    }

    /// A client with no session.
    pub fn anonymous(&self) -> Client {
        Client::new(self.running.url())
    }

    /// A client logged in as `user`, with the second factor where the account has one.
    pub async fn login(&self, user: &Seeded) -> Client {
        login_at(self.running.url(), self.now_secs(), user).await
    }

    /// The emails written to the outbox so far, decoded, oldest first.
    pub fn outbox(&self) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(self.dir.path().join("outbox")) else {
            return Vec::new();
        };
        let mut files: Vec<_> = dir
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        files.sort();
        files
            .into_iter()
            .filter_map(|(_, path)| std::fs::read_to_string(path).ok())
            .map(|raw| decode_quoted_printable(&raw))
            .collect()
    }

    /// The value of `?token=` in the newest email to `to`.
    pub fn emailed_token(&self, to: &str) -> String {
        let mail = self
            .outbox()
            .into_iter()
            .rev()
            .find(|m| m.contains(to))
            .expect("an email to the address");
        let start = mail.find("token=").expect("a link with a token") + "token=".len();
        mail[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect()
    }
}

/// A client of the app at `base` logged in as `user`, with the authenticator code for `now_secs` where
/// the account has a second factor.
pub async fn login_at(base: String, now_secs: u64, user: &Seeded) -> Client {
    let client = Client::new(base);
    let totp = user
        .totp_secret
        .as_ref()
        .map(|s| auth::totp_code(s, now_secs).unwrap());
    let (status, body) = client
        .post(
            "/api/v1/auth/login",
            json!({"email": user.email, "password": PASSWORD, "totp": totp}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "login of {}: {body}", user.email);
    client
}

/// Undoes quoted-printable soft line breaks and escapes, enough to read links in test emails.
fn decode_quoted_printable(raw: &str) -> String {
    let joined = raw.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&joined[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An HTTP client with its own cookie jar: one person's browser.
pub struct Client {
    pub http: reqwest::Client,
    base: String,
}

impl Client {
    pub fn new(base: String) -> Client {
        let http = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Client { http, base }
    }

    async fn finish(response: reqwest::Response) -> (StatusCode, Value) {
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        Self::finish(
            self.http
                .get(format!("{}{path}", self.base))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        Self::finish(
            self.http
                .post(format!("{}{path}", self.base))
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        Self::finish(
            self.http
                .put(format!("{}{path}", self.base))
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        Self::finish(
            self.http
                .delete(format!("{}{path}", self.base))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Only the status of a streaming answer (server-sent events), or the whole body of an error.
    pub async fn open_stream(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        if response.status().is_success() {
            return (response.status(), Value::Null);
        }
        Self::finish(response).await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        Self::finish(response).await
    }
}

/// The body every denied or unknown resource gets.
pub fn not_found_body() -> Value {
    json!({"error": {"code": "not_found", "message": "Not found."}})
}

/// Asks `practice` to register `patient` and has `staff` accept; returns the registration id.
pub async fn register(patient: &Client, staff: &Client, practice: PracticeId) -> String {
    let (status, body) = patient
        .post("/api/v1/registrations", json!({"practice_id": practice}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let (status, body) = staff
        .post(&format!("/api/v1/registrations/{id}/accept"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    id
}

pub fn london() -> jiff::tz::TimeZone {
    jiff::tz::TimeZone::get("Europe/London").unwrap()
}

/// The instant of `hour:minute` on `day` in London.
pub fn at(day: jiff::civil::Date, hour: i8, minute: i8) -> jiff::Timestamp {
    day.at(hour, minute, 0, 0).to_zoned(london()).unwrap().timestamp()
}

/// Moves a manual clock forward to `to`: it has no setter.
pub fn set_clock(clock: &ManualClock, to: jiff::Timestamp) {
    let ms = to.as_millisecond() - clock.now_ms();
    assert!(ms >= 0, "the clock only moves forward");
    clock.advance(std::time::Duration::from_millis(ms as u64));
}

/// A Monday at least two weeks ahead, in London.
pub fn next_monday() -> jiff::civil::Date {
    jiff::Timestamp::now()
        .to_zoned(london())
        .date()
        .checked_add(jiff::Span::new().days(14))
        .unwrap()
        .nth_weekday(1, jiff::civil::Weekday::Monday)
        .unwrap()
}
