//! The journal: one thread that owns the state database's write connection and commits, in
//! one transaction per round, everything that arrived meanwhile: records with their dedup keys
//! and the checkpoints they advance (from sources), checkpoints sources forget, and queue
//! acknowledgements (from outputs).
//!
//! Group commit is what makes "durable before acknowledged" cheap: one fsync covers every
//! submission waiting at that moment. Submissions that would push a queue past its size limit
//! are refused (`QueueFull`) before the transaction, so a full queue slows its sources instead
//! of growing without bound.
//!
//! A full disk: when a commit fails for lack of space, the journal gives back the state's disk
//! space reserve and refuses new records (`DiskFull`: inputs pause, the webhook answers 503)
//! while it still commits acknowledgements, whose delivered segments are then deleted (the
//! store is `tight`: nothing drained is kept). Once twice the reserve is free again, the
//! reserve is made again and records are taken again.
//!
//! Housekeeping: the queues of outputs removed from the configuration (queues in the database
//! with no slot here) are marked with the time they were first found so (a checkpoint row
//! `orphaned/<queue>`), at start and every minute, and deleted with what they hold once marked
//! for `queue_retention`; an output configured again before that keeps its queue.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kubetrail_state::{Ack, Checkpoint, CommitBatch, Entry, QueueId, Store, Trim};
use tokio::sync::{Notify, mpsc, oneshot};

use super::PipelineError;
use crate::telemetry::{Counter, Gauge, Metrics};

/// How many commands one round commits at most.
const MAX_ROUND: usize = 512;
/// How often expired dedup keys are purged.
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// The committed part of a submission.
#[derive(Debug, Default)]
pub(crate) struct JournalOutcome {
    pub accepted: usize,
    pub duplicates: usize,
    /// The submission's entries, handed back once committed so that they are freed on the
    /// submitter's thread: freeing a round's entries (ids, keys, buffer references) held the
    /// journal, which every submission waits on, between two commits.
    pub _spent: Vec<Entry>,
}

/// A refused submission: the error, and the entries back when they may be tried again.
type SubmitReply =
    Result<JournalOutcome, (PipelineError, Option<(Vec<Entry>, Vec<(String, String)>)>)>;

enum Cmd {
    Submit {
        entries: Vec<Entry>,
        checkpoints: Vec<(String, String)>,
        reply: oneshot::Sender<SubmitReply>,
    },
    Ack {
        ack: Ack,
        reply: oneshot::Sender<Result<(), PipelineError>>,
    },
    Checkpoint {
        stream: String,
        reply: oneshot::Sender<Result<Option<Checkpoint>, PipelineError>>,
    },
    /// Lists the checkpoints whose stream names start with a prefix.
    Checkpoints {
        prefix: String,
        reply: oneshot::Sender<Result<Vec<(String, Checkpoint)>, PipelineError>>,
    },
    /// Deletes checkpoint streams.
    Forget {
        streams: Vec<String>,
        reply: oneshot::Sender<Result<(), PipelineError>>,
    },
}

/// A queue as the journal sees it: where to signal new records and how big it may grow.
pub(crate) struct QueueSlot {
    pub name: String,
    pub notify: Arc<Notify>,
    pub limit_bytes: u64,
    pub depth_records: Gauge,
    pub depth_bytes: Gauge,
    /// What to do when a submission would push the queue past `limit_bytes`.
    pub on_full: OnFull,
    /// Records dropped by the overflow policy.
    pub dropped: Counter,
    /// Gap records written for drops.
    pub gaps: Counter,
}

/// A queue's overflow policy (`storage.on_full`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    /// Refuse the submission: inputs wait (or answer 503). Nothing is lost.
    Backpressure,
    /// Make room by dropping the queue's oldest records.
    DropOldest,
    /// Drop the new records for this output (other outputs still get them).
    DropNewest,
}

/// The handle sources and outputs use to reach the journal thread.
#[derive(Clone)]
pub(crate) struct JournalHandle {
    tx: mpsc::Sender<Cmd>,
}

