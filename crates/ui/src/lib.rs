//! kubetrail's activity page: the cluster's recent activity (audit events, Kubernetes Events,
//! gaps) as a timeline to narrow and watch live, and each object's story with the chains of
//! causes of its changes, every step one click from the record it rests on.
//!
//! Every page is a query with its inputs in the URL, and the JSON behind it is the same query
//! with `.json` (`/timeline?namespace=shop&verb=delete` and `/timeline.json?…`,
//! `/who?object=pod/web-0&namespace=shop` and `/who.json?…` — the answer `kubetrail who -o
//! json` prints, `/record?id=…` and `/record.json?id=…`). The queries are
//! `kubetrail-query`'s, the same code the command line runs, under a time limit each.
//!
//! The HTML is rendered here, on the server, and works without JavaScript; a small script
//! shipped inside the binary (`assets/`) adds live updates (server-sent events), filter
//! changes without a reload, raw records opened in place and keyboard navigation. No CDN, no
//! build step.
//!
//! Read-only; authentication on by default (a client certificate, a bearer token, or the
//! session cookie the sign-in form sets for a token: see [`auth`]); HTTPS with the same
//! rustls code as the audit webhook (`kubetrail_net::server_tls`).
//!
//! - [`options`]: the `ui.*` keys.
//! - [`auth`]: who may read.
//! - `server`: connections, TLS, limits, shutdown.
//! - `routes`: URLs → answers; security headers.
//! - `pages`: the HTML.
//! - `live`: new records as server-sent events.
//! - `assets`: the stylesheet and the script, embedded.
//! - `secrets`: what the page never shows of a Secret.

mod assets;
pub mod auth;
mod live;
pub mod options;
mod pages;
mod routes;
mod secrets;
mod server;
mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use kubetrail_net::server_tls::{TlsSetupError, server_config};
use kubetrail_net::tokens::{TokenFile, TokenFileError};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

pub use options::UiOptions;
pub use store::{OpenStore, OpenedStore};

/// Why the page could not start.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error("activity page TLS: {0}")]
    Tls(#[from] TlsSetupError),
    #[error("activity page: {0}")]
    Tokens(#[from] TokenFileError),
    #[error("the activity page cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The page, bound and ready to serve.
pub struct ActivityPage {
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    options: UiOptions,
    auth: auth::Auth,
    open: OpenStore,
}

impl ActivityPage {
    /// Loads the TLS material and the token file and binds the address, so that every
    /// problem shows before anything is served. `open` opens the store to read; it is called
    /// again until it succeeds (the `store` output creates its database when it starts).
    pub async fn bind(options: UiOptions, open: OpenStore) -> Result<ActivityPage, UiError> {
        let acceptor = match &options.tls {
            Some(t) => Some(TlsAcceptor::from(server_config(t)?)),
            None => None,
        };
        let tokens = match &options.token_file {
            Some(p) => Some(TokenFile::load(p)?),
            None => None,
        };
        let client_certs = options
            .tls
            .as_ref()
            .is_some_and(|t| t.client_ca_file.is_some());
        let auth = auth::Auth::new(
            !options.auth_required,
            client_certs,
            tokens,
            options.session_ttl,
            acceptor.is_some(),
        );
        let addr = options.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| UiError::Bind { addr, source })?;
        Ok(ActivityPage {
            listener,
            acceptor,
            options,
            auth,
            open,
        })
    }

    /// The address the page listens on (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Checks what [`ActivityPage::bind`] would load, without binding (`kubetrail check`).
    pub fn preflight(options: &UiOptions) -> Result<(), UiError> {
        if let Some(t) = &options.tls {
            server_config(t)?;
        }
        if let Some(p) = &options.token_file {
            TokenFile::load(p)?;
        }
        Ok(())
    }

    /// Serves until `stop` resolves, then drains.
    pub async fn serve(self, stop: impl Future<Output = ()> + Send + 'static) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let trigger = tokio::spawn(async move {
            stop.await;
            let _ = stop_tx.send(true);
        });
        let scheme = if self.acceptor.is_some() {
            "https"
        } else {
            "http"
        };
        if !self.options.auth_required {
            tracing::warn!(
                "the activity page lets anyone who can connect read the cluster's activity (ui.auth: none)"
            );
        }
        if self.acceptor.is_none()
            && self.auth.has_tokens()
            && !self.options.listen.ip().is_loopback()
        {
            tracing::warn!(
                "activity page tokens and session cookies travel in clear text (ui.tls: off)"
            );
        }
        tracing::info!(addr = ?self.local_addr(), %scheme, "activity page listening");
        let app = Arc::new(routes::App::new(
            self.auth,
            store::StoreSlot::new(self.open),
            live::Live::new(self.options.max_live),
            stop_rx.clone(),
        ));
        server::serve(
            self.listener,
            self.acceptor,
            app,
            self.options.max_connections,
            stop_rx,
        )
        .await;
        trigger.abort();
    }
}
