//! Tests of the store: commits, dedup, checkpoints, acknowledgements, reopening, the WAL.

use super::*;
use crate::batch::{Ack, Dedup, Entry};
use crate::queue::QueueItem;

fn options() -> StoreOptions {
    StoreOptions {
        sync: SyncMode::Normal,
        ..StoreOptions::default()
    }
}

/// A new store in a directory of its own, with queue `q`.
fn store_with_queue() -> (tempfile::TempDir, Store, QueueId) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = open(&dir);
    let q = store.queue_id("q").expect("queue");
    (dir, store, q)
}

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(&dir.path().join("kubetrail.db"), &options()).expect("open store")
}

fn dedup(key: &str, value: &str, expires: i64) -> Option<Dedup> {
    Some(Dedup {
        scope: "s".into(),
        key: key.into(),
        value: value.into(),
        expires_at_unix_ms: expires,
    })
}

fn entry(id: &str, dedup: Option<Dedup>, queues: &[QueueId], data: &[u8]) -> Entry {
    Entry {
        dedup,
        queues: queues.into(),
        id: id.into(),
        data: data.to_vec().into(),
    }
}

fn entries(entries: Vec<Entry>) -> CommitBatch {
    CommitBatch {
        entries,
        ..CommitBatch::default()
    }
}

