//! One webhook request, from headers to answer. The order of the checks is the point:
//! credentials first (nothing of the body is read for a caller we do not know), then path,
//! method, content type and declared size, then the body (bounded while reading, and again
//! while decompressing), then parsing, and the answer 200 only once the records are committed
//! (durable). A pipeline that cannot take them now gets 503, which makes the apiserver retry
//! the same batch later; the dedup key `auditID/stage` makes that retry harmless.
//!
//! A body over `max_body_size` is answered 413 in a way the client can read: at once when it
//! asked `Expect: 100-continue` (it then never sends the body); otherwise after reading and
//! throwing away the rest of the body, up to [`DISCARD_LIMIT`] past the limit, since a server
//! that closes while the client is still sending makes the client's TCP stack drop the answer
//! with a connection reset. Only a body larger than that bound is cut off.

use std::convert::Infallible;
use std::fmt::Display;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    ALLOW, AUTHORIZATION, CONNECTION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, EXPECT,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use kubetrail_core::Record;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::auth::Authenticator;
use super::config::WebhookOptions;
use crate::pipeline::{PipelineError, SourceContext, Submission, SubmitOutcome};
use crate::sources::audit;
use crate::telemetry::{ComponentMetrics, Metrics};

/// The limit for receiving a whole body once the headers are in. The apiserver gives up after
/// 30 s itself.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// How many bytes past `max_body_size` a refused body may run on and still be read (and
/// thrown away, no memory kept) so that its sender gets the 413: the apiserver's largest
/// batches are tens of MiB. A larger body is cut off (the client then sees a reset).
const DISCARD_LIMIT: u64 = 64 << 20;
/// How many requests are read, parsed and committed at once; others wait for a slot. Bounds
/// memory to about this many times `max_body_size` (times ~3: body, items, records).
pub(crate) const MAX_INFLIGHT_REQUESTS: usize = 8;

/// How many request bodies are decoded and parsed at once: as many as the process has CPUs
/// (`available_parallelism`, which follows CPU affinity and cgroup quotas), at least one and
/// at most [`MAX_INFLIGHT_REQUESTS`]. Eight bodies parsed together on two cores each took four
/// times as long as one alone, and every request's answer waited for that; taken in turn,
/// the first are answered sooner and the apiserver's connections send again sooner.
/// bench/audit-webhook.sh, 6 interleaved pairs, 8 at once vs 2: 215.8-261.6k (mean 243.0k)
/// vs 249.4-267.0k (mean 256.2k) events/s, kubetrail CPU per 1M events 5.56-6.95 vs
/// 5.57-6.08 s; one at a time was slower (233.7-246.0k), three like two (251.7-273.7k).
pub(crate) fn parse_parallelism() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_INFLIGHT_REQUESTS)
}
/// What a 503 tells the client (the apiserver uses its own backoff; other clients may not).
const RETRY_AFTER_SECONDS: &str = "5";

/// Where accepted records go: the pipeline in production (through
/// [`SourceContext::try_submit`]: a full queue is answered 503 at once, so the apiserver
/// retries, rather than holding the request open), a fake in tests. `commit` returns only once
/// the records are durable, or says why not.
#[async_trait::async_trait]
pub trait Commit: Send + Sync {
    async fn commit(&self, submission: Submission) -> Result<SubmitOutcome, PipelineError>;
    /// Does the CPU part of a later `commit` now (filters, encoding), on a blocking thread.
    fn prepare(&self, submission: Submission) -> Submission {
        submission
    }
}

#[async_trait::async_trait]
impl Commit for SourceContext {
    async fn commit(&self, submission: Submission) -> Result<SubmitOutcome, PipelineError> {
        self.try_submit(submission).await
    }

    fn prepare(&self, submission: Submission) -> Submission {
        SourceContext::prepare(self, submission)
    }
}

/// What every request of one webhook shares.
pub(crate) struct Shared {
    pub options: WebhookOptions,
    pub auth: Authenticator,
    pub commit: Arc<dyn Commit>,
    pub name: Arc<str>,
    pub tag: Arc<str>,
    pub registry: Arc<Metrics>,
    pub metrics: ComponentMetrics,
    pub inflight: Semaphore,
    /// How many bodies are decoded, parsed and prepared at once ([`parse_parallelism`]).
    pub parse_slots: Semaphore,
}

/// What is known about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnInfo {
    pub peer: SocketAddr,
    /// The client presented a certificate that the TLS handshake verified.
    pub cert_verified: bool,
}

