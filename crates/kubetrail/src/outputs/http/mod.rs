//! The `http` output: POSTs each batch to one URL, as JSON lines (`format: json_lines`, the
//! default, `Content-Type: application/x-ndjson`) or as one JSON array (`format: json`,
//! `application/json`).
//!
//! Options (Fluent Bit's names): the endpoint as `host` (default `127.0.0.1`), `port`
//! (default 80), `uri` (default `/`) and `tls` (default off), or one `url` instead; the TLS
//! options `tls.verify`, `tls.ca_file`, `tls.ca_path`, `tls.crt_file`, `tls.key_file`,
//! `tls.vhost`, `tls.debug`; `http_user`/`http_passwd` (basic) or `bearer_token` or
//! `bearer_token_file` (read again whenever the file changes); `header` (`Name value`, one or
//! a list) and `headers` (a map); `compress: gzip`; `timeout` (default 30s, the whole
//! exchange). A 2xx answer delivers the batch; 408, 429 and 5xx are retried (after
//! `Retry-After` when given); any other 4xx sends the batch to the dead-letter file.
//!
//! At least once: a plain HTTP endpoint cannot tell a retry from new data, so a batch whose
//! answer was lost is sent again. Each record carries its stable `id` for receivers that
//! deduplicate.

mod config;
#[cfg(test)]
mod tests;

pub use config::{BodyFormat, HttpConfig};

use kubetrail_core::config::{ConfigError, Section};
use kubetrail_state::QueueItem;

use crate::outputs::http_common::{HttpSender, answer_error, single_line};
use crate::pipeline::{DeliveryError, Output};

/// How much of a 2xx answer is read (only to keep the connection reusable).
const ANSWER_LIMIT: usize = 64 * 1024;

/// The `http` output.
pub struct HttpOutput {
    sender: HttpSender,
    config: HttpConfig,
}

impl std::fmt::Debug for HttpOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpOutput")
            .field("sender", &self.sender)
            .field("config", &self.config)
            .finish()
    }
}

impl HttpOutput {
    /// Reads the options above; TLS files are read now, so a missing CA is a configuration
    /// error.
    pub fn from_section(s: &mut Section) -> Result<HttpOutput, ConfigError> {
        let (sender, config) = HttpConfig::from_section(s)?;
        Ok(HttpOutput { sender, config })
    }

    /// The request body for a batch.
    pub fn render(format: BodyFormat, batch: &[QueueItem]) -> Vec<u8> {
        let size: usize = batch.iter().map(|i| i.data.len() + 1).sum();
        let mut out = Vec::with_capacity(size + 2);
        match format {
            BodyFormat::JsonLines => {
                for item in batch {
                    out.extend_from_slice(&single_line(&item.data));
                    out.push(b'\n');
                }
            }
            BodyFormat::Json => {
                out.push(b'[');
                for (i, item) in batch.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(&item.data);
                }
                out.push(b']');
            }
        }
        out
    }
}

#[async_trait::async_trait]
impl Output for HttpOutput {
    async fn open(&mut self, _committed: Option<String>) -> Result<(), DeliveryError> {
        Ok(())
    }

    async fn deliver(&mut self, batch: &[QueueItem]) -> Result<Option<String>, DeliveryError> {
        let body = Self::render(self.config.format, batch);
        let answer = self
            .sender
            .post(
                &self.config.path,
                self.config.format.content_type(),
                body,
                ANSWER_LIMIT,
            )
            .await?;
        if answer.status.is_success() {
            Ok(None)
        } else {
            Err(answer_error(&answer))
        }
    }
}
