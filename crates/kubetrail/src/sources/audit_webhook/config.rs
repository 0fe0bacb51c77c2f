//! The `audit_webhook` input's options, read from its configuration section.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use kubetrail_core::config::{ConfigError, Section};
pub use kubetrail_net::server_tls::ServerTls;
use kubetrail_net::server_tls::read_server_tls;

/// The resolved options of one `audit_webhook` input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookOptions {
    /// `listen` (default `0.0.0.0:9443`): the address to accept connections on.
    pub listen: SocketAddr,
    /// `path` (default `/audit`): the request path; the query (`?timeout=30s`) is ignored.
    pub path: String,
    /// HTTPS settings; `None` only when `tls: off` is written.
    pub tls: Option<ServerTls>,
    /// `token_file`: accepted bearer tokens, one per line (empty lines and `#` comments
    /// skipped), re-read when the file changes.
    pub token_file: Option<PathBuf>,
    /// `false` only when `auth: none` is written: then anyone who can connect may post.
    pub auth_required: bool,
    /// `max_body_size` (default `12M`): the largest body accepted, after gzip decompression.
    pub max_body_size: usize,
    /// `format` (default `json`): `raw` makes records encode as the audit event alone.
    pub raw_format: bool,
    /// `dedup_retention` (default `1h`): how long `auditID/stage` keys are remembered, so
    /// that an apiserver retry of a batch already stored is not stored twice.
    pub dedup_retention: Duration,
    /// `max_connections` (default `64`): connections beyond this are closed at once.
    pub max_connections: usize,
}

/// Defaults, named so the documentation and the code agree.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9443";
pub const DEFAULT_PATH: &str = "/audit";
pub const DEFAULT_MAX_BODY_SIZE: u64 = 12 << 20;
pub const DEFAULT_DEDUP_RETENTION: Duration = Duration::from_secs(3600);
pub const DEFAULT_MAX_CONNECTIONS: u64 = 64;

impl WebhookOptions {
    /// Reads the options (without calling `finish`, which the topology does).
    pub fn from_section(s: &mut Section) -> Result<WebhookOptions, ConfigError> {
        let listen_text = s.get_str_or("listen", DEFAULT_LISTEN)?;
        let listen: SocketAddr = listen_text.trim().parse().map_err(|_| {
            s.error(
                "listen",
                format!("'{listen_text}' is not an address like 0.0.0.0:9443"),
            )
        })?;
        let path = s.get_str_or("path", DEFAULT_PATH)?;
        if !path.starts_with('/') {
            return Err(s.error("path", format!("'{path}' must start with '/'")));
        }
        let tls = read_server_tls(s, "tls", "the audit webhook")?;
        let token_file = s
            .get_str("token_file")?
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        let auth_required = !matches!(s.get_choice("auth", &["required", "none"])?, Some("none"));
        let client_ca = tls.as_ref().is_some_and(|t| t.client_ca_file.is_some());
        if auth_required && !client_ca && token_file.is_none() {
            return Err(s.section_error(
                "the audit webhook requires client authentication: set tls.client_ca_file \
                 and/or token_file, or write 'auth: none' to accept anyone who can connect",
            ));
        }
        if !auth_required && (client_ca || token_file.is_some()) {
            let key = if token_file.is_some() {
                "token_file"
            } else {
                "tls.client_ca_file"
            };
            return Err(s.error(
                key,
                "'auth: none' disables authentication; remove one of them",
            ));
        }
        let max_body_size = s
            .get_size("max_body_size")?
            .unwrap_or(DEFAULT_MAX_BODY_SIZE);
        if max_body_size == 0 {
            return Err(s.error("max_body_size", "must be more than 0"));
        }
        let max_body_size = usize::try_from(max_body_size)
            .map_err(|_| s.error("max_body_size", "too large for this machine"))?;
        let raw_format = matches!(s.get_choice("format", &["json", "raw"])?, Some("raw"));
        let dedup_retention = s
            .get_duration("dedup_retention")?
            .unwrap_or(DEFAULT_DEDUP_RETENTION);
        let max_connections = s
            .get_u64("max_connections")?
            .unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            return Err(s.error("max_connections", "must be at least 1"));
        }
        let max_connections = usize::try_from(max_connections).unwrap_or(usize::MAX);
        Ok(WebhookOptions {
            listen,
            path,
            tls,
            token_file,
            auth_required,
            max_body_size,
            raw_format,
            dedup_retention,
            max_connections,
        })
    }
}
