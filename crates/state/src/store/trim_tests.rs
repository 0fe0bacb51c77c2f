//! Tests of trims (`drop_oldest`): the oldest blocks dropped until enough bytes are free.

use super::*;
use crate::batch::{Ack, Entry, Trim};

#[test]
fn trims_drop_the_oldest_blocks_until_enough_bytes_are_free() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(
        &dir.path().join("t.db"),
        &StoreOptions {
            sync: SyncMode::Normal,
            ..Default::default()
        },
    )
    .unwrap();
    let q = store.queue_id("out").unwrap();
    // Ten commits of two records: ten blocks of the same size.
    for i in 0..10 {
        let entries = (0..2)
            .map(|j| Entry {
                dedup: None,
                queues: [q].into(),
                id: format!("{i}-{j}"),
                data: vec![b'x'; 100].into(),
            })
            .collect();
        store
            .commit(&CommitBatch {
                entries,
                ..Default::default()
            })
            .unwrap();
    }
    let block = store.queue_depth(q).bytes / 10;
    assert_eq!(store.queue_depth(q).bytes, 10 * block);
    let out = store
        .commit(&CommitBatch {
            trims: vec![Trim {
                queue: q,
                free_bytes: 2 * block + 1,
            }],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(out.trimmed, vec![(6, 3 * block)]);
    assert_eq!(store.queue_depth(q).records, 14);
    assert_eq!(store.queue_depth(q).bytes, 7 * block);
    let mut r = store.reader().unwrap();
    let items = r.read_queue(q, 0, 100, usize::MAX).unwrap();
    assert_eq!(items.first().map(|i| i.id.as_str()), Some("3-0"));
    // A tail inside a block (one record of it acknowledged): the trim counts only the
    // records that were left of it.
    store
        .commit(&CommitBatch {
            acks: vec![Ack {
                queue: q,
                up_to_seq: 7,
                state: None,
            }],
            trims: vec![Trim {
                queue: q,
                free_bytes: 1,
            }],
            ..Default::default()
        })
        .unwrap();
    let items = r.read_queue(q, 0, 100, usize::MAX).unwrap();
    assert_eq!(items.first().map(|i| i.id.as_str()), Some("4-0"));
    // Asking for more than there is empties the queue and says how much it dropped.
    let out = store
        .commit(&CommitBatch {
            trims: vec![Trim {
                queue: q,
                free_bytes: 1 << 20,
            }],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(out.trimmed, vec![(12, 6 * block)]);
    assert_eq!(store.queue_depth(q).records, 0);
}