impl JournalHandle {
    /// Commits entries and checkpoints. When a queue or the disk is full: with `wait` (the
    /// shutdown to heed and the source's name, for the log), retries with capped backoff until
    /// there is room (backpressure) or shutdown; without, returns `QueueFull` or `DiskFull` at
    /// once.
    pub async fn submit(
        &self,
        mut entries: Vec<Entry>,
        mut checkpoints: Vec<(String, String)>,
        wait: Option<(&crate::shutdown::Shutdown, &str)>,
    ) -> Result<JournalOutcome, PipelineError> {
        let mut attempt = 0u32;
        loop {
            let (reply, rx) = oneshot::channel();
            self.tx
                .send(Cmd::Submit {
                    entries,
                    checkpoints,
                    reply,
                })
                .await
                .map_err(|_| PipelineError::ShuttingDown)?;
            match rx.await.map_err(|_| PipelineError::ShuttingDown)? {
                Ok(outcome) => return Ok(outcome),
                Err((
                    err @ (PipelineError::QueueFull { .. } | PipelineError::DiskFull),
                    Some((e, c)),
                )) if wait.is_some() => {
                    let (stop, source) = wait.ok_or(PipelineError::ShuttingDown)?;
                    let delay = crate::topology::backoff(
                        Duration::from_millis(50),
                        Duration::from_secs(2),
                        attempt,
                    );
                    attempt = attempt.saturating_add(1);
                    if attempt == 1 {
                        tracing::warn!(component = %source, error = %err, "pausing this input until there is room");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.fired() => return Err(PipelineError::ShuttingDown),
                    }
                    entries = e;
                    checkpoints = c;
                }
                Err((err, _)) => return Err(err),
            }
        }
    }

    pub async fn ack(&self, ack: Ack) -> Result<(), PipelineError> {
        self.ack_begin(ack).await?.wait().await
    }

    /// Hands an acknowledgement to the journal and returns at once with what resolves when
    /// it is committed, so that an output can deliver its next batch meanwhile. Acks are
    /// committed in the order they are handed over.
    pub async fn ack_begin(&self, ack: Ack) -> Result<PendingAck, PipelineError> {
        let rx = self.send(|reply| Cmd::Ack { ack, reply }).await?;
        Ok(PendingAck { rx })
    }

    pub async fn checkpoint(&self, stream: String) -> Result<Option<Checkpoint>, PipelineError> {
        self.ask(|reply| Cmd::Checkpoint { stream, reply }).await
    }

    /// The committed checkpoints whose stream names start with `prefix`, by name.
    pub async fn checkpoints(
        &self,
        prefix: String,
    ) -> Result<Vec<(String, Checkpoint)>, PipelineError> {
        self.ask(|reply| Cmd::Checkpoints { prefix, reply }).await
    }

    /// Deletes checkpoint streams; returns once that is committed.
    pub async fn forget(&self, streams: Vec<String>) -> Result<(), PipelineError> {
        if streams.is_empty() {
            // Nothing to commit: the journal would have no round to answer it in.
            return Ok(());
        }
        self.ask(|reply| Cmd::Forget { streams, reply }).await
    }

    /// Hands the journal a command made with `cmd` around a reply channel; returns the
    /// channel's receiving end.
    async fn send<T>(
        &self,
        cmd: impl FnOnce(oneshot::Sender<Result<T, PipelineError>>) -> Cmd,
    ) -> Result<oneshot::Receiver<Result<T, PipelineError>>, PipelineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(cmd(reply))
            .await
            .map_err(|_| PipelineError::ShuttingDown)?;
        Ok(rx)
    }

    /// Like [`JournalHandle::send`], then waits for the answer.
    async fn ask<T>(
        &self,
        cmd: impl FnOnce(oneshot::Sender<Result<T, PipelineError>>) -> Cmd,
    ) -> Result<T, PipelineError> {
        self.send(cmd)
            .await?
            .await
            .map_err(|_| PipelineError::ShuttingDown)?
    }
}

/// An acknowledgement handed to the journal, not yet known to be committed.
pub(crate) struct PendingAck {
    rx: oneshot::Receiver<Result<(), PipelineError>>,
}

impl PendingAck {
    /// Waits until the acknowledgement is committed (or failed).
    pub async fn wait(self) -> Result<(), PipelineError> {
        self.rx.await.map_err(|_| PipelineError::ShuttingDown)?
    }
}

