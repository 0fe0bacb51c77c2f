//! The activity database's tables and indexes, its migrations, and how connections to it are
//! opened (the writer's, its WAL checkpointer's, retention's and readers').
//!
//! One row per record in `records`, keyed by `seq` (the order records were stored in: the
//! position live readers follow) and unique by `(time, id)` (the record id: exactly once; a
//! record's time is read from the record itself, so a record delivered again has the same).
//! Times are nanoseconds since the Unix epoch. The indexes serve the questions `kubetrail
//! who`, `kubetrail activity` and the activity page ask:
//!
//! | index | serves |
//! |---|---|
//! | `records_time_id (time, id)` | exactly once; the timeline; retention by age and size |
//! | `records_kind (kind, time)` | one kind of record (gaps; whether audit events or Events are there at all) |
//! | `records_resource (resource, time)` | a type of objects' timeline (`object=pods`) |
//! | `records_user (username, time)`, `records_impersonated (impersonated, time)`, `records_groups (groups, time)` with `group_sets` | what an actor did |
//! | `records_namespace (namespace, time)` | a namespace's timeline |
//! | `records_verb (verb, time)` | by verb |
//! | `records_reason (reason, time)` | Events by reason |
//! | `records_warning (time) WHERE event_type = 'Warning'` | Warning Events only |
//! | `records_failed (time) WHERE response_code >= 400` | failed requests only |
//! | *bucketed:* `records_object (bucket, resource, name, namespace, time)` | one object's story |
//! | `records_uid (bucket, uid, time)`, `records_owner (bucket, owner_uid, time)` | ownership: an object by uid, what an owner made |
//! | `records_mention (bucket, mention_resource, mention_name, namespace, time)` | Events naming an object in their message |
//! | `records_id (bucket, id)` | one record by its id (the record page) |
//!
//! **Buckets.** The keys of the last five indexes arrive in random order (names, uids, record
//! ids). Kept as plain indexes, every record dirtied one leaf page of each once they outgrew
//! the page cache, and every commit wrote thousands of pages. So each of them starts with the
//! record's bucket, `seq >> BUCKET_SHIFT` (16,384 consecutive records): a batch's entries all
//! land in the current bucket's small region of each index, whose pages stay few and cached.
//! The table `buckets` keeps each bucket's oldest and newest record time (the writer updates
//! it in the batch's transaction); a read through these indexes probes each bucket of its
//! time range ([`BUCKETS_CTE`]), a few microseconds each.
//!
//! **Shards.** A store may be kept in several files (`shards.rs`), each with this schema; the
//! table `shard` (version 3) says how many, which one a file is, and how far the batches it
//! has committed reach. Positions (`seq`) are then the store's, given by its writer.
//!
//! Partial indexes (`WHERE x IS NOT NULL`) keep the columns one kind of record never fills
//! out of the indexes of the other. Indexes added after version 1 ([`ADDED`]) are created
//! when the writer opens the database, without a new schema version: a reader that does
//! not know them still reads the database. Version 2 (the bucketed indexes) is a migration
//! ([`V2`]): on a big store the first open after the upgrade rebuilds those indexes (300 s for
//! 10 million records on a 2-core machine). Version 3 ([`V3`]) adds the table `shard` and
//! indexes the records' groups by their lists (a minute or two per 10 million records).
//!
//! The writer keeps the query planner's statistics current (`PRAGMA optimize`, which runs
//! `ANALYZE` on a sample of each index where the data changed enough) when it opens the
//! database and every [`OPTIMIZE_EVERY`] records it stores.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::ActivityError;

/// The schema version this code writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 3;

/// A record's bucket is `seq >> BUCKET_SHIFT`: 16,384 consecutive records.
pub const BUCKET_SHIFT: u32 = 14;

