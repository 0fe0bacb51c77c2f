//! Disk faults at each place a commit or an acknowledgement writes, syncs or removes
//! something: after each, either the commit succeeded and every promise holds, or it failed
//! with an error that names the operation, asks for a reopen (`outcome_known` is false), and
//! after the reopen the store holds the batch entirely or not at all; the source's replay
//! (the same batch again, as it resumes from its checkpoint) then stores every record once.

use std::path::Path;

use super::{FaultSite, Faults};
use crate::store::noise;
use crate::{Ack, CommitBatch, Dedup, Entry, QueueId, Store, StoreOptions, SyncMode};

const N: u64 = 10;

fn options(faults: &Faults) -> StoreOptions {
    StoreOptions {
        sync: SyncMode::Full,
        // Every commit starts a new segment, and every acknowledgement releases one: each
        // commit reaches every site.
        segment_bytes: 1,
        reserve_bytes: 0,
        faults: faults.clone(),
        ..StoreOptions::default()
    }
}

/// Records `{tag}0..{tag}N` with dedup keys, the source's checkpoint `tag`, and optionally an
/// acknowledgement with the output's state.
fn batch(q: QueueId, tag: &str, ack: Option<u64>) -> CommitBatch {
    CommitBatch {
        entries: (0..N)
            .map(|i| Entry {
                dedup: Some(Dedup {
                    scope: "src".into(),
                    key: format!("{tag}{i}"),
                    value: "1".into(),
                    expires_at_unix_ms: i64::MAX,
                }),
                queues: [q].into(),
                id: format!("{tag}{i}"),
                data: noise(i + 7, 300).into(),
            })
            .collect(),
        checkpoints: vec![("src".into(), tag.into())],
        acks: ack
            .map(|up_to_seq| Ack {
                queue: q,
                up_to_seq,
                state: Some(("output/out".into(), up_to_seq.to_string())),
            })
            .into_iter()
            .collect(),
        ..CommitBatch::default()
    }
}

/// The queue's records as `(seq, id)`, and the damaged ones (there must be none).
fn contents(store: &Store, q: QueueId) -> Vec<(u64, String)> {
    let mut r = store.reader().expect("reader");
    let items = r.read_queue(q, 0, 1000, usize::MAX).expect("read queue");
    assert!(r.take_damaged(q).is_empty());
    items.into_iter().map(|i| (i.seq, i.id)).collect()
}

fn checkpoint(store: &Store, stream: &str) -> Option<String> {
    store
        .checkpoint(stream)
        .expect("checkpoint")
        .map(|c| c.value)
}

fn segment_files(dir: &Path, q: QueueId) -> usize {
    let qdir = dir
        .join("kubetrail.db-queues")
        .join(format!("q{}", q.get()));
    std::fs::read_dir(qdir)
        .expect("queue dir")
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.len() == 24 && n.ends_with(".seg")
        })
        .count()
}

fn ids(tag: &str, seqs: std::ops::Range<u64>) -> Vec<(u64, String)> {
    seqs.clone()
        .zip(0..)
        .map(|(s, i)| (s, format!("{tag}{i}")))
        .collect()
}

