//! The audit log. Appends go through one writer that commits them in groups: a request waits until its
//! entry is durable, but a thousand concurrent requests share a handful of commits.

use confide_domain::UserId;
use confide_domain::audit::{AuditEvent, ChainedEntry, Hash, Outcome, chain};
use confide_domain::identity::Role;
use confide_domain::policy::Grant;
use confide_domain::policy::actions::ReadAccessLog;
use std::path::PathBuf;

use sqlx::{AnyPool, Row};
use tokio::sync::{mpsc, oneshot};

use crate::read::{OwnedRow, Param};
use crate::{Result, Scope, Store, StoreError};

type Reply = oneshot::Sender<Result<i64, String>>;

enum Command {
    Append(AuditEvent, Reply),
    Flush(oneshot::Sender<()>),
}

/// The handle requests use to append; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Command>,
}

/// Most entries one commit takes; more wait for the next.
const MAX_BATCH: usize = 512;

impl AuditLog {
    /// The writer for PostgreSQL: an async task on the server's pool, taking the chain's head row lock per
    /// batch so that several servers can share one log.
    pub(crate) fn start_postgres(writer: AnyPool) -> AuditLog {
        let (tx, mut rx) = mpsc::channel(4096);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let batch = Batch::collect(first, &mut rx);
                let written = match batch.events.is_empty() {
                    true => Ok(Vec::new()),
                    false => write_batch_postgres(&writer, &batch.events).await,
                };
                batch.answer(written);
            }
        });
        AuditLog { tx }
    }

    /// The writer for SQLite: a thread of its own with a rusqlite connection to the log's file (see
    /// [`crate::audit_file`]). Each row is a direct call into SQLite instead of a round trip to a driver
    /// thread, so one writer keeps up with many requests.
    pub(crate) fn start_sqlite(log: PathBuf, database: PathBuf) -> Result<AuditLog> {
        let mut conn = rusqlite::Connection::open(&log).map_err(sqlite_error)?;
        conn.execute_batch(&format!(
            "PRAGMA busy_timeout = 10000; PRAGMA synchronous = FULL; \
             PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = {AUDIT_WAL_KEPT_BYTES};"
        ))
        .map_err(sqlite_error)?;
        let (tx, mut rx) = mpsc::channel(4096);
        spawn_checkpointer(database, tx.downgrade())?;
        std::thread::Builder::new()
            .name("confide-audit".into())
            .spawn(move || {
                let mut since_checkpoint = 0;
                while let Some(first) = rx.blocking_recv() {
                    let batch = Batch::collect(first, &mut rx);
                    since_checkpoint += batch.events.len();
                    let written = match batch.events.is_empty() {
                        true => Ok(Vec::new()),
                        false => write_batch_sqlite(&mut conn, &batch.events).map_err(sqlite_error),
                    };
                    batch.answer(written);
                    if since_checkpoint >= CHECKPOINT_EVERY {
                        since_checkpoint = match checkpoint(&conn) {
                            Ok(true) => 0,
                            // A reader of an older part of the log (an audit walk) held some of it back.
                            Ok(false) => CHECKPOINT_EVERY - CHECKPOINT_RETRY_AFTER,
                            Err(e) => {
                                tracing::warn!(error = %e, "audit log checkpoint failed");
                                CHECKPOINT_EVERY - CHECKPOINT_RETRY_AFTER
                            }
                        };
                    }
                }
            })
            .map_err(|e| StoreError::AuditUnavailable(e.to_string()))?;
        Ok(AuditLog { tx })
    }

    /// Appends an entry and returns its sequence number once it is committed.
    pub async fn append(&self, event: AuditEvent) -> Result<i64> {
        self.enqueue(event).await?.committed().await
    }

    /// Hands an entry to the writer, which places it in the chain in the order of these calls; the answer
    /// says when it is committed.
    pub async fn enqueue(&self, event: AuditEvent) -> Result<Pending> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::Append(event, reply))
            .await
            .map_err(|_| writer_stopped())?;
        Ok(Pending { answer })
    }

    /// Waits until everything appended before this call is committed.
    pub(crate) async fn shutdown(&self) {
        let (done, finished) = oneshot::channel();
        if self.tx.send(Command::Flush(done)).await.is_ok() {
            let _ = finished.await;
        }
    }
}

/// An entry handed to the writer.
#[must_use = "an entry counts only once it is committed"]
pub struct Pending {
    answer: oneshot::Receiver<Result<i64, String>>,
}

impl Pending {
    /// Waits until the entry is committed and returns its sequence number.
    pub async fn committed(self) -> Result<i64> {
        self.answer
            .await
            .map_err(|_| writer_stopped())?
            .map_err(StoreError::AuditUnavailable)
    }
}

