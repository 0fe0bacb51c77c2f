//! The writer: one connection that stores batches of encoded records, exactly once.
//!
//! A batch is one transaction. A record whose id is already stored (a batch delivered again
//! after a crash, the same audit event from the webhook and the file) is skipped by the
//! unique index on `(time, id)`, so delivering the same batch twice stores it once. The
//! writer of a store in several files is `shards.rs`'s, one of these per file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{Connection, params};

use crate::ActivityError;
use crate::extract::Activity;
use crate::schema;
use crate::shards::ShardRow;
use kubetrail_wal::{Checkpointer, Mode, Step, WalShared};

/// How the writer opens the database.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// fsync every commit (`synchronous = FULL`, the default): a batch acknowledged to the
    /// pipeline survives a power loss. `false` (`NORMAL`) survives a crash of the process only.
    pub synchronous_full: bool,
    /// The writer's page cache, KiB.
    pub cache_kib: u32,
    /// The WAL length, bytes, at which it is copied into the database file and started over
    /// (in the background from there; by the writer at four times it: see checkpointer.rs).
    pub wal_checkpoint_bytes: u64,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            synchronous_full: true,
            cache_kib: CACHE_KIB,
            wal_checkpoint_bytes: WAL_CHECKPOINT_BYTES,
        }
    }
}

/// The writer's page cache, KiB. A batch of 2,000 records dirties up to ~7,000 pages on a
/// store of a million records (the indexes keyed by id, object, uid and owner take their
/// keys in random order: one leaf per record each); with a smaller cache the batch spills
/// pages into the WAL before its commit (written twice when dirtied again) and reads index
/// leaves back from the file. 40 MiB keeps a batch's pages and the indexes' inner pages:
/// the `store` output's benchmark stays under 64 MiB of RSS.
pub const CACHE_KIB: u32 = 40 * 1024;

/// The WAL length at which it is checkpointed. A batch of 2,000 records writes up to a few
/// tens of MiB of WAL on a big store (every index leaf it touches is a frame); a larger WAL
/// copies a page rewritten by several batches into the database file once, at the cost of
/// up to four times this much WAL on disk when checkpoints fall behind.
pub const WAL_CHECKPOINT_BYTES: u64 = 64 << 20;

/// How long the writer waits for a running background checkpoint once the WAL reached its
/// hard limit (four times `wal_checkpoint_bytes`).
const FORCE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

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
    // Field order matters: fields drop in declaration order, so the checkpoint thread has
    // stopped before the connection closes (SQLite's last checkpoint on close is then the
    // writer's), and the WAL hook's `WalShared` outlives the connection.
    _checkpointer: Checkpointer,
    conn: Connection,
    wal: Arc<WalShared>,
    /// `wal_checkpoint_bytes` in pages.
    wal_threshold: u64,
    path: PathBuf,
    /// Records stored since the planner's statistics were last brought up to date.
    since_optimize: u64,
    /// The position the next record stored through [`ActivityWriter::insert`] gets.
    next_seq: i64,
}

const INSERT: &str = "INSERT INTO records (seq, id, time, kind, api_group, resource, object_kind, \
    subresource, namespace, name, uid, owner_kind, owner_name, owner_uid, mention_resource, \
    mention_name, verb, stage, username, impersonated, groups, source_ip, user_agent, \
    response_code, reason, event_type, component, record) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
    ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28) ON CONFLICT (time, id) DO NOTHING";

/// Moves the shard's `through` to a batch's last position, in the batch's transaction.
const SET_THROUGH: &str = "UPDATE shard SET through = max(through, ?1)";

/// The position after the newest one this file has stored or seen a batch through.
const NEXT_SEQ: &str = "SELECT max(coalesce((SELECT max(seq) FROM records), 0), \
    (SELECT through FROM shard)) + 1";

/// A list of groups stored (once: few distinct lists).
const INSERT_GROUP_SET: &str = "INSERT OR IGNORE INTO group_sets (groups) VALUES (?1)";

