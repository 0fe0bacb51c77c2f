//! The readers' recent blocks: the records a caught-up reader takes from memory are exactly
//! those the segment holds, a failed commit leaves none of its blocks there, and the bounds
//! hold.

use bytes::Bytes;
use proptest::prelude::*;

use super::{Recent, RecentBlock};
use crate::store::noise;
use crate::{
    CommitBatch, Dedup, Entry, FaultSite, Faults, QueueId, QueueItem, Store, StoreOptions, SyncMode,
};

fn options(faults: &Faults) -> StoreOptions {
    StoreOptions {
        sync: SyncMode::Full,
        reserve_bytes: 0,
        faults: faults.clone(),
        ..StoreOptions::default()
    }
}

/// Record `n`'s bytes: compressible text or noise, of `len` bytes.
fn data(n: u64, len: usize) -> Bytes {
    if n.is_multiple_of(3) {
        Bytes::from(noise(n, len))
    } else {
        let text = format!("{{\"n\":{n},\"reason\":\"Scheduled\",\"message\":\"pod assigned\"}}");
        Bytes::from(text.bytes().cycle().take(len).collect::<Vec<u8>>())
    }
}

fn entry(n: u64, len: usize, queues: &[QueueId]) -> Entry {
    Entry {
        dedup: Some(Dedup {
            scope: "src".into(),
            key: format!("k{n}"),
            value: "1".into(),
            expires_at_unix_ms: i64::MAX,
        }),
        queues: queues.into(),
        id: format!("r{n}"),
        data: data(n, len),
    }
}

fn batch(entries: Vec<Entry>) -> CommitBatch {
    CommitBatch {
        entries,
        ..CommitBatch::default()
    }
}

/// Every record of queue `q` after `after`, read `step` at a time.
fn read_all(
    r: &mut crate::Reader,
    q: QueueId,
    mut after: u64,
    step: usize,
    max_bytes: usize,
) -> Vec<QueueItem> {
    let mut all = Vec::new();
    loop {
        let items = r.read_queue(q, after, step, max_bytes).expect("read queue");
        let Some(last) = items.last() else {
            return all;
        };
        after = last.seq;
        all.extend(items);
    }
}

fn block(queue: u32, pos: u64, len: usize) -> RecentBlock {
    RecentBlock {
        queue: QueueId(queue),
        pos,
        len: len as u64,
        first_seq: pos,
        count: 1,
        raw: Bytes::from(vec![0u8; len]),
    }
}

#[test]
fn the_newest_blocks_are_kept_within_both_bounds() {
    let recent = Recent::new(3, 1000);
    recent.publish([block(1, 0, 300), block(1, 300, 300), block(2, 0, 300)]);
    assert_eq!(recent.held(), (3, 900));
    // A fourth block: the oldest goes (count bound).
    recent.publish([block(1, 600, 100)]);
    assert_eq!(
        recent.positions(),
        [(QueueId(1), 300), (QueueId(2), 0), (QueueId(1), 600)]
    );
    // A large one: as many of the oldest go as the byte bound needs.
    recent.publish([block(2, 300, 800)]);
    assert_eq!(recent.positions(), [(QueueId(1), 600), (QueueId(2), 300)]);
    assert_eq!(recent.held(), (2, 900));
    // One larger than the byte bound is not kept, and drops nothing.
    recent.publish([block(1, 700, 1001)]);
    assert_eq!(recent.held(), (2, 900));
    assert!(recent.get(QueueId(1), 700).is_none());
    assert!(recent.get(QueueId(1), 600).is_some());
    assert!(
        recent.get(QueueId(2), 600).is_none(),
        "another queue's position"
    );
    recent.forget_queue(QueueId(2));
    assert_eq!(recent.held(), (1, 100));
    recent.clear();
    assert_eq!(recent.held(), (0, 0));
}

