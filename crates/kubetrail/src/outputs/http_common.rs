//! What the HTTP-based outputs (`http`, `loki`, `elasticsearch`) share: the endpoint options
//! (Fluent Bit's `host`/`port`/`uri`/`tls`, or one `url`), TLS, authentication (basic, bearer
//! token or token file), custom headers, gzip, the request timeout; one POST with all of that
//! applied; the mapping of HTTP answers to retry or dead letter (with `Retry-After`); the time
//! of an encoded record; and a writer of dead-letter files for outputs that refuse single
//! items of a batch themselves.

use crate::outputs::dead_letter::DeadLetterError;
pub use crate::outputs::dead_letter::DeadLetterWriter;
use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use http::header::{
    AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER,
};
use http::{Method, Request, StatusCode};
use kubetrail_core::Timestamp;
use kubetrail_core::config::{ConfigError, Section, TlsOptions, Value as ConfigValue};
use kubetrail_net::{Full, HttpClient, HttpClientOptions, NetError, TlsClientSettings};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::pipeline::DeliveryError;

/// The longest `Retry-After` honoured; a longer one (or a date further away) waits this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// How much of a refusal's body is quoted in the reason.
const SNIPPET_CHARS: usize = 512;
/// How much of an error answer is read at all.
const ERROR_BODY_LIMIT: usize = 16 * 1024;

/// Errors of an HTTP exchange that are not an answer from the server.
#[derive(Debug, thiserror::Error)]
pub enum HttpOutputError {
    #[error("reading the bearer token file {path}: {source}")]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the bearer token file {path} is empty or not a valid header value")]
    BadToken { path: PathBuf },
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("no complete answer from {url} within {after:?}")]
    Timeout { url: String, after: Duration },
    #[error("compressing the request body: {0}")]
    Compress(#[source] std::io::Error),
    #[error("building the request for {url}: {source}")]
    Request {
        url: String,
        #[source]
        source: http::Error,
    },
    #[error(transparent)]
    DeadLetter(#[from] DeadLetterError),
}

impl From<HttpOutputError> for DeliveryError {
    /// Everything short of an answer is worth retrying: networks heal, token files get
    /// written, certificates get renewed, disks get space.
    fn from(e: HttpOutputError) -> Self {
        DeliveryError::Retryable {
            message: e.to_string(),
            retry_after: None,
        }
    }
}

/// The per-output defaults of the endpoint options.
#[derive(Debug, Clone, Copy)]
pub struct EndpointDefaults {
    /// `port` when not given.
    pub port: u16,
    /// The name of the path option: `uri` (Fluent Bit's `http` and `loki`) or `path`
    /// (Fluent Bit's `es`, where it is a prefix before `/_bulk`).
    pub path_key: &'static str,
    /// The path when neither the path option nor a path in `url` is given.
    pub path: &'static str,
}

/// Request body compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
}

/// How requests authenticate.
pub enum Auth {
    None,
    /// `Authorization: Basic ...`, prepared once (marked sensitive).
    Basic(HeaderValue),
    /// `Authorization: Bearer ...` from the configuration.
    Bearer(HeaderValue),
    /// `Authorization: Bearer ...` from a file, read again whenever the file changes
    /// (projected service-account tokens are rotated by swapping the file).
    BearerFile(TokenFile),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret itself.
        match self {
            Auth::None => f.write_str("None"),
            Auth::Basic(_) => f.write_str("Basic(<redacted>)"),
            Auth::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Auth::BearerFile(t) => write!(f, "BearerFile({})", t.path.display()),
        }
    }
}

/// A bearer token file and the last token read from it.
pub struct TokenFile {
    path: PathBuf,
    cached: Mutex<Option<(FileStamp, HeaderValue)>>,
}

/// What tells that a file changed without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    #[cfg(unix)]
    ino: u64,
}

impl FileStamp {
    fn of(m: &std::fs::Metadata) -> FileStamp {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt as _;
        FileStamp {
            modified: m.modified().ok(),
            len: m.len(),
            #[cfg(unix)]
            ino: m.ino(),
        }
    }
}

impl TokenFile {
    pub fn new(path: impl Into<PathBuf>) -> TokenFile {
        TokenFile {
            path: path.into(),
            cached: Mutex::new(None),
        }
    }

