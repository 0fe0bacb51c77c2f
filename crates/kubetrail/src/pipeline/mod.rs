//! The component contracts: how a source hands records to the pipeline, what a filter does to
//! a record, and how an output receives what its durable queue holds.
//!
//! A source calls [`SourceContext::submit`] with records and the checkpoint they advance to;
//! the call returns only once the records are in every matching output's durable queue and
//! the checkpoint and dedup keys are committed with them, in one transaction. That is the
//! moment a source may acknowledge (move on in a watch, answer 200 to a webhook, let a file
//! offset advance).

pub(crate) mod context;
pub mod journal;
pub mod matcher;

use std::time::Duration;

use kubetrail_core::Record;
use kubetrail_state::QueueItem;

pub(crate) use context::Pipeline;
pub use context::{PipelineError, Prepared, SourceContext, Submission, SubmitOutcome};

/// A filter works on one record at a time, in configuration order.
pub trait Filter: Send + Sync {
    /// Changes the record in place; returns `false` to drop it.
    fn apply(&self, record: &mut Record) -> bool;
}

/// What a source is: it runs until its context says stop, submitting records as it goes.
#[async_trait::async_trait]
pub trait Source: Send {
    /// Runs the source. Returns when `ctx.shutdown` fires (after finishing the submission in
    /// flight) or on an error it cannot recover from.
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError>;

    /// Reads what the source will read from disk when it starts (certificates, keys, CA
    /// bundles, token files, kubeconfig), for `kubetrail check`: a configuration that parses
    /// but names a missing or broken file is reported before it is deployed.
    fn preflight(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A source's unrecoverable error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

/// Why a delivery failed, which decides what happens to the batch.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Try again later (after `retry_after` if the destination said so, else backoff).
    #[error("retryable: {message}")]
    Retryable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The destination refused these records for good (e.g. HTTP 400): dead-letter them.
    #[error("rejected: {message}")]
    Rejected { message: String },
}

/// An output receives batches from its durable queue, in order. A batch is removed from the
/// queue only after `deliver` returned `Ok`; the state it returns is committed in the same
/// transaction (e.g. the `file` output's committed length), and given back to `open` after a
/// restart, so an output can make its side exactly once where its destination allows.
#[async_trait::async_trait]
pub trait Output: Send + Sync {
    /// Called once before the first delivery with the state last committed with an ack.
    async fn open(&mut self, committed_state: Option<String>) -> Result<(), DeliveryError>;

    /// Reads what the output will read from disk when it connects (TLS material), for
    /// `kubetrail check` (see [`Source::preflight`]).
    fn preflight(&self) -> Result<(), String> {
        Ok(())
    }
    /// Delivers a batch (each item's `data` is one encoded record, a JSON line without
    /// newline). Returns the state to commit with the acknowledgement.
    async fn deliver(&mut self, batch: &[QueueItem]) -> Result<Option<String>, DeliveryError>;
    /// Receives the output's dead-letter file before `open`, for outputs that refuse records
    /// one by one (e.g. Elasticsearch's per-document errors) rather than whole batches.
    fn attach_dead_letters(&mut self, _writer: crate::outputs::dead_letter::DeadLetterWriter) {}

    /// A state to commit right after `open`, before the first delivery, when there was none
    /// (e.g. the `file` output's starting length, so that a crash before its first
    /// acknowledgement still lets it cut back to where it began).
    fn initial_state(&self) -> Option<String> {
        None
    }

    /// Flushes and closes (at shutdown).
    async fn close(&mut self) -> Result<(), DeliveryError> {
        Ok(())
    }
}
