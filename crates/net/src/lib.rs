//! kubetrail-net: TLS client settings (rustls with ring) and a small streaming HTTP/1.1 client,
//! shared by the Kubernetes connection and the outputs, and what kubetrail's servers (the
//! audit webhook, the activity page) share: server TLS and bearer token files. Knows nothing
//! of Kubernetes.
//!
//! - [`TlsClientSettings`] → [`TlsClientSettings::build`] gives a rustls `ClientConfig`.
//! - [`HttpClient`] sends requests to one base URL and returns [`ResponseBody`]s that stream.
//! - [`NetError`] says what failed and where; TLS certificate failures name the URL and the CA.
//! - [`server_tls`]: a server's `tls` options, its reloading certificate, client certificates.
//! - [`tokens`]: accepted bearer tokens from a file that may rotate.

mod body;
mod client;
mod error;
pub mod server_tls;
mod tls;
pub mod tokens;

pub use body::ResponseBody;
pub use client::{HttpClient, HttpClientOptions};
pub use error::NetError;
pub use tls::{TlsClientSettings, crypto_provider};

/// Re-exported so that callers build request bodies with the same type.
pub use http_body_util::Full;

#[cfg(test)]
mod tests;
