//! `confide demo`: Confide on an embedded database with a small world to explore, seeded at the first start
//! and reused after. The logins are printed and kept in `demo-credentials.json` in the data directory.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use confide_domain::AppointmentId;
use confide_domain::identity::{Email, PersonName, Role};
use confide_domain::ids::AvailabilityId;
use confide_domain::ids::NoteId;
use confide_domain::policy::actions::{
    BookAppointment, DecideRegistration, ManageAvailability, RequestRegistration, WriteRecord,
};
use confide_domain::policy::{
    ClinicianRef, Context, NewRegistration, PatientAtPractice, Principal, authorize,
};
use confide_domain::practice::{Address, PracticeName, TimeZoneName};
use confide_domain::scheduling::{
    AvailabilityRule, ConsultationKind, KindsOffered, SlotLength, free_slots, weekday_from_number,
};
use confide_domain::{PracticeId, RegistrationId, UserId};
use confide_server::auth;
use confide_server::{Clock, SystemClock};
use confide_store::{JobKind, NewAppointment, NewJob, NewPractice, NewUser, Practice, Store};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::{self, ConfigArgs, DEFAULT_DATA_DIR, DEFAULT_LISTEN, Env};
use crate::{admin, passphrase, serve};

const CREDENTIALS_FILE: &str = "demo-credentials.json";
/// Where the demo's call media goes unless configured otherwise or taken.
const DEMO_MEDIA_PORT: u16 = 3478;

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Directory for the SQLite database, master key, mail outbox and demo logins
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Address to listen on
    #[arg(long, value_name = "ADDR", default_value_t = DEFAULT_LISTEN)]
    listen: SocketAddr,
}

/// One demo login, as written to `demo-credentials.json`.
#[derive(Debug, Serialize, Deserialize)]
struct DemoLogin {
    role: Role,
    name: String,
    email: String,
    password: String,
    practice: Option<String>,
    /// Base32: an authenticator app or `oathtool` makes the login codes from it.
    totp_secret: Option<String>,
}

struct Person {
    name: &'static str,
    email: &'static str,
}

struct DemoPatient {
    name: &'static str,
    email: &'static str,
    date_of_birth: &'static str,
    /// Accepted by the practice; otherwise the request waits in its queue.
    registered: bool,
    totp: bool,
    notes: &'static [&'static str],
}

struct DemoPractice {
    name: &'static str,
    address: &'static str,
    time_zone: &'static str,
    admin: Person,
    clinicians: [Person; 2],
    patients: [DemoPatient; 4],
}

const PLATFORM_ADMIN: Person = Person {
    name: "Morgan Reyes",
    email: "platform.admin@confide.example",
};

const PRACTICES: [DemoPractice; 2] = [
    DemoPractice {
        name: "Riverside Surgery",
        address: "12 Mill Lane, Riverside, RV1 2AB",
        time_zone: "Europe/London",
        admin: Person {
            name: "Priya Shah",
            email: "admin@riverside.example",
        },
        clinicians: [
            Person {
                name: "Dr Helen Okafor",
                email: "h.okafor@riverside.example",
            },
            Person {
                name: "Dr Tom Lindqvist",
                email: "t.lindqvist@riverside.example",
            },
        ],
        patients: [
            DemoPatient {
                name: "Ann Lee",
                email: "ann.lee@example.org",
                date_of_birth: "1984-03-12",
                registered: true,
                totp: false,
                notes: &[
                    "New patient check. Blood pressure 128/82. Non-smoker. No regular medication.",
                    "Seasonal hay fever. Started cetirizine 10 mg once daily; review if no better in 4 weeks.",
                ],
            },
            DemoPatient {
                name: "Bilal Hussain",
                email: "bilal.hussain@example.org",
                date_of_birth: "1971-11-02",
                registered: true,
                totp: true,
                notes: &["Type 2 diabetes review. HbA1c 52 mmol/mol. Continue metformin 500 mg twice daily."],
            },
            DemoPatient {
                name: "Carys Evans",
                email: "carys.evans@example.org",
                date_of_birth: "1996-07-25",
                registered: true,
                totp: false,
                notes: &[
                    "Sprained right ankle playing netball. Rest, ice, compression; physiotherapy referral.",
                ],
            },
            DemoPatient {
                name: "Dmitri Volkov",
                email: "dmitri.volkov@example.org",
                date_of_birth: "1958-01-30",
                registered: false,
                totp: false,
                notes: &[],
            },
        ],
    },
    DemoPractice {
        name: "Hillview Medical Centre",
        address: "3 Hill Road, Hillview, HV4 5CD",
        time_zone: "Europe/London",
        admin: Person {
            name: "Gareth Price",
            email: "admin@hillview.example",
        },
        clinicians: [
            Person {
                name: "Dr Amara Nwosu",
                email: "a.nwosu@hillview.example",
            },
            Person {
                name: "Dr Sofia Marin",
                email: "s.marin@hillview.example",
            },
        ],
        patients: [
            DemoPatient {
                name: "Elena Rossi",
                email: "elena.rossi@example.org",
                date_of_birth: "1989-05-17",
                registered: true,
                totp: true,
                notes: &[
                    "Antenatal booking at 9 weeks. Folic acid advised. Routine bloods requested.",
                    "Bloods normal. Midwife appointment booked.",
                ],
            },
            DemoPatient {
                name: "Farid Haddad",
                email: "farid.haddad@example.org",
                date_of_birth: "1965-09-08",
                registered: true,
                totp: false,
                notes: &[
                    "Asthma review. Inhaler technique good. Continue beclometasone 100 micrograms twice daily.",
                ],
            },
            DemoPatient {
                name: "Grace Mbeki",
                email: "grace.mbeki@example.org",
                date_of_birth: "2001-12-04",
                registered: true,
                totp: false,
                notes: &[
                    "Low mood for two months. PHQ-9 score 11. Self-referral to talking therapies discussed.",
                ],
            },
            DemoPatient {
                name: "Hamish Campbell",
                email: "hamish.campbell@example.org",
                date_of_birth: "1977-04-21",
                registered: false,
                totp: false,
                notes: &[],
            },
        ],
    },
];

