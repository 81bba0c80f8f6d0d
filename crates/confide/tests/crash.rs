//! `kill -9` in the middle of a recorded call. The real `confide serve` runs as a child process; a
//! str0m peer in the patient's browser's place sends marked audio and video, each frame's send time
//! noted. The server is killed without warning, started again on the same data, and the call carries
//! on. The recording must then read back intact up to at most a second before the kill, end in a
//! cleanly detected torn tail, and go on in a new segment after the restart.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use confide_domain::consultation::{ConsultationMode, SegmentReason};
use confide_domain::identity::{Email, PersonName, Role};
use confide_domain::password::NewPassword;
use confide_domain::policy::{Context, Principal, actions, authorize};
use confide_domain::practice::{Address, PracticeName, TimeZoneName};
use confide_domain::{AppointmentId, PracticeId, Timestamp, UserId};
use confide_media::sfu::recorder::segment_path;
use confide_media::{MasterKey, SegmentError, SegmentReader, Track, WrappedKey};
use confide_server::{Clock as _, ManualClock, ServerConfig, auth};
use confide_store::{NewPractice, NewUser, Store};
use confide_testpeer::{Marker, Peer};
use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::{Value, json};
use str0m::media::MediaKind;
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_confide");
const PASSWORD: &str = "violet-otter-sails-at-dawn";
const SEED: u64 = 0x9_2020;
/// What a kill may lose at most.
const LOSS_BOUND_MS: u64 = 1000;
/// A frame of each kind every this often.
const FRAME_INTERVAL: Duration = Duration::from_millis(20);

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// An HTTP client with a cookie jar: one person's browser.
struct Browser {
    http: reqwest::Client,
    base: String,
}