#[test]
fn the_wal_is_checkpointed_in_the_background_and_stays_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("kubetrail.db");
    let threshold = 64;
    let mut store = Store::open(
        &db,
        &StoreOptions {
            wal_checkpoint_pages: threshold,
            ..options()
        },
    )
    .expect("open store");
    let q = store.queue_id("out").expect("queue");
    let (mut max_frames, mut restarts, mut last, mut bg_seen) = (0, 0, 0, false);
    let mut n = 0u64;
    for round in 0..400 {
        // Keys scattered over the key space, so each commit dirties many pages.
        let batch = (0..40)
            .map(|_| {
                n += 1;
                let k = format!("{:016x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                entry(&k, dedup(&k, "", i64::MAX), &[q], b"x")
            })
            .collect();
        store.commit(&entries(batch)).expect("commit");
        let frames = store.wal.frames();
        max_frames = max_frames.max(frames);
        if frames < last {
            restarts += 1;
        }
        last = frames;
        bg_seen |= store.wal.background_copied() > 0;
        if round % 50 == 49 {
            // Let the background thread get a turn even on a loaded machine.
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    assert!(restarts >= 3, "the WAL was started over {restarts} times");
    // At most the hard limit plus what one commit adds (40 keys: far fewer pages than
    // the threshold).
    assert!(
        max_frames <= threshold * 4 + threshold,
        "the WAL reached {max_frames} frames"
    );
    assert!(bg_seen, "the background thread never checkpointed");
    let before = all(&store, q).len();
    assert_eq!(before, 400 * 40);
    drop(store);
    let store = Store::open(&db, &options()).expect("reopen");
    assert_eq!(all(&store, q).len(), before);
    assert_eq!(store.dedup_len("s").expect("len"), 400 * 40);
}

fn all(store: &Store, q: QueueId) -> Vec<QueueItem> {
    store
        .reader()
        .expect("reader")
        .read_queue(q, 0, usize::MAX, usize::MAX)
        .expect("read queue")
}

fn seqs(store: &Store, q: QueueId) -> Vec<u64> {
    all(store, q).iter().map(|i| i.seq).collect()
}

/// `compress: false` stores blocks as they are; a queue holding both kinds (the setting
/// changed between starts) reads back every record from the segments.
#[test]
fn blocks_are_stored_uncompressed_when_asked_and_both_kinds_read_back() {
    let record = |i: usize| {
        format!(
            r#"{{"verb":"get","user":{{"username":"alice"}},"n":{i},"pad":"{}"}}"#,
            "x".repeat(900)
        )
    };
    let commit = |store: &mut Store, q: QueueId, from: usize| {
        let batch = (from..from + 200)
            .map(|i| entry(&format!("r{i}"), None, &[q], record(i).as_bytes()))
            .collect();
        store.commit(&entries(batch)).expect("commit");
    };
    let raw: u64 = (0..200).map(|i| record(i).len() as u64).sum();
    let mut depth = Vec::new();
    for compress in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("kubetrail.db");
        let opts = |compress| StoreOptions {
            compress,
            ..options()
        };
        let mut store = Store::open(&db, &opts(compress)).expect("open store");
        let q = store.queue_id("out").expect("queue");
        commit(&mut store, q, 0);
        depth.push(store.queue_depth(q).bytes);
        // The other setting at the next start: both kinds of blocks in one queue.
        drop(store);
        let mut store = Store::open(&db, &opts(!compress)).expect("reopen");
        commit(&mut store, q, 200);
        drop(store);
        // Read after a reopen: from the segments, not the blocks kept in memory.
        let store = Store::open(&db, &opts(compress)).expect("reopen");
        let got: Vec<(String, Vec<u8>)> = all(&store, q)
            .into_iter()
            .map(|i| (i.id, i.data.to_vec()))
            .collect();
        let want: Vec<(String, Vec<u8>)> = (0..400)
            .map(|i| (format!("r{i}"), record(i).into_bytes()))
            .collect();
        assert_eq!(got, want, "compress {compress} first");
    }
    // Stored: every byte of the records is on disk; compressed: a fraction of them.
    assert!(depth[0] > raw, "stored {} of {raw} bytes", depth[0]);
    assert!(
        depth[1] < raw / 4,
        "compressed to {} of {raw} bytes",
        depth[1]
    );
}

#[test]
fn dedup_holds_across_the_chunks_of_one_commit() {
    // Keys upserted chunk by chunk (DEDUP_CHUNK entries each): a key repeated on both sides
    // of a chunk boundary, with the same and with another value, and one repeated within
    // a chunk in the reverse of key order.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = open(&dir);
    let q = store.queue_id("a").expect("queue");
    let n = 2 * DEDUP_CHUNK + 10;
    let key_of = |i: usize| match i {
        i if i == DEDUP_CHUNK => ("k-edge".to_string(), "v1"),
        i if i == DEDUP_CHUNK - 1 => ("k-edge".to_string(), "v1"),
        i if i == DEDUP_CHUNK + 1 => ("k-edge".to_string(), "v2"),
        i if i == 2 * DEDUP_CHUNK + 3 => ("k-edge".to_string(), "v1"),
        5 | 9 => ("k-z".to_string(), "v"),
        i => (format!("k{:05}", n - i), "v"),
    };
    let batch: Vec<Entry> = (0..n)
        .map(|i| {
            let (k, v) = key_of(i);
            entry(&format!("id-{i}"), dedup(&k, v, i64::MAX), &[q], b"x")
        })
        .collect();
    let out = store.commit(&entries(batch)).expect("commit");
    let dups: Vec<usize> = (0..n).filter(|&i| !out.inserted[i]).collect();
    // k-edge: v1 new, v1 again (dup), v2 new, v1 new again; k-z: the second is a dup.
    assert_eq!(dups, [9, DEDUP_CHUNK]);
    let ids: Vec<String> = all(&store, q).into_iter().map(|i| i.id).collect();
    assert_eq!(ids.len(), n - 2);
    assert!(ids.windows(2).all(|w| {
        let num = |s: &str| s[3..].parse::<usize>().unwrap();
        num(&w[0]) < num(&w[1])
    }));
}

#[test]
fn commits_larger_than_the_append_buffer_keep_every_frame_in_order() {
    // Written in several vectored writes per queue, with duplicates skipped between them,
    // records going to two queues, empty data, and read back across block boundaries.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = open(&dir);
    let (a, b) = (
        store.queue_id("a").expect("queue a"),
        store.queue_id("b").expect("queue b"),
    );
    let mut batch = Vec::new();
    for i in 0..1500u32 {
        let data = vec![
            b'0' + (i % 10) as u8;
            if i % 97 == 0 {
                0
            } else {
                1000 + (i as usize * 7) % 3000
            }
        ];
        let key = if i % 50 == 49 {
            format!("k{}", i - 1)
        } else {
            format!("k{i}")
        };
        let queues: &[QueueId] = if i % 3 == 0 { &[a, b] } else { &[a] };
        batch.push(entry(
            &format!("id-{i}"),
            dedup(&key, "", i64::MAX),
            queues,
            &data,
        ));
    }
    let out = store.commit(&entries(batch.clone())).expect("commit");
    let kept: Vec<&Entry> = batch
        .iter()
        .zip(&out.inserted)
        .filter_map(|(e, &fresh)| fresh.then_some(e))
        .collect();
    assert_eq!(out.duplicates, 30);
    let in_a: u64 = kept
        .iter()
        .map(|e| format::record_len(e.id.len(), e.data.len()))
        .sum();
    assert!(in_a > 3 * BLOCK_RAW_TARGET, "{in_a}");
    for (q, want) in [
        (a, kept.clone()),
        (
            b,
            kept.iter()
                .copied()
                .filter(|e| e.queues.len() == 2)
                .collect(),
        ),
    ] {
        let got = all(&store, q);
        assert_eq!(got.len(), want.len());
        for (n, (item, e)) in got.iter().zip(&want).enumerate() {
            assert_eq!(item.seq, n as u64 + 1);
            assert_eq!(item.id, e.id);
            assert_eq!(&item.data[..], &e.data[..]);
        }
    }
    // And after a reopen (the frames are where the bounds say).
    drop(store);
    let store = open(&dir);
    assert_eq!(all(&store, a).len(), kept.len());
}

#[test]
fn same_dedup_value_is_a_duplicate_and_different_value_replaces_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = open(&dir);
    let q = store.queue_id("out").expect("queue");
    let out = store
        .commit(&entries(vec![entry("a1", dedup("a", "1", 10), &[q], b"x")]))
        .expect("commit");
    assert_eq!(out.inserted, [true]);
    assert_eq!(out.duplicates, 0);

    let out = store
        .commit(&entries(vec![entry("a1", dedup("a", "1", 99), &[q], b"x")]))
        .expect("commit");
    assert_eq!(out.inserted, [false]);
    assert_eq!(out.duplicates, 1);
    assert_eq!(seqs(&store, q), [1]);

    let out = store
        .commit(&entries(vec![entry("a2", dedup("a", "2", 20), &[q], b"y")]))
        .expect("commit");
    assert_eq!(out.inserted, [true]);
    assert_eq!(
        store.dedup_len("s").expect("len"),
        1,
        "value replaced, not added"
    );
    // The old value is gone: it is new again.
    let out = store
        .commit(&entries(vec![entry("a1", dedup("a", "1", 30), &[q], b"x")]))
        .expect("commit");
    assert_eq!(out.inserted, [true]);
    let ids: Vec<_> = all(&store, q).into_iter().map(|i| i.id).collect();
    assert_eq!(ids, ["a1", "a2", "a1"]);
}

