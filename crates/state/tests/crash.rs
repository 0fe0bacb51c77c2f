//! Crash atomicity: a writer process is killed with SIGKILL at random moments; after each
//! kill the database holds every committed batch entirely (its records in both queues, its
//! dedup keys, its checkpoint and its ack state) and nothing of the batch that was in flight.
//!
//! The writer is this test binary itself, started with `KUBETRAIL_STATE_CRASH_DB` set so that
//! `crash_child_writer` acts instead of returning.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kubetrail_state::{Ack, CommitBatch, Dedup, Entry, Store, StoreOptions, SyncMode};

const CHILD_DB: &str = "KUBETRAIL_STATE_CRASH_DB";
const CHILD_SYNC_FULL: &str = "KUBETRAIL_STATE_CRASH_SYNC_FULL";
/// Records per batch.
const K: u64 = 40;
const STREAM: &str = "batches";
const ACK_STATE: &str = "q2-acked";
const KILLS: usize = 10;

fn options(full: bool) -> StoreOptions {
    StoreOptions {
        sync: if full {
            SyncMode::Full
        } else {
            SyncMode::Normal
        },
        ..StoreOptions::default()
    }
}

fn record(batch: u64, i: u64) -> Vec<u8> {
    // Every 7th batch carries one record large enough to need overflow pages.
    let len = if batch.is_multiple_of(7) && i == 0 {
        300_000
    } else {
        1500
    };
    let seed = batch * 1000 + i;
    (0..len).map(|j| (seed as usize + j) as u8).collect()
}

/// The child: resumes after the last committed batch and commits batches until killed (or,
/// should the parent be gone, until a deadline).
#[test]
fn crash_child_writer() {
    let Some(db) = std::env::var_os(CHILD_DB) else {
        return;
    };
    let full = std::env::var_os(CHILD_SYNC_FULL).is_some();
    let mut store = Store::open(Path::new(&db), &options(full)).expect("child open");
    let q1 = store.queue_id("q1").expect("q1");
    let q2 = store.queue_id("q2").expect("q2");
    let done: u64 = store
        .checkpoint(STREAM)
        .expect("checkpoint")
        .map(|c| c.value.parse().expect("numeric checkpoint"))
        .unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    for batch in done + 1.. {
        assert!(Instant::now() < deadline, "child writer was never killed");
        let mut entries: Vec<Entry> = (0..K)
            .map(|i| Entry {
                dedup: Some(Dedup {
                    scope: "crash".into(),
                    key: format!("{batch}-{i}"),
                    value: "v".into(),
                    expires_at_unix_ms: i64::MAX,
                }),
                queues: [q1, q2].into(),
                id: format!("{batch}-{i}"),
                data: record(batch, i).into(),
            })
            .collect();
        if batch > 1 {
            // A repeat of the previous batch's first record: must be recognised.
            entries.insert(
                K as usize / 2,
                Entry {
                    dedup: Some(Dedup {
                        scope: "crash".into(),
                        key: format!("{}-0", batch - 1),
                        value: "v".into(),
                        expires_at_unix_ms: i64::MAX,
                    }),
                    queues: [q1, q2].into(),
                    id: "repeat".into(),
                    data: b"repeat".to_vec().into(),
                },
            );
        }
        let acked = (batch - 1) * K;
        let outcome = store
            .commit(&CommitBatch {
                entries,
                checkpoints: vec![(STREAM.into(), batch.to_string())],
                forget: vec![],
                acks: vec![Ack {
                    queue: q2,
                    up_to_seq: acked,
                    state: Some((ACK_STATE.into(), acked.to_string())),
                }],
                trims: vec![],
            })
            .expect("child commit");
        assert_eq!(outcome.duplicates, u64::from(batch > 1), "batch {batch}");
        println!("committed {batch}");
    }
}

