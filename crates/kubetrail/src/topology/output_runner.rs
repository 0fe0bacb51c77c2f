//! Runs one output: reads batches from its durable queue in order, delivers them, and
//! acknowledges each delivered batch through the journal (which removes it from the queue and
//! commits the output's state with it). Failed deliveries are retried with capped exponential
//! backoff and jitter; refused batches and batches past `retry_limit` go to a dead-letter file.
//! An acknowledgement that fails to commit (a disk fault: the journal reopens the store) is
//! committed again with the same backoff until it is, so the output goes on; the batch is not
//! delivered again (its acknowledgement is the same whether its first commit landed or not).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kubetrail_state::{Ack, DamagedRecord, QueueId, QueueItem, Reader};
use tokio::sync::Notify;

use super::DeliveryOptions;
use crate::outputs::dead_letter::DeadLetterWriter;
use crate::pipeline::journal::{JournalHandle, PendingAck};
use crate::pipeline::{DeliveryError, Output, PipelineError};
use crate::shutdown::Shutdown;
use crate::telemetry::ComponentMetrics;

/// Everything a running output needs.
pub(crate) struct OutputRunner {
    pub name: String,
    pub queue: QueueId,
    pub output: Box<dyn Output>,
    pub reader: Arc<Mutex<Reader>>,
    pub journal: JournalHandle,
    pub notify: Arc<Notify>,
    pub delivery: DeliveryOptions,
    pub metrics: ComponentMetrics,
    pub dead_letters: DeadLetterWriter,
    /// Fires when the sources have stopped: deliver what is queued, then return.
    pub drain: Shutdown,
    /// Fires when the grace period is over: return now (the queue keeps the rest).
    pub stop: Shutdown,
}

/// The state row an output's acknowledgements carry.
pub(crate) fn state_stream(output: &str) -> String {
    format!("output/{output}")
}

/// An acknowledgement handed to the journal while the next batch is delivered: what resolves
/// when it is committed, the acknowledgement itself (to commit it again if that failed), and
/// its batch's size for the metrics.
struct InFlight {
    pending: PendingAck,
    ack: Ack,
    records: usize,
    bytes: usize,
}

