//! The `loki` output: sends batches to Grafana Loki's push API
//! (`POST /loki/api/v1/push`, JSON).
//!
//! Each record becomes one log line (the record's JSON, or `key=value` pairs with
//! `line_format: key_value`) in the stream of its labels. Labels come from a few
//! low-cardinality fields (`label_keys`, default `cluster`, `kind`, `namespace` — for audit
//! events the namespace of the object — and `source`) plus static ones (`labels`, default
//! `job=kubetrail`); high-cardinality values such as names, uids or messages stay in the line,
//! or go to Loki 3's structured metadata (`structured_metadata: [name=$field, ...]`). Label
//! values are cut to 1024 bytes with control characters blanked; label names are checked at
//! start.
//!
//! Options (Fluent Bit's names): `host` (default `127.0.0.1`), `port` (default 3100), `uri`
//! (default `/loki/api/v1/push`), `tls` (default off) or one `url` (the full push URL, as
//! Grafana Cloud shows it); the `tls.*` options; `tenant_id` (sent as `X-Scope-OrgID`);
//! `http_user`/`http_passwd`, `bearer_token`, `bearer_token_file`; `header`/`headers`;
//! `compress: gzip`; `timeout` (default 30s); `labels`, `label_keys`,
//! `structured_metadata`, `remove_keys`, `line_format` (`json` default, or `key_value`).
//!
//! Retries are harmless: Loki treats an entry with the same labels, timestamp and line as
//! one already stored as a duplicate (dropped at ingestion while its chunk is open, merged
//! at query time after), and a record always gives the same labels, timestamp and line.

mod config;
mod push;
#[cfg(test)]
mod tests;

pub use config::{DEFAULT_LABEL_KEYS, FieldPath, LineFormat, LokiConfig, Pair, ValueSource};
pub use push::{key_value_line, label_value, push_body};

use kubetrail_core::Timestamp;
use kubetrail_core::config::{ConfigError, Section};
use kubetrail_state::QueueItem;

use crate::outputs::http_common::{HttpSender, answer_error};
use crate::pipeline::{DeliveryError, Output};

/// How much of a 2xx answer is read (Loki answers 204 without a body).
const ANSWER_LIMIT: usize = 64 * 1024;

/// The `loki` output.
pub struct LokiOutput {
    sender: HttpSender,
    config: LokiConfig,
}

impl std::fmt::Debug for LokiOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LokiOutput")
            .field("sender", &self.sender)
            .field("config", &self.config)
            .finish()
    }
}

impl LokiOutput {
    /// Reads the options above; TLS files are read now.
    pub fn from_section(s: &mut Section) -> Result<LokiOutput, ConfigError> {
        let (sender, config) = LokiConfig::from_section(s)?;
        Ok(LokiOutput { sender, config })
    }
}

#[async_trait::async_trait]
impl Output for LokiOutput {
    async fn open(&mut self, _committed: Option<String>) -> Result<(), DeliveryError> {
        Ok(())
    }

    async fn deliver(&mut self, batch: &[QueueItem]) -> Result<Option<String>, DeliveryError> {
        let body = push_body(&self.config, batch, Timestamp::now());
        let answer = self
            .sender
            .post(&self.config.path, "application/json", body, ANSWER_LIMIT)
            .await?;
        if answer.status.is_success() {
            Ok(None)
        } else {
            Err(answer_error(&answer))
        }
    }
}