    /// The `Authorization` value, reading the file again if it changed since the last call.
    pub async fn header(&self) -> Result<HeaderValue, HttpOutputError> {
        let err = |source| HttpOutputError::TokenFile {
            path: self.path.clone(),
            source,
        };
        let stamp = FileStamp::of(&tokio::fs::metadata(&self.path).await.map_err(err)?);
        if let Ok(c) = self.cached.lock()
            && let Some((s, v)) = c.as_ref()
            && *s == stamp
        {
            return Ok(v.clone());
        }
        let text = tokio::fs::read_to_string(&self.path).await.map_err(err)?;
        let token = text.trim();
        if token.is_empty() {
            return Err(HttpOutputError::BadToken {
                path: self.path.clone(),
            });
        }
        let mut v = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            HttpOutputError::BadToken {
                path: self.path.clone(),
            }
        })?;
        v.set_sensitive(true);
        if let Ok(mut c) = self.cached.lock() {
            *c = Some((stamp, v.clone()));
        }
        Ok(v)
    }
}

/// Everything an HTTP output reads from its section besides its own options.
#[derive(Debug)]
pub struct HttpSettings {
    /// `http://host:port` or `https://host:port`.
    pub base_url: String,
    /// The path (and query) from `url` or the path option, or the default; may be empty.
    pub path: String,
    /// TLS settings (used when `base_url` is `https://`).
    pub tls: TlsClientSettings,
    pub auth: Auth,
    /// Custom headers from `header` and `headers`.
    pub headers: HeaderMap,
    pub compress: Compression,
    /// `timeout`: the limit for one whole exchange (connect, send, read the answer).
    pub timeout: Duration,
}

/// Reads a setting's raw shape without marking it as known (so that a `tls:` map still has
/// its keys checked by `finish`).
fn peek(s: &Section, key: &str) -> Option<ConfigValue> {
    s.clone().get_value(key)
}

impl HttpSettings {
    /// Reads `url` or `host`/`port`/<path option>/`tls`, the `tls.*` options, `http_user`,
    /// `http_passwd`, `bearer_token`, `bearer_token_file`, `header`, `headers`, `compress`
    /// and `timeout`.
    pub fn from_section(s: &mut Section, d: EndpointDefaults) -> Result<HttpSettings, ConfigError> {
        let (base_url, path) = endpoint(s, d)?;
        let tls_options = TlsOptions::from_section(s)?;
        let mut tls = TlsClientSettings::from_options(&tls_options);
        // Outputs talk to public services too; a private CA is given with tls.ca_file.
        tls.use_webpki_roots = tls.ca_file.is_none() && tls.ca_path.is_none();
        if base_url.starts_with("http://")
            && (tls_options.ca_file.is_some()
                || tls_options.ca_path.is_some()
                || tls_options.crt_file.is_some())
        {
            tracing::warn!(
                output = s.name(),
                "tls.* options are set but TLS is off (tls: on or an https:// url turns it on)"
            );
        }
        let auth = auth(s)?;
        let headers = headers(s)?;
        if !matches!(auth, Auth::None) && headers.contains_key(AUTHORIZATION) {
            return Err(s.error(
                "header",
                "an Authorization header and http_user/bearer_token do not go together",
            ));
        }
        let compress = match s.get_choice("compress", &["gzip", "none", "off", "false"])? {
            Some("gzip") => Compression::Gzip,
            _ => Compression::None,
        };
        let timeout = s
            .get_duration("timeout")?
            .unwrap_or(Duration::from_secs(30));
        if timeout.is_zero() {
            return Err(s.error("timeout", "must be more than 0"));
        }
        Ok(HttpSettings {
            base_url,
            path,
            tls,
            auth,
            headers,
            compress,
            timeout,
        })
    }
}