#[test]
fn same_key_in_another_scope_is_not_a_duplicate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = open(&dir);
    let mut other = dedup("a", "1", 10);
    if let Some(d) = other.as_mut() {
        d.scope = "t".into();
    }
    let out = store
        .commit(&entries(vec![
            entry("1", dedup("a", "1", 10), &[], b""),
            entry("2", other, &[], b""),
        ]))
        .expect("commit");
    assert_eq!(out.inserted, [true, true]);
    assert_eq!(store.dedup_len("s").expect("len"), 1);
    assert_eq!(store.dedup_len("t").expect("len"), 1);
}

#[test]
fn duplicates_within_one_batch_are_detected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = open(&dir);
    let q = store.queue_id("out").expect("queue");
    let out = store
        .commit(&entries(vec![
            entry("a", dedup("k", "1", 10), &[q], b"1"),
            entry("a", dedup("k", "1", 10), &[q], b"1"),
            entry("b", dedup("k", "2", 10), &[q], b"2"),
            entry("b", dedup("k", "2", 10), &[q], b"2"),
            entry("n", None, &[q], b"3"),
            entry("n", None, &[q], b"3"),
        ]))
        .expect("commit");
    assert_eq!(out.inserted, [true, false, true, false, true, true]);
    assert_eq!(out.duplicates, 2);
    assert_eq!(seqs(&store, q), [1, 2, 3, 4]);
    assert_eq!(store.queue_depth(q).records, 4);
}

