//! The activity database's tables and indexes, its migrations, and how connections to it are
//! opened (the writer's, its WAL checkpointer's, retention's and readers').
//!
//! One row per record in `records`, keyed by `seq` (the order records were stored in: the
//! position live readers follow) and unique by `id` (the record id: exactly once). Times are
//! nanoseconds since the Unix epoch. The indexes serve the questions `kubetrail who`,
//! `kubetrail activity` and the activity page ask:
//!
//! | index | serves |
//! |---|---|
//! | `records_time (time)` | the timeline; retention by age and size |
//! | `records_kind (kind, time)` | one kind of record (gaps; whether audit events or Events are there at all) |
//! | `records_object (resource, name, namespace, time)` | one object's story |
//! | `records_resource (resource, time)` | a type of objects' timeline (`object=pods`) |
//! | `records_uid (uid)`, `records_owner (owner_uid, time)` | ownership: an object by uid, what an owner made |
//! | `records_mention (mention_resource, mention_name, namespace)` | Events naming an object in their message |
//! | `records_user (username, time)`, `records_impersonated (impersonated, time)`, `record_groups (grp, seq)` | what an actor did |
//! | `records_namespace (namespace, time)` | a namespace's timeline |
//! | `records_verb (verb, time)` | by verb |
//! | `records_reason (reason, time)` | Events by reason |
//! | `records_warning (time) WHERE event_type = 'Warning'` | Warning Events only |
//! | `records_failed (time) WHERE response_code >= 400` | failed requests only |
//!
//! Partial indexes (`WHERE x IS NOT NULL`) keep the columns one kind of record never fills
//! out of the indexes of the other. Indexes added after version 1 ([`ADDED`]) are created
//! when the writer opens the database, without a new schema version: a reader that does
//! not know them still reads the database.
//!
//! The writer keeps the query planner's statistics current (`PRAGMA optimize`, which runs
//! `ANALYZE` on a sample of each index where the data changed enough) when it opens the
//! database and every [`OPTIMIZE_EVERY`] records it stores.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::ActivityError;

/// The schema version this code writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 1;

/// The columns of `records`, in insert order (without `seq`).
pub const COLUMNS: &[&str] = &[
    "id",
    "time",
    "kind",
    "api_group",
    "resource",
    "object_kind",
    "subresource",
    "namespace",
    "name",
    "uid",
    "owner_kind",
    "owner_name",
    "owner_uid",
    "mention_resource",
    "mention_name",
    "verb",
    "stage",
    "username",
    "impersonated",
    "groups",
    "source_ip",
    "user_agent",
    "response_code",
    "reason",
    "event_type",
    "component",
    "record",
];

const V1: &str = "
CREATE TABLE records (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    time INTEGER NOT NULL,
    kind TEXT NOT NULL,
    api_group TEXT,
    resource TEXT,
    object_kind TEXT,
    subresource TEXT,
    namespace TEXT,
    name TEXT,
    uid TEXT,
    owner_kind TEXT,
    owner_name TEXT,
    owner_uid TEXT,
    mention_resource TEXT,
    mention_name TEXT,
    verb TEXT,
    stage TEXT,
    username TEXT,
    impersonated TEXT,
    groups TEXT,
    source_ip TEXT,
    user_agent TEXT,
    response_code INTEGER,
    reason TEXT,
    event_type TEXT,
    component TEXT,
    record TEXT NOT NULL
);
CREATE UNIQUE INDEX records_id ON records (id);
CREATE INDEX records_time ON records (time);
CREATE INDEX records_kind ON records (kind, time);
CREATE INDEX records_object ON records (resource, name, namespace, time);
CREATE INDEX records_uid ON records (uid) WHERE uid IS NOT NULL;
CREATE INDEX records_owner ON records (owner_uid, time) WHERE owner_uid IS NOT NULL;
CREATE INDEX records_mention ON records (mention_resource, mention_name, namespace)
    WHERE mention_name IS NOT NULL;
CREATE INDEX records_user ON records (username, time) WHERE username IS NOT NULL;
CREATE INDEX records_impersonated ON records (impersonated, time) WHERE impersonated IS NOT NULL;
CREATE INDEX records_namespace ON records (namespace, time) WHERE namespace IS NOT NULL;
CREATE INDEX records_verb ON records (verb, time) WHERE verb IS NOT NULL;
CREATE INDEX records_reason ON records (reason, time) WHERE reason IS NOT NULL;
CREATE INDEX records_warning ON records (time) WHERE event_type = 'Warning';
CREATE INDEX records_failed ON records (time) WHERE response_code >= 400;
CREATE TABLE record_groups (
    grp TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (grp, seq)
) WITHOUT ROWID;
";

/// Indexes created, if missing, at every open of the writer (added after version 1). On a
/// big store the first open after an upgrade builds them (a minute or two per 10 million
/// records) before the writer starts.
pub const ADDED: &str = "
CREATE INDEX IF NOT EXISTS records_resource ON records (resource, time) WHERE resource IS NOT NULL;
";