/// The buckets a read through a bucketed index probes: `b(x)`, every bucket whose records'
/// times meet the window `[?1, ?2)` (nanoseconds; `i64::MIN`, `i64::MAX` for none), and,
/// whatever the window, buckets past the last one `buckets` knows up to the newest record
/// (none while the writer keeps `buckets` current). Its two parameters come first in the
/// statement, numbered, so the rest of the statement can use plain `?` after them.
pub const BUCKETS_CTE: &str = "WITH RECURSIVE \
    tail(x) AS (SELECT coalesce((SELECT max(bucket) FROM buckets) + 1, 0) \
        UNION ALL SELECT x + 1 FROM tail \
        WHERE x < (SELECT max(seq) FROM records) >> 14), \
    b(x) AS (SELECT bucket FROM buckets WHERE max_time >= ?1 AND min_time < ?2 \
        UNION SELECT x FROM tail) ";

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

/// Version 2: the indexes whose keys arrive in random order become bucketed (see the module's
/// comment); the record id is unique with its time, which also makes the time index.
pub const V2: &str = "
DROP INDEX IF EXISTS records_id;
DROP INDEX IF EXISTS records_time;
DROP INDEX IF EXISTS records_object;
DROP INDEX IF EXISTS records_uid;
DROP INDEX IF EXISTS records_owner;
DROP INDEX IF EXISTS records_mention;
CREATE UNIQUE INDEX records_time_id ON records (time, id);
CREATE INDEX records_id ON records ((seq >> 14), id);
CREATE INDEX records_object ON records ((seq >> 14), resource, name, namespace, time);
CREATE INDEX records_uid ON records ((seq >> 14), uid, time) WHERE uid IS NOT NULL;
CREATE INDEX records_owner ON records ((seq >> 14), owner_uid, time) WHERE owner_uid IS NOT NULL;
CREATE INDEX records_mention ON records ((seq >> 14), mention_resource, mention_name, namespace, time)
    WHERE mention_name IS NOT NULL;
CREATE TABLE buckets (
    bucket INTEGER PRIMARY KEY,
    min_time INTEGER NOT NULL,
    max_time INTEGER NOT NULL
);
INSERT INTO buckets SELECT seq >> 14, min(time), max(time) FROM records GROUP BY seq >> 14;
";

/// Version 3: the table `shard`, one row: how many shard files the store has (`count`; see
/// `shards.rs`), which one this file is (`number`), and the position through which every
/// batch given to the store is committed in this file (`through`: a batch's last position,
/// whether or not any of its records belong here). A store written before has one shard.
///
/// And a record's groups are found through its `groups` column (the JSON list, indexed with
/// the time) and the table `group_sets` (each list stored, once), instead of a row per group
/// and record in `record_groups`: two or three B-tree inserts fewer per audit record. A
/// group's records are those whose list is one of the lists naming it.
pub const V3: &str = "
CREATE TABLE shard (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    count INTEGER NOT NULL CHECK (count >= 1),
    number INTEGER NOT NULL CHECK (number >= 0 AND number < count),
    through INTEGER NOT NULL
);
INSERT INTO shard (id, count, number, through) SELECT 0, 1, 0, coalesce(max(seq), 0) FROM records;
CREATE TABLE group_sets (groups TEXT PRIMARY KEY) WITHOUT ROWID;
INSERT OR IGNORE INTO group_sets SELECT DISTINCT groups FROM records WHERE groups IS NOT NULL;
CREATE INDEX records_groups ON records (groups, time) WHERE groups IS NOT NULL;
DROP TABLE record_groups;
";

/// Indexes created, if missing, at every open of the writer (added after version 1). On a
/// big store the first open after an upgrade builds them (a minute or two per 10 million
/// records) before the writer starts.
pub const ADDED: &str = "
CREATE INDEX IF NOT EXISTS records_resource ON records (resource, time) WHERE resource IS NOT NULL;
";

/// A reader connection's page cache, KiB (a store in several files shares it between them).
pub const READER_CACHE_KIB: u32 = 8192;

