//! Reading: one statement, its rows copied into memory. On PostgreSQL a read runs in a transaction that
//! carries the grant's scope for row-level security. On SQLite it runs synchronously on a pooled rusqlite
//! connection: in WAL mode readers never wait for the writer, and a read of a few indexed rows takes
//! microseconds, whereas sending it to sqlx's per-connection worker thread costs a round trip of thread
//! wake-ups per statement.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use sqlx::any::AnyRow;
use sqlx::{Column, Row};

use crate::{Backend, Result, Scope, Store, StoreError};

/// A value bound to a statement.
#[derive(Clone, Debug)]
pub(crate) enum Param {
    Int(i64),
    Text(String),
}

impl From<i64> for Param {
    fn from(v: i64) -> Self {
        Param::Int(v)
    }
}
impl From<String> for Param {
    fn from(v: String) -> Self {
        Param::Text(v)
    }
}
impl From<&str> for Param {
    fn from(v: &str) -> Self {
        Param::Text(v.to_owned())
    }
}
impl From<&String> for Param {
    fn from(v: &String) -> Self {
        Param::Text(v.clone())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    Null,
    Int(i64),
    Text(String),
}

/// A row copied out of the database, read by column name.
#[derive(Clone, Debug)]
pub(crate) struct OwnedRow {
    /// Shared by all rows of one statement's result.
    names: Arc<[String]>,
    values: Vec<Value>,
}

/// The column types the store reads.
pub(crate) trait FromValue: Sized {
    fn from_value(value: &Value) -> Option<Self>;
}
impl FromValue for i64 {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}
impl FromValue for String {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Text(t) => Some(t.clone()),
            _ => None,
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Null => Some(None),
            other => T::from_value(other).map(Some),
        }
    }
}

impl OwnedRow {
    pub(crate) fn try_get<T: FromValue>(&self, column: &str) -> Result<T> {
        let value = self
            .names
            .iter()
            .position(|name| name == column)
            .and_then(|i| self.values.get(i))
            .ok_or_else(|| StoreError::Corrupt(format!("no column {column}")))?;
        T::from_value(value).ok_or_else(|| StoreError::Corrupt(format!("column {column} holds {value:?}")))
    }

    /// A text column parsed into a domain type.
    pub(crate) fn parse<T: FromStr>(&self, column: &str) -> Result<T> {
        let text: String = self.try_get(column)?;
        text.parse()
            .map_err(|_| StoreError::Corrupt(format!("column {column} holds {text:?}")))
    }

    pub(crate) fn parse_opt<T: FromStr>(&self, column: &str) -> Result<Option<T>> {
        let text: Option<String> = self.try_get(column)?;
        text.map(|t| {
            t.parse()
                .map_err(|_| StoreError::Corrupt(format!("column {column} holds {t:?}")))
        })
        .transpose()
    }

    /// Copies a row that sqlx read (PostgreSQL, or SQLite inside a write transaction).
    pub(crate) fn from_any(row: &AnyRow) -> Result<OwnedRow> {
        let mut values = Vec::with_capacity(row.len());
        for i in 0..row.len() {
            let value = if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
                v.map_or(Value::Null, Value::Int)
            } else {
                row.try_get::<Option<String>, _>(i)?
                    .map_or(Value::Null, Value::Text)
            };
            values.push(value);
        }
        let names = row.columns().iter().map(|c| c.name().to_owned()).collect();
        Ok(OwnedRow { names, values })
    }
}

/// The file a `sqlite://PATH` (or `sqlite:PATH`) URL names; options after `?` are sqlx's.
pub(crate) fn sqlite_path(url: &str) -> Result<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or(StoreError::UnsupportedUrl)?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Err(StoreError::UnsupportedUrl);
    }
    Ok(PathBuf::from(path))
}

/// Idle read connections to the SQLite file, with its audit log file attached.
pub(crate) struct SqliteReaders {
    path: PathBuf,
    audit_path: PathBuf,
    idle: Mutex<Vec<rusqlite::Connection>>,
}

/// Idle connections kept beyond this are closed.
const MAX_IDLE_READERS: usize = 16;
/// Address space, not memory: how much of the file a reader maps; pages past it are read as usual.
const READER_MMAP_BYTES: u64 = 1 << 30;

