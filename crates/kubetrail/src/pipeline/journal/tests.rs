//! The journal's tests: submissions, backpressure, acknowledgements, disk faults (the state
//! crate's fault plans) and the housekeeping of removed outputs' queues.

use super::*;
use kubetrail_state::{StoreOptions, SyncMode};

const RETENTION: Duration = Duration::from_secs(7 * 86_400);

/// A queue slot named `name`: 1 MiB, backpressure when full.
fn slot(name: &str) -> QueueSlot {
    QueueSlot {
        name: name.into(),
        notify: Arc::new(Notify::new()),
        limit_bytes: 1 << 20,
        depth_records: Gauge::default(),
        depth_bytes: Gauge::default(),
        on_full: OnFull::Backpressure,
        dropped: Counter::default(),
        gaps: Counter::default(),
    }
}

/// A journal over a new store with one queue (limit 1000 bytes): (its directory, the
/// handle, the queue, the queue's drop counter, a reader).
pub(crate) fn setup(
    on_full: OnFull,
) -> (
    tempfile::TempDir,
    JournalHandle,
    QueueId,
    Counter,
    kubetrail_state::Reader,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(
        &dir.path().join("j.db"),
        &StoreOptions {
            sync: SyncMode::Normal,
            ..Default::default()
        },
    )
    .unwrap();
    let q = store.queue_id("output/out").unwrap();
    let reader = store.reader().unwrap();
    let metrics = Metrics::new();
    let dropped = metrics.counter("dropped", &[]);
    let slot = QueueSlot {
        name: "out".into(),
        notify: Arc::new(Notify::new()),
        limit_bytes: 1000,
        depth_records: Gauge::default(),
        depth_bytes: Gauge::default(),
        on_full,
        dropped: dropped.clone(),
        gaps: Counter::default(),
    };
    let (handle, _thread) = spawn(
        store,
        [(q, slot)].into(),
        &metrics,
        Arc::default(),
        RETENTION,
    )
    .unwrap();
    (dir, handle, q, dropped, reader)
}

/// A record of 600 bytes that do not compress, so that its block is as large as it is.
fn entry(q: QueueId, id: &str) -> Entry {
    let mut rng = fastrand::Rng::with_seed(id.len() as u64 + u64::from(id.as_bytes()[0]));
    Entry {
        dedup: None,
        queues: [q].into(),
        id: id.into(),
        data: std::iter::repeat_with(|| rng.u8(..))
            .take(600)
            .collect::<Vec<u8>>()
            .into(),
    }
}

/// A journal over 100-byte segments with one committed record, whose next commit fails
/// after writing: a new segment is due and a plain file stands where the queue's
/// directory was (the directory is kept at `.aside`). The failed submission's error is
/// checked here.
struct Broken {
    dir: tempfile::TempDir,
    j: JournalHandle,
    thread: std::thread::JoinHandle<()>,
    q: QueueId,
    reader: kubetrail_state::Reader,
    metrics: Arc<Metrics>,
    qdir: std::path::PathBuf,
}

async fn broken() -> Broken {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("j.db");
    let opts = StoreOptions {
        sync: SyncMode::Normal,
        segment_bytes: 100,
        ..Default::default()
    };
    let mut store = Store::open(&db, &opts).unwrap();
    let q = store.queue_id("output/out").unwrap();
    let reader = store.reader().unwrap();
    let metrics = Metrics::new();
    let slot = slot("out");
    let (j, thread) = spawn(
        store,
        [(q, slot)].into(),
        &metrics,
        Arc::default(),
        RETENTION,
    )
    .unwrap();
    j.submit(vec![entry(q, "a")], vec![], None).await.unwrap();
    let qdir = dir.path().join("j.db-queues").join(format!("q{}", q.get()));
    std::fs::rename(&qdir, dir.path().join("aside")).unwrap();
    std::fs::write(&qdir, b"in the way").unwrap();
    let err = j
        .submit(vec![entry(q, "b")], vec![("s".into(), "1".into())], None)
        .await
        .unwrap_err();
    assert!(matches!(err, PipelineError::Storage(_)), "{err:?}");
    Broken {
        dir,
        j,
        thread,
        q,
        reader,
        metrics,
        qdir,
    }
}