pub async fn run(args: DemoArgs, env: Env<'_>) -> Result<()> {
    let flags = ConfigArgs {
        config: None,
        data_dir: Some(args.data_dir),
    };
    let mut config = config::resolve(&flags, Some(args.listen), env)?;
    if config.media_udp.port() == 0 {
        config.media_udp = demo_media_udp(config.media_udp.ip());
    }
    let data_dir = config.data_dir.clone();
    let credentials = data_dir.join(CREDENTIALS_FILE);
    let (confide, listener) = serve::start(config).await?;
    let store = confide.state().store.clone();
    let logins = if store.count_users().await? == 0 {
        let logins = seed(&store).await.context("cannot seed the demo world")?;
        write_credentials(&credentials, &logins)?;
        Some(logins)
    } else {
        read_credentials(&credentials)?
    };
    println!(
        "\nConfide demo: {} (Ctrl-C to stop)\n",
        confide.state().config.public_url
    );
    match logins {
        Some(logins) => print_logins(&logins, &credentials),
        None => println!(
            "The data directory already has accounts but no {CREDENTIALS_FILE}: remove {} to start the demo afresh.",
            data_dir.display()
        ),
    }
    serve::run(confide, listener).await
}

/// Unless a port is configured, call media goes to the usual STUN port and the ports after it (one per
/// SFU worker, one worker per core) when they are all free, so that the addresses stay the same across
/// restarts of the demo; otherwise to any free ports.
fn demo_media_udp(ip: std::net::IpAddr) -> SocketAddr {
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let preferred = SocketAddr::from((ip, DEMO_MEDIA_PORT));
    let all_free = (0..workers).all(|i| {
        u16::try_from(i)
            .ok()
            .and_then(|i| DEMO_MEDIA_PORT.checked_add(i))
            .is_some_and(|port| std::net::UdpSocket::bind(SocketAddr::from((ip, port))).is_ok())
    });
    match all_free {
        true => preferred,
        false => SocketAddr::from((ip, 0)),
    }
}

/// Seeds practices, accounts, registrations and notes, through the same access gate as requests.
async fn seed(store: &Store) -> Result<Vec<DemoLogin>> {
    // The platform admin, then each practice with its admin, clinicians and patients.
    let steps = 1 + PRACTICES
        .iter()
        .map(|p| 1 + 1 + p.clinicians.len() + p.patients.len())
        .sum::<usize>();
    let bar = crate::progress_bar(steps as u64, "seeding the demo world");
    let mut logins = Vec::new();
    let (_, login) = account(store, Role::PlatformAdmin, &PLATFORM_ADMIN, None, None, true).await?;
    logins.push(login);
    bar.inc(1);
    for demo in &PRACTICES {
        let practice = store
            .create_practice(NewPractice {
                id: PracticeId::from_uuid(Uuid::now_v7()),
                name: &PracticeName::parse(demo.name)?,
                address: &Address::parse(demo.address)?,
                time_zone: &TimeZoneName::parse(demo.time_zone)?,
                at_ms: SystemClock.now_ms(),
            })
            .await?;
        bar.inc(1);
        let (_, login) = account(
            store,
            Role::PracticeAdmin,
            &demo.admin,
            Some(&practice),
            None,
            true,
        )
        .await?;
        logins.push(login);
        bar.inc(1);
        let mut clinicians = Vec::new();
        for person in &demo.clinicians {
            let (id, login) = account(store, Role::Clinician, person, Some(&practice), None, true).await?;
            let clinician = Principal {
                user: id,
                role: Role::Clinician,
                practice: Some(practice.id),
            };
            open_weekdays(store, &clinician).await?;
            clinicians.push(clinician);
            logins.push(login);
            bar.inc(1);
        }
        for (i, patient) in demo.patients.iter().enumerate() {
            let person = Person {
                name: patient.name,
                email: patient.email,
            };
            let (id, mut login) = account(
                store,
                Role::Patient,
                &person,
                None,
                Some(patient.date_of_birth),
                patient.totp,
            )
            .await?;
            // A patient's practice is the one they registered with or asked to.
            login.practice = Some(practice.name.clone());
            logins.push(login);
            register(store, id, &practice, patient, &clinicians[i % clinicians.len()]).await?;
            if patient.registered && i == 0 {
                book_first_free(store, id, &practice, &clinicians[0]).await?;
            }
            bar.inc(1);
        }
    }
    let event = admin::cli_event("demo.seed", "platform".to_owned(), None);
    store.audit().append(event).await?;
    bar.finish_and_clear();
    Ok(logins)
}