#[test]
fn entry_without_queues_stores_only_its_dedup_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = open(&dir);
    let q = store.queue_id("out").expect("queue");
    let out = store
        .commit(&entries(vec![entry("a", dedup("k", "1", 10), &[], b"1")]))
        .expect("commit");
    assert_eq!(out.inserted, [true]);
    assert_eq!(store.dedup_len("s").expect("len"), 1);
    assert!(all(&store, q).is_empty());
    let out = store
        .commit(&entries(vec![entry("a", dedup("k", "1", 10), &[q], b"1")]))
        .expect("commit");
    assert_eq!(out.inserted, [false], "the stored key makes it a duplicate");
}

#[test]
fn purge_deletes_only_keys_expired_before_now() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = open(&dir);
    store
        .commit(&entries(vec![
            entry("1", dedup("a", "1", 100), &[], b""),
            entry("2", dedup("b", "1", 200), &[], b""),
            entry("3", dedup("c", "1", 300), &[], b""),
        ]))
        .expect("commit");
    assert_eq!(
        store.purge_expired(200).expect("purge"),
        1,
        "100 < 200 only"
    );
    assert_eq!(store.dedup_len("s").expect("len"), 2);
    assert_eq!(store.purge_expired(200).expect("purge"), 0);
    // A purged key no longer makes its record a duplicate.
    let out = store
        .commit(&entries(vec![
            entry("1", dedup("a", "1", 400), &[], b""),
            entry("2", dedup("b", "1", 400), &[], b""),
        ]))
        .expect("commit");
    assert_eq!(out.inserted, [true, false]);
    assert_eq!(store.purge_expired(i64::MAX).expect("purge"), 3);
    assert_eq!(store.dedup_len("s").expect("len"), 0);
}

#[test]
fn sequence_numbers_survive_reopen_and_draining() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (q, r) = {
        let mut store = open(&dir);
        let q = store.queue_id("q").expect("queue");
        let r = store.queue_id("r").expect("queue");
        store
            .commit(&entries(vec![
                entry("1", None, &[q, r], b"a"),
                entry("2", None, &[q], b"b"),
            ]))
            .expect("commit");
        assert_eq!(seqs(&store, q), [1, 2]);
        assert_eq!(seqs(&store, r), [1]);
        // Drain q completely.
        store
            .commit(&CommitBatch {
                acks: vec![Ack {
                    queue: q,
                    up_to_seq: 2,
                    state: None,
                }],
                ..CommitBatch::default()
            })
            .expect("ack");
        assert!(all(&store, q).is_empty());
        (q, r)
    };
    let mut store = open(&dir);
    assert_eq!(store.queue_id("q").expect("queue"), q, "ids are stable");
    assert_eq!(store.queue_id("r").expect("queue"), r);
    assert_eq!(store.next_seq(q), Some(3));
    store
        .commit(&entries(vec![entry("3", None, &[q, r], b"c")]))
        .expect("commit");
    assert_eq!(seqs(&store, q), [3], "seq 1 and 2 are never reused");
    assert_eq!(seqs(&store, r), [1, 2]);
}