/// Serves one request and counts its answer by status code.
pub(crate) async fn handle<B>(
    req: Request<B>,
    conn: ConnInfo,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible>
where
    B: Body<Data = Bytes>,
    B::Error: Display,
{
    let resp = answer(req, conn, &shared).await;
    shared
        .registry
        .counter(
            "kubetrail_webhook_requests_total",
            &[
                ("component", &shared.name),
                ("code", resp.status().as_str()),
            ],
        )
        .inc();
    Ok(resp)
}

async fn answer<B>(req: Request<B>, conn: ConnInfo, shared: &Shared) -> Response<Full<Bytes>>
where
    B: Body<Data = Bytes>,
    B::Error: Display,
{
    let peer = conn.peer;
    let headers = req.headers();
    let authorization = headers.get(AUTHORIZATION).map(HeaderValue::as_bytes);
    if !shared.auth.allows(conn.cert_verified, authorization) {
        tracing::warn!(component = %shared.name, %peer, token_sent = authorization.is_some(),
            "audit webhook request refused: no valid client certificate or token");
        let mut r = reply(
            StatusCode::UNAUTHORIZED,
            "client authentication required",
            true,
        );
        if shared.auth.tokens.is_some() {
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            );
        }
        return r;
    }
    if req.uri().path() != shared.options.path {
        return reply(
            StatusCode::NOT_FOUND,
            "not found: audit events are posted to the configured path",
            true,
        );
    }
    if req.method() != Method::POST {
        let mut r = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "only POST is accepted",
            true,
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    // Exactly one Content-Type, and a JSON one (two would leave the meaning to chance).
    let mut content_types = headers.get_all(CONTENT_TYPE).iter();
    let json = content_types
        .next()
        .is_some_and(|v| is_json_content_type(v.as_bytes()));
    if !json || content_types.next().is_some() {
        tracing::warn!(component = %shared.name, %peer, content_type = ?headers.get(CONTENT_TYPE), "audit webhook request refused: not JSON");
        return reply(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be JSON (application/json)",
            true,
        );
    }
    let gzip = match content_encoding(headers) {
        Some(gzip) => gzip,
        None => {
            return reply(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "only gzip or identity content encodings are accepted",
                true,
            );
        }
    };
    let limit = shared.options.max_body_size;
    let declared = match declared_length(headers) {
        Ok(n) => n,
        Err(()) => return reply(StatusCode::BAD_REQUEST, "invalid Content-Length", true),
    };
    let expects_continue = headers
        .get(EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let deadline = Instant::now() + BODY_TIMEOUT;
    let mut body = std::pin::pin!(req.into_body());
    if let Some(n) = declared.filter(|n| *n > limit as u64) {
        tracing::warn!(component = %shared.name, %peer, length = n, limit, "audit webhook body too large");
        // Waiting for 100 Continue, the client has sent nothing: answering now is the protocol.
        let drained = !expects_continue
            && n <= limit as u64 + DISCARD_LIMIT
            && discard(body.as_mut(), 0, limit as u64 + DISCARD_LIMIT, deadline).await;
        return too_large(limit, !drained);
    }

    // The semaphore is never closed, so acquiring only waits.
    let Ok(permit) = shared.inflight.acquire().await else {
        return reply(StatusCode::SERVICE_UNAVAILABLE, "shutting down", true);
    };
    let body = match tokio::time::timeout_at(deadline, read_body(body.as_mut(), limit, declared))
        .await
    {
        Err(_) => {
            return reply(
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive in time",
                true,
            );
        }
        Ok(Err(ReadError::TooLarge { seen })) => {
            tracing::warn!(component = %shared.name, %peer, limit, "audit webhook body too large");
            // What was read is freed; the rest is only counted, so no slot is held for it.
            drop(permit);
            let drained =
                discard(body.as_mut(), seen, limit as u64 + DISCARD_LIMIT, deadline).await;
            return too_large(limit, !drained);
        }
        Ok(Err(ReadError::Io(e))) => {
            tracing::debug!(component = %shared.name, %peer, error = %e, "audit webhook body read failed");
            return reply(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the body: {e}"),
                true,
            );
        }
        Ok(Ok(body)) => body,
    };
    let _permit = permit;

    // Decompressing and parsing a 12 MiB body is milliseconds of CPU: off the async threads.
    let (name, tag, raw_format) = (
        shared.name.clone(),
        shared.tag.clone(),
        shared.options.raw_format,
    );
    let commit = shared.commit.clone();
    let dedup_retention = shared.options.dedup_retention;
    // Parsing is CPU only: with more bodies at it than there are CPUs they share them, and all
    // finish late; in turn, each finishes as soon as it can (see `parse_parallelism`).
    let Ok(parse_slot) = shared.parse_slots.acquire().await else {
        return reply(StatusCode::SERVICE_UNAVAILABLE, "shutting down", true);
    };
    let parsed = tokio::task::spawn_blocking(move || {
        decode(body, gzip, limit, &name, &tag, raw_format).map(|d| {
            let n = d.records.len();
            // Filters and encoding too, off the async threads.
            let submission = commit.prepare(Submission {
                records: d.records,
                dedup_retention,
                ..Submission::default()
            });
            (submission, n, d.invalid, d.first_reason)
        })
    })
    .await;
    drop(parse_slot);
    let (submission, n, invalid, first_reason) = match parsed {
        Ok(Ok(d)) => d,
        Ok(Err(DecodeError::TooLarge)) => {
            tracing::warn!(component = %shared.name, %peer, limit, "audit webhook body too large once decompressed");
            return reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the decompressed body is larger than max_body_size ({limit} bytes)"),
                false,
            );
        }
        Ok(Err(DecodeError::TooManyItems(max))) => {
            tracing::warn!(component = %shared.name, %peer, max, "audit webhook body with too many events");
            return reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "more than {max} audit events in one body: lower the apiserver's --audit-webhook-batch-max-size"
                ),
                false,
            );
        }
        Ok(Err(DecodeError::Bad(msg))) => {
            shared.metrics.errors.inc();
            tracing::warn!(component = %shared.name, %peer, error = %msg, "audit webhook body refused");
            return reply(StatusCode::BAD_REQUEST, &msg, false);
        }
        Err(e) => {
            // Only a panic in the parser could get here; answer so the apiserver retries.
            tracing::error!(component = %shared.name, error = %e, "audit webhook body processing failed");
            return reply(StatusCode::INTERNAL_SERVER_ERROR, "internal error", false);
        }
    };
    if invalid > 0 {
        shared.metrics.errors.add(invalid as u64);
        tracing::warn!(component = %shared.name, %peer, invalid,
            first_reason = first_reason.as_deref().unwrap_or(""),
            "audit webhook items that are not audit events were kept as error records");
    }
    if n == 0 {
        return reply(StatusCode::OK, "", false);
    }
    match shared.commit.commit(submission).await {
        Ok(out) => {
            tracing::debug!(component = %shared.name, records = n, accepted = out.accepted, duplicates = out.duplicates, "audit batch committed");
            reply(StatusCode::OK, "", false)
        }
        Err(e) => {
            tracing::warn!(component = %shared.name, %peer, records = n, error = %e, "audit batch not committed; asking the sender to retry");
            let mut r = reply(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("not stored, retry later: {e}"),
                false,
            );
            r.headers_mut().insert(
                http::header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
            r
        }
    }
}

