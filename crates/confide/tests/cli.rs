//! The `confide` binary as an operator uses it: admin commands, audit verification after tampering with
//! the database file, and the demo across a restart.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::{Connection, SqliteConnection};

const BIN: &str = env!("CARGO_BIN_EXE_confide");

/// The binary with none of the caller's CONFIDE_* settings, so that only the test's arguments count.
fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("CONFIDE_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

fn run(data: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = command(args);
    cmd.arg("--data-dir")
        .arg(data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("confide starts");
    let mut input = child.stdin.take().expect("stdin is piped");
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .expect("stdin takes the input");
    drop(input);
    child.wait_with_output().expect("confide finishes")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn succeeds(o: Output) -> String {
    assert!(
        o.status.success(),
        "expected success, got {}: {}",
        o.status,
        stderr(&o)
    );
    stdout(&o)
}

#[track_caller]
fn fails_with(o: Output, expected: &str) {
    assert!(!o.status.success(), "expected failure, got: {}", stdout(&o));
    let err = stderr(&o);
    assert!(err.contains(expected), "expected {expected:?} in: {err}");
}

/// The generated password a command printed.
fn printed_password(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("password: "))
        .unwrap_or_else(|| panic!("no password in: {out}"))
        .to_owned()
}

fn db_url(data: &Path) -> String {
    format!("sqlite://{}", data.join("confide.db").display())
}

/// The audit log's own file beside the database.
fn audit_url(data: &Path) -> String {
    let log = confide_store::sqlite_audit_path(&data.join("confide.db"));
    format!("sqlite://{}", log.display())
}

async fn password_hash(data: &Path, email: &str) -> String {
    let mut conn = SqliteConnection::connect(&db_url(data)).await.unwrap();
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE email = ?1")
        .bind(email)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    hash
}

const RIVERSIDE: [&str; 8] = [
    "admin",
    "create-practice",
    "--name",
    "Riverside Surgery",
    "--address",
    "12 Mill Lane, Riverside",
    "--time-zone",
    "Europe/London",
];

fn create_user(data: &Path, email: &str, role: &str, extra: &[&str], stdin: Option<&str>) -> Output {
    let mut args = vec![
        "admin",
        "create-user",
        "--email",
        email,
        "--name",
        "Sam Carter",
        "--role",
        role,
    ];
    args.extend_from_slice(extra);
    run(data, &args, stdin)
}

#[test]
fn admin_commands_refuse_bad_input_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let practice = |name: &str, address: &str, tz: &str| {
        run(
            data,
            &[
                "admin",
                "create-practice",
                "--name",
                name,
                "--address",
                address,
                "--time-zone",
                tz,
            ],
            None,
        )
    };
    fails_with(practice("", "1 High St", "Europe/London"), "practice name");
    fails_with(practice("Riverside", " ", "Europe/London"), "practice address");
    fails_with(
        practice("Riverside", "1 High St", "Mars/Olympus"),
        "unknown time zone",
    );
    succeeds(run(data, &RIVERSIDE, None));

    fails_with(
        create_user(data, "not-an-email", "platform_admin", &[], None),
        "email address is not valid",
    );
    fails_with(
        create_user(data, "sam@example.org", "doctor", &[], None),
        "unknown role",
    );
    fails_with(
        create_user(data, "sam@example.org", "clinician", &[], None),
        "--practice",
    );
    fails_with(
        create_user(data, "sam@example.org", "patient", &[], None),
        "--date-of-birth",
    );
    fails_with(
        create_user(
            data,
            "sam@example.org",
            "patient",
            &["--date-of-birth", "31/01/1980"],
            None,
        ),
        "YYYY-MM-DD",
    );
    fails_with(
        create_user(
            data,
            "sam@example.org",
            "clinician",
            &["--practice", "Nowhere Surgery"],
            None,
        ),
        "no practice has the id or name \"Nowhere Surgery\"",
    );
    fails_with(
        create_user(
            data,
            "sam@example.org",
            "platform_admin",
            &["--password-stdin"],
            Some("password1234\n"),
        ),
        "password is too common",
    );
    fails_with(
        run(
            data,
            &["admin", "reset-password", "--email", "nobody@example.org"],
            None,
        ),
        "no account has the email nobody@example.org",
    );
    fails_with(
        run(data, &["admin", "create-practice", "--name", "x"], None),
        "--address",
    );

    fails_with(
        run(&data.join("typo"), &["audit", "verify"], None),
        "no database at",
    );

    // None of the refusals reached the audit log: only the practice was created.
    let out = succeeds(run(data, &["audit", "verify"], None));
    assert_eq!(out.trim(), "audit log intact: 1 entries");
}

#[tokio::test]
async fn admin_commands_create_accounts_reset_passwords_and_disable() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let out = succeeds(run(data, &RIVERSIDE, None));
    assert!(
        out.starts_with("created practice Riverside Surgery (id "),
        "{out}"
    );

    let out = succeeds(create_user(
        data,
        "Sam.Carter@Riverside.example",
        "clinician",
        &["--practice", "Riverside Surgery"],
        None,
    ));
    assert!(
        out.contains("created clinician Sam Carter <sam.carter@riverside.example>"),
        "{out}"
    );
    assert!(out.contains("at Riverside Surgery"), "{out}");
    assert!(out.contains("authenticator app"), "{out}");
    let generated = printed_password(&out);
    let hash = password_hash(data, "sam.carter@riverside.example").await;
    assert!(confide_server::auth::verify_password(&generated, Some(&hash)));

    fails_with(
        create_user(
            data,
            "sam.carter@riverside.example",
            "clinician",
            &["--practice", "Riverside Surgery"],
            None,
        ),
        "already exists",
    );

    let chosen = "quiet-harbour-lamplight-07";
    let out = succeeds(create_user(
        data,
        "pat@example.org",
        "patient",
        &["--date-of-birth", "1980-02-29", "--password-stdin"],
        Some(&format!("{chosen}\n")),
    ));
    assert!(
        !out.contains("password:"),
        "a chosen password is not echoed: {out}"
    );
    let hash = password_hash(data, "pat@example.org").await;
    assert!(confide_server::auth::verify_password(chosen, Some(&hash)));

    let out = succeeds(run(
        data,
        &["admin", "reset-password", "--email", "pat@example.org"],
        None,
    ));
    let reset = printed_password(&out);
    let hash = password_hash(data, "pat@example.org").await;
    assert!(confide_server::auth::verify_password(&reset, Some(&hash)));
    assert!(!confide_server::auth::verify_password(chosen, Some(&hash)));

    let disable = ["admin", "disable-user", "--email", "pat@example.org"];
    assert!(succeeds(run(data, &disable, None)).starts_with("disabled "));
    assert!(succeeds(run(data, &disable, None)).contains("already disabled"));

    let mut conn = SqliteConnection::connect(&audit_url(data)).await.unwrap();
    let actions: Vec<(String, Option<String>, String, String)> =
        sqlx::query_as("SELECT action, actor_id, reason, request_id FROM audit_log ORDER BY seq")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    conn.close().await.unwrap();
    let cli = |action: &str| (action.to_owned(), None, "cli".to_owned(), "cli".to_owned());
    assert_eq!(
        actions,
        [
            cli("admin.create_practice"),
            cli("admin.create_user"),
            cli("admin.create_user"),
            cli("admin.reset_password"),
            cli("admin.disable_user"),
        ]
    );
}

