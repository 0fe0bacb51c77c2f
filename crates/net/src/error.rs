//! The one error type of kubetrail-net: what failed (reading a CA file, connecting, the TLS
//! handshake, reading a body) and where (the file or the URL), keeping the source error.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while building TLS settings or talking HTTP.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The base URL given to [`crate::HttpClient::new`] is unusable.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },

    /// A request could not be built from the parts given.
    #[error("invalid request for {url}: {reason}")]
    InvalidRequest { url: String, reason: String },

    /// A file named in the TLS settings could not be read.
    #[error("cannot read {what} {path}: {source}")]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A PEM file or inline PEM data could not be parsed.
    #[error("cannot parse {what} {origin}: {reason}")]
    ParsePem {
        what: &'static str,
        /// The file name, or a description of the inline data.
        origin: String,
        reason: String,
    },

    /// A CA source held no usable certificate.
    #[error("{what} {origin} holds no usable CA certificate")]
    NoCertificates { what: &'static str, origin: String },

    /// Verification is on but no CA was configured.
    #[error(
        "TLS verification is on but no CA is configured (set a CA file, a CA directory, or turn tls.verify off)"
    )]
    NoTrustAnchors,

    /// Only one half of a client certificate / key pair was given.
    #[error(
        "a client certificate needs both a certificate and a key; only the {present} was given"
    )]
    IncompleteClientCert { present: &'static str },

    /// rustls refused the client certificate and key.
    #[error("the client certificate {cert} and key {key} do not form a usable pair: {source}")]
    ClientCert {
        cert: String,
        key: String,
        #[source]
        source: Box<rustls::Error>,
    },

    /// `tls.vhost` is not a DNS name or IP address.
    #[error("tls.vhost {name:?} is not a valid DNS name or IP address")]
    InvalidVhost { name: String },

    /// rustls rejected the configuration (protocol versions, verifier).
    #[error("cannot build the TLS configuration: {source}")]
    TlsConfig {
        #[source]
        source: Box<rustls::Error>,
    },

    /// The TCP connection could not be opened.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: std::io::Error,
    },

    /// Connecting (TCP and TLS handshake) took longer than the connect timeout.
    #[error("connecting to {url} timed out after {after:?}")]
    ConnectTimeout { url: String, after: Duration },

    /// The server's certificate was rejected (unknown issuer, expired, ...).
    #[error("TLS handshake with {url} failed: {source} ({ca})")]
    TlsCertificate {
        url: String,
        /// Which CA was used, e.g. `CA file: /var/run/.../ca.crt`.
        ca: String,
        #[source]
        source: Box<rustls::Error>,
    },

    /// The server's certificate does not name the host we connected to (or `tls.vhost`).
    #[error(
        "TLS handshake with {url} failed: the server certificate is not valid for the name {name:?}: {source} ({ca}); connect by a name the certificate holds or set tls.vhost"
    )]
    TlsNameMismatch {
        url: String,
        name: String,
        ca: String,
        #[source]
        source: Box<rustls::Error>,
    },

    /// Any other TLS handshake failure (protocol, alert from the server, ...).
    #[error("TLS handshake with {url} failed: {source}")]
    TlsHandshake {
        url: String,
        #[source]
        source: std::io::Error,
    },

    /// The HTTP exchange failed before a response head arrived.
    #[error("request to {url} failed: {source}")]
    Request {
        url: String,
        #[source]
        source: hyper::Error,
    },

    /// No response head arrived within the response timeout.
    #[error("no response from {url} within {after:?}")]
    ResponseTimeout { url: String, after: Duration },

    /// Reading the response body failed (connection cut, malformed chunking).
    #[error("reading the response body from {url} failed: {source}")]
    Body {
        url: String,
        #[source]
        source: hyper::Error,
    },

    /// The response body was larger than the caller allows.
    #[error("the response body from {url} is larger than {limit} bytes")]
    BodyTooLarge { url: String, limit: usize },
}

impl NetError {
    /// True for failures where retrying later may help (network, timeouts, cut bodies), false
    /// for configuration problems and certificate rejections.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            NetError::Connect { .. }
                | NetError::ConnectTimeout { .. }
                | NetError::TlsHandshake { .. }
                | NetError::Request { .. }
                | NetError::ResponseTimeout { .. }
                | NetError::Body { .. }
        )
    }
}