fn writer_stopped() -> StoreError {
    StoreError::AuditUnavailable("the audit writer has stopped".into())
}

/// What the writer takes in one go: appends up to [`MAX_BATCH`], and flush requests to answer after them.
struct Batch {
    events: Vec<AuditEvent>,
    replies: Vec<Reply>,
    flushes: Vec<oneshot::Sender<()>>,
}

impl Batch {
    fn collect(first: Command, rx: &mut mpsc::Receiver<Command>) -> Batch {
        let mut batch = Batch {
            events: Vec::new(),
            replies: Vec::new(),
            flushes: Vec::new(),
        };
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Append(event, reply) => {
                    batch.events.push(event);
                    batch.replies.push(reply);
                }
                Command::Flush(done) => batch.flushes.push(done),
            }
            if batch.events.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        batch
    }

    fn answer(self, written: Result<Vec<i64>>) {
        match written {
            Ok(seqs) => {
                for (reply, seq) in self.replies.into_iter().zip(seqs) {
                    let _ = reply.send(Ok(seq));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "audit batch failed");
                for reply in self.replies {
                    let _ = reply.send(Err(e.to_string()));
                }
            }
        }
        for done in self.flushes {
            let _ = done.send(());
        }
    }
}

/// Places `events` in the chain after (`seq`, `hash`).
fn chain_all(mut seq: i64, mut hash: Hash, events: &[AuditEvent]) -> Vec<ChainedEntry> {
    events
        .iter()
        .map(|event| {
            let entry = chain(seq, hash, event.clone());
            seq = entry.seq;
            hash = entry.hash;
            entry
        })
        .collect()
}

/// Entries appended between the writer's checkpoints of the audit log, about 1 MB of rows.
const CHECKPOINT_EVERY: usize = 4096;
/// Entries appended before a checkpoint that could not copy everything is tried again.
const CHECKPOINT_RETRY_AFTER: usize = 512;
/// A write-ahead log grown past this by a burst is cut back to it once it starts over.
const AUDIT_WAL_KEPT_BYTES: u64 = 64 << 20;

/// Copies the audit log's write-ahead log back into its file, from the writer's thread between two batches
/// (after the first was answered), and says whether every frame was copied. The log starts over from its
/// beginning only when every frame in it was copied back, which a checkpoint from another thread never
/// achieves while entries keep arriving: under steady load the file would grow without end, and each
/// commit would extend it, which makes every sync also write the file system's journal.
fn checkpoint(conn: &rusqlite::Connection) -> rusqlite::Result<bool> {
    let (busy, frames, copied): (i64, i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    Ok(busy == 0 && copied == frames)
}

/// Copies the database's write-ahead log back into its file twice a second, on a connection of its own.
/// Left to SQLite, this would happen inside commits and stall the requests waiting on them; a passive
/// checkpoint never blocks a writer. It stops once the audit log is gone.
fn spawn_checkpointer(database: PathBuf, alive: mpsc::WeakSender<Command>) -> Result<()> {
    let conn = rusqlite::Connection::open(database).map_err(sqlite_error)?;
    conn.execute_batch("PRAGMA busy_timeout = 10000;")
        .map_err(sqlite_error)?;
    std::thread::Builder::new()
        .name("confide-checkpoint".into())
        .spawn(move || {
            while alive.upgrade().is_some() {
                std::thread::sleep(std::time::Duration::from_millis(500));
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
            }
        })
        .map_err(|e| StoreError::AuditUnavailable(e.to_string()))?;
    Ok(())
}

fn sqlite_error(e: rusqlite::Error) -> StoreError {
    StoreError::AuditUnavailable(e.to_string())
}

fn write_batch_sqlite(conn: &mut rusqlite::Connection, events: &[AuditEvent]) -> rusqlite::Result<Vec<i64>> {
    // IMMEDIATE takes the write lock before reading the head, so no other writer can slip in between.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let (seq, hash): (i64, String) = tx
        .prepare_cached("SELECT seq, hash FROM audit_head WHERE id = 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let hash = Hash::from_hex(&hash).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, "audit head hash".into())
    })?;
    let entries = chain_all(seq, hash, events);
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO audit_log (seq, at_ms, actor_id, actor_role, action, resource, subject_patient, outcome, \
             reason, request_id, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?;
        for entry in &entries {
            let e = &entry.event;
            insert.execute(rusqlite::params![
                entry.seq,
                e.at_ms,
                e.actor.map(|a| a.to_string()),
                e.actor_role.map(Role::as_str),
                e.action,
                e.resource,
                e.subject_patient.map(|p| p.to_string()),
                e.outcome.as_str(),
                e.reason,
                e.request_id,
                entry.prev_hash.to_hex(),
                entry.hash.to_hex(),
            ])?;
        }
    }
    if let Some(last) = entries.last() {
        tx.prepare_cached("UPDATE audit_head SET seq = ?1, hash = ?2 WHERE id = 1")?
            .execute(rusqlite::params![last.seq, last.hash.to_hex()])?;
    }
    tx.commit()?;
    Ok(entries.iter().map(|e| e.seq).collect())
}

