//! Schema versioning: re-opening is idempotent, a newer database is refused.

use kubetrail_state::{CommitBatch, SCHEMA_VERSION, StateError, Store, StoreOptions, SyncMode};

fn options() -> StoreOptions {
    StoreOptions {
        sync: SyncMode::Normal,
        ..StoreOptions::default()
    }
}

fn schema_version(db: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open(db).expect("raw open");
    conn.query_row(
        "SELECT value FROM meta WHERE key = 'schema_version'",
        [],
        |row| row.get(0),
    )
    .expect("schema_version row")
}

#[test]
fn reopening_keeps_version_and_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("kubetrail.db");
    for round in 0..3 {
        let mut store = Store::open(&db, &options()).expect("open");
        let q = store.queue_id("q").expect("queue");
        store
            .commit(&CommitBatch {
                checkpoints: vec![(format!("s{round}"), round.to_string())],
                ..CommitBatch::default()
            })
            .expect("commit");
        for earlier in 0..=round {
            assert_eq!(
                store
                    .checkpoint(&format!("s{earlier}"))
                    .expect("checkpoint")
                    .map(|c| c.value),
                Some(earlier.to_string())
            );
        }
        assert_eq!(store.queues(), [("q".to_string(), q)]);
        drop(store);
        assert_eq!(schema_version(&db), SCHEMA_VERSION);
    }
    let conn = rusqlite::Connection::open(&db).expect("raw open");
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "wal");
    let vacuum: i64 = conn
        .query_row("PRAGMA auto_vacuum", [], |row| row.get(0))
        .expect("auto_vacuum");
    assert_eq!(vacuum, 2, "incremental");
}

#[test]
fn a_database_from_a_newer_kubetrail_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("kubetrail.db");
    drop(Store::open(&db, &options()).expect("create"));
    let newer = SCHEMA_VERSION + 1;
    rusqlite::Connection::open(&db)
        .expect("raw open")
        .execute(
            "UPDATE meta SET value = ?1 WHERE key = 'schema_version'",
            [newer],
        )
        .expect("bump version");
    match Store::open(&db, &options()) {
        Err(err @ StateError::NewerSchema { .. }) => {
            let message = err.to_string();
            assert!(
                message.contains(&format!("schema version {newer}")),
                "{message}"
            );
            assert!(message.contains(&db.display().to_string()), "{message}");
            assert!(message.contains("newer"), "{message}");
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
    assert_eq!(
        schema_version(&db),
        newer,
        "refusing did not touch the file"
    );
}

#[test]
fn a_foreign_file_is_an_open_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("kubetrail.db");
    std::fs::write(&db, b"this is not a database, just text long enough ......").expect("write");
    match Store::open(&db, &options()) {
        Err(err @ StateError::Open { .. }) => {
            assert!(err.to_string().contains("kubetrail.db"), "{err}");
        }
        other => panic!("expected Open error, got {other:?}"),
    }
}
