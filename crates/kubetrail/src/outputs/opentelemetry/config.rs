//! The `opentelemetry` output's options, named as Fluent Bit's `opentelemetry` output names
//! them where the concept is the same, read from its configuration section.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use http::header::{HeaderName, HeaderValue};
use kubetrail_core::config::{ConfigError, Section, SettingError, TlsOptions, Value, closest};
use kubetrail_net::TlsClientSettings;

use super::encode::{BodyFormat, EncodeOptions};

/// Defaults, named so the documentation and the code agree.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// The OTLP/HTTP port.
pub const DEFAULT_PORT: u64 = 4318;
pub const DEFAULT_LOGS_URI: &str = "/v1/logs";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_SERVICE_NAME: &str = "kubetrail";

/// Keys accepted inside a `tls:` map (the same as the flat `tls.*` keys).
const TLS_KEYS: [&str; 7] = [
    "verify", "debug", "vhost", "ca_file", "ca_path", "crt_file", "key_file",
];

/// Request headers the output sets itself; a `header` option cannot replace them.
const RESERVED_HEADERS: [&str; 5] = [
    "host",
    "content-type",
    "content-encoding",
    "content-length",
    "transfer-encoding",
];

/// How requests authenticate.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    /// `http_user` / `http_passwd`: the ready `Authorization: Basic ...` value.
    Basic(HeaderValue),
    /// `bearer_token`: the ready `Authorization: Bearer ...` value.
    Bearer(HeaderValue),
    /// `bearer_token_file`: re-read for every request, so a rotated token is used at once.
    BearerFile(PathBuf),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Basic(_) => f.write_str("Basic(<redacted>)"),
            Auth::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Auth::BearerFile(p) => f.debug_tuple("BearerFile").field(p).finish(),
        }
    }
}

/// The resolved options of one `opentelemetry` output.
#[derive(Debug, Clone)]
pub struct OtlpOptions {
    /// `scheme://host:port` from `tls`, `host` and `port`.
    pub base_url: String,
    /// `logs_uri` (default `/v1/logs`): the request path (and query).
    pub logs_uri: String,
    /// `tls` (default off) and `tls.*`: server verification and client certificate.
    pub tls: TlsClientSettings,
    /// `header` (list of `Name value`) and `headers` (map), in that order.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub auth: Auth,
    /// `compress: gzip`.
    pub gzip: bool,
    /// `timeout` (default 30s): how long to wait for the response head.
    pub timeout: Duration,
    /// `body_format`, `object_resource`, `cluster_name`, `resource`.
    pub encode: EncodeOptions,
}

fn setting_error(
    s: &Section,
    key: String,
    line: usize,
    message: &str,
    suggestion: Option<String>,
) -> ConfigError {
    ConfigError::Setting(Box::new(SettingError {
        file: s.file().into(),
        component: s.label(),
        key: Some(key),
        line: (line > 0).then_some(line),
        message: message.to_string(),
        suggestion,
    }))
}

/// Reads `tls` (on/off, or a map of `tls.*` keys, which turns TLS on) and the `tls.*` keys.
fn read_tls(s: &mut Section) -> Result<(bool, TlsOptions), ConfigError> {
    let enabled = match s.get_value("tls") {
        None => false,
        Some(Value::Scalar(_)) => s.get_bool("tls")?.unwrap_or(false),
        Some(Value::Map(entries)) => {
            // Reading `tls` marked the whole map as known, so its keys are checked here.
            for (k, line, _) in &entries {
                if !TLS_KEYS.iter().any(|t| t.eq_ignore_ascii_case(k)) {
                    let suggestion = closest(&k.to_ascii_lowercase(), TLS_KEYS.iter().copied())
                        .map(|c| format!("tls.{c}"));
                    return Err(setting_error(
                        s,
                        format!("tls.{k}"),
                        *line,
                        "unknown key",
                        suggestion,
                    ));
                }
            }
            true
        }
        Some(Value::List(_)) => {
            return Err(s.error("tls", "expects on or off, or a map of tls.* options"));
        }
    };
    let options = TlsOptions::from_section(s)?;
    if !enabled {
        for (key, set) in [
            ("tls.ca_file", options.ca_file.is_some()),
            ("tls.ca_path", options.ca_path.is_some()),
            ("tls.crt_file", options.crt_file.is_some()),
            ("tls.vhost", options.vhost.is_some()),
        ] {
            if set {
                // Otherwise the user would believe the connection is encrypted.
                return Err(s.error(
                    key,
                    "is set but tls is off: write 'tls: on' to connect with TLS",
                ));
            }
        }
    }
    Ok((enabled, options))
}

fn header(
    s: &Section,
    key: &str,
    name: &str,
    value: &str,
) -> Result<(HeaderName, HeaderValue), ConfigError> {
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| s.error(key, format!("'{}' is not a valid header name", name.trim())))?;
    if RESERVED_HEADERS.contains(&name.as_str()) {
        return Err(s.error(key, format!("'{name}' is set by the output itself")));
    }
    let mut value = HeaderValue::from_str(value.trim()).map_err(|_| {
        s.error(
            key,
            format!("the value of '{name}' is not a valid header value"),
        )
    })?;
    // Custom headers often carry API keys: keep them out of any debug output.
    value.set_sensitive(true);
    Ok((name, value))
}