#[test]
fn ack_deletes_up_to_seq_and_writes_its_state_in_the_same_commit() {
    let (_dir, mut store, q) = store_with_queue();
    let other = store.queue_id("other").expect("queue");
    store
        .commit(&entries(
            (1..=5)
                .map(|i| entry(&i.to_string(), None, &[q, other], b"12345"))
                .collect(),
        ))
        .expect("commit");
    let out = store
        .commit_at(
            &CommitBatch {
                entries: vec![entry("6", None, &[q], b"123")],
                checkpoints: vec![("src".into(), "rv9".into())],
                forget: vec![],
                acks: vec![Ack {
                    queue: q,
                    up_to_seq: 3,
                    state: Some(("file:q".into(), "1234".into())),
                }],
                trims: vec![],
            },
            42,
        )
        .expect("commit");
    assert_eq!(out.inserted, [true]);
    assert_eq!(seqs(&store, q), [4, 5, 6]);
    assert_eq!(
        seqs(&store, other),
        [1, 2, 3, 4, 5],
        "other queues untouched"
    );
    // Records 4 and 5 keep their block (records 1..=5, written by one commit) on disk.
    assert_eq!(store.queue_depth(q).records, 3);
    assert_eq!(store.queues[&q].tail_pos, 0);
    assert_eq!(store.queue_depth(q).bytes, store.queues[&q].head_pos);
    let state = store.checkpoint("file:q").expect("checkpoint");
    assert_eq!(
        state,
        Some(Checkpoint {
            value: "1234".into(),
            updated_at_unix_ms: 42
        })
    );
    assert_eq!(
        store
            .checkpoint("src")
            .expect("checkpoint")
            .map(|c| c.value),
        Some("rv9".into())
    );
    // An ack that covers nothing still writes its state; acking beyond the end is harmless.
    store
        .commit(&CommitBatch {
            acks: vec![
                Ack {
                    queue: q,
                    up_to_seq: 1,
                    state: Some(("file:q".into(), "1300".into())),
                },
                Ack {
                    queue: other,
                    up_to_seq: u64::MAX,
                    state: None,
                },
            ],
            ..CommitBatch::default()
        })
        .expect("commit");
    assert_eq!(
        store
            .checkpoint("file:q")
            .expect("checkpoint")
            .map(|c| c.value),
        Some("1300".into())
    );
    assert!(all(&store, other).is_empty());
    assert_eq!(store.queue_depth(other), QueueDepth::default());
    assert_eq!(seqs(&store, q), [4, 5, 6], "q untouched by ack of other");
}

#[test]
fn queue_depth_follows_commits_and_is_reloaded_at_open() {
    // Depth bytes are the bytes of the queue's blocks on disk, from the one holding the
    // oldest record to the head: compressed, and a block goes only with its last record.
    let dir = tempfile::tempdir().expect("tempdir");
    let (q, r, depth_q, depth_r) = {
        let mut store = open(&dir);
        let q = store.queue_id("q").expect("queue");
        let r = store.queue_id("r").expect("queue");
        assert_eq!(store.queue_depth(q), QueueDepth::default());
        store
            .commit(&entries(vec![
                entry("1", None, &[q], &[0; 100]),
                entry("2", None, &[q, r], &[0; 1000]),
                entry("3", None, &[q], &[]),
            ]))
            .expect("commit");
        let first = store.queue_depth(q);
        assert_eq!(first.records, 3);
        let logical: u64 = [100, 1000, 0].map(|n| crate::frame_len(1, n)).iter().sum();
        assert!(
            first.bytes > 0 && first.bytes < logical / 4,
            "compressed: {first:?}"
        );
        store
            .commit(&entries(vec![entry("4", None, &[q], &[1; 10])]))
            .expect("commit");
        let second = store.queue_depth(q);
        assert!(second.bytes > first.bytes);
        // Acknowledging part of the first block frees no bytes; all of it frees its bytes.
        ack_to(&mut store, q, 1);
        assert_eq!(
            store.queue_depth(q),
            QueueDepth {
                records: 3,
                bytes: second.bytes
            }
        );
        ack_to(&mut store, q, 3);
        assert_eq!(
            store.queue_depth(q),
            QueueDepth {
                records: 1,
                bytes: second.bytes - first.bytes
            }
        );
        (q, r, store.queue_depth(q), store.queue_depth(r))
    };
    let store = open(&dir);
    assert_eq!(store.queue_depth(q), depth_q);
    assert_eq!(store.queue_depth(r), depth_r);
    assert_eq!(depth_r.records, 1);
    assert_eq!(store.queue_depth(QueueId(999)), QueueDepth::default());
}

/// Commits checkpoint `stream` = `value` at `at_ms`.
fn set_checkpoint(store: &mut Store, stream: &str, value: &str, at_ms: i64) {
    store
        .commit_at(
            &CommitBatch {
                checkpoints: vec![(stream.into(), value.into())],
                ..CommitBatch::default()
            },
            at_ms,
        )
        .expect("commit");
}

