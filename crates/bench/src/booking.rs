//! Booking under contention: patients, each on its own keep-alive connection, race each other for a
//! practice's soonest free slots over the API; afterwards every appointment is read back from the database
//! and checked for double bookings, of which there must be none.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, ensure};
use confide_domain::identity::{Email, PersonName, Role};
use confide_domain::password::NewPassword;
use confide_domain::policy::{ClinicianRef, Context, NewRegistration, Principal, actions, authorize};
use confide_domain::practice::{Address, PracticeName, TimeZoneName};
use confide_domain::scheduling::AppointmentStatus;
use confide_domain::{PracticeId, RegistrationId, UserId};
use confide_server::{Clock, ServerConfig, SystemClock};
use confide_store::testing::TestDatabase;
use confide_store::{NewPractice, NewUser, Store};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, COOKIE, HOST, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{Args, REQUEST_TIMEOUT, connect, login, send};

const PASSWORD: &str = "violet-otter-sails-at-dawn";
/// Days of slots each fetch asks for: as far ahead as patients may book.
const DAYS_AHEAD: u32 = 28;
/// Weekly availability of every clinician, every day, in the practice's zone.
const DAY_START: &str = "08:00";
const DAY_END: &str = "20:00";
const SLOT_MINUTES: i64 = 10;
/// A client refreshes its list of free slots after this many booking attempts.
const REFETCH_EVERY: u32 = 20;
/// A client picks at random among this many of the soonest free slots it knows of, so that clients collide.
const PICK_AMONG: usize = 4;
/// Time between the last login and the start of the measured window, for the clients to connect.
const START_DELAY: Duration = Duration::from_secs(1);
/// Setup (seeding, logins with Argon2), draining and the check afterwards, beyond the measured window.
const SETUP_BUDGET: Duration = Duration::from_secs(300);

/// How long the booking scenario may take before it counts as hung.
pub(crate) fn budget(args: &Args) -> Duration {
    Duration::from_secs(args.seconds) + SETUP_BUDGET
}