/// Starts the journal thread. It stops when every handle is dropped. `disk_full` is set while
/// the state's file system is full (for `/readyz`). Queues of the store that are not in
/// `queues` belong to outputs no longer configured: deleted after `queue_retention`.
pub(crate) fn spawn(
    store: Store,
    queues: HashMap<QueueId, QueueSlot>,
    metrics: &Metrics,
    disk_full: Arc<AtomicBool>,
    queue_retention: Duration,
) -> std::io::Result<(JournalHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(1024);
    let counters = Counters {
        commits: metrics.counter("kubetrail_journal_commits_total", &[]),
        failures: metrics.counter("kubetrail_journal_commit_failures_total", &[]),
        reopens: metrics.counter("kubetrail_journal_reopens_total", &[]),
        disk_full: metrics.counter("kubetrail_journal_disk_full_total", &[]),
    };
    let handle = std::thread::Builder::new()
        .name("kubetrail-journal".into())
        .spawn(move || run(store, queues, rx, counters, disk_full, queue_retention))?;
    Ok((JournalHandle { tx }, handle))
}

struct Counters {
    commits: Counter,
    failures: Counter,
    reopens: Counter,
    /// Times the disk filled up.
    disk_full: Counter,
}

/// Whether the disk is full now: true until twice the reserve is free again and the reserve
/// could be made again.
fn still_full(store: &mut Store, full: &AtomicBool) -> bool {
    if !full.load(Ordering::Relaxed) {
        return false;
    }
    if store.restore_reserve() {
        store.set_tight(false);
        full.store(false, Ordering::Relaxed);
        tracing::warn!("the state directory has room again; inputs resume");
        return false;
    }
    true
}

