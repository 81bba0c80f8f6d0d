//! Fresh databases for tests: a SQLite file in a temporary directory always, and a new PostgreSQL
//! database when `CONFIDE_TEST_DATABASE_URL` names a server (as CI does).

use sqlx::{Connection, Executor};

/// The variable that names the PostgreSQL server tests may create databases on.
pub const POSTGRES_VAR: &str = "CONFIDE_TEST_DATABASE_URL";

/// A database that exists for one test and is removed after it.
pub struct TestDatabase {
    pub url: String,
    pub backend: crate::Backend,
    cleanup: Cleanup,
}

enum Cleanup {
    Directory { _dir: tempfile::TempDir },
    Postgres { server: String, name: String },
}

impl TestDatabase {
    /// A SQLite database file in a new temporary directory.
    pub fn sqlite() -> TestDatabase {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = crate::sqlite_url(&dir.path().join("confide.db"));
        TestDatabase {
            url,
            backend: crate::Backend::Sqlite,
            cleanup: Cleanup::Directory { _dir: dir },
        }
    }

    /// A new, empty PostgreSQL database, or `None` (with a message) when no server is configured.
    pub async fn postgres() -> Option<TestDatabase> {
        let Ok(server) = std::env::var(POSTGRES_VAR) else {
            eprintln!(
                "skipped on PostgreSQL: set {POSTGRES_VAR} (e.g. postgres://postgres@127.0.0.1:5432/postgres)"
            );
            return None;
        };
        let name = format!("confide_t_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&server)
            .await
            .expect("connect to the test PostgreSQL server");
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create test database");
        admin.close().await.ok();
        let url = with_database(&server, &name);
        Some(TestDatabase {
            url,
            backend: crate::Backend::Postgres,
            cleanup: Cleanup::Postgres { server, name },
        })
    }

    /// SQLite, then PostgreSQL when configured: what a store test runs against.
    pub async fn all() -> Vec<TestDatabase> {
        let mut out = vec![TestDatabase::sqlite()];
        out.extend(TestDatabase::postgres().await);
        out
    }
}

/// Migrates a new SQLite database only as far as the layout in which the audit log was kept inside it,
/// for the tests that open such a database with a store that keeps the log in a file of its own.
pub async fn migrate_sqlite_with_audit_inside(url: &str) -> crate::Result<()> {
    sqlx::any::install_default_drivers();
    let mut migrator = crate::migrator(crate::Backend::Sqlite);
    let older: Vec<_> = migrator
        .migrations
        .iter()
        .filter(|m| m.version < crate::audit_file::MIGRATION)
        .cloned()
        .collect();
    migrator.migrations = older.into();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await?;
    pool.execute("PRAGMA journal_mode = WAL").await?;
    migrator.run(&pool).await?;
    pool.close().await;
    Ok(())
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Cleanup::Postgres { server, name } = &self.cleanup {
            let (server, db) = (server.clone(), name.clone());
            // Drop runs outside async code; a small runtime of its own does the cleanup.
            let dropped = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                rt.block_on(async {
                    let mut admin = sqlx::PgConnection::connect(&server).await.ok()?;
                    admin
                        .execute(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
                        )))
                        .await
                        .ok()
                })
            })
            .join();
            if !matches!(dropped, Ok(Some(_))) {
                eprintln!("could not drop test database {name}");
            }
        }
    }
}

/// `server` with its database name replaced by `name`.
pub fn with_database(server: &str, name: &str) -> String {
    let (base, query) = match server.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (server, None),
    };
    let authority_end = base.find("://").map_or(0, |i| i + 3);
    let root = match base[authority_end..].find('/') {
        Some(i) => &base[..authority_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_names_are_replaced() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "t1"),
            "postgres://u@h:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u@h:5432", "t1"),
            "postgres://u@h:5432/t1"
        );
        assert_eq!(
            with_database("postgres://h/x?sslmode=disable", "t1"),
            "postgres://h/t1?sslmode=disable"
        );
    }
}
