//! The `opentelemetry` output: records as OpenTelemetry logs, sent with OTLP/HTTP in the binary
//! protobuf encoding (`POST /v1/logs`, `Content-Type: application/x-protobuf`) to a Collector
//! or any backend that takes OTLP (Loki, Elastic, vendors).
//!
//! # Mapping
//! - `time_unix_nano` is the record's `time` (an Event's last occurrence, an audit event's
//!   stage timestamp); `observed_time_unix_nano` is when the batch was sent.
//! - Severity: an Event's `type` (Normal → INFO 9, Warning → WARN 13; Error / Critical →
//!   ERROR / FATAL) with the type as `severity_text`; an audit event's response code (≥ 500 →
//!   ERROR 17, ≥ 400 → WARN 13, else INFO 9); `gap` → WARN; `error` → ERROR.
//! - Body (`body_format`): `message` (default) is a short text — the Event's message, a
//!   one-line audit summary (`delete pods/web-0 in shop by alice → 200`), a gap's message, an
//!   error's reason — with the normalized fields as attributes, which is what log backends
//!   index and show. `record` is the whole kubetrail record (including the original object) as
//!   a JSON string, for keeping everything; the attributes are the same.
//! - Attributes: `log.record.uid` = the record id (the same on every retry, so a backend can
//!   drop repeats), `kubetrail.record.kind` / `.source` / `.tag`. Events use the names of the
//!   OpenTelemetry Kubernetes event conventions and of the Collector's Kubernetes events
//!   receiver: `k8s.event.name`, `.uid`, `.reason`, `.action`, `.count`, `.start_time`, plus
//!   `k8s.event.type`, `.resource_version`, `.last_time`, `.reporting_controller`,
//!   `.reporting_instance`; the involved object as `k8s.object.kind` / `.name` / `.uid` /
//!   `.api_version` / `.fieldpath`. Audit events: `k8s.audit.*` (id, stage, level, verb,
//!   object_ref.*, request_uri, decision, ...) and the general conventions where they fit:
//!   `user.name`, `user.id`, `client.address` (first source IP), `user_agent.original`,
//!   `http.response.status_code`. Fields added by filters keep their own names (nested
//!   objects flattened with dots).
//! - Resource: `service.name = kubetrail` (overridable), `k8s.cluster.name` (`cluster_name`),
//!   the `resource` map, and — with `object_resource: on`, the default — the identity of the
//!   object the record is about, with semantic-convention names: `k8s.namespace.name` and, for
//!   the kinds that have them, `k8s.pod.name` / `.uid`, `k8s.node.name`, `k8s.deployment.name`,
//!   `k8s.replicaset.*`, `k8s.statefulset.*`, `k8s.daemonset.*`, `k8s.job.*`, `k8s.cronjob.*`,
//!   `k8s.hpa.*`, ... plus `k8s.object.kind` / `.name` / `.uid`. Records are grouped into one
//!   `ResourceLogs` per object, each with one `ScopeLogs` (scope `kubetrail`, the kubetrail
//!   version). This is how the Collector's receiver shapes Events, and it lets backends that
//!   index resource attributes (Loki labels, entity views) find "everything about pod X".
//!   `object_resource: off` puts those attributes on the log records instead and sends a
//!   batch as one `ResourceLogs`.
//!
//! # Delivery
//! One request per batch. 2xx is success (a `partial_success` with rejected records is logged
//! as a warning: OTLP says such records must not be sent again). 408, 429, 502, 503, 504 and
//! other 5xx are retried, after `Retry-After` when the server sends one (capped at
//! [`MAX_RETRY_AFTER`]); 401 and 403 are retried too, because a credential problem is fixed
//! by the operator and the records should wait in the queue rather than go to the
//! dead-letter file; any other 4xx rejects the batch (dead-lettered). Connection, TLS and
//! timeout errors are retried. At least once: OTLP has no idempotent write, so a crash between
//! the server's answer and the acknowledgement sends that batch again (with the same
//! `log.record.uid`s).

mod config;
mod encode;
#[cfg(test)]
mod tests;

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Method, Request, StatusCode};
use kubetrail_core::Timestamp;
use kubetrail_core::config::{ConfigError, Section};
use kubetrail_net::{Full, HttpClient, HttpClientOptions, NetError};
use kubetrail_state::QueueItem;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use prost::Message;

