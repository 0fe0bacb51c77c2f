//! The writer: one connection that stores batches of encoded records, exactly once.
//!
//! A batch is one transaction. A record whose id is already stored (a batch delivered again
//! after a crash, the same audit event from the webhook and the file) is skipped by the
//! unique index on `id`, so delivering the same batch twice stores it once.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};

use crate::ActivityError;
use crate::extract::Activity;
use crate::schema;

/// How the writer opens the database.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// fsync every commit (`synchronous = FULL`, the default): a batch acknowledged to the
    /// pipeline survives a power loss. `false` (`NORMAL`) survives a crash of the process only.
    pub synchronous_full: bool,
    /// The writer's page cache, KiB.
    pub cache_kib: u32,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            synchronous_full: true,
            cache_kib: 16 * 1024,
        }
    }
}

/// What a batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InsertStats {
    /// Records stored.
    pub inserted: usize,
    /// Records whose id was already stored.
    pub duplicates: usize,
}

/// The activity database's writer.
pub struct ActivityWriter {
    conn: Connection,
    path: PathBuf,
    /// Records stored since the planner's statistics were last brought up to date.
    since_optimize: u64,
}

const INSERT: &str = "INSERT INTO records (id, time, kind, api_group, resource, object_kind, \
    subresource, namespace, name, uid, owner_kind, owner_name, owner_uid, mention_resource, \
    mention_name, verb, stage, username, impersonated, groups, source_ip, user_agent, \
    response_code, reason, event_type, component, record) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
    ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27) ON CONFLICT (id) DO NOTHING";

const INSERT_GROUP: &str = "INSERT OR IGNORE INTO record_groups (grp, seq) VALUES (?1, ?2)";

