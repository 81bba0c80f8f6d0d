//! Throughput of an authorized, audited patient-record read against a bare axum handler, over loopback
//! in one process, followed by a check that every read left an unbroken audit trail; and, as a second
//! scenario, patients booking a practice's slots under contention, followed by a check that no time was
//! booked twice.

mod booking;
mod sfu;
mod triage;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, ensure};
use axum::Router;
use axum::routing::get;
use clap::Parser;
use confide_domain::audit::{ChainVerifier, Outcome};
use confide_domain::identity::{Email, PersonName, Role};
use confide_domain::ids::NoteId;
use confide_domain::password::NewPassword;
use confide_domain::policy::{Context, NewRegistration, Principal, actions, authorize};
use confide_domain::practice::{Address, PracticeName, TimeZoneName};
use confide_domain::{PracticeId, RegistrationId, UserId};
use confide_server::{Clock, Running, ServerConfig, SystemClock};
use confide_store::testing::TestDatabase;
use confide_store::{NewPractice, NewUser, Store};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, COOKIE, HOST, HeaderValue, SET_COOKIE};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

/// The same allocator as the `confide` binary, so that Confide is measured as it runs (the bare
/// handler, in the same process, gets it too).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WARMUP: Duration = Duration::from_secs(2);
/// A response slower than this counts as an error, and its connection is replaced.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const PATIENT_EMAIL: &str = "bench.patient@confide.localhost";
const PATIENT_PASSWORD: &str = "violet-otter-sails-at-dawn";
const RECORD_READ: &str = "patient.record.read";
const TARGET_RATIO: f64 = 0.30;
/// Audit entries read per page when verifying, so memory stays bounded however long the log is.
const AUDIT_PAGE: i64 = 1000;