/// Creates an account with a generated password, and a second factor when `totp` is set.
async fn account(
    store: &Store,
    role: Role,
    person: &Person,
    practice: Option<&Practice>,
    date_of_birth: Option<&str>,
    totp: bool,
) -> Result<(UserId, DemoLogin)> {
    let password = passphrase::generate(&[person.name, person.email])?;
    let shown = password.expose().to_owned();
    let hash = tokio::task::spawn_blocking(move || auth::hash_password(&password)).await?;
    let created = store
        .create_user(NewUser {
            id: UserId::from_uuid(Uuid::now_v7()),
            email: &Email::parse(person.email)?,
            name: &PersonName::parse(person.name)?,
            role,
            practice: practice.map(|p| p.id),
            password_hash: Some(hash),
            date_of_birth: date_of_birth.map(str::to_owned),
            at_ms: SystemClock.now_ms(),
        })
        .await?;
    let totp_secret = if totp {
        let secret = auth::new_totp_secret();
        // Demo users log in with codes from the secret; the recovery codes exist only because a second
        // factor always comes with them, and are not shown.
        let recovery: Vec<String> = auth::new_recovery_codes()
            .iter()
            .map(|code| auth::token_hash(code))
            .collect();
        store.enable_totp(created.id, &secret, &recovery).await?;
        Some(secret)
    } else {
        None
    };
    let login = DemoLogin {
        role,
        name: created.name,
        email: created.email,
        password: shown,
        practice: practice.map(|p| p.name.clone()),
        totp_secret,
    };
    Ok((created.id, login))
}

/// The patient asks to join `practice`; a registered one is accepted by `clinician`, who writes the notes.
async fn register(
    store: &Store,
    patient: UserId,
    practice: &Practice,
    demo: &DemoPatient,
    clinician: &Principal,
) -> Result<()> {
    // As if each person were logged in with every factor they have.
    let ctx = Context { mfa_verified: true };
    let me = Principal {
        user: patient,
        role: Role::Patient,
        practice: None,
    };
    let on = NewRegistration {
        patient,
        practice: practice.id,
    };
    let grant = authorize::<RequestRegistration>(&me, on, &ctx).context("request registration")?;
    let id = RegistrationId::from_uuid(Uuid::now_v7());
    store
        .request_registration(&grant, id, SystemClock.now_ms())
        .await?;
    if !demo.registered {
        return Ok(());
    }
    let request = store
        .registration_ref(id)
        .await?
        .context("the registration request just made is missing")?;
    let grant = authorize::<DecideRegistration>(clinician, request, &ctx).context("accept registration")?;
    store
        .decide_registration(&grant, true, SystemClock.now_ms())
        .await?;
    let record = store
        .patient_ref(patient)
        .await?
        .context("the patient just created is missing")?;
    let grant = authorize::<WriteRecord>(clinician, record, &ctx).context("write clinical note")?;
    for body in demo.notes {
        store
            .add_note(
                &grant,
                NoteId::from_uuid(Uuid::now_v7()),
                body,
                SystemClock.now_ms(),
            )
            .await?;
    }
    Ok(())
}

