//! The `audit_file` input: tails kube-apiserver audit log files (`--audit-log-path`), through
//! their rotations, and turns each line into a `k8s_audit` record, exactly once.
//!
//! ```yaml
//! pipeline:
//!   inputs:
//!     - name: audit_file
//!       tag: k8s.audit
//!       path: /var/log/kubernetes/audit/audit*.log*
//! ```
//!
//! - Files are known by a fingerprint of their first line ([`fingerprint`]), not by name or
//!   inode: a renamed file, its gzipped backup and a file that got a recycled inode are told
//!   apart correctly. The glob should match the backups too.
//! - The offset of each file is a checkpoint (stream `<input>/fp:<fingerprint>`, value
//!   [`batch::FileCheckpoint`] as JSON) committed in the same transaction as the records read
//!   up to it and their dedup keys, so a crash at any moment neither loses nor repeats a line.
//! - Only complete lines become records; a line longer than `buffer_max_size` becomes an
//!   `error` record (file, offset, first bytes) and reading goes on after it. A line that is
//!   not an audit event becomes an `error` record too, and is counted in the input's
//!   `errors` series.
//! - A rotated file is read to its end, and left once it has not grown for `rotate_wait`; a
//!   last line without newline is emitted then. Copytruncate and gzip of backups are handled
//!   (see [`tail`]).
//! - Backpressure: while an output queue is full the submission waits (the pipeline backs
//!   off); a submission that fails anyway (`QueueFull`, storage) is retried, the same batch,
//!   with capped exponential backoff and jitter. Reading waits meanwhile (bounded: one batch
//!   in flight, one queued, one being read).
//! - Readiness: ready after the first scan of the glob; progress at every turn of the loop.
//!
//! Parts: [`config`] (options), [`fingerprint`], [`reader`] (line splitting, gzip), [`files`]
//! (blocking file work), [`batch`] (lines, records, checkpoints), [`tail`] (the tailer) and
//! [`commit`] (submission with backoff).

pub mod batch;
pub mod commit;
pub mod config;
pub mod files;
pub mod fingerprint;
pub mod reader;
pub mod tail;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use kubetrail_core::config::{ConfigError, Section};
use tokio::sync::mpsc;

use self::batch::RecordContext;
use self::commit::{CommitLoop, Committer};
pub use self::config::AuditFileConfig;
use self::tail::{Stop, TailMetrics, Tailer};
use crate::pipeline::{Source, SourceContext, SourceError};
use crate::shutdown::Shutdown;
use crate::telemetry::ComponentMetrics;
use crate::telemetry::health::Readiness;

/// The `audit_file` input.
#[derive(Debug, Clone)]
pub struct AuditFile {
    pub config: AuditFileConfig,
}

impl AuditFile {
    /// Reads the options from the input's section (the topology calls `finish`).
    pub fn from_section(section: &mut Section) -> Result<AuditFile, ConfigError> {
        Ok(AuditFile {
            config: AuditFileConfig::from_section(section)?,
        })
    }
}

#[async_trait::async_trait]
impl Source for AuditFile {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        tracing::info!(input = %ctx.name, path = %self.config.path, "tailing audit log files");
        let tail_metrics = TailMetrics::register(&ctx.registry, &ctx.name);
        let cx = RecordContext {
            source: ctx.name.clone(),
            tag: ctx.tag.clone(),
            raw_format: self.config.raw_format,
            max_line: self.config.buffer_max_size,
        };
        let (shutdown, metrics) = (ctx.shutdown.clone(), ctx.metrics.clone());
        // The loop turns at least every `refresh_interval` unless it waits on a full queue
        // (which the queue's own readiness already reports) or the database.
        let stall_after = (self.config.refresh_interval * 10).max(Duration::from_secs(120));
        let readiness = ctx.health.register(&ctx.name, stall_after);
        run(
            self.config,
            Arc::new(ctx),
            shutdown,
            metrics,
            tail_metrics,
            cx,
            Some(readiness),
        )
        .await
    }
}

/// Runs the tailer and its committer until shutdown (or until the pipeline stops).
pub(crate) async fn run<C: Committer>(
    cfg: AuditFileConfig,
    committer: Arc<C>,
    shutdown: Shutdown,
    metrics: ComponentMetrics,
    tail_metrics: TailMetrics,
    cx: RecordContext,
    readiness: Option<Arc<Readiness>>,
) -> Result<(), SourceError> {
    // Batches in memory at once: one being committed, the ones queued here (the committer
    // merges all of them into its next submission), and the one being read. A second queued
    // batch added ~14 MiB of peak RSS (4 MiB of lines, their records and their encoding) for
    // ~8 % more throughput on bench/audit-file.sh (6 interleaved pairs: 277-322, mean 299 MB/s,
    // peak RSS 58.0-60.0 MiB, vs 259-290, mean 275 MB/s, 44.0-45.7 MiB). The targets are
    // 160 MB/s and 64 MiB: the RSS margin was the thin one.
    let (tx, rx) = mpsc::channel(commit::MAX_MERGED - 1);
    let committed = Arc::new(AtomicU64::new(0));
    let commit = CommitLoop {
        committer: committer.clone(),
        shutdown: shutdown.clone(),
        cx: cx.clone(),
        dedup_retention: cfg.dedup_retention,
        committed: committed.clone(),
        backpressure: tail_metrics.backpressure.clone(),
    };
    let committer_task = tokio::spawn(commit.run(rx));
    let tailer = Tailer::new(
        cfg,
        committer,
        shutdown,
        metrics,
        tail_metrics,
        cx,
        committed,
        tx,
        readiness,
    );
    let stopped = tailer.run().await;
    // The tailer has stopped and dropped its sender: the committer finishes the submission
    // in flight (and stops at once if shutting down).
    let joined = committer_task.await;
    match (stopped, joined) {
        (Stop::Failed(message), _) => Err(SourceError(message)),
        (_, Err(e)) => Err(SourceError(format!("the audit file committer failed: {e}"))),
        (Stop::Shutdown, Ok(())) => Ok(()),
    }
}
