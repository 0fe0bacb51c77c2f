//! Retention: records older than `max_age` are deleted, and the oldest records while the
//! database holds more than `max_size`, by a background thread with a connection of its own.
//!
//! Deletions run in small transactions (`chunk` records each) with a pause between them, so
//! the writer (delivery) never waits for more than one chunk. Pages freed by a size pass are
//! given back to the file system (`incremental_vacuum`, also in small steps), so the file
//! shrinks to what it holds.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, params};

use crate::ActivityError;
use crate::schema;

/// The retention policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// Records older than this (by their time) are deleted; `None` keeps them forever.
    pub max_age: Option<Duration>,
    /// The database's size (its pages in use) is kept under this many bytes by deleting the
    /// oldest records; `None` sets no limit.
    pub max_size: Option<u64>,
    /// How often the policy is enforced.
    pub interval: Duration,
    /// Records deleted per transaction.
    pub chunk: usize,
    /// The pause between two transactions, during which the writer gets the database.
    pub pause: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_age: Some(Duration::from_secs(30 * 86_400)),
            max_size: Some(8 << 30),
            interval: Duration::from_secs(60),
            chunk: 2000,
            pause: Duration::from_millis(20),
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Records deleted for their age.
    pub deleted_by_age: u64,
    /// Records deleted to bring the size under `max_size`.
    pub deleted_by_size: u64,
    /// The database's size after the pass (pages in use × page size).
    pub size_after: u64,
}

/// The database's pages in use, in bytes.
pub fn used_bytes(conn: &Connection) -> Result<u64, ActivityError> {
    let get = |sql: &str| -> Result<i64, ActivityError> {
        conn.query_row(sql, [], |r| r.get(0))
            .map_err(ActivityError::sql("reading the database size"))
    };
    let pages = get("PRAGMA page_count")?;
    let free = get("PRAGMA freelist_count")?;
    let size = get("PRAGMA page_size")?;
    Ok(u64::try_from((pages - free).max(0) * size).unwrap_or(0))
}

/// Deletes the oldest `chunk` records (by time), or those older than `before` when given.
/// Returns how many were deleted.
fn delete_chunk(
    conn: &mut Connection,
    before: Option<i64>,
    chunk: usize,
) -> Result<u64, ActivityError> {
    let tx = conn
        .transaction()
        .map_err(ActivityError::sql("starting a retention chunk"))?;
    let victims: Vec<i64> = {
        let mut stmt = tx
            .prepare_cached("SELECT seq FROM records WHERE time < ?1 ORDER BY time LIMIT ?2")
            .map_err(ActivityError::sql("preparing the retention query"))?;
        let chunk = i64::try_from(chunk).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![before.unwrap_or(i64::MAX), chunk], |r| r.get(0))
            .map_err(ActivityError::sql("finding records to delete"))?;
        rows.collect::<Result<_, _>>()
            .map_err(ActivityError::sql("finding records to delete"))?
    };
    {
        let mut del = tx
            .prepare_cached("DELETE FROM records WHERE seq = ?1")
            .map_err(ActivityError::sql("preparing the delete"))?;
        for seq in &victims {
            del.execute([seq])
                .map_err(ActivityError::sql("deleting a record"))?;
        }
    }
    // Buckets wholly before the oldest record left are probed no more. (A bucket's time range
    // is not narrowed when some of its records go: a wider range only costs a probe.)
    tx.execute(
        &format!(
            "DELETE FROM buckets WHERE bucket < coalesce((SELECT min(seq) FROM records) >> {}, 0)",
            crate::schema::BUCKET_SHIFT
        ),
        [],
    )
    .map_err(ActivityError::sql("forgetting emptied buckets"))?;
    tx.commit()
        .map_err(ActivityError::sql("committing a retention chunk"))?;
    Ok(victims.len() as u64)
}

/// Gives up to `pages` free pages back to the file system.
fn vacuum_step(conn: &Connection, pages: u32) -> Result<(), ActivityError> {
    let mut stmt = conn
        .prepare(&format!("PRAGMA incremental_vacuum({pages})"))
        .map_err(ActivityError::sql("incremental vacuum"))?;
    let mut rows = stmt
        .query([])
        .map_err(ActivityError::sql("incremental vacuum"))?;
    while rows
        .next()
        .map_err(ActivityError::sql("incremental vacuum"))?
        .is_some()
    {}
    Ok(())
}

