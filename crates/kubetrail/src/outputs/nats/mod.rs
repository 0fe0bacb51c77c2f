//! The `nats` output: every record is published to NATS JetStream, once.
//!
//! Each record is one message, its body the encoded record, its subject made from the
//! `subject` template (see [`subject`]: default `kubetrail.{kind}.{namespace|object_ref.namespace}`,
//! e.g. `kubetrail.k8s_event.default`), with the record id as its `Nats-Msg-Id` header.
//! A batch is published with up to `max_in_flight` messages unacknowledged at a time, and
//! is delivered only once JetStream acknowledged every message (stored, or recognised as a
//! duplicate). A missing acknowledgement after `ack_timeout`, a refusal or a lost connection
//! makes the batch retried; publishing again is harmless because JetStream drops a message
//! whose `Nats-Msg-Id` it stored within the stream's `duplicate_window`.
//!
//! So exactly once holds as long as a batch is published again within the duplicate window
//! of its first attempt: keep the output's `retry_max_backoff` (default 60s) well under
//! `duplicate_window` (default 2m). A batch retried after a longer outage is published again
//! whole, and messages of it that reached the stream before the outage would be stored
//! twice; raise `duplicate_window` if outages longer than that must not repeat anything
//! (JetStream keeps the ids of the window in memory).
//!
//! The stream (`stream`, default `KUBETRAIL`) is looked up at each connection and created if
//! missing (`stream_create`, default on) with `stream_subjects` (default: the template with
//! each placeholder token as `*`, e.g. `kubetrail.*.*`), `duplicate_window`, `stream_storage`
//! (`file`), `stream_replicas` (1), `stream_max_age` (unlimited) and `stream_max_bytes`
//! (unlimited). Messages carry `Nats-Expected-Stream`, so a subject taken by another stream
//! is refused instead of landing there. `stream: ""` publishes without any of this.
//!
//! A record larger than the server's `max_payload` cannot be published: the rest of its batch
//! is, then the batch is refused and goes to the dead-letter file (with the reason naming the
//! records too large; the others are in the stream as well).
//!
//! Options: `url` (default `nats://127.0.0.1:4222`; `tls://` turns TLS on; several separated
//! by commas are tried in turn; `user:password@` or `token@` may be in it) or `host`/`port`,
//! `user` + `password`/`password_file`, or `token`/`token_file` (files read at each
//! connection), `subject`, the stream options above, `ack_timeout` (10s), `connect_timeout`
//! (10s), `max_in_flight` (1024), `tls` (off) with `tls.ca_file`, `tls.ca_path`, `tls.verify`,
//! `tls.vhost`, `tls.crt_file` + `tls.key_file`. NKey and credentials-file authentication are
//! not supported.

pub mod client;
mod config;
mod proto;
pub mod subject;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use kubetrail_core::config::{ConfigError, Section};
use kubetrail_state::QueueItem;
use serde::Deserialize;

pub use client::NatsError;
use client::{ApiError, Auth, Connection, Outgoing, Tls};
pub use config::{DEFAULT_SUBJECT, NatsConfig, StreamOptions};

use crate::pipeline::{DeliveryError, Output};

impl From<NatsError> for DeliveryError {
    fn from(e: NatsError) -> Self {
        DeliveryError::Retryable { message: e.to_string(), retry_after: None }
    }
}

/// The `nats` output.
pub struct NatsOutput {
    config: NatsConfig,
    tls: Option<Tls>,
    conn: Option<Connection>,
    /// The endpoint to try first (the last one that worked).
    preferred: usize,
}

#[derive(Deserialize)]
struct StreamInfo {
    #[serde(default)]
    error: Option<ApiError>,
    #[serde(default)]
    config: Option<StreamConfig>,
}

#[derive(Deserialize)]
struct StreamConfig {
    #[serde(default)]
    subjects: Vec<String>,
    #[serde(default)]
    duplicate_window: u64,
}