/// Runs the booking scenario and reports it; `Ok(false)` if a double booking or a lost appointment was found.
pub(crate) async fn run(args: &Args) -> anyhow::Result<bool> {
    let clients = args.clients as usize;
    let clinicians = args.clinicians as usize;
    let measure = Duration::from_secs(args.seconds);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "booking: {clients} clients, {clinicians} clinicians, {} s measured, {cores} cores, loopback",
        args.seconds
    );

    // A database of its own, kept until the end as dropping it removes the database.
    let postgres = if args.postgres {
        Some(
            TestDatabase::postgres()
                .await
                .ok_or_else(|| anyhow!("--postgres needs {}", confide_store::testing::POSTGRES_VAR))?,
        )
    } else {
        None
    };
    let dir = tempfile::tempdir()?;
    let mut config = ServerConfig::embedded(dir.path().to_path_buf(), "127.0.0.1:0".parse()?);
    config.database_url = args
        .database_url
        .clone()
        .or_else(|| postgres.as_ref().map(|db| db.url.clone()));
    let running = confide_server::spawn(config, Arc::new(SystemClock)).await?;
    let url = running.state.config.database_url();
    let backend = match running.state.store.backend() {
        confide_store::Backend::Sqlite => "sqlite",
        confide_store::Backend::Postgres => "postgres",
    };
    let prepared = prepare(&running.state.store, running.addr, clinicians, clients).await;
    let seeded = match prepared {
        Ok(s) => s,
        Err(e) => {
            running.stop().await.ok();
            return Err(e);
        }
    };
    println!(
        "seeded ({backend}): {clinicians} clinicians open {DAY_START}–{DAY_END} daily in {SLOT_MINUTES}-minute slots, \
         {clients} registered patients logged in; {} free slots in the next {DAYS_AHEAD} days",
        seeded.free_at_start,
    );

    let start = Instant::now() + START_DELAY;
    let until = start + measure;
    let target = Arc::new(Booking {
        addr: running.addr,
        host: HeaderValue::from_str(&running.addr.to_string())?,
        slots_path: format!("/api/v1/practices/{}/slots?days={DAYS_AHEAD}", seeded.practice),
    });
    let tasks: Vec<_> = seeded
        .cookies
        .iter()
        .map(|cookie| tokio::spawn(client(target.clone(), cookie.clone(), start, until)))
        .collect();
    let mut total = Outcome::default();
    let mut finished = start;
    for task in tasks {
        let (outcome, done) = task.await??;
        finished = finished.max(done);
        total.merge(outcome);
    }
    let elapsed = finished
        .saturating_duration_since(start)
        .max(Duration::from_millis(1));
    running.stop().await.context("stopping Confide")?;
    let check = check_appointments(&url, seeded.practice, &seeded.clinicians).await?;
    drop(postgres);

    total.book_us.sort_unstable();
    total.booked_us.sort_unstable();
    total.slots_us.sort_unstable();
    let secs = elapsed.as_secs_f64();
    let ms = |us: u32| f64::from(us) / 1000.0;
    let bookings_per_s = total.booked as f64 / secs;
    let conflicts_per_s = total.conflicts as f64 / secs;
    println!(
        "bookings {:>7} in {secs:.2} s  {bookings_per_s:>8.1} booked/s  conflicts {} ({conflicts_per_s:.1}/s)  \
         errors {}{}",
        total.booked,
        total.conflicts,
        total.errors,
        total
            .first_error
            .as_ref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default(),
    );
    let line = |name: &str, sorted: &[u32]| {
        println!(
            "  {name:<28} {:>7}  p50 {:>8.3} ms  p99 {:>8.3} ms  max {:>8.3} ms",
            sorted.len(),
            ms(percentile(sorted, 0.50)),
            ms(percentile(sorted, 0.99)),
            ms(sorted.last().copied().unwrap_or(0)),
        )
    };
    line("booking POSTs (201 and 409)", &total.book_us);
    line("booked (201)", &total.booked_us);
    line("slot lists (GET, 28 days)", &total.slots_us);
    if total.stale > 0 {
        println!(
            "  {} attempts at a slot that had begun meanwhile (400 in_the_past), not counted as errors",
            total.stale
        );
    }
    if total.clients_out_of_slots > 0 {
        println!(
            "  {} clients stopped early: no free slots left",
            total.clients_out_of_slots
        );
    }
    let counts_match = check.appointments == total.booked;
    println!(
        "appointments in the database: {} ({} not cancelled); 201 responses: {}: {}",
        check.appointments,
        check.holding,
        total.booked,
        if counts_match { "equal" } else { "DIFFERENT" }
    );
    println!(
        "double bookings: {}{}",
        check.double_bookings,
        if check.double_bookings == 0 {
            ""
        } else {
            " — OVERLAPPING APPOINTMENTS OF ONE CLINICIAN"
        }
    );
    println!("backend: {backend}");

    let report = json!({
        "scenario": "booking",
        "backend": backend,
        "clients": clients,
        "clinicians": clinicians,
        "seconds": args.seconds,
        "elapsed_seconds": secs,
        "cores": cores,
        "free_slots_at_start": seeded.free_at_start,
        "booked": total.booked,
        "bookings_per_s": bookings_per_s,
        "conflicts": total.conflicts,
        "conflicts_per_s": conflicts_per_s,
        "booking_p50_us": percentile(&total.book_us, 0.50),
        "booking_p99_us": percentile(&total.book_us, 0.99),
        "booking_max_us": total.book_us.last().copied().unwrap_or(0),
        "booked_p50_us": percentile(&total.booked_us, 0.50),
        "booked_p99_us": percentile(&total.booked_us, 0.99),
        "booked_max_us": total.booked_us.last().copied().unwrap_or(0),
        "slot_fetches": total.slots_us.len(),
        "slots_p50_us": percentile(&total.slots_us, 0.50),
        "slots_p99_us": percentile(&total.slots_us, 0.99),
        "stale_attempts": total.stale,
        "clients_out_of_slots": total.clients_out_of_slots,
        "errors": total.errors,
        "first_error": total.first_error,
        "appointments": check.appointments,
        "appointments_not_cancelled": check.holding,
        "appointments_match_201s": counts_match,
        "double_bookings": check.double_bookings,
    });
    println!("{report}");
    Ok(check.double_bookings == 0 && counts_match)
}

/// What the clients need from the setup.
struct Seeded {
    practice: PracticeId,
    clinicians: Vec<UserId>,
    /// One session cookie per patient.
    cookies: Vec<HeaderValue>,
    free_at_start: usize,
}