fn run(
    mut store: Store,
    queues: HashMap<QueueId, QueueSlot>,
    mut rx: mpsc::Receiver<Cmd>,
    counters: Counters,
    disk_full: Arc<AtomicBool>,
    queue_retention: Duration,
) {
    let Counters {
        commits,
        failures,
        reopens,
        disk_full: disk_full_count,
    } = counters;
    let mut last_purge = Instant::now();
    store = match housekeeping(store, &queues, queue_retention, &rx, &disk_full, &reopens) {
        Some(s) => s,
        None => return,
    };
    while let Some(first) = rx.blocking_recv() {
        let mut round = vec![first];
        while round.len() < MAX_ROUND {
            match rx.try_recv() {
                Ok(c) => round.push(c),
                Err(_) => break,
            }
        }

        let mut batch = CommitBatch::default();
        batch.entries.reserve(
            round
                .iter()
                .map(|c| match c {
                    Cmd::Submit { entries, .. } => entries.len(),
                    _ => 0,
                })
                .sum(),
        );
        // Per submit command: the range of its entries in the batch, and its reply.
        let mut submits = Vec::new();
        let mut acks = Vec::new();
        let mut reads = Vec::new();
        let mut lists = Vec::new();
        // Bytes this round adds per queue, to enforce limits across submissions of one round.
        let mut pending: HashMap<QueueId, u64> = HashMap::new();
        let mut touched: Vec<QueueId> = Vec::new();
        let full = still_full(&mut store, &disk_full);
        for cmd in round {
            match cmd {
                Cmd::Submit {
                    entries,
                    checkpoints,
                    reply,
                } if full => {
                    let _ =
                        reply.send(Err((PipelineError::DiskFull, Some((entries, checkpoints)))));
                }
                Cmd::Submit {
                    mut entries,
                    checkpoints,
                    reply,
                } => {
                    match make_room(&store, &queues, &pending, &mut entries) {
                        Room::Refused(full) => {
                            let _ = reply.send(Err((
                                PipelineError::QueueFull { output: full },
                                Some((entries, checkpoints)),
                            )));
                            continue;
                        }
                        Room::Made { trims, gaps } => {
                            batch.trims.extend(trims);
                            for (q, gap) in gaps {
                                *pending.entry(q).or_default() += framed(&gap);
                                batch.entries.push(gap);
                            }
                        }
                    }
                    for e in &entries {
                        for q in e.queues.iter() {
                            *pending.entry(*q).or_default() += framed(e);
                            if !touched.contains(q) {
                                touched.push(*q);
                            }
                        }
                    }
                    let start = batch.entries.len();
                    batch.entries.extend(entries);
                    let cp_start = batch.checkpoints.len();
                    batch.checkpoints.extend(checkpoints);
                    submits.push((
                        start..batch.entries.len(),
                        cp_start..batch.checkpoints.len(),
                        reply,
                    ));
                }
                Cmd::Ack { ack, reply } => {
                    batch.acks.push(ack);
                    acks.push(reply);
                }
                Cmd::Checkpoint { stream, reply } => reads.push((stream, reply)),
                Cmd::Checkpoints { prefix, reply } => lists.push((prefix, reply)),
                Cmd::Forget { streams, reply } => {
                    batch.forget.extend(streams);
                    acks.push(reply);
                }
            }
        }

        if !batch.is_empty() {
            let started = Instant::now();
            match store.commit(&batch) {
                Ok(outcome) => {
                    commits.inc();
                    tracing::debug!(
                        entries = batch.entries.len(),
                        checkpoints = batch.checkpoints.len(),
                        acks = batch.acks.len(),
                        submissions = submits.len(),
                        micros = started.elapsed().as_micros() as u64,
                        "journal commit"
                    );
                    for (trim, (records, _)) in batch.trims.iter().zip(&outcome.trimmed) {
                        if let Some(slot) = queues.get(&trim.queue) {
                            slot.dropped.add(*records);
                            tracing::warn!(output = %slot.name, dropped = records, "queue full: dropped its oldest records (storage.on_full: drop_oldest)");
                        }
                    }
                    // Each submission's entries (with any gap records of the next one, which
                    // precede that one's range) go back with its reply, last first.
                    let mut spent: Vec<Vec<Entry>> = submits
                        .iter()
                        .rev()
                        .map(|(range, _, _)| batch.entries.split_off(range.start))
                        .collect();
                    spent.reverse();
                    for ((range, _, reply), spent) in submits.into_iter().zip(spent) {
                        let inserted = &outcome.inserted[range];
                        let accepted = inserted.iter().filter(|i| **i).count();
                        let _ = reply.send(Ok(JournalOutcome {
                            accepted,
                            duplicates: inserted.len() - accepted,
                            _spent: spent,
                        }));
                    }
                    for reply in acks {
                        let _ = reply.send(Ok(()));
                    }
                    for q in touched {
                        if let Some(slot) = queues.get(&q) {
                            slot.notify.notify_one();
                        }
                    }
                    for (q, slot) in &queues {
                        let d = store.queue_depth(*q);
                        slot.depth_records
                            .set(i64::try_from(d.records).unwrap_or(i64::MAX));
                        slot.depth_bytes
                            .set(i64::try_from(d.bytes).unwrap_or(i64::MAX));
                    }
                }
                Err(e) if e.is_disk_full() => {
                    failures.inc();
                    if !disk_full.swap(true, Ordering::Relaxed) {
                        disk_full_count.inc();
                        tracing::error!(error = %e,
                            "the state directory's file system is full: new records are refused (inputs pause, the webhook answers 503) until deliveries free space");
                    }
                    // The round's submissions are handed back to be tried again (they wait,
                    // or answer 503); its acknowledgements and forgotten checkpoints, which
                    // free space, are committed on their own with the reserve given back.
                    hand_back(&mut batch, submits, &PipelineError::DiskFull);
                    let freeing = CommitBatch {
                        acks: std::mem::take(&mut batch.acks),
                        forget: std::mem::take(&mut batch.forget),
                        ..CommitBatch::default()
                    };
                    let Some(s) = give_back_space(store, !e.outcome_known(), &rx, &reopens) else {
                        return;
                    };
                    store = s;
                    if !freeing.is_empty() {
                        let Some(s) =
                            commit_freeing(store, &freeing, acks, &rx, &reopens, &commits)
                        else {
                            return;
                        };
                        store = s;
                        for (q, slot) in &queues {
                            let d = store.queue_depth(*q);
                            slot.depth_records
                                .set(i64::try_from(d.records).unwrap_or(i64::MAX));
                            slot.depth_bytes
                                .set(i64::try_from(d.bytes).unwrap_or(i64::MAX));
                        }
                    }
                }
                Err(e) => {
                    failures.inc();
                    tracing::error!(error = %e, "state commit failed; nothing of this round was acknowledged");
                    let err = PipelineError::Storage(e.to_string());
                    for (_, _, reply) in submits {
                        let _ = reply.send(Err((err.clone(), None)));
                    }
                    for reply in acks {
                        let _ = reply.send(Err(err.clone()));
                    }
                    if !e.outcome_known() {
                        // The round may be durable after all (a failed WAL write or fsync):
                        // the store's bounds must be read again before the next commit.
                        match reopen(store, &rx, &reopens) {
                            Some(s) => store = s,
                            // Everyone is gone (shutdown) while it could not be reopened.
                            None => return,
                        }
                        // A store opened on a full disk keeps nothing drained either.
                        if disk_full.load(Ordering::Relaxed) {
                            store.set_tight(true);
                        }
                    }
                }
            }
        }
        for (stream, reply) in reads {
            let _ = reply.send(
                store
                    .checkpoint(&stream)
                    .map_err(|e| PipelineError::Storage(e.to_string())),
            );
        }
        for (prefix, reply) in lists {
            let _ = reply.send(
                store
                    .checkpoints_under(&prefix)
                    .map_err(|e| PipelineError::Storage(e.to_string())),
            );
        }
        if last_purge.elapsed() >= PURGE_EVERY {
            last_purge = Instant::now();
            let now_ms = kubetrail_core::Timestamp::now().unix_nanos() / 1_000_000;
            match store.purge_expired(now_ms) {
                Ok(n) if n > 0 => tracing::debug!(purged = n, "expired dedup keys purged"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "purging expired dedup keys failed"),
            }
            store = match housekeeping(store, &queues, queue_retention, &rx, &disk_full, &reopens) {
                Some(s) => s,
                None => return,
            };
        }
    }
}