/// `url`, or `host` + `port` + the path option + `tls`. Returns (`scheme://authority`, path).
fn endpoint(s: &mut Section, d: EndpointDefaults) -> Result<(String, String), ConfigError> {
    let url = s.get_str("url")?.filter(|u| !u.trim().is_empty());
    let host = s.get_str("host")?.filter(|h| !h.trim().is_empty());
    let port = s.get_u64("port")?;
    let path = s.get_str(d.path_key)?;
    // `tls: on` is a switch; `tls: {verify: off, ...}` is a map of options read by TlsOptions.
    let tls = match peek(s, "tls") {
        Some(ConfigValue::Scalar(_)) => Some(s.get_bool("tls")?.unwrap_or(false)),
        Some(ConfigValue::Map(_)) => Some(true),
        _ => None,
    };
    if let Some(url) = url {
        if host.is_some()
            || port.is_some()
            || path.is_some()
            || matches!(peek(s, "tls"), Some(ConfigValue::Scalar(_)))
        {
            return Err(s.error(
                "url",
                format!("give either url or host/port/{}/tls, not both", d.path_key),
            ));
        }
        let uri: http::Uri = url
            .trim()
            .parse()
            .map_err(|e| s.error("url", format!("'{url}' is not a URL: {e}")))?;
        let scheme = match uri.scheme_str() {
            Some(sc) if sc.eq_ignore_ascii_case("http") => "http",
            Some(sc) if sc.eq_ignore_ascii_case("https") => "https",
            _ => {
                return Err(s.error(
                    "url",
                    format!("'{url}' must start with http:// or https://"),
                ));
            }
        };
        let Some(authority) = uri.authority().filter(|a| !a.host().is_empty()) else {
            return Err(s.error("url", format!("'{url}' has no host")));
        };
        if authority.as_str().contains('@') {
            return Err(s.error(
                "url",
                "user info in the URL is not supported: use http_user and http_passwd",
            ));
        }
        let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("");
        let pq = if pq == "/" { "" } else { pq };
        let path = if pq.is_empty() {
            d.path.to_string()
        } else {
            pq.to_string()
        };
        return Ok((format!("{scheme}://{authority}"), path));
    }
    let host = host.unwrap_or_else(|| "127.0.0.1".to_string());
    let host = host.trim();
    if host.contains('/') || host.contains('@') || host.contains(' ') {
        return Err(s.error(
            "host",
            format!("'{host}' is not a host name or address (use url for a full URL)"),
        ));
    }
    let port = match port {
        None => d.port,
        Some(p) if (1..=65535).contains(&p) => p as u16,
        Some(p) => return Err(s.error("port", format!("{p} is not a TCP port"))),
    };
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let scheme = if tls.unwrap_or(false) {
        "https"
    } else {
        "http"
    };
    let path = match path.map(|p| p.trim().to_string()) {
        None => d.path.to_string(),
        Some(p) if p.is_empty() || p == "/" && d.path.is_empty() => String::new(),
        Some(p) if p.starts_with('/') => p,
        Some(p) => format!("/{p}"),
    };
    let base = format!("{scheme}://{host}:{port}");
    // Checked here so that a bad host is a configuration error with a line number.
    base.parse::<http::Uri>().map_err(|e| {
        s.error(
            "host",
            format!("'{host}' is not a host name or address: {e}"),
        )
    })?;
    Ok((base, path))
}