/// Widens a bucket's time range by a batch's records in it.
const UPSERT_BUCKET: &str = "INSERT INTO buckets (bucket, min_time, max_time) VALUES (?1, ?2, ?3) \
    ON CONFLICT (bucket) DO UPDATE SET min_time = min(min_time, excluded.min_time), \
    max_time = max(max_time, excluded.max_time)";

/// Whether a record id is stored already, whatever its time: for a record that carries no
/// time of its own (it is stored at the time it was delivered, so a second delivery would
/// not meet the first on `(time, id)`). Such records are rare (what could not be parsed);
/// this probes every bucket's part of `records_id`.
static ID_STORED: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{} SELECT 1 FROM b CROSS JOIN records r WHERE (r.seq >> {}) = b.x AND r.id = ?3 LIMIT 1",
        schema::BUCKETS_CTE,
        schema::BUCKET_SHIFT
    )
});

/// The time range of a batch's records in each bucket it wrote to (a batch usually writes
/// to one or two).
#[derive(Default)]
struct BatchBuckets(Vec<(i64, i64, i64)>);

impl BatchBuckets {
    fn add(&mut self, seq: i64, time: i64) {
        let bucket = seq >> schema::BUCKET_SHIFT;
        match self.0.iter_mut().find(|(b, _, _)| *b == bucket) {
            Some((_, lo, hi)) => {
                *lo = (*lo).min(time);
                *hi = (*hi).max(time);
            }
            None => self.0.push((bucket, time, time)),
        }
    }
}

impl ActivityWriter {
    /// Opens (creating or migrating) the database at `path`.
    pub fn open(path: &Path, opts: &WriterOptions) -> Result<ActivityWriter, ActivityError> {
        // Made before the connection, so that it is dropped after it on every early return
        // below (the WAL hook points into it).
        let wal = Arc::new(WalShared::default());
        let conn = schema::open_writer(path, opts.synchronous_full, opts.cache_kib)?;
        let page: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(ActivityError::sql("reading the page size"))?;
        let wal_threshold =
            (opts.wal_checkpoint_bytes / u64::try_from(page).unwrap_or(4096).max(512)).max(1);
        // From here on the WAL hook follows the WAL's length and the automatic checkpoint is
        // off: checkpoints are the background thread's and `after_commit`'s.
        kubetrail_wal::install_hook(&conn, &wal);
        let sync = if opts.synchronous_full {
            "FULL"
        } else {
            "NORMAL"
        };
        let ckpt = Checkpointer::start(
            schema::open_checkpointer(path)?,
            sync,
            "activity",
            wal.clone(),
        )
        .map_err(|source| ActivityError::Checkpointer { source })?;
        // The WAL file is cut back to this when it starts over: twice the threshold is more
        // than a WAL grows to while checkpoints keep up, so it is then reused in place.
        schema::pragma(
            &conn,
            &format!(
                "PRAGMA journal_size_limit = {}",
                opts.wal_checkpoint_bytes
                    .saturating_mul(2)
                    .min(i64::MAX as u64)
            ),
        )
        .map_err(ActivityError::sql("limiting the WAL's size"))?;
        let next_seq = conn
            .query_row(NEXT_SEQ, [], |r| r.get(0))
            .map_err(ActivityError::sql("reading the newest position"))?;
        Ok(ActivityWriter {
            _checkpointer: ckpt,
            conn,
            wal,
            wal_threshold,
            path: path.to_path_buf(),
            since_optimize: 0,
            next_seq,
        })
    }

    /// This file's row of the table `shard`.
    pub fn shard(&self) -> Result<ShardRow, ActivityError> {
        crate::shards::read_row(&self.conn)
    }