/// Batch `A` (seqs 1..=10), its first half acknowledged; then batch `B` with the rest of `A`
/// acknowledged, with the `nth` call at `site` failing.
fn scenario(site: FaultSite, nth: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("kubetrail.db");
    let faults = Faults::new();
    let mut store = Store::open(&db, &options(&faults)).expect("open");
    let q = store.queue_id("output/out").expect("queue");
    store.commit(&batch(q, "a", None)).expect("commit a");
    store
        .commit(&CommitBatch {
            acks: vec![Ack {
                queue: q,
                up_to_seq: 5,
                state: Some(("output/out".into(), "5".into())),
            }],
            ..CommitBatch::default()
        })
        .expect("ack 5");
    let before = faults.calls(site);
    faults.fail(site, nth, 1);
    let b = batch(q, "b", Some(N));
    let result = store.commit(&b);
    let fired = faults.fired(site) > 0;
    let reached = faults.calls(site) - before >= nth;
    assert_eq!(fired, reached, "{site:?} #{nth}");
    faults.clear();
    let mut store = match result {
        Ok(outcome) => {
            // Only a site outside the transaction (releasing acknowledged segments) may fail
            // without failing the commit: it wastes space until later, nothing else.
            assert!(
                !fired || matches!(site, FaultSite::SegmentRemove | FaultSite::DirSync),
                "{site:?} #{nth}: an injected fault was swallowed"
            );
            assert_eq!(outcome.inserted, vec![true; N as usize]);
            store
        }
        Err(e) => {
            assert!(fired, "{site:?} #{nth}: failed without a fault: {e}");
            assert!(
                !e.outcome_known(),
                "{site:?}: the store must be reopened after {e}"
            );
            let named = match site {
                FaultSite::SegmentWrite => "write segment",
                FaultSite::SegmentSync => "fsync segment",
                FaultSite::DirSync => "fsync queue directory",
                FaultSite::CommitBefore | FaultSite::CommitAfter => "commit failed",
                FaultSite::SegmentRemove => "(never fails a commit)",
            };
            assert!(e.to_string().contains(named), "{site:?}: {e}");
            let again = store.close_for_reopen();
            let store = again.open().expect("reopen");
            // All of the batch, or none of it.
            let durable = checkpoint(&store, "src").as_deref() == Some("b");
            assert_eq!(durable, site == FaultSite::CommitAfter, "{site:?} #{nth}");
            if durable {
                assert_eq!(checkpoint(&store, "output/out").as_deref(), Some("10"));
                assert_eq!(contents(&store, q), ids("b", 11..21));
            } else {
                assert_eq!(checkpoint(&store, "src").as_deref(), Some("a"));
                assert_eq!(checkpoint(&store, "output/out").as_deref(), Some("5"));
                let a: Vec<_> = ids("a", 1..11).split_off(5);
                assert_eq!(contents(&store, q), a);
            }
            store
        }
    };
    // The source replays from its checkpoint, the output acknowledges again: each record once.
    let replay = store.commit(&b).expect("replay");
    let durable_before = replay.inserted.iter().all(|i| !i);
    assert!(
        durable_before || replay.inserted.iter().all(|i| *i),
        "{site:?} #{nth}: part of a batch was durable: {:?}",
        replay.inserted
    );
    assert_eq!(contents(&store, q), ids("b", 11..21));
    // And the queue goes on after the last good commit.
    store.commit(&batch(q, "c", None)).expect("commit c");
    let mut want = ids("b", 11..21);
    want.extend(ids("c", 21..31));
    assert_eq!(contents(&store, q), want);
    assert_eq!(checkpoint(&store, "src").as_deref(), Some("c"));
    // Every segment file on disk is one the store knows (a removal that failed is retried by
    // the next release or the next open).
    drop(store);
    let store = Store::open(&db, &options(&Faults::default())).expect("open again");
    assert_eq!(contents(&store, q), want);
    assert_eq!(segment_files(dir.path(), q), store.segment_count(q));
}

#[test]
fn every_write_fsync_and_commit_of_a_commit_failing_keeps_the_promises() {
    for site in FaultSite::ALL {
        for nth in 1..=3 {
            scenario(site, nth);
        }
    }
}

#[test]
fn a_failing_segment_removal_only_delays_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("kubetrail.db");
    let faults = Faults::new();
    let mut store = Store::open(&db, &options(&faults)).expect("open");
    let q = store.queue_id("output/out").expect("queue");
    for tag in ["a", "b", "c"] {
        store.commit(&batch(q, tag, None)).expect("commit");
    }
    assert_eq!(store.segment_count(q), 3);
    faults.fail(FaultSite::SegmentRemove, 1, u64::MAX);
    store
        .commit(&CommitBatch {
            acks: vec![Ack {
                queue: q,
                up_to_seq: 2 * N,
                state: None,
            }],
            ..CommitBatch::default()
        })
        .expect("the acknowledgement commits");
    assert!(faults.fired(FaultSite::SegmentRemove) > 0);
    assert_eq!(contents(&store, q), ids("c", 21..31));
    assert_eq!(segment_files(dir.path(), q), 3, "nothing could be removed");
    faults.clear();
    // The next release (the tail moving into another segment) removes them.
    store.commit(&batch(q, "d", None)).expect("commit d");
    store
        .commit(&CommitBatch {
            acks: vec![Ack {
                queue: q,
                up_to_seq: 3 * N + 1,
                state: None,
            }],
            ..CommitBatch::default()
        })
        .expect("ack");
    assert_eq!(segment_files(dir.path(), q), 1);
    assert_eq!(segment_files(dir.path(), q), store.segment_count(q));
}

