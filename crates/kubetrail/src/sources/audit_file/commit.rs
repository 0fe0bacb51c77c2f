//! The committing half of the source: takes sealed batches in order and submits each until
//! the pipeline has it (records durable, offsets and dedup keys committed in one transaction).
//! The pipeline's `submit` itself waits while an output queue is full; a submission that
//! fails all the same (`QueueFull`, a failing state database) is retried with capped
//! exponential backoff and jitter: the same batch, rebuilt from its lines. Meanwhile the
//! reader is held back by the bounded channel between them. This is the source's backpressure.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kubetrail_state::Checkpoint;
use tokio::sync::mpsc;

use super::batch::{Batch, RecordContext, build_records};
use crate::pipeline::{PipelineError, SourceContext, Submission, SubmitOutcome};
use crate::shutdown::Shutdown;
use crate::telemetry::Counter;

/// The first wait after a full queue.
const BACKOFF_BASE: Duration = Duration::from_millis(50);
/// The longest wait between two attempts.
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// At most this many batches are committed together: the one received and every one that
/// queued up behind it (the channel holds `MAX_MERGED - 1`).
pub(crate) const MAX_MERGED: usize = 2;

/// Where batches go: the pipeline (through [`SourceContext`]), or a fake in tests.
#[async_trait::async_trait]
pub trait Committer: Send + Sync + 'static {
    /// Commits records and checkpoints together (see [`SourceContext::submit`]).
    async fn submit(&self, sub: Submission) -> Result<SubmitOutcome, PipelineError>;
    /// Does the CPU part of a later `submit` now (filters, encoding); called on a blocking
    /// thread while the previous batch commits.
    fn prepare(&self, sub: Submission) -> Submission {
        sub
    }
    /// The last committed value of a checkpoint stream.
    async fn checkpoint(&self, stream: &str) -> Result<Option<Checkpoint>, PipelineError>;
    /// The full name of one of this source's checkpoint streams.
    fn stream_name(&self, suffix: &str) -> String;
    /// This source's committed checkpoints whose names start with `stream_name(prefix)`.
    async fn checkpoints_under(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, Checkpoint)>, PipelineError>;
    /// Deletes checkpoint streams of this source (full names); returns once committed.
    async fn forget(&self, streams: Vec<String>) -> Result<(), PipelineError>;
}

#[async_trait::async_trait]
impl Committer for SourceContext {
    async fn submit(&self, sub: Submission) -> Result<SubmitOutcome, PipelineError> {
        SourceContext::submit(self, sub).await
    }

    fn prepare(&self, sub: Submission) -> Submission {
        SourceContext::prepare(self, sub)
    }

    async fn checkpoint(&self, stream: &str) -> Result<Option<Checkpoint>, PipelineError> {
        SourceContext::checkpoint(self, stream).await
    }

    fn stream_name(&self, suffix: &str) -> String {
        SourceContext::stream_name(self, suffix)
    }

    async fn checkpoints_under(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, Checkpoint)>, PipelineError> {
        SourceContext::checkpoints_under(self, prefix).await
    }

    async fn forget(&self, streams: Vec<String>) -> Result<(), PipelineError> {
        SourceContext::forget_checkpoints(self, streams).await
    }
}

/// Capped exponential backoff with full jitter over the upper half.
pub fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(2u32.saturating_pow(attempt.min(20)))
        .min(BACKOFF_CAP);
    let ms = u64::try_from(ceiling.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    Duration::from_millis(ms / 2 + fastrand::u64(0..=ms / 2))
}

/// What the committer needs besides its batches.
pub struct CommitLoop<C> {
    pub committer: Arc<C>,
    pub shutdown: Shutdown,
    pub cx: RecordContext,
    pub dedup_retention: Duration,
    /// The sequence number of the last committed batch.
    pub committed: Arc<AtomicU64>,
    /// Submissions retried after a full queue or a storage error.
    pub backpressure: Counter,
}

impl<C: Committer> CommitLoop<C> {
    /// Submits batches until the channel closes or the source must stop. A batch not yet
    /// committed when it stops is simply not committed: its lines are read again at the next
    /// start, from the committed offsets.
    pub async fn run(self, mut rx: mpsc::Receiver<Batch>) {
        let mut carry: Option<Batch> = None;
        loop {
            let mut batch = match carry.take() {
                Some(b) => b,
                None => match rx.recv().await {
                    Some(b) => b,
                    None => return,
                },
            };
            // Batches the reader finished while the last one committed go into this
            // submission too: one transaction (and one fsync) for all of them.
            let mut merged = 1;
            while merged < MAX_MERGED {
                match rx.try_recv() {
                    Ok(next) if batch.can_absorb(&next) => {
                        batch.absorb(next);
                        merged += 1;
                    }
                    Ok(next) => {
                        carry = Some(next);
                        break;
                    }
                    Err(_) => break,
                }
            }
            let mut attempt: u32 = 0;
            loop {
                let sub = Submission {
                    records: std::mem::take(&mut batch.records),
                    checkpoints: batch.checkpoints.clone(),
                    dedup_retention: self.dedup_retention,
                    prepared: batch.prepared.take(),
                };
                let err = match self.committer.submit(sub).await {
                    Ok(_) => {
                        self.committed.store(batch.seq, Ordering::Release);
                        break;
                    }
                    Err(PipelineError::ShuttingDown) => return,
                    Err(e) => e,
                };
                let delay = backoff(attempt);
                attempt = attempt.saturating_add(1);
                self.backpressure.inc();
                match &err {
                    PipelineError::QueueFull { output } => {
                        tracing::debug!(output, retry_in = ?delay, "queue full; the audit file reader waits")
                    }
                    other => {
                        tracing::warn!(error = %other, retry_in = ?delay, "submitting audit records failed; retrying")
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = self.shutdown.fired() => return,
                }
                if self.shutdown.is_fired() {
                    return;
                }
                // The records went into the failed submission: make them again from the lines.
                let cx = self.cx.clone();
                let mut lines = std::mem::take(&mut batch.lines);
                match tokio::task::spawn_blocking(move || {
                    lines.seal();
                    let (records, _) = build_records(&lines, &cx);
                    (lines, records)
                })
                .await
                {
                    Ok((lines, records)) => {
                        batch.lines = lines;
                        batch.records = records;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "rebuilding a batch failed; stopping");
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        for attempt in 0..40 {
            let d = backoff(attempt);
            let ceiling = BACKOFF_BASE
                .saturating_mul(2u32.saturating_pow(attempt.min(20)))
                .min(BACKOFF_CAP);
            assert!(
                d <= ceiling && d >= ceiling / 2 - Duration::from_millis(1),
                "{attempt}: {d:?}"
            );
        }
        assert!(backoff(30) <= BACKOFF_CAP);
    }
}