/// The 413 for a body over `max_body_size`; `close` when the body was not read to its end.
fn too_large(limit: usize, close: bool) -> Response<Full<Bytes>> {
    reply(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the body is larger than max_body_size ({limit} bytes)"),
        close,
    )
}

/// A short plain-text answer. `close` asks for the connection to be closed, which is needed
/// whenever the request body was left unread.
fn reply(status: StatusCode, message: &str, close: bool) -> Response<Full<Bytes>> {
    let body = if message.is_empty() {
        Bytes::new()
    } else {
        Bytes::from(format!("{message}\n"))
    };
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if close {
        r.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// `application/json` or `application/<anything>+json`, any case, with optional parameters;
/// a `charset` parameter, if any, must be UTF-8 (JSON's only encoding in practice).
pub(crate) fn is_json_content_type(value: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(value) else {
        return false;
    };
    let mut parts = s.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let json = essence == "application/json"
        || essence
            .strip_prefix("application/")
            .and_then(|sub| sub.strip_suffix("+json"))
            .is_some_and(|prefix| !prefix.is_empty() && !prefix.contains('/'));
    let charset_ok = parts.all(|p| match p.split_once('=') {
        Some((k, v)) if k.trim().eq_ignore_ascii_case("charset") => {
            let v = v.trim().trim_matches('"');
            v.eq_ignore_ascii_case("utf-8") || v.eq_ignore_ascii_case("utf8")
        }
        _ => true,
    });
    json && charset_ok
}

/// `Some(true)` for gzip, `Some(false)` for none/identity, `None` for anything else.
fn content_encoding(headers: &HeaderMap) -> Option<bool> {
    let mut gzip = false;
    for v in headers.get_all(CONTENT_ENCODING) {
        for enc in v.to_str().ok()?.split(',') {
            match enc.trim().to_ascii_lowercase().as_str() {
                "" | "identity" => {}
                "gzip" | "x-gzip" if !gzip => gzip = true,
                _ => return None,
            }
        }
    }
    Some(gzip)
}

fn declared_length(headers: &HeaderMap) -> Result<Option<u64>, ()> {
    match headers.get(CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map(Some)
            .ok_or(()),
    }
}

enum ReadError {
    /// Past `limit` after `seen` bytes; the rest of the body is unread.
    TooLarge {
        seen: u64,
    },
    Io(String),
}

/// Reads the body, refusing it as soon as it grows past `limit` (whatever it declared).
async fn read_body<B>(
    mut body: std::pin::Pin<&mut B>,
    limit: usize,
    declared: Option<u64>,
) -> Result<Vec<u8>, ReadError>
where
    B: Body<Data = Bytes>,
    B::Error: Display,
{
    let hint = declared
        .map_or(64 * 1024, |n| usize::try_from(n).unwrap_or(limit))
        .min(limit);
    let mut buf = Vec::with_capacity(hint);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ReadError::Io(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(ReadError::TooLarge {
                    seen: (buf.len() + data.len()) as u64,
                });
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf)
}

/// Reads and throws away the rest of a body of which `seen` bytes were read: `true` once it
/// ended, `false` when it ran past `bound` bytes in all, failed, or `deadline` came first.
async fn discard<B>(
    mut body: std::pin::Pin<&mut B>,
    mut seen: u64,
    bound: u64,
    deadline: Instant,
) -> bool
where
    B: Body<Data = Bytes>,
{
    let drain = async {
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            if let Ok(data) = frame.into_data() {
                seen += data.len() as u64;
                if seen > bound {
                    return false;
                }
            }
        }
        true
    };
    tokio::time::timeout_at(deadline, drain)
        .await
        .unwrap_or(false)
}

enum DecodeError {
    TooLarge,
    TooManyItems(usize),
    Bad(String),
}

/// The records of one body, plus what was wrong with the items that are not audit events.
struct Decoded {
    records: Vec<Record>,
    invalid: usize,
    first_reason: Option<String>,
}

fn decode(
    body: Vec<u8>,
    gzip: bool,
    limit: usize,
    name: &Arc<str>,
    tag: &Arc<str>,
    raw_format: bool,
) -> Result<Decoded, DecodeError> {
    let body = if gzip { gunzip(&body, limit)? } else { body };
    let items = audit::parse_body_owned(body).map_err(|e| match e {
        audit::BodyParseError::TooManyItems { max } => DecodeError::TooManyItems(max),
        e => DecodeError::Bad(e.to_string()),
    })?;
    let mut records = Vec::with_capacity(items.len());
    let mut invalid = 0;
    let mut first_reason = None;
    for item in items {
        match item {
            Ok(item) => records.push(audit::normalize(item, name, tag, raw_format)),
            Err(err) => {
                invalid += 1;
                if first_reason.is_none() {
                    first_reason = Some(err.reason.clone());
                }
                records.push(audit::error_record(err, name, tag));
            }
        }
    }
    Ok(Decoded {
        records,
        invalid,
        first_reason,
    })
}

/// Decompresses (all gzip members), refusing output beyond `limit` without producing it.
fn gunzip(data: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::with_capacity(data.len().saturating_mul(4).min(limit));
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    flate2::read::MultiGzDecoder::new(data)
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Bad(format!("invalid gzip body: {e}")))?;
    if out.len() > limit {
        return Err(DecodeError::TooLarge);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_parsed_as_many_at_once_as_there_are_cpus() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(parse_parallelism(), cpus.min(MAX_INFLIGHT_REQUESTS));
        assert!((1..=MAX_INFLIGHT_REQUESTS).contains(&parse_parallelism()));
    }

    #[test]
    fn json_content_types() {
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
            "application/merge-patch+json",
            "application/vnd.kubernetes+json; version=1",
        ] {
            assert!(is_json_content_type(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/+json",
            "application/json; charset=utf-16",
            "application/jsonx",
            "text/json",
            "application/a/b+json",
        ] {
            assert!(!is_json_content_type(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn content_encodings() {
        let mut h = HeaderMap::new();
        assert_eq!(content_encoding(&h), Some(false));
        h.insert(CONTENT_ENCODING, HeaderValue::from_static("identity"));
        assert_eq!(content_encoding(&h), Some(false));
        h.insert(CONTENT_ENCODING, HeaderValue::from_static("GZIP"));
        assert_eq!(content_encoding(&h), Some(true));
        h.insert(CONTENT_ENCODING, HeaderValue::from_static("br"));
        assert_eq!(content_encoding(&h), None);
        h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip, gzip"));
        assert_eq!(
            content_encoding(&h),
            None,
            "double compression is not supported"
        );
    }

    #[test]
    fn gunzip_is_bounded() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&vec![b' '; 10_000]).unwrap();
        let gz = enc.finish().unwrap();
        assert_eq!(gunzip(&gz, 10_000).ok().map(|v| v.len()), Some(10_000));
        assert!(matches!(gunzip(&gz, 9_999), Err(DecodeError::TooLarge)));
        assert!(matches!(gunzip(b"not gzip", 100), Err(DecodeError::Bad(_))));
    }
}