pub use config::{Auth, OtlpOptions};
pub use encode::{
    BodyFormat, EncodeOptions, SCOPE_NAME, Severity, audit_severity, build_request, event_severity,
};

use crate::pipeline::{DeliveryError, Output};

/// The longest `Retry-After` honoured; a longer one is shortened to this, so a confused server
/// cannot park the output for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);
/// The most of a success response read (an `ExportLogsServiceResponse` is small).
const MAX_RESPONSE_BODY: usize = 1 << 20;
/// How much of an error response is kept for the message.
const MAX_ERROR_BODY: usize = 4096;

/// What went wrong while sending one batch.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("cannot read bearer_token_file {path}: {source}")]
    TokenFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bearer_token_file {path} is empty or holds a token that is not a valid header value")]
    TokenValue { path: std::path::PathBuf },
    #[error("compressing the request: {0}")]
    Gzip(#[source] std::io::Error),
    #[error("building the request: {0}")]
    Request(#[source] http::Error),
    #[error(transparent)]
    Net(#[from] NetError),
}

impl From<OtlpError> for DeliveryError {
    fn from(e: OtlpError) -> Self {
        // All of these may heal (a token file being rewritten, the network coming back).
        DeliveryError::Retryable {
            message: e.to_string(),
            retry_after: None,
        }
    }
}

/// The `opentelemetry` output.
pub struct OpenTelemetryOutput {
    options: OtlpOptions,
    client: HttpClient,
}

impl std::fmt::Debug for OpenTelemetryOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenTelemetryOutput")
            .field("options", &self.options)
            .finish()
    }
}

impl OpenTelemetryOutput {
    /// Options (defaults in brackets): `host` [127.0.0.1], `port` [4318], `logs_uri`
    /// [/v1/logs], `tls` [off] and `tls.verify` [on], `tls.ca_file`, `tls.ca_path`,
    /// `tls.crt_file`, `tls.key_file`, `tls.vhost`, `tls.debug` (without a CA the public
    /// webpki roots are trusted), `header` (list of `Name value`), `headers` (map),
    /// `http_user` / `http_passwd`, `bearer_token`, `bearer_token_file` (re-read per request),
    /// `compress` [none; `gzip`], `timeout` [30s], `body_format` [message; `record`],
    /// `object_resource` [on], `cluster_name`, `resource` (map of extra resource attributes).
    pub fn from_section(s: &mut Section) -> Result<OpenTelemetryOutput, ConfigError> {
        let options = OtlpOptions::from_section(s)?;
        let client = HttpClient::with_options(
            &options.base_url,
            &options.tls,
            HttpClientOptions {
                response_timeout: Some(options.timeout),
                ..HttpClientOptions::default()
            },
        )
        .map_err(|e| {
            let key = match &e {
                NetError::InvalidUrl { .. } => "host",
                _ => "tls",
            };
            s.error(key, e.to_string())
        })?;
        Ok(OpenTelemetryOutput { options, client })
    }

    /// The options in use.
    pub fn options(&self) -> &OtlpOptions {
        &self.options
    }

    /// The URL requests go to.
    pub fn url(&self) -> String {
        self.client.url_for(&self.options.logs_uri)
    }

