//! Options of the `kubernetes_events` input, with Fluent Bit's names and (where kubetrail does
//! not do better) Fluent Bit's defaults. The list/watch tunables (`kube_request_limit`,
//! `kube_watch_timeout`, `interval_sec`, `interval_nsec`) are read by the watcher's own
//! `WatcherConfig::from_section`, the `leader_election.*` block by
//! `LeaderElectionOptions::from_section`.

use std::time::Duration;

use kubetrail_core::config::{ConfigError, Section};
use kubetrail_kube::KubeConnectionOptions;
use kubetrail_kube::leader::LeaderElectionOptions;

use super::normalize::{EventsApi, Updates};

/// The resolved options.
#[derive(Debug, Clone)]
pub struct EventsConfig {
    /// How to reach the API server (`kube_url`, `kube_ca_file`, `kube_token_file`, `kubeconfig`, ...).
    pub connection: KubeConnectionOptions,
    /// `api`: `events.k8s.io/v1` (default) or `core/v1`.
    pub api: EventsApi,
    /// `kube_namespace` (one) or `namespaces` (a list); empty = all namespaces.
    pub namespaces: Vec<String>,
    /// `field_selector`.
    pub field_selector: Option<String>,
    /// `label_selector`.
    pub label_selector: Option<String>,
    /// `kube_retention_time` (default 1h): dedup horizon; a restart after a longer downtime
    /// reports a gap.
    pub retention: Duration,
    /// `updates`: `all` (default: every new resourceVersion is an occurrence) or `first`.
    pub updates: Updates,
    /// `format`: `normalized` (default) or `raw` (the API object exactly as received).
    pub raw_format: bool,
    /// `emit_deleted` (default off): also record DELETED (TTL expiry) changes.
    pub emit_deleted: bool,
    /// `leader_election` (default off): run on several replicas, one watching at a time.
    pub leader_election: Option<LeaderElectionOptions>,
}

impl EventsConfig {
    pub fn from_section(s: &mut Section) -> Result<EventsConfig, ConfigError> {
        let connection = KubeConnectionOptions::from_section(s)?;
        let api = match s.get_choice("api", &["events.k8s.io/v1", "core/v1", "v1"])? {
            Some("core/v1") | Some("v1") => EventsApi::CoreV1,
            _ => EventsApi::EventsV1,
        };
        let one = s
            .get_str("kube_namespace")?
            .filter(|n| !n.trim().is_empty());
        let many = s.get_list("namespaces")?;
        let namespaces = match (one, many) {
            (Some(_), Some(_)) => {
                return Err(s.error(
                    "namespaces",
                    "use either kube_namespace or namespaces, not both",
                ));
            }
            (Some(n), None) => vec![n.trim().to_string()],
            (None, Some(list)) => {
                let mut list: Vec<String> =
                    list.into_iter().map(|n| n.trim().to_string()).collect();
                list.sort();
                list.dedup();
                if list.iter().any(|n| n == "*") {
                    Vec::new()
                } else {
                    list
                }
            }
            (None, None) => Vec::new(),
        };
        for n in &namespaces {
            let valid = !n.is_empty()
                && n.len() <= 63
                && n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !valid {
                return Err(s.error("namespaces", format!("'{n}' is not a valid namespace name")));
            }
        }
        let field_selector = s
            .get_str("field_selector")?
            .filter(|v| !v.trim().is_empty());
        let label_selector = s
            .get_str("label_selector")?
            .filter(|v| !v.trim().is_empty());
        let retention = s
            .get_duration("kube_retention_time")?
            .unwrap_or(Duration::from_secs(3600));
        let updates = match s.get_choice("updates", &["all", "first"])? {
            Some("first") => Updates::First,
            _ => Updates::All,
        };
        let raw_format = matches!(s.get_choice("format", &["normalized", "raw"])?, Some("raw"));
        let emit_deleted = s.get_bool("emit_deleted")?.unwrap_or(false);
        let leader_election = LeaderElectionOptions::from_section(s)?;
        if let Some(db) = s.get_str("db")?
            && !db.trim().is_empty()
        {
            return Err(s.error(
                "db",
                "kubetrail keeps this input's checkpoints and dedup keys in the state database \
                 of service.data_dir, so that they commit in the same transaction as the queued \
                 records; remove 'db' and set service.data_dir instead",
            ));
        }
        Ok(EventsConfig {
            connection,
            api,
            namespaces,
            field_selector,
            label_selector,
            retention,
            updates,
            raw_format,
            emit_deleted,
            leader_election,
        })
    }
}
