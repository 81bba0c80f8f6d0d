//! Persistence for Confide on SQLite (the embedded default) and PostgreSQL (production), through one code
//! path on sqlx's `Any` driver. Functions that touch patient data take a [`Grant`] from the access gate;
//! on PostgreSQL they also set the grant's scope in the transaction, and row-level security hides
//! every patient row outside it.
//!
//! [`Grant`]: confide_domain::policy::Grant

mod accounts;
mod audit;
mod audit_file;
mod call_records;
mod consultations;
mod guests;
mod patients;
mod practices;
mod read;
mod recordings;
mod scheduling;
mod triage;

use std::sync::Arc;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyPool, Executor, Transaction};

pub use accounts::{Account, NewUser, OneTimeToken, SessionRecord, TokenPurpose};
pub use audit::{AccessEntry, AuditLog, Pending};
pub use audit_file::sqlite_audit_path;
pub use call_records::{ChatMessage, ConsentEntry, MAX_MESSAGE_CHARS, ReadsConsent};
pub use consultations::CallFacts;
pub use guests::{GuestLink, GuestRecord, GuestSession, LinkRefusal, NewGuest};
pub use patients::{Note, PatientProfile, PatientSummary, QueueEntry, Registration};
pub use practices::{NewPractice, Practice};
pub use recordings::{
    Erasable, PlaybackFacts, RecordingCopy, RecordingJob, RecordingStatus, RecordingSummary, RemuxFacts,
};
pub use scheduling::{
    Appointment, ClinicianSummary, Job, JobKind, NewAppointment, NewJob, NewTime, ScheduleEntry,
    StoredException, StoredRule,
};
pub use triage::{AppointmentTriage, SharedTriage, TriageRecord, TriageUpdate};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Conflict(#[from] Conflict),
    #[error("stored data is not valid: {0}")]
    Corrupt(String),
    #[error("unsupported database URL: use sqlite://PATH or postgres://…")]
    UnsupportedUrl,
    #[error("the audit log could not be written: {0}")]
    AuditUnavailable(String),
    /// A change the rules refuse, with the reason in words for the caller.
    #[error("{0}")]
    Invalid(String),
}

/// A write that the data as it stands refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("you are already registered with this practice or have asked to be")]
    RegistrationExists,
    #[error("this registration request was already decided")]
    AlreadyDecided,
    #[error("that time has just been booked by someone else")]
    SlotTaken,
    #[error("that clinician does not take bookings at this practice")]
    NotBookable,
    #[error("it is too close to the appointment to change it online: please contact the practice")]
    PastCutoff,
    #[error("check-in opens 10 minutes before the appointment and closes when it ends")]
    CheckInNotOpen,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> Result<Backend> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl)
        }
    }
}

/// Whom the store acts as on PostgreSQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The server: works as `confide_app`, subject to row-level security, and cannot edit the audit log.
    App,
    /// Maintenance from the CLI (audit verification): the connecting role itself.
    Owner,
}

/// The patient data a transaction may see, taken from a grant.
#[derive(Clone, Copy, Debug, Default)]
struct Scope<'a> {
    actor: Option<&'a str>,
    patient: Option<&'a str>,
    practice: Option<&'a str>,
    /// The gate's lookup of whose a resource is, before any grant exists.
    gate_facts: bool,
}

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    /// SQLite only: the read transaction this copy's reads share, see [`Store::snapshot`].
    snapshot: Option<Arc<read::Snapshot>>,
}

struct Inner {
    backend: Backend,
    /// sqlx's connections. On PostgreSQL they serve every read and write. On SQLite there is one, for
    /// writes: SQLite allows one writer at a time, and one connection avoids lock-upgrade failures between
    /// concurrent transactions; reads go through [`read::SqliteReaders`].
    pool: AnyPool,
    audit: AuditLog,
    sessions: accounts::SessionCache,
    /// SQLite only: synchronous readers, see [`read`].
    sqlite_readers: Option<Arc<read::SqliteReaders>>,
}

fn migrator(backend: Backend) -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("./migrations/common");
    let extra = match backend {
        Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
        Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
    };
    let mut all = migrator.migrations.into_owned();
    all.extend(extra.migrations.iter().cloned());
    all.sort_by_key(|m| m.version);
    migrator.migrations = all.into();
    migrator
}

/// Checkpoints are left to the audit log's checkpointer thread, so that no commit stalls on one.
const SQLITE_PRAGMAS: &str = "PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; PRAGMA synchronous = FULL; \
                              PRAGMA wal_autocheckpoint = 0;";

impl Store {
    /// Connects, applies migrations, and starts the audit writer.
    pub async fn open(url: &str, role: Role) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let setup = AnyPoolOptions::new().max_connections(1).connect(url).await?;
        if backend == Backend::Sqlite {
            // WAL lets readers run beside the writer; it is a property of the file, so set once.
            setup.execute("PRAGMA journal_mode = WAL").await?;
        }
        migrator(backend).run(&setup).await?;
        setup.close().await;