fn auth(s: &mut Section) -> Result<Auth, ConfigError> {
    let user = s.get_str("http_user")?.filter(|u| !u.is_empty());
    let passwd = s.get_str("http_passwd")?;
    let token = s.get_str("bearer_token")?.filter(|t| !t.trim().is_empty());
    let token_file = s
        .get_str("bearer_token_file")?
        .filter(|t| !t.trim().is_empty());
    let given = [user.is_some(), token.is_some(), token_file.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if given > 1 {
        return Err(s.error(
            "http_user",
            "use one of http_user/http_passwd, bearer_token and bearer_token_file",
        ));
    }
    if passwd.is_some() && user.is_none() {
        return Err(s.error("http_passwd", "needs http_user"));
    }
    if let Some(user) = user {
        if user.contains(':') {
            return Err(s.error("http_user", "cannot contain ':'"));
        }
        let raw = format!("{user}:{}", passwd.unwrap_or_default());
        let encoded = base64::engine::general_purpose::STANDARD.encode(raw.as_bytes());
        let mut v = HeaderValue::from_str(&format!("Basic {encoded}"))
            .map_err(|_| s.error("http_user", "cannot be sent in a header"))?;
        v.set_sensitive(true);
        return Ok(Auth::Basic(v));
    }
    if let Some(token) = token {
        let mut v = HeaderValue::from_str(&format!("Bearer {}", token.trim())).map_err(|_| {
            s.error(
                "bearer_token",
                "cannot be sent in a header (control characters?)",
            )
        })?;
        v.set_sensitive(true);
        return Ok(Auth::Bearer(v));
    }
    if let Some(f) = token_file {
        return Ok(Auth::BearerFile(TokenFile::new(f.trim())));
    }
    Ok(Auth::None)
}

/// `header` (Fluent Bit: `Name value`, one string or a list of them) and `headers` (a map).
fn headers(s: &mut Section) -> Result<HeaderMap, ConfigError> {
    let mut pairs = Vec::new();
    // A single string is one header even when its value holds commas.
    let single = match peek(s, "header") {
        Some(ConfigValue::Scalar(_)) => s.get_str("header")?.map(|h| vec![h]),
        Some(_) => s.get_list("header")?,
        None => None,
    };
    for h in single.unwrap_or_default() {
        let h = h.trim();
        if h.is_empty() {
            continue;
        }
        let (name, value) = h
            .split_once([' ', '\t', ':'])
            .map(|(n, v)| (n.trim(), v.trim()))
            .unwrap_or((h, ""));
        pairs.push(("header", name.to_string(), value.to_string()));
    }
    for (k, v) in s.get_map("headers")?.unwrap_or_default() {
        pairs.push(("headers", k, v));
    }
    let mut map = HeaderMap::new();
    for (key, name, value) in pairs {
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| s.error(key, format!("'{name}' is not a valid header name")))?;
        if n == http::header::HOST
            || n == http::header::CONTENT_LENGTH
            || n == http::header::TRANSFER_ENCODING
        {
            return Err(s.error(key, format!("the {n} header is set by kubetrail")));
        }
        let v = HeaderValue::from_str(&value).map_err(|_| {
            s.error(
                key,
                format!("the value of '{name}' is not a valid header value"),
            )
        })?;
        map.append(n, v);
    }
    Ok(map)
}

/// An answer from the server: status, headers and (part of) the body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body of a 2xx answer (up to the caller's limit), or the start of an error answer.
    pub body: Bytes,
    /// Set when a 2xx answer's body could not be read whole.
    pub body_error: Option<String>,
    /// The URL the request went to, for messages.
    pub url: String,
}

/// An HTTP client with an output's endpoint, authentication, headers and compression.
pub struct HttpSender {
    client: HttpClient,
    auth: Auth,
    headers: HeaderMap,
    compress: Compression,
    timeout: Duration,
}

impl std::fmt::Debug for HttpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSender")
            .field("client", &self.client)
            .field("auth", &self.auth)
            .finish()
    }
}

impl HttpSender {
    /// Builds the client (reading the TLS files now, so that a missing CA is reported at
    /// start). The settings' path is not used here: each output builds its own request paths.
    pub fn new(settings: HttpSettings) -> Result<HttpSender, NetError> {
        let options = HttpClientOptions {
            connect_timeout: settings.timeout.min(Duration::from_secs(10)),
            response_timeout: Some(settings.timeout),
            ..HttpClientOptions::default()
        };
        let client = HttpClient::with_options(&settings.base_url, &settings.tls, options)?;
        Ok(HttpSender {
            client,
            auth: settings.auth,
            headers: settings.headers,
            compress: settings.compress,
            timeout: settings.timeout,
        })
    }

    /// Builds an `HttpSender` from a section, as a configuration error when TLS files are bad.
    pub fn from_section(
        s: &mut Section,
        d: EndpointDefaults,
    ) -> Result<(HttpSender, String), ConfigError> {
        let settings = HttpSettings::from_section(s, d)?;
        let path = settings.path.clone();
        let sender = HttpSender::new(settings).map_err(|e| s.section_error(e.to_string()))?;
        Ok((sender, path))
    }

    /// The full URL of a request path, for messages.
    pub fn url_for(&self, path_and_query: &str) -> String {
        self.client.url_for(path_and_query)
    }