#[test]
fn a_store_keeps_only_its_newest_blocks_within_the_bounds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(
        &dir.path().join("kubetrail.db"),
        &options(&Faults::default()),
    )
    .expect("open");
    let (max_blocks, max_bytes) = (3, 700 << 10);
    store.set_recent(Recent::new(max_blocks, max_bytes));
    let q = store.queue_id("out").expect("queue");
    let mut r = store.reader().expect("reader");
    let mut n = 0;
    let mut after = 0;
    for round in 0..6u64 {
        // About five blocks of 256 KiB per commit, of noise (a block is as large as its
        // records).
        let entries = (0..40)
            .map(|_| {
                n += 1;
                entry(n * 3, 32 << 10, &[q])
            })
            .collect();
        store.commit(&batch(entries)).expect("commit");
        let (blocks, bytes) = store.recent().held();
        assert!(blocks <= max_blocks, "round {round}: {blocks} blocks");
        assert!(bytes <= max_bytes, "round {round}: {bytes} bytes");
        assert!(blocks >= 2, "round {round}: the newest blocks are kept");
        // The newest ones: the last ends at the committed head, and they follow each other.
        let kept = store.recent().positions();
        let head = store.queue_depth(q).bytes;
        let last = store.recent().get(q, kept[kept.len() - 1].1).expect("kept");
        assert_eq!(last.pos + last.len, head);
        for w in kept.windows(2) {
            let a = store.recent().get(q, w[0].1).expect("kept");
            assert_eq!(a.pos + a.len, w[1].1);
        }
        let items = read_all(&mut r, q, after, 1000, usize::MAX);
        assert_eq!(items.len(), 40);
        after = items.last().map_or(after, |i| i.seq);
    }
    assert!(r.recent_hits(q) > 0);
}