/// After a commit refused for lack of space: reopens the store if the commit's outcome is
/// unknown, gives back the disk space reserve and makes the store tight (nothing drained kept,
/// the WAL started over after each commit). `None` when shutdown came while it could not be
/// reopened.
fn give_back_space(
    store: Store,
    unknown: bool,
    rx: &mpsc::Receiver<Cmd>,
    reopens: &Counter,
) -> Option<Store> {
    let mut store = if unknown {
        reopen(store, rx, reopens)?
    } else {
        store
    };
    let freed = store.release_reserve();
    if freed > 0 {
        tracing::warn!(
            bytes = freed,
            "disk space reserve given back, for acknowledgements"
        );
    }
    store.set_tight(true);
    Some(store)
}

/// How many times acknowledgements are tried on a full disk before their outputs are told
/// that they failed.
const FREEING_ATTEMPTS: u32 = 6;

/// Commits acknowledgements and forgotten checkpoints on a full disk (with the reserve given
/// back they fit), trying again a few times with capped backoff; answers `replies`. `None`
/// when shutdown came while the store could not be reopened.
fn commit_freeing(
    mut store: Store,
    batch: &CommitBatch,
    replies: Vec<oneshot::Sender<Result<(), PipelineError>>>,
    rx: &mpsc::Receiver<Cmd>,
    reopens: &Counter,
    commits: &Counter,
) -> Option<Store> {
    let mut attempt = 0;
    let result = loop {
        match store.commit(batch) {
            Ok(_) => {
                commits.inc();
                break Ok(());
            }
            Err(e) => {
                let err = if e.is_disk_full() {
                    PipelineError::DiskFull
                } else {
                    PipelineError::Storage(e.to_string())
                };
                tracing::error!(error = %e, attempt, "committing acknowledgements on a full disk failed");
                if !e.outcome_known() {
                    store = give_back_space(store, true, rx, reopens)?;
                }
                attempt += 1;
                if attempt >= FREEING_ATTEMPTS || rx.is_closed() {
                    break Err(err);
                }
                std::thread::sleep(crate::topology::backoff(
                    Duration::from_millis(50),
                    Duration::from_secs(1),
                    attempt,
                ));
            }
        }
    };
    for reply in replies {
        let _ = reply.send(result.clone());
    }
    Some(store)
}

/// A round's submissions handed back with `err` and their own entries and checkpoints, so that
/// they can be submitted again as they were (gap records of drop policies are not handed back:
/// the next try decides again).
type SubmitSlot = (
    std::ops::Range<usize>,
    std::ops::Range<usize>,
    oneshot::Sender<SubmitReply>,
);

fn hand_back(batch: &mut CommitBatch, submits: Vec<SubmitSlot>, err: &PipelineError) {
    let mut back = Vec::with_capacity(submits.len());
    for (entries, checkpoints, reply) in submits.into_iter().rev() {
        let cps = batch.checkpoints.drain(checkpoints).collect();
        let es = batch.entries.drain(entries.clone()).collect();
        back.push((es, cps, reply));
    }
    for (entries, checkpoints, reply) in back.into_iter().rev() {
        let _ = reply.send(Err((err.clone(), Some((entries, checkpoints)))));
    }
}