impl SqliteReaders {
    /// Readers for the database at `path` and its audit log at `audit_path`.
    pub(crate) fn new(path: PathBuf, audit_path: PathBuf) -> SqliteReaders {
        SqliteReaders {
            path,
            audit_path,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn connect(&self) -> rusqlite::Result<rusqlite::Connection> {
        let conn = rusqlite::Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // Attached, the log's tables answer to the same names as on PostgreSQL. A statement opens a read
        // transaction only on the files it uses, so record reads never see the log's commits.
        conn.execute("ATTACH DATABASE ?1 AS audit", [self.audit_path.to_string_lossy()])?;
        // Reads only: a bug that tried to write through a reader fails instead of bypassing the writer.
        // Memory-mapped: after any commit a reader drops its whole page cache at its next read; mapped
        // pages are fetched again without a system call or a copy each.
        conn.execute_batch(&format!(
            "PRAGMA query_only = ON; PRAGMA busy_timeout = 10000; PRAGMA mmap_size = {READER_MMAP_BYTES};"
        ))?;
        Ok(conn)
    }

    fn select(&self, sql: &str, params: &[Param]) -> rusqlite::Result<Vec<OwnedRow>> {
        let conn = self.take()?;
        let rows = Self::run(&conn, sql, params);
        self.put_back(conn);
        rows
    }

    fn take(&self) -> rusqlite::Result<rusqlite::Connection> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match pooled {
            Some(conn) => Ok(conn),
            None => self.connect(),
        }
    }

    fn put_back(&self, conn: rusqlite::Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
    }

    fn run(conn: &rusqlite::Connection, sql: &str, params: &[Param]) -> rusqlite::Result<Vec<OwnedRow>> {
        let mut statement = conn.prepare_cached(sql)?;
        let names: Arc<[String]> = statement.column_names().into_iter().map(str::to_owned).collect();
        let bound = params.iter().map(|p| {
            rusqlite::types::ToSqlOutput::Borrowed(match p {
                Param::Int(i) => rusqlite::types::ValueRef::Integer(*i),
                Param::Text(t) => rusqlite::types::ValueRef::Text(t.as_bytes()),
            })
        });
        let mut rows = statement.query(rusqlite::params_from_iter(bound))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let mut values = Vec::with_capacity(names.len());
            for i in 0..names.len() {
                let value = match row.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => Value::Null,
                    rusqlite::types::ValueRef::Integer(v) => Value::Int(v),
                    rusqlite::types::ValueRef::Text(t) => {
                        Value::Text(String::from_utf8_lossy(t).into_owned())
                    }
                    other => Value::Text(format!("{other:?}")),
                };
                values.push(value);
            }
            out.push(OwnedRow {
                names: Arc::clone(&names),
                values,
            });
        }
        Ok(out)
    }
}

fn reader_error(e: rusqlite::Error) -> StoreError {
    StoreError::Database(sqlx::Error::Protocol(e.to_string()))
}

/// A reader in one read transaction: every read through it sees the database as it was at the first.
/// Starting and ending a transaction takes SQLite's shared-memory locks, a good part of a small read's cost.
pub(crate) struct Snapshot {
    readers: Arc<SqliteReaders>,
    conn: Mutex<Option<rusqlite::Connection>>,
}

impl Snapshot {
    fn begin(readers: &Arc<SqliteReaders>) -> rusqlite::Result<Snapshot> {
        let conn = readers.take()?;
        conn.prepare_cached("BEGIN")?.execute([])?;
        Ok(Snapshot {
            readers: Arc::clone(readers),
            conn: Mutex::new(Some(conn)),
        })
    }

    fn select(&self, sql: &str, params: &[Param]) -> rusqlite::Result<Vec<OwnedRow>> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let conn = conn.as_ref().ok_or(rusqlite::Error::InvalidQuery)?;
        SqliteReaders::run(conn, sql, params)
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let conn = self.conn.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(conn) = conn {
            // A reader whose transaction cannot be ended is closed, never pooled.
            if conn
                .prepare_cached("COMMIT")
                .and_then(|mut s| s.execute([]))
                .is_ok()
            {
                self.readers.put_back(conn);
            }
        }
    }
}

impl Store {
    /// This store with its reads in one transaction, until the copy returned is dropped: a grant decided
    /// on facts read through it, and the data read with that grant, come from the same state of the
    /// database. On PostgreSQL, where each read's transaction carries its grant's scope, this is the
    /// store itself. Drop the copy before waiting on anything slow: it holds a reader.
    pub fn snapshot(&self) -> Result<Store> {
        let snapshot = match (&self.inner.sqlite_readers, self.inner.backend) {
            (Some(readers), Backend::Sqlite) => {
                Some(Arc::new(Snapshot::begin(readers).map_err(reader_error)?))
            }
            _ => None,
        };
        Ok(Store {
            inner: Arc::clone(&self.inner),
            snapshot,
        })
    }

    /// Runs one read-only statement and returns its rows.
    pub(crate) async fn select(
        &self,
        scope: Scope<'_>,
        sql: &'static str,
        params: &[Param],
    ) -> Result<Vec<OwnedRow>> {
        match (&self.inner.sqlite_readers, self.inner.backend) {
            (Some(readers), Backend::Sqlite) => match &self.snapshot {
                Some(snapshot) => snapshot.select(sql, params),
                None => readers.select(sql, params),
            }
            .map_err(reader_error),
            _ => {
                let mut tx = self.begin(&self.inner.pool, scope).await?;
                let mut query = sqlx::query(sql);
                for p in params {
                    query = match p {
                        Param::Int(i) => query.bind(*i),
                        Param::Text(t) => query.bind(t.clone()),
                    };
                }
                let rows = query.fetch_all(&mut *tx).await?;
                tx.commit().await?;
                rows.iter().map(OwnedRow::from_any).collect()
            }
        }
    }

    /// Like [`Store::select`], for at most one row.
    pub(crate) async fn select_one(
        &self,
        scope: Scope<'_>,
        sql: &'static str,
        params: &[Param],
    ) -> Result<Option<OwnedRow>> {
        Ok(self.select(scope, sql, params).await?.into_iter().next())
    }
}