/// A commit that fails after writing makes the journal reopen the store, retrying until it
/// can; the failed submission is refused, the next one is committed after the last good
/// one.
#[tokio::test]
async fn a_failed_commit_reopens_the_store_and_later_commits_follow_the_last_good_one() {
    let mut b = broken().await;
    // The journal now retries opening the store; give it the directory back.
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::remove_file(&b.qdir).unwrap();
    std::fs::rename(b.dir.path().join("aside"), &b.qdir).unwrap();
    b.j.submit(vec![entry(b.q, "c")], vec![], None)
        .await
        .unwrap();
    let reopens = b.metrics.counter("kubetrail_journal_reopens_total", &[]);
    assert_eq!(reopens.get(), 1);
    assert_eq!(b.j.checkpoint("s".into()).await.unwrap(), None);
    let items: Vec<(u64, String)> = b
        .reader
        .read_queue(b.q, 0, 10, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|i| (i.seq, i.id))
        .collect();
    assert_eq!(items, vec![(1, "a".to_string()), (2, "c".to_string())]);
}

/// A store that cannot be reopened does not hold shutdown: once every handle is gone, the
/// journal thread ends.
#[tokio::test]
async fn a_journal_that_cannot_reopen_ends_when_its_handles_are_gone() {
    let b = broken().await;
    drop(b.j);
    let joined = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::task::spawn_blocking(move || b.thread.join()),
    )
    .await;
    assert!(matches!(joined, Ok(Ok(Ok(())))), "the journal thread ended");
    assert_eq!(
        b.metrics
            .counter("kubetrail_journal_reopens_total", &[])
            .get(),
        0
    );
}

/// A write, fsync or commit failing under a submission: the submission is refused with
/// the error (the source keeps its checkpoint and submits again), the journal reopens the
/// store when the outcome is unknown, and the replay stores each record once, whether the
/// failed commit landed or not.
#[tokio::test]
async fn a_submission_failing_at_any_write_or_fsync_is_replayed_exactly_once() {
    use kubetrail_state::{Dedup, FaultSite, Faults};
    let keyed = |q, id: &str| Entry {
        dedup: Some(Dedup {
            scope: "src".into(),
            key: id.into(),
            value: "1".into(),
            expires_at_unix_ms: i64::MAX,
        }),
        ..entry(q, id)
    };
    for site in FaultSite::ALL {
        let dir = tempfile::tempdir().unwrap();
        let faults = Faults::new();
        let mut store = Store::open(
            &dir.path().join("j.db"),
            &StoreOptions {
                // Every site is reached: fsyncs, and a new segment per commit.
                sync: SyncMode::Full,
                segment_bytes: 1,
                reserve_bytes: 0,
                faults: faults.clone(),
                ..Default::default()
            },
        )
        .unwrap();
        let q = store.queue_id("output/out").unwrap();
        let mut reader = store.reader().unwrap();
        let metrics = Metrics::new();
        let slot = slot("out");
        let (j, _thread) = spawn(
            store,
            [(q, slot)].into(),
            &metrics,
            Arc::default(),
            RETENTION,
        )
        .unwrap();
        j.submit(vec![keyed(q, "a")], vec![("s".into(), "a".into())], None)
            .await
            .unwrap();
        faults.fail(site, 1, 1);
        let b = || {
            (
                vec![keyed(q, "b1"), keyed(q, "b2")],
                vec![("s".into(), "b".into())],
            )
        };
        let (e, c) = b();
        let first = j.submit(e, c, None).await;
        match &first {
            Ok(o) => {
                // Only removing released segments fails outside the commit (and no
                // segment is released here): the fault was not reached.
                assert_eq!(faults.fired(site), 0, "{site:?}");
                assert_eq!(o.accepted, 2);
            }
            Err(err) => {
                assert!(
                    matches!(err, PipelineError::Storage(_)),
                    "{site:?}: {err:?}"
                );
            }
        }
        // The source submits again from its checkpoint.
        let (e, c) = b();
        let replay = j.submit(e, c, None).await.unwrap();
        // Committed after the store was reopened (the failure was answered before).
        assert_eq!(
            metrics
                .counter("kubetrail_journal_reopens_total", &[])
                .get(),
            u64::from(first.is_err()),
            "{site:?}: the store is reopened after a failed commit"
        );
        let landed = first.is_ok() || site == FaultSite::CommitAfter;
        assert_eq!(
            (replay.accepted, replay.duplicates),
            if landed { (0, 2) } else { (2, 0) },
            "{site:?}"
        );
        j.submit(vec![keyed(q, "c")], vec![], None).await.unwrap();
        let items: Vec<(u64, String)> = reader
            .read_queue(q, 0, 10, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|i| (i.seq, i.id))
            .collect();
        assert_eq!(
            items,
            [(1, "a"), (2, "b1"), (3, "b2"), (4, "c")].map(|(s, i)| (s, i.to_string())),
            "{site:?}"
        );
        assert_eq!(
            j.checkpoint("s".into()).await.unwrap().map(|c| c.value),
            Some("b".into())
        );
    }
}

