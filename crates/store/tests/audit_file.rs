//! SQLite keeps the audit log in a file of its own: databases from before the split move their log into
//! it, also after a crash halfway, and a database whose log file is missing or not its own does not open.

use std::path::{Path, PathBuf};

use confide_domain::audit::{AuditEvent, ChainedEntry, GENESIS, Outcome, chain, verify};
use confide_domain::identity::Role;
use confide_store::testing::{TestDatabase, migrate_sqlite_with_audit_inside};
use confide_store::{Role as StoreRole, Store, StoreError, sqlite_audit_path};

fn event(n: i64) -> AuditEvent {
    AuditEvent {
        at_ms: n,
        actor: None,
        actor_role: Some(Role::PlatformAdmin),
        action: "admin.create_user".into(),
        resource: format!("user:{n}"),
        subject_patient: None,
        outcome: Outcome::Allowed,
        reason: "cli".into(),
        request_id: format!("r{n}"),
    }
}

fn database_path(db: &TestDatabase) -> PathBuf {
    let rest = db.url.strip_prefix("sqlite://").unwrap();
    PathBuf::from(rest.split('?').next().unwrap())
}

/// A database in the layout from before the split, whose log holds `count` entries starting at `first_at`.
async fn older_database(count: i64, first_at: i64) -> (TestDatabase, Vec<ChainedEntry>) {
    let db = TestDatabase::sqlite();
    migrate_sqlite_with_audit_inside(&db.url).await.unwrap();
    let conn = rusqlite::Connection::open(database_path(&db)).unwrap();
    let (mut seq, mut hash) = (0, GENESIS);
    let mut entries = Vec::new();
    for n in 0..count {
        let entry = chain(seq, hash, event(first_at + n));
        let e = &entry.event;
        conn.execute(
            "INSERT INTO audit_log (seq, at_ms, actor_id, actor_role, action, resource, subject_patient, outcome, \
             reason, request_id, prev_hash, hash) VALUES (?1, ?2, NULL, ?3, ?4, ?5, NULL, ?6, ?7, ?8, ?9, ?10)",
            rusqlite::params![
                entry.seq,
                e.at_ms,
                e.actor_role.map(Role::as_str),
                e.action,
                e.resource,
                e.outcome.as_str(),
                e.reason,
                e.request_id,
                entry.prev_hash.to_hex(),
                entry.hash.to_hex(),
            ],
        )
        .unwrap();
        (seq, hash) = (entry.seq, entry.hash);
        entries.push(entry);
    }
    conn.execute(
        "UPDATE audit_head SET seq = ?1, hash = ?2 WHERE id = 1",
        rusqlite::params![seq, hash.to_hex()],
    )
    .unwrap();
    (db, entries)
}

fn audit_tables_inside(database: &Path) -> i64 {
    rusqlite::Connection::open(database)
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('audit_log', 'audit_head')",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

/// Replaces the SQLite file `to` (with its write-ahead log) by a copy of `from`.
fn replace_file(from: &Path, to: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let target = PathBuf::from(format!("{}{suffix}", to.display()));
        let _ = std::fs::remove_file(&target);
        let source = PathBuf::from(format!("{}{suffix}", from.display()));
        if suffix != "-shm" && source.exists() {
            std::fs::copy(&source, &target).unwrap();
        }
    }
}

async fn entries_of(store: &Store) -> (Vec<ChainedEntry>, Result<u64, String>) {
    let entries = store.audit_page(0, 1000).await.unwrap();
    let head = store.audit_head().await.unwrap();
    let verdict = verify(entries.clone(), Some(head)).map_err(|e| e.to_string());
    (entries, verdict)
}

