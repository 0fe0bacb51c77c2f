//! Tests of the checkpoint decision and of the thread against a real database.

use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use super::*;

#[test]
fn steps() {
    let t = 1000;
    assert_eq!(step(0, t, 0, 0), Step::None);
    assert_eq!(step(999, t, 0, 0), Step::None);
    // At the threshold with nothing copied: keep the background going.
    assert_eq!(step(1000, t, 0, 0), Step::Background);
    // ... with all but a quarter copied (in this WAL generation): the writer finishes.
    assert_eq!(step(1000, t, 900, 750), Step::Finish);
    assert_eq!(step(1000, t, 900, 749), Step::Background);
    // A report from before a restart (its log longer than the WAL now) does not count.
    assert_eq!(step(1200, t, 3000, 3000), Step::Background);
    // Four times the threshold: the writer, whatever the background did.
    assert_eq!(step(4000, t, 0, 0), Step::Force);
    assert_eq!(step(4000, t, 3999, 3999), Step::Force);
    // A zero threshold behaves as one frame.
    assert_eq!(step(1, 0, 0, 0), Step::Background);
}

#[test]
fn a_report_from_before_the_wal_started_over_is_forgotten() {
    let w = WalShared::default();
    let t = 1000;
    w.frames.store(1100, Ordering::Relaxed);
    w.bg_log.store(1000, Ordering::Relaxed);
    w.bg_copied.store(1000, Ordering::Relaxed);
    assert_eq!(w.step(t), Step::Finish);
    // The WAL starts over and grows past the old report before the background reports
    // again: the old report must not count.
    w.frames.store(10, Ordering::Relaxed);
    assert_eq!(w.step(t), Step::None);
    w.frames.store(1100, Ordering::Relaxed);
    assert_eq!(w.step(t), Step::Background);
}

#[test]
fn retry_pauses_grow_to_the_cap() {
    assert!(retry_pause(1) >= RETRY_FIRST && retry_pause(1) <= RETRY_FIRST * 3 / 2);
    assert!(retry_pause(2) >= RETRY_FIRST * 2);
    assert!(retry_pause(40) >= RETRY_CAP && retry_pause(40) <= RETRY_CAP * 3 / 2);
}

fn open(path: &std::path::Path, busy: Duration) -> Connection {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
    )
    .expect("open");
    conn.busy_timeout(busy).expect("busy timeout");
    pragma(&conn, "PRAGMA journal_mode = WAL", "wal").expect("wal");
    conn
}

/// A database with a table `t`, its writer connection (with the WAL hook) and the shared
/// state.
fn writer_db(path: &std::path::Path, busy: Duration) -> (Connection, Arc<WalShared>) {
    let shared = Arc::new(WalShared::default());
    let writer = open(path, busy);
    writer
        .execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY, v BLOB)")
        .expect("table");
    install_hook(&writer, &shared);
    (writer, shared)
}

/// A writer that follows the steps as kubetrail's writers do, with the hard limit's mode
/// given.
fn after_commit(w: &WalShared, conn: &Connection, threshold: u64) {
    match w.step(threshold) {
        Step::None => {}
        Step::Background => w.wake_background(),
        Step::Finish => {
            w.writer_checkpoint(conn, Mode::Passive, None)
                .expect("writer checkpoint");
        }
        Step::Force => {
            w.writer_checkpoint(conn, Mode::Passive, Some(Duration::from_secs(10)))
                .expect("forced checkpoint");
        }
    }
}

/// Random-looking keys: every transaction dirties pages all over the index, as the
/// databases' random-key indexes do.
fn insert_batch(conn: &Connection, round: u64) {
    let tx = conn.unchecked_transaction().expect("begin");
    for i in 0..50u64 {
        let k = (round * 50 + i).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        tx.execute(
            "INSERT INTO t (k, v) VALUES (?1, zeroblob(200))",
            [format!("{k:016x}")],
        )
        .expect("insert");
    }
    tx.commit().expect("commit");
}

#[test]
fn a_writer_following_the_steps_keeps_the_wal_bounded_and_the_background_copies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db.sqlite");
    let (writer, shared) = writer_db(&path, Duration::from_secs(5));
    let ckpt = Checkpointer::start(
        open(&path, Duration::from_secs(5)),
        "NORMAL",
        "test",
        shared.clone(),
    )
    .expect("checkpointer");
    let threshold = 64;
    let (mut max_frames, mut last, mut restarts) = (0, 0, 0);
    for round in 0..400 {
        insert_batch(&writer, round);
        let frames = shared.frames();
        max_frames = max_frames.max(frames);
        if frames < last {
            restarts += 1;
        }
        last = frames;
        after_commit(&shared, &writer, threshold);
        if round == 200 {
            // Give the background thread its turn even on a loaded machine: wait (bounded)
            // until it has run once.
            shared.wake_background();
            let deadline = Instant::now() + Duration::from_secs(20);
            while shared.background_runs() == 0 && Instant::now() < deadline {
                std::thread::yield_now();
            }
        }
    }
    assert!(
        shared.background_runs() > 0,
        "the background never checkpointed"
    );
    assert!(restarts > 0, "the WAL never started over");
    // The hard limit plus the frames one transaction adds.
    let per_batch = 64;
    assert!(
        max_frames <= threshold * HARD_MULTIPLE + per_batch,
        "the WAL grew to {max_frames} frames"
    );
    drop(ckpt);
    let n: i64 = writer
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .expect("count");
    assert_eq!(n, 400 * 50);
}

#[test]
fn a_reader_holds_off_a_full_checkpoint_but_not_a_passive_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db.sqlite");
    let (writer, shared) = writer_db(&path, Duration::from_millis(200));
    insert_batch(&writer, 0);
    // A reader's snapshot from before the next commits.
    let reader = open(&path, Duration::from_millis(200));
    reader.execute_batch("BEGIN").expect("begin read");
    let n: i64 = reader
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .expect("read");
    assert_eq!(n, 50);
    for round in 1..5 {
        insert_batch(&writer, round);
    }
    // PASSIVE copies what the reader does not need and reports success.
    let (log, copied) = shared
        .writer_checkpoint(&writer, Mode::Passive, None)
        .expect("passive")
        .expect("ran");
    assert!(
        copied < log,
        "the reader's snapshot must keep frames: {copied} of {log}"
    );
    // FULL waits for the reader (up to the busy timeout), then reports it could not finish.
    let full = shared
        .writer_checkpoint(&writer, Mode::Full, None)
        .expect("full");
    assert_eq!(
        full, None,
        "a FULL checkpoint finished under a reader's snapshot"
    );
    reader.execute_batch("COMMIT").expect("end read");
    let (log, copied) = shared
        .writer_checkpoint(&writer, Mode::Full, None)
        .expect("full")
        .expect("ran");
    assert_eq!(copied, log);
}