/// Sets a connection's page cache, KiB.
pub fn set_cache_kib(conn: &Connection, kib: u32) -> Result<(), ActivityError> {
    pragma(conn, &format!("PRAGMA cache_size = -{kib}"))
        .map_err(ActivityError::sql("setting the page cache"))
}

/// The page size of a new database (bytes).
pub const PAGE_SIZE: u32 = 8192;

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
    // Before any table exists (a database keeps the page size it was made with): with the
    // random-keyed indexes bucketed, 8 KiB pages store 10-15 % more records/s than 4 KiB
    // (fewer B-tree levels and splits) in a 7 % smaller file. Pages freed by retention can be
    // given back to the file system.
    pragma(&conn, &format!("PRAGMA page_size = {PAGE_SIZE}")).map_err(open)?;
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
    if version >= SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn
        .unchecked_transaction()
        .map_err(ActivityError::sql("starting the schema migration"))?;
    if version < 1 {
        tx.execute_batch(V1)
            .map_err(ActivityError::sql("creating the tables"))?;
    } else if version < 2 {
        let records: i64 = tx
            .query_row("SELECT count(*) FROM records", [], |r| r.get(0))
            .map_err(ActivityError::sql("counting the records"))?;
        tracing::info!(
            path = %path.display(),
            records,
            from = version,
            to = SCHEMA_VERSION,
            "upgrading the activity database (rebuilding five indexes)"
        );
    }
    if version < 2 {
        tx.execute_batch(V2)
            .map_err(ActivityError::sql("migrating to schema version 2"))?;
    }
    tx.execute_batch(V3)
        .map_err(ActivityError::sql("migrating to schema version 3"))?;
    tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
        .map_err(ActivityError::sql("writing the schema version"))?;
    tx.commit()
        .map_err(ActivityError::sql("committing the schema"))?;
    Ok(())
}