fn auth_value(s: &Section, key: &str, text: String) -> Result<HeaderValue, ConfigError> {
    let mut v = HeaderValue::from_str(&text)
        .map_err(|_| s.error(key, "contains characters not allowed in a header"))?;
    v.set_sensitive(true);
    Ok(v)
}

impl OtlpOptions {
    /// Reads the options (without calling `finish`, which the topology does).
    pub fn from_section(s: &mut Section) -> Result<OtlpOptions, ConfigError> {
        let host = s.get_str_or("host", DEFAULT_HOST)?.trim().to_string();
        if host.is_empty() || host.contains(['/', '@', ' ']) {
            return Err(s.error("host", "expects a host name or IP address"));
        }
        let port = s.get_u64("port")?.unwrap_or(DEFAULT_PORT);
        if !(1..=65535).contains(&port) {
            return Err(s.error("port", "must be between 1 and 65535"));
        }
        let logs_uri = s
            .get_str_or("logs_uri", DEFAULT_LOGS_URI)?
            .trim()
            .to_string();
        if !logs_uri.starts_with('/') || logs_uri.parse::<http::uri::PathAndQuery>().is_err() {
            return Err(s.error(
                "logs_uri",
                "expects a path starting with '/', such as /v1/logs",
            ));
        }
        let (tls_on, tls_options) = read_tls(s)?;
        let mut tls = TlsClientSettings::from_options(&tls_options);
        // Collectors behind public names usually have certificates from public CAs.
        tls.use_webpki_roots = tls.ca_file.is_none() && tls.ca_path.is_none();
        let loopback = host == "localhost"
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        let host_in_url = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host
        };
        let base_url = format!(
            "{}://{host_in_url}:{port}",
            if tls_on { "https" } else { "http" }
        );

        let mut headers = Vec::new();
        for line in s.get_list("header")?.unwrap_or_default() {
            let line = line.trim();
            let (name, value) = match line.split_once(':') {
                Some((n, v)) if !n.contains(char::is_whitespace) => (n, v),
                _ => line.split_once(char::is_whitespace).unwrap_or((line, "")),
            };
            headers.push(header(s, "header", name, value)?);
        }
        for (name, value) in s.get_map("headers")?.unwrap_or_default() {
            headers.push(header(s, "headers", &name, &value)?);
        }

        let user = s.get_str("http_user")?.filter(|u| !u.is_empty());
        let passwd = s.get_str("http_passwd")?.unwrap_or_default();
        let token = s
            .get_str("bearer_token")?
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        let token_file = s
            .get_str("bearer_token_file")?
            .filter(|p| !p.trim().is_empty())
            .map(PathBuf::from);
        let auth = match (user, token, token_file) {
            (None, None, None) => {
                if !passwd.is_empty() {
                    return Err(s.error("http_passwd", "is set without http_user"));
                }
                Auth::None
            }
            (Some(user), None, None) => {
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{passwd}"));
                Auth::Basic(auth_value(s, "http_user", format!("Basic {encoded}"))?)
            }
            (None, Some(token), None) => {
                Auth::Bearer(auth_value(s, "bearer_token", format!("Bearer {token}"))?)
            }
            (None, None, Some(path)) => Auth::BearerFile(path),
            (_, _, _) => {
                return Err(s.section_error(
                    "http_user, bearer_token and bearer_token_file are alternatives: set only one",
                ));
            }
        };
        if auth != Auth::None
            && headers
                .iter()
                .any(|(n, _)| n == http::header::AUTHORIZATION)
        {
            return Err(s.error(
                "header",
                "sets Authorization while http_user or a bearer token is configured",
            ));
        }

        if auth != Auth::None && !tls_on && !loopback {
            tracing::warn!(output = %s.label(), url = %base_url,
                "credentials are sent over plain HTTP to another machine: set 'tls: on'");
        }
        let gzip = matches!(
            s.get_choice("compress", &["gzip", "none", "off"])?,
            Some("gzip")
        );
        let timeout = s.get_duration("timeout")?.unwrap_or(DEFAULT_TIMEOUT);
        if timeout.is_zero() {
            return Err(s.error("timeout", "must be more than 0"));
        }
        let body = match s.get_choice("body_format", &["message", "record"])? {
            Some("record") => BodyFormat::Record,
            _ => BodyFormat::Message,
        };
        let object_resource = s.get_bool("object_resource")?.unwrap_or(true);
        let mut resource = vec![("service.name".to_string(), DEFAULT_SERVICE_NAME.to_string())];
        if let Some(cluster) = s
            .get_str("cluster_name")?
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
        {
            resource.push(("k8s.cluster.name".to_string(), cluster));
        }
        for (k, v) in s.get_map("resource")?.unwrap_or_default() {
            if k.trim().is_empty() {
                return Err(s.error("resource", "attribute names cannot be empty"));
            }
            match resource.iter_mut().find(|(key, _)| *key == k) {
                Some(slot) => slot.1 = v,
                None => resource.push((k, v)),
            }
        }
        Ok(OtlpOptions {
            base_url,
            logs_uri,
            tls,
            headers,
            auth,
            gzip,
            timeout,
            encode: EncodeOptions {
                body,
                object_resource,
                resource,
            },
        })
    }
}