/// Checks the database after a kill; returns the number of committed batches.
fn verify(db: &Path) -> u64 {
    let store = Store::open(db, &options(false)).expect("reopen after kill");
    let mut reader = store.reader().expect("reader");
    let q1 = reader.queue_id("q1").expect("lookup").expect("q1 exists");
    let q2 = reader.queue_id("q2").expect("lookup").expect("q2 exists");
    let batches: u64 = store
        .checkpoint(STREAM)
        .expect("checkpoint")
        .map(|c| c.value.parse().expect("numeric"))
        .unwrap_or(0);
    let records = K * batches;

    let items = reader
        .read_queue(q1, 0, usize::MAX, usize::MAX)
        .expect("read q1");
    assert_eq!(
        items.len() as u64,
        records,
        "q1 holds K x checkpoint records"
    );
    for (n, item) in items.iter().enumerate() {
        let (batch, i) = (n as u64 / K + 1, n as u64 % K);
        assert_eq!(
            item.seq,
            n as u64 + 1,
            "q1 seqs are 1..=K*batches with no gap"
        );
        assert_eq!(item.id, format!("{batch}-{i}"));
        assert!(item.data == record(batch, i), "data of {}", item.id);
    }
    assert_eq!(store.dedup_len("crash").expect("dedup_len"), records);
    assert_eq!(store.queue_depth(q1).records, records);

    let acked: u64 = store
        .checkpoint(ACK_STATE)
        .expect("ack state")
        .map(|c| c.value.parse().expect("numeric"))
        .unwrap_or(0);
    assert_eq!(
        acked,
        batches.saturating_sub(1) * K,
        "ack state of the same batch"
    );
    let q2_seqs: Vec<u64> = reader
        .read_queue(q2, 0, usize::MAX, usize::MAX)
        .expect("read q2")
        .iter()
        .map(|i| i.seq)
        .collect();
    let expected: Vec<u64> = (acked + 1..=records).collect();
    assert_eq!(q2_seqs, expected, "q2 holds exactly the unacked records");
    batches
}

#[test]
fn sigkill_never_tears_a_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("kubetrail.db");
    let exe = std::env::current_exe().expect("current exe");
    // A cheap random source: the kill moments only need to vary, not be reproducible.
    let mut rng = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    let mut next_random = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut previous = 0;
    for kill in 0..KILLS {
        let mut command = Command::new(&exe);
        command
            .args([
                "--exact",
                "crash_child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DB, &db)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if kill % 2 == 1 {
            command.env(CHILD_SYNC_FULL, "1");
        }
        let mut child = command.spawn().expect("spawn writer");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        // Wait until the writer has committed at least once, then let it run a random while
        // (up to 4 batches' worth of lines) and a random few milliseconds more, so the kill
        // lands anywhere in a commit: between statements, inside the WAL write, in fsync.
        let lines_to_wait = 1 + next_random() % 4;
        let mut seen = 0;
        for line in lines.by_ref() {
            let line = line.expect("child stdout");
            if line.starts_with("committed ") {
                seen += 1;
                if seen == lines_to_wait {
                    break;
                }
            }
        }
        assert_eq!(seen, lines_to_wait, "writer stopped before being killed");
        // Sleeping here is the point of the test: the kill must land at an arbitrary moment.
        std::thread::sleep(Duration::from_micros(next_random() % 30_000));
        child.kill().expect("SIGKILL the writer");
        let status = child.wait().expect("wait for writer");
        // Drain the pipe so a full pipe buffer never blocks anything.
        for _ in lines {}
        if status.signal() != Some(9) {
            let mut stderr = String::new();
            if let Some(mut err) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut err, &mut stderr);
            }
            panic!("writer ended by itself ({status}) instead of SIGKILL: {stderr}");
        }
        let batches = verify(&db);
        assert!(
            batches >= previous + seen,
            "kill {kill}: {batches} batches, but {} were reported committed",
            previous + seen
        );
        previous = batches;
    }
    assert!(previous >= KILLS as u64, "the writer made progress");
}
