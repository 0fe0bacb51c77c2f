//! Runs a [`Plan`]: opens the state database, starts the journal, the outputs and the sources,
//! and on a stop request shuts down in order: sources first (each finishes the submission in
//! flight), then outputs drain their queues until the grace period ends, then the journal.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kubetrail_state::{StateError, Store, StoreOptions};
use tokio::sync::Notify;

use super::Plan;
use super::output_runner::OutputRunner;
use crate::outputs::dead_letter::DeadLetterWriter;
use crate::pipeline::context::Route;
use crate::pipeline::journal::{self, QueueSlot};
use crate::pipeline::{Pipeline, SourceContext};
use crate::shutdown;
use crate::telemetry::health::Health;
use crate::telemetry::server::{ServerError, serve};
use crate::telemetry::{ComponentMetrics, Metrics};

/// Why the pipeline could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot start the journal thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("input {name} failed: {message}")]
    Source { name: String, message: String },
    #[error("output {name} cannot start: {message}")]
    Output { name: String, message: String },
}

impl Plan {
    /// Runs until `stop` resolves (or a source fails), then shuts down cleanly.
    pub async fn run(self, stop: impl Future<Output = ()> + Send) -> Result<(), RunError> {
        self.run_with(stop, Metrics::new()).await
    }

    /// Like [`Plan::run`], with a metrics registry the caller keeps.
    pub async fn run_with(
        self,
        stop: impl Future<Output = ()> + Send,
        metrics: Arc<Metrics>,
    ) -> Result<(), RunError> {
        // An output connects only when its first batch is due and retries what fails then;
        // a TLS file that is missing is no reason to retry for ever, so it stops the start.
        for o in &self.outputs {
            if let Err(message) = o.output.preflight() {
                return Err(RunError::Output {
                    name: o.name.clone(),
                    message,
                });
            }
        }
        let Plan {
            service,
            inputs,
            filters,
            outputs,
        } = self;
        std::fs::create_dir_all(&service.data_dir).map_err(|source| RunError::DataDir {
            path: service.data_dir.clone(),
            source,
        })?;
        let db_path = service.data_dir.join("kubetrail.db");
        let mut store = Store::open(
            &db_path,
            &StoreOptions {
                sync: service.db_sync,
                compress: service.queue_compress,
                ..Default::default()
            },
        )?;
        tracing::info!(path = %db_path.display(), "state database open");

        let health = Health::new();
        let (server_trigger, server_stop) = shutdown::channel();
        let server = match service.http_listen {
            Some(addr) => Some(
                serve(addr, metrics.clone(), health.clone(), server_stop)
                    .await?
                    .1,
            ),
            None => None,
        };
        let mut slots = HashMap::new();
        let mut routes = Vec::new();
        let mut runners = Vec::new();
        let (drain_trigger, drain) = shutdown::channel();
        let (stop_trigger, stop_outputs) = shutdown::channel();
        let (journal_handle, journal_thread);
        {
            let mut pending = Vec::new();
            for o in outputs {
                let queue = store.queue_id(&format!("output/{}", o.name))?;
                let notify = Arc::new(Notify::new());
                let labels = [("component", o.name.as_str())];
                let depth_bytes = metrics.gauge("kubetrail_queue_bytes", &labels);
                health.register_queue(&o.name, depth_bytes.clone(), o.delivery.total_limit_size);
                slots.insert(
                    queue,
                    QueueSlot {
                        name: o.name.clone(),
                        notify: notify.clone(),
                        limit_bytes: o.delivery.total_limit_size,
                        depth_records: metrics.gauge("kubetrail_queue_records", &labels),
                        depth_bytes,
                        on_full: o.delivery.on_full,
                        dropped: metrics.counter("kubetrail_component_dropped_total", &labels),
                        gaps: metrics.counter("kubetrail_gap_records_total", &labels),
                    },
                );
                let reader = Arc::new(Mutex::new(store.reader()?));
                routes.push(Route {
                    matcher: o.matcher.clone(),
                    queue,
                });
                pending.push((o, queue, notify, reader));
            }
            (journal_handle, journal_thread) = journal::spawn(
                store,
                slots,
                &metrics,
                health.disk_full(&service.data_dir),
                service.queue_retention,
            )
            .map_err(RunError::Thread)?;
            for (o, queue, notify, reader) in pending {
                let component_metrics = ComponentMetrics::register(&metrics, &o.name);
                let dead_letters =
                    DeadLetterWriter::new(service.data_dir.join("dead-letter"), o.name.clone())
                        .with_counter(component_metrics.failed.clone());
                let runner = OutputRunner {
                    metrics: component_metrics,
                    dead_letters,
                    name: o.name,
                    queue,
                    output: o.output,
                    reader,
                    journal: journal_handle.clone(),
                    notify,
                    delivery: o.delivery,
                    drain: drain.clone(),
                    stop: stop_outputs.clone(),
                };
                runners.push(tokio::spawn(runner.run()));
            }
        }
        let pipeline = Arc::new(Pipeline {
            filters: filters
                .into_iter()
                .map(|f| (f.name, f.matcher, f.filter))
                .collect(),
            routes,
            journal: journal_handle,
        });

        let (sources_trigger, sources_stop) = shutdown::channel();
        let (fail_tx, mut fail_rx) =
            tokio::sync::mpsc::channel::<(String, String)>(inputs.len().max(1));
        let mut source_tasks = Vec::new();
        for input in inputs {
            let ctx = SourceContext {
                name: input.name.clone(),
                tag: input.tag.clone(),
                shutdown: sources_stop.clone(),
                metrics: ComponentMetrics::register(&metrics, &input.name),
                registry: metrics.clone(),
                health: health.clone(),
                pipeline: pipeline.clone(),
            };
            let fail_tx = fail_tx.clone();
            let name = input.name.to_string();
            tracing::info!(input = %name, plugin = %input.plugin, tag = %input.tag, "starting input");
            source_tasks.push(tokio::spawn(async move {
                if let Err(e) = input.source.run(ctx).await {
                    tracing::error!(input = %name, error = %e, "input stopped with an error");
                    let _ = fail_tx.send((name, e.to_string())).await;
                }
            }));
        }
        drop(fail_tx);

        let mut failure = None;
        tokio::select! {
            _ = stop => tracing::info!("stop requested; shutting down"),
            Some((name, message)) = fail_rx.recv() => failure = Some(RunError::Source { name, message }),
        }

        // 1. Sources stop and finish the submission in flight.
        sources_trigger.fire();
        let grace = service.grace;
        let deadline = tokio::time::Instant::now() + grace;
        for t in source_tasks {
            if tokio::time::timeout_at(deadline, t).await.is_err() {
                tracing::warn!("an input did not stop within the grace period");
            }
        }
        drop(pipeline);
        // 2. Outputs deliver what is queued until the grace period ends.
        drain_trigger.fire();
        let outputs_deadline =
            deadline.max(tokio::time::Instant::now() + Duration::from_millis(500));
        let stopper = tokio::spawn(async move {
            tokio::time::sleep_until(outputs_deadline).await;
            stop_trigger.fire();
        });
        for r in runners {
            let _ = r.await;
        }
        stopper.abort();
        // 3. The journal ends when its last handle is gone.
        let _ = tokio::task::spawn_blocking(move || journal_thread.join()).await;
        server_trigger.fire();
        if let Some(s) = server {
            let _ = s.await;
        }
        tracing::info!("stopped");
        match failure {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        match (term, int) {
            (Ok(mut t), Ok(mut i)) => {
                tokio::select! {
                    _ = t.recv() => {}
                    _ = i.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