#[derive(Parser, Debug, Clone)]
#[command(
    about = "Audited record reads on Confide against a bare axum handler, and booking under contention, over loopback"
)]
struct Args {
    /// What to measure: audited record reads against bare axum, patients booking slots under contention, or
    /// both in turn.
    #[arg(long, value_enum, default_value_t = Scenario::Reads)]
    scenario: Scenario,
    /// Measured seconds: per target and round after a 2 s warm-up for reads; the booking window for booking.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=120))]
    seconds: u64,
    /// Rounds, each measuring the bare handler and then Confide. The machine's speed drifts over time, so
    /// the ratio reported is the median of each round's ratio of two neighbouring measurements.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=10))]
    rounds: u64,
    /// Concurrent keep-alive HTTP/1.1 connections.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1024))]
    connections: u64,
    /// Booking: patients booking at once, each logged in on its own keep-alive HTTP/1.1 connection.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1024))]
    clients: u64,
    /// Booking: clinicians at the practice, each open 08:00–20:00 every day in 10-minute slots.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    clinicians: u64,
    /// Database for Confide (`sqlite://…` or `postgres://…`); a SQLite file in a temporary directory if unset.
    #[arg(long, conflicts_with = "postgres")]
    database_url: Option<String>,
    /// Use a new PostgreSQL database on the server named by CONFIDE_TEST_DATABASE_URL, dropped afterwards.
    #[arg(long)]
    postgres: bool,
    /// SFU: concurrent 1:1 recorded calls, two synthetic str0m clients each.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=500))]
    calls: u64,
    /// SFU: worker threads, each with its own socket; one per core if unset.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=64))]
    sfu_workers: Option<u64>,
    /// SFU: threads the synthetic clients run on; one per core if unset.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=64))]
    client_threads: Option<u64>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    Reads,
    Booking,
    Sfu,
    Triage,
    All,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    // As the `confide` binary does, so that Confide is measured as it runs.
    if let Err(e) = confide_media::sfu::driver::disable_transparent_huge_pages() {
        eprintln!(
            "warning: could not turn off transparent huge pages ({e}); SFU latency will show their faults"
        );
    }
    let mut passed = true;
    if matches!(args.scenario, Scenario::Reads | Scenario::All) {
        // Two targets of warm-up plus measurement, and room for seeding, draining and the audit walk: a hung
        // server ends the bench rather than stalling CI.
        let rounds = u32::try_from(args.rounds).unwrap_or(1);
        let budget = 2 * rounds * (WARMUP + Duration::from_secs(args.seconds)) + Duration::from_secs(180);
        passed &= tokio::time::timeout(budget, run(args.clone()))
            .await
            .map_err(|_| anyhow!("the bench overran its {} s budget", budget.as_secs()))??;
    }
    if matches!(args.scenario, Scenario::Booking | Scenario::All) {
        let budget = booking::budget(&args);
        passed &= tokio::time::timeout(budget, booking::run(&args))
            .await
            .map_err(|_| anyhow!("the booking bench overran its {} s budget", budget.as_secs()))??;
    }
    if matches!(args.scenario, Scenario::Sfu | Scenario::All) {
        let budget = sfu::budget(&args);
        passed &= tokio::time::timeout(budget, sfu::run(&args))
            .await
            .map_err(|_| anyhow!("the SFU bench overran its {} s budget", budget.as_secs()))??;
    }
    if matches!(args.scenario, Scenario::Triage | Scenario::All) {
        passed &= triage::run()?;
    }
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The reads scenario; `Ok(false)` if a read went unaudited or the audit chain is broken.
async fn run(args: Args) -> anyhow::Result<bool> {
    let load = Load {
        connections: args.connections as usize,
        measure: Duration::from_secs(args.seconds),
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "bench: {} connections, {} rounds of {} s warm-up + {} s measured per target, {cores} cores, loopback",
        load.connections,
        args.rounds,
        WARMUP.as_secs(),
        args.seconds
    );

    // Made first, so that a misconfigured server fails at once; kept until the end, as dropping it
    // removes the database.
    let postgres = if args.postgres {
        Some(
            TestDatabase::postgres()
                .await
                .ok_or_else(|| anyhow!("--postgres needs {}", confide_store::testing::POSTGRES_VAR))?,
        )
    } else {
        None
    };
    let database_url = args
        .database_url
        .or_else(|| postgres.as_ref().map(|db| db.url.clone()));
    let (bare_target, bare_server) = start_bare().await?;
    let dir = tempfile::tempdir()?;
    let mut config = ServerConfig::embedded(dir.path().to_path_buf(), "127.0.0.1:0".parse()?);
    config.database_url = database_url;
    let running = confide_server::spawn(config, Arc::new(SystemClock)).await?;
    let url = running.state.config.database_url();
    let backend = match running.state.store.backend() {
        confide_store::Backend::Sqlite => "sqlite",
        confide_store::Backend::Postgres => "postgres",
    };
    let prepared = prepare(&running).await;
    let (patient, confide_target) = match prepared {
        Ok(p) => p,
        Err(e) => {
            running.stop().await.ok();
            return Err(e);
        }
    };

    let mut bare = Measured::default();
    let mut confide_load = Measured::default();
    let mut ratios = Vec::new();
    for round in 1..=args.rounds {
        let b = run_load(bare_target.clone(), &load).await?;
        let c = run_load(confide_target.clone(), &load).await?;
        let ratio = if b.rps() > 0.0 { c.rps() / b.rps() } else { 0.0 };
        println!("round {round}: ratio {ratio:.3}");
        println!("  {}", b.line("bare axum"));
        println!("  {}", c.line("confide"));
        ratios.push(ratio);
        bare.absorb(b);
        confide_load.absorb(c);
    }
    let _ = bare_server.send(());
    running.stop().await.context("stopping Confide")?;
    let audit = check_audit(&url, patient).await?;
    drop(postgres);
    println!("all rounds:");
    println!("  {}", bare.line("bare axum"));
    println!("  {}", confide_load.line("confide"));

    ratios.sort_by(f64::total_cmp);
    let ratio = ratios[ratios.len() / 2];
    let met = ratio >= TARGET_RATIO;
    println!(
        "ratio confide_rps / bare_rps (median of {} rounds) = {ratio:.3}; target ≥ {TARGET_RATIO:.2}: {}",
        ratios.len(),
        if met { "met" } else { "not met" }
    );

    let audit = &audit;
    let chain_intact = audit.chain_break.is_none();
    match &audit.chain_break {
        None => println!("audit chain: intact, {} entries ({})", audit.entries, backend),
        Some(e) => println!("audit chain: BROKEN: {e}"),
    }
    let reads_audited = audit.record_reads >= confide_load.ok_total;
    println!(
        "audit: {} `{RECORD_READ}` entries for the patient, {} successful record reads (incl. warm-up): {}",
        audit.record_reads,
        confide_load.ok_total,
        if reads_audited {
            "every read audited"
        } else {
            "READS MISSING FROM THE AUDIT LOG"
        }
    );
    let peak_rss_kib = peak_rss_kib();
    match peak_rss_kib {
        Some(kib) => println!("peak RSS: {:.1} MiB", kib as f64 / 1024.0),
        None => println!("peak RSS: unavailable"),
    }

    let report = json!({
        "connections": load.connections,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "round_ratios": ratios,
        "warmup_seconds": WARMUP.as_secs(),
        "cores": cores,
        "backend": backend,
        "bare": bare.json(),
        "confide": confide_load.json(),
        "ratio": ratio,
        "target_ratio": TARGET_RATIO,
        "target_met": met,
        "audit_chain_intact": chain_intact,
        "audit_entries": audit.entries,
        "audit_record_reads": audit.record_reads,
        "successful_record_reads": confide_load.ok_total,
        "every_read_audited": reads_audited,
        "peak_rss_kib": peak_rss_kib,
    });
    println!("{report}");
    Ok(chain_intact && reads_audited)
}

/// How hard and how long to push each target.
struct Load {
    connections: usize,
    measure: Duration,
}

/// The baseline: axum alone, answering with a record-sized JSON body, until the returned sender fires.
async fn start_bare() -> anyhow::Result<(Arc<Target>, tokio::sync::oneshot::Sender<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new().route("/", get(|| async { axum::Json(sample_record()) }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    Ok((Arc::new(Target::get(addr, "/", None)?), stop))
}

/// The shape of a record with two notes, built per request as a handler would.
fn sample_record() -> Value {
    let note = |body: &str, at: i64| {
        json!({
            "id": Uuid::new_v4(),
            "author_id": Uuid::new_v4(),
            "author_name": "Dr Bench",
            "body": body,
            "created_at": at,
        })
    };
    json!({
        "patient_id": Uuid::new_v4(),
        "notes": [note("Asthma review", 1_700_000_000_000), note("Inhaler renewed", 1_700_000_060_000)],
    })
}

/// Seeds a patient, logs in as them, and checks that one read of their record works.
async fn prepare(running: &Running) -> anyhow::Result<(UserId, Arc<Target>)> {
    let patient = seed(&running.state.store).await?;
    let cookie = login(running.addr, PATIENT_EMAIL, PATIENT_PASSWORD, None).await?;
    let target = Target::get(
        running.addr,
        &format!("/api/v1/patients/{patient}/record"),
        Some(cookie),
    )?;
    let first = send(&mut connect(running.addr).await?, target.request()?).await?;
    ensure!(
        first.status() == StatusCode::OK,
        "record read answered {}: {}",
        first.status(),
        String::from_utf8_lossy(first.body())
    );
    let record: Value = serde_json::from_slice(first.body())?;
    let notes = record["notes"].as_array().map_or(0, Vec::len);
    ensure!(notes == 2, "the record holds {notes} notes, expected 2");
    Ok((patient, Arc::new(target)))
}

/// One practice, one clinician, and a patient registered there with two notes, as the store tests make them.
async fn seed(store: &Store) -> anyhow::Result<UserId> {
    let now = SystemClock.now_ms();
    let mfa = Context { mfa_verified: true };
    let practice = PracticeId::from_uuid(Uuid::new_v4());
    store
        .create_practice(NewPractice {
            id: practice,
            name: &PracticeName::parse("Bench Surgery")?,
            address: &Address::parse("1 High Street")?,
            time_zone: &TimeZoneName::parse("Europe/London")?,
            at_ms: now,
        })
        .await?;
    let clinician = Principal {
        user: UserId::from_uuid(Uuid::new_v4()),
        role: Role::Clinician,
        practice: Some(practice),
    };
    store
        .create_user(NewUser {
            id: clinician.user,
            email: &Email::parse("bench.gp@confide.localhost")?,
            name: &PersonName::parse("Dr Bench")?,
            role: Role::Clinician,
            practice: Some(practice),
            password_hash: None,
            date_of_birth: None,
            at_ms: now,
        })
        .await?;
    let password = NewPassword::parse(PATIENT_PASSWORD, &[PATIENT_EMAIL])?;
    let patient = Principal {
        user: UserId::from_uuid(Uuid::new_v4()),
        role: Role::Patient,
        practice: None,
    };
    store
        .create_user(NewUser {
            id: patient.user,
            email: &Email::parse(PATIENT_EMAIL)?,
            name: &PersonName::parse("Ann Bench")?,
            role: Role::Patient,
            practice: None,
            password_hash: Some(confide_server::auth::hash_password(&password)),
            date_of_birth: Some("1980-01-02".to_owned()),
            at_ms: now,
        })
        .await?;

    let ask = authorize::<actions::RequestRegistration>(
        &patient,
        NewRegistration {
            patient: patient.user,
            practice,
        },
        &mfa,
    )
    .map_err(|d| anyhow!("registration request refused: {}", d.reason.as_str()))?;
    let registration = RegistrationId::from_uuid(Uuid::new_v4());
    store.request_registration(&ask, registration, now).await?;
    let facts = store
        .registration_ref(registration)
        .await?
        .context("the registration just requested")?;
    let decide = authorize::<actions::DecideRegistration>(&clinician, facts, &mfa)
        .map_err(|d| anyhow!("registration decision refused: {}", d.reason.as_str()))?;
    store.decide_registration(&decide, true, now).await?;

    let facts = store
        .patient_ref(patient.user)
        .await?
        .context("the patient just created")?;
    let write = authorize::<actions::WriteRecord>(&clinician, facts, &mfa)
        .map_err(|d| anyhow!("note writing refused: {}", d.reason.as_str()))?;
    for (i, body) in ["Asthma review", "Inhaler renewed"].into_iter().enumerate() {
        store
            .add_note(&write, NoteId::from_uuid(Uuid::new_v4()), body, now + i as i64)
            .await?;
    }
    Ok(patient.user)
}

/// Logs a user in, with their authenticator's code if they have one, and returns the session cookie as a
/// `Cookie` header value.
async fn login(
    addr: SocketAddr,
    email: &str,
    password: &str,
    totp: Option<&str>,
) -> anyhow::Result<HeaderValue> {
    let body = match totp {
        None => json!({ "email": email, "password": password }),
        Some(code) => json!({ "email": email, "password": password, "totp": code }),
    }
    .to_string();
    let request = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/auth/login")
        .header(HOST, addr.to_string())
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let response = send(&mut connect(addr).await?, request).await?;
    ensure!(
        response.status() == StatusCode::OK,
        "login answered {}: {}",
        response.status(),
        String::from_utf8_lossy(response.body())
    );
    let prefix = format!("{}=", confide_server::auth::SESSION_COOKIE);
    let pair = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|pair| pair.starts_with(&prefix))
        .context("login set no session cookie")?;
    Ok(HeaderValue::from_str(pair)?)
}

/// What each request of a run asks for.
struct Target {
    uri: Uri,
    host: HeaderValue,
    cookie: Option<HeaderValue>,
    addr: SocketAddr,
}

impl Target {
    fn get(addr: SocketAddr, path: &str, cookie: Option<HeaderValue>) -> anyhow::Result<Target> {
        Ok(Target {
            uri: path.parse()?,
            host: HeaderValue::from_str(&addr.to_string())?,
            cookie,
            addr,
        })
    }

    fn request(&self) -> anyhow::Result<Request<Full<Bytes>>> {
        let mut builder = Request::builder()
            .uri(self.uri.clone())
            .header(HOST, self.host.clone());
        if let Some(cookie) = &self.cookie {
            builder = builder.header(COOKIE, cookie.clone());
        }
        Ok(builder.body(Full::new(Bytes::new()))?)
    }
}

/// Opens a keep-alive HTTP/1.1 connection.
async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // The connection's own failures reach the sender as request errors, where they are counted.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// Sends one request and reads the whole response.
async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> anyhow::Result<Response<Bytes>> {
    sender.ready().await?;
    let (parts, body) = sender.send_request(request).await?.into_parts();
    Ok(Response::from_parts(parts, body.collect().await?.to_bytes()))
}

/// One target's results.
#[derive(Default)]
struct Measured {
    /// Microseconds per 200 response completed in the measured window, sorted.
    latencies_us: Vec<u32>,
    measured: Duration,
    /// The whole process's CPU use over the measured window, load generator included (200% = 2 cores).
    cpu_percent: Option<f64>,
    /// Every 200 response, warm-up included: each of them must have left an audit entry.
    ok_total: u64,
    /// Non-200 responses and failed exchanges, warm-up included.
    errors: u64,
    first_error: Option<String>,
}

impl Measured {
    fn rps(&self) -> f64 {
        self.latencies_us.len() as f64 / self.measured.as_secs_f64()
    }

    fn percentile_us(&self, q: f64) -> u32 {
        let n = self.latencies_us.len();
        if n == 0 {
            return 0;
        }
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        self.latencies_us[rank - 1]
    }

    fn max_us(&self) -> u32 {
        self.latencies_us.last().copied().unwrap_or(0)
    }

    fn line(&self, name: &str) -> String {
        let ms = |us: u32| f64::from(us) / 1000.0;
        let mut line = format!(
            "{name:<10} requests {:>8}  {:>9.1} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  max {:>8.3} ms  errors {}",
            self.latencies_us.len(),
            self.rps(),
            ms(self.percentile_us(0.50)),
            ms(self.percentile_us(0.99)),
            ms(self.max_us()),
            self.errors,
        );
        if let Some(cpu) = self.cpu_percent {
            line.push_str(&format!("  cpu {cpu:.0}%"));
        }
        if let Some(e) = &self.first_error {
            line.push_str(&format!(" (first: {e})"));
        }
        line
    }

    fn json(&self) -> Value {
        json!({
            "requests": self.latencies_us.len(),
            "rps": self.rps(),
            "p50_us": self.percentile_us(0.50),
            "p99_us": self.percentile_us(0.99),
            "max_us": self.max_us(),
            "errors": self.errors,
            "first_error": self.first_error,
            "cpu_percent": self.cpu_percent,
        })
    }

    /// Adds a whole measured window of another run: its time, and its CPU use weighted by that time.
    fn absorb(&mut self, other: Measured) {
        let before = self.measured.as_secs_f64();
        let added = other.measured.as_secs_f64();
        self.cpu_percent = match (self.cpu_percent, other.cpu_percent) {
            (Some(a), Some(b)) => Some((a * before + b * added) / (before + added)),
            (None, b) if before == 0.0 => b,
            (a, _) => a,
        };
        self.measured += other.measured;
        self.merge(other);
        self.latencies_us.sort_unstable();
    }

    fn merge(&mut self, other: Measured) {
        self.latencies_us.extend(other.latencies_us);
        self.ok_total += other.ok_total;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// The span of a run whose responses count.
#[derive(Clone, Copy)]
struct Window {
    from: Instant,
    until: Instant,
}

/// Runs `load.connections` workers through the warm-up and the measured window, and merges what they saw.
async fn run_load(target: Arc<Target>, load: &Load) -> anyhow::Result<Measured> {
    let from = Instant::now() + WARMUP;
    let window = Window {
        from,
        until: from + load.measure,
    };
    let workers: Vec<_> = (0..load.connections)
        .map(|_| tokio::spawn(worker(target.clone(), window)))
        .collect();
    tokio::time::sleep_until(window.from.into()).await;
    let cpu_from = cpu_ticks();
    tokio::time::sleep_until(window.until.into()).await;
    let cpu_percent = cpu_from
        .zip(cpu_ticks())
        .map(|(from, until)| (until - from) as f64 / USER_HZ / load.measure.as_secs_f64() * 100.0);
    let mut total = Measured {
        measured: load.measure,
        cpu_percent,
        ..Measured::default()
    };
    for worker in workers {
        total.merge(worker.await??);
    }
    total.latencies_us.sort_unstable();
    Ok(total)
}

/// One connection sending requests back to back until the window closes.
async fn worker(target: Arc<Target>, window: Window) -> anyhow::Result<Measured> {
    let mut out = Measured::default();
    let mut sender = connect(target.addr).await?;
    loop {
        let request = target.request()?;
        let sent = Instant::now();
        let result = tokio::time::timeout(REQUEST_TIMEOUT, send(&mut sender, request))
            .await
            .unwrap_or_else(|_| Err(anyhow!("no response within {} s", REQUEST_TIMEOUT.as_secs())));
        let done = Instant::now();
        match result {
            Ok(response) if response.status() == StatusCode::OK => {
                out.ok_total += 1;
                if done >= window.from && done < window.until {
                    let us = (done - sent).as_micros();
                    out.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                }
            }
            Ok(response) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| {
                    let body = String::from_utf8_lossy(response.body());
                    format!(
                        "{} {}",
                        response.status(),
                        body.chars().take(200).collect::<String>()
                    )
                });
            }
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| e.to_string());
                // A failed or abandoned exchange leaves the connection unusable; a refused reconnect ends the worker.
                sender = connect(target.addr).await?;
            }
        }
        if done >= window.until {
            return Ok(out);
        }
    }
}