pub(super) fn ack_to(store: &mut Store, q: QueueId, up_to_seq: u64) {
    store
        .commit(&CommitBatch {
            acks: vec![Ack {
                queue: q,
                up_to_seq,
                state: None,
            }],
            ..CommitBatch::default()
        })
        .expect("ack");
}

#[test]
fn read_queue_honours_after_seq_and_limits() {
    let (_dir, mut store, q) = store_with_queue();
    let sizes = [10usize, 20, 30, 5000, 40];
    store
        .commit(&entries(
            sizes
                .iter()
                .enumerate()
                .map(|(i, n)| entry(&format!("id{i}"), None, &[q], &vec![i as u8; *n]))
                .collect(),
        ))
        .expect("commit");
    let mut reader = store.reader().expect("reader");
    let read = |reader: &mut Reader, after, records, bytes| -> Vec<u64> {
        reader
            .read_queue(q, after, records, bytes)
            .expect("read")
            .iter()
            .map(|i| i.seq)
            .collect()
    };
    assert_eq!(read(&mut reader, 0, 2, usize::MAX), [1, 2]);
    assert_eq!(read(&mut reader, 2, 100, usize::MAX), [3, 4, 5]);
    assert_eq!(read(&mut reader, 0, 100, 60), [1, 2, 3], "10+20+30 fits 60");
    assert_eq!(read(&mut reader, 0, 100, 59), [1, 2]);
    assert_eq!(
        read(&mut reader, 3, 100, 10),
        [4],
        "one item even if too big"
    );
    assert_eq!(
        read(&mut reader, 0, 0, usize::MAX),
        [1],
        "0 records counts as 1"
    );
    assert_eq!(read(&mut reader, 5, 100, usize::MAX), Vec::<u64>::new());
    assert_eq!(
        read(&mut reader, u64::MAX, 100, usize::MAX),
        Vec::<u64>::new()
    );
    let items = reader.read_queue(q, 3, 1, usize::MAX).expect("read");
    assert_eq!(
        items,
        [QueueItem {
            seq: 4,
            id: "id3".into(),
            data: vec![3; 5000].into()
        }]
    );
    assert_eq!(reader.first_seq(q).expect("first"), Some(1));
    assert_eq!(reader.queue_id("q").expect("lookup"), Some(q));
    assert_eq!(reader.queue_id("nope").expect("lookup"), None);
    store
        .commit(&CommitBatch {
            acks: vec![Ack {
                queue: q,
                up_to_seq: 5,
                state: None,
            }],
            ..CommitBatch::default()
        })
        .expect("ack");
    assert_eq!(reader.first_seq(q).expect("first"), None);
}

#[test]
fn a_failed_commit_leaves_nothing_behind() {
    let (_dir, mut store, q) = store_with_queue();
    store
        .commit(&entries(vec![entry(
            "0",
            dedup("zero", "1", 5),
            &[q],
            b"0",
        )]))
        .expect("commit");
    let before_depth = store.queue_depth(q);
    let unknown = QueueId(77);
    let err = store
        .commit(&CommitBatch {
            entries: vec![
                entry("1", dedup("one", "1", 5), &[q], b"111"),
                entry("2", dedup("two", "1", 5), &[q], b"222"),
                entry("3", None, &[q, unknown], b"333"),
            ],
            checkpoints: vec![("src".into(), "7".into())],
            forget: vec![],
            acks: vec![Ack {
                queue: q,
                up_to_seq: 1,
                state: Some(("st".into(), "x".into())),
            }],
            trims: vec![],
        })
        .expect_err("unknown queue must fail");
    assert!(matches!(err, StateError::UnknownQueue { queue } if queue == unknown));
    assert_eq!(store.dedup_len("s").expect("len"), 1, "no dedup key kept");
    assert_eq!(seqs(&store, q), [1], "nothing enqueued, nothing acked");
    assert_eq!(store.checkpoint("src").expect("cp"), None);
    assert_eq!(store.checkpoint("st").expect("cp"), None);
    assert_eq!(store.queue_depth(q), before_depth);
    assert_eq!(store.next_seq(q), Some(2));

    // An ack of an unknown queue fails the same way, after its entries were written.
    let err = store
        .commit(&CommitBatch {
            entries: vec![entry("1", dedup("one", "1", 5), &[q], b"111")],
            acks: vec![Ack {
                queue: unknown,
                up_to_seq: 1,
                state: None,
            }],
            ..CommitBatch::default()
        })
        .expect_err("unknown queue must fail");
    assert!(matches!(err, StateError::UnknownQueue { .. }));
    assert_eq!(seqs(&store, q), [1]);

    // The next good commit continues right after the last committed seq.
    let out = store
        .commit(&entries(vec![entry(
            "1",
            dedup("one", "1", 5),
            &[q],
            b"111",
        )]))
        .expect("commit");
    assert_eq!(out.inserted, [true], "the rolled-back key did not survive");
    assert_eq!(seqs(&store, q), [1, 2]);
}