    /// POSTs `body` (compressed if configured) to `path_and_query` with the configured
    /// headers and authentication, and reads the answer: up to `body_limit` bytes of a 2xx
    /// body, the start of any other. The whole exchange is limited by `timeout`.
    pub async fn post(
        &self,
        path_and_query: &str,
        content_type: &'static str,
        body: Vec<u8>,
        body_limit: usize,
    ) -> Result<Answer, HttpOutputError> {
        let url = self.client.url_for(path_and_query);
        match tokio::time::timeout(
            self.timeout,
            self.exchange(path_and_query, &url, content_type, body, body_limit),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(HttpOutputError::Timeout {
                url,
                after: self.timeout,
            }),
        }
    }

    async fn exchange(
        &self,
        path_and_query: &str,
        url: &str,
        content_type: &'static str,
        body: Vec<u8>,
        body_limit: usize,
    ) -> Result<Answer, HttpOutputError> {
        let body = match self.compress {
            Compression::None => body,
            Compression::Gzip => gzip(&body).map_err(HttpOutputError::Compress)?,
        };
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(path_and_query)
            .body(Full::new(Bytes::from(body)))
            .map_err(|source| HttpOutputError::Request {
                url: url.to_string(),
                source,
            })?;
        let h = req.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        // Custom headers come after the defaults so that they can replace Content-Type.
        for name in self.headers.keys() {
            h.remove(name);
        }
        for (name, value) in &self.headers {
            h.append(name.clone(), value.clone());
        }
        if self.compress == Compression::Gzip {
            h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        match &self.auth {
            Auth::None => {}
            Auth::Basic(v) | Auth::Bearer(v) => {
                h.insert(AUTHORIZATION, v.clone());
            }
            Auth::BearerFile(f) => {
                h.insert(AUTHORIZATION, f.header().await?);
            }
        }
        let resp = self.client.send(req).await?;
        let (parts, body) = resp.into_parts();
        let (body, body_error) = if parts.status.is_success() {
            match body.read_to_end(body_limit).await {
                Ok(b) => (b, None),
                Err(e) => (Bytes::new(), Some(e.to_string())),
            }
        } else {
            // The start is enough to say why; an unreadable error body says nothing more.
            (
                body.read_prefix(ERROR_BODY_LIMIT).await.unwrap_or_default(),
                None,
            )
        };
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
            body_error,
            url: url.to_string(),
        })
    }
}

/// Gzips a request body.
pub fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    enc.write_all(data)?;
    enc.finish()
}

/// What a non-2xx answer means for the batch: 408, 429 and 5xx (and 3xx, a setup problem
/// that retrying after a fix cures) are retried, after `Retry-After` when given; any other
/// 4xx refuses the batch for good.
pub fn answer_error(answer: &Answer) -> DeliveryError {
    let message = format!(
        "{} answered {}: {}",
        answer.url,
        answer.status,
        snippet(&answer.body)
    );
    let s = answer.status.as_u16();
    if s == 408 || s == 429 || answer.status.is_server_error() || answer.status.is_redirection() {
        let retry_after = answer
            .headers
            .get(RETRY_AFTER)
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        DeliveryError::Retryable {
            message,
            retry_after,
        }
    } else {
        DeliveryError::Rejected { message }
    }
}

/// Whether an item-level status (Elasticsearch bulk items) is worth retrying.
pub fn is_retryable_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..600).contains(&status)
}

/// The start of a body as one printable line.
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text
        .chars()
        .take(SNIPPET_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > SNIPPET_CHARS {
        out.push('…');
    }
    let out = out.trim().to_string();
    if out.is_empty() {
        "(empty body)".to_string()
    } else {
        out
    }
}

/// `Retry-After`: delay seconds or an HTTP date, capped at [`MAX_RETRY_AFTER`]. A date in
/// the past means now (zero).
pub fn parse_retry_after(v: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let s = v.to_str().ok()?.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    let when = parse_http_date(s)?;
    Some(
        when.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

/// An HTTP date (RFC 9110 IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`, or the obsolete
/// asctime form).
fn parse_http_date(s: &str) -> Option<SystemTime> {
    use time::macros::format_description;
    use time::{PrimitiveDateTime, UtcOffset};
    let imf = format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let asctime = format_description!(
        "[weekday repr:short] [month repr:short] [day padding:space] [hour]:[minute]:[second] [year]"
    );
    let dt = PrimitiveDateTime::parse(s, imf)
        .or_else(|_| PrimitiveDateTime::parse(s, asctime))
        .ok()?
        .assume_offset(UtcOffset::UTC);
    let secs = dt.unix_timestamp();
    if secs >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs as u64))
    } else {
        Some(SystemTime::UNIX_EPOCH)
    }
}

