//! A data directory whose queues were written by kubetrail before segment format 2
//! (uncompressed frames without checksums) is read as it is after the upgrade: the same
//! records, in order, then new records go into format-2 segments after them; acknowledgements,
//! trims and reopening work across the two formats.
//!
//! The old writer lives here only: a format-1 frame is `u32 total length, u32 id length,
//! u64 seq, id, data`, back to back from the first byte of the segment file, and a commit
//! stored the queue's bounds (positions are bytes of frames) in the `queues` row.

mod common;

use std::path::{Path, PathBuf};

use kubetrail_state::{
    Ack, CommitBatch, Entry, QueueId, QueueItem, Store, StoreOptions, SyncMode, Trim,
};

fn options() -> StoreOptions {
    StoreOptions {
        sync: SyncMode::Normal,
        segment_bytes: 4000,
        ..StoreOptions::default()
    }
}

/// The format-1 frame of a record.
fn v1_frame(seq: u64, id: &str, data: &[u8]) -> Vec<u8> {
    let total = 16 + id.len() + data.len();
    let mut f = Vec::with_capacity(total);
    f.extend_from_slice(&(total as u32).to_le_bytes());
    f.extend_from_slice(&(id.len() as u32).to_le_bytes());
    f.extend_from_slice(&seq.to_le_bytes());
    f.extend_from_slice(id.as_bytes());
    f.extend_from_slice(data);
    f
}

fn record(seq: u64) -> (String, Vec<u8>) {
    let data = format!(
        r#"{{"kind":"k8s_audit","n":{seq},"pad":"{}"}}"#,
        "x".repeat(700)
    );
    (format!("old-{seq}"), data.into_bytes())
}

fn queue_dir(db: &Path, q: QueueId) -> PathBuf {
    db.with_file_name("kubetrail.db-queues")
        .join(format!("q{}", q.get()))
}

/// Writes queue `q`'s records `1..=n` as the old version did, in segments of about 3,000
/// bytes, with records `..=acked` acknowledged, a spare segment of old frames and
/// uncommitted bytes past the head; stores the bounds. Returns the head position.
fn write_v1_queue(db: &Path, q: QueueId, n: u64, acked: u64) -> u64 {
    let dir = queue_dir(db, q);
    std::fs::create_dir_all(&dir).unwrap();
    let (mut pos, mut seg_start, mut seg) = (0u64, 0u64, Vec::new());
    let (mut tail_pos, mut tail_seq) = (0u64, 1u64);
    for seq in 1..=n {
        if seq == acked + 1 {
            (tail_pos, tail_seq) = (pos, seq);
        }
        if seg.len() >= 3000 {
            std::fs::write(dir.join(format!("{seg_start:020}.seg")), &seg).unwrap();
            (seg_start, seg) = (pos, Vec::new());
        }
        let (id, data) = record(seq);
        let f = v1_frame(seq, &id, &data);
        pos += f.len() as u64;
        seg.extend_from_slice(&f);
    }
    // An append that never committed.
    seg.extend_from_slice(&v1_frame(n + 1, "uncommitted", b"{}"));
    std::fs::write(dir.join(format!("{seg_start:020}.seg")), &seg).unwrap();
    std::fs::write(
        dir.join("spare.seg"),
        v1_frame(1, "old-spare", b"{}").repeat(50),
    )
    .unwrap();
    // The segments wholly before the tail were deleted by the old version.
    for start in segment_starts(&dir) {
        let next = segment_starts(&dir).into_iter().find(|s| *s > start);
        if next.is_some_and(|next| next <= tail_pos) {
            std::fs::remove_file(dir.join(format!("{start:020}.seg"))).unwrap();
        }
    }
    rusqlite::Connection::open(db)
        .unwrap()
        .execute(
            "UPDATE queues SET tail_seq = ?2, tail_pos = ?3, next_seq = ?4, head_pos = ?5
             WHERE id = ?1",
            rusqlite::params![q.get(), tail_seq, tail_pos, n + 1, pos],
        )
        .unwrap();
    pos
}

