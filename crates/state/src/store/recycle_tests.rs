//! Tests of segment recycling: the spare segment kept and reused, and when it is not.

use std::os::unix::fs::MetadataExt;

use super::tests::ack_to as ack;
use super::*;
use crate::batch::{Entry, Trim};

fn commit_records(store: &mut Store, q: QueueId, c: u8, n: usize, len: usize) {
    let entries = (0..n)
        .map(|i| Entry {
            dedup: None,
            queues: [q].into(),
            id: format!("{c}-{i}"),
            data: noise(u64::from(c) * 1000 + i as u64, len).into(),
        })
        .collect();
    store
        .commit(&CommitBatch {
            entries,
            ..CommitBatch::default()
        })
        .expect("commit");
}

fn read_all(store: &Store, q: QueueId) -> Vec<(u64, String, Vec<u8>)> {
    let mut r = store.reader().expect("reader");
    r.read_queue(q, 0, usize::MAX, usize::MAX)
        .expect("read")
        .into_iter()
        .map(|i| (i.seq, i.id, i.data.to_vec()))
        .collect()
}

/// A store with 10,000-byte segments and one queue: (its database path, options, store,
/// queue, the queue's directory).
fn small_segments(dir: &tempfile::TempDir) -> (PathBuf, StoreOptions, Store, QueueId, PathBuf) {
    let db = dir.path().join("kubetrail.db");
    let opts = StoreOptions {
        segment_bytes: 10_000,
        ..StoreOptions::default()
    };
    let mut store = Store::open(&db, &opts).expect("open");
    let q = store.queue_id("q").expect("queue");
    let qdir = crate::segments::queue_dir(&crate::segments::queues_root(&db), q);
    (db, opts, store, q, qdir)
}

#[test]
fn acknowledged_segments_are_recycled_and_their_old_bytes_never_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, opts, mut store, q, qdir) = small_segments(&dir);
    let spare = qdir.join("spare.seg");
    // Two commits of 3 × 2,000 bytes fill a segment; the third starts the second one.
    for c in 1..=3 {
        commit_records(&mut store, q, c, 3, 2000);
    }
    assert_eq!(store.segment_count(q), 2);
    ack(&mut store, q, 6);
    assert_eq!(store.segment_count(q), 1);
    let spare_inode = std::fs::metadata(&spare)
        .expect("the drained segment is kept")
        .ino();
    // Small records now: the next segment (the spare, renamed) holds fewer bytes than the
    // old frames still in the file.
    commit_records(&mut store, q, 4, 3, 2000);
    commit_records(&mut store, q, 5, 2, 10);
    assert!(!spare.exists(), "the spare became the new segment");
    let starts = crate::segments::list_segments(&qdir).expect("list");
    assert_eq!(starts.len(), 2);
    let last = qdir.join(format!("{:020}.seg", starts[1]));
    let meta = std::fs::metadata(&last).expect("stat");
    assert_eq!(meta.ino(), spare_inode);
    // The committed bytes of the file: its header and its blocks.
    let committed = store.queues[&q].head_pos - starts[1] + format::FILE_HEADER_LEN;
    assert!(meta.len() > committed, "old bytes remain past the head");
    let expect: Vec<(u64, String, Vec<u8>)> = (7..=9)
        .map(|s| (s, format!("3-{}", s - 7), noise(3000 + s - 7, 2000)))
        .chain((10..=12).map(|s| (s, format!("4-{}", s - 10), noise(4000 + s - 10, 2000))))
        .chain((13..=14).map(|s| (s, format!("5-{}", s - 13), noise(5000 + s - 13, 10))))
        .collect();
    assert_eq!(read_all(&store, q), expect);
    // Reopening cuts the old bytes and keeps every record; appends go on.
    drop(store);
    let mut store = Store::open(&db, &opts).expect("reopen");
    assert_eq!(std::fs::metadata(&last).expect("stat").len(), committed);
    assert_eq!(read_all(&store, q), expect);
    commit_records(&mut store, q, 6, 1, 10);
    assert_eq!(read_all(&store, q).len(), expect.len() + 1);
}

#[test]
fn trimmed_segments_are_deleted_not_recycled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, _, mut store, q, qdir) = small_segments(&dir);
    for c in 1..=3 {
        commit_records(&mut store, q, c, 3, 2000);
    }
    store
        .commit(&CommitBatch {
            trims: vec![Trim {
                queue: q,
                free_bytes: 12_000,
            }],
            ..CommitBatch::default()
        })
        .expect("trim");
    assert_eq!(store.segment_count(q), 1);
    assert!(!qdir.join("spare.seg").exists());
}