/// The queue of an output removed from the configuration is marked when first found,
/// kept (across restarts) for the retention, then deleted with its records and its
/// output's state; an output configured again before that keeps its queue.
#[test]
fn queues_of_removed_outputs_are_deleted_after_their_retention() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("j.db");
    let opts = StoreOptions {
        sync: SyncMode::Normal,
        reserve_bytes: 0,
        ..Default::default()
    };
    let mut store = Store::open(&db, &opts).unwrap();
    let kept = store.queue_id("output/kept").unwrap();
    let gone = store.queue_id("output/gone").unwrap();
    store
        .commit(&CommitBatch {
            entries: vec![entry(gone, "a"), entry(gone, "b"), entry(kept, "c")],
            acks: vec![Ack {
                queue: gone,
                up_to_seq: 0,
                state: Some(("output/gone".into(), "state".into())),
            }],
            ..CommitBatch::default()
        })
        .unwrap();
    let gone_dir = dir
        .path()
        .join("j.db-queues")
        .join(format!("q{}", gone.get()));
    assert!(gone_dir.is_dir());
    let configured: HashMap<QueueId, QueueSlot> = [(kept, slot("kept"))].into();
    let hour = Duration::from_secs(3600);
    let t0 = 1_700_000_000_000i64;
    let marker = |store: &Store| {
        store
            .checkpoint("orphaned/output/gone")
            .unwrap()
            .map(|c| c.value)
    };
    let names = |store: &Store| {
        store
            .queues()
            .into_iter()
            .map(|(n, _)| n)
            .collect::<Vec<_>>()
    };

    retire_orphan_queues(&mut store, &configured, hour, t0).unwrap();
    assert_eq!(marker(&store), Some(t0.to_string()));
    retire_orphan_queues(&mut store, &configured, hour, t0 + 3_599_999).unwrap();
    assert_eq!(names(&store), ["output/kept", "output/gone"]);
    assert_eq!(store.queue_depth(gone).records, 2);
    // The mark survives a restart: the retention counts from the first sighting.
    drop(store);
    let mut store = Store::open(&db, &opts).unwrap();
    assert_eq!(marker(&store), Some(t0.to_string()));
    retire_orphan_queues(&mut store, &configured, hour, t0 + 3_600_000).unwrap();
    assert_eq!(names(&store), ["output/kept"]);
    assert!(!gone_dir.exists(), "its segments are deleted");
    assert_eq!(marker(&store), None);
    assert_eq!(store.checkpoint("output/gone").unwrap(), None);
    assert_eq!(
        store.queue_depth(kept).records,
        1,
        "other queues are untouched"
    );

    // Configured again before the retention: unmarked, kept.
    let back = store.queue_id("output/back").unwrap();
    retire_orphan_queues(&mut store, &configured, hour, t0).unwrap();
    assert!(store.checkpoint("orphaned/output/back").unwrap().is_some());
    let both: HashMap<QueueId, QueueSlot> = [(kept, slot("kept")), (back, slot("back"))].into();
    retire_orphan_queues(&mut store, &both, hour, t0 + 1000).unwrap();
    assert_eq!(store.checkpoint("orphaned/output/back").unwrap(), None);
    retire_orphan_queues(&mut store, &both, hour, t0 + 10 * 3_600_000).unwrap();
    assert_eq!(names(&store), ["output/kept", "output/back"]);

    // A queue directory without its queue (a crash right after the delete) goes at open.
    let stray = dir.path().join("j.db-queues").join("q77");
    std::fs::create_dir_all(&stray).unwrap();
    std::fs::write(stray.join("00000000000000000000.seg"), b"x").unwrap();
    drop(store);
    let store = Store::open(&db, &opts).unwrap();
    assert!(!stray.exists());
    assert_eq!(names(&store), ["output/kept", "output/back"]);
}