fn segment_starts(dir: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".seg")?.parse().ok()
        })
        .collect();
    v.sort();
    v
}

fn expected(seqs: impl IntoIterator<Item = u64>) -> Vec<QueueItem> {
    seqs.into_iter()
        .map(|seq| {
            let (id, data) = record(seq);
            QueueItem {
                seq,
                id,
                data: data.into(),
            }
        })
        .collect()
}

fn commit(store: &mut Store, batch: CommitBatch) {
    store.commit(&batch).expect("commit");
}

fn ack(q: QueueId, up_to_seq: u64) -> CommitBatch {
    CommitBatch {
        acks: vec![Ack {
            queue: q,
            up_to_seq,
            state: None,
        }],
        ..CommitBatch::default()
    }
}

fn read_all(store: &Store, q: QueueId) -> Vec<QueueItem> {
    store
        .reader()
        .unwrap()
        .read_queue(q, 0, usize::MAX, usize::MAX)
        .unwrap()
}

#[test]
fn queues_written_by_the_previous_format_are_delivered_and_continued() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kubetrail.db");
    let (q, r) = {
        let mut store = Store::open(&db, &options()).unwrap();
        (
            store.queue_id("output/a").unwrap(),
            store.queue_id("output/b").unwrap(),
        )
    };
    // Queue a: 20 records, 5 acknowledged; queue b: 12 records, none acknowledged.
    let head_a = write_v1_queue(&db, q, 20, 5);
    write_v1_queue(&db, r, 12, 0);
    let old_segments = segment_starts(&queue_dir(&db, q));
    assert!(old_segments.len() >= 3, "{old_segments:?}");

    let mut store = Store::open(&db, &options()).unwrap();
    assert_eq!(read_all(&store, q), expected(6..=20));
    assert_eq!(read_all(&store, r), expected(1..=12));
    let depth = store.queue_depth(q);
    assert_eq!(depth.records, 15);
    // In batches, as outputs read: the cursor and the hints work on old frames.
    let mut reader = store.reader().unwrap();
    let mut got = Vec::new();
    let mut after = 0;
    loop {
        let batch = reader.read_queue(q, after, 4, usize::MAX).unwrap();
        let Some(last) = batch.last() else { break };
        after = last.seq;
        got.extend(batch);
    }
    assert_eq!(got, expected(6..=20));

    // New records go into a format-2 segment after the old ones; the old last segment is
    // cut back to its committed bytes and never appended to.
    let last_old = *old_segments.last().unwrap();
    let last_old_path = queue_dir(&db, q).join(format!("{last_old:020}.seg"));
    let old_len = std::fs::metadata(&last_old_path).unwrap().len();
    assert_eq!(old_len, head_a - last_old, "uncommitted bytes cut");
    let new: Vec<Entry> = (21..=30)
        .map(|seq| {
            let (id, data) = record(seq);
            Entry {
                dedup: None,
                queues: [q, r].into(),
                id,
                data: data.into(),
            }
        })
        .collect();
    commit(
        &mut store,
        CommitBatch {
            entries: new,
            ..CommitBatch::default()
        },
    );
    assert_eq!(std::fs::metadata(&last_old_path).unwrap().len(), old_len);
    let starts = segment_starts(&queue_dir(&db, q));
    assert_eq!(
        *starts.last().unwrap(),
        head_a,
        "a new segment at the old head"
    );
    let new_seg = std::fs::read(queue_dir(&db, q).join(format!("{head_a:020}.seg"))).unwrap();
    assert_eq!(&new_seg[..8], b"\0\0\0\0KTQS", "format 2");
    // The new records take far fewer bytes than the old frames did.
    let new_bytes = store.queue_depth(q).bytes - depth.bytes;
    let old_bytes: u64 = (21..=30)
        .map(|s| {
            let (id, data) = record(s);
            (16 + id.len() + data.len()) as u64
        })
        .sum();
    assert!(new_bytes * 3 < old_bytes, "{new_bytes} vs {old_bytes}");
    assert_eq!(read_all(&store, q), expected(6..=30));
    assert_eq!(
        read_all(&store, r),
        expected((1..=12).chain(21..=30))
            .into_iter()
            .enumerate()
            .map(|(i, item)| QueueItem {
                seq: i as u64 + 1,
                ..item
            })
            .collect::<Vec<_>>()
    );

    // Acknowledging into the old frames, then past them into a new block.
    commit(&mut store, ack(q, 12));
    assert_eq!(read_all(&store, q), expected(13..=30));
    commit(&mut store, ack(q, 23));
    assert_eq!(read_all(&store, q), expected(24..=30));
    assert_eq!(
        segment_starts(&queue_dir(&db, q)),
        [head_a],
        "old segments released"
    );
    // Trimming queue b across the formats: whole old frames, then whole new blocks.
    let out = store
        .commit(&CommitBatch {
            trims: vec![Trim {
                queue: r,
                free_bytes: 5000,
            }],
            ..CommitBatch::default()
        })
        .unwrap();
    let (dropped, _) = out.trimmed[0];
    let left = read_all(&store, r);
    assert_eq!(left.len() as u64, 22 - dropped);
    assert_eq!(left.first().map(|i| i.seq), Some(dropped + 1));

    // Reopening after the upgrade: the same records.
    drop(store);
    let store = Store::open(&db, &options()).unwrap();
    assert_eq!(read_all(&store, q), expected(24..=30));
    assert_eq!(read_all(&store, r), left);
}

