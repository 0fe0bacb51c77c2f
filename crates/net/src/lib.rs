//! kubetrail-net: TLS client settings (rustls with ring) and a small streaming HTTP/1.1 client,
//! shared by the Kubernetes connection and the outputs. Knows nothing of Kubernetes.
//!
//! - [`TlsClientSettings`] → [`TlsClientSettings::build`] gives a rustls `ClientConfig`.
//! - [`HttpClient`] sends requests to one base URL and returns [`ResponseBody`]s that stream.
//! - [`NetError`] says what failed and where; TLS certificate failures name the URL and the CA.

mod body;
mod client;
mod error;
mod tls;

pub use body::ResponseBody;
pub use client::{HttpClient, HttpClientOptions};
pub use error::NetError;
pub use tls::{TlsClientSettings, crypto_provider};

/// Re-exported so that callers build request bodies with the same type.
pub use http_body_util::Full;

#[cfg(test)]
mod tests;
