//! Property test: random sequences of commits, acks, failing commits, purges and reopens
//! against a simple in-memory model. Some commits meet an injected I/O fault (a failed segment
//! write, directory fsync or segment removal, or a SQLite commit that fails, before or after
//! it landed): the store is then reopened, as the journal does, and the model holds the
//! commit entirely when it landed and not at all otherwise. Queue contents, sequence numbers, depths, dedup decisions
//! and checkpoints must match the model after every step.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use kubetrail_state::{
    Ack, CommitBatch, Dedup, Entry, FaultSite, Faults, QueueId, QueueItem, Store, StoreOptions,
    SyncMode,
};
use proptest::prelude::*;

const QUEUES: [&str; 3] = ["a", "b", "c"];
const SCOPES: [&str; 2] = ["s0", "s1"];

#[derive(Debug, Clone)]
struct EntrySpec {
    /// (scope, key, value, expires)
    dedup: Option<(usize, u8, u8, i64)>,
    /// Bit i set: goes to queue i.
    queue_mask: u8,
    len: usize,
}

#[derive(Debug, Clone)]
struct AckSpec {
    queue: usize,
    /// Acks up to (first remaining seq - 1) + extra, or (next seq - 1) + extra when empty.
    extra: u64,
    with_state: bool,
}

#[derive(Debug, Clone)]
enum Op {
    Commit {
        entries: Vec<EntrySpec>,
        checkpoints: Vec<(u8, u8)>,
        /// Checkpoint streams deleted (after the upserts).
        forget: Vec<u8>,
        acks: Vec<AckSpec>,
        /// The `nth` call at `FaultSite::ALL[site]` during the commit fails.
        fault: Option<(usize, u64)>,
    },
    /// Like `Commit` but one more entry names a queue the store does not have, so the whole
    /// transaction must roll back.
    FailingCommit {
        entries: Vec<EntrySpec>,
    },
    Purge(i64),
    Reopen,
}