#[test]
fn a_failed_commit_leaves_none_of_its_blocks_for_the_readers() {
    for site in [
        FaultSite::SegmentWrite,
        FaultSite::SegmentSync,
        FaultSite::DirSync,
        FaultSite::CommitBefore,
        FaultSite::CommitAfter,
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("kubetrail.db");
        let faults = Faults::new();
        let opts = StoreOptions {
            // Every commit starts a segment: each reaches the directory fsync too.
            segment_bytes: 1,
            ..options(&faults)
        };
        let mut store = Store::open(&db, &opts).expect("open");
        let q = store.queue_id("out").expect("queue");
        let mut reader = store.reader().expect("reader");
        let first: Vec<Entry> = (1..=30).map(|n| entry(n, 20_000, &[q])).collect();
        store.commit(&batch(first)).expect("first commit");
        let before = store.recent().positions();
        let head = store.queue_depth(q).bytes;
        assert!(!before.is_empty(), "{site:?}");

        faults.fail(site, 1, 1);
        let second: Vec<Entry> = (31..=60).map(|n| entry(n, 20_000, &[q])).collect();
        let err = store
            .commit(&batch(second.clone()))
            .expect_err("the fault fails the commit");
        assert_eq!(faults.fired(site), 1, "{site:?}: {err}");
        assert_eq!(
            store.recent().positions(),
            before,
            "{site:?}: the failed commit's blocks are not kept"
        );
        assert!(
            store
                .recent()
                .positions()
                .iter()
                .all(|(_, pos)| *pos < head),
            "{site:?}"
        );

        // As the journal does: reopen (the readers made before stay), and the source
        // replays the batch.
        store = store.close_for_reopen().open().expect("reopen");
        assert!(
            store.recent().positions().is_empty(),
            "{site:?}: nothing kept over a reopen"
        );
        store.commit(&batch(second)).expect("the replay commits");
        // (After a commit that reported a failure but landed, the replay writes nothing.)
        let third: Vec<Entry> = (61..=70).map(|n| entry(n, 20_000, &[q])).collect();
        store.commit(&batch(third)).expect("third commit");
        let got = read_all(&mut reader, q, 0, 7, usize::MAX);
        let want = read_all(
            &mut store.reader().expect("reader").without_recent(),
            q,
            0,
            1000,
            usize::MAX,
        );
        assert_eq!(got, want, "{site:?}");
        let ids: Vec<_> = got.iter().map(|i| i.id.clone()).collect();
        let expected: Vec<_> = (1..=70).map(|n| format!("r{n}")).collect();
        assert_eq!(ids, expected, "{site:?}: every record once");
        assert!(reader.recent_hits(q) > 0, "{site:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Batches of random sizes into two queues; a reader that keeps up (taking blocks from
    /// memory) and one that reads only the segments afterwards get the same records, equal to
    /// what was committed.
    #[test]
    fn readers_get_the_same_records_from_memory_and_from_the_segment(
        commits in prop::collection::vec(
            (prop::collection::vec((0usize..40_000, 0u8..3), 1..120), 1usize..50, 1usize..400_000),
            1..6,
        ),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(
            &dir.path().join("kubetrail.db"),
            &StoreOptions { sync: SyncMode::Normal, ..options(&Faults::default()) },
        )
        .expect("open");
        let qs = [store.queue_id("a").expect("queue"), store.queue_id("b").expect("queue")];
        let mut live = store.reader().expect("reader");
        let mut after = [0u64; 2];
        let mut got: [Vec<QueueItem>; 2] = [Vec::new(), Vec::new()];
        let mut want: [Vec<(String, Bytes)>; 2] = [Vec::new(), Vec::new()];
        let mut n = 0u64;
        for (records, step, max_bytes) in &commits {
            let entries: Vec<Entry> = records
                .iter()
                .map(|&(len, to)| {
                    n += 1;
                    let queues: &[QueueId] = match to {
                        0 => &qs[..1],
                        1 => &qs[1..],
                        _ => &qs,
                    };
                    let e = entry(n, len, queues);
                    for (i, q) in qs.iter().enumerate() {
                        if queues.contains(q) {
                            want[i].push((e.id.clone(), e.data.clone()));
                        }
                    }
                    e
                })
                .collect();
            store.commit(&batch(entries)).expect("commit");
            for (i, q) in qs.iter().enumerate() {
                let items = read_all(&mut live, *q, after[i], *step, *max_bytes);
                after[i] = items.last().map_or(after[i], |it| it.seq);
                got[i].extend(items);
            }
        }
        let mut cold = store.reader().expect("reader").without_recent();
        for (i, q) in qs.iter().enumerate() {
            let from_segments = read_all(&mut cold, *q, 0, 1000, usize::MAX);
            prop_assert_eq!(&got[i], &from_segments);
            let pairs: Vec<(String, Bytes)> =
                got[i].iter().map(|it| (it.id.clone(), it.data.clone())).collect();
            prop_assert_eq!(&pairs, &want[i]);
            prop_assert_eq!(cold.recent_hits(*q), 0);
            if !want[i].is_empty() {
                prop_assert!(live.recent_hits(*q) > 0, "queue {}: no block from memory", i);
            }
        }
    }
}

/// A store in `dir` with a queue "out" and a reader made before anything is committed.
fn store_with_reader(dir: &std::path::Path) -> (Store, QueueId, crate::Reader) {
    let mut store =
        Store::open(&dir.join("kubetrail.db"), &options(&Faults::default())).expect("open");
    let q = store.queue_id("out").expect("queue");
    let r = store.reader().expect("reader");
    (store, q, r)
}

/// A record larger than the block buffer the writer keeps (over 4 × 256 KiB) still reaches a
/// caught-up reader whole: the writer once handed the readers that block's buffer after
/// dropping it (an empty block saying it held 11 records), and the reader stopped there.
#[test]
fn a_huge_record_reaches_a_caught_up_reader_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut store, q, mut r) = store_with_reader(dir.path());
    let mut expected = Vec::new();
    let mut n = 0u64;
    for round in 0..3 {
        let mut entries: Vec<Entry> = (0..10)
            .map(|_| {
                n += 1;
                entry(n, 300, &[q])
            })
            .collect();
        n += 1;
        entries.push(entry(n, (2 << 20) + round, &[q]));
        expected.extend(entries.iter().map(|e| (e.id.clone(), e.data.clone())));
        store.commit(&batch(entries)).expect("commit");
    }
    let got = read_all(&mut r, q, 0, 5, 1 << 20);
    assert!(
        r.recent_hits(q) > 0,
        "the blocks were not taken from memory"
    );
    let got: Vec<(String, Bytes)> = got.into_iter().map(|i| (i.id, i.data)).collect();
    assert_eq!(got.len(), expected.len());
    assert!(
        got == expected,
        "the records read differ from those committed"
    );
}

/// A block kept in memory that does not match its header (it never should: the writer's
/// bug above made one) is read from the segment instead of stopping the reader.
#[test]
fn a_kept_block_that_does_not_check_out_is_read_from_the_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut store, q, mut r) = store_with_reader(dir.path());
    let entries: Vec<Entry> = (1..=12).map(|n| entry(n, 200, &[q])).collect();
    let expected: Vec<(String, Bytes)> = entries
        .iter()
        .map(|e| (e.id.clone(), e.data.clone()))
        .collect();
    store.commit(&batch(entries)).expect("commit");
    // Its one block, replaced in memory by a copy without its records.
    let kept = store.recent().get(q, 0).expect("the block is kept");
    store.recent().clear();
    store.recent().publish([RecentBlock {
        raw: Bytes::new(),
        ..kept
    }]);
    let got: Vec<(String, Bytes)> = read_all(&mut r, q, 0, 5, 1 << 20)
        .into_iter()
        .map(|i| (i.id, i.data))
        .collect();
    assert!(got == expected, "{} records read", got.len());
}