/// One pass of the policy at `now` (nanoseconds since the Unix epoch). `stop` is checked
/// between chunks.
pub fn enforce(
    conn: &mut Connection,
    policy: &Retention,
    now: i64,
    stop: &dyn Fn() -> bool,
) -> Result<RetentionReport, ActivityError> {
    let mut report = RetentionReport::default();
    let chunk = policy.chunk.max(1);
    if let Some(age) = policy.max_age {
        let cutoff = now.saturating_sub(i64::try_from(age.as_nanos()).unwrap_or(i64::MAX));
        loop {
            let n = delete_chunk(conn, Some(cutoff), chunk)?;
            report.deleted_by_age += n;
            if n < chunk as u64 || stop() {
                break;
            }
            std::thread::sleep(policy.pause);
        }
    }
    if let Some(max) = policy.max_size {
        // Down to 95 % of the limit, so that a database at its limit is not trimmed by a
        // few records at every pass.
        let target = max - max / 20;
        if used_bytes(conn)? > max {
            while used_bytes(conn)? > target && !stop() {
                let n = delete_chunk(conn, None, chunk)?;
                report.deleted_by_size += n;
                if n == 0 {
                    break;
                }
                std::thread::sleep(policy.pause);
            }
        }
    }
    if report.deleted_by_age + report.deleted_by_size > 0 {
        loop {
            let free: i64 = conn
                .query_row("PRAGMA freelist_count", [], |r| r.get(0))
                .map_err(ActivityError::sql("reading the free list"))?;
            if free <= 0 || stop() {
                break;
            }
            vacuum_step(conn, 2048)?;
            std::thread::sleep(policy.pause);
        }
    }
    report.size_after = used_bytes(conn)?;
    Ok(report)
}

/// The running retention thread; stopped (and joined) when dropped.
pub struct RetentionHandle {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl RetentionHandle {
    /// Starts the thread for the database at `path` (which the writer has created).
    pub fn spawn(path: &Path, policy: Retention) -> std::io::Result<RetentionHandle> {
        let (tx, rx) = mpsc::channel::<()>();
        let path: PathBuf = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("kubetrail-retention".into())
            .spawn(move || run(&path, &policy, &rx))?;
        Ok(RetentionHandle {
            stop: Some(tx),
            thread: Some(thread),
        })
    }
}

impl Drop for RetentionHandle {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn now_nanos() -> i64 {
    kubetrail_core::Timestamp::now().unix_nanos()
}

fn run(path: &Path, policy: &Retention, stop: &mpsc::Receiver<()>) {
    let stopped = || {
        matches!(
            stop.try_recv(),
            Err(mpsc::TryRecvError::Disconnected) | Ok(())
        )
    };
    let mut conn: Option<Connection> = None;
    loop {
        if conn.is_none() {
            match schema::open_writer(path, true, 2048) {
                Ok(c) => conn = Some(c),
                Err(e) => tracing::warn!(error = %e, "retention cannot open the activity database"),
            }
        }
        if let Some(c) = conn.as_mut() {
            match enforce(c, policy, now_nanos(), &stopped) {
                Ok(r) if r.deleted_by_age + r.deleted_by_size > 0 => tracing::info!(
                    deleted_by_age = r.deleted_by_age,
                    deleted_by_size = r.deleted_by_size,
                    size_after = r.size_after,
                    "activity retention"
                ),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "activity retention failed; retrying at the next interval");
                    conn = None;
                }
            }
        }
        match stop.recv_timeout(policy.interval) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::{ActivityWriter, WriterOptions};

    const SEC: i64 = 1_000_000_000;

    fn fill(w: &mut ActivityWriter, from: usize, n: usize, pad: usize) {
        let recs: Vec<(String, String)> = (from..from + n)
            .map(|i| {
                let id = format!("r-{i}");
                // Record i happened at second i.
                let t = kubetrail_core::Timestamp::from_unix_nanos(i as i64 * SEC).to_rfc3339();
                let rec = format!(
                    r#"{{"id":"{id}","time":"{t}","kind":"k8s_audit","source":"s","verb":"get","user":{{"username":"u","groups":["g{g}"]}},"object_ref":{{"resource":"pods","name":"p{i}"}},"pad":"{p}"}}"#,
                    g = i % 3,
                    p = "x".repeat(pad)
                );
                (id, rec)
            })
            .collect();
        w.insert(recs.iter().map(|(i, r)| (i.as_str(), r.as_bytes())), 0)
            .unwrap();
    }