/// A practice with clinicians open every day, and patients registered there and logged in.
async fn prepare(
    store: &Store,
    addr: SocketAddr,
    clinicians: usize,
    patients: usize,
) -> anyhow::Result<Seeded> {
    let now = SystemClock.now_ms();
    let mfa = Context { mfa_verified: true };
    // Every account shares one hash: Argon2 is deliberately slow.
    let hash = confide_server::auth::hash_password(&NewPassword::parse(PASSWORD, &[])?);
    let tag = &Uuid::new_v4().simple().to_string()[..8];
    let practice = PracticeId::from_uuid(Uuid::new_v4());
    store
        .create_practice(NewPractice {
            id: practice,
            name: &PracticeName::parse("Bench Booking Surgery")?,
            address: &Address::parse("2 High Street")?,
            time_zone: &TimeZoneName::parse("Europe/London")?,
            at_ms: now,
        })
        .await?;

    let mut staff = Vec::with_capacity(clinicians);
    for i in 1..=clinicians {
        let id = UserId::from_uuid(Uuid::new_v4());
        let email = format!("bench.booking.gp{i}.{tag}@confide.localhost");
        store
            .create_user(NewUser {
                id,
                email: &Email::parse(&email)?,
                name: &PersonName::parse(&format!("Dr Booking {i}"))?,
                role: Role::Clinician,
                practice: Some(practice),
                password_hash: Some(hash.clone()),
                date_of_birth: None,
                at_ms: now,
            })
            .await?;
        let secret = confide_server::auth::new_totp_secret();
        store.enable_totp(id, &secret, &[]).await?;
        staff.push((id, email, secret));
    }
    let decider = Principal {
        user: staff[0].0,
        role: Role::Clinician,
        practice: Some(practice),
    };

    let mut emails = Vec::with_capacity(patients);
    for i in 1..=patients {
        let patient = Principal {
            user: UserId::from_uuid(Uuid::new_v4()),
            role: Role::Patient,
            practice: None,
        };
        let email = format!("bench.booking.p{i}.{tag}@confide.localhost");
        store
            .create_user(NewUser {
                id: patient.user,
                email: &Email::parse(&email)?,
                name: &PersonName::parse(&format!("Patient Booking {i}"))?,
                role: Role::Patient,
                practice: None,
                password_hash: Some(hash.clone()),
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
        let decide = authorize::<actions::DecideRegistration>(&decider, facts, &mfa)
            .map_err(|d| anyhow!("registration decision refused: {}", d.reason.as_str()))?;
        store.decide_registration(&decide, true, now).await?;
        emails.push(email);
    }

    // Each clinician sets their own week over the API, logged in with their second factor.
    let host = HeaderValue::from_str(&addr.to_string())?;
    for (id, email, secret) in &staff {
        let now_secs = SystemClock.now_ms() as u64 / 1000;
        let code = confide_server::auth::totp_code(secret, now_secs).context("a TOTP code")?;
        let cookie = login(addr, email, PASSWORD, Some(&code)).await?;
        let mut sender = connect(addr).await?;
        for weekday in 1..=7 {
            let rule = json!({
                "weekday": weekday,
                "start": DAY_START,
                "end": DAY_END,
                "slot_minutes": SLOT_MINUTES,
                "kinds": "either",
            });
            let path = format!("/api/v1/clinicians/{id}/availability/rules");
            let response = send(
                &mut sender,
                request(Method::POST, &path, &host, &cookie, Some(&rule))?,
            )
            .await?;
            ensure!(
                response.status() == StatusCode::CREATED,
                "adding an availability rule answered {}: {}",
                response.status(),
                String::from_utf8_lossy(response.body())
            );
        }
    }

    // Patients log in together: the server checks their passwords on its blocking pool.
    let logins: Vec<_> = emails
        .into_iter()
        .map(|email| tokio::spawn(async move { login(addr, &email, PASSWORD, None).await }))
        .collect();
    let mut cookies = Vec::with_capacity(patients);
    for l in logins {
        cookies.push(l.await??);
    }

    let path = format!("/api/v1/practices/{practice}/slots?days={DAYS_AHEAD}");
    let first = send(
        &mut connect(addr).await?,
        request(Method::GET, &path, &host, &cookies[0], None)?,
    )
    .await?;
    ensure!(
        first.status() == StatusCode::OK,
        "listing free slots answered {}: {}",
        first.status(),
        String::from_utf8_lossy(first.body())
    );
    let free_at_start = parse_slots(first.body())?.len();
    ensure!(free_at_start > 0, "the practice shows no free slots");
    Ok(Seeded {
        practice,
        clinicians: staff.into_iter().map(|(id, _, _)| id).collect(),
        cookies,
        free_at_start,
    })
}

/// A request to Confide as a logged-in user, with a JSON body if given.
fn request(
    method: Method,
    path: &str,
    host: &HeaderValue,
    cookie: &HeaderValue,
    body: Option<&Value>,
) -> anyhow::Result<Request<Full<Bytes>>> {
    let builder = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, host.clone())
        .header(COOKIE, cookie.clone());
    Ok(match body {
        Some(body) => builder
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))?,
        None => builder.body(Full::new(Bytes::new()))?,
    })
}

