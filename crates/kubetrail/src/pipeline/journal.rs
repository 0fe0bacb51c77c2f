//! The journal: one thread that owns the state database's write connection and commits, in
//! one transaction per round, everything that arrived meanwhile: records with their dedup keys
//! and the checkpoints they advance (from sources), and queue acknowledgements (from outputs).
//!
//! Group commit is what makes "durable before acknowledged" cheap: one fsync covers every
//! submission waiting at that moment. Submissions that would push a queue past its size limit
//! are refused (`QueueFull`) before the transaction, so a full queue slows its sources instead
//! of growing without bound.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kubetrail_state::{Ack, Checkpoint, CommitBatch, Entry, QueueId, Store};
use tokio::sync::{Notify, mpsc, oneshot};

use super::PipelineError;
use crate::telemetry::{Counter, Gauge, Metrics};

/// How many commands one round commits at most.
const MAX_ROUND: usize = 512;
/// How often expired dedup keys are purged.
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// The committed part of a submission.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct JournalOutcome {
    pub accepted: usize,
    pub duplicates: usize,
}

/// A refused submission: the error, and the entries back when they may be tried again.
type SubmitReply = Result<JournalOutcome, (PipelineError, Option<(Vec<Entry>, Vec<(String, String)>)>)>;

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
}

/// A queue as the journal sees it: where to signal new records and how big it may grow.
pub(crate) struct QueueSlot {
    pub name: String,
    pub notify: Arc<Notify>,
    pub limit_bytes: u64,
    pub depth_records: Gauge,
    pub depth_bytes: Gauge,
}

/// The handle sources and outputs use to reach the journal thread.
#[derive(Clone)]
pub(crate) struct JournalHandle {
    tx: mpsc::Sender<Cmd>,
}

