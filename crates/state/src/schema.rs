//! Schema migrations: an ordered list of SQL steps, the version recorded in the `meta` table.
//!
//! Step `i` (0-based) takes the database from version `i` to `i + 1`. All pending steps and the
//! version bump run in one IMMEDIATE transaction, so a crash mid-migration leaves the old
//! version intact and the next start simply tries again. Steps are append-only: once released,
//! a step is never edited, only followed by a new one.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::error::StateError;

/// The migration steps, oldest first.
const MIGRATIONS: &[&str] = &[
    // Version 1.
    //
    // checkpoints: one row per source stream (and per output state, e.g. a file output's
    // committed length). WITHOUT ROWID: the key is the only way rows are reached, so storing
    // the row in the primary-key b-tree saves a second lookup and a second b-tree.
    //
    // dedup: small rows reached only by (scope, key): WITHOUT ROWID for the same reason. There
    // is deliberately no index on expires_at_ms: every commit upserts keys, and an expiry index
    // would double the b-tree writes (and the WAL pages) of each upsert, whereas the purge that
    // would use it runs only every few minutes and can afford one sequential scan.
    //
    // queues: a handful of rows; next_seq is the next sequence number to hand out, persisted so
    // numbers are never reused even after the queue was drained.
    //
    // queue_items: see queue.rs for why this is a rowid table keyed by (queue << 48 | seq).
    r#"
    CREATE TABLE checkpoints (
        stream        TEXT    NOT NULL PRIMARY KEY,
        value         TEXT    NOT NULL,
        updated_at_ms INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE dedup (
        scope         TEXT    NOT NULL,
        key           TEXT    NOT NULL,
        value         TEXT    NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        PRIMARY KEY (scope, key)
    ) WITHOUT ROWID;

    CREATE TABLE queues (
        id       INTEGER PRIMARY KEY,
        name     TEXT    NOT NULL UNIQUE,
        next_seq INTEGER NOT NULL
    );

    CREATE TABLE queue_items (
        k    INTEGER PRIMARY KEY,
        id   TEXT NOT NULL,
        data BLOB NOT NULL
    );
    "#,
    // Version 2.
    //
    // Queue records move out of the database into append-only segment files (segments.rs);
    // a queue row keeps its bounds: frames tail_seq..next_seq at log positions
    // tail_pos..head_pos. tail_seq = 0 marks a queue whose records are still in queue_items:
    // `Store::open` moves them into a segment file and sets the bounds, in one transaction.
    r#"
    ALTER TABLE queues ADD COLUMN tail_seq INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE queues ADD COLUMN tail_pos INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE queues ADD COLUMN head_pos INTEGER NOT NULL DEFAULT 0;
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database at `path` (already opened as `conn`) to [`SCHEMA_VERSION`], or refuses a
/// database from a newer kubetrail. Returns the version found before migrating.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<i64, StateError> {
    let open_err = |what| crate::store::open_error(path, what);
    // A database at this version is only read: opening must not need free space (a full
    // disk is exactly when a store is opened again after a failed commit).
    if let Some(found) = stored_version(conn).map_err(open_err("read schema_version"))?
        && found == SCHEMA_VERSION
    {
        return Ok(found);
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(open_err("begin migration transaction"))?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS meta (
             key   TEXT    NOT NULL PRIMARY KEY,
             value INTEGER NOT NULL
         ) WITHOUT ROWID;",
    )
    .map_err(open_err("create meta table"))?;
    let found: i64 = tx
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(open_err("read schema_version"))?
        .unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(StateError::NewerSchema {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found < 0 {
        return Err(StateError::Corrupt {
            what: format!("schema_version {found} in {}", path.display()),
        });
    }
    for (index, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = index as i64 + 1;
        let migration_err = |source| StateError::Migration {
            path: path.to_path_buf(),
            version,
            source,
        };
        tx.execute_batch(step).map_err(migration_err)?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [version],
        )
        .map_err(migration_err)?;
        tracing::info!(path = %path.display(), version, "state database migrated");
    }
    tx.commit().map_err(open_err("commit migration"))?;
    Ok(found)
}

/// The version recorded in the database, without writing (`None` when there is no `meta`
/// table yet).
fn stored_version(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    let has_meta: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
        [],
        |row| row.get(0),
    )?;
    if !has_meta {
        return Ok(None);
    }
    conn.query_row(
        "SELECT value FROM meta WHERE key = 'schema_version'",
        [],
        |row| row.get(0),
    )
    .optional()
}