/// Closes and opens the store again after a commit whose outcome is unknown. Nothing can be
/// committed without it, so it tries until it works (capped backoff with jitter); commands
/// wait in the (bounded) channel meanwhile. `None` when the journal's handles are all gone
/// (shutdown) before it worked, so that shutdown does not wait for a disk that is gone.
/// Every reopen that worked counts in `kubetrail_journal_reopens_total`, whatever failed.
fn reopen(store: Store, rx: &mpsc::Receiver<Cmd>, reopens: &Counter) -> Option<Store> {
    let again = store.close_for_reopen();
    let mut attempt = 0;
    loop {
        match again.open() {
            Ok(store) => {
                tracing::warn!(
                    attempts = attempt + 1,
                    "state database reopened after a failed commit"
                );
                reopens.inc();
                return Some(store);
            }
            Err(e) if rx.is_closed() => {
                tracing::error!(error = %e, "cannot reopen the state database; stopping (shutdown)");
                return None;
            }
            Err(e) => {
                let delay = crate::topology::backoff(
                    Duration::from_millis(50),
                    Duration::from_secs(10),
                    attempt,
                );
                tracing::error!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot reopen the state database");
                // In slices, so that a shutdown meanwhile is not held up by the backoff.
                let until = Instant::now() + delay;
                while Instant::now() < until && !rx.is_closed() {
                    std::thread::sleep(Duration::from_millis(50).min(delay));
                }
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

/// Retires the queues of removed outputs (see [`retire_orphan_queues`]); a failure is logged
/// and tried again at the next round of housekeeping. `None` when the store had to be reopened
/// and shutdown came first.
fn housekeeping(
    mut store: Store,
    queues: &HashMap<QueueId, QueueSlot>,
    retention: Duration,
    rx: &mpsc::Receiver<Cmd>,
    disk_full: &AtomicBool,
    reopens: &Counter,
) -> Option<Store> {
    let now_ms = kubetrail_core::Timestamp::now().unix_nanos() / 1_000_000;
    if let Err(e) = retire_orphan_queues(&mut store, queues, retention, now_ms) {
        tracing::warn!(error = %e, "housekeeping of the queues of removed outputs failed; will retry");
        if !e.outcome_known() {
            store = reopen(store, rx, reopens)?;
            if disk_full.load(Ordering::Relaxed) {
                store.set_tight(true);
            }
        }
    }
    Some(store)
}

/// The checkpoint row marking a queue whose output is no longer configured; its value is when
/// that was first found (Unix milliseconds).
fn orphan_stream(queue: &str) -> String {
    format!("orphaned/{queue}")
}

/// Marks the store's queues that have no slot in `configured` (their output was removed from
/// the configuration) with the time first found so, and deletes those marked for `retention`
/// by `now_ms`, with their records and their output's state; unmarks queues configured again.
fn retire_orphan_queues(
    store: &mut Store,
    configured: &HashMap<QueueId, QueueSlot>,
    retention: Duration,
    now_ms: i64,
) -> Result<(), kubetrail_state::StateError> {
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    for (name, id) in store.queues() {
        let marker = orphan_stream(&name);
        let marked = store.checkpoint(&marker)?;
        if let Some(slot) = configured.get(&id) {
            if marked.is_some() {
                store.commit(&CommitBatch {
                    forget: vec![marker],
                    ..CommitBatch::default()
                })?;
                tracing::info!(output = %slot.name, "output configured again: its queue is kept");
            }
            continue;
        }
        let records = store.queue_depth(id).records;
        let since = match marked {
            Some(c) => c.value.parse::<i64>().unwrap_or(c.updated_at_unix_ms),
            None => {
                store.commit(&CommitBatch {
                    checkpoints: vec![(marker.clone(), now_ms.to_string())],
                    ..CommitBatch::default()
                })?;
                tracing::warn!(queue = %name, records, retention = ?retention,
                    "the queue of an output that is no longer configured is deleted, with its undelivered records, after queue_retention unless the output is configured again");
                now_ms
            }
        };
        if now_ms.saturating_sub(since) >= retention_ms {
            // The output's state row has the queue's name (`output/<name>`).
            if let Some(records) = store.delete_queue(&name, &[&marker, &name])? {
                tracing::warn!(queue = %name, records_deleted = records, retention = ?retention,
                    "deleted the queue of an output removed from the configuration longer than queue_retention ago");
            }
        }
    }
    Ok(())
}

/// The bytes an entry takes in a queue (what queue depths and limits count).
fn framed(e: &Entry) -> u64 {
    kubetrail_state::frame_len(e.id.len(), e.data.len())
}

/// What `make_room` decided for a submission.
enum Room {
    /// Backpressure: the name of the full queue.
    Refused(String),
    /// Accepted, after these trims (drop_oldest) and with these gap records to add.
    Made {
        trims: Vec<Trim>,
        gaps: Vec<(QueueId, Entry)>,
    },
}

/// Applies each queue's overflow policy to a submission that would push it past its limit.
/// `drop_newest` takes the queue out of the entries' destinations; `drop_oldest` asks the
/// commit to trim the queue's oldest records; both add a gap record to that queue, so the
/// destination learns that something is missing.
fn make_room(
    store: &Store,
    queues: &HashMap<QueueId, QueueSlot>,
    pending: &HashMap<QueueId, u64>,
    entries: &mut [Entry],
) -> Room {
    let mut adds: HashMap<QueueId, (u64, u64)> = HashMap::new();
    for e in entries.iter() {
        for q in e.queues.iter() {
            let a = adds.entry(*q).or_default();
            a.0 += 1;
            a.1 += framed(e);
        }
    }
    let mut trims = Vec::new();
    let mut gaps = Vec::new();
    for (q, (records, add)) in adds {
        let Some(slot) = queues.get(&q) else { continue };
        let depth = store.queue_depth(q).bytes + pending.get(&q).copied().unwrap_or(0);
        // An empty queue always takes a submission, however large, so nothing can wedge.
        if depth == 0 || depth + add <= slot.limit_bytes {
            continue;
        }
        match slot.on_full {
            OnFull::Backpressure => return Room::Refused(slot.name.clone()),
            OnFull::DropNewest => {
                for e in entries.iter_mut() {
                    if e.queues.contains(&q) {
                        e.queues = e.queues.iter().copied().filter(|x| *x != q).collect();
                    }
                }
                slot.dropped.add(records);
                slot.gaps.inc();
                tracing::warn!(output = %slot.name, dropped = records, "queue full: dropped new records (storage.on_full: drop_newest)");
                gaps.push((
                    q,
                    drop_gap(q, &slot.name, "drop_newest", Some(records), add),
                ));
            }
            OnFull::DropOldest => {
                let need = (depth + add).saturating_sub(slot.limit_bytes);
                trims.push(Trim {
                    queue: q,
                    free_bytes: need,
                });
                slot.gaps.inc();
                gaps.push((q, drop_gap(q, &slot.name, "drop_oldest", None, need)));
            }
        }
    }
    Room::Made { trims, gaps }
}

/// The gap record a drop writes into the queue it dropped from.
fn drop_gap(queue: QueueId, output: &str, policy: &str, records: Option<u64>, bytes: u64) -> Entry {
    use kubetrail_core::{Record, RecordKind, Timestamp};
    let now = Timestamp::now();
    let id = format!("gap:queue:{output}:{}", now.unix_nanos());
    let name: std::sync::Arc<str> = std::sync::Arc::from(format!("output/{output}"));
    let mut r = Record::new(id.clone(), now, RecordKind::Gap, name.clone(), name);
    r.fields
        .insert("reason".into(), serde_json::json!("queue_full"));
    r.fields.insert("policy".into(), serde_json::json!(policy));
    r.fields.insert("output".into(), serde_json::json!(output));
    match records {
        Some(n) => {
            r.fields
                .insert("records_dropped".into(), serde_json::json!(n));
            r.fields
                .insert("bytes_dropped".into(), serde_json::json!(bytes));
        }
        None => {
            r.fields
                .insert("bytes_dropped_at_least".into(), serde_json::json!(bytes));
        }
    }
    r.fields.insert(
        "message".into(),
        serde_json::json!(format!(
            "the queue of output '{output}' reached storage.total_limit_size and records were dropped ({policy})"
        )),
    );
    Entry {
        dedup: None,
        queues: [queue].into(),
        id,
        data: r.encode().into(),
    }
}

#[cfg(test)]
pub(crate) mod tests;
