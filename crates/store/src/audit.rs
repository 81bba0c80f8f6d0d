//! The audit log. Appends go through one writer task that commits them in groups: a request waits until
//! its entry is durable, but a thousand concurrent requests share a handful of commits.

use confide_domain::UserId;
use confide_domain::audit::{AuditEvent, ChainedEntry, Hash, Outcome, chain};
use confide_domain::identity::Role;
use confide_domain::policy::Grant;
use confide_domain::policy::actions::ReadAccessLog;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};
use tokio::sync::{mpsc, oneshot};

use crate::{Backend, Result, Scope, Store, StoreError, parse_opt_col};

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
    pub(crate) fn start(writer: AnyPool, backend: Backend) -> AuditLog {
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(run(writer, backend, rx));
        AuditLog { tx }
    }

    /// Appends an entry and returns its sequence number once it is committed.
    pub async fn append(&self, event: AuditEvent) -> Result<i64> {
        let (reply, answer) = oneshot::channel();
        let closed = || StoreError::AuditUnavailable("the audit writer has stopped".into());
        self.tx
            .send(Command::Append(event, reply))
            .await
            .map_err(|_| closed())?;
        answer
            .await
            .map_err(|_| closed())?
            .map_err(StoreError::AuditUnavailable)
    }

    /// Waits until everything appended before this call is committed.
    pub(crate) async fn shutdown(&self) {
        let (done, finished) = oneshot::channel();
        if self.tx.send(Command::Flush(done)).await.is_ok() {
            let _ = finished.await;
        }
    }
}

async fn run(writer: AnyPool, backend: Backend, mut rx: mpsc::Receiver<Command>) {
    while let Some(first) = rx.recv().await {
        let mut events = Vec::new();
        let mut replies = Vec::new();
        let mut flushes = Vec::new();
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Append(event, reply) => {
                    events.push(event);
                    replies.push(reply);
                }
                Command::Flush(done) => flushes.push(done),
            }
            if events.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !events.is_empty() {
            match write_batch(&writer, backend, events).await {
                Ok(seqs) => {
                    for (reply, seq) in replies.into_iter().zip(seqs) {
                        let _ = reply.send(Ok(seq));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "audit batch failed");
                    for reply in replies {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

async fn write_batch(writer: &AnyPool, backend: Backend, events: Vec<AuditEvent>) -> Result<Vec<i64>> {
    let mut tx = writer.begin().await?;
    let head_sql = match backend {
        Backend::Postgres => "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE",
        Backend::Sqlite => "SELECT seq, hash FROM audit_head WHERE id = 1",
    };
    let head = sqlx::query(head_sql).fetch_one(&mut *tx).await?;
    let mut seq: i64 = head.try_get("seq")?;
    let head_hash: String = head.try_get("hash")?;
    let mut hash = Hash::from_hex(&head_hash).ok_or_else(|| StoreError::Corrupt("audit head hash".into()))?;
    let mut entries = Vec::with_capacity(events.len());
    for event in events {
        let entry = chain(seq, hash, event);
        seq = entry.seq;
        hash = entry.hash;
        entries.push(entry);
    }
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
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(seq)
        .bind(hash.to_hex())
        .execute(&mut *tx)
        .await?;
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
        let placeholders: Vec<String> =
            (1..=COLUMNS_PER_ROW).map(|col| format!("${}", row * COLUMNS_PER_ROW + col)).collect();
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
}

fn chained_entry(row: &AnyRow) -> Result<ChainedEntry> {
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
            actor: parse_opt_col(row, "actor_id")?,
            actor_role: parse_opt_col(row, "actor_role")?,
            action: row.try_get("action")?,
            resource: row.try_get("resource")?,
            subject_patient: parse_opt_col(row, "subject_patient")?,
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
        let mut tx = self
            .read(Scope {
                actor: Some(&patient),
                patient: Some(&patient),
                practice: None,
            })
            .await?;
        let rows = sqlx::query(
            "SELECT a.seq, a.at_ms, a.actor_id, u.name AS actor_name, a.actor_role, a.action, a.outcome \
             FROM audit_log a LEFT JOIN users u ON u.id = a.actor_id \
             WHERE a.subject_patient = $1 AND (a.actor_id IS NULL OR a.actor_id <> $1) \
             ORDER BY a.seq DESC LIMIT $2",
        )
        .bind(&patient)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.finish().await?;
        rows.iter()
            .map(|row| {
                let outcome: String = row.try_get("outcome")?;
                Ok(AccessEntry {
                    seq: row.try_get("seq")?,
                    at_ms: row.try_get("at_ms")?,
                    actor: parse_opt_col(row, "actor_id")?,
                    actor_name: row.try_get("actor_name")?,
                    actor_role: parse_opt_col(row, "actor_role")?,
                    action: row.try_get("action")?,
                    outcome: Outcome::parse(&outcome)
                        .ok_or_else(|| StoreError::Corrupt("audit entry: outcome".into()))?,
                })
            })
            .collect()
    }

    /// The recorded end of the chain.
    pub async fn audit_head(&self) -> Result<(i64, Hash)> {
        let mut tx = self.read(Scope::default()).await?;
        let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        tx.finish().await?;
        let hash: String = row.try_get("hash")?;
        Ok((
            row.try_get("seq")?,
            Hash::from_hex(&hash).ok_or_else(|| StoreError::Corrupt("audit head hash".into()))?,
        ))
    }

    /// Up to `limit` entries in chain order, after entry `after_seq` (0 for the start).
    pub async fn audit_page(&self, after_seq: i64, limit: i64) -> Result<Vec<ChainedEntry>> {
        let mut tx = self.read(Scope::default()).await?;
        let rows = sqlx::query(
            "SELECT seq, at_ms, actor_id, actor_role, action, resource, subject_patient, outcome, reason, \
             request_id, prev_hash, hash FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after_seq)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.finish().await?;
        rows.iter().map(chained_entry).collect()
    }

    pub async fn audit_len(&self) -> Result<i64> {
        self.unscoped_count(crate::UnscopedTable::AuditLog).await
    }
}