/// A damaged format-1 frame (a length shorter than its header, a seq that is not the one due,
/// a length past its segment's end) cannot be passed over inside its segment (format 1 has
/// no magic nor checksum): the reader goes on at the next segment's first frame, and the
/// records in between are reported as one damaged run (for the dead-letter file), as for a
/// damaged format-2 block header; an acknowledgement past them commits, after a restart too.
#[test]
fn a_damaged_format_1_frame_skips_to_the_next_segment() {
    for damage in ["short length", "wrong seq", "length past the segment"] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("kubetrail.db");
        let q = Store::open(&db, &options())
            .unwrap()
            .queue_id("output/a")
            .unwrap();
        write_v1_queue(&db, q, 20, 0);
        // Segments of four frames: 1-4, 5-8, 9-12, ... Frame 6 is the second of the second.
        let starts = segment_starts(&queue_dir(&db, q));
        let second = queue_dir(&db, q).join(format!("{:020}.seg", starts[1]));
        let mut bytes = std::fs::read(&second).unwrap();
        let at = u32::from_le_bytes(bytes[0..4].try_into().unwrap()) as usize;
        assert_eq!(
            u64::from_le_bytes(bytes[at + 8..at + 16].try_into().unwrap()),
            6
        );
        match damage {
            "short length" => bytes[at..at + 4].copy_from_slice(&5u32.to_le_bytes()),
            "wrong seq" => bytes[at + 8..at + 16].copy_from_slice(&99u64.to_le_bytes()),
            _ => bytes[at..at + 4].copy_from_slice(&100_000u32.to_le_bytes()),
        }
        std::fs::write(&second, &bytes).unwrap();

        let store = Store::open(&db, &options()).unwrap();
        let mut reader = store.reader().unwrap();
        let (got, damaged) = common::read_with_damage(&mut reader, q, 3);
        assert_eq!(got, expected((1..=5).chain(9..=20)), "{damage}");
        assert_eq!(damaged.len(), 1, "{damage}: one run: {damaged:?}");
        assert_eq!((damaged[0].first_seq, damaged[0].seq), (6, 8), "{damage}");
        assert_eq!(damaged[0].path, second, "{damage}");
        assert_eq!(damaged[0].offset, at as u64, "{damage}");
        // Acknowledged past the damage, then everything, after a restart (the walk from the
        // tail passes over the damaged frame too).
        drop(reader);
        drop(store);
        let mut store = Store::open(&db, &options()).unwrap();
        commit(&mut store, ack(q, 10));
        assert_eq!(read_all(&store, q), expected(11..=20), "{damage}");
        commit(&mut store, ack(q, 20));
        assert!(read_all(&store, q).is_empty(), "{damage}");
    }
}
