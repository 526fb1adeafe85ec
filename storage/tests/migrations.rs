//! Schema versioning: fresh databases, re-opening, and refusing newer schemas.

use pier_storage::{Database, DbError, SCHEMA_VERSION, SandboxRecord};

fn sandbox(id: &str, name: &str) -> SandboxRecord {
    SandboxRecord {
        id: id.into(),
        name: name.into(),
        namespace: "default".into(),
        uid: format!("uid-{name}"),
        attempt: 0,
        state: "ready".into(),
        created_at: 1,
        runtime_handler: String::new(),
        config: vec![1, 2, 3],
        runtime: Vec::new(),
    }
}

#[test]
fn fresh_database_gets_the_current_schema_in_wal_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pier.db");
    let db = Database::open(&path).expect("open");
    assert_eq!(db.schema_version().expect("version"), SCHEMA_VERSION);
    let conn = rusqlite::Connection::open(&path).expect("raw open");
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("pragma");
    assert_eq!(mode, "wal");
}

#[test]
fn reopening_keeps_data_and_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pier.db");
    Database::open(&path)
        .expect("open")
        .insert_sandbox(&sandbox("s1", "web"))
        .expect("insert");
    let db = Database::open(&path).expect("reopen");
    assert_eq!(db.schema_version().expect("version"), SCHEMA_VERSION);
    assert_eq!(db.sandbox("s1").expect("get"), Some(sandbox("s1", "web")));
}

#[test]
fn newer_schema_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pier.db");
    {
        let conn = rusqlite::Connection::open(&path).expect("raw open");
        conn.execute_batch("CREATE TABLE from_the_future (x); PRAGMA user_version = 99;")
            .expect("prepare");
    }
    let before = std::fs::read(&path).expect("read");
    match Database::open(&path) {
        Err(DbError::SchemaTooNew {
            found: 99,
            supported,
            ..
        }) => {
            assert_eq!(supported, SCHEMA_VERSION)
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(&path).expect("read"),
        before,
        "database was modified"
    );
    assert!(
        !dir.path().join("pier.db-wal").exists(),
        "WAL was switched on"
    );
}

#[test]
fn duplicate_sandbox_name_names_the_holder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Database::open(&dir.path().join("pier.db")).expect("open");
    db.insert_sandbox(&sandbox("s1", "web")).expect("insert");
    let err = db
        .insert_sandbox(&sandbox("s2", "web"))
        .expect_err("duplicate accepted");
    assert!(matches!(err, DbError::NameTaken { .. }), "{err:?}");
    assert!(err.to_string().contains("s1"), "{err}");
}

#[test]
fn damaged_database_is_refused_naming_the_file_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pier.db");
    {
        let db = Database::open(&path).expect("open");
        for i in 0..50 {
            db.insert_sandbox(&sandbox(&format!("s{i}"), &format!("web{i}")))
                .expect("insert");
        }
    }
    let mut bytes = std::fs::read(&path).expect("read");
    assert!(bytes.len() > 8192, "{}", bytes.len());
    for byte in &mut bytes[4096..8192] {
        *byte = 0x5a;
    }
    std::fs::write(&path, &bytes).expect("damage");
    for open in [Database::open, Database::open_read_only] {
        let err = open(&path).expect_err("a damaged file is refused");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).expect("read"), bytes, "left as it was");
    }
}

#[test]
fn a_write_lock_held_elsewhere_is_busy_and_retryable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pier.db");
    let db = Database::open(&path).expect("open");
    let holder = rusqlite::Connection::open(&path).expect("raw open");
    holder.execute_batch("BEGIN IMMEDIATE").expect("lock");
    let started = std::time::Instant::now();
    let err = db
        .insert_sandbox(&sandbox("s1", "web"))
        .expect_err("the lock is held");
    assert!(matches!(err, DbError::Busy(_)), "{err:?}");
    assert!(err.to_string().contains("retry"), "{err}");
    assert!(started.elapsed() >= pier_storage::BUSY_TIMEOUT / 2);
    holder.execute_batch("ROLLBACK").expect("unlock");
    db.insert_sandbox(&sandbox("s1", "web"))
        .expect("insert once free");
}

#[test]
fn read_only_open_sees_the_rows_and_creates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pier.db");
    assert!(
        Database::open_read_only(&path).is_err(),
        "no file, no database"
    );
    assert!(!path.exists());
    let db = Database::open(&path).expect("open");
    db.insert_sandbox(&sandbox("s1", "web")).expect("insert");
    let reader = Database::open_read_only(&path).expect("read-only");
    assert_eq!(reader.sandboxes().expect("list").len(), 1);
    assert!(reader.insert_sandbox(&sandbox("s2", "db")).is_err());
}