        let size = match backend {
            Backend::Sqlite => 1,
            Backend::Postgres => 16,
        };
        let pool = connect_pool(url, backend, role, size).await?;
        let (audit, sqlite_readers) = match backend {
            Backend::Sqlite => {
                let path = read::sqlite_path(url)?;
                let log = audit_file::prepare(&path)?;
                (
                    AuditLog::start_sqlite(log.clone(), path.clone())?,
                    Some(Arc::new(read::SqliteReaders::new(path, log))),
                )
            }
            Backend::Postgres => (AuditLog::start_postgres(pool.clone()), None),
        };
        Ok(Store {
            inner: Arc::new(Inner {
                backend,
                pool,
                audit,
                sessions: accounts::SessionCache::default(),
                sqlite_readers,
            }),
            snapshot: None,
        })
    }

    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    pub fn audit(&self) -> &AuditLog {
        &self.inner.audit
    }

    /// Waits for pending audit entries and closes every connection.
    pub async fn close(&self) {
        self.inner.audit.shutdown().await;
        self.inner.pool.close().await;
    }

    async fn begin(&self, pool: &AnyPool, scope: Scope<'_>) -> Result<Transaction<'static, Any>> {
        // On SQLite every transaction here writes: IMMEDIATE takes the write lock at the start, so a
        // transaction that reads first waits its turn (busy_timeout) instead of failing when another
        // connection, such as the audit writer's, commits between its read and its first write.
        let mut tx = match self.inner.backend {
            Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => pool.begin().await?,
        };
        if self.inner.backend == Backend::Postgres {
            sqlx::query(
                "SELECT set_config('confide.actor', $1, true), set_config('confide.patient', $2, true), \
                 set_config('confide.practice', $3, true), set_config('confide.gate_facts', $4, true)",
            )
            .bind(scope.actor.unwrap_or_default())
            .bind(scope.patient.unwrap_or_default())
            .bind(scope.practice.unwrap_or_default())
            .bind(if scope.gate_facts { "on" } else { "" })
            .execute(&mut *tx)
            .await?;
        }
        Ok(tx)
    }

    async fn write(&self, scope: Scope<'_>) -> Result<Transaction<'static, Any>> {
        self.begin(&self.inner.pool, scope).await
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<()> {
        self.select(Scope::default(), "SELECT 1 AS one", &[]).await?;
        Ok(())
    }

    /// Runs one statement outside any scope, as the tests of row-level security need.
    pub async fn unscoped_count(&self, table: UnscopedTable) -> Result<i64> {
        let sql = match table {
            UnscopedTable::Patients => "SELECT COUNT(*) AS n FROM patients",
            UnscopedTable::ClinicalNotes => "SELECT COUNT(*) AS n FROM clinical_notes",
            UnscopedTable::AuditLog => "SELECT COUNT(*) AS n FROM audit_log",
            UnscopedTable::Appointments => "SELECT COUNT(*) AS n FROM appointments",
            UnscopedTable::Recordings => "SELECT COUNT(*) AS n FROM recordings",
            UnscopedTable::RecordingBreakGlass => "SELECT COUNT(*) AS n FROM recording_break_glass",
            UnscopedTable::ConsultationMessages => "SELECT COUNT(*) AS n FROM consultation_messages",
            UnscopedTable::ConsultationConsents => "SELECT COUNT(*) AS n FROM consultation_consents",
        };
        let row = self.select_one(Scope::default(), sql, &[]).await?;
        row.map_or(Ok(0), |r| r.try_get("n"))
    }
}

/// Tables that hold patient data, for [`Store::unscoped_count`].
#[derive(Clone, Copy, Debug)]
pub enum UnscopedTable {
    Patients,
    ClinicalNotes,
    AuditLog,
    Appointments,
    Recordings,
    RecordingBreakGlass,
    ConsultationMessages,
    ConsultationConsents,
}

async fn connect_pool(url: &str, backend: Backend, role: Role, size: u32) -> Result<AnyPool> {
    let options = AnyPoolOptions::new()
        .max_connections(size)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(30))
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                match (backend, role) {
                    (Backend::Sqlite, _) => {
                        conn.execute(SQLITE_PRAGMAS).await?;
                    }
                    (Backend::Postgres, Role::App) => {
                        conn.execute("SET ROLE confide_app").await?;
                    }
                    (Backend::Postgres, Role::Owner) => {}
                }
                Ok(())
            })
        });
    Ok(options.connect(url).await?)
}

/// The URL of a SQLite database file, created if missing.
pub fn sqlite_url(path: &std::path::Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

pub mod testing;