    async fn request(&self, body: Vec<u8>) -> Result<Request<Full<Bytes>>, OtlpError> {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.options.logs_uri.as_str())
            .header(CONTENT_TYPE, "application/x-protobuf");
        if self.options.gzip {
            req = req.header(CONTENT_ENCODING, "gzip");
        }
        for (name, value) in &self.options.headers {
            req = req.header(name, value);
        }
        match &self.options.auth {
            Auth::None => {}
            Auth::Basic(v) | Auth::Bearer(v) => req = req.header(AUTHORIZATION, v),
            Auth::BearerFile(path) => {
                let token = tokio::fs::read_to_string(path).await.map_err(|source| {
                    OtlpError::TokenFile {
                        path: path.clone(),
                        source,
                    }
                })?;
                let token = token.trim();
                if token.is_empty() {
                    // Caught here rather than as a 401: the file is being rewritten, or wrong.
                    return Err(OtlpError::TokenValue { path: path.clone() });
                }
                let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| OtlpError::TokenValue { path: path.clone() })?;
                v.set_sensitive(true);
                req = req.header(AUTHORIZATION, v);
            }
        }
        req.body(Full::new(Bytes::from(body)))
            .map_err(OtlpError::Request)
    }

    /// Encodes, sends and judges one batch.
    async fn send(&self, batch: &[QueueItem]) -> Result<(), DeliveryError> {
        let request = build_request(batch, &self.options.encode, Timestamp::now());
        let mut body = request.encode_to_vec();
        let raw_len = body.len();
        if self.options.gzip {
            body = gzip(&body).map_err(OtlpError::Gzip)?;
        }
        let url = self.url();
        tracing::debug!(url = %url, records = batch.len(), bytes = raw_len, sent_bytes = body.len(), "sending OTLP logs");
        let req = self.request(body).await?;
        let resp = self.client.send(req).await.map_err(OtlpError::from)?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let protobuf = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|ct| ct.starts_with("application/x-protobuf"));
        if status.is_success() {
            // Read to the end so the connection goes back to the pool.
            let bytes = resp.into_body().read_to_end(MAX_RESPONSE_BODY).await;
            if let Ok(bytes) = bytes
                && protobuf
            {
                log_partial_success(&url, &bytes);
            }
            return Ok(());
        }
        let detail = match resp.into_body().read_prefix(MAX_ERROR_BODY).await {
            Ok(b) => error_detail(&b, protobuf),
            Err(e) => format!("(body unreadable: {e})"),
        };
        Err(judge(status, retry_after, &url, &detail))
    }
}

/// What a non-2xx status means for the batch.
pub fn judge(
    status: StatusCode,
    retry_after: Option<Duration>,
    url: &str,
    detail: &str,
) -> DeliveryError {
    let message = if detail.is_empty() {
        format!("{url} answered {status}")
    } else {
        format!("{url} answered {status}: {detail}")
    };
    // 5xx (and the 1xx/3xx a misconfigured proxy may send) may pass; of the 4xx only these.
    let retryable = !status.is_client_error() || matches!(status.as_u16(), 408 | 429 | 401 | 403);
    if retryable {
        DeliveryError::Retryable {
            message,
            retry_after: retry_after.map(|d| d.min(MAX_RETRY_AFTER)),
        }
    } else {
        DeliveryError::Rejected { message }
    }
}

/// `Retry-After` as seconds or as an HTTP date (then relative to now; a past date is 0).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when =
        time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc2822).ok()?;
    let now = time::OffsetDateTime::now_utc();
    Some(Duration::try_from(when - now).unwrap_or(Duration::ZERO))
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4 + 64),
        flate2::Compression::default(),
    );
    enc.write_all(data)?;
    enc.finish()
}

fn log_partial_success(url: &str, bytes: &[u8]) {
    match ExportLogsServiceResponse::decode(bytes) {
        Ok(r) => {
            if let Some(p) = r
                .partial_success
                .filter(|p| p.rejected_log_records > 0 || !p.error_message.is_empty())
            {
                tracing::warn!(url, rejected = p.rejected_log_records, message = %p.error_message,
                    "the OTLP receiver accepted the batch but rejected some log records");
            }
        }
        Err(e) => {
            tracing::debug!(url, error = %e, "the OTLP success response is not an ExportLogsServiceResponse")
        }
    }
}

/// `google.rpc.Status`, the body of OTLP/HTTP error responses (only what is shown).
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// The message of an error body: a `google.rpc.Status`'s message, else the text.
fn error_detail(body: &[u8], protobuf: bool) -> String {
    if protobuf
        && let Ok(s) = RpcStatus::decode(body)
        && !s.message.is_empty()
    {
        return s.message;
    }
    let text = String::from_utf8_lossy(body);
    text.trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(512)
        .collect()
}

#[async_trait::async_trait]
impl Output for OpenTelemetryOutput {
    async fn open(&mut self, _committed: Option<String>) -> Result<(), DeliveryError> {
        Ok(())
    }

    async fn deliver(&mut self, batch: &[QueueItem]) -> Result<Option<String>, DeliveryError> {
        if batch.is_empty() {
            return Ok(None);
        }
        self.send(batch).await?;
        Ok(None)
    }
}