#[test]
fn reopening_after_an_unknown_outcome_reads_the_committed_bounds_again() {
    let (_dir, mut store, q) = store_with_queue();
    let mut reader = store.reader().expect("reader");
    let before = store.queues[&q];
    store
        .commit(&entries(vec![entry(
            "1",
            dedup("one", "1", 5),
            &[q],
            b"111",
        )]))
        .expect("commit");
    // As if that commit had reported an error (a failed WAL fsync) although it is
    // durable: the in-memory bounds were not moved.
    store.queues.insert(q, before);
    let again = store.close_for_reopen();
    let mut store = again.open().expect("reopen");
    let out = store
        .commit(&entries(vec![
            entry("1", dedup("one", "1", 5), &[q], b"111"),
            entry("2", dedup("two", "1", 5), &[q], b"222"),
        ]))
        .expect("commit");
    assert_eq!(out.inserted, [false, true], "the first batch is known");
    assert_eq!(seqs(&store, q), [1, 2], "nothing written over");
    // A reader made before the reopen goes on.
    let items = reader.read_queue(q, 0, 10, usize::MAX).expect("read");
    assert_eq!(
        items.iter().map(|i| &i.data[..]).collect::<Vec<_>>(),
        [&b"111"[..], b"222"]
    );
    assert!(StateError::UnknownQueue { queue: q }.outcome_known());
}

#[test]
fn checkpoints_are_listed_by_prefix_and_forgotten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = open(&dir);
    let names = [
        "a/fp:1",
        "a/fp:2",
        "a/fp;",
        "a/fp",
        "a/fq:1",
        "ab/fp:1",
        "b/fp:1",
        "a/fp:\u{10FFFF}",
    ];
    store
        .commit_at(
            &CommitBatch {
                checkpoints: names.iter().map(|n| (n.to_string(), "v".into())).collect(),
                ..CommitBatch::default()
            },
            1000,
        )
        .expect("commit");
    let under = |store: &Store, prefix: &str| -> Vec<String> {
        store
            .checkpoints_under(prefix)
            .expect("list")
            .into_iter()
            .map(|(s, c)| {
                assert_eq!(c.updated_at_unix_ms, 1000);
                s
            })
            .collect()
    };
    assert_eq!(
        under(&store, "a/fp:"),
        ["a/fp:1", "a/fp:2", "a/fp:\u{10FFFF}"]
    );
    assert_eq!(
        under(&store, "a/"),
        [
            "a/fp",
            "a/fp:1",
            "a/fp:2",
            "a/fp:\u{10FFFF}",
            "a/fp;",
            "a/fq:1"
        ]
    );
    assert_eq!(under(&store, "").len(), names.len());
    assert!(under(&store, "c").is_empty());
    // Forgetting deletes in the commit's transaction (after its upserts); unknown names
    // are no error.
    store
        .commit(&CommitBatch {
            checkpoints: vec![("a/fp:3".into(), "w".into())],
            forget: vec!["a/fp:1".into(), "a/fp:3".into(), "zz".into()],
            ..CommitBatch::default()
        })
        .expect("forget");
    assert_eq!(under(&store, "a/fp:"), ["a/fp:2", "a/fp:\u{10FFFF}"]);
    assert_eq!(store.checkpoint("a/fp:1").expect("cp"), None);
}