/// Whether a stream subject (with `*` and `>` wildcards) takes every subject `ours` matches.
fn covers(stream: &str, ours: &str) -> bool {
    let mut s = stream.split('.');
    let mut o = ours.split('.');
    loop {
        match (s.next(), o.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(t)) if t != ">" => {}
            (Some(a), Some(b)) if a == b && a != "*" && a != ">" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

impl NatsOutput {
    pub fn from_section(s: &mut Section) -> Result<NatsOutput, ConfigError> {
        Ok(NatsOutput::new(NatsConfig::from_section(s)?))
    }

    pub fn new(config: NatsConfig) -> NatsOutput {
        NatsOutput { config, tls: None, conn: None, preferred: 0 }
    }

    fn auth(&self, ep: &client::Endpoint) -> Result<Auth, NatsError> {
        let read = |what: &'static str, path: &std::path::Path| {
            std::fs::read_to_string(path)
                .map(|t| t.trim_end_matches(['\r', '\n']).to_string())
                .map_err(|source| NatsError::SecretFile { what, path: path.to_path_buf(), source })
        };
        let c = &self.config;
        let password = match &c.password_file {
            Some(p) => Some(read("password_file", p)?),
            None => c.password.clone(),
        };
        let token = match &c.token_file {
            Some(p) => Some(read("token_file", p)?),
            None => c.token.clone(),
        };
        Ok(Auth {
            user: c.user.clone().or_else(|| ep.user.clone()),
            password: password.or_else(|| ep.password.clone()),
            token: token.or_else(|| ep.token.clone()),
        })
    }

    fn tls(&mut self) -> Result<Option<Tls>, NatsError> {
        let Some(opts) = &self.config.tls else { return Ok(None) };
        if self.tls.is_none() {
            let mut settings = kubetrail_net::TlsClientSettings::from_options(opts);
            settings.use_webpki_roots = true;
            let mut cfg = (*settings.build().map_err(NatsError::TlsConfig)?).clone();
            cfg.alpn_protocols.clear();
            self.tls = Some(Tls { config: Arc::new(cfg), vhost: opts.vhost.clone() });
        }
        Ok(self.tls.clone())
    }

    /// Connects to the first endpoint that answers, starting with the last good one.
    async fn connect(&mut self) -> Result<Connection, NatsError> {
        let tls = self.tls()?;
        let n = self.config.endpoints.len();
        let mut last = None;
        for k in 0..n {
            let i = (self.preferred + k) % n;
            let ep = self.config.endpoints[i].clone();
            let auth = self.auth(&ep)?;
            match Connection::connect(&ep, &auth, tls.as_ref(), self.config.connect_timeout).await {
                Ok(mut conn) => {
                    self.preferred = i;
                    tracing::info!(server = %conn.addr(), version = %conn.info.version, tls = tls.is_some(),
                        max_payload = conn.info.max_payload, "connected to NATS");
                    if let Err(e) = self.ensure_stream(&mut conn).await {
                        last = Some(e);
                        continue;
                    }
                    return Ok(conn);
                }
                Err(e) => {
                    tracing::warn!(server = ?ep, error = %e, "cannot connect to NATS");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(NatsError::Closed))
    }

    /// Looks the stream up and creates it if missing (and allowed).
    async fn ensure_stream(&self, conn: &mut Connection) -> Result<(), NatsError> {
        let Some(st) = &self.config.stream else { return Ok(()) };
        let timeout = self.config.ack_timeout;
        let reply = conn.request(&format!("$JS.API.STREAM.INFO.{}", st.name), b"", timeout).await?;
        if reply.status == Some(503) {
            return Err(NatsError::JetStream("JetStream is not enabled on the server (no responders for $JS.API)".into()));
        }
        let info: StreamInfo = serde_json::from_slice(&reply.payload)
            .map_err(|e| NatsError::JetStream(format!("unreadable stream info: {e}")))?;
        let filter = self.config.subject.filter();
        match (info.error, info.config) {
            (None, Some(cfg)) => {
                if !cfg.subjects.iter().any(|s| covers(s, &filter)) {
                    tracing::warn!(stream = %st.name, subjects = ?cfg.subjects, template = %filter,
                        "the stream's subjects do not cover every subject the template makes; such messages will be refused");
                }
                let window = Duration::from_nanos(cfg.duplicate_window);
                tracing::info!(stream = %st.name, duplicate_window = ?window, "JetStream stream found");
                Ok(())
            }
            (Some(e), _) if e.code == 404 && st.create => self.create_stream(conn, st).await,
            (Some(e), _) => Err(NatsError::JetStream(format!("stream {}: {e}", st.name))),
            (None, None) => Err(NatsError::JetStream("stream info without its configuration".into())),
        }
    }

    async fn create_stream(&self, conn: &mut Connection, st: &StreamOptions) -> Result<(), NatsError> {
        let body = serde_json::json!({
            "name": st.name,
            "subjects": st.subjects,
            "retention": "limits",
            "storage": st.storage,
            "num_replicas": st.replicas,
            "duplicate_window": u64::try_from(st.duplicate_window.as_nanos()).unwrap_or(u64::MAX),
            "discard": "old",
            "max_msgs": -1,
            "max_bytes": st.max_bytes.map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX)),
            "max_age": u64::try_from(st.max_age.as_nanos()).unwrap_or(u64::MAX),
            "max_msg_size": -1,
            "max_consumers": -1,
        });
        let reply = conn
            .request(&format!("$JS.API.STREAM.CREATE.{}", st.name), body.to_string().as_bytes(), self.config.ack_timeout)
            .await?;
        let info: StreamInfo = serde_json::from_slice(&reply.payload)
            .map_err(|e| NatsError::JetStream(format!("unreadable answer to creating the stream: {e}")))?;
        match info.error {
            None => {
                tracing::info!(stream = %st.name, subjects = ?st.subjects, duplicate_window = ?st.duplicate_window, "created JetStream stream");
                Ok(())
            }
            // Another replica made it first.
            Some(e) if e.err_code == Some(10058) => Ok(()),
            Some(e) => Err(NatsError::JetStream(format!("creating stream {}: {e}", st.name))),
        }
    }

    async fn publish(&mut self, batch: &[QueueItem]) -> Result<Vec<String>, DeliveryError> {
        if let Some(c) = self.conn.as_mut()
            && let Err(e) = c.drain_pending().await
        {
            tracing::info!(error = %e, "NATS connection lost while idle; reconnecting");
            self.conn = None;
        }
        if self.conn.is_none() {
            self.conn = Some(self.connect().await?);
        }
        let Some(conn) = self.conn.as_mut() else { unreachable!("connected above") };
        let stream = self.config.stream.as_ref().map(|s| s.name.as_str());
        let max = conn.info.max_payload;
        let mut msgs = Vec::with_capacity(batch.len());
        let mut too_big = Vec::new();
        for item in batch {
            let id = proto::header_value(&item.id);
            let id = if id.is_empty() { Cow::Borrowed("_") } else { id };
            let mut headers = vec![("Nats-Msg-Id", id.as_ref())];
            if let Some(s) = stream {
                headers.push(("Nats-Expected-Stream", s));
            }
            if max > 0 && proto::hpub_size(&headers, item.data.len()) > max {
                too_big.push(item.id.clone());
                continue;
            }
            msgs.push(Outgoing { subject: self.config.subject.render(&item.data), id, payload: &item.data });
        }
        let outcome = match conn.publish_batch(&msgs, stream, self.config.max_in_flight, self.config.ack_timeout).await {
            Ok(o) => o,
            Err(e) => {
                // Whatever was in flight is unknown: the connection is dropped and the batch
                // published again (the duplicate window makes that harmless).
                self.conn = None;
                return Err(e.into());
            }
        };
        if outcome.duplicates > 0 {
            tracing::debug!(records = msgs.len(), duplicates = outcome.duplicates, "JetStream already had some messages of the batch");
        }
        if let Some((i, reason)) = outcome.failed.first() {
            return Err(DeliveryError::Retryable {
                message: format!(
                    "{} of {} messages not stored, e.g. {} on subject {}: {reason}",
                    outcome.failed.len(),
                    msgs.len(),
                    msgs[*i].id,
                    msgs[*i].subject
                ),
                retry_after: None,
            });
        }
        Ok(too_big)
    }
}

#[async_trait::async_trait]
impl Output for NatsOutput {
    async fn open(&mut self, _committed: Option<String>) -> Result<(), DeliveryError> {
        // Connecting waits for the first batch, so a server that is down goes through the
        // same retries as any failed delivery.
        Ok(())
    }

    async fn deliver(&mut self, batch: &[QueueItem]) -> Result<Option<String>, DeliveryError> {
        if batch.is_empty() {
            return Ok(None);
        }
        let too_big = self.publish(batch).await?;
        if !too_big.is_empty() {
            let max = self.conn.as_ref().map_or(0, |c| c.info.max_payload);
            return Err(DeliveryError::Rejected {
                message: format!(
                    "{} record(s) larger than the server's max_payload of {max} bytes cannot be published: {}; the other {} records of this batch were published",
                    too_big.len(),
                    too_big.iter().take(10).cloned().collect::<Vec<_>>().join(", "),
                    batch.len() - too_big.len()
                ),
            });
        }
        Ok(None)
    }

    async fn close(&mut self) -> Result<(), DeliveryError> {
        self.conn = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_subjects_cover_template_filters() {
        assert!(covers("kubetrail.*.*", "kubetrail.*.*"));
        assert!(covers("kubetrail.>", "kubetrail.*.*"));
        assert!(covers(">", "a"));
        assert!(!covers("kubetrail.k8s_event.*", "kubetrail.*.*"));
        assert!(!covers("kubetrail.*", "kubetrail.*.*"));
        assert!(!covers("kubetrail.*.*.*", "kubetrail.*.*"));
        assert!(covers("a.*.c", "a.b.c"));
    }
}