/// The journal retires the queues of removed outputs when it starts (and every minute):
/// with a retention of zero, at once.
#[tokio::test]
async fn the_journal_deletes_the_queues_of_removed_outputs_when_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        sync: SyncMode::Normal,
        reserve_bytes: 0,
        ..Default::default()
    };
    let db = dir.path().join("j.db");
    let mut store = Store::open(&db, &opts).unwrap();
    let gone = store.queue_id("output/gone").unwrap();
    store
        .commit(&CommitBatch {
            entries: vec![entry(gone, "a")],
            ..CommitBatch::default()
        })
        .unwrap();
    let q = store.queue_id("output/out").unwrap();
    let slot = slot("out");
    let metrics = Metrics::new();
    let (j, thread) = spawn(
        store,
        [(q, slot)].into(),
        &metrics,
        Arc::default(),
        Duration::ZERO,
    )
    .unwrap();
    // Answered after the housekeeping that runs first.
    assert_eq!(
        j.checkpoint("orphaned/output/gone".into()).await.unwrap(),
        None
    );
    drop(j);
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .unwrap()
        .unwrap();
    let store = Store::open(&db, &opts).unwrap();
    let names: Vec<String> = store.queues().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["output/out"]);
    assert!(
        !dir.path()
            .join("j.db-queues")
            .join(format!("q{}", gone.get()))
            .exists()
    );
}

#[tokio::test]
async fn checkpoints_are_listed_by_prefix_and_forgotten_through_the_journal() {
    let (_d, j, _q, _dropped, mut r) = setup(OnFull::Backpressure);
    let cps = ["src/fp:1", "src/fp:2", "src/other", "srcx/fp:1"]
        .map(|s| (s.to_string(), "v".to_string()))
        .to_vec();
    j.submit(vec![], cps, None).await.unwrap();
    let names = |l: Vec<(String, Checkpoint)>| l.into_iter().map(|(s, _)| s).collect::<Vec<_>>();
    assert_eq!(
        names(j.checkpoints("src/fp:".into()).await.unwrap()),
        ["src/fp:1", "src/fp:2"]
    );
    j.forget(vec!["src/fp:1".into()]).await.unwrap();
    // Nothing to forget is answered at once, not left waiting for a round.
    j.forget(vec![]).await.unwrap();
    assert_eq!(
        names(j.checkpoints("src/".into()).await.unwrap()),
        ["src/fp:2", "src/other"]
    );
    // Committed: a reader (another connection) sees it too.
    assert_eq!(r.checkpoint("src/fp:1").unwrap(), None);
    assert!(r.checkpoint("srcx/fp:1").unwrap().is_some());
}

#[tokio::test]
async fn backpressure_refuses_and_keeps_nothing_of_the_refused_submission() {
    let (_d, j, q, dropped, mut r) = setup(OnFull::Backpressure);
    j.submit(vec![entry(q, "a")], vec![], None).await.unwrap();
    let err = j
        .submit(vec![entry(q, "b")], vec![("s".into(), "1".into())], None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, PipelineError::QueueFull { ref output } if output == "out"),
        "{err:?}"
    );
    assert_eq!(j.checkpoint("s".into()).await.unwrap(), None);
    let ids: Vec<String> = r
        .read_queue(q, 0, 10, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(ids, vec!["a"]);
    assert_eq!(dropped.get(), 0);
}

