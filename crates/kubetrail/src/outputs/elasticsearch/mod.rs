//! The `elasticsearch` output (also OpenSearch): the bulk API, one `create` action per record
//! with `_id` = the record id, so a retried batch never duplicates a document (409 = already
//! indexed = delivered).
//!
//! Options (Fluent Bit's `es` names): `host` (default `127.0.0.1`), `port` (default 9200),
//! `path` (a prefix before `/_bulk`, for a reverse proxy; default none), `tls` (default off)
//! or one `url` (its path is the prefix); the `tls.*` options; `http_user`/`http_passwd`,
//! `bearer_token`, `bearer_token_file`; `header`/`headers` (e.g. `Authorization: ApiKey ...`);
//! `compress: gzip`; `timeout` (default 30s); `index` (default `kubetrail-%Y.%m.%d`, date
//! parts from each record's own time, UTC) or `logstash_format: on` with `logstash_prefix`
//! (default `logstash`), `logstash_prefix_separator` (`-`) and `logstash_dateformat`
//! (`%Y.%m.%d`); `suppress_type_name` (default on) and `type` (`_doc`, sent only when
//! suppress_type_name is off); `pipeline` (an ingest pipeline); `time_key` (default
//! `@timestamp`, added to documents that lack it; empty = none); `replace_dots` (default
//! off).
//!
//! Per-item errors. A bulk answer can index some documents and not others. Documents refused
//! with 429 or 5xx are retried alone: the output remembers, between `deliver` calls for the
//! same batch, which documents are still to index, returns `Retryable` (so the runner's
//! backoff and shutdown apply), and the next call sends only those. Documents refused for
//! good (a 400 mapping error, say) are written to the output's dead-letter file with their
//! reason (see [`ElasticsearchOutput::set_dead_letters`]). `deliver` returns `Ok` only when
//! every document of the batch is indexed or dead-lettered. Without a dead-letter writer the
//! batch is returned as `Rejected` once the rest is indexed, naming the refused ids: the
//! runner then dead-letters the whole batch (sending those again is harmless, `create` again).
//!
//! A whole answer other than 2xx follows the common rule: 408, 429 and 5xx retry the batch
//! (after `Retry-After`); other 4xx (401, 403, 413, ...) reject it.

mod bulk;
mod config;
mod index;
#[cfg(test)]
mod tests;

pub use bulk::{Doc, Fate, bulk_body, prepare, read_answer, replace_dots};
pub use config::{DEFAULT_INDEX, EsConfig};
pub use index::IndexPattern;

use kubetrail_core::Timestamp;
use kubetrail_core::config::{ConfigError, Section};
use kubetrail_state::QueueItem;

use crate::outputs::dead_letter::DeadLetterWriter;
use crate::outputs::http_common::{HttpOutputError, HttpSender, answer_error};
use crate::pipeline::{DeliveryError, Output};

/// The largest bulk answer read (with `filter_path` it is a few dozen bytes per document).
const ANSWER_LIMIT: usize = 64 << 20;
/// How many refused ids a `Rejected` message names.
const IDS_IN_MESSAGE: usize = 5;

/// What is left to do for the batch being delivered.
#[derive(Debug)]
struct Pending {
    /// The batch this is about: first seq, last seq, length.
    key: (u64, u64, usize),
    /// Positions in the batch still to index.
    remaining: Vec<usize>,
    /// Positions refused for good, with the reason, not yet written to the dead letters.
    refused: Vec<(usize, String)>,
}

impl Pending {
    fn key_of(batch: &[QueueItem]) -> (u64, u64, usize) {
        (
            batch.first().map_or(0, |i| i.seq),
            batch.last().map_or(0, |i| i.seq),
            batch.len(),
        )
    }
}

/// The `elasticsearch` output.
pub struct ElasticsearchOutput {
    sender: HttpSender,
    config: EsConfig,
    dead_letters: Option<DeadLetterWriter>,
    pending: Option<Pending>,
}

impl std::fmt::Debug for ElasticsearchOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElasticsearchOutput")
            .field("sender", &self.sender)
            .field("config", &self.config)
            .finish()
    }
}

impl ElasticsearchOutput {
    /// Reads the options above; TLS files are read now.
    pub fn from_section(s: &mut Section) -> Result<ElasticsearchOutput, ConfigError> {
        let (sender, config) = EsConfig::from_section(s)?;
        Ok(ElasticsearchOutput {
            sender,
            config,
            dead_letters: None,
            pending: None,
        })
    }

    /// Where documents refused one by one are written (the output's dead-letter file, the
    /// same one the runner writes refused batches to).
    pub fn set_dead_letters(&mut self, writer: DeadLetterWriter) {
        self.dead_letters = Some(writer);
    }