async fn write_batch_postgres(writer: &AnyPool, events: &[AuditEvent]) -> Result<Vec<i64>> {
    let mut tx = writer.begin().await?;
    let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")
        .fetch_one(&mut *tx)
        .await?;
    let head_hash: String = head.try_get("hash")?;
    let hash = Hash::from_hex(&head_hash).ok_or_else(|| StoreError::Corrupt("audit head hash".into()))?;
    let entries = chain_all(head.try_get("seq")?, hash, events);
    // One statement per chunk rather than per entry: each statement is a round trip to the driver.
    for chunk in entries.chunks(ROWS_PER_INSERT) {
        let sql = insert_sql(chunk.len());
        let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
        for entry in chunk {
            let e = &entry.event;
            insert = insert
                .bind(entry.seq)
                .bind(e.at_ms)
                .bind(e.actor.map(|a| a.to_string()))
                .bind(e.actor_role.map(Role::as_str))
                .bind(e.action.clone())
                .bind(e.resource.clone())
                .bind(e.subject_patient.map(|p| p.to_string()))
                .bind(e.outcome.as_str())
                .bind(e.reason.clone())
                .bind(e.request_id.clone())
                .bind(entry.prev_hash.to_hex())
                .bind(entry.hash.to_hex());
        }
        insert.execute(&mut *tx).await?;
    }
    if let Some(last) = entries.last() {
        sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind(last.seq)
            .bind(last.hash.to_hex())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(entries.iter().map(|e| e.seq).collect())
}

const COLUMNS_PER_ROW: usize = 12;
/// 64 rows × 12 columns stays far below both databases' limits on bound parameters.
const ROWS_PER_INSERT: usize = 64;

/// `INSERT … VALUES ($1, …, $12), ($13, …)` for `rows` entries: only numbered placeholders, no data.
fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO audit_log (seq, at_ms, actor_id, actor_role, action, resource, subject_patient, outcome, \
         reason, request_id, prev_hash, hash) VALUES ",
    );
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        let placeholders: Vec<String> = (1..=COLUMNS_PER_ROW)
            .map(|col| format!("${}", row * COLUMNS_PER_ROW + col))
            .collect();
        sql.push('(');
        sql.push_str(&placeholders.join(", "));
        sql.push(')');
    }
    sql
}

/// One access to a patient's data by someone else, as the patient sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessEntry {
    pub seq: i64,
    pub at_ms: i64,
    pub actor: Option<UserId>,
    pub actor_name: Option<String>,
    pub actor_role: Option<Role>,
    pub action: String,
    pub outcome: Outcome,
    /// The gate's reason, or for a break-glass opening the words the clinician typed.
    pub reason: String,
}

fn chained_entry(row: &OwnedRow) -> Result<ChainedEntry> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("audit entry: {what}"));
    let hash = |col: &str| -> Result<Hash> {
        let text: String = row.try_get(col)?;
        Hash::from_hex(&text).ok_or_else(|| corrupt(col))
    };
    let outcome: String = row.try_get("outcome")?;
    Ok(ChainedEntry {
        seq: row.try_get("seq")?,
        event: AuditEvent {
            at_ms: row.try_get("at_ms")?,
            actor: row.parse_opt("actor_id")?,
            actor_role: row.parse_opt("actor_role")?,
            action: row.try_get("action")?,
            resource: row.try_get("resource")?,
            subject_patient: row.parse_opt("subject_patient")?,
            outcome: Outcome::parse(&outcome).ok_or_else(|| corrupt("outcome"))?,
            reason: row.try_get("reason")?,
            request_id: row.try_get("request_id")?,
        },
        prev_hash: hash("prev_hash")?,
        hash: hash("hash")?,
    })
}