    fn count(c: &Connection, sql: &str) -> i64 {
        c.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn by_age_deletes_exactly_the_old_records_and_their_groups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let mut w = ActivityWriter::open(&path, &WriterOptions::default()).unwrap();
        fill(&mut w, 0, 1000, 10);
        let mut c = schema::open_writer(&path, true, 1024).unwrap();
        let policy = Retention {
            max_age: Some(Duration::from_secs(300)),
            max_size: None,
            chunk: 64,
            pause: Duration::ZERO,
            ..Retention::default()
        };
        // At second 1000, records of seconds 0..700 are older than 300 s.
        let r = enforce(&mut c, &policy, 1000 * SEC, &|| false).unwrap();
        assert_eq!(r.deleted_by_age, 700);
        assert_eq!(count(&c, "SELECT count(*) FROM records"), 300);
        assert_eq!(count(&c, "SELECT min(time) FROM records"), 700 * SEC);
        assert_eq!(
            count(&c, "SELECT count(*) FROM records WHERE groups IS NOT NULL"),
            300
        );
        // The writer goes on while nothing is left to delete.
        fill(&mut w, 1000, 10, 10);
        let r = enforce(&mut c, &policy, 1000 * SEC, &|| false).unwrap();
        assert_eq!(r.deleted_by_age, 0);
    }

    #[test]
    fn buckets_wholly_deleted_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let mut w = ActivityWriter::open(&path, &WriterOptions::default()).unwrap();
        fill(&mut w, 0, 10, 10);
        // The next records go to bucket 2 (a row at its start, as old as the first ones).
        let mut c = schema::open_writer(&path, true, 1024).unwrap();
        c.execute(
            "INSERT INTO records (seq, id, time, kind, record) VALUES (?1, 'filler', 0, 'gap', '{}')",
            [2i64 << schema::BUCKET_SHIFT],
        )
        .unwrap();
        // Opened again, the writer numbers its records after the filler.
        drop(w);
        let mut w = ActivityWriter::open(&path, &WriterOptions::default()).unwrap();
        fill(&mut w, 20, 10, 10);
        let buckets = |c: &Connection| -> Vec<i64> {
            c.prepare("SELECT bucket FROM buckets ORDER BY bucket")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        assert_eq!(buckets(&c), [0, 2]);
        let policy = Retention {
            max_age: Some(Duration::from_secs(10)),
            max_size: None,
            chunk: 4,
            pause: Duration::ZERO,
            ..Retention::default()
        };
        // At second 25: seconds 0..15 go, the filler with them; records 20..30 stay.
        let r = enforce(&mut c, &policy, 25 * SEC, &|| false).unwrap();
        assert_eq!(r.deleted_by_age, 11);
        assert_eq!(buckets(&c), [2]);
    }

    #[test]
    fn by_size_keeps_the_newest_under_the_limit_and_shrinks_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let mut w = ActivityWriter::open(&path, &WriterOptions::default()).unwrap();
        for i in 0..10 {
            fill(&mut w, i * 1000, 1000, 1000);
        }
        let mut c = schema::open_writer(&path, true, 1024).unwrap();
        let before = used_bytes(&c).unwrap();
        assert!(before > 10_000_000, "{before}");
        let limit = 4 << 20;
        let policy = Retention {
            max_age: None,
            max_size: Some(limit),
            chunk: 500,
            pause: Duration::ZERO,
            ..Retention::default()
        };
        let r = enforce(&mut c, &policy, 0, &|| false).unwrap();
        assert!(r.size_after <= limit, "{r:?}");
        assert!(r.deleted_by_size > 5000, "{r:?}");
        let left = count(&c, "SELECT count(*) FROM records");
        assert_eq!(left as u64 + r.deleted_by_size, 10_000);
        // The oldest went first.
        assert_eq!(
            count(&c, "SELECT min(time) FROM records"),
            r.deleted_by_size as i64 * SEC
        );
        assert_eq!(count(&c, "PRAGMA freelist_count"), 0);
        let file = std::fs::metadata(&path).unwrap().len();
        // The WAL may still hold pages; after a checkpoint the file is what it holds.
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
        let file_after = std::fs::metadata(&path).unwrap().len();
        assert!(file_after <= limit + (1 << 20), "{file} -> {file_after}");
    }

    #[test]
    fn the_thread_stops_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let mut w = ActivityWriter::open(&path, &WriterOptions::default()).unwrap();
        fill(&mut w, 0, 10, 1);
        let h = RetentionHandle::spawn(
            &path,
            Retention {
                interval: Duration::from_secs(3600),
                ..Retention::default()
            },
        )
        .unwrap();
        let t = std::time::Instant::now();
        drop(h);
        assert!(t.elapsed() < Duration::from_secs(5));
        // Records of 1970 are older than 30 days: the first pass deleted them.
        let c = schema::open_reader(&path).unwrap();
        assert_eq!(count(&c, "SELECT count(*) FROM records"), 0);
    }
}