    /// Writes the refused documents not written yet; they stay pending if that fails.
    async fn flush_refused(&mut self, batch: &[QueueItem]) -> Result<(), DeliveryError> {
        let (Some(w), Some(p)) = (&self.dead_letters, &mut self.pending) else {
            return Ok(());
        };
        if p.refused.is_empty() {
            return Ok(());
        }
        let items: Vec<(QueueItem, String)> = p
            .refused
            .iter()
            .map(|(i, r)| (batch[*i].clone(), r.clone()))
            .collect();
        let w = w.clone();
        let result = tokio::task::spawn_blocking(move || {
            let refs: Vec<(&QueueItem, &str)> =
                items.iter().map(|(i, r)| (i, r.as_str())).collect();
            w.write(&refs)
        })
        .await;
        match result {
            Ok(Ok(())) => {
                p.refused.clear();
                Ok(())
            }
            Ok(Err(e)) => Err(HttpOutputError::from(e).into()),
            Err(e) => Err(DeliveryError::Retryable {
                message: format!("writing dead letters: {e}"),
                retry_after: None,
            }),
        }
    }

    /// Sends the remaining documents once and records each one's fate.
    async fn send_remaining(&mut self, batch: &[QueueItem]) -> Result<(), DeliveryError> {
        let Some(p) = self.pending.as_mut().filter(|p| !p.remaining.is_empty()) else {
            return Ok(());
        };
        let body = bulk_body(&self.config, batch, &p.remaining, Timestamp::now());
        let answer = self
            .sender
            .post(
                &self.config.bulk_path,
                "application/x-ndjson",
                body,
                ANSWER_LIMIT,
            )
            .await?;
        if !answer.status.is_success() {
            return Err(answer_error(&answer));
        }
        if let Some(e) = &answer.body_error {
            // The documents may be indexed; sending them again meets 409s.
            return Err(DeliveryError::Retryable {
                message: format!("{}: {e}", answer.url),
                retry_after: None,
            });
        }
        let fates = match read_answer(&answer.body, p.remaining.len()) {
            Ok(None) => {
                p.remaining.clear();
                return Ok(());
            }
            Ok(Some(f)) => f,
            Err(m) => {
                return Err(DeliveryError::Retryable {
                    message: format!("{}: {m}", answer.url),
                    retry_after: None,
                });
            }
        };
        let mut still = Vec::new();
        let mut first_retry = None;
        for (&pos, fate) in p.remaining.iter().zip(fates) {
            match fate {
                Fate::Indexed => {}
                Fate::Retry(r) => {
                    first_retry.get_or_insert_with(|| format!("{}: {r}", batch[pos].id));
                    still.push(pos);
                }
                Fate::Refused(r) => p.refused.push((pos, r)),
            }
        }
        let sent = p.remaining.len();
        p.remaining = still;
        if let Some(example) = first_retry {
            tracing::warn!(retry = p.remaining.len(), of = sent, example = %example,
                "some documents were not indexed; only those are sent again");
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Output for ElasticsearchOutput {
    fn attach_dead_letters(&mut self, writer: DeadLetterWriter) {
        self.set_dead_letters(writer);
    }

    async fn open(&mut self, _committed: Option<String>) -> Result<(), DeliveryError> {
        Ok(())
    }

    async fn deliver(&mut self, batch: &[QueueItem]) -> Result<Option<String>, DeliveryError> {
        let key = Pending::key_of(batch);
        if self.pending.as_ref().is_none_or(|p| p.key != key) {
            self.pending = Some(Pending {
                key,
                remaining: (0..batch.len()).collect(),
                refused: Vec::new(),
            });
        }
        self.flush_refused(batch).await?;
        match self.send_remaining(batch).await {
            Ok(()) => {}
            Err(e @ DeliveryError::Rejected { .. }) => {
                // The runner dead-letters the whole batch: nothing is left to do for it.
                self.pending = None;
                return Err(e);
            }
            Err(e) => return Err(e),
        }
        self.flush_refused(batch).await?;
        let Some(p) = self.pending.as_ref() else {
            return Ok(None);
        };
        if !p.remaining.is_empty() {
            return Err(DeliveryError::Retryable {
                message: format!(
                    "{} of {} documents not indexed yet (429/5xx per item); only those are sent again",
                    p.remaining.len(),
                    batch.len()
                ),
                retry_after: None,
            });
        }
        let p = self.pending.take();
        match p {
            Some(p) if !p.refused.is_empty() => {
                // No dead-letter writer: let the runner dead-letter the batch, saying which.
                let ids: Vec<String> = p
                    .refused
                    .iter()
                    .take(IDS_IN_MESSAGE)
                    .map(|(i, r)| format!("{}: {r}", batch[*i].id))
                    .collect();
                Err(DeliveryError::Rejected {
                    message: format!(
                        "{} of {} documents refused (the others are indexed): {}{}",
                        p.refused.len(),
                        batch.len(),
                        ids.join("; "),
                        if p.refused.len() > IDS_IN_MESSAGE {
                            "; ..."
                        } else {
                            ""
                        }
                    ),
                })
            }
            _ => Ok(None),
        }
    }
}