#[test]
fn prefix_ends_are_the_next_string_after_every_extension() {
    assert_eq!(prefix_end("a/fp:").as_deref(), Some("a/fp;"));
    assert_eq!(prefix_end("\u{D7FF}").as_deref(), Some("\u{E000}"));
    assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
    assert_eq!(prefix_end("\u{10FFFF}"), None);
    assert_eq!(prefix_end(""), None);
}

#[test]
fn readers_see_committed_state_only_and_checkpoints_carry_their_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = open(&dir);
    let mut reader = store.reader().expect("reader");
    assert_eq!(reader.checkpoint("src").expect("cp"), None);
    set_checkpoint(&mut store, "src", "a", 1000);
    set_checkpoint(&mut store, "src", "b", 2000);
    assert_eq!(
        reader.checkpoint("src").expect("cp"),
        Some(Checkpoint {
            value: "b".into(),
            updated_at_unix_ms: 2000
        })
    );
    let before = now_unix_ms();
    store
        .commit(&CommitBatch {
            checkpoints: vec![("src".into(), "c".into())],
            ..CommitBatch::default()
        })
        .expect("commit");
    let cp = store.checkpoint("src").expect("cp").expect("present");
    assert_eq!(cp.value, "c");
    assert!(
        cp.updated_at_unix_ms >= before,
        "commit stamps the wall clock"
    );
}

#[test]
fn store_and_reader_can_move_to_other_threads() {
    fn assert_send<T: Send>() {}
    assert_send::<Store>();
    assert_send::<Reader>();
}

#[test]
fn drained_segments_are_deleted_and_reopen_cuts_uncommitted_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("kubetrail.db");
    let opts = StoreOptions {
        segment_bytes: 10_000,
        ..options()
    };
    let mut store = Store::open(&db, &opts).expect("open");
    let q = store.queue_id("q").expect("queue");
    // 10 commits of 3 records of 2,000 bytes: a new segment every second commit.
    for c in 0..10 {
        store
            .commit(&entries(
                (0..3)
                    .map(|i| entry(&format!("{c}-{i}"), None, &[q], &noise(c * 10 + i, 2000)))
                    .collect(),
            ))
            .expect("commit");
    }
    assert_eq!(store.segment_count(q), 5);
    let mut r = store.reader().expect("reader");
    let items = r.read_queue(q, 0, 13, usize::MAX).expect("read");
    assert_eq!(items.len(), 13);
    store
        .commit(&CommitBatch {
            acks: vec![Ack {
                queue: q,
                up_to_seq: 13,
                state: None,
            }],
            ..CommitBatch::default()
        })
        .expect("ack");
    // Seqs 1..=12 fill the first two segments, which go; 13 is in the third, which stays.
    assert_eq!(store.segment_count(q), 3);
    assert_eq!(seqs(&store, q), (14..=30).collect::<Vec<_>>());
    // An append that never committed (garbage past the head) is cut at the next open.
    let qdir = crate::segments::queue_dir(&crate::segments::queues_root(&db), q);
    let last = crate::segments::list_segments(&qdir).expect("list");
    let last = qdir.join(format!("{:020}.seg", last[last.len() - 1]));
    let len = std::fs::metadata(&last).expect("stat").len();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&last)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"not committed"))
        .expect("append");
    drop(r);
    drop(store);
    let mut store = Store::open(&db, &opts).expect("reopen");
    assert_eq!(std::fs::metadata(&last).expect("stat").len(), len);
    assert_eq!(seqs(&store, q), (14..=30).collect::<Vec<_>>());
    store
        .commit(&entries(vec![entry("after", None, &[q], b"x")]))
        .expect("commit");
    let items = all(&store, q);
    assert_eq!(
        items.last().map(|i| (i.seq, i.id.as_str())),
        Some((31, "after"))
    );
    // Acking everything leaves one (current) segment.
    store
        .commit(&CommitBatch {
            acks: vec![Ack {
                queue: q,
                up_to_seq: u64::MAX,
                state: None,
            }],
            ..CommitBatch::default()
        })
        .expect("ack");
    assert_eq!(store.segment_count(q), 1);
    assert!(all(&store, q).is_empty());
}
