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
//! Beyond that window, the output keeps the stream sequence of its last acknowledged message
//! as its committed state. After a failed attempt, and after a restart, it first reads the
//! stream's messages after that sequence (at most `verify_limit`, default 20,000) and leaves
//! out of the batch every record whose id is already there, so a batch published again even
//! hours later (a long outage, a crash) does not repeat what reached the stream. Only when more
//! messages than `verify_limit` were added since (other writers on the same stream) does it
//! rely on the duplicate window alone, and it says so in the log. JetStream keeps the ids of
//! the window in memory: `duplicate_window` (default 2m) need not be long.
//!
//! The stream (`stream`, default `KUBETRAIL`) is looked up at each connection and created if
//! missing (`stream_create`, default on) with `stream_subjects` (default: the template with
//! each placeholder token as `*`, e.g. `kubetrail.*.*`), `duplicate_window`, `stream_storage`
//! (`file`), `stream_replicas` (1), `stream_max_age` (unlimited) and `stream_max_bytes`
//! (unlimited). Messages carry `Nats-Expected-Stream`, so a subject taken by another stream
//! is refused instead of landing there. `stream: ""` publishes without any of this.
//!
//! A record larger than the server's `max_payload` cannot be published: it goes to the
//! output's dead-letter file with that reason and the rest of its batch is published.
//!
//! Options: `url` (default `nats://127.0.0.1:4222`; `tls://` turns TLS on; several separated
//! by commas are tried in turn; `user:password@` or `token@` may be in it) or `host`/`port`,
//! `user` + `password`/`password_file`, or `token`/`token_file` (files read at each
//! connection), `subject`, the stream options above, `ack_timeout` (10s), `connect_timeout`
//! (10s), `max_in_flight` (1024), `verify_limit` (20000), `tls` (off) with `tls.ca_file`, `tls.ca_path`, `tls.verify`,
//! `tls.vhost`, `tls.crt_file` + `tls.key_file`. NKey and credentials-file authentication are
//! not supported.

pub mod client;
mod config;
mod proto;
pub mod subject;

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use kubetrail_core::config::{ConfigError, Section};
use kubetrail_state::QueueItem;
use serde::Deserialize;

pub use client::NatsError;
use client::{ApiError, Auth, Connection, Outgoing, Tls};
pub use config::{DEFAULT_SUBJECT, NatsConfig, StreamOptions};

use crate::outputs::dead_letter::DeadLetterWriter;
use crate::pipeline::{DeliveryError, Output};

impl From<NatsError> for DeliveryError {
    fn from(e: NatsError) -> Self {
        DeliveryError::Retryable {
            message: e.to_string(),
            retry_after: None,
        }
    }
}

