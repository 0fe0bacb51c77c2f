//! The activity page from the command line: served by `kubetrail run` beside the pipeline
//! when the configuration sets `service.ui.listen`, or alone by `kubetrail ui` over any store
//! `kubetrail who` can read (a copy of a database, a team's PostgreSQL). Both read through
//! the same store opening as `who` and `activity` (`answers::SourceArgs`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use kubetrail::topology::{Plan, stop_signal};
use kubetrail_core::config::{Section, SectionKind};
use kubetrail_ui::{ActivityPage, OpenStore, OpenedStore, UiOptions};

use super::answers::SourceArgs;

#[derive(clap::Args, Debug)]
pub struct UiArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// The address to serve on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:2021")]
    listen: SocketAddr,
    /// Accepted bearer tokens, one per line (people sign in with one; programs send it as
    /// `Authorization: Bearer`).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// The page's certificate (PEM); HTTPS needs it with --tls-key-file.
    #[arg(long, value_name = "FILE", requires = "tls_key_file")]
    tls_crt_file: Option<PathBuf>,
    /// The key of --tls-crt-file (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_crt_file")]
    tls_key_file: Option<PathBuf>,
    /// Accept client certificates that chain to this CA bundle (PEM) as authentication.
    #[arg(long, value_name = "FILE", requires = "tls_crt_file")]
    tls_client_ca_file: Option<PathBuf>,
    /// Serve plain HTTP (without --tls-crt-file this must be said).
    #[arg(long, conflicts_with = "tls_crt_file")]
    no_tls: bool,
    /// Let anyone who can connect read (without --token-file or a client CA this must be
    /// said).
    #[arg(long, conflicts_with_all = ["token_file", "tls_client_ca_file"])]
    no_auth: bool,
    /// How long a sign-in lasts.
    #[arg(long, value_name = "DURATION", default_value = "12h")]
    session_ttl: String,
}

impl UiArgs {
    /// The same options a configuration's `ui.*` keys give, checked by the same code.
    fn options(&self) -> anyhow::Result<UiOptions> {
        let listen = self.listen.to_string();
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        let (token, crt, key, ca) = (
            path(&self.token_file),
            path(&self.tls_crt_file),
            path(&self.tls_key_file),
            path(&self.tls_client_ca_file),
        );
        let mut pairs: Vec<(&str, &str)> = vec![
            ("ui.listen", &listen),
            ("ui.session_ttl", &self.session_ttl),
        ];
        for (k, v) in [
            ("ui.token_file", &token),
            ("ui.tls.crt_file", &crt),
            ("ui.tls.key_file", &key),
            ("ui.tls.client_ca_file", &ca),
        ] {
            if let Some(v) = v {
                pairs.push((k, v));
            }
        }
        if self.no_tls {
            pairs.push(("ui.tls", "off"));
        }
        if self.no_auth {
            pairs.push(("ui.auth", "none"));
        }
        let mut s = Section::from_pairs(SectionKind::Service, "", &pairs);
        let flag = |e: kubetrail_core::config::ConfigError| {
            // The section's keys are the flags' names in the configuration.
            anyhow::anyhow!("{e}").context("the page's options (see kubetrail ui --help)")
        };
        UiOptions::from_section(&mut s)
            .map_err(flag)?
            .context("--listen is required")
    }
}

/// Opens the store for the page, again at each request until it succeeds.
fn opener(source: SourceArgs) -> OpenStore {
    let source = Arc::new(source);
    Arc::new(move || {
        let source = source.clone();
        Box::pin(async move {
            let opened = source.open().await.map_err(|e| format!("{e:#}"))?;
            Ok(OpenedStore {
                store: opened.store.clone(),
                keep: Some(Box::new(opened)),
            })
        })
    })
}

/// `kubetrail ui`: the page alone, until SIGTERM or SIGINT.
pub async fn serve(args: UiArgs) -> anyhow::Result<()> {
    let options = args.options()?;
    let page = ActivityPage::bind(options, opener(args.source)).await?;
    if let Some(addr) = page.local_addr() {
        eprintln!("activity page: {addr}");
    }
    page.serve(stop_signal()).await;
    Ok(())
}

/// `kubetrail run`: the pipeline, and the page beside it when `service.ui.listen` is set. The
/// page is bound before the pipeline starts (a port in use stops the start) and stops after
/// the pipeline has drained.
pub async fn run(plan: Plan, config: &Path) -> anyhow::Result<()> {
    let Some(options) = plan.service.ui.clone() else {
        return Ok(plan.run(stop_signal()).await?);
    };
    let source = SourceArgs::of_config(
        config.to_path_buf(),
        options.store.clone(),
        options.query_timeout,
    );
    let page = ActivityPage::bind(options, opener(source)).await?;
    let (stop_page, page_stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(page.serve(async move {
        let _ = page_stopped.await;
    }));
    let result = plan.run(stop_signal()).await;
    let _ = stop_page.send(());
    served.await.context("the activity page's task")?;
    Ok(result?)
}