mod model {
    //! Property test: random commits (records with dedup keys that repeat, checkpoints,
    //! acknowledgements), some with a fault at a random site, against a model in which a
    //! failed commit happened entirely (a commit reported failed after it landed) or not at
    //! all; after each failure the store is reopened, and after every step the queue and the
    //! checkpoint match the model.

    use std::collections::{BTreeMap, HashSet};

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    struct Step {
        keys: Vec<u8>,
        ack: Option<u8>,
        fault: Option<(usize, u64)>,
    }

    fn step() -> impl Strategy<Value = Step> {
        (
            proptest::collection::vec(0u8..24, 0..6),
            proptest::option::of(0u8..4),
            proptest::option::weighted(0.5, (0..FaultSite::ALL.len(), 1u64..4)),
        )
            .prop_map(|(keys, ack, fault)| Step { keys, ack, fault })
    }

    #[derive(Debug, Default)]
    struct Model {
        seen: HashSet<String>,
        items: BTreeMap<u64, String>,
        next_seq: u64,
        checkpoint: Option<String>,
    }

    impl Model {
        fn apply(&mut self, batch: &CommitBatch) -> Vec<bool> {
            let inserted: Vec<bool> = batch
                .entries
                .iter()
                .map(|e| {
                    let fresh = self.seen.insert(e.id.clone());
                    if fresh {
                        self.items.insert(self.next_seq, e.id.clone());
                        self.next_seq += 1;
                    }
                    fresh
                })
                .collect();
            for a in &batch.acks {
                self.items.retain(|s, _| *s > a.up_to_seq);
            }
            if let Some((_, v)) = batch.checkpoints.last() {
                self.checkpoint = Some(v.clone());
            }
            inserted
        }
    }

    fn run(steps: &[Step]) -> Result<(), TestCaseError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("kubetrail.db");
        let faults = Faults::new();
        let mut store = Store::open(&db, &options(&faults)).expect("open");
        let q = store.queue_id("output/out").expect("queue");
        let mut model = Model {
            next_seq: 1,
            ..Model::default()
        };
        for (n, s) in steps.iter().enumerate() {
            // Acknowledged up to somewhere between the first record queued and the head.
            let up_to = s.ack.map(|k| {
                let first = model.items.keys().next().copied().unwrap_or(model.next_seq);
                (first + u64::from(k)).min(model.next_seq) - 1
            });
            let batch = CommitBatch {
                entries: s
                    .keys
                    .iter()
                    .map(|k| Entry {
                        dedup: Some(Dedup {
                            scope: "src".into(),
                            key: format!("k{k}"),
                            value: "1".into(),
                            expires_at_unix_ms: i64::MAX,
                        }),
                        queues: [q].into(),
                        id: format!("k{k}"),
                        data: noise(u64::from(*k), 200).into(),
                    })
                    .collect(),
                checkpoints: vec![("src".into(), n.to_string())],
                acks: up_to
                    .map(|up_to_seq| Ack {
                        queue: q,
                        up_to_seq,
                        state: None,
                    })
                    .into_iter()
                    .collect(),
                ..CommitBatch::default()
            };
            let site = s.fault.map(|(i, nth)| {
                faults.fail(FaultSite::ALL[i], nth, 1);
                FaultSite::ALL[i]
            });
            let before: Vec<u64> = FaultSite::ALL.iter().map(|s| faults.fired(*s)).collect();
            let result = store.commit(&batch);
            faults.clear();
            let fired = FaultSite::ALL
                .iter()
                .zip(&before)
                .any(|(s, b)| faults.fired(*s) > *b);
            match result {
                Ok(outcome) => {
                    let want = model.apply(&batch);
                    prop_assert_eq!(outcome.inserted, want);
                }
                Err(e) => {
                    prop_assert!(fired, "failed without a fault: {}", e);
                    prop_assert!(!e.outcome_known());
                    if site == Some(FaultSite::CommitAfter) {
                        model.apply(&batch);
                    }
                    store = store.close_for_reopen().open().expect("reopen");
                }
            }
            let got: Vec<(u64, String)> = contents(&store, q);
            let want: Vec<(u64, String)> =
                model.items.iter().map(|(s, i)| (*s, i.clone())).collect();
            prop_assert_eq!(got, want);
            prop_assert_eq!(checkpoint(&store, "src"), model.checkpoint.clone());
            prop_assert_eq!(store.next_seq(q), Some(model.next_seq));
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn faults_at_random_sites_keep_the_queue_equal_to_the_model(
            steps in proptest::collection::vec(step(), 1..10)
        ) {
            run(&steps)?;
        }
    }
}