    /// Makes this file shard `number` of `count` (only for a store that holds no record yet:
    /// the shards a record goes to depend on the count).
    pub(crate) fn set_shard(&mut self, count: usize, number: usize) -> Result<(), ActivityError> {
        if !self.is_empty()? {
            return Err(ActivityError::Shards(format!(
                "{} holds records: its shard count cannot change",
                self.path.display()
            )));
        }
        self.conn
            .execute(
                "UPDATE shard SET count = ?1, number = ?2",
                params![count as i64, number as i64],
            )
            .map_err(ActivityError::sql("writing the shard count"))?;
        Ok(())
    }

    /// The position the next record stored through [`ActivityWriter::insert`] gets.
    pub fn next_seq(&self) -> i64 {
        self.next_seq
    }

    /// Whether the file holds no record.
    pub fn is_empty(&self) -> Result<bool, ActivityError> {
        self.conn
            .query_row("SELECT NOT EXISTS (SELECT 1 FROM records)", [], |r| {
                r.get(0)
            })
            .map_err(ActivityError::sql("looking for records"))
    }

    /// Sets the page cache, KiB.
    pub(crate) fn set_cache_kib(&self, kib: u32) -> Result<(), ActivityError> {
        schema::set_cache_kib(&self.conn, kib)
    }

    /// After a write transaction: wakes the background checkpointer, or checkpoints on this
    /// connection (see the kubetrail-wal crate). Every checkpoint of the writer's is PASSIVE:
    /// none waits for a reader, so a `kubetrail who` holding a snapshot never stalls delivery
    /// (what its snapshot needs stays in the WAL, which starts over at the first commit after
    /// it lets go). A failed checkpoint is only logged: the commit it follows is durable, and
    /// the next commits try again.
    fn after_commit(&self) {
        let wait = match self.wal.step(self.wal_threshold) {
            Step::None => return,
            Step::Background => {
                self.wal.wake_background();
                return;
            }
            Step::Finish => None,
            // At the hard limit: first wait for a running background checkpoint.
            Step::Force => Some(FORCE_WAIT),
        };
        match self.wal.writer_checkpoint(&self.conn, Mode::Passive, wait) {
            Ok(Some((log, copied))) => {
                tracing::debug!(
                    log,
                    copied,
                    "writer WAL checkpoint of the activity database"
                );
                if copied < log {
                    // A reader's snapshot keeps the rest; the background copies it later.
                    self.wal.wake_background();
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, wal_frames = self.wal.frames(), "writer WAL checkpoint of the activity database failed");
            }
        }
    }

    /// The page cache the connection has, KiB (what `cache_kib` asked for).
    pub fn cache_kib(&self) -> Result<u32, ActivityError> {
        let size: i64 = self
            .conn
            .query_row("PRAGMA cache_size", [], |r| r.get(0))
            .map_err(ActivityError::sql("reading the cache size"))?;
        // Negative: KiB; positive: pages.
        let kib = if size < 0 {
            size.unsigned_abs()
        } else {
            size.unsigned_abs() * self.page_size()? / 1024
        };
        Ok(u32::try_from(kib).unwrap_or(u32::MAX))
    }

    fn page_size(&self) -> Result<u64, ActivityError> {
        let page: i64 = self
            .conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(ActivityError::sql("reading the page size"))?;
        Ok(page.unsigned_abs())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores a batch of `(record id, encoded record)` in one transaction, at the positions
    /// after the newest one. `now` (nanoseconds since the Unix epoch) is the time of records
    /// that carry none.
    pub fn insert<'a>(
        &mut self,
        records: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        now: i64,
    ) -> Result<InsertStats, ActivityError> {
        let first = self.next_seq;
        let batch: Vec<(i64, &str, &[u8])> = records
            .into_iter()
            .zip(first..)
            .map(|((id, data), seq)| (seq, id, data))
            .collect();
        let through = first + batch.len() as i64 - 1;
        self.insert_at(batch, through, now)
    }

