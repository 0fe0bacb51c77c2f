//! The topology: builds the graph of components from configuration (`Plan::from_config`),
//! describes it (`kubetrail check`), runs it and shuts it down cleanly (`Plan::run`).

mod build;
mod output_runner;
mod run;

use std::sync::Arc;
use std::time::Duration;

pub use build::{BuildError, component_names};
pub use output_runner::backoff;
pub use run::{RunError, stop_signal};

use crate::pipeline::matcher::Matcher;
use crate::pipeline::{Filter, Output, Source};
use crate::service::ServiceOptions;

/// An input ready to run.
pub struct InputPlan {
    pub name: Arc<str>,
    pub plugin: String,
    pub tag: Arc<str>,
    pub source: Box<dyn Source>,
}

/// A filter ready to run.
pub struct FilterPlan {
    pub name: String,
    pub plugin: String,
    pub matcher: Matcher,
    pub filter: Arc<dyn Filter>,
}

/// How an output's queue and deliveries behave (the options every output has).
#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    /// `storage.total_limit_size` (default 1G): the queue's size limit in bytes.
    pub total_limit_size: u64,
    /// `retry_limit` (default `no_limits`): failed deliveries of one batch before it is
    /// dead-lettered; `None` = retry for ever.
    pub retry_limit: Option<u64>,
    /// `retry_max_backoff` (default 60s): the cap of the exponential backoff between retries.
    pub retry_max_backoff: Duration,
    /// `retry_base_backoff` (default 1s): the first retry's delay.
    pub retry_base_backoff: Duration,
    /// `storage.on_full` (default `backpressure`): `drop_oldest` or `drop_newest` drop records
    /// (counted, and reported by a gap record) instead of pausing the inputs.
    pub on_full: crate::pipeline::journal::OnFull,
    /// `batch.records` (default 2000): records per delivery at most.
    pub batch_records: usize,
    /// `batch.bytes` (default 4M): bytes per delivery at most (a bigger single record still
    /// goes alone).
    pub batch_bytes: usize,
}

/// An output ready to run.
pub struct OutputPlan {
    pub name: String,
    pub plugin: String,
    pub matcher: Matcher,
    pub output: Box<dyn Output>,
    pub delivery: DeliveryOptions,
}

/// The whole resolved pipeline.
pub struct Plan {
    pub service: ServiceOptions,
    pub inputs: Vec<InputPlan>,
    pub filters: Vec<FilterPlan>,
    pub outputs: Vec<OutputPlan>,
}

impl Plan {
    /// Reads every file the components will read when they start (certificates, keys, CA
    /// bundles, token and password files, kubeconfig) and says which ones are missing or
    /// broken: `component: problem`, one per failing component.
    pub fn preflight(&self) -> Vec<String> {
        let inputs = self.inputs.iter().filter_map(|i| {
            i.source
                .preflight()
                .err()
                .map(|e| format!("input {}: {e}", i.name))
        });
        let outputs = self.outputs.iter().filter_map(|o| {
            o.output
                .preflight()
                .err()
                .map(|e| format!("output {}: {e}", o.name))
        });
        let ui = self.service.ui.as_ref().and_then(|u| {
            kubetrail_ui::ActivityPage::preflight(u)
                .err()
                .map(|e| format!("service: {e}"))
        });
        inputs.chain(outputs).chain(ui).collect()
    }

    /// A human-readable description of the resolved pipeline (for `kubetrail check`).
    pub fn describe(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(s, "service:");
        let _ = writeln!(s, "  data_dir: {}", self.service.data_dir.display());
        match self.service.http_listen {
            Some(a) => {
                let _ = writeln!(s, "  http_listen: {a}");
            }
            None => {
                let _ = writeln!(s, "  http_listen: off");
            }
        }
        if let Some(ui) = &self.service.ui {
            let scheme = if ui.tls.is_some() { "https" } else { "http" };
            let _ = writeln!(s, "  ui.listen: {} ({scheme})", ui.listen);
        }
        let _ = writeln!(s, "  log_level: {}", self.service.log_level);
        let _ = writeln!(s, "  grace: {:?}", self.service.grace);
        let _ = writeln!(s, "inputs:");
        for i in &self.inputs {
            let _ = writeln!(s, "  - {} ({}) tag={}", i.name, i.plugin, i.tag);
        }
        let _ = writeln!(s, "filters:");
        for f in &self.filters {
            let _ = writeln!(
                s,
                "  - {} ({}) match={}",
                f.name,
                f.plugin,
                describe_matcher(&f.matcher)
            );
        }
        let _ = writeln!(s, "outputs:");
        for o in &self.outputs {
            let _ = writeln!(
                s,
                "  - {} ({}) match={} queue_limit={} bytes",
                o.name,
                o.plugin,
                describe_matcher(&o.matcher),
                o.delivery.total_limit_size
            );
        }
        let _ = writeln!(s, "routes:");
        for i in &self.inputs {
            let filters: Vec<&str> = self
                .filters
                .iter()
                .filter(|f| f.matcher.matches(&i.tag))
                .map(|f| f.name.as_str())
                .collect();
            let outputs: Vec<&str> = self
                .outputs
                .iter()
                .filter(|o| o.matcher.matches(&i.tag))
                .map(|o| o.name.as_str())
                .collect();
            let _ = writeln!(
                s,
                "  {} -> [{}] -> [{}]{}",
                i.name,
                filters.join(", "),
                outputs.join(", "),
                if outputs.is_empty() {
                    "  (warning: no output matches this tag)"
                } else {
                    ""
                }
            );
        }
        s
    }
}

fn describe_matcher(m: &Matcher) -> String {
    match m {
        Matcher::Wildcard(p) => format!("'{p}'"),
        Matcher::Regex(r) => format!("/{}/", r.as_str()),
    }
}