/// Capped exponential backoff with full jitter.
pub fn backoff(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(2u32.saturating_pow(attempt.min(20)));
    let ceiling = exp.min(cap);
    let ms = u64::try_from(ceiling.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    Duration::from_millis(ms / 2 + fastrand::u64(0..=ms / 2))
}

impl OutputRunner {
    pub async fn run(mut self) {
        let committed = match self.journal.checkpoint(state_stream(&self.name)).await {
            Ok(c) => c.map(|c| c.value),
            Err(e) => {
                tracing::error!(output = %self.name, error = %e, "cannot read the output's state");
                return;
            }
        };
        self.output.attach_dead_letters(self.dead_letters.clone());
        let mut attempt = 0;
        loop {
            match self.output.open(committed.clone()).await {
                Ok(()) => break,
                Err(e) => {
                    self.metrics.errors.inc();
                    let d = backoff(
                        self.delivery.retry_base_backoff,
                        self.delivery.retry_max_backoff,
                        attempt,
                    );
                    attempt += 1;
                    tracing::warn!(output = %self.name, error = %e, retry_in = ?d, "output cannot open; retrying");
                    if self.sleep_or_stop(d).await {
                        return;
                    }
                }
            }
        }
        if committed.is_none()
            && let Some(state) = self.output.initial_state()
        {
            let ack = Ack {
                queue: self.queue,
                up_to_seq: 0,
                state: Some((state_stream(&self.name), state)),
            };
            let first = self.journal.ack(ack.clone()).await;
            if !self.ack_until_committed(ack, first).await {
                return;
            }
        }
        let mut after = 0u64;
        // The acknowledgement of the last delivered batch, while the next one is delivered:
        // it is committed (or has failed) before the next acknowledgement is handed over.
        let mut in_flight: Option<InFlight> = None;
        // Reads (or dead-letter writes) that failed in a row: retried with backoff.
        let mut failures: u32 = 0;
        loop {
            if self.stop.is_fired() {
                break;
            }
            let (batch, damaged) = match self.read(after).await {
                Ok(b) => b,
                Err(e) => {
                    let delay = self.backoff(&mut failures);
                    tracing::error!(output = %self.name, error = %e, retry_in = ?delay, "reading the queue failed");
                    if self.sleep_or_stop(delay).await {
                        break;
                    }
                    continue;
                }
            };
            // Records of a damaged segment block: to the dead-letter file, then acknowledged
            // with the batch (or on their own), so that the rest of the queue is delivered.
            let past_damage = match self.dead_letter_damaged(&damaged) {
                Ok(last) => last,
                Err(()) => {
                    let delay = self.backoff(&mut failures);
                    if self.sleep_or_stop(delay).await {
                        break;
                    }
                    continue;
                }
            };
            failures = 0;
            let Some(last) = batch.last().map(|i| i.seq) else {
                if let Some(last) = past_damage {
                    if let Some(pending) = in_flight.take()
                        && !self.settle(pending).await
                    {
                        break;
                    }
                    let ack = Ack {
                        queue: self.queue,
                        up_to_seq: last,
                        state: None,
                    };
                    match self.journal.ack_begin(ack.clone()).await {
                        Ok(pending) => {
                            in_flight = Some(InFlight {
                                pending,
                                ack,
                                records: 0,
                                bytes: 0,
                            });
                            after = last;
                            continue;
                        }
                        Err(e) => {
                            tracing::error!(output = %self.name, error = %e, "acknowledging damaged records failed");
                            break;
                        }
                    }
                }
                // Nothing new: settle the acknowledgement in flight before waiting.
                if let Some(pending) = in_flight.take()
                    && !self.settle(pending).await
                {
                    break;
                }
                if self.drain.is_fired() {
                    break;
                }
                tokio::select! {
                    _ = self.notify.notified() => {}
                    _ = self.drain.fired() => {}
                    _ = self.stop.fired() => {}
                    // A safety net: notifications are hints, the queue is the truth.
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            };
            let Some(state) = self.deliver_with_retries(&batch).await else {
                break; // stopped while retrying
            };
            if let Some(pending) = in_flight.take()
                && !self.settle(pending).await
            {
                break;
            }
            let last = last.max(past_damage.unwrap_or(0));
            let ack = Ack {
                queue: self.queue,
                up_to_seq: last,
                state: state.map(|s| (state_stream(&self.name), s)),
            };
            match self.journal.ack_begin(ack.clone()).await {
                Ok(pending) => {
                    let bytes: usize = batch.iter().map(|i| i.data.len()).sum();
                    in_flight = Some(InFlight {
                        pending,
                        ack,
                        records: batch.len(),
                        bytes,
                    });
                    after = last;
                }
                Err(e) => {
                    tracing::error!(output = %self.name, error = %e, "acknowledging a delivered batch failed");
                    break;
                }
            }
        }
        if let Some(pending) = in_flight.take() {
            self.settle(pending).await;
        }
        if let Err(e) = self.output.close().await {
            tracing::warn!(output = %self.name, error = %e, "closing the output failed");
        }
    }

    /// Waits for an acknowledgement handed to the journal, committing it again while it
    /// fails; counts its batch as delivered. Returns false when the runner must stop (the
    /// grace period ended, or the journal is gone): the batch stays queued and is delivered
    /// again after a restart (outputs with committed state cut back to it).
    async fn settle(&self, f: InFlight) -> bool {
        let first = f.pending.wait().await;
        if !self.ack_until_committed(f.ack, first).await {
            return false;
        }
        self.metrics.records_out.add(f.records as u64);
        self.metrics.bytes_out.add(f.bytes as u64);
        true
    }

    /// Given the outcome of an acknowledgement's commit, commits it again while it fails,
    /// with capped exponential backoff and jitter (`retry_base_backoff`, `retry_max_backoff`).
    /// A failed commit of the state database (a write or fsync error, a full disk) leaves the
    /// journal working on a reopened store, so trying again is right: the same acknowledgement
    /// moves the queue's tail to the same place and writes the same state, whether the failed
    /// commit landed or not, and later acknowledgements wait behind it, so they stay in order.
    /// Returns true once committed, false when stopped or the journal is gone.
    async fn ack_until_committed(&self, ack: Ack, mut result: Result<(), PipelineError>) -> bool {
        let mut attempt: u32 = 0;
        loop {
            let e = match result {
                Ok(()) => {
                    if attempt > 0 {
                        tracing::info!(output = %self.name, attempts = attempt + 1, "acknowledgement committed after failures");
                    }
                    return true;
                }
                Err(PipelineError::ShuttingDown) => {
                    tracing::warn!(output = %self.name, "the journal is gone; the unacknowledged batch stays queued");
                    return false;
                }
                Err(e) => e,
            };
            self.metrics.errors.inc();
            let delay = backoff(
                self.delivery.retry_base_backoff,
                self.delivery.retry_max_backoff,
                attempt,
            );
            attempt = attempt.saturating_add(1);
            tracing::error!(output = %self.name, error = %e, attempt, retry_in = ?delay,
                up_to_seq = ack.up_to_seq, "acknowledging a delivered batch failed; committing it again");
            if self.sleep_or_stop(delay).await {
                return false;
            }
            result = self.journal.ack(ack.clone()).await;
        }
    }

    /// Reads a batch after `after`, and the damaged records the read skipped.
    async fn read(&self, after: u64) -> Result<(Vec<QueueItem>, Vec<DamagedRecord>), String> {
        let reader = self.reader.clone();
        let (q, n, b) = (
            self.queue,
            self.delivery.batch_records,
            self.delivery.batch_bytes,
        );
        tokio::task::spawn_blocking(move || {
            let mut r = reader
                .lock()
                .map_err(|_| "queue reader poisoned".to_string())?;
            let items = r.read_queue(q, after, n, b).map_err(|e| e.to_string())?;
            Ok((items, r.take_damaged(q)))
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Writes damaged records to the dead-letter file, each with the file and offset of its
    /// block; returns the last one's seq (to acknowledge), or `Err` when the file could not be
    /// written (the read is tried again: the records are found damaged again).
    fn dead_letter_damaged(&self, damaged: &[DamagedRecord]) -> Result<Option<u64>, ()> {
        let Some(last) = damaged.last().map(|d| d.seq) else {
            return Ok(None);
        };
        let items: Vec<(QueueItem, String)> = damaged
            .iter()
            .map(|d| {
                (
                    QueueItem {
                        seq: d.seq,
                        id: d.id.clone(),
                        data: d.data.clone(),
                    },
                    if d.first_seq < d.seq {
                        format!(
                            "records {} to {} of the queue lost: the header of the block at byte \
                             {} of queue segment {} is damaged ({}); the queue goes on at the \
                             next intact block",
                            d.first_seq,
                            d.seq,
                            d.offset,
                            d.path.display(),
                            d.what
                        )
                    } else {
                        format!(
                            "damaged in queue segment {} (block at byte {}): {}",
                            d.path.display(),
                            d.offset,
                            d.what
                        )
                    },
                )
            })
            .collect();
        let pairs: Vec<(&QueueItem, &str)> = items.iter().map(|(i, r)| (i, r.as_str())).collect();
        match self.dead_letters.write(&pairs) {
            Ok(()) => Ok(Some(last)),
            Err(e) => {
                tracing::error!(output = %self.name, records = damaged.len(), error = %e,
                    "damaged queue records could not be written to the dead-letter file; trying again");
                Err(())
            }
        }
    }

    /// Delivers until success (returns the state to commit), dead-letters when refused or out
    /// of retries (returns `Some(None)`), or returns `None` when told to stop.
    async fn deliver_with_retries(&mut self, batch: &[QueueItem]) -> Option<Option<String>> {
        let mut attempt: u32 = 0;
        loop {
            let err = match self.output.deliver(batch).await {
                Ok(state) => return Some(state),
                Err(e) => e,
            };
            let (reason, delay) = match &err {
                DeliveryError::Rejected { message } => {
                    self.dead_letter(batch, message);
                    return Some(None);
                }
                DeliveryError::Retryable {
                    message,
                    retry_after,
                } => {
                    if self
                        .delivery
                        .retry_limit
                        .is_some_and(|l| u64::from(attempt) >= l)
                    {
                        self.dead_letter(batch, &format!("retry limit reached: {message}"));
                        return Some(None);
                    }
                    let d = backoff(
                        self.delivery.retry_base_backoff,
                        self.delivery.retry_max_backoff,
                        attempt,
                    );
                    (message.clone(), retry_after.unwrap_or(d))
                }
            };
            attempt = attempt.saturating_add(1);
            self.metrics.retried.add(batch.len() as u64);
            tracing::warn!(output = %self.name, error = %reason, attempt, retry_in = ?delay, "delivery failed; will retry");
            if self.sleep_or_stop(delay).await {
                return None;
            }
        }
    }

    /// The delay before the next try after `failures` failures in a row (counted up).
    fn backoff(&self, failures: &mut u32) -> Duration {
        let d = backoff(
            self.delivery.retry_base_backoff,
            self.delivery.retry_max_backoff,
            *failures,
        );
        *failures = failures.saturating_add(1);
        d
    }

    /// Sleeps; returns true if the stop signal fired meanwhile.
    async fn sleep_or_stop(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => self.stop.is_fired(),
            _ = self.stop.fired() => true,
        }
    }

    fn dead_letter(&self, batch: &[QueueItem], reason: &str) {
        if let Err(e) = self.dead_letters.write_batch(batch, reason) {
            self.metrics.failed.add(batch.len() as u64);
            tracing::error!(output = %self.name, records = batch.len(), reason, error = %e,
                "batch refused and the dead-letter file could not be written; the batch is dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    use kubetrail_state::{Dedup, Entry, FaultSite, Faults, Store, StoreOptions, SyncMode};

    use crate::pipeline::journal::{self, OnFull, QueueSlot};
    use crate::telemetry::{Counter, Gauge, Metrics};

    /// An output that keeps the ids it was given; its state is how many it has.
    struct Collect {
        ids: Arc<Mutex<Vec<String>>>,
    }

    #[async_trait::async_trait]
    impl Output for Collect {
        async fn open(&mut self, _committed: Option<String>) -> Result<(), DeliveryError> {
            Ok(())
        }

        async fn deliver(&mut self, batch: &[QueueItem]) -> Result<Option<String>, DeliveryError> {
            let mut ids = self.ids.lock().unwrap();
            ids.extend(batch.iter().map(|i| i.id.clone()));
            Ok(Some(ids.len().to_string()))
        }
    }

    fn entries(q: QueueId, from: usize, n: usize) -> Vec<Entry> {
        (from..from + n)
            .map(|i| Entry {
                dedup: Some(Dedup {
                    scope: "src".into(),
                    key: format!("r{i}"),
                    value: "1".into(),
                    expires_at_unix_ms: i64::MAX,
                }),
                queues: [q].into(),
                id: format!("r{i}"),
                data: format!("{{\"n\":{i}}}").into_bytes().into(),
            })
            .collect()
    }

    /// Polls until `done` holds; panics after 20 s.
    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let start = std::time::Instant::now();
        while !done() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "timed out: {what}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// An acknowledgement whose commit fails (nothing committed, or committed but reported
    /// failed) is committed again: the output goes on, every record is delivered once, the
    /// queue drains and the output's state is the last one. Before, the runner stopped for
    /// good at the first failed acknowledgement.
    #[tokio::test]
    async fn a_failed_acknowledgement_is_committed_again_and_the_output_goes_on() {
        for site in [FaultSite::CommitBefore, FaultSite::CommitAfter] {
            let dir = tempfile::tempdir().unwrap();
            let faults = Faults::new();
            let mut store = Store::open(
                &dir.path().join("kubetrail.db"),
                &StoreOptions {
                    sync: SyncMode::Normal,
                    faults: faults.clone(),
                    reserve_bytes: 0,
                    ..StoreOptions::default()
                },
            )
            .unwrap();
            let q = store.queue_id("output/out").unwrap();
            let reader = store.reader().unwrap();
            let mut check = store.reader().unwrap();
            let notify = Arc::new(Notify::new());
            let metrics = Metrics::new();
            let slot = QueueSlot {
                name: "out".into(),
                notify: notify.clone(),
                limit_bytes: 1 << 30,
                depth_records: Gauge::default(),
                depth_bytes: Gauge::default(),
                on_full: OnFull::Backpressure,
                dropped: Counter::default(),
                gaps: Counter::default(),
            };
            let (j, _thread) = journal::spawn(
                store,
                HashMap::from([(q, slot)]),
                &metrics,
                Arc::default(),
                Duration::from_secs(86_400),
            )
            .unwrap();
            j.submit(entries(q, 0, 30), vec![], None).await.unwrap();
            // The next three commits are acknowledgements, and they fail.
            faults.fail(site, 1, 3);
            let ids = Arc::new(Mutex::new(Vec::new()));
            let (drain_trigger, drain) = crate::shutdown::channel();
            let (_stop_trigger, stop) = crate::shutdown::channel();
            let runner = OutputRunner {
                name: "out".into(),
                queue: q,
                output: Box::new(Collect { ids: ids.clone() }),
                reader: Arc::new(Mutex::new(reader)),
                journal: j.clone(),
                notify,
                delivery: DeliveryOptions {
                    total_limit_size: 1 << 30,
                    retry_limit: None,
                    retry_max_backoff: Duration::from_millis(20),
                    retry_base_backoff: Duration::from_millis(2),
                    on_full: OnFull::Backpressure,
                    batch_records: 7,
                    batch_bytes: 1 << 20,
                },
                metrics: ComponentMetrics::default(),
                dead_letters: DeadLetterWriter::new(dir.path().join("dead-letter"), "out"),
                drain,
                stop,
            };
            let task = tokio::spawn(runner.run());
            until("the queue drains", || {
                check.first_seq(q).unwrap().is_none() && ids.lock().unwrap().len() >= 30
            })
            .await;
            assert_eq!(faults.fired(site), 3, "{site:?}");
            // More records after the failures: the output is still running.
            j.submit(entries(q, 30, 10), vec![], None).await.unwrap();
            until("the new records are delivered", || {
                check.first_seq(q).unwrap().is_none() && ids.lock().unwrap().len() >= 40
            })
            .await;
            drain_trigger.fire();
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("the runner ends when drained")
                .unwrap();
            let want: Vec<String> = (0..40).map(|i| format!("r{i}")).collect();
            assert_eq!(
                *ids.lock().unwrap(),
                want,
                "{site:?}: each record once, in order"
            );
            assert_eq!(
                check.checkpoint("output/out").unwrap().map(|c| c.value),
                Some("40".to_string())
            );
            assert_eq!(
                metrics
                    .counter("kubetrail_journal_reopens_total", &[])
                    .get(),
                3,
                "{site:?}: the journal reopened the store after each failed commit"
            );
        }
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(5);
        for attempt in 0..40 {
            let d = backoff(base, cap, attempt);
            let ceiling = base
                .saturating_mul(2u32.saturating_pow(attempt.min(20)))
                .min(cap);
            assert!(
                d <= ceiling && d >= ceiling / 2 - Duration::from_millis(1),
                "{attempt}: {d:?}"
            );
        }
    }
}