/// Monday to Friday, 09:00–12:00 and 14:00–17:00 in the practice's zone, in 15-minute slots.
async fn open_weekdays(store: &Store, clinician: &Principal) -> Result<()> {
    let ctx = Context { mfa_verified: true };
    let on = ClinicianRef {
        clinician: clinician.user,
        practice: clinician.practice.context("a clinician works at a practice")?,
    };
    let grant = authorize::<ManageAvailability>(clinician, on, &ctx).context("set availability")?;
    let today = SystemClock.now().to_zoned(jiff::tz::TimeZone::UTC).date();
    for weekday in 1..=5 {
        for (start, end) in [("09:00", "12:00"), ("14:00", "17:00")] {
            let rule = AvailabilityRule::new(
                weekday_from_number(weekday)?,
                start.parse()?,
                end.parse()?,
                SlotLength::try_from(15)?,
                KindsOffered::Either,
                today,
                None,
            )?;
            store
                .add_availability_rule(
                    &grant,
                    AvailabilityId::from_uuid(Uuid::now_v7()),
                    &rule,
                    SystemClock.now_ms(),
                )
                .await?;
        }
    }
    Ok(())
}

/// Books the patient's first free video slot from tomorrow, with its confirmation email and reminders.
async fn book_first_free(
    store: &Store,
    patient: UserId,
    practice: &Practice,
    clinician: &Principal,
) -> Result<()> {
    let tz = jiff::tz::TimeZone::get(&practice.time_zone)?;
    let now = SystemClock.now();
    let from = now.checked_add(jiff::SignedDuration::from_hours(24))?;
    let until = from.checked_add(jiff::SignedDuration::from_hours(24 * 7))?;
    let rules: Vec<_> = store
        .availability(clinician.user)
        .await?
        .0
        .into_iter()
        .map(|r| r.rule)
        .collect();
    let slot = *free_slots(&tz, &rules, &[], &[], from, until)
        .first()
        .context("the demo clinician has no free slot next week")?;
    let me = Principal {
        user: patient,
        role: Role::Patient,
        practice: None,
    };
    let on = PatientAtPractice {
        patient: store
            .patient_ref(patient)
            .await?
            .context("the patient just created is missing")?,
        practice: practice.id,
    };
    let grant = authorize::<BookAppointment>(&me, on, &Context { mfa_verified: true }).context("book")?;
    let id = AppointmentId::from_uuid(Uuid::now_v7());
    let (start_ms, now_ms) = (slot.start.as_millisecond(), now.as_millisecond());
    let jobs: Vec<NewJob> = [
        (JobKind::Booked, now_ms),
        (JobKind::Reminder24h, start_ms - 24 * 3_600_000),
        (JobKind::Reminder1h, start_ms - 3_600_000),
    ]
    .into_iter()
    .filter(|(kind, at)| *kind == JobKind::Booked || *at > now_ms)
    .map(|(kind, run_at_ms)| NewJob {
        id: format!("appointment-{id}-{}-demo", kind.as_str()),
        kind,
        run_at_ms,
    })
    .collect();
    store
        .book_appointment(
            &grant,
            NewAppointment {
                id,
                clinician: clinician.user,
                start_ms,
                end_ms: slot.end.as_millisecond(),
                kind: ConsultationKind::Video,
                reason: "Follow-up of my last visit",
                at_ms: now_ms,
                jobs: &jobs,
            },
        )
        .await?;
    Ok(())
}

/// Readable by the owner only: it holds passwords.
fn write_credentials(path: &Path, logins: &[DemoLogin]) -> Result<()> {
    let json = serde_json::to_string_pretty(logins)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(json.as_bytes())?;
    file.write_all(b"\n")?;
    Ok(())
}

fn read_credentials(path: &Path) -> Result<Option<Vec<DemoLogin>>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let logins =
                serde_json::from_str(&text).with_context(|| format!("cannot read {}", path.display()))?;
            Ok(Some(logins))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn print_logins(logins: &[DemoLogin], path: &Path) {
    const HEADERS: [&str; 6] = ["ROLE", "NAME", "EMAIL", "PASSWORD", "PRACTICE", "TOTP SECRET"];
    let rows: Vec<[&str; 6]> = logins
        .iter()
        .map(|l| {
            [
                l.role.as_str(),
                &l.name,
                &l.email,
                &l.password,
                l.practice.as_deref().unwrap_or("-"),
                l.totp_secret.as_deref().unwrap_or("-"),
            ]
        })
        .collect();
    let mut widths = HEADERS.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    println!("Demo logins (also in {}):\n", path.display());
    for row in std::iter::once(&HEADERS).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("  {}", cells.join("  ").trim_end());
    }
    let waiting: Vec<String> = PRACTICES
        .iter()
        .flat_map(|p| {
            p.patients
                .iter()
                .filter(|patient| !patient.registered)
                .map(|patient| format!("{} at {}", patient.name, p.name))
        })
        .collect();
    println!(
        "\nEach practice has a patient waiting in its registration queue: {}.",
        waiting.join(", ")
    );
    println!(
        "Accounts with a TOTP secret also need a 6-digit code at login: add the secret to an authenticator \
         app, or run\n  oathtool --totp -b SECRET\n"
    );
}