/// A free slot as a client knows it: enough to ask for it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Choice {
    clinician_id: String,
    start: String,
}

fn choices(slots: &Value) -> anyhow::Result<Vec<Choice>> {
    slots
        .as_array()
        .context("a list of slots")?
        .iter()
        .map(|s| {
            Ok(Choice {
                clinician_id: s["clinician_id"]
                    .as_str()
                    .context("a slot's clinician_id")?
                    .to_owned(),
                start: s["start"].as_str().context("a slot's start")?.to_owned(),
            })
        })
        .collect()
}

fn parse_slots(body: &[u8]) -> anyhow::Result<Vec<Choice>> {
    choices(&serde_json::from_slice(body)?)
}

/// Where the clients send their requests.
struct Booking {
    addr: SocketAddr,
    host: HeaderValue,
    slots_path: String,
}

/// What the clients saw.
#[derive(Default)]
struct Outcome {
    /// 201 Created.
    booked: u64,
    /// 409 slot_taken: the race lost.
    conflicts: u64,
    /// 400 in_the_past: a slot began while the client held it in its list.
    stale: u64,
    /// Other answers and failed exchanges.
    errors: u64,
    first_error: Option<String>,
    /// Microseconds per booking POST answered 201 or 409.
    book_us: Vec<u32>,
    /// Microseconds per booking POST answered 201.
    booked_us: Vec<u32>,
    /// Microseconds per successful fetch of the free slots.
    slots_us: Vec<u32>,
    clients_out_of_slots: u64,
}

impl Outcome {
    fn merge(&mut self, other: Outcome) {
        self.booked += other.booked;
        self.conflicts += other.conflicts;
        self.stale += other.stale;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.book_us.extend(other.book_us);
        self.booked_us.extend(other.booked_us);
        self.slots_us.extend(other.slots_us);
        self.clients_out_of_slots += other.clients_out_of_slots;
    }