impl Browser {
    fn new(base: &str) -> Browser {
        let http = reqwest::Client::builder()
            .cookie_store(true)
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        Browser {
            http,
            base: base.to_owned(),
        }
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Posts and expects `expected`; returns the body.
    async fn expect(&self, path: &str, body: Value, expected: u16) -> Value {
        let (status, body) = self.post(path, body).await;
        assert_eq!(status, expected, "POST {path}: {body}");
        body
    }

    async fn login(base: &str, email: &str, totp: Option<String>) -> Browser {
        let browser = Browser::new(base);
        browser
            .expect(
                "/api/v1/auth/login",
                json!({"email": email, "password": PASSWORD, "totp": totp}),
                200,
            )
            .await;
        browser
    }
}

/// The consultation the test makes ready for a call.
struct Seeded {
    appointment: AppointmentId,
    patient: UserId,
    patient_email: String,
}

fn london() -> TimeZone {
    TimeZone::get("Europe/London").unwrap()
}

fn at(day: Date, hour: i8, minute: i8) -> Timestamp {
    day.at(hour, minute, 0, 0).to_zoned(london()).unwrap().timestamp()
}

/// A practice, its clinician and a registered patient whose video appointment has started, made by the
/// app in this process on the data directory the binary will use, with a clock set to the appointment.
async fn seed(config: ServerConfig) -> Seeded {
    let monday = Timestamp::now()
        .to_zoned(london())
        .date()
        .checked_add(jiff::Span::new().days(14))
        .unwrap()
        .nth_weekday(1, Weekday::Monday)
        .unwrap();
    let clock = Arc::new(ManualClock::new(at(monday, 8, 0)));
    let running = confide_server::spawn(config, clock.clone()).await.unwrap();
    let store = &running.state.store;
    let at_ms = clock.now_ms();
    let practice = PracticeId::from_uuid(Uuid::new_v4());
    store
        .create_practice(NewPractice {
            id: practice,
            name: &PracticeName::parse("Crash Lane Surgery").unwrap(),
            address: &Address::parse("1 High Street, Town").unwrap(),
            time_zone: &TimeZoneName::parse("Europe/London").unwrap(),
            at_ms,
        })
        .await
        .unwrap();
    let hash = auth::hash_password(&NewPassword::parse(PASSWORD, &[]).unwrap());
    let user = |role: Role, email: &str| {
        let id = UserId::from_uuid(Uuid::new_v4());
        let email = Email::parse(email).unwrap();
        let hash = hash.clone();
        async move {
            store
                .create_user(NewUser {
                    id,
                    email: &email,
                    name: &PersonName::parse("Sam Carter").unwrap(),
                    role,
                    practice: (role == Role::Clinician).then_some(practice),
                    password_hash: Some(hash),
                    date_of_birth: (role == Role::Patient).then(|| "1984-03-14".to_owned()),
                    at_ms,
                })
                .await
                .unwrap();
            id
        }
    };
    let clinician = user(Role::Clinician, "clinician@example.org").await;
    let patient = user(Role::Patient, "patient@example.org").await;
    let secret = auth::new_totp_secret();
    store.enable_totp(clinician, &secret, &[]).await.unwrap();

    let base = running.url();
    let code = auth::totp_code(&secret, (clock.now_ms() / 1000) as u64);
    let clinician_api = Browser::login(&base, "clinician@example.org", code).await;
    let patient_api = Browser::login(&base, "patient@example.org", None).await;
    clinician_api
        .expect(
            &format!("/api/v1/clinicians/{clinician}/availability/rules"),
            json!({"weekday": 1, "start": "09:00", "end": "12:00", "slot_minutes": 15, "kinds": "either"}),
            201,
        )
        .await;
    let registration = patient_api
        .expect("/api/v1/registrations", json!({"practice_id": practice}), 201)
        .await;
    let id = registration["id"].as_str().unwrap();
    clinician_api
        .expect(&format!("/api/v1/registrations/{id}/accept"), json!({}), 200)
        .await;
    let booked = patient_api
        .expect(
            "/api/v1/appointments",
            json!({"clinician_id": clinician, "start": at(monday, 9, 0).to_string(), "kind": "video"}),
            201,
        )
        .await;
    let appointment: AppointmentId = booked["id"].as_str().unwrap().parse().unwrap();
    clock.advance(Duration::from_secs(55 * 60));
    let path = format!("/api/v1/appointments/{appointment}");
    patient_api
        .expect(&format!("{path}/check-in"), json!({}), 200)
        .await;
    clinician_api
        .expect(&format!("{path}/start"), json!({}), 200)
        .await;
    running.stop().await.unwrap();
    Seeded {
        appointment,
        patient,
        patient_email: "patient@example.org".to_owned(),
    }
}

/// A running `confide serve`; killed if the test ends without stopping it.
struct Server {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Server {
    fn start(config: &Path, log: PathBuf, url: String) -> Server {
        let file = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(BIN);
        command.arg("serve").arg("--config").arg(config);
        for (name, _) in std::env::vars() {
            if name.starts_with("CONFIDE_") {
                command.env_remove(name);
            }
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("confide serve starts");
        Server { child, url, log }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_until_healthy(&mut self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("confide serve exited with {status}:\n{}", self.output());
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
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: no shutdown, no flush, no finishing of segments.
    fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, as a service manager stops it, and a clean exit.
    async fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "did not stop:\n{}", self.output());
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let output = self.output();
        assert!(status.success(), "exited with {status}:\n{output}");
        output
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A frame sent, and when (Unix ms): what the recording is checked against.
struct Sent {
    marker: Marker,
    sent_ms: u64,
}

/// Drives `peer` for `duration`.
async fn run_for(peer: &mut Peer, duration: Duration) {
    let end = Instant::now() + duration;
    loop {
        peer.pump();
        if Instant::now() >= end {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The patient joins the call from a new peer, labelled `label` ("<call>/patient"), and it connects.
async fn join(browser: &Browser, appointment: AppointmentId, label: &str) -> Peer {
    let mut peer = Peer::new(label).await;
    let offer = peer.offer(true);
    let answer = browser
        .expect(
            &format!("/api/v1/appointments/{appointment}/call"),
            json!({"sdp": offer, "mode": "video", "consent": "given"}),
            200,
        )
        .await;
    peer.accept(answer["sdp"].as_str().expect("an answer"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !peer.connected {
        assert!(Instant::now() < deadline, "the call did not connect");
        run_for(&mut peer, Duration::from_millis(2)).await;
    }
    // The SFU's side of the connection comes up a moment after the peer's.
    run_for(&mut peer, Duration::from_millis(300)).await;
    peer
}

/// Sends an audio and a video frame every 20 ms until `until` (given the count so far) says stop;
/// returns what was sent, in order.
async fn stream(peer: &mut Peer, mut until: impl FnMut(usize) -> bool) -> Vec<Sent> {
    let mut sent = Vec::new();
    let mut next = Instant::now();
    let mut n = 0;
    while !until(sent.len()) {
        for kind in [MediaKind::Audio, MediaKind::Video] {
            let sent_ms = now_ms();
            peer.send(kind, 0, n);
            let name = if kind == MediaKind::Audio {
                "audio"
            } else {
                "video"
            };
            sent.push(Sent {
                marker: Marker {
                    label: peer.label.clone(),
                    kind: name,
                    phase: 0,
                    n,
                },
                sent_ms,
            });
        }
        n += 1;
        next += FRAME_INTERVAL;
        while Instant::now() < next {
            run_for(peer, Duration::from_millis(1)).await;
        }
    }
    sent
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp() -> SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A segment's frames as markers, and the error that ended it, if any.
fn read_segment(
    dir: &Path,
    key: &confide_media::DataKey,
    recording: Uuid,
    index: u32,
) -> (Vec<Marker>, Option<SegmentError>) {
    let path = segment_path(dir, recording, index);
    let reader = SegmentReader::open(&path, key, recording, index)
        .unwrap_or_else(|e| panic!("recording {recording} segment {index}: {e}"));
    let mut markers = Vec::new();
    for frame in reader {
        match frame {
            Ok(frame) => markers.push(Marker::of_frame(frame.track == Track::Video, &frame.payload)),
            Err(e) => return (markers, Some(e)),
        }
    }
    (markers, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_at_most_a_second_of_the_recording() {
    let mut rng = StdRng::seed_from_u64(SEED);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let master_path = dir.path().join("master.key");
    let mut master = [0u8; 32];
    rng.fill_bytes(&mut master);
    std::fs::write(&master_path, master).unwrap();
    let database = confide_store::sqlite_url(&data.join("confide.db"));

    let mut config = ServerConfig::embedded(data.clone(), "127.0.0.1:0".parse().unwrap());
    config.master_key_file = Some(master_path.clone());
    config.database_url = Some(database.clone());
    let seeded = seed(config).await;

    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let config_file = dir.path().join("confide.toml");
    std::fs::write(
        &config_file,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = {data:?}\ndatabase_url = {database:?}\n\
             master_key_file = {master_path:?}\nmedia_udp = \"{}\"\n",
            free_udp()
        ),
    )
    .unwrap();

    let mut server = Server::start(&config_file, dir.path().join("first.log"), url.clone());
    server.wait_until_healthy().await;
    let patient = Browser::login(&url, &seeded.patient_email, None).await;
    let mut peer = join(&patient, seeded.appointment, "before/patient").await;
    // Somewhere in the recorder's second seal interval or later, so the kill can land anywhere in one.
    let run_ms = rng.random_range(2000..3000);
    let started = now_ms();
    let before = stream(&mut peer, |_| now_ms() >= started + run_ms).await;
    let killed_at = now_ms();
    server.kill_9();
    drop(peer);

    let mut server = Server::start(&config_file, dir.path().join("second.log"), url.clone());
    server.wait_until_healthy().await;
    let mut peer = join(&patient, seeded.appointment, "after/patient").await;
    let after = stream(&mut peer, |sent| sent >= 50).await;
    run_for(&mut peer, Duration::from_millis(300)).await;
    drop(peer);
    let output = server.stop().await;
    assert!(!output.contains("panicked"), "{output}");

    let store = Store::open(&database, confide_store::Role::App).await.unwrap();
    let facts = store.consultation_ref(seeded.appointment).await.unwrap().unwrap();
    let principal = Principal {
        user: seeded.patient,
        role: Role::Patient,
        practice: None,
    };
    let grant =
        authorize::<actions::JoinConsultation>(&principal, facts, &Context { mfa_verified: true }).unwrap();
    let call = store.consultation_call(&grant).await.unwrap().unwrap();
    let recording = call.recording;
    let segments: Vec<_> = call
        .segments
        .iter()
        .map(|s| (s.index, s.reason, s.mode))
        .collect();
    assert_eq!(
        segments,
        [
            (0, SegmentReason::Start, ConsultationMode::Video),
            (1, SegmentReason::Restart, ConsultationMode::Video)
        ],
        "recording {recording}: the killed segment is never reused"
    );
    let wrapped = hex::decode(store.recording_key(&grant).await.unwrap().expect("a data key")).unwrap();
    store.close().await;
    let key = WrappedKey::from_bytes(&wrapped)
        .unwrap()
        .unwrap(&MasterKey::load(&master_path).unwrap(), recording.as_uuid())
        .unwrap();
    let recordings = data.join("recordings");

    // The killed segment: every sealed frame, then the torn tail, detected as such.
    let (killed, error) = read_segment(&recordings, &key, recording.as_uuid(), 0);
    let intact = match error {
        Some(SegmentError::Truncated { intact_chunks }) => intact_chunks,
        other => panic!("recording {recording} segment 0 must end in a torn tail, not {other:?}"),
    };
    assert!(
        killed.iter().all(|m| m.group() == "before"),
        "recording {recording} segment 0"
    );
    let sent_at = |m: &Marker| {
        before
            .iter()
            .find(|s| s.marker == *m)
            .unwrap_or_else(|| panic!("recording {recording} segment 0 holds {m:?}, never sent"))
            .sent_ms
    };
    let last = killed
        .iter()
        .map(sent_at)
        .max()
        .unwrap_or_else(|| panic!("recording {recording} segment 0 is empty"));
    let lost_ms = killed_at.saturating_sub(last);
    for kind in ["audio", "video"] {
        let due: Vec<u32> = before
            .iter()
            .filter(|s| s.marker.kind == kind && s.sent_ms + LOSS_BOUND_MS <= killed_at)
            .map(|s| s.marker.n)
            .collect();
        let kept: Vec<u32> = killed
            .iter()
            .filter(|m| m.kind == kind)
            .map(|m| m.n)
            .take(due.len())
            .collect();
        assert_eq!(
            kept, due,
            "recording {recording} segment 0: every {kind} frame sent more than {LOSS_BOUND_MS} ms \
             before the kill, in order (the last kept was sent {lost_ms} ms before it; {intact} \
             chunks were sealed)"
        );
    }
    assert!(
        lost_ms <= LOSS_BOUND_MS,
        "recording {recording}: the last frame kept was sent {lost_ms} ms before the kill \
         ({intact} chunks were sealed)"
    );

    // After the restart: a new segment, finished at the clean stop, holding what was sent after.
    let (resumed, error) = read_segment(&recordings, &key, recording.as_uuid(), 1);
    assert!(error.is_none(), "recording {recording} segment 1: {error:?}");
    for kind in ["audio", "video"] {
        let of_kind = |markers: &mut dyn Iterator<Item = &Marker>| -> Vec<Marker> {
            markers.filter(|m| m.kind == kind).cloned().collect()
        };
        assert_eq!(
            of_kind(&mut resumed.iter()),
            of_kind(&mut after.iter().map(|s| &s.marker)),
            "recording {recording} segment 1: every {kind} frame sent after the restart, in order"
        );
    }
    eprintln!(
        "crash: killed after {run_ms} ms of media; {} of {} frames kept in {intact} chunks; the last \
         kept was sent {lost_ms} ms before the kill",
        killed.len(),
        before.len()
    );
}