fn entry_spec() -> impl Strategy<Value = EntrySpec> {
    (
        proptest::option::weighted(0.8, (0..SCOPES.len(), 0u8..6, 0u8..3, 0i64..100)),
        0u8..8,
        0usize..3000,
    )
        .prop_map(|(dedup, queue_mask, len)| EntrySpec {
            dedup,
            queue_mask,
            len,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (
            proptest::collection::vec(entry_spec(), 0..8),
            proptest::collection::vec((0u8..3, 0u8..10), 0..3),
            proptest::collection::vec(0u8..4, 0..2),
            proptest::collection::vec(
                (0..QUEUES.len(), 0u64..6, any::<bool>())
                    .prop_map(|(queue, extra, with_state)| AckSpec { queue, extra, with_state }),
                0..3,
            ),
            proptest::option::weighted(0.2, (0..FaultSite::ALL.len(), 1u64..3)),
        )
            .prop_map(|(entries, checkpoints, forget, acks, fault)| Op::Commit { entries, checkpoints, forget, acks, fault }),
        1 => proptest::collection::vec(entry_spec(), 0..4)
            .prop_map(|entries| Op::FailingCommit { entries }),
        1 => (0i64..120).prop_map(Op::Purge),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Default, Clone)]
struct ModelQueue {
    next_seq: u64,
    items: BTreeMap<u64, (String, Vec<u8>)>,
}

#[derive(Debug, Default, Clone)]
struct Model {
    dedup: HashMap<(String, String), (String, i64)>,
    queues: Vec<ModelQueue>,
    checkpoints: HashMap<String, String>,
}

fn open(db: &Path, faults: &Faults) -> Store {
    Store::open(
        db,
        &StoreOptions {
            sync: SyncMode::Normal,
            // Small segments, so that commits start new ones and acks delete old ones.
            segment_bytes: 5000,
            reserve_bytes: 0,
            faults: faults.clone(),
            ..StoreOptions::default()
        },
    )
    .expect("open store")
}

fn build_entries(specs: &[EntrySpec], ids: &[QueueId], counter: &mut u64) -> Vec<Entry> {
    specs
        .iter()
        .map(|spec| {
            *counter += 1;
            Entry {
                dedup: spec.dedup.map(|(scope, key, value, expires)| Dedup {
                    scope: SCOPES[scope].into(),
                    key: format!("k{key}"),
                    value: format!("v{value}"),
                    expires_at_unix_ms: expires,
                }),
                queues: (0..QUEUES.len())
                    .filter(|i| spec.queue_mask & (1 << i) != 0)
                    .map(|i| ids[i])
                    .collect(),
                id: format!("id{counter}"),
                data: (0..spec.len).map(|i| (i as u64 + *counter) as u8).collect(),
            }
        })
        .collect()
}

impl Model {
    /// Applies `batch` and returns the expected `inserted` flags.
    fn commit(&mut self, batch: &CommitBatch, ids: &[QueueId]) -> Vec<bool> {
        let index = |q: QueueId| ids.iter().position(|id| *id == q).expect("known queue");
        let mut inserted = Vec::new();
        for entry in &batch.entries {
            let fresh = match &entry.dedup {
                Some(d) => {
                    let key = (d.scope.to_string(), d.key.clone());
                    match self.dedup.get(&key) {
                        Some((value, _)) if *value == d.value => false,
                        _ => {
                            self.dedup
                                .insert(key, (d.value.clone(), d.expires_at_unix_ms));
                            true
                        }
                    }
                }
                None => true,
            };
            inserted.push(fresh);
            if fresh {
                for q in entry.queues.iter() {
                    let mq = &mut self.queues[index(*q)];
                    mq.items
                        .insert(mq.next_seq, (entry.id.clone(), entry.data.to_vec()));
                    mq.next_seq += 1;
                }
            }
        }
        for (stream, value) in &batch.checkpoints {
            self.checkpoints.insert(stream.clone(), value.clone());
        }
        for stream in &batch.forget {
            self.checkpoints.remove(stream);
        }
        for ack in &batch.acks {
            let mq = &mut self.queues[index(ack.queue)];
            mq.items.retain(|seq, _| *seq > ack.up_to_seq);
            if let Some((stream, value)) = &ack.state {
                self.checkpoints.insert(stream.clone(), value.clone());
            }
        }
        inserted
    }

    fn ack_up_to(&self, spec: &AckSpec) -> u64 {
        let mq = &self.queues[spec.queue];
        let base = match mq.items.keys().next() {
            Some(first) => first - 1,
            None => mq.next_seq - 1,
        };
        base + spec.extra
    }
}

fn check(store: &Store, model: &Model, ids: &[QueueId]) {
    let mut reader = store.reader().expect("reader");
    for (i, q) in ids.iter().enumerate() {
        let mq = &model.queues[i];
        let items = reader
            .read_queue(*q, 0, usize::MAX, usize::MAX)
            .expect("read queue");
        let expected: Vec<QueueItem> = mq
            .items
            .iter()
            .map(|(seq, (id, data))| QueueItem {
                seq: *seq,
                id: id.clone(),
                data: data.clone().into(),
            })
            .collect();
        assert_eq!(items, expected, "queue {}", QUEUES[i]);
        // The same in batches of at most two, as outputs read: each read starts where the
        // last one ended (the reader's cursor) and leaves a position hint for the next ack.
        let mut chunked = Vec::new();
        let mut after = 0;
        loop {
            let batch = reader
                .read_queue(*q, after, 2, usize::MAX)
                .expect("read queue");
            let Some(last) = batch.last() else { break };
            after = last.seq;
            chunked.extend(batch);
        }
        assert_eq!(chunked, expected, "queue {} read in batches", QUEUES[i]);
        // Depth bytes are the queue's blocks on disk (compressed, and a block stays until its
        // last record goes): none exactly when no record is left.
        let depth = store.queue_depth(*q);
        assert_eq!(
            depth.records,
            mq.items.len() as u64,
            "depth of queue {}",
            QUEUES[i]
        );
        assert_eq!(
            depth.bytes == 0,
            mq.items.is_empty(),
            "bytes of queue {}: {depth:?}",
            QUEUES[i]
        );
        assert_eq!(store.next_seq(*q), Some(mq.next_seq));
        assert_eq!(
            reader.first_seq(*q).expect("first_seq"),
            mq.items.keys().next().copied()
        );
    }
    for scope in SCOPES {
        let n = model.dedup.keys().filter(|(s, _)| s == scope).count() as u64;
        assert_eq!(
            store.dedup_len(scope).expect("dedup_len"),
            n,
            "scope {scope}"
        );
    }
    // Listed by prefix: exactly the model's `cp` streams, by name.
    let mut want: Vec<(&String, &String)> = model
        .checkpoints
        .iter()
        .filter(|(s, _)| s.starts_with("cp"))
        .collect();
    want.sort();
    let listed = store.checkpoints_under("cp").expect("list checkpoints");
    assert_eq!(
        listed
            .iter()
            .map(|(s, c)| (s, &c.value))
            .collect::<Vec<_>>(),
        want,
        "checkpoints under cp"
    );
    for stream in (0..3)
        .map(|i| format!("cp{i}"))
        .chain(QUEUES.map(|q| format!("ack-{q}")))
    {
        assert_eq!(
            reader
                .checkpoint(&stream)
                .expect("checkpoint")
                .map(|c| c.value),
            model.checkpoints.get(&stream).cloned(),
            "checkpoint {stream}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("kubetrail.db");
        // A queue id this store does not have, from a store with one more queue.
        let foreign = {
            let mut other = open(&dir.path().join("other.db"), &Faults::default());
            for name in QUEUES {
                other.queue_id(name).expect("queue");
            }
            other.queue_id("extra").expect("queue")
        };
        let faults = Faults::new();
        let mut store = open(&db, &faults);
        let ids: Vec<QueueId> = QUEUES.iter().map(|n| store.queue_id(n).expect("queue")).collect();
        prop_assert!(!ids.contains(&foreign));
        let mut model = Model {
            queues: vec![ModelQueue { next_seq: 1, ..ModelQueue::default() }; QUEUES.len()],
            ..Model::default()
        };
        let mut counter = 0u64;
        for op in ops {
            match op {
                Op::Commit { entries, checkpoints, forget, acks, fault } => {
                    let batch = CommitBatch {
                        entries: build_entries(&entries, &ids, &mut counter),
                        checkpoints: checkpoints
                            .iter()
                            .map(|(s, v)| (format!("cp{s}"), v.to_string()))
                            .collect(),
                        forget: forget.iter().map(|s| format!("cp{s}")).collect(),
                        acks: acks
                            .iter()
                            .map(|a| {
                                let up_to_seq = model.ack_up_to(a);
                                Ack {
                                    queue: ids[a.queue],
                                    up_to_seq,
                                    state: a
                                        .with_state
                                        .then(|| (format!("ack-{}", QUEUES[a.queue]), up_to_seq.to_string())),
                                }
                            })
                            .collect(),
                        trims: vec![],
                    };
                    let site = fault.map(|(i, nth)| {
                        faults.fail(FaultSite::ALL[i], nth, 1);
                        FaultSite::ALL[i]
                    });
                    let fired_before = site.map_or(0, |s| faults.fired(s));
                    let result = store.commit(&batch);
                    faults.clear();
                    let fired = site.is_some_and(|s| faults.fired(s) > fired_before);
                    let outcome = match result {
                        Ok(outcome) => outcome,
                        Err(e) => {
                            prop_assert!(fired, "failed without a fault: {}", e);
                            prop_assert!(!e.outcome_known(), "{}", e);
                            drop(store);
                            store = open(&db, &faults);
                            if site == Some(FaultSite::CommitAfter) {
                                model.commit(&batch, &ids);
                            }
                            check(&store, &model, &ids);
                            continue;
                        }
                    };
                    let expected = model.commit(&batch, &ids);
                    prop_assert_eq!(
                        outcome.duplicates,
                        expected.iter().filter(|fresh| !**fresh).count() as u64
                    );
                    prop_assert_eq!(outcome.inserted, expected);
                }
                Op::FailingCommit { entries } => {
                    let mut batch_entries = build_entries(&entries, &ids, &mut counter);
                    batch_entries.push(Entry {
                        dedup: None,
                        queues: [ids[0], foreign].into(),
                        id: "doomed".into(),
                        data: b"doomed".to_vec().into(),
                    });
                    let batch = CommitBatch {
                        entries: batch_entries,
                        checkpoints: vec![("cp0".into(), "doomed".into())],
                        forget: vec![],
                        acks: vec![],
                        trims: vec![],
                    };
                    prop_assert!(store.commit(&batch).is_err());
                }
                Op::Purge(now) => {
                    let before = model.dedup.len();
                    model.dedup.retain(|_, (_, expires)| *expires >= now);
                    let purged = store.purge_expired(now).expect("purge");
                    prop_assert_eq!(purged, (before - model.dedup.len()) as u64);
                }
                Op::Reopen => {
                    drop(store);
                    store = open(&db, &faults);
                    let reopened: Vec<QueueId> =
                        QUEUES.iter().map(|n| store.queue_id(n).expect("queue")).collect();
                    prop_assert_eq!(&reopened, &ids);
                }
            }
            check(&store, &model, &ids);
        }
    }
}