    /// Stores a batch of `(position, record id, encoded record)` in one transaction (a
    /// record whose id is stored already leaves its position unused) and moves the shard's
    /// `through` to `through`, the batch's last position (its records may be spread over
    /// several shards). Positions must be above every one stored before.
    pub fn insert_at<'a>(
        &mut self,
        records: impl IntoIterator<Item = (i64, &'a str, &'a [u8])>,
        through: i64,
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
            let mut buckets = BatchBuckets::default();
            // The batch's lists of groups, each once (a batch has a handful).
            let mut group_sets: Vec<String> = Vec::new();
            for (seq, id, data) in records {
                let a = Activity::from_record(data);
                if a.time.is_none() {
                    let stored = tx
                        .prepare_cached(&ID_STORED)
                        .and_then(|mut s| s.exists(params![i64::MIN, i64::MAX, id]))
                        .map_err(ActivityError::sql("looking for a record without a time"))?;
                    if stored {
                        stats.duplicates += 1;
                        continue;
                    }
                }
                let time = a.time.unwrap_or(now);
                // Checked in one pass; the lossy conversion (its chunked walk was 1 % of the
                // writer's samples) only for a record that is not UTF-8.
                let record = match std::str::from_utf8(data) {
                    Ok(s) => std::borrow::Cow::Borrowed(s),
                    Err(_) => String::from_utf8_lossy(data),
                };
                let groups = (!a.groups.is_empty())
                    .then(|| serde_json::to_string(&a.groups).unwrap_or_default());
                let owner = a.owner.as_ref();
                let (mention_resource, mention_name) = match &a.mention {
                    Some((r, n)) => (Some(r.as_str()), Some(n.as_str())),
                    None => (None, None),
                };
                let n = insert
                    .execute(params![
                        seq,
                        id,
                        time,
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
                        groups.as_deref(),
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
                buckets.add(seq, time);
                if let Some(g) = groups
                    && !group_sets.contains(&g)
                {
                    group_sets.push(g);
                }
            }
            for g in &group_sets {
                tx.prepare_cached(INSERT_GROUP_SET)
                    .and_then(|mut st| st.execute(params![g]))
                    .map_err(ActivityError::sql("storing a list of groups"))?;
            }
            let mut upsert = tx
                .prepare_cached(UPSERT_BUCKET)
                .map_err(ActivityError::sql("preparing the bucket update"))?;
            for (bucket, lo, hi) in buckets.0 {
                upsert
                    .execute(params![bucket, lo, hi])
                    .map_err(ActivityError::sql("updating a bucket's time range"))?;
            }
            tx.prepare_cached(SET_THROUGH)
                .and_then(|mut s| s.execute(params![through]))
                .map_err(ActivityError::sql("moving the shard's position"))?;
        }
        tx.commit()
            .map_err(ActivityError::sql("committing a batch"))?;
        self.next_seq = self.next_seq.max(through + 1);
        self.after_commit();
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
                "SELECT count(*) FROM records WHERE groups IN (SELECT groups FROM group_sets \
                 WHERE EXISTS (SELECT 1 FROM json_each(group_sets.groups) WHERE value = 'dev'))",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(g, 50);
        let sets: i64 = r
            .query_row("SELECT count(*) FROM group_sets", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sets, 1, "one list, stored once");
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
        let records = [
            ("x", &b"not json \xff"[..]),
            ("y", br#"{"id":"y","kind":"error"}"#),
        ];
        let s = w.insert(records, 42).unwrap();
        assert_eq!(s.inserted, 2);
        let r = schema::open_reader(&path).unwrap();
        let (t, k): (i64, String) = r
            .query_row("SELECT time, kind FROM records WHERE id = 'x'", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((t, k.as_str()), (42, "unknown"));
        // Delivered again later: stored at another time, but found by its id.
        let s = w.insert(records, 43).unwrap();
        assert_eq!((s.inserted, s.duplicates), (0, 2));
        let buckets: Vec<(i64, i64, i64)> = r
            .prepare("SELECT bucket, min_time, max_time FROM buckets")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(buckets, [(0, 42, 42)]);
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

#[cfg(test)]
mod wal {
    use super::*;
    use std::time::{Duration, Instant};

    /// 256 frames of the store's 8 KiB pages: several batches of the test's between two restarts.
    const WAL_BYTES: u64 = 2 << 20;

    fn batch(b: usize) -> Vec<(String, String)> {
        (b * 50..(b + 1) * 50)
            .map(|i| {
                let id = format!("{:016x}/ResponseComplete", (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                // A millisecond apart, as a busy apiserver's requests.
                let t = kubetrail_core::Timestamp::from_unix_nanos(1_796_600_000_000_000_000 + i as i64 * 1_000_000)
                    .to_rfc3339();
                let rec = format!(
                    r#"{{"id":"{id}","time":"{t}","kind":"k8s_audit","source":"s","verb":"get","user":{{"username":"u{u}"}},"object_ref":{{"resource":"pods","namespace":"ns","name":"p{i}"}},"pad":"{pad}"}}"#,
                    u = i % 7,
                    pad = "x".repeat(1000)
                );
                (id, rec)
            })
            .collect()
    }

    fn insert(w: &mut ActivityWriter, b: usize) {
        let recs = batch(b);
        w.insert(recs.iter().map(|(i, r)| (i.as_str(), r.as_bytes())), 0)
            .unwrap();
    }

    fn wal_file(path: &Path) -> u64 {
        let mut p = path.as_os_str().to_owned();
        p.push("-wal");
        std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
    }

    /// The WAL is checkpointed and started over while batches keep coming (never longer
    /// than the hard limit plus one batch); a reader holding a snapshot keeps what it needs
    /// in the WAL without holding the writer up, and once it lets go the WAL starts over
    /// and its file is cut back.
    #[test]
    fn the_wal_stays_bounded_and_starts_over_once_a_reader_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let opts = WriterOptions {
            wal_checkpoint_bytes: WAL_BYTES,
            ..WriterOptions::default()
        };
        let mut w = ActivityWriter::open(&path, &opts).unwrap();
        let t = w.wal_threshold;
        let (mut most, mut grow, mut restarts, mut b) = (0, 0, 0, 0);
        for _ in 0..200 {
            let before = w.wal.frames();
            insert(&mut w, b);
            b += 1;
            let after = w.wal.frames();
            if after < before {
                restarts += 1;
            } else {
                grow = grow.max(after - before);
            }
            most = most.max(after);
        }
        assert!(
            grow > 0 && grow < t,
            "a batch writes {grow} frames, threshold {t}"
        );
        assert!(restarts >= 3, "the WAL started over {restarts} times");
        assert!(w.wal.background_runs() > 0);
        assert!(
            most <= 4 * t + grow,
            "{most} frames in the WAL, threshold {t}"
        );

        // A reader's snapshot: what it reads must stay in the WAL, so the WAL grows.
        let reader = crate::open_reader(&path).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        let count = |c: &Connection| -> i64 {
            c.query_row("SELECT count(*) FROM records", [], |r| r.get(0))
                .unwrap()
        };
        let seen = count(&reader);
        let started = Instant::now();
        while w.wal.frames() <= 6 * t {
            insert(&mut w, b);
            b += 1;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(count(&reader), seen, "the reader's snapshot");
        let long = wal_file(&path);
        assert!(long > 6 * t * u64::from(schema::PAGE_SIZE), "{long}");

        // It lets go: the next commits copy the rest, start the WAL over and cut the file.
        reader.execute_batch("COMMIT").unwrap();
        drop(reader);
        for _ in 0..3 {
            insert(&mut w, b);
            b += 1;
        }
        assert!(
            w.wal.frames() < t,
            "{} frames, threshold {t}",
            w.wal.frames()
        );
        let cut = wal_file(&path);
        assert!(
            cut <= 2 * WAL_BYTES + (grow + 1) * (u64::from(schema::PAGE_SIZE) + 24) && cut < long,
            "{cut}"
        );
        let all = count(&crate::open_reader(&path).unwrap());
        assert_eq!(all, (b * 50) as i64);
    }
}