    fn error(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

fn describe(response: &Response<Bytes>) -> String {
    let body = String::from_utf8_lossy(response.body());
    format!(
        "{} {}",
        response.status(),
        body.chars().take(200).collect::<String>()
    )
}

/// One request with the bench's timeout; `Err` if the exchange failed and the connection must be replaced.
async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> anyhow::Result<Response<Bytes>> {
    tokio::time::timeout(REQUEST_TIMEOUT, send(sender, request))
        .await
        .unwrap_or_else(|_| Err(anyhow!("no response within {} s", REQUEST_TIMEOUT.as_secs())))
}

/// One patient on one keep-alive connection, booking back to back from `start` until `until` or until the
/// practice has no free slot left. Returns what it saw and when its last answer came.
async fn client(
    target: Arc<Booking>,
    cookie: HeaderValue,
    start: Instant,
    until: Instant,
) -> anyhow::Result<(Outcome, Instant)> {
    let mut out = Outcome::default();
    let mut rng = XorShift::new();
    let mut sender = connect(target.addr).await?;
    tokio::time::sleep_until(start.into()).await;
    let mut free: Vec<Choice> = Vec::new();
    let mut since_fetch = REFETCH_EVERY;
    while Instant::now() < until {
        if free.is_empty() || since_fetch >= REFETCH_EVERY {
            let sent = Instant::now();
            let get = request(Method::GET, &target.slots_path, &target.host, &cookie, None)?;
            match exchange(&mut sender, get).await {
                Ok(r) if r.status() == StatusCode::OK => {
                    out.slots_us.push(micros(sent.elapsed()));
                    free = parse_slots(r.body())?;
                    since_fetch = 0;
                }
                // Without a list there is nothing to book: the failure is reported, and the client stops.
                Ok(r) => {
                    out.error(format!("slots: {}", describe(&r)));
                    break;
                }
                Err(e) => {
                    out.error(format!("slots: {e}"));
                    break;
                }
            }
            if free.is_empty() {
                out.clients_out_of_slots += 1;
                break;
            }
        }
        let choice = free.remove(rng.below(free.len().min(PICK_AMONG)));
        since_fetch += 1;
        let body = json!({ "clinician_id": choice.clinician_id, "start": choice.start, "kind": "video" });
        let post = request(
            Method::POST,
            "/api/v1/appointments",
            &target.host,
            &cookie,
            Some(&body),
        )?;
        let sent = Instant::now();
        let result = exchange(&mut sender, post).await;
        let took = micros(sent.elapsed());
        match result {
            Ok(r) if r.status() == StatusCode::CREATED => {
                out.booked += 1;
                out.book_us.push(took);
                out.booked_us.push(took);
            }
            Ok(r) if r.status() == StatusCode::CONFLICT => {
                let error: Value = serde_json::from_slice(r.body()).unwrap_or_default();
                if error["error"]["code"] != "slot_taken" {
                    out.error(format!("booking: {}", describe(&r)));
                    continue;
                }
                out.conflicts += 1;
                out.book_us.push(took);
                // The alternatives offered go to the front, as a patient would look at them first.
                let next = choices(&error["error"]["next_free_slots"]).unwrap_or_default();
                free.retain(|c| !next.contains(c));
                free.splice(0..0, next);
            }
            Ok(r)
                if r.status() == StatusCode::BAD_REQUEST
                    && serde_json::from_slice::<Value>(r.body()).unwrap_or_default()["error"]["code"]
                        == "in_the_past" =>
            {
                out.stale += 1;
            }
            Ok(r) => out.error(format!("booking: {}", describe(&r))),
            Err(e) => {
                out.error(format!("booking: {e}"));
                // A failed or abandoned exchange leaves the connection unusable.
                sender = connect(target.addr).await?;
            }
        }
    }
    Ok((out, Instant::now()))
}

/// Every appointment of the practice, read back through the store.
struct AppointmentCheck {
    appointments: u64,
    /// Those that are not cancelled, and so hold their time.
    holding: u64,
    /// Pairs of time-holding appointments of one clinician that overlap.
    double_bookings: u64,
}

async fn check_appointments(
    url: &str,
    practice: PracticeId,
    clinicians: &[UserId],
) -> anyhow::Result<AppointmentCheck> {
    let store = Store::open(url, confide_store::Role::Owner).await?;
    let mfa = Context { mfa_verified: true };
    let mut check = AppointmentCheck {
        appointments: 0,
        holding: 0,
        double_bookings: 0,
    };
    for &clinician in clinicians {
        let viewer = Principal {
            user: clinician,
            role: Role::Clinician,
            practice: Some(practice),
        };
        let grant = authorize::<actions::ViewSchedule>(&viewer, ClinicianRef { clinician, practice }, &mfa)
            .map_err(|d| anyhow!("reading the schedule refused: {}", d.reason.as_str()))?;
        let entries = store.schedule(&grant, i64::MIN, i64::MAX).await?;
        check.appointments += entries.len() as u64;
        let spans: Vec<(i64, i64)> = entries
            .iter()
            .filter(|e| e.status != AppointmentStatus::Cancelled)
            .map(|e| (e.start_ms, e.end_ms))
            .collect();
        check.holding += spans.len() as u64;
        check.double_bookings += overlapping_pairs(spans);
    }
    store.close().await;
    Ok(check)
}

/// Pairs of spans `[start, end)` that overlap.
fn overlapping_pairs(mut spans: Vec<(i64, i64)>) -> u64 {
    spans.sort_unstable();
    let mut pairs = 0;
    for (i, &(_, end)) in spans.iter().enumerate() {
        // Sorted by start, so the later spans that overlap this one are the run that starts before its end.
        pairs += spans[i + 1..].iter().take_while(|(s, _)| *s < end).count() as u64;
    }
    pairs
}

/// The value at quantile `q` of sorted samples, by the nearest-rank method.
fn percentile(sorted: &[u32], q: f64) -> u32 {
    let n = sorted.len();
    if n == 0 {
        return 0;
    }
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    sorted[rank - 1]
}

/// A small xorshift generator: the choices need to differ between clients, not to be unpredictable.
struct XorShift(u64);

impl XorShift {
    fn new() -> XorShift {
        XorShift(Uuid::new_v4().as_u64_pair().0 | 1)
    }

    /// A number in `0..n`; `n` must not be 0.
    fn below(&mut self, n: usize) -> usize {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::overlapping_pairs;

    #[test]
    fn overlaps_are_counted_in_pairs() {
        assert_eq!(overlapping_pairs(vec![]), 0);
        assert_eq!(overlapping_pairs(vec![(0, 10), (10, 20), (20, 30)]), 0);
        assert_eq!(overlapping_pairs(vec![(10, 20), (0, 10), (5, 15)]), 2);
        assert_eq!(overlapping_pairs(vec![(0, 10), (0, 10), (0, 10)]), 3);
        assert_eq!(overlapping_pairs(vec![(0, 100), (10, 20), (30, 40)]), 2);
    }
}