/// Brings an existing database written by an earlier version up to this version's schema (as
/// the `store` output does when it opens it), so that `kubetrail who` can read it. Returns
/// whether it had to.
pub fn upgrade(path: &Path) -> Result<bool, ActivityError> {
    let conn = connect(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(ActivityError::sql("reading the schema version"))?;
    if !(1..SCHEMA_VERSION).contains(&version) {
        return Ok(false);
    }
    migrate(&conn, path)?;
    Ok(true)
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
    pragma(&conn, &format!("PRAGMA cache_size = -{READER_CACHE_KIB}")).map_err(open)?;
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
    if version < SCHEMA_VERSION {
        return Err(ActivityError::TooOld {
            path: path.to_path_buf(),
            found: version,
        });
    }
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ActivityWriter, WriterOptions};

    fn audit(i: usize) -> (String, String) {
        let id = format!("a-{i}/ResponseComplete");
        let rec = format!(
            r#"{{"id":"{id}","time":"2026-12-06T23:00:{s:02}.5Z","kind":"k8s_audit","source":"s","verb":"get","user":{{"username":"alice","groups":["dev","system:authenticated"]}},"object_ref":{{"resource":"pods","namespace":"shop","name":"web-{i}","uid":"u-{i}"}},"response_code":200}}"#,
            s = i % 60
        );
        (id, rec)
    }

    fn store(w: &mut ActivityWriter, from: usize, to: usize) -> crate::InsertStats {
        let recs: Vec<(String, String)> = (from..to).map(audit).collect();
        w.insert(recs.iter().map(|(i, r)| (i.as_str(), r.as_bytes())), 0)
            .unwrap()
    }

    fn indexes(c: &Connection) -> Vec<(String, String)> {
        let mut s = c
            .prepare("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name")
            .unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// A new store has the page size chosen for it; one made with another keeps its own.
    #[test]
    fn a_new_store_has_its_page_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        drop(ActivityWriter::open(&path, &WriterOptions::default()).unwrap());
        let size = |p: &Path| -> i64 {
            open_reader(p)
                .unwrap()
                .query_row("PRAGMA page_size", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(size(&path), i64::from(PAGE_SIZE));
        let old = dir.path().join("old.db");
        {
            let c = Connection::open(&old).unwrap();
            c.execute_batch(
                "PRAGMA page_size = 4096; PRAGMA journal_mode = WAL; CREATE TABLE t (x)",
            )
            .unwrap();
            c.execute_batch("DROP TABLE t").unwrap();
        }
        let mut w = ActivityWriter::open(&old, &WriterOptions::default()).unwrap();
        store(&mut w, 0, 10);
        drop(w);
        assert_eq!(size(&old), 4096);
    }

    /// The bucket's shift is written out in the SQL: the constant and the SQL agree.
    #[test]
    fn the_sql_buckets_records_as_the_constant_says() {
        let shift = format!("(seq >> {BUCKET_SHIFT})");
        assert_eq!(V2.matches(&shift).count(), 5, "{V2}");
        assert_eq!(V2.matches(">> ").count(), 7, "{V2}");
        assert!(
            BUCKETS_CTE.contains(&format!(">> {BUCKET_SHIFT})")),
            "{BUCKETS_CTE}"
        );
    }

    /// A store written by version 1 (its indexes, no `buckets`) is upgraded at the writer's
    /// open: its records kept, found through the new indexes, and still stored only once
    /// when delivered again.
    #[test]
    fn a_version_1_store_is_upgraded_with_its_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let mut w = ActivityWriter::open(&path, &WriterOptions::default()).unwrap();
        store(&mut w, 0, 100);
        drop(w);
        // Back to version 1's layout: its indexes, no buckets.
        {
            let c = Connection::open(&path).unwrap();
            for (name, _) in indexes(&c) {
                c.execute_batch(&format!("DROP INDEX {name}")).unwrap();
            }
            let start = V1.find("CREATE UNIQUE INDEX").unwrap();
            c.execute_batch(&V1[start..]).unwrap();
            c.execute_batch(
                "INSERT INTO record_groups SELECT j.value, r.seq FROM records r, json_each(r.groups) j;
                 DROP TABLE buckets; DROP TABLE shard; DROP TABLE group_sets;
                 PRAGMA user_version = 1",
            )
            .unwrap();
        }
        // A reader does not read it as it is: it asks for the upgrade.
        assert!(matches!(
            open_reader(&path),
            Err(ActivityError::TooOld { found: 1, .. })
        ));
        assert!(upgrade(&path).unwrap());
        assert!(!upgrade(&path).unwrap(), "once");
        let c = open_reader(&path).unwrap();
        let names: Vec<String> = indexes(&c).into_iter().map(|(n, _)| n).collect();
        for n in [
            "records_time_id",
            "records_id",
            "records_object",
            "records_uid",
            "records_groups",
        ] {
            assert!(names.iter().any(|x| x == n), "{names:?}");
        }
        assert!(!names.iter().any(|x| x == "records_time"), "{names:?}");
        // The groups: one row per record and group before, one list now.
        let (tables, sets, dev): (i64, i64, i64) = c
            .query_row(
                "SELECT (SELECT count(*) FROM sqlite_master WHERE name = 'record_groups'), \
                 (SELECT count(*) FROM group_sets), \
                 (SELECT count(*) FROM records WHERE groups IN (SELECT groups FROM group_sets \
                  WHERE EXISTS (SELECT 1 FROM json_each(group_sets.groups) WHERE value = 'dev')))",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((tables, sets, dev), (0, 1, 100));
        let (b, n): (i64, i64) = c
            .query_row(
                "SELECT count(*), sum(max_time >= min_time) FROM buckets",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((b, n), (1, 1));
        drop(c);
        let mut w = ActivityWriter::open(&path, &WriterOptions::default()).unwrap();
        let again = store(&mut w, 50, 150);
        assert_eq!((again.inserted, again.duplicates), (50, 50));
        let c = open_reader(&path).unwrap();
        let n: i64 = c
            .query_row("SELECT count(*) FROM records", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 150);
    }
}