/// How many records the writer stores between two `PRAGMA optimize`.
pub const OPTIMIZE_EVERY: u64 = 1_000_000;

/// Brings the planner's statistics up to date where they are missing or stale, reading a
/// sample of each index (`analysis_limit`): milliseconds, even on a big store.
pub(crate) fn optimize(conn: &Connection, at_open: bool) -> Result<(), ActivityError> {
    pragma(conn, "PRAGMA analysis_limit = 1000")
        .map_err(ActivityError::sql("limiting the analysis"))?;
    // 0x10002 at open: also the tables never analyzed (a new database, a first upgrade).
    let sql = if at_open {
        "PRAGMA optimize = 0x10002"
    } else {
        "PRAGMA optimize"
    };
    pragma(conn, sql).map_err(ActivityError::sql("updating the planner's statistics"))
}

/// How long a connection waits for another one's write transaction before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn pragma(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(sql)?;
    let mut rows = stmt.query([])?;
    while rows.next()?.is_some() {}
    Ok(())
}

/// Opens (creating if needed) the database for writing and brings its schema up to date.
/// `synchronous_full`: fsync every commit (`FULL`) or only the WAL at checkpoints (`NORMAL`).
pub(crate) fn open_writer(
    path: &Path,
    synchronous_full: bool,
    cache_kib: u32,
) -> Result<Connection, ActivityError> {
    let open = |source| ActivityError::Open {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| ActivityError::Dir {
            path: path.to_path_buf(),
            source,
        })?;
    }
    let conn = Connection::open(path).map_err(open)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open)?;
    // Before any table exists: pages freed by retention can be given back to the file system.
    pragma(&conn, "PRAGMA auto_vacuum = INCREMENTAL").map_err(open)?;
    pragma(&conn, "PRAGMA journal_mode = WAL").map_err(open)?;
    let sync = if synchronous_full { "FULL" } else { "NORMAL" };
    pragma(&conn, &format!("PRAGMA synchronous = {sync}")).map_err(open)?;
    pragma(&conn, &format!("PRAGMA cache_size = -{cache_kib}")).map_err(open)?;
    pragma(&conn, "PRAGMA temp_store = MEMORY").map_err(open)?;
    pragma(&conn, "PRAGMA journal_size_limit = 67108864").map_err(open)?;
    migrate(&conn, path)?;
    conn.execute_batch(ADDED)
        .map_err(ActivityError::sql("creating the added indexes"))?;
    optimize(&conn, true)?;
    Ok(conn)
}

fn migrate(conn: &Connection, path: &Path) -> Result<(), ActivityError> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(ActivityError::sql("reading the schema version"))?;
    if version > SCHEMA_VERSION {
        return Err(ActivityError::TooNew {
            path: path.to_path_buf(),
            found: version,
            known: SCHEMA_VERSION,
        });
    }
    if version < 1 {
        let tx = conn
            .unchecked_transaction()
            .map_err(ActivityError::sql("starting the schema migration"))?;
        tx.execute_batch(V1)
            .map_err(ActivityError::sql("creating the tables"))?;
        tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
            .map_err(ActivityError::sql("writing the schema version"))?;
        tx.commit()
            .map_err(ActivityError::sql("committing the schema"))?;
    }
    Ok(())
}

/// Opens a connection to an existing database with the busy timeout.
fn connect(path: &Path, flags: OpenFlags) -> Result<Connection, ActivityError> {
    let open = |source| ActivityError::Open {
        path: path.to_path_buf(),
        source,
    };
    let conn =
        Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX).map_err(open)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open)?;
    Ok(conn)
}

/// Opens the background WAL checkpointer's connection (read-write; it commits nothing).
pub(crate) fn open_checkpointer(path: &Path) -> Result<Connection, ActivityError> {
    connect(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
}

/// Opens a read-only connection. It never blocks the writer, nor the writer it (WAL): it
/// reads the last commit made before each of its statements began.
pub fn open_reader(path: &Path) -> Result<Connection, ActivityError> {
    if !path.exists() {
        return Err(ActivityError::Missing(path.to_path_buf()));
    }
    let open = |source| ActivityError::Open {
        path: path.to_path_buf(),
        source,
    };
    let conn = connect(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    pragma(&conn, "PRAGMA query_only = ON").map_err(open)?;
    pragma(&conn, "PRAGMA cache_size = -8192").map_err(open)?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(open)?;
    if version > SCHEMA_VERSION {
        return Err(ActivityError::TooNew {
            path: path.to_path_buf(),
            found: version,
            known: SCHEMA_VERSION,
        });
    }
    if version < 1 {
        return Err(ActivityError::Missing(path.to_path_buf()));
    }
    Ok(conn)
}
