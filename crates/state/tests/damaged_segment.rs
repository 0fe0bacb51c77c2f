//! A flipped byte in a queue segment: the damaged block is found by its checksum, its intact
//! records and every other block's records are still read, and the damaged records are
//! reported (seq, file, offset) instead of stopping the queue.

mod common;

use kubetrail_state::{CommitBatch, Entry, QueueId, Store, StoreOptions};

fn batch(q: QueueId, from: u64, n: u64) -> CommitBatch {
    CommitBatch {
        entries: (from..from + n)
            .map(|i| Entry {
                dedup: None,
                queues: [q].into(),
                id: format!("id-{i}"),
                data: format!("{{\"n\":{i},\"text\":\"record number {i} of the queue\"}}")
                    .into_bytes()
                    .into(),
            })
            .collect(),
        ..CommitBatch::default()
    }
}

/// The (first) segment file of queue `q` of the store in `dir`.
fn segment(dir: &std::path::Path, q: QueueId) -> std::path::PathBuf {
    let qdir = dir
        .join("kubetrail.db-queues")
        .join(format!("q{}", q.get()));
    std::fs::read_dir(&qdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .expect("a segment")
}

#[test]
fn a_flipped_byte_damages_only_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kubetrail.db");
    let mut store = Store::open(&db, &StoreOptions::default()).unwrap();
    let q = store.queue_id("output/out").unwrap();
    // Three commits, three blocks of 50 records.
    for c in 0..3 {
        store.commit(&batch(q, c * 50, 50)).unwrap();
    }
    let seg = segment(dir.path(), q);
    let mut bytes = std::fs::read(&seg).unwrap();
    let blocks: Vec<usize> = bytes
        .windows(4)
        .enumerate()
        .filter(|(_, w)| w == b"KTQB")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(blocks.len(), 3, "one block per commit");
    // A byte in the middle of the second block's payload.
    let flip = (blocks[1] + 36 + blocks[2]) / 2;
    bytes[flip] ^= 0x40;
    std::fs::write(&seg, &bytes).unwrap();

    // Read back as after a restart: the blocks just committed come from the segment,
    // not from the writer's memory of them.
    drop(store);
    let mut store = Store::open(&db, &StoreOptions::default()).unwrap();
    let mut reader = store.reader().unwrap();
    let (got, damaged) = common::read_with_damage(&mut reader, q, 7);
    assert!(!damaged.is_empty(), "the flipped byte is found");
    for d in &damaged {
        assert!(
            (51..=100).contains(&d.seq),
            "only the second block: {}",
            d.seq
        );
        assert_eq!(d.path, seg);
        assert_eq!(d.offset, blocks[1] as u64, "the block's offset in the file");
        assert!(d.what.contains("checksum"), "{}", d.what);
    }
    let mut seqs: Vec<u64> = got.iter().map(|i| i.seq).collect();
    seqs.extend(damaged.iter().map(|d| d.seq));
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=150).collect::<Vec<_>>(), "every record once");
    for i in &got {
        let n = i.seq - 1;
        assert_eq!(i.id, format!("id-{n}"));
        assert_eq!(
            &i.data[..],
            format!("{{\"n\":{n},\"text\":\"record number {n} of the queue\"}}").as_bytes(),
            "an intact record is intact"
        );
    }
    // Acknowledged past the damage, the queue goes on.
    store
        .commit(&CommitBatch {
            acks: vec![kubetrail_state::Ack {
                queue: q,
                up_to_seq: 150,
                state: None,
            }],
            ..CommitBatch::default()
        })
        .unwrap();
    store.commit(&batch(q, 150, 5)).unwrap();
    let items = reader.read_queue(q, 150, 100, usize::MAX).unwrap();
    assert_eq!(items.len(), 5);
}

