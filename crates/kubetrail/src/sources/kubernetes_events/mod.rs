//! The `kubernetes_events` input: every Kubernetes Event occurrence, exactly once, across
//! restarts, apiserver trouble, token rotation and (with `leader_election`) failover between
//! replicas.
//!
//! One stream per namespace (or one for all), in `stream.rs`: a paged LIST streamed page by
//! page, then a WATCH from the list's resourceVersion (the `kubetrail-kube` watcher does the
//! state machine and the backoff). Every batch the watcher yields is committed with the
//! resourceVersion it advances to, in the same transaction as the records and their dedup
//! keys; the watcher is asked for more only after that commit. After a restart the watch
//! resumes from the committed resourceVersion. A 410 or the empty-200 stale-watch answer makes
//! the watcher relist: the relist is deduplicated against the state (one row per uid with the
//! last resourceVersion emitted) and a `gap` record says continuity may have been lost. A
//! restart after a downtime longer than `kube_retention_time` also gets a gap record.
//!
//! With `leader_election: on` (`leader.rs`), the streams run only on the replica holding the
//! Lease, for as long as its fence allows; their committed positions go into the Lease at each
//! renewal, and a new leader resumes from them.

pub mod config;
mod leader;
pub mod normalize;
mod stream;

use std::sync::Arc;

use kubetrail_core::config::{ConfigError, Section};
use kubetrail_kube::{Environment, KubeClient, WatcherConfig};

use self::config::EventsConfig;
use self::stream::Stream;
use crate::pipeline::{Source, SourceContext, SourceError};

/// The `kubernetes_events` input.
pub struct KubernetesEvents {
    config: EventsConfig,
    watcher: WatcherConfig,
}

impl KubernetesEvents {
    pub fn from_section(s: &mut Section) -> Result<KubernetesEvents, ConfigError> {
        let watcher = WatcherConfig::from_section(s, Some("Event"))?;
        let config = EventsConfig::from_section(s)?;
        Ok(KubernetesEvents { config, watcher })
    }

    /// One namespace per stream (`None`: all namespaces).
    fn namespaces(&self) -> Vec<Option<String>> {
        if self.config.namespaces.is_empty() {
            vec![None]
        } else {
            self.config.namespaces.iter().cloned().map(Some).collect()
        }
    }
}

#[async_trait::async_trait]
impl Source for KubernetesEvents {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        if self.config.leader_election.is_some() {
            return leader::run(*self, ctx).await;
        }
        let namespaces = self.namespaces();
        let config = Arc::new(self.config);
        let mut tasks = Vec::new();
        for ns in namespaces {
            let readiness = Stream::register(&ctx, &config, &self.watcher, ns.as_deref());
            let stream = Stream::new(
                &ctx,
                config.clone(),
                self.watcher.clone(),
                ns,
                readiness,
                None,
            );
            tasks.push(tokio::spawn(stream.run()));
        }
        join_streams(tasks).await
    }

    fn preflight(&self) -> Result<(), String> {
        let resolved = self
            .config
            .connection
            .resolve(&Environment::from_process())
            .map_err(|e| e.to_string())?;
        KubeClient::new(&resolved).map_err(|e| e.to_string())?;
        if let Some(le) = &self.config.leader_election
            && le.lease_namespace.is_none()
            && resolved.namespace.is_none()
        {
            return Err(kubetrail_kube::leader::LeaderConfigError::NoNamespace.to_string());
        }
        Ok(())
    }
}

/// Waits for every stream; the last error, if any.
async fn join_streams(
    tasks: Vec<tokio::task::JoinHandle<Result<(), SourceError>>>,
) -> Result<(), SourceError> {
    let mut result = Ok(());
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e),
            Err(e) => result = Err(SourceError(format!("an events stream panicked: {e}"))),
        }
    }
    result
}