impl ActivityWriter {
    /// Opens (creating or migrating) the database at `path`.
    pub fn open(path: &Path, opts: &WriterOptions) -> Result<ActivityWriter, ActivityError> {
        let conn = schema::open_writer(path, opts.synchronous_full, opts.cache_kib)?;
        Ok(ActivityWriter {
            conn,
            path: path.to_path_buf(),
            since_optimize: 0,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores a batch of `(record id, encoded record)` in one transaction. `now` (nanoseconds
    /// since the Unix epoch) is the time of records that carry none.
    pub fn insert<'a>(
        &mut self,
        records: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        now: i64,
    ) -> Result<InsertStats, ActivityError> {
        let tx = self
            .conn
            .transaction()
            .map_err(ActivityError::sql("starting a batch"))?;
        let mut stats = InsertStats::default();
        {
            let mut insert = tx
                .prepare_cached(INSERT)
                .map_err(ActivityError::sql("preparing the insert"))?;
            let mut group = tx
                .prepare_cached(INSERT_GROUP)
                .map_err(ActivityError::sql("preparing the group insert"))?;
            for (id, data) in records {
                let a = Activity::from_record(data);
                let record = String::from_utf8_lossy(data);
                let groups = (!a.groups.is_empty())
                    .then(|| serde_json::to_string(&a.groups).unwrap_or_default());
                let owner = a.owner.as_ref();
                let (mention_resource, mention_name) = match &a.mention {
                    Some((r, n)) => (Some(r.as_str()), Some(n.as_str())),
                    None => (None, None),
                };
                let n = insert
                    .execute(params![
                        id,
                        a.time.unwrap_or(now),
                        a.kind.as_deref().unwrap_or("unknown"),
                        a.api_group,
                        a.resource,
                        a.object_kind,
                        a.subresource,
                        a.namespace,
                        a.name,
                        a.uid,
                        owner.map(|o| o.kind.as_str()),
                        owner.map(|o| o.name.as_str()),
                        owner.map(|o| o.uid.as_str()).filter(|u| !u.is_empty()),
                        mention_resource,
                        mention_name,
                        a.verb,
                        a.stage,
                        a.username,
                        a.impersonated,
                        groups,
                        a.source_ip,
                        a.user_agent,
                        a.response_code,
                        a.reason,
                        a.event_type,
                        a.component,
                        record.as_ref(),
                    ])
                    .map_err(ActivityError::sql("inserting a record"))?;
                if n == 0 {
                    stats.duplicates += 1;
                    continue;
                }
                stats.inserted += 1;
                let seq = tx.last_insert_rowid();
                for g in &a.groups {
                    group
                        .execute(params![g, seq])
                        .map_err(ActivityError::sql("inserting a group"))?;
                }
            }
        }
        tx.commit()
            .map_err(ActivityError::sql("committing a batch"))?;
        self.since_optimize += stats.inserted as u64;
        if self.since_optimize >= schema::OPTIMIZE_EVERY {
            self.since_optimize = 0;
            schema::optimize(&self.conn, false)?;
        }
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audit(i: usize, user: &str) -> (String, String) {
        let id = format!("a-{i}/ResponseComplete");
        let rec = format!(
            r#"{{"id":"{id}","time":"2026-12-06T23:0{m}:00Z","kind":"k8s_audit","source":"audit_file.0","verb":"delete","user":{{"username":"{user}","groups":["dev","system:authenticated"]}},"object_ref":{{"resource":"pods","namespace":"shop","name":"web-{i}"}},"response_code":200}}"#,
            m = i % 10
        );
        (id, rec)
    }

    #[test]
    fn a_batch_delivered_twice_is_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("activity.db");
        let mut w = ActivityWriter::open(&path, &WriterOptions::default()).unwrap();
        let batch: Vec<(String, String)> = (0..50).map(|i| audit(i, "alice")).collect();
        let items = || batch.iter().map(|(i, r)| (i.as_str(), r.as_bytes()));
        assert_eq!(
            w.insert(items(), 0).unwrap(),
            InsertStats {
                inserted: 50,
                duplicates: 0
            }
        );
        assert_eq!(
            w.insert(items(), 0).unwrap(),
            InsertStats {
                inserted: 0,
                duplicates: 50
            }
        );
        drop(w);
        // Reopening migrates nothing and keeps everything.
        let w = ActivityWriter::open(&path, &WriterOptions::default()).unwrap();
        drop(w);
        let r = schema::open_reader(&path).unwrap();
        let n: i64 = r
            .query_row("SELECT count(*) FROM records", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 50);
        let g: i64 = r
            .query_row(
                "SELECT count(*) FROM record_groups WHERE grp = 'dev'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(g, 50);
        let (name, user): (String, String) = r
            .query_row(
                "SELECT name, username FROM records WHERE id = 'a-7/ResponseComplete'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((name.as_str(), user.as_str()), ("web-7", "alice"));
    }

    #[test]
    fn records_without_time_or_shape_are_stored_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let mut w = ActivityWriter::open(&path, &WriterOptions::default()).unwrap();
        let s = w
            .insert(
                [
                    ("x", &b"not json \xff"[..]),
                    ("y", br#"{"id":"y","kind":"error"}"#),
                ],
                42,
            )
            .unwrap();
        assert_eq!(s.inserted, 2);
        let r = schema::open_reader(&path).unwrap();
        let (t, k): (i64, String) = r
            .query_row("SELECT time, kind FROM records WHERE id = 'x'", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((t, k.as_str()), (42, "unknown"));
    }

    #[test]
    fn a_reader_refuses_a_missing_database() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            schema::open_reader(&dir.path().join("none.db")),
            Err(ActivityError::Missing(_))
        ));
    }
}

#[cfg(test)]
mod concurrency {
    use super::*;
    use std::time::{Duration, Instant};

    /// A reader in the middle of a long read transaction (a `who` walking a big story) does
    /// not hold the writer up, and keeps seeing the snapshot it started with.
    #[test]
    fn a_reader_never_blocks_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let mut w = ActivityWriter::open(&path, &WriterOptions::default()).unwrap();
        let rec = |i: usize| {
            (
                format!("r{i}"),
                format!(
                    r#"{{"id":"r{i}","time":"2026-12-06T23:00:00Z","kind":"k8s_event","source":"s"}}"#
                ),
            )
        };
        let first: Vec<(String, String)> = (0..100).map(rec).collect();
        w.insert(first.iter().map(|(i, r)| (i.as_str(), r.as_bytes())), 0)
            .unwrap();
        let reader = crate::open_reader(&path).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        let before: i64 = reader
            .query_row("SELECT count(*) FROM records", [], |r| r.get(0))
            .unwrap();
        assert_eq!(before, 100);
        let t = Instant::now();
        for b in 1..20 {
            let batch: Vec<(String, String)> = (b * 100..(b + 1) * 100).map(rec).collect();
            w.insert(batch.iter().map(|(i, r)| (i.as_str(), r.as_bytes())), 0)
                .unwrap();
        }
        // No wait on the reader's lock (the busy timeout is 10 s).
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        let during: i64 = reader
            .query_row("SELECT count(*) FROM records", [], |r| r.get(0))
            .unwrap();
        assert_eq!(during, 100, "the reader's snapshot");
        reader.execute_batch("COMMIT").unwrap();
        let after: i64 = reader
            .query_row("SELECT count(*) FROM records", [], |r| r.get(0))
            .unwrap();
        assert_eq!(after, 2000);
    }
}
