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
//! The protocol is the NATS maintainers' client, `async-nats`, over kubetrail's rustls (ring)
//! configuration. Its own reconnection is cut short (a few immediate attempts): a connection
//! that failed is dropped and the output runner's backoff, with jitter, decides when to
//! connect again, to each address of `url` in turn starting with the last good one.
//!
//! Options: `url` (default `nats://127.0.0.1:4222`; `tls://` turns TLS on; several separated
//! by commas are tried in turn; `user:password@` or `token@` may be in it) or `host`/`port`;
//! authentication (see [`auth`]): `user` + `password`/`password_file`, `token`/`token_file`,
//! `nkey_seed`/`nkey_seed_file`, or `credentials_file`; `subject`, the stream options above,
//! `ack_timeout` (10s), `connect_timeout` (10s), `max_in_flight` (1024), `verify_limit`
//! (20000), `tls` (off) with `tls.ca_file`, `tls.ca_path`, `tls.verify`, `tls.vhost` (the
//! name the server's certificate is verified against), `tls.crt_file` + `tls.key_file`.

mod auth;
mod config;
mod endpoint;
mod publish;
pub mod subject;

use std::collections::HashSet;
use std::io;
use std::path::PathBuf;

use async_nats::jetstream::context::CreateStreamErrorKind;
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::stream::{
    Config as JsStreamConfig, DiscardPolicy, RetentionPolicy, StorageType,
};
use async_nats::jetstream::{self, ErrorCode};
use async_nats::{ConnectErrorKind, ConnectOptions, Event};
use kubetrail_core::config::{ConfigError, Section};
use kubetrail_state::QueueItem;

pub use auth::{AuthMethod, Secret};
pub use config::{DEFAULT_SUBJECT, NatsConfig, StreamOptions};
pub use endpoint::Endpoint;
use publish::Outgoing;

use crate::outputs::dead_letter::DeadLetterWriter;
use crate::pipeline::{DeliveryError, Output};

