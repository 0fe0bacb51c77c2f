//! The activity page's server alone over an activity database, for the page's benchmark
//! (`bench/ui-page.sh`): the same `ActivityPage` and the same store reads `kubetrail ui
//! --store PATH --token-file FILE --no-tls` runs, without the rest of the binary (which the
//! benchmark would otherwise have to build in release).
//!
//! ```text
//! cargo run --release -p kubetrail-ui --example serve_store -- PATH TOKEN_FILE
//! ```
//!
//! Listens on 127.0.0.1 (a free port) over plain HTTP, prints `activity page: ADDR` on
//! stderr, and serves until SIGINT or SIGTERM.

use std::sync::Arc;

use kubetrail_core::config::{Section, SectionKind};
use kubetrail_query::Store;
use kubetrail_ui::{ActivityPage, OpenStore, OpenedStore, UiOptions};

fn fail(e: impl std::fmt::Display) -> ! {
    eprintln!("serve_store: {e}");
    std::process::exit(1);
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(tokens)) = (args.next(), args.next()) else {
        eprintln!("usage: serve_store PATH TOKEN_FILE");
        std::process::exit(2);
    };
    let mut section = Section::from_pairs(
        SectionKind::Service,
        "",
        &[
            ("ui.listen", "127.0.0.1:0"),
            ("ui.token_file", &tokens),
            ("ui.tls", "off"),
        ],
    );
    let options = match UiOptions::from_section(&mut section) {
        Ok(Some(o)) => o,
        Ok(None) => fail("ui.listen is not set"),
        Err(e) => fail(e),
    };
    let timeout = options.query_timeout;
    let open: OpenStore = Arc::new(move || {
        let path = path.clone();
        Box::pin(async move {
            let store = Store::sqlite_with_timeout(&path, timeout).map_err(|e| e.to_string())?;
            Ok(OpenedStore { store, keep: None })
        })
    });
    let page = ActivityPage::bind(options, open)
        .await
        .unwrap_or_else(|e| fail(e));
    if let Some(addr) = page.local_addr() {
        eprintln!("activity page: {addr}");
    }
    page.serve(async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => fail(e),
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    })
    .await;
}