/// The `nats` output.
pub struct NatsOutput {
    config: NatsConfig,
    tls: Option<Tls>,
    conn: Option<Connection>,
    /// The endpoint to try first (the last one that worked).
    preferred: usize,
    /// The stream sequence of the last message acknowledged in a delivered batch.
    committed_seq: Option<u64>,
    /// Whether some of the next batch may already be in the stream (after a failed attempt
    /// or a restart): then the stream is read from `committed_seq` before publishing.
    suspect: bool,
    dead_letters: Option<DeadLetterWriter>,
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

#[derive(Deserialize)]
struct StreamState {
    #[serde(default)]
    state: Option<StreamCounts>,
    #[serde(default)]
    error: Option<ApiError>,
}

#[derive(Deserialize)]
struct StreamCounts {
    #[serde(default)]
    last_seq: u64,
}

#[derive(Deserialize)]
struct MsgGet {
    #[serde(default)]
    message: Option<StoredMsg>,
}

#[derive(Deserialize)]
struct StoredMsg {
    #[serde(default)]
    hdrs: Option<String>,
}

/// The `Nats-Msg-Id`s of the stream's messages after sequence `from`; empty (with a log line)
/// when there are more than `limit` of them.
async fn stored_ids(
    conn: &mut Connection,
    stream: &str,
    from: u64,
    limit: u64,
    timeout: Duration,
) -> Result<HashSet<String>, NatsError> {
    use base64::Engine;
    let reply = conn
        .request(&format!("$JS.API.STREAM.INFO.{stream}"), b"", timeout)
        .await?;
    let info: StreamState = serde_json::from_slice(&reply.payload)
        .map_err(|e| NatsError::JetStream(format!("unreadable stream info: {e}")))?;
    if let Some(e) = info.error {
        return Err(NatsError::JetStream(format!("stream {stream}: {e}")));
    }
    let last = info.state.map_or(0, |s| s.last_seq);
    let mut ids = HashSet::new();
    if last <= from {
        return Ok(ids);
    }
    if last - from > limit {
        tracing::warn!(
            stream,
            messages = last - from,
            verify_limit = limit,
            "too many messages since the last acknowledged one to check them; relying on the duplicate window"
        );
        return Ok(ids);
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    for seq in from + 1..=last {
        let body = format!(r#"{{"seq":{seq}}}"#);
        let reply = conn
            .request(
                &format!("$JS.API.STREAM.MSG.GET.{stream}"),
                body.as_bytes(),
                timeout,
            )
            .await?;
        // A message deleted since (or never there) answers with an error: nothing to skip.
        let Ok(MsgGet {
            message: Some(StoredMsg { hdrs: Some(h) }),
        }) = serde_json::from_slice::<MsgGet>(&reply.payload)
        else {
            continue;
        };
        let Ok(h) = b64.decode(h) else { continue };
        let text = String::from_utf8_lossy(&h);
        if let Some(id) = text.lines().find_map(|l| l.strip_prefix("Nats-Msg-Id:")) {
            ids.insert(id.trim().to_string());
        }
    }
    tracing::info!(
        stream,
        from,
        to = last,
        found = ids.len(),
        "read what the stream got since the last acknowledged message"
    );
    Ok(ids)
}

impl NatsOutput {
    pub fn from_section(s: &mut Section) -> Result<NatsOutput, ConfigError> {
        Ok(NatsOutput::new(NatsConfig::from_section(s)?))
    }

    pub fn new(config: NatsConfig) -> NatsOutput {
        NatsOutput {
            config,
            tls: None,
            conn: None,
            preferred: 0,
            committed_seq: None,
            suspect: false,
            dead_letters: None,
        }
    }

    fn auth(&self, ep: &client::Endpoint) -> Result<Auth, NatsError> {
        let read = |what: &'static str, path: &std::path::Path| {
            std::fs::read_to_string(path)
                .map(|t| t.trim_end_matches(['\r', '\n']).to_string())
                .map_err(|source| NatsError::SecretFile {
                    what,
                    path: path.to_path_buf(),
                    source,
                })
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
        let Some(opts) = &self.config.tls else {
            return Ok(None);
        };
        if self.tls.is_none() {
            let mut settings = kubetrail_net::TlsClientSettings::from_options(opts);
            settings.use_webpki_roots = true;
            let mut cfg = (*settings.build().map_err(NatsError::TlsConfig)?).clone();
            cfg.alpn_protocols.clear();
            self.tls = Some(Tls {
                config: Arc::new(cfg),
                vhost: opts.vhost.clone(),
            });
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
        let Some(st) = &self.config.stream else {
            return Ok(());
        };
        let timeout = self.config.ack_timeout;
        let reply = conn
            .request(&format!("$JS.API.STREAM.INFO.{}", st.name), b"", timeout)
            .await?;
        if reply.status == Some(503) {
            return Err(NatsError::JetStream(
                "JetStream is not enabled on the server (no responders for $JS.API)".into(),
            ));
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
            (None, None) => Err(NatsError::JetStream(
                "stream info without its configuration".into(),
            )),
        }
    }

    async fn create_stream(
        &self,
        conn: &mut Connection,
        st: &StreamOptions,
    ) -> Result<(), NatsError> {
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
            .request(
                &format!("$JS.API.STREAM.CREATE.{}", st.name),
                body.to_string().as_bytes(),
                self.config.ack_timeout,
            )
            .await?;
        let info: StreamInfo = serde_json::from_slice(&reply.payload).map_err(|e| {
            NatsError::JetStream(format!("unreadable answer to creating the stream: {e}"))
        })?;
        match info.error {
            None => {
                tracing::info!(stream = %st.name, subjects = ?st.subjects, duplicate_window = ?st.duplicate_window, "created JetStream stream");
                Ok(())
            }
            // Another replica made it first.
            Some(e) if e.err_code == Some(10058) => Ok(()),
            Some(e) => Err(NatsError::JetStream(format!(
                "creating stream {}: {e}",
                st.name
            ))),
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
        let already = match (
            self.suspect,
            self.committed_seq,
            self.config.stream.as_ref(),
        ) {
            (true, Some(from), Some(st)) => {
                let Some(conn) = self.conn.as_mut() else {
                    unreachable!("connected above")
                };
                let (limit, timeout) = (self.config.verify_limit, self.config.ack_timeout);
                match stored_ids(conn, &st.name, from, limit, timeout).await {
                    Ok(ids) => ids,
                    Err(e) => {
                        self.conn = None;
                        return Err(e.into());
                    }
                }
            }
            _ => HashSet::new(),
        };
        let Some(conn) = self.conn.as_mut() else {
            unreachable!("connected above")
        };
        let stream = self.config.stream.as_ref().map(|s| s.name.as_str());
        let max = conn.info.max_payload;
        let mut msgs = Vec::with_capacity(batch.len());
        let mut too_big = Vec::new();
        let mut skipped = 0usize;
        for item in batch {
            let id = proto::header_value(&item.id);
            let id = if id.is_empty() {
                Cow::Borrowed("_")
            } else {
                id
            };
            if already.contains(id.as_ref()) {
                skipped += 1;
                continue;
            }
            let mut headers = vec![("Nats-Msg-Id", id.as_ref())];
            if let Some(s) = stream {
                headers.push(("Nats-Expected-Stream", s));
            }
            if max > 0 && proto::hpub_size(&headers, item.data.len()) > max {
                too_big.push(item.id.clone());
                continue;
            }
            msgs.push(Outgoing {
                subject: self.config.subject.render(&item.data),
                id,
                payload: &item.data,
            });
        }
        let outcome = match conn
            .publish_batch(
                &msgs,
                stream,
                self.config.max_in_flight,
                self.config.ack_timeout,
            )
            .await
        {
            Ok(o) => o,
            Err(e) => {
                // Whatever was in flight is unknown: the connection is dropped and the batch
                // published again (the duplicate window makes that harmless).
                self.conn = None;
                return Err(e.into());
            }
        };
        if skipped > 0 {
            tracing::info!(
                records = batch.len(),
                already_stored = skipped,
                "left out records of a batch published again that the stream already has"
            );
        }
        if outcome.last_seq > 0 {
            // This batch's own highest sequence (not the highest ever): after a stream was
            // purged or made again, sequences start over and so must the checks.
            self.committed_seq = Some(outcome.last_seq);
        }
        if outcome.duplicates > 0 {
            tracing::debug!(
                records = msgs.len(),
                duplicates = outcome.duplicates,
                "JetStream already had some messages of the batch"
            );
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
    fn preflight(&self) -> Result<(), String> {
        if let Some(opts) = &self.config.tls {
            let mut settings = kubetrail_net::TlsClientSettings::from_options(opts);
            settings.use_webpki_roots = true;
            settings.build().map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn open(&mut self, committed: Option<String>) -> Result<(), DeliveryError> {
        // Connecting waits for the first batch, so a server that is down goes through the
        // same retries as any failed delivery.
        self.committed_seq = committed.and_then(|c| c.trim().parse().ok());
        // A crash may have left part of the first batch in the stream.
        self.suspect = self.committed_seq.is_some();
        Ok(())
    }

    async fn deliver(&mut self, batch: &[QueueItem]) -> Result<Option<String>, DeliveryError> {
        if batch.is_empty() {
            return Ok(self.committed_seq.map(|s| s.to_string()));
        }
        let too_big = match self.publish(batch).await {
            Ok(t) => t,
            Err(e) => {
                self.suspect = true;
                return Err(e);
            }
        };
        self.suspect = false;
        if !too_big.is_empty() {
            let max = self.conn.as_ref().map_or(0, |c| c.info.max_payload);
            if let Some(w) = &self.dead_letters {
                let reason = format!("larger than the NATS server's max_payload of {max} bytes");
                let items: Vec<(&QueueItem, &str)> = batch
                    .iter()
                    .filter(|i| too_big.contains(&i.id))
                    .map(|i| (i, reason.as_str()))
                    .collect();
                w.write(&items).map_err(|e| DeliveryError::Retryable {
                    message: format!("writing refused records to the dead-letter file: {e}"),
                    retry_after: None,
                })?;
                return Ok(self.committed_seq.map(|s| s.to_string()));
            }
            return Err(DeliveryError::Rejected {
                message: format!(
                    "{} record(s) larger than the server's max_payload of {max} bytes cannot be published: {}; the other {} records of this batch were published",
                    too_big.len(),
                    too_big
                        .iter()
                        .take(10)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", "),
                    batch.len() - too_big.len()
                ),
            });
        }
        Ok(self.committed_seq.map(|s| s.to_string()))
    }

    fn attach_dead_letters(&mut self, writer: DeadLetterWriter) {
        self.dead_letters = Some(writer);
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