#[tokio::test]
async fn an_older_database_moves_its_log_into_its_own_file_and_the_chain_goes_on() {
    let (db, old) = older_database(5, 100).await;
    let path = database_path(&db);

    let store = Store::open(&db.url, StoreRole::App).await.unwrap();
    assert_eq!(store.audit().append(event(6)).await.unwrap(), 6);
    let (entries, verdict) = entries_of(&store).await;
    assert_eq!(entries[..5], old[..]);
    assert_eq!(verdict, Ok(6));
    assert_eq!(store.audit_len().await.unwrap(), 6);
    store.close().await;
    drop(store);

    assert_eq!(audit_tables_inside(&path), 0, "the old tables are gone");
    assert!(sqlite_audit_path(&path).exists());
    let again = Store::open(&db.url, StoreRole::App).await.unwrap();
    assert_eq!(
        entries_of(&again).await.1,
        Ok(6),
        "a second open moves nothing twice"
    );
    again.close().await;
}

#[tokio::test]
async fn a_move_cut_short_after_the_copy_is_finished_on_the_next_open() {
    let (db, old) = older_database(4, 1).await;
    let path = database_path(&db);
    let before = tempfile::tempdir().unwrap();
    let saved = before.path().join("confide.db");
    replace_file(&path, &saved);

    let store = Store::open(&db.url, StoreRole::App).await.unwrap();
    store.close().await;
    drop(store);
    // The database as it was before the move, beside a log file that already holds the copy: what a
    // crash between the copy's commit and the tables' removal leaves.
    replace_file(&saved, &path);
    assert_eq!(audit_tables_inside(&path), 2);

    let store = Store::open(&db.url, StoreRole::App).await.unwrap();
    let (entries, verdict) = entries_of(&store).await;
    assert_eq!(entries, old, "each entry once");
    assert_eq!(verdict, Ok(4));
    store.close().await;
    drop(store);
    assert_eq!(audit_tables_inside(&path), 0);
}

#[tokio::test]
async fn a_log_file_copied_from_another_database_is_not_merged() {
    let (db, _) = older_database(3, 1).await;
    let (other, _) = older_database(3, 50).await;
    let path = database_path(&db);
    let store = Store::open(&other.url, StoreRole::App).await.unwrap();
    store.close().await;
    drop(store);
    replace_file(
        &sqlite_audit_path(&database_path(&other)),
        &sqlite_audit_path(&path),
    );

    let refused = Store::open(&db.url, StoreRole::App).await.err().unwrap();
    assert!(
        matches!(&refused, StoreError::AuditUnavailable(m) if m.contains("another database's audit log")),
        "{refused}"
    );
    assert_eq!(audit_tables_inside(&path), 2, "the database keeps its own log");
}

#[tokio::test]
async fn a_missing_or_swapped_log_file_stops_the_store_instead_of_starting_a_new_chain() {
    let db = TestDatabase::sqlite();
    let other = TestDatabase::sqlite();
    for url in [&db.url, &other.url] {
        let store = Store::open(url, StoreRole::App).await.unwrap();
        store.audit().append(event(1)).await.unwrap();
        store.close().await;
    }
    let log = sqlite_audit_path(&database_path(&db));
    let saved = tempfile::tempdir().unwrap();
    let kept = saved.path().join("kept.audit.db");
    replace_file(&log, &kept);

    replace_file(&saved.path().join("absent.db"), &log);
    assert!(!log.exists());
    let refused = Store::open(&db.url, StoreRole::App).await.err().unwrap();
    assert!(
        matches!(&refused, StoreError::AuditUnavailable(m) if m.contains("cannot be used")),
        "{refused}"
    );
    assert!(!log.exists(), "no new, empty log was made");

    replace_file(&sqlite_audit_path(&database_path(&other)), &log);
    let refused = Store::open(&db.url, StoreRole::App).await.err().unwrap();
    assert!(
        matches!(&refused, StoreError::AuditUnavailable(m) if m.contains("not this database's")),
        "{refused}"
    );

    replace_file(&kept, &log);
    let store = Store::open(&db.url, StoreRole::App).await.unwrap();
    assert_eq!(entries_of(&store).await.1, Ok(1), "the restored log opens");
    store.close().await;
}