/// A data directory whose audit log holds five entries.
fn audited_data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    succeeds(run(dir.path(), &RIVERSIDE, None));
    for n in 1..=4 {
        let email = format!("admin{n}@confide.example");
        succeeds(create_user(dir.path(), &email, "platform_admin", &[], None));
    }
    dir
}

fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.path().join(entry.file_name())).unwrap();
        }
    }
    to
}

/// Runs `tamper` on a fresh copy of `base` and returns what `audit verify` says about it.
async fn verify_after(base: &Path, tamper: &[&'static str]) -> Output {
    let copy = copy_dir(base);
    let mut conn = SqliteConnection::connect(&audit_url(copy.path())).await.unwrap();
    for sql in tamper {
        sqlx::query(*sql).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();
    run(copy.path(), &["audit", "verify"], None)
}

#[track_caller]
fn broken(o: Output, expected: &str) {
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(err.contains(expected), "expected {expected:?} in: {err}");
}

#[tokio::test]
async fn audit_verify_names_the_first_tampered_entry() {
    let base = audited_data_dir();
    let out = succeeds(run(base.path(), &["audit", "verify"], None));
    assert_eq!(out.trim(), "audit log intact: 5 entries");

    let edited = verify_after(
        base.path(),
        &["UPDATE audit_log SET reason = 'routine' WHERE seq = 3"],
    )
    .await;
    broken(edited, "entry 3 was changed");

    let removed = verify_after(base.path(), &["DELETE FROM audit_log WHERE seq = 3"]).await;
    broken(removed, "entry 3 is missing");

    let swapped = verify_after(
        base.path(),
        &[
            "UPDATE audit_log SET seq = -1 WHERE seq = 2",
            "UPDATE audit_log SET seq = 2 WHERE seq = 3",
            "UPDATE audit_log SET seq = 3 WHERE seq = -1",
        ],
    )
    .await;
    broken(swapped, "entry 2 does not follow the entry before it");

    let truncated = verify_after(base.path(), &["DELETE FROM audit_log WHERE seq = 5"]).await;
    broken(
        truncated,
        "the log ends at entry 4 but its recorded head is entry 5",
    );

    // Every tamper was done on a copy: the original still verifies.
    succeeds(run(base.path(), &["audit", "verify"], None));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `confide demo`; killed if the test ends without stopping it.
struct Demo {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Demo {
    fn start(data: &Path, logs: &Path, name: &str) -> Demo {
        let port = free_port();
        let log = logs.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = command(&["demo", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("confide demo starts");
        Demo {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_until_healthy(&mut self, client: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("confide demo exited with {status}:\n{}", self.output());
            }
            let answer = client.get(format!("{}/healthz", self.url)).send().await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not healthy within 60 s:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops it as a service manager would, with SIGTERM, and expects a clean exit.
    async fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "did not stop within 30 s:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let output = self.output();
        assert!(status.success(), "exited with {status}:\n{output}");
        output
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn new_client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn login(url: &str, login: &Value, totp: Option<String>) -> (reqwest::Client, reqwest::Response) {
    let client = new_client();
    let body = json!({ "email": login["email"], "password": login["password"], "totp": totp });
    let response = client
        .post(format!("{url}/api/v1/auth/login"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (client, response)
}

async fn get_json(client: &reqwest::Client, url: String) -> Value {
    let response = client.get(&url).send().await.unwrap();
    assert!(response.status().is_success(), "{url}: {}", response.status());
    response.json().await.unwrap()
}

#[tokio::test]
async fn the_demo_seeds_once_and_its_logins_work_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let credentials = data.join("demo-credentials.json");

    let mut demo = Demo::start(&data, dir.path(), "first");
    demo.wait_until_healthy(&new_client()).await;
    // Their 2 MiB faults stall the SFU's workers for milliseconds (see the SFU driver).
    let status = std::fs::read_to_string(format!("/proc/{}/status", demo.child.id())).unwrap();
    assert!(
        status.lines().any(|l| l == "THP_enabled:\t0"),
        "transparent huge pages are off in the server:\n{status}"
    );
    let written = std::fs::read_to_string(&credentials).unwrap();
    let logins: Vec<Value> = serde_json::from_str(&written).unwrap();
    assert_eq!(logins.len(), 15, "{written}");
    let role = |r: &'static str| logins.iter().filter(move |l| l["role"] == r);
    assert_eq!(role("platform_admin").count(), 1);
    assert_eq!(role("practice_admin").count(), 2);
    assert_eq!(role("clinician").count(), 4);
    assert_eq!(role("patient").count(), 8);
    for l in &logins {
        let keys: Vec<&str> = l.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 6, "{l}");
        for key in ["role", "name", "email", "password", "practice", "totp_secret"] {
            assert!(keys.contains(&key), "{key} missing in {l}");
        }
        assert!(l["password"].as_str().unwrap().len() >= 12);
        if l["role"] != "patient" {
            assert!(l["totp_secret"].is_string(), "staff have a second factor: {l}");
        }
        assert_eq!(l["practice"].is_null(), l["role"] == "platform_admin", "{l}");
    }
    let patients_with_totp = role("patient").filter(|l| l["totp_secret"].is_string()).count();
    assert!(
        (1..8).contains(&patients_with_totp),
        "some patients have TOTP, some not"
    );
    let first_output = demo.output();
    assert!(first_output.contains("oathtool --totp -b"), "{first_output}");
    assert!(first_output.contains(logins[0]["password"].as_str().unwrap()));

    // A patient without a second factor logs in with the password alone and sees their own record.
    let mut notes_seen = 0;
    for patient in role("patient").filter(|l| l["totp_secret"].is_null()) {
        let (client, response) = login(&demo.url, patient, None).await;
        assert!(response.status().is_success(), "{patient}: {}", response.status());
        let me = get_json(&client, format!("{}/api/v1/me", demo.url)).await;
        assert_eq!(me["email"], patient["email"]);
        assert_eq!(me["role"], "patient");
        let id = me["id"].as_str().unwrap();
        let record = get_json(&client, format!("{}/api/v1/patients/{id}/record", demo.url)).await;
        notes_seen += record["notes"].as_array().unwrap().len();
    }
    assert!(notes_seen > 0, "registered patients have clinical notes");

    // Staff need the code from their secret.
    let clinician = role("clinician").next().unwrap();
    let (_, response) = login(&demo.url, clinician, None).await;
    assert_eq!(response.status(), 401);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "mfa_required");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let code = confide_server::auth::totp_code(clinician["totp_secret"].as_str().unwrap(), now).unwrap();
    let (client, response) = login(&demo.url, clinician, Some(code)).await;
    assert!(response.status().is_success(), "{}", response.status());
    let me = get_json(&client, format!("{}/api/v1/me", demo.url)).await;
    assert_eq!(me["mfa_enrolment_required"], false);
    demo.stop().await;

    let mut demo = Demo::start(&data, dir.path(), "second");
    demo.wait_until_healthy(&new_client()).await;
    assert_eq!(
        std::fs::read_to_string(&credentials).unwrap(),
        written,
        "not reseeded"
    );
    let patient = role("patient").find(|l| l["totp_secret"].is_null()).unwrap();
    let (_, response) = login(&demo.url, patient, None).await;
    assert!(response.status().is_success(), "the same password still works");
    let second_output = demo.stop().await;
    assert!(
        second_output.contains(patient["password"].as_str().unwrap()),
        "the logins are printed again: {second_output}"
    );

    let mut conn = SqliteConnection::connect(&db_url(&data)).await.unwrap();
    let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let mut conn = SqliteConnection::connect(&audit_url(&data)).await.unwrap();
    let seeds: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'demo.seed'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    assert_eq!((users, seeds), (15, 1));
}