struct AuditCheck {
    /// Entries that verified, up to the break if there is one.
    entries: u64,
    /// Allowed `patient.record.read` entries about the bench patient.
    record_reads: u64,
    chain_break: Option<String>,
}

/// Walks the whole audit log page by page through the chain verifier, counting the patient's record reads.
async fn check_audit(url: &str, patient: UserId) -> anyhow::Result<AuditCheck> {
    let store = Store::open(url, confide_store::Role::Owner).await?;
    let head = store.audit_head().await?;
    let mut verifier = ChainVerifier::default();
    let mut checked = 0;
    let mut record_reads = 0;
    let mut after = 0;
    let mut chain_break = None;
    'pages: loop {
        let page = store.audit_page(after, AUDIT_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for entry in &page {
            if let Err(e) = verifier.push(entry) {
                chain_break = Some(e.to_string());
                break 'pages;
            }
            checked += 1;
            let e = &entry.event;
            if e.action == RECORD_READ && e.subject_patient == Some(patient) && e.outcome == Outcome::Allowed
            {
                record_reads += 1;
            }
        }
    }
    if chain_break.is_none()
        && let Err(e) = verifier.finish(Some(head))
    {
        chain_break = Some(e.to_string());
    }
    store.close().await;
    Ok(AuditCheck {
        entries: checked,
        record_reads,
        chain_break,
    })
}

/// The process's peak resident set, from the kernel's `VmHWM`.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// The kernel reports process CPU time in these ticks per second, whatever the timer frequency.
const USER_HZ: f64 = 100.0;

/// CPU time used by this process so far (user + system), from `/proc/self/stat`.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces, so fields are counted from the `)` that closes it.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}