/// Top-level keys that may hold a record's time, in order of preference: kubetrail's own
/// `time`, then (for records in raw format, which are the original object alone) the audit
/// event's and the Event's own times.
const TIME_KEYS: [&str; 6] = [
    "time",
    "stageTimestamp",
    "requestReceivedTimestamp",
    "eventTime",
    "lastTimestamp",
    "firstTimestamp",
];

/// The top-level keys of an encoded record with their raw values (nothing deeper is parsed).
/// `None` when the record is not a JSON object.
pub fn top_level(data: &[u8]) -> Option<HashMap<String, &RawValue>> {
    serde_json::from_slice(data).ok()
}

/// The time of a record from its top-level keys (see [`TIME_KEYS`], then
/// `metadata.creationTimestamp`). `None` if it has none.
pub fn top_level_time(top: &HashMap<String, &RawValue>) -> Option<Timestamp> {
    let str_of = |raw: &RawValue| serde_json::from_str::<String>(raw.get()).ok();
    for k in TIME_KEYS {
        if let Some(t) = top
            .get(k)
            .and_then(|r| str_of(r))
            .and_then(|s| Timestamp::parse_rfc3339(&s))
        {
            return Some(t);
        }
    }
    #[derive(serde::Deserialize)]
    struct Meta {
        #[serde(rename = "creationTimestamp")]
        creation_timestamp: Option<String>,
    }
    let meta: Meta = serde_json::from_str(top.get("metadata")?.get()).ok()?;
    Timestamp::parse_rfc3339(meta.creation_timestamp.as_deref()?)
}

/// The time of an encoded record, without parsing more of it than its top-level keys.
pub fn record_time(data: &[u8]) -> Option<Timestamp> {
    top_level_time(&top_level(data)?)
}

/// The record on one line: records keep their original's exact bytes, which may be
/// pretty-printed (a webhook body, say); line-based formats need them compacted. Data that is
/// not JSON is returned as it is.
pub fn single_line(data: &[u8]) -> Cow<'_, [u8]> {
    if memchr::memchr2(b'\n', b'\r', data).is_none() {
        return Cow::Borrowed(data);
    }
    match serde_json::from_slice::<Value>(data) {
        Ok(v) => Cow::Owned(serde_json::to_vec(&v).unwrap_or_else(|_| data.to_vec())),
        Err(_) => Cow::Borrowed(data),
    }
}

/// [`record_time`] for a record already parsed.
pub fn value_time(v: &Value) -> Option<Timestamp> {
    for k in TIME_KEYS {
        if let Some(t) = v
            .get(k)
            .and_then(Value::as_str)
            .and_then(Timestamp::parse_rfc3339)
        {
            return Some(t);
        }
    }
    v.pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(Timestamp::parse_rfc3339)
}