/// A flipped byte in a block's header: the block's length is lost, so the reader looks for
/// the next intact header, reports the records in between as one damaged run (with the file
/// and the offset of the damaged header), and delivers the rest; acknowledgements past the
/// damage commit.
#[test]
fn a_flipped_byte_in_a_block_header_skips_to_the_next_intact_block() {
    for (commits, damaged_block) in [(3u64, 1usize), (3, 2), (3, 0)] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("kubetrail.db");
        let mut store = Store::open(&db, &StoreOptions::default()).unwrap();
        let q = store.queue_id("output/out").unwrap();
        for c in 0..commits {
            store.commit(&batch(q, c * 50, 50)).unwrap();
        }
        let seg = segment(dir.path(), q);
        let mut bytes = std::fs::read(&seg).unwrap();
        let blocks: Vec<usize> = bytes
            .windows(4)
            .enumerate()
            .filter(|(_, w)| w == b"KTQB")
            .map(|(i, _)| i)
            .collect();
        assert_eq!(blocks.len(), commits as usize, "one block per commit");
        // The low byte of the block's first sequence number.
        bytes[blocks[damaged_block] + 8] ^= 0x01;
        std::fs::write(&seg, &bytes).unwrap();

        // Read back as after a restart: the blocks just committed come from the segment,
        // not from the writer's memory of them.
        drop(store);
        let mut store = Store::open(&db, &StoreOptions::default()).unwrap();
        let mut reader = store.reader().unwrap();
        let (items, damaged) = common::read_with_damage(&mut reader, q, 7);
        let got: Vec<u64> = items.into_iter().map(|i| i.seq).collect();
        let lost_from = damaged_block as u64 * 50 + 1;
        assert_eq!(damaged.len(), 1, "one run: {damaged:?}");
        let d = &damaged[0];
        assert_eq!((d.first_seq, d.seq), (lost_from, lost_from + 49));
        assert_eq!(d.path, seg);
        assert_eq!(
            d.offset, blocks[damaged_block] as u64,
            "the header's offset"
        );
        assert!(d.what.contains("header"), "{}", d.what);
        let want: Vec<u64> = (1..=commits * 50)
            .filter(|s| !(lost_from..lost_from + 50).contains(s))
            .collect();
        assert_eq!(got, want, "every other record, once, in order");
        // Acknowledged up to the end of the damage, then past it: both commit.
        for up_to_seq in [lost_from + 49, commits * 50] {
            store
                .commit(&CommitBatch {
                    acks: vec![kubetrail_state::Ack {
                        queue: q,
                        up_to_seq,
                        state: None,
                    }],
                    ..CommitBatch::default()
                })
                .unwrap();
        }
        store.commit(&batch(q, commits * 50, 5)).unwrap();
        let items = reader.read_queue(q, commits * 50, 100, usize::MAX).unwrap();
        assert_eq!(items.len(), 5);
    }
}

/// An acknowledgement or a trim whose position is not known from a read (after a restart)
/// walks the log from the tail: a damaged block header on the way is passed over to the next
/// intact block instead of failing the commit.
#[test]
fn acknowledgements_and_trims_walk_past_a_damaged_block_header() {
    for trim in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("kubetrail.db");
        let mut store = Store::open(&db, &StoreOptions::default()).unwrap();
        let q = store.queue_id("output/out").unwrap();
        for c in 0..3 {
            store.commit(&batch(q, c * 50, 50)).unwrap();
        }
        let seg = segment(dir.path(), q);
        let mut bytes = std::fs::read(&seg).unwrap();
        let second = bytes
            .windows(4)
            .enumerate()
            .filter(|(_, w)| w == b"KTQB")
            .map(|(i, _)| i)
            .nth(1)
            .expect("a second block");
        bytes[second + 20] ^= 0x04;
        std::fs::write(&seg, &bytes).unwrap();
        // A restart: no position is known but the tail's.
        drop(store);
        let mut store = Store::open(&db, &StoreOptions::default()).unwrap();
        let commit = if trim {
            CommitBatch {
                trims: vec![kubetrail_state::Trim {
                    queue: q,
                    free_bytes: u64::MAX,
                }],
                ..CommitBatch::default()
            }
        } else {
            CommitBatch {
                acks: vec![kubetrail_state::Ack {
                    queue: q,
                    up_to_seq: 120,
                    state: None,
                }],
                ..CommitBatch::default()
            }
        };
        let outcome = store.commit(&commit).unwrap();
        let mut reader = store.reader().unwrap();
        let items = reader.read_queue(q, 0, 1000, usize::MAX).unwrap();
        assert!(reader.take_damaged(q).is_empty());
        let seqs: Vec<u64> = items.iter().map(|i| i.seq).collect();
        if trim {
            assert_eq!(outcome.trimmed, [(150, outcome.trimmed[0].1)]);
            assert!(seqs.is_empty(), "{seqs:?}");
        } else {
            assert_eq!(seqs, (121..=150).collect::<Vec<_>>());
        }
    }
}