impl JournalHandle {
    /// Commits entries and checkpoints. When a queue is full: with `wait`, retries with
    /// capped backoff until there is room (backpressure) or `stop` fires; without, returns
    /// `QueueFull` at once.
    pub async fn submit(
        &self,
        mut entries: Vec<Entry>,
        mut checkpoints: Vec<(String, String)>,
        wait: Option<&crate::shutdown::Shutdown>,
    ) -> Result<JournalOutcome, PipelineError> {
        let mut attempt = 0u32;
        loop {
            let (reply, rx) = oneshot::channel();
            self.tx
                .send(Cmd::Submit { entries, checkpoints, reply })
                .await
                .map_err(|_| PipelineError::ShuttingDown)?;
            match rx.await.map_err(|_| PipelineError::ShuttingDown)? {
                Ok(outcome) => return Ok(outcome),
                Err((err @ PipelineError::QueueFull { .. }, Some((e, c)))) if wait.is_some() => {
                    let stop = wait.ok_or(PipelineError::ShuttingDown)?;
                    let delay = crate::topology::backoff(
                        Duration::from_millis(50),
                        Duration::from_secs(2),
                        attempt,
                    );
                    attempt = attempt.saturating_add(1);
                    if attempt == 1 {
                        tracing::warn!(error = %err, "output queue full; pausing this input until it drains");
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
        let (reply, rx) = oneshot::channel();
        self.tx.send(Cmd::Ack { ack, reply }).await.map_err(|_| PipelineError::ShuttingDown)?;
        rx.await.map_err(|_| PipelineError::ShuttingDown)?
    }

    pub async fn checkpoint(&self, stream: String) -> Result<Option<Checkpoint>, PipelineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Checkpoint { stream, reply })
            .await
            .map_err(|_| PipelineError::ShuttingDown)?;
        rx.await.map_err(|_| PipelineError::ShuttingDown)?
    }
}

/// Starts the journal thread. It stops when every handle is dropped.
pub(crate) fn spawn(
    store: Store,
    queues: HashMap<QueueId, QueueSlot>,
    metrics: &Metrics,
) -> std::io::Result<(JournalHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(1024);
    let commits = metrics.counter("kubetrail_journal_commits_total", &[]);
    let failures = metrics.counter("kubetrail_journal_commit_failures_total", &[]);
    let handle = std::thread::Builder::new()
        .name("kubetrail-journal".into())
        .spawn(move || run(store, queues, rx, commits, failures))?;
    Ok((JournalHandle { tx }, handle))
}

fn run(
    mut store: Store,
    queues: HashMap<QueueId, QueueSlot>,
    mut rx: mpsc::Receiver<Cmd>,
    commits: Counter,
    failures: Counter,
) {
    let mut last_purge = Instant::now();
    while let Some(first) = rx.blocking_recv() {
        let mut round = vec![first];
        while round.len() < MAX_ROUND {
            match rx.try_recv() {
                Ok(c) => round.push(c),
                Err(_) => break,
            }
        }

        let mut batch = CommitBatch::default();
        // Per submit command: the range of its entries in the batch, and its reply.
        let mut submits = Vec::new();
        let mut acks = Vec::new();
        let mut reads = Vec::new();
        // Bytes this round adds per queue, to enforce limits across submissions of one round.
        let mut pending: HashMap<QueueId, u64> = HashMap::new();
        let mut touched: Vec<QueueId> = Vec::new();
        for cmd in round {
            match cmd {
                Cmd::Submit { entries, checkpoints, reply } => {
                    if let Some(full) = over_limit(&store, &queues, &pending, &entries) {
                        let _ = reply.send(Err((
                            PipelineError::QueueFull { output: full },
                            Some((entries, checkpoints)),
                        )));
                        continue;
                    }
                    for e in &entries {
                        for q in &e.queues {
                            *pending.entry(*q).or_default() += e.data.len() as u64;
                            if !touched.contains(q) {
                                touched.push(*q);
                            }
                        }
                    }
                    let start = batch.entries.len();
                    batch.entries.extend(entries);
                    batch.checkpoints.extend(checkpoints);
                    submits.push((start..batch.entries.len(), reply));
                }
                Cmd::Ack { ack, reply } => {
                    batch.acks.push(ack);
                    acks.push(reply);
                }
                Cmd::Checkpoint { stream, reply } => reads.push((stream, reply)),
            }
        }

        if !(batch.entries.is_empty() && batch.checkpoints.is_empty() && batch.acks.is_empty()) {
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
                    for (range, reply) in submits {
                        let inserted = &outcome.inserted[range];
                        let accepted = inserted.iter().filter(|i| **i).count();
                        let _ = reply.send(Ok(JournalOutcome {
                            accepted,
                            duplicates: inserted.len() - accepted,
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
                        slot.depth_records.set(i64::try_from(d.records).unwrap_or(i64::MAX));
                        slot.depth_bytes.set(i64::try_from(d.bytes).unwrap_or(i64::MAX));
                    }
                }
                Err(e) => {
                    failures.inc();
                    tracing::error!(error = %e, "state commit failed; nothing of this round was committed");
                    let err = PipelineError::Storage(e.to_string());
                    for (_, reply) in submits {
                        let _ = reply.send(Err((err.clone(), None)));
                    }
                    for reply in acks {
                        let _ = reply.send(Err(err.clone()));
                    }
                }
            }
        }
        for (stream, reply) in reads {
            let _ = reply.send(store.checkpoint(&stream).map_err(|e| PipelineError::Storage(e.to_string())));
        }
        if last_purge.elapsed() >= PURGE_EVERY {
            last_purge = Instant::now();
            let now_ms = kubetrail_core::Timestamp::now().unix_nanos() / 1_000_000;
            match store.purge_expired(now_ms) {
                Ok(n) if n > 0 => tracing::debug!(purged = n, "expired dedup keys purged"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "purging expired dedup keys failed"),
            }
        }
    }
}

/// The name of the first queue this submission would push past its limit, if any.
fn over_limit(
    store: &Store,
    queues: &HashMap<QueueId, QueueSlot>,
    pending: &HashMap<QueueId, u64>,
    entries: &[Entry],
) -> Option<String> {
    let mut adds: HashMap<QueueId, u64> = HashMap::new();
    for e in entries {
        for q in &e.queues {
            *adds.entry(*q).or_default() += e.data.len() as u64;
        }
    }
    for (q, add) in adds {
        let slot = queues.get(&q)?;
        let depth = store.queue_depth(q).bytes + pending.get(&q).copied().unwrap_or(0);
        // An empty queue always takes a submission, however large, so nothing can wedge.
        if depth > 0 && depth + add > slot.limit_bytes {
            return Some(slot.name.clone());
        }
    }
    None
}
