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
fn a_foreign_file_is_refused_as_damaged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("kubetrail.db");
    std::fs::write(&db, b"this is not a database, just text long enough ......").expect("write");
    match Store::open(&db, &options()) {
        Err(err @ StateError::Damaged { .. }) => {
            assert!(err.to_string().contains("kubetrail.db"), "{err}");
        }
        other => panic!("expected Damaged error, got {other:?}"),
    }
}

/// A database as schema version 1 made it (queue records as rows of `queue_items`), with
/// the queues `queues` (`(id, name, next_seq), …`), open for its rows to be added.
fn version_1_database(db: &std::path::Path, queues: &str) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(db).expect("sqlite");
    conn.execute_batch(&format!(
        "CREATE TABLE meta (key TEXT NOT NULL PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
         INSERT INTO meta VALUES ('schema_version', 1);
         CREATE TABLE checkpoints (stream TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL,
             updated_at_ms INTEGER NOT NULL) WITHOUT ROWID;
         CREATE TABLE dedup (scope TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
             expires_at_ms INTEGER NOT NULL, PRIMARY KEY (scope, key)) WITHOUT ROWID;
         CREATE TABLE queues (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
             next_seq INTEGER NOT NULL);
         CREATE TABLE queue_items (k INTEGER PRIMARY KEY, id TEXT NOT NULL, data BLOB NOT NULL);
         INSERT INTO queues VALUES {queues};"
    ))
    .expect("v1 schema");
    conn
}

/// A version-1 queue larger than one block (256 KiB of records) becomes several blocks,
/// each with only its own records (the block buffer was once not emptied between them).
#[test]
fn a_version_1_queue_of_many_blocks_is_moved_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("kubetrail.db");
    let record = |seq: i64| -> Vec<u8> {
        format!(
            "{{\"seq\":{seq},\"pad\":\"{}\"}}",
            "x".repeat(5000 + seq as usize)
        )
        .into_bytes()
    };
    {
        let conn = version_1_database(&db, "(1, 'output/a', 301)");
        for seq in 1..301i64 {
            conn.execute(
                "INSERT INTO queue_items VALUES (?1, ?2, ?3)",
                rusqlite::params![(1i64 << 48) | seq, format!("id-{seq}"), record(seq)],
            )
            .expect("row");
        }
    }
    let mut store = Store::open(&db, &options()).expect("open v1 database");
    let a = store.queue_id("output/a").expect("queue");
    let mut r = store.reader().expect("reader");
    let mut got = Vec::new();
    let mut after = 0;
    loop {
        let items = r.read_queue(a, after, 64, usize::MAX).expect("read");
        let Some(last) = items.last() else { break };
        after = last.seq;
        got.extend(items.into_iter().map(|i| (i.seq, i.id, i.data.to_vec())));
    }
    assert_eq!(got.len(), 300);
    for (seq, id, data) in got {
        assert_eq!(id, format!("id-{seq}"));
        assert!(data == record(seq as i64), "record {seq} differs");
    }
}

/// A database written by schema version 1 kept queue records in a `queue_items` table
/// (row key `queue << 48 | seq`); opening it moves them into segment files, same seqs, ids
/// and data, and the queue goes on from there.
#[test]
fn queued_records_of_a_version_1_database_are_moved_into_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("kubetrail.db");
    {
        let conn = version_1_database(&db, "(1, 'output/a', 8), (2, 'output/empty', 3)");
        for seq in 5..8i64 {
            conn.execute(
                "INSERT INTO queue_items VALUES (?1, ?2, ?3)",
                rusqlite::params![(1i64 << 48) | seq, format!("id-{seq}"), vec![seq as u8; 10]],
            )
            .expect("row");
        }
    }
    let mut store = Store::open(&db, &options()).expect("open v1 database");
    assert_eq!(schema_version(&db), SCHEMA_VERSION);
    let a = store.queue_id("output/a").expect("queue");
    let empty = store.queue_id("output/empty").expect("queue");
    let items = store
        .reader()
        .expect("reader")
        .read_queue(a, 0, 100, usize::MAX)
        .expect("read");
    let got: Vec<(u64, String, Vec<u8>)> = items
        .into_iter()
        .map(|i| (i.seq, i.id, i.data.to_vec()))
        .collect();
    assert_eq!(
        got,
        (5..8u64)
            .map(|s| (s, format!("id-{s}"), vec![s as u8; 10]))
            .collect::<Vec<_>>()
    );
    assert_eq!(store.queue_depth(a).records, 3);
    assert_eq!(store.next_seq(a), Some(8));
    assert_eq!(store.next_seq(empty), Some(3));
    assert_eq!(store.queue_depth(empty).records, 0);
    let out = store
        .commit(&kubetrail_state::CommitBatch {
            entries: vec![kubetrail_state::Entry {
                dedup: None,
                queues: [a, empty].into(),
                id: "new".into(),
                data: b"n".to_vec().into(),
            }],
            ..Default::default()
        })
        .expect("commit");
    assert_eq!(out.inserted, [true]);
    let mut r = store.reader().expect("reader");
    let last = r.read_queue(a, 7, 10, usize::MAX).expect("read");
    assert_eq!(last.iter().map(|i| i.seq).collect::<Vec<_>>(), [8]);
    let e = r.read_queue(empty, 0, 10, usize::MAX).expect("read");
    assert_eq!(e.iter().map(|i| i.seq).collect::<Vec<_>>(), [3]);
    drop(r);
    drop(store);
    // Converted once: reopening reads the same.
    let store = Store::open(&db, &options()).expect("reopen");
    assert_eq!(store.queue_depth(a).records, 4);
}