/// What failed in talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("connecting to {server}: {source}{hint}")]
    Connect {
        server: String,
        #[source]
        source: async_nats::ConnectError,
        /// What to do about it, when the error says (e.g. TLS the configuration lacks).
        hint: &'static str,
    },
    #[error("TLS settings: {0}")]
    TlsConfig(#[source] kubetrail_net::NetError),
    #[error("reading {what} {path}: {source}")]
    SecretFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{origin}: {message}")]
    Credentials { origin: String, message: String },
    #[error("the connection to the NATS server was lost")]
    ConnectionLost,
    #[error("{what} timed out")]
    Timeout { what: &'static str },
    #[error("publishing: {0}")]
    Publish(String),
    #[error("JetStream: {0}")]
    JetStream(String),
}

impl From<NatsError> for DeliveryError {
    fn from(e: NatsError) -> Self {
        DeliveryError::Retryable {
            message: e.to_string(),
            retry_after: None,
        }
    }
}

/// An open connection and its JetStream context.
struct Connection {
    client: async_nats::Client,
    js: jetstream::Context,
    addr: String,
}

/// The `nats` output.
pub struct NatsOutput {
    config: NatsConfig,
    tls: Option<rustls::ClientConfig>,
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

/// Reconnection attempts the client makes on its own after a connection broke, before it
/// gives up and the output connects again through the runner's backoff.
const CLIENT_RECONNECTS: usize = 3;

/// Logs what the client reports about its connection.
async fn log_event(event: Event) {
    match event {
        Event::Connected => tracing::debug!("NATS connection (re)established"),
        Event::Disconnected => tracing::info!("NATS connection lost"),
        Event::LameDuckMode => {
            tracing::info!("the NATS server is shutting down (lame duck mode)")
        }
        Event::SlowConsumer(sid) => tracing::warn!(sid, "NATS slow consumer"),
        Event::ServerError(e) => tracing::warn!(error = %e, "the NATS server reported an error"),
        Event::ClientError(e) => tracing::warn!(error = %e, "NATS client error"),
        Event::Draining | Event::Closed => {}
    }
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

    fn tls_settings(&self) -> Option<kubetrail_net::TlsClientSettings> {
        self.config.tls.as_ref().map(|opts| {
            let mut settings = kubetrail_net::TlsClientSettings::from_options(opts);
            settings.use_webpki_roots = true;
            settings
        })
    }

    /// The rustls configuration, built once: the client connects by the URL's host, so a
    /// `tls.vhost` is the name the certificate is verified against.
    fn tls(&mut self) -> Result<Option<rustls::ClientConfig>, NatsError> {
        let Some(settings) = self.tls_settings() else {
            return Ok(None);
        };
        if self.tls.is_none() {
            let mut cfg = (*settings
                .build_verifying_vhost()
                .map_err(NatsError::TlsConfig)?)
            .clone();
            // NATS negotiates no application protocol.
            cfg.alpn_protocols.clear();
            self.tls = Some(cfg);
        }
        Ok(self.tls.clone())
    }

    fn options(&mut self, ep: &Endpoint) -> Result<ConnectOptions, NatsError> {
        let c = &self.config;
        let mut opts = ConnectOptions::new()
            .name("kubetrail")
            .connection_timeout(c.connect_timeout)
            .request_timeout(Some(c.ack_timeout))
            .max_reconnects(CLIENT_RECONNECTS)
            .event_callback(log_event);
        opts = c.auth.apply(opts, ep)?;
        if let Some(tls) = self.tls()? {
            opts = opts.tls_client_config(tls).require_tls(true);
        }
        Ok(opts)
    }

    /// Connects to the first endpoint that answers, starting with the last good one.
    async fn connect(&mut self) -> Result<Connection, NatsError> {
        let n = self.config.endpoints.len();
        let mut last = None;
        for k in 0..n {
            let i = (self.preferred + k) % n;
            let ep = self.config.endpoints[i].clone();
            let opts = self.options(&ep)?;
            let client = match opts.connect(ep.server_url()).await {
                Ok(client) => client,
                Err(source) => {
                    let hint = match source.kind() {
                        ConnectErrorKind::Tls | ConnectErrorKind::Io
                            if self.config.tls.is_none()
                                && source.to_string().contains("certificate") =>
                        {
                            " (the server requires TLS: set `tls: on` and `tls.ca_file`)"
                        }
                        ConnectErrorKind::AuthorizationViolation => {
                            " (the server refused the credentials)"
                        }
                        _ => "",
                    };
                    let e = NatsError::Connect {
                        server: ep.addr(),
                        source,
                        hint,
                    };
                    tracing::warn!(server = ?ep, error = %e, "cannot connect to NATS");
                    last = Some(e);
                    continue;
                }
            };
            let info = client.server_info();
            tracing::info!(server = %ep.addr(), version = %info.version, tls = self.config.tls.is_some(),
                max_payload = info.max_payload, "connected to NATS");
            let window = self.config.max_in_flight;
            let js = jetstream::ContextBuilder::new()
                .timeout(self.config.ack_timeout)
                .max_ack_inflight(window)
                .backpressure_on_inflight(true)
                .build(client.clone());
            let conn = Connection {
                client,
                js,
                addr: ep.addr(),
            };
            if let Err(e) = self.ensure_stream(&conn.js).await {
                tracing::warn!(server = %conn.addr, error = %e, "JetStream stream unusable");
                last = Some(e);
                continue;
            }
            self.preferred = i;
            return Ok(conn);
        }
        Err(last.unwrap_or(NatsError::ConnectionLost))
    }

    /// Looks the stream up and creates it if missing (and allowed).
    async fn ensure_stream(&self, js: &jetstream::Context) -> Result<(), NatsError> {
        let Some(st) = &self.config.stream else {
            return Ok(());
        };
        let filter = self.config.subject.filter();
        match js.get_stream(&st.name).await {
            Ok(stream) => {
                let cfg = &stream.cached_info().config;
                if !cfg.subjects.iter().any(|s| covers(s, &filter)) {
                    tracing::warn!(stream = %st.name, subjects = ?cfg.subjects, template = %filter,
                        "the stream's subjects do not cover every subject the template makes; such messages will be refused");
                }
                tracing::info!(stream = %st.name, duplicate_window = ?cfg.duplicate_window, "JetStream stream found");
                Ok(())
            }
            Err(e) => match e.kind() {
                GetStreamErrorKind::JetStream(j)
                    if j.error_code() == ErrorCode::STREAM_NOT_FOUND && st.create =>
                {
                    self.create_stream(js, st).await
                }
                GetStreamErrorKind::Request if e.to_string().contains("no responders") => {
                    Err(NatsError::JetStream(
                        "JetStream is not enabled on the server (no responders for $JS.API)".into(),
                    ))
                }
                _ => Err(NatsError::JetStream(format!("stream {}: {e}", st.name))),
            },
        }
    }

    async fn create_stream(
        &self,
        js: &jetstream::Context,
        st: &StreamOptions,
    ) -> Result<(), NatsError> {
        let config = JsStreamConfig {
            name: st.name.clone(),
            subjects: st.subjects.clone(),
            retention: RetentionPolicy::Limits,
            storage: if st.storage == "memory" {
                StorageType::Memory
            } else {
                StorageType::File
            },
            num_replicas: st.replicas as usize,
            duplicate_window: st.duplicate_window,
            discard: DiscardPolicy::Old,
            max_messages: -1,
            max_bytes: st
                .max_bytes
                .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX)),
            max_age: st.max_age,
            max_message_size: -1,
            max_consumers: -1,
            ..Default::default()
        };
        match js.create_stream(config).await {
            Ok(_) => {
                tracing::info!(stream = %st.name, subjects = ?st.subjects, duplicate_window = ?st.duplicate_window, "created JetStream stream");
                Ok(())
            }
            Err(e) => match e.kind() {
                // Another replica made it first.
                CreateStreamErrorKind::JetStream(j)
                    if j.error_code() == ErrorCode::STREAM_NAME_EXIST =>
                {
                    Ok(())
                }
                _ => Err(NatsError::JetStream(format!(
                    "creating stream {}: {e}",
                    st.name
                ))),
            },
        }
    }

    /// Publishes the batch; the ids of records over `max_payload` come back (not published).
    async fn publish(&mut self, batch: &[QueueItem]) -> Result<Vec<String>, DeliveryError> {
        if let Some(c) = &self.conn
            && c.client.connection_state() != async_nats::connection::State::Connected
        {
            tracing::info!(server = %c.addr, "NATS connection lost while idle; reconnecting");
            self.conn = None;
        }
        if self.conn.is_none() {
            self.conn = Some(self.connect().await?);
        }
        let Some(conn) = self.conn.as_ref() else {
            unreachable!("connected above")
        };
        let stream = self.config.stream.as_ref().map(|s| s.name.as_str());
        let already = match (self.suspect, self.committed_seq, stream) {
            (true, Some(from), Some(name)) => {
                match publish::stored_ids(&conn.js, name, from, self.config.verify_limit).await {
                    Ok(ids) => ids,
                    Err(e) => {
                        self.conn = None;
                        return Err(e.into());
                    }
                }
            }
            _ => HashSet::new(),
        };
        let mut msgs = Vec::with_capacity(batch.len());
        let mut sent = Vec::with_capacity(batch.len());
        for item in batch {
            let id = publish::header_value(&item.id);
            if already.contains(id.as_ref()) {
                continue;
            }
            sent.push(item);
            msgs.push(Outgoing {
                subject: self.config.subject.render(&item.data),
                id,
                payload: item.data.clone(),
            });
        }
        let skipped = batch.len() - msgs.len();
        let outcome = match publish::publish_batch(
            &conn.js,
            &msgs,
            stream,
            self.config.max_in_flight,
        )
        .await
        {
            Ok(o) => o,
            Err(e) => {
                // Whatever was in flight is unknown: the connection is dropped and the
                // batch published again (the duplicate window makes that harmless).
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
        Ok(outcome
            .too_big
            .iter()
            .map(|i| sent[*i].id.clone())
            .collect())
    }
}

#[async_trait::async_trait]
impl Output for NatsOutput {
    fn preflight(&self) -> Result<(), String> {
        if let Some(settings) = self.tls_settings() {
            settings
                .build_verifying_vhost()
                .map_err(|e| e.to_string())?;
        }
        self.config.auth.preflight().map_err(|e| e.to_string())
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
            let max = self
                .conn
                .as_ref()
                .map_or(0, |c| c.client.server_info().max_payload);
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