impl Store {
    /// Who accessed the grant's patient's data, other than the patient: newest first.
    pub async fn access_log(&self, grant: &Grant<ReadAccessLog>, limit: i64) -> Result<Vec<AccessEntry>> {
        let patient = grant.patient().to_string();
        let rows = self
            .select(
                Scope {
                    actor: Some(&patient),
                    patient: Some(&patient),
                    practice: None,
                    gate_facts: false,
                },
                "SELECT a.seq, a.at_ms, a.actor_id, u.name AS actor_name, a.actor_role, a.action, a.outcome, a.reason \
             FROM audit_log a LEFT JOIN users u ON u.id = a.actor_id \
             WHERE a.subject_patient = $1 AND (a.actor_id IS NULL OR a.actor_id <> $1) \
             ORDER BY a.seq DESC LIMIT $2",
                &[Param::from(&patient), Param::from(limit)],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let outcome: String = row.try_get("outcome")?;
                Ok(AccessEntry {
                    seq: row.try_get("seq")?,
                    at_ms: row.try_get("at_ms")?,
                    actor: row.parse_opt("actor_id")?,
                    actor_name: row.try_get("actor_name")?,
                    actor_role: row.parse_opt("actor_role")?,
                    action: row.try_get("action")?,
                    outcome: Outcome::parse(&outcome)
                        .ok_or_else(|| StoreError::Corrupt("audit entry: outcome".into()))?,
                    reason: row.try_get("reason")?,
                })
            })
            .collect()
    }

    /// The recorded end of the chain.
    pub async fn audit_head(&self) -> Result<(i64, Hash)> {
        let row = self
            .select_one(
                Scope::default(),
                "SELECT seq, hash FROM audit_head WHERE id = 1",
                &[],
            )
            .await?
            .ok_or_else(|| StoreError::Corrupt("expected a row".into()))?;
        let hash: String = row.try_get("hash")?;
        Ok((
            row.try_get("seq")?,
            Hash::from_hex(&hash).ok_or_else(|| StoreError::Corrupt("audit head hash".into()))?,
        ))
    }

    /// Up to `limit` entries in chain order, after entry `after_seq` (0 for the start).
    pub async fn audit_page(&self, after_seq: i64, limit: i64) -> Result<Vec<ChainedEntry>> {
        let rows = self.select(Scope::default(), "SELECT seq, at_ms, actor_id, actor_role, action, resource, subject_patient, outcome, reason, \
             request_id, prev_hash, hash FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2", &[Param::from(after_seq), Param::from(limit)]).await?;
        rows.iter().map(chained_entry).collect()
    }

    pub async fn audit_len(&self) -> Result<i64> {
        self.unscoped_count(crate::UnscopedTable::AuditLog).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: usize) -> AuditEvent {
        AuditEvent {
            at_ms: i as i64,
            actor: None,
            actor_role: None,
            action: "patient.record.read".into(),
            resource: format!("patient:{i}"),
            subject_patient: None,
            outcome: Outcome::Allowed,
            reason: "own_record".into(),
            request_id: format!("request-{i}"),
        }
    }

    fn wal_bytes(log: &std::path::Path) -> u64 {
        std::fs::metadata(log.with_extension("db-wal")).map_or(0, |m| m.len())
    }

    #[test]
    fn after_a_checkpoint_the_log_starts_its_wal_over_instead_of_growing_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("confide.audit.db");
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;")
            .unwrap();
        conn.execute_batch(crate::audit_file::SCHEMA).unwrap();
        conn.execute(
            "INSERT INTO audit_head (id, seq, hash, log_id) VALUES (1, 0, ?1, 'test')",
            [confide_domain::audit::GENESIS.to_hex()],
        )
        .unwrap();
        let batch: Vec<_> = (0..MAX_BATCH).map(event).collect();

        for _ in 0..4 {
            write_batch_sqlite(&mut conn, &batch).unwrap();
        }
        assert!(checkpoint(&conn).unwrap());
        let before = wal_bytes(&path);
        for _ in 0..4 {
            write_batch_sqlite(&mut conn, &batch).unwrap();
        }
        // The same writes again take about as many frames, now from the start of the file; appended,
        // they would double it.
        assert!(
            wal_bytes(&path) < before * 3 / 2,
            "the WAL grew from {before} to {} bytes",
            wal_bytes(&path)
        );

        // A reader still on an older state of the log holds back the frames it may need.
        let reader = rusqlite::Connection::open(&path).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        let _: i64 = reader
            .query_row("SELECT count(*) FROM audit_log", [], |r| r.get(0))
            .unwrap();
        write_batch_sqlite(&mut conn, &batch).unwrap();
        assert!(!checkpoint(&conn).unwrap());
        drop(reader);
        assert!(checkpoint(&conn).unwrap());
        let before = wal_bytes(&path);
        for _ in 0..3 {
            write_batch_sqlite(&mut conn, &batch).unwrap();
        }
        assert!(wal_bytes(&path) < before * 3 / 2);

        // Without the checkpoint, the same writes extend it.
        let reused = wal_bytes(&path);
        for _ in 0..4 {
            write_batch_sqlite(&mut conn, &batch).unwrap();
        }
        assert!(wal_bytes(&path) > reused);
        let (seq, _): (i64, String) = conn
            .query_row("SELECT seq, hash FROM audit_head", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(seq, 16 * MAX_BATCH as i64);
    }
}
