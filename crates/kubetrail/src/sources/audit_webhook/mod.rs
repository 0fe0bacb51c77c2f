//! The `audit_webhook` input: an HTTPS endpoint for the kube-apiserver's audit webhook backend
//! (`--audit-webhook-config-file`). Each POSTed `EventList` is split into one `k8s_audit`
//! record per event (see [`crate::sources::audit`]), and the answer is 200 only once those
//! records are durable in the pipeline. Anything that stops that (a full queue, a storage
//! error, shutdown) is a 503, so the apiserver retries the same batch, and the `auditID/stage`
//! dedup key makes the retry harmless.
//!
//! Options (defaults in brackets): `listen` [`0.0.0.0:9443`], `path` [`/audit`],
//! `tls.crt_file` + `tls.key_file` (required; re-read when they change) or `tls: off`,
//! `tls.client_ca_file` and/or `token_file` (client authentication, required unless
//! `auth: none`), `max_body_size` [`12M`], `format` [`json`] or `raw`, `dedup_retention`
//! [`1h`], `max_connections` [`64`].
//!
//! Answers: 200 stored; 400 not JSON (or bad gzip); 401 no valid credentials (the body is not
//! read); 404 other path; 405 not POST; 408 body too slow; 413 body over `max_body_size`
//! (declared, received or decompressed); 415 not a JSON content type or an unknown content
//! encoding; 503 not stored now, retry. Counted in
//! `kubetrail_webhook_requests_total{component,code}`.

mod auth;
mod config;
mod handler;
mod server;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use kubetrail_core::config::{ConfigError, Section};
use kubetrail_net::server_tls::server_config;
use kubetrail_net::tokens::TokenFile;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

pub use config::{
    DEFAULT_DEDUP_RETENTION, DEFAULT_LISTEN, DEFAULT_MAX_BODY_SIZE, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_PATH, ServerTls, WebhookOptions,
};
pub use handler::Commit;
pub use kubetrail_net::server_tls::TlsSetupError;
pub use kubetrail_net::tokens::{RELOAD_CHECK_INTERVAL, TokenFileError};

use crate::pipeline::{Source, SourceContext, SourceError};
use crate::shutdown::Shutdown;
use crate::telemetry::{ComponentMetrics, Metrics};

/// Why the webhook could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("audit webhook TLS: {0}")]
    Tls(#[from] TlsSetupError),
    #[error("audit webhook: {0}")]
    Tokens(#[from] TokenFileError),
    #[error("audit webhook cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What a running webhook needs besides its options: its identity, where its metrics go, and
/// when to stop. [`AuditWebhook::run`] builds it from the source context.
#[derive(Clone)]
pub struct ServeEnv {
    /// The instance name (metrics label, logs, record `source`).
    pub name: Arc<str>,
    /// The records' routing tag.
    pub tag: Arc<str>,
    pub shutdown: Shutdown,
    pub registry: Arc<Metrics>,
    pub metrics: ComponentMetrics,
}

/// The `audit_webhook` input.
#[derive(Debug, Clone)]
pub struct AuditWebhook {
    options: WebhookOptions,
}

impl AuditWebhook {
    /// Reads the options; `finish` is left to the caller (the topology).
    pub fn from_section(section: &mut Section) -> Result<AuditWebhook, ConfigError> {
        Ok(AuditWebhook {
            options: WebhookOptions::from_section(section)?,
        })
    }

    /// A webhook with options built in code (tests, built-in pipelines).
    pub fn new(options: WebhookOptions) -> AuditWebhook {
        AuditWebhook { options }
    }

    pub fn options(&self) -> &WebhookOptions {
        &self.options
    }

    /// Serves on an already bound listener until `env.shutdown` fires and the in-flight
    /// requests are done, committing through `commit`. Loads the TLS material and the token
    /// file first; an error there is returned before anything is served.
    pub async fn serve(
        self,
        listener: TcpListener,
        commit: Arc<dyn Commit>,
        env: ServeEnv,
    ) -> Result<(), WebhookError> {
        let acceptor = match &self.options.tls {
            Some(t) => Some(TlsAcceptor::from(server_config(t)?)),
            None => None,
        };
        let tokens = match &self.options.token_file {
            Some(p) => Some(TokenFile::load(p)?),
            None => None,
        };
        let client_certs = self
            .options
            .tls
            .as_ref()
            .is_some_and(|t| t.client_ca_file.is_some());
        let authenticator = auth::Authenticator {
            open: !self.options.auth_required,
            client_certs,
            tokens,
        };
        if !self.options.auth_required {
            tracing::warn!(component = %env.name, "audit webhook accepts posts from anyone who can connect (auth: none)");
        }
        if acceptor.is_none() && authenticator.tokens.is_some() {
            tracing::warn!(component = %env.name, "audit webhook tokens travel in clear text (tls: off)");
        }
        let addr = listener.local_addr().ok();
        tracing::info!(component = %env.name, addr = ?addr, path = %self.options.path,
            tls = acceptor.is_some(), "audit webhook listening");
        let shared = Arc::new(handler::Shared {
            options: self.options,
            auth: authenticator,
            commit,
            name: env.name,
            tag: env.tag,
            registry: env.registry,
            metrics: env.metrics,
            inflight: Semaphore::new(handler::MAX_INFLIGHT_REQUESTS),
            parse_slots: Semaphore::new(handler::parse_parallelism()),
        });
        server::serve(listener, acceptor, shared, env.shutdown).await;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Source for AuditWebhook {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let addr = self.options.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| SourceError(WebhookError::Bind { addr, source }.to_string()))?;
        let env = ServeEnv {
            name: ctx.name.clone(),
            tag: ctx.tag.clone(),
            shutdown: ctx.shutdown.clone(),
            registry: ctx.registry.clone(),
            metrics: ctx.metrics.clone(),
        };
        let commit: Arc<dyn Commit> = Arc::new(ctx);
        self.serve(listener, commit, env)
            .await
            .map_err(|e| SourceError(e.to_string()))
    }

    fn preflight(&self) -> Result<(), String> {
        if let Some(t) = &self.options.tls {
            server_config(t).map_err(|e| e.to_string())?;
        }
        if let Some(p) = &self.options.token_file {
            TokenFile::load(p).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}