/// Records that do not compress are stored as they are; a damaged length in one makes it
/// swallow the next record, so the block parses into one record fewer than its header says.
/// No record after the damage may be delivered under another record's number: each delivered
/// record is the one its sequence number says, every number is delivered or reported once.
#[test]
fn a_damaged_length_that_swallows_the_next_record_delivers_nothing_under_a_wrong_number() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kubetrail.db");
    let mut store = Store::open(&db, &StoreOptions::default()).unwrap();
    let q = store.queue_id("output/out").unwrap();
    // Incompressible records (xorshift bytes; ids and lengths differ from record to record, so
    // not even the record headers repeat): the block is stored as it is.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let n = 20usize;
    let records: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            let id: String = (0..5 + i)
                .map(|_| LETTERS[(next() % LETTERS.len() as u64) as usize] as char)
                .collect();
            let data: Vec<u8> = (0..200 + 7 * i).map(|_| next() as u8).collect();
            (id, data)
        })
        .collect();
    store
        .commit(&CommitBatch {
            entries: records
                .iter()
                .map(|(id, data)| Entry {
                    dedup: None,
                    queues: [q].into(),
                    id: id.clone(),
                    data: data.clone().into(),
                })
                .collect(),
            ..CommitBatch::default()
        })
        .unwrap();
    let seg = segment(dir.path(), q);
    let mut bytes = std::fs::read(&seg).unwrap();
    let block = 16;
    assert_eq!(
        &bytes[block..block + 4],
        b"KTQB",
        "the first block follows the file header"
    );
    assert_eq!(
        bytes[block + 4],
        0,
        "the block is stored (codec 0), not compressed"
    );
    // Record 3's data length grows by the whole of record 4 (its 12-byte header, id, data).
    let size = |k: usize| 12 + records[k].0.len() + records[k].1.len();
    let at3 = block + 36 + (0..3).map(size).sum::<usize>();
    let grown = (records[3].1.len() + size(4)) as u32;
    bytes[at3 + 4..at3 + 8].copy_from_slice(&grown.to_le_bytes());
    std::fs::write(&seg, &bytes).unwrap();

    // Read back as after a restart: the blocks just committed come from the segment,
    // not from the writer's memory of them.
    drop(store);
    let store = Store::open(&db, &StoreOptions::default()).unwrap();
    let mut reader = store.reader().unwrap();
    let items = reader.read_queue(q, 0, 100, usize::MAX).unwrap();
    let damaged = reader.take_damaged(q);
    for i in &items {
        let (id, data) = &records[(i.seq - 1) as usize];
        assert_eq!(&i.id, id, "seq {} is its own record", i.seq);
        assert_eq!(&i.data[..], &data[..]);
    }
    let mut seqs: Vec<u64> = items.iter().map(|i| i.seq).collect();
    seqs.extend(damaged.iter().map(|d| d.seq));
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=n as u64).collect::<Vec<_>>(),
        "every number once"
    );
    assert!(
        items.iter().any(|i| i.seq == 3) && !items.iter().any(|i| i.seq == 4),
        "the records before the damage are delivered, the damaged one is not"
    );
    assert!(
        damaged.iter().any(|d| d.id == records[5].0),
        "a record past the damage goes to the dead-letter file with its id"
    );
}
