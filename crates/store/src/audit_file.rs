//! On SQLite the audit log lives in a file of its own beside the database: `confide.db` keeps its log in
//! `confide.audit.db`. Every commit to a SQLite file makes each of that file's readers drop its page cache
//! at its next read, and the log takes a commit every few milliseconds; kept apart, those commits no
//! longer empty the caches that reads of patient data use.
//!
//! The database names its log by an id stored in both files, so a log file that is deleted or replaced
//! stops the store from opening instead of starting a new, empty chain.
//!
//! Databases made before the split kept the log in their own `audit_log` and `audit_head` tables. The
//! first open copies those entries into the log file and then drops the tables. The two steps are
//! separate transactions, each on one file, and each can run again after a crash.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::{Result, StoreError};

/// The migration that makes a SQLite database name its audit log file.
pub(crate) const MIGRATION: i64 = 18;

/// The audit log file of the SQLite database at `database`.
pub fn sqlite_audit_path(database: &Path) -> PathBuf {
    database.with_extension("audit.db")
}

/// The log's tables: the same columns as on PostgreSQL. `seq` is the rowid itself, so that each entry
/// writes two B-trees (rows, and entries by patient) rather than three.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit_log (
    seq             INTEGER PRIMARY KEY,
    at_ms           INTEGER NOT NULL,
    actor_id        TEXT,
    actor_role      TEXT,
    action          TEXT NOT NULL,
    resource        TEXT NOT NULL,
    subject_patient TEXT,
    outcome         TEXT NOT NULL,
    reason          TEXT NOT NULL,
    request_id      TEXT NOT NULL,
    prev_hash       TEXT NOT NULL,
    hash            TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_by_subject ON audit_log(subject_patient, seq);
CREATE TABLE IF NOT EXISTS audit_head (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    seq    INTEGER NOT NULL,
    hash   TEXT NOT NULL,
    log_id TEXT NOT NULL
);";

const COLUMNS: &str = "seq, at_ms, actor_id, actor_role, action, resource, subject_patient, outcome, reason, request_id, prev_hash, hash";

/// Checks, or on the first open makes, the audit log file of the database at `database`; returns its path.
pub(crate) fn prepare(database: &Path) -> Result<PathBuf> {
    let path = sqlite_audit_path(database);
    let mut main = Connection::open(database).map_err(unavailable)?;
    main.busy_timeout(Duration::from_secs(10)).map_err(unavailable)?;
    let linked: Option<String> = main
        .query_row("SELECT log_id FROM audit_file WHERE id = 1", [], |r| r.get(0))
        .optional()
        .map_err(unavailable)?;
    match linked {
        Some(expected) => {
            // Without CREATE: a missing log file is an error, never a new chain.
            let log = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_WRITE)
                .map_err(|e| missing(&path, &e.to_string()))?;
            let found: Option<String> = log
                .query_row("SELECT log_id FROM audit_head WHERE id = 1", [], |r| r.get(0))
                .optional()
                .map_err(|e| missing(&path, &e.to_string()))?;
            if found.as_deref() != Some(expected.as_str()) {
                return Err(missing(&path, "it is not this database's audit log"));
            }
        }
        None => {
            let log = Connection::open(&path).map_err(unavailable)?;
            log.busy_timeout(Duration::from_secs(10)).map_err(unavailable)?;
            let mode: String = log
                .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
                .map_err(unavailable)?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StoreError::AuditUnavailable(format!(
                    "{} could not be put in WAL mode",
                    path.display()
                )));
            }
            log.execute_batch(SCHEMA).map_err(unavailable)?;
            log.execute(
                "INSERT OR IGNORE INTO audit_head (id, seq, hash, log_id) VALUES (1, 0, ?1, ?2)",
                [
                    confide_domain::audit::GENESIS.to_hex(),
                    uuid::Uuid::new_v4().to_string(),
                ],
            )
            .map_err(unavailable)?;
            drop(log);
            move_old_log(&mut main, &path)?;
        }
    }
    Ok(path)
}

/// Copies the entries of the database's own log tables into the log file, then drops the tables and
/// records which log file is the database's.
fn move_old_log(main: &mut Connection, path: &Path) -> Result<()> {
    main.execute("ATTACH DATABASE ?1 AS apart", [path.to_string_lossy()])
        .map_err(unavailable)?;
    let copy = main
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(unavailable)?;
    let (copied_to, copied_hash): (i64, String) = copy
        .query_row("SELECT seq, hash FROM apart.audit_head WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .map_err(unavailable)?;
    if copied_to > 0 {
        // An earlier copy stopped by a crash: only its own entries may be in the file.
        let same: Option<String> = copy
            .query_row(
                "SELECT hash FROM main.audit_log WHERE seq = ?1",
                [copied_to],
                |r| r.get(0),
            )
            .optional()
            .map_err(unavailable)?;
        if same.as_deref() != Some(copied_hash.as_str()) {
            return Err(missing(path, "it holds another database's audit log"));
        }
    }
    copy.execute(
        &format!(
            "INSERT INTO apart.audit_log ({COLUMNS}) SELECT {COLUMNS} FROM main.audit_log WHERE seq > ?1 ORDER BY seq"
        ),
        [copied_to],
    )
    .map_err(unavailable)?;
    copy.execute(
        "UPDATE apart.audit_head SET seq = old.seq, hash = old.hash FROM main.audit_head AS old \
         WHERE apart.audit_head.id = 1 AND old.id = 1 AND old.seq > apart.audit_head.seq",
        [],
    )
    .map_err(unavailable)?;
    copy.commit().map_err(unavailable)?;

    let link = main.transaction().map_err(unavailable)?;
    link.execute_batch(
        "DROP TABLE main.audit_log; DROP TABLE main.audit_head; \
         INSERT INTO main.audit_file (id, log_id) SELECT 1, log_id FROM apart.audit_head WHERE id = 1;",
    )
    .map_err(unavailable)?;
    link.commit().map_err(unavailable)?;
    main.execute("DETACH DATABASE apart", []).map_err(unavailable)?;
    Ok(())
}

fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::AuditUnavailable(e.to_string())
}

fn missing(path: &Path, why: &str) -> StoreError {
    StoreError::AuditUnavailable(format!(
        "the audit log file {} cannot be used ({why}); restore it from a backup taken with the database",
        path.display()
    ))
}