/// Percent-encodes a query parameter value.
pub fn encode_query_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubetrail_core::config::SectionKind;
    use proptest::prelude::*;
    use std::path::Path;

    const D: EndpointDefaults = EndpointDefaults {
        port: 3100,
        path_key: "uri",
        path: "/loki/api/v1/push",
    };

    fn settings(pairs: &[(&str, &str)]) -> Result<HttpSettings, ConfigError> {
        let mut s = Section::from_pairs(SectionKind::Output, "loki", pairs);
        let r = HttpSettings::from_section(&mut s, D);
        if r.is_ok() {
            s.finish()?;
        }
        r
    }

    #[test]
    fn endpoint_from_host_port_uri_tls_or_url() {
        let s = settings(&[]).unwrap();
        assert_eq!(
            (s.base_url.as_str(), s.path.as_str()),
            ("http://127.0.0.1:3100", "/loki/api/v1/push")
        );
        let s = settings(&[
            ("host", "loki.example"),
            ("port", "443"),
            ("tls", "on"),
            ("uri", "push"),
        ])
        .unwrap();
        assert_eq!(
            (s.base_url.as_str(), s.path.as_str()),
            ("https://loki.example:443", "/push")
        );
        let s = settings(&[("host", "::1")]).unwrap();
        assert_eq!(s.base_url, "http://[::1]:3100");
        let s = settings(&[("url", "https://logs.example/api/push?x=1")]).unwrap();
        assert_eq!(
            (s.base_url.as_str(), s.path.as_str()),
            ("https://logs.example", "/api/push?x=1")
        );
        let s = settings(&[("url", "http://logs.example:8080/")]).unwrap();
        assert_eq!(
            (s.base_url.as_str(), s.path.as_str()),
            ("http://logs.example:8080", "/loki/api/v1/push")
        );
        assert!(
            settings(&[("url", "http://a"), ("host", "b")])
                .unwrap_err()
                .to_string()
                .contains("either url")
        );
        assert!(settings(&[("url", "ftp://a")]).is_err());
        assert!(settings(&[("url", "http://u:p@a")]).is_err());
        assert!(settings(&[("port", "70000")]).is_err());
        assert!(settings(&[("host", "a/b")]).is_err());
    }

    #[test]
    fn tls_as_a_map_turns_tls_on_and_its_keys_are_still_checked() {
        let text = "pipeline:\n  outputs:\n    - name: loki\n      tls:\n        verify: off\n        vrfy: on\n";
        let mut c = kubetrail_core::config::Config::parse(text, Path::new("t.yaml")).unwrap();
        let s = &mut c.outputs[0];
        let set = HttpSettings::from_section(s, D).unwrap();
        assert!(set.base_url.starts_with("https://"));
        assert!(!set.tls.verify);
        let e = s.finish().unwrap_err().to_string();
        assert!(e.contains("vrfy"), "{e}");
    }

    #[test]
    fn auth_options() {
        let s = settings(&[("http_user", "u"), ("http_passwd", "p")]).unwrap();
        match s.auth {
            Auth::Basic(v) => {
                assert_eq!(v.to_str().unwrap(), "Basic dTpw");
                assert!(v.is_sensitive());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            settings(&[("bearer_token", "t")]).unwrap().auth,
            Auth::Bearer(_)
        ));
        assert!(matches!(
            settings(&[("bearer_token_file", "/x")]).unwrap().auth,
            Auth::BearerFile(_)
        ));
        assert!(settings(&[("bearer_token", "t"), ("http_user", "u")]).is_err());
        assert!(settings(&[("http_passwd", "p")]).is_err());
        let dbg = format!(
            "{:?}",
            settings(&[("bearer_token", "secret-token")]).unwrap().auth
        );
        assert!(!dbg.contains("secret-token"), "{dbg}");
    }

    #[test]
    fn headers_single_list_and_map() {
        let s = settings(&[("header", "X-Team sre, platform")]).unwrap();
        assert_eq!(s.headers.get("x-team").unwrap(), "sre, platform");
        let text = "pipeline:\n  outputs:\n    - name: http\n      header:\n        - X-A 1\n        - 'X-B: 2'\n      headers:\n        X-C: three\n";
        let mut c = kubetrail_core::config::Config::parse(text, Path::new("t.yaml")).unwrap();
        let set = HttpSettings::from_section(&mut c.outputs[0], D).unwrap();
        c.outputs[0].finish().unwrap();
        assert_eq!(set.headers.get("x-a").unwrap(), "1");
        assert_eq!(set.headers.get("x-b").unwrap(), "2");
        assert_eq!(set.headers.get("x-c").unwrap(), "three");
        assert!(settings(&[("header", "Bad Name: x")]).is_ok()); // name "Bad", value "Name: x"
        assert!(settings(&[("header", "Host x")]).is_err());
        assert!(settings(&[("header", "Authorization x"), ("bearer_token", "t")]).is_err());
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(
            parse_retry_after(&h("7"), now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(parse_retry_after(&h("999999"), now), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after(&h("Sun, 06 Nov 1994 08:50:07 GMT"), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after(&h("Sun Nov  6 08:49:57 1994"), now),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            parse_retry_after(&h("Sat, 05 Nov 1994 08:49:37 GMT"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after(&h("soon"), now), None);
        assert_eq!(parse_retry_after(&h("-1"), now), None);
    }

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: h,
            body: Bytes::from(body.to_string()),
            body_error: None,
            url: "http://x/y".into(),
        }
    }

    #[test]
    fn status_mapping() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(
                matches!(
                    answer_error(&answer(s, &[], "")),
                    DeliveryError::Retryable { .. }
                ),
                "{s}"
            );
        }
        for s in [400, 401, 403, 404, 409, 413, 422] {
            match answer_error(&answer(s, &[], "bad\nthing")) {
                DeliveryError::Rejected { message } => {
                    assert!(
                        message.contains(&s.to_string()) && message.contains("bad thing"),
                        "{message}"
                    )
                }
                other => panic!("{s}: {other:?}"),
            }
        }
        match answer_error(&answer(503, &[("retry-after", "12")], "")) {
            DeliveryError::Retryable { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_secs(12)))
            }
            other => panic!("{other:?}"),
        }
        assert!(is_retryable_status(429) && is_retryable_status(503) && !is_retryable_status(400));
    }

    #[test]
    fn record_time_from_envelope_or_raw_objects() {
        let t = |s: &str| Timestamp::parse_rfc3339(s);
        assert_eq!(
            record_time(br#"{"id":"a","time":"2026-11-27T00:31:51Z","x":{}}"#),
            t("2026-11-27T00:31:51Z")
        );
        assert_eq!(
            record_time(br#"{"kind":"Event","stageTimestamp":"2026-01-02T03:04:05.5Z","time":7}"#),
            t("2026-01-02T03:04:05.5Z")
        );
        assert_eq!(
            record_time(
                br#"{"kind":"Event","metadata":{"creationTimestamp":"2026-01-02T00:00:00Z"}}"#
            ),
            t("2026-01-02T00:00:00Z")
        );
        assert_eq!(record_time(b"not json"), None);
        assert_eq!(record_time(br#"{"time":"yesterday"}"#), None);
        let v: Value = serde_json::from_str(r#"{"lastTimestamp":"2026-01-02T00:00:00Z"}"#).unwrap();
        assert_eq!(value_time(&v), t("2026-01-02T00:00:00Z"));
    }

    #[test]
    fn pretty_printed_records_become_one_line() {
        assert!(matches!(single_line(br#"{"a":1}"#), Cow::Borrowed(_)));
        assert_eq!(
            &*single_line(b"{\n  \"a\": \"x\\ny\"\n}"),
            br#"{"a":"x\ny"}"#
        );
        assert_eq!(&*single_line(b"not\njson"), b"not\njson");
    }

    #[tokio::test]
    async fn token_file_is_read_again_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "one\n").unwrap();
        let f = TokenFile::new(&p);
        assert_eq!(f.header().await.unwrap(), "Bearer one");
        // Written by replacing the file, as Kubernetes does for projected tokens.
        let tmp = dir.path().join("token.new");
        std::fs::write(&tmp, "second").unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        assert_eq!(f.header().await.unwrap(), "Bearer second");
        std::fs::write(&p, "  ").unwrap();
        assert!(matches!(
            f.header().await,
            Err(HttpOutputError::BadToken { .. })
        ));
        std::fs::remove_file(&p).unwrap();
        assert!(matches!(
            f.header().await,
            Err(HttpOutputError::TokenFile { .. })
        ));
    }

    #[test]
    fn gzip_round_trips() {
        let data = b"{\"a\":1}\n".repeat(100);
        let z = gzip(&data).unwrap();
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&z[..]), &mut out).unwrap();
        assert_eq!(out, data);
        assert!(z.len() < data.len());
    }

    proptest! {
        #[test]
        fn retry_after_never_panics_and_is_capped(s in "\\PC{0,40}") {
            if let Ok(v) = HeaderValue::from_str(&s)
                && let Some(d) = parse_retry_after(&v, SystemTime::now())
            {
                prop_assert!(d <= MAX_RETRY_AFTER);
            }
        }

        #[test]
        fn record_time_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = record_time(&data);
        }

        #[test]
        fn query_values_round_trip(s in "\\PC{0,30}") {
            let e = encode_query_value(&s);
            prop_assert!(e.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b)));
        }
    }
}