#[tokio::test]
async fn each_submission_gets_its_own_entries_back() {
    let (_d, j, q, _, _r) = setup(OnFull::Backpressure);
    let ids = |o: &JournalOutcome| o._spent.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    // Small records: the queue of `setup` holds 1,000 bytes.
    let entry = |q, id: &str| Entry {
        data: b"x".to_vec().into(),
        ..entry(q, id)
    };
    // Submitted together, so that they usually share a round.
    let (a, b, c) = tokio::join!(
        j.submit(vec![entry(q, "a1"), entry(q, "a2")], vec![], None),
        j.submit(vec![entry(q, "b1")], vec![], None),
        j.submit(
            vec![entry(q, "c1"), entry(q, "c2"), entry(q, "c3")],
            vec![],
            None
        ),
    );
    assert_eq!(ids(&a.unwrap()), ["a1", "a2"]);
    assert_eq!(ids(&b.unwrap()), ["b1"]);
    assert_eq!(ids(&c.unwrap()), ["c1", "c2", "c3"]);
}

#[tokio::test]
async fn drop_newest_keeps_the_queue_and_reports_a_gap() {
    let (_d, j, q, dropped, mut r) = setup(OnFull::DropNewest);
    j.submit(vec![entry(q, "a")], vec![], None).await.unwrap();
    j.submit(vec![entry(q, "b")], vec![("s".into(), "1".into())], None)
        .await
        .unwrap();
    assert_eq!(
        j.checkpoint("s".into()).await.unwrap().map(|c| c.value),
        Some("1".into())
    );
    let items = r.read_queue(q, 0, 10, usize::MAX).unwrap();
    assert_eq!(items[0].id, "a");
    assert_eq!(items.len(), 2);
    let gap: serde_json::Value = serde_json::from_slice(&items[1].data).unwrap();
    assert_eq!(gap["kind"], "gap");
    assert_eq!(gap["policy"], "drop_newest");
    assert_eq!(gap["records_dropped"], 1);
    assert_eq!(dropped.get(), 1);
}

#[tokio::test]
async fn drop_oldest_makes_room_and_reports_a_gap() {
    let (_d, j, q, dropped, mut r) = setup(OnFull::DropOldest);
    j.submit(vec![entry(q, "a")], vec![], None).await.unwrap();
    j.submit(vec![entry(q, "b")], vec![], None).await.unwrap();
    let items = r.read_queue(q, 0, 10, usize::MAX).unwrap();
    let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids[0].starts_with("gap:queue:out:"), "{ids:?}");
    assert_eq!(ids[1], "b");
    assert_eq!(dropped.get(), 1);
}

/// A housekeeping commit whose outcome is unknown reopens the store like any other, and the
/// reopen counts in `kubetrail_journal_reopens_total`.
#[tokio::test]
async fn a_reopen_after_housekeeping_counts_as_a_reopen() {
    use kubetrail_state::{FaultSite, Faults};
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new();
    let opts = StoreOptions {
        sync: SyncMode::Normal,
        reserve_bytes: 0,
        faults: faults.clone(),
        ..Default::default()
    };
    let db = dir.path().join("j.db");
    let mut store = Store::open(&db, &opts).unwrap();
    // A queue no output is configured for: the housekeeping at start marks it (a commit).
    store.queue_id("output/gone").unwrap();
    let q = store.queue_id("output/out").unwrap();
    faults.fail(FaultSite::CommitAfter, 1, 1);
    let metrics = Metrics::new();
    let (j, thread) = spawn(
        store,
        [(q, slot("out"))].into(),
        &metrics,
        Arc::default(),
        RETENTION,
    )
    .unwrap();
    // Answered after the housekeeping that runs first.
    j.submit(vec![entry(q, "a")], vec![], None).await.unwrap();
    assert_eq!(faults.fired(FaultSite::CommitAfter), 1);
    assert_eq!(
        metrics
            .counter("kubetrail_journal_reopens_total", &[])
            .get(),
        1
    );
    drop(j);
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .unwrap()
        .unwrap();
}
