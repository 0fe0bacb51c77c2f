//! The `leader_election` option block, with the names client-go users know:
//! `leader_election: on|off` (a map of the options below also turns it on),
//! `leader_election.lease_name`, `.lease_namespace`, `.identity`, `.lease_duration` (15s),
//! `.renew_deadline` (10s), `.retry_period` (2s), and kubetrail's `.handover_skew` (5s).
//! Durations must satisfy client-go's rule `lease_duration > renew_deadline > 1.2 ×
//! retry_period`.

use std::path::Path;
use std::time::Duration;

use kubetrail_core::config::{ConfigError, Section, Value};

use crate::connection::Environment;

/// Default `leader_election.lease_duration` (client-go's).
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// Default `leader_election.renew_deadline` (client-go's).
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// Default `leader_election.retry_period` (client-go's).
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);
/// Default `leader_election.handover_skew`.
pub const DEFAULT_HANDOVER_SKEW: Duration = Duration::from_secs(5);
/// client-go's jitter factor of the standby's polls; `renew_deadline` must exceed
/// `retry_period` times this.
pub const JITTER_FACTOR: f64 = 1.2;

/// The options as written (before the defaults that depend on where kubetrail runs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderElectionOptions {
    /// `leader_election.lease_name`; default `kubetrail-events-<alias>` (made a valid name).
    pub lease_name: Option<String>,
    /// `leader_election.lease_namespace`; default the pod's namespace (service-account mount)
    /// or the kubeconfig context's.
    pub lease_namespace: Option<String>,
    /// `leader_election.identity`; default `$POD_NAME`, else the host name.
    pub identity: Option<String>,
    /// `leader_election.lease_duration`: how long a standby waits, after the last change it saw
    /// to the Lease, before taking it. A whole number of seconds (the Lease stores seconds).
    pub lease_duration: Duration,
    /// `leader_election.renew_deadline`: the leader stops emitting when it has not renewed
    /// for this long.
    pub renew_deadline: Duration,
    /// `leader_election.retry_period`: how often the leader renews and a standby polls.
    pub retry_period: Duration,
    /// `leader_election.handover_skew`: the clock difference allowed between the cluster's
    /// clocks when a new leader compares Event times with the handed-over times.
    pub handover_skew: Duration,
}

/// What is wrong with where leader election would run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaderConfigError {
    /// No namespace for the Lease.
    #[error(
        "leader_election.lease_namespace is required outside a cluster (in a pod it defaults to the pod's namespace)"
    )]
    NoNamespace,
    /// The namespace is not a valid name.
    #[error("leader_election.lease_namespace {0:?} is not a valid namespace name")]
    BadNamespace(String),
    /// No identity could be found.
    #[error("leader_election.identity is required: neither POD_NAME nor the host name is set")]
    NoIdentity,
}

impl LeaderElectionOptions {
    /// Reads the block; `None` when leader election is off (the default).
    pub fn from_section(s: &mut Section) -> Result<Option<Self>, ConfigError> {
        // `leader_election: on` is a switch; `leader_election: {lease_duration: 3s}` is a map of
        // options and turns it on. The map itself is never read as a whole (that would mark
        // every key in it as known and hide a misspelled one from the unknown-key check).
        let enabled = match s.clone().get_value("leader_election") {
            None => false,
            Some(Value::Map(_)) => true,
            Some(_) => s.get_bool("leader_election")?.unwrap_or(false),
        };
        let name = |s: &mut Section, k: &str| -> Result<Option<String>, ConfigError> {
            Ok(s.get_str(&format!("leader_election.{k}"))?
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty()))
        };
        let lease_name = name(s, "lease_name")?;
        let lease_namespace = name(s, "lease_namespace")?;
        let identity = name(s, "identity")?;
        let dur = |s: &mut Section, k: &str, d: Duration| -> Result<Duration, ConfigError> {
            Ok(s.get_duration(&format!("leader_election.{k}"))?
                .unwrap_or(d))
        };
        let lease_duration = dur(s, "lease_duration", DEFAULT_LEASE_DURATION)?;
        let renew_deadline = dur(s, "renew_deadline", DEFAULT_RENEW_DEADLINE)?;
        let retry_period = dur(s, "retry_period", DEFAULT_RETRY_PERIOD)?;
        let handover_skew = dur(s, "handover_skew", DEFAULT_HANDOVER_SKEW)?;
        if !enabled {
            return Ok(None);
        }
        if let Some(n) = &lease_name
            && !is_subdomain(n)
        {
            return Err(s.error(
                "leader_election.lease_name",
                format!(
                    "{n:?} is not a valid Lease name (lowercase letters, digits, '-' and '.', at most 253)"
                ),
            ));
        }
        if let Some(n) = &lease_namespace
            && !is_label(n)
        {
            return Err(s.error(
                "leader_election.lease_namespace",
                format!("{n:?} is not a valid namespace name"),
            ));
        }
        if let Some(i) = &identity
            && (i.len() > 200 || i.chars().any(char::is_control))
        {
            return Err(s.error(
                "leader_election.identity",
                "must be at most 200 characters, without control characters",
            ));
        }
        if lease_duration < Duration::from_secs(1) || lease_duration.subsec_nanos() != 0 {
            return Err(s.error(
                "leader_election.lease_duration",
                "must be a whole number of seconds, at least 1s (the Lease stores seconds)",
            ));
        }
        if retry_period.is_zero() {
            return Err(s.error("leader_election.retry_period", "must be more than 0"));
        }
        if renew_deadline >= lease_duration {
            return Err(s.error(
                "leader_election.renew_deadline",
                format!(
                    "must be less than leader_election.lease_duration ({}s): a leader must stop before a standby may take over",
                    lease_duration.as_secs()
                ),
            ));
        }
        if renew_deadline.as_secs_f64() <= JITTER_FACTOR * retry_period.as_secs_f64() {
            return Err(s.error(
                "leader_election.renew_deadline",
                format!(
                    "must be more than 1.2 × leader_election.retry_period ({retry_period:?}), as in client-go"
                ),
            ));
        }
        Ok(Some(LeaderElectionOptions {
            lease_name,
            lease_namespace,
            identity,
            lease_duration,
            renew_deadline,
            retry_period,
            handover_skew,
        }))
    }

    /// Resolves the defaults that depend on where kubetrail runs: the Lease name from the
    /// input's `alias`, its namespace from the connection (`namespace` of the resolved
    /// connection: the service-account mount or the kubeconfig context), the identity from
    /// `$POD_NAME` or the host name.
    pub fn resolve(
        &self,
        alias: &str,
        connection_namespace: Option<&str>,
        env: &Environment,
    ) -> Result<LeaderElectionConfig, LeaderConfigError> {
        let namespace = match (&self.lease_namespace, connection_namespace) {
            (Some(n), _) => n.clone(),
            (None, Some(n)) if is_label(n) => n.to_string(),
            (None, Some(n)) => return Err(LeaderConfigError::BadNamespace(n.to_string())),
            (None, None) => return Err(LeaderConfigError::NoNamespace),
        };
        let name = self
            .lease_name
            .clone()
            .unwrap_or_else(|| default_lease_name(alias));
        let identity = match &self.identity {
            Some(i) => i.clone(),
            None => env
                .var("POD_NAME")
                .map(str::to_string)
                .or_else(|| env.var("HOSTNAME").map(str::to_string))
                .or_else(|| read_hostname(Path::new("/proc/sys/kernel/hostname")))
                .ok_or(LeaderConfigError::NoIdentity)?,
        };
        Ok(LeaderElectionConfig {
            namespace,
            name,
            holder: format!("{identity}_{:06x}", fastrand::u32(..1 << 24)),
            lease_duration: self.lease_duration,
            renew_deadline: self.renew_deadline,
            retry_period: self.retry_period,
            handover_skew: self.handover_skew,
        })
    }
}

/// Where and how one process takes part in the election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderElectionConfig {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// What this process writes as `holderIdentity`: the identity and a random suffix
    /// (`kubetrail-events-0_5f3a9c`, like client-go's `hostname_uuid`), unique per process, so
    /// that two processes given the same identity never both believe they hold the Lease and
    /// a restarted process waits for its predecessor's Lease like any other standby.
    pub holder: String,
    /// See [`LeaderElectionOptions::lease_duration`].
    pub lease_duration: Duration,
    /// See [`LeaderElectionOptions::renew_deadline`].
    pub renew_deadline: Duration,
    /// See [`LeaderElectionOptions::retry_period`].
    pub retry_period: Duration,
    /// See [`LeaderElectionOptions::handover_skew`].
    pub handover_skew: Duration,
}

impl LeaderElectionConfig {
    /// A configuration for tests and tools: the given Lease and holder, client-go's timings.
    pub fn new(namespace: &str, name: &str, holder: &str) -> Self {
        LeaderElectionConfig {
            namespace: namespace.into(),
            name: name.into(),
            holder: holder.into(),
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_deadline: DEFAULT_RENEW_DEADLINE,
            retry_period: DEFAULT_RETRY_PERIOD,
            handover_skew: DEFAULT_HANDOVER_SKEW,
        }
    }
}

/// `kubetrail-events-<alias>`, lowercased, every character a name cannot hold made `-`
/// (`kubernetes_events.0` → `kubetrail-events-kubernetes-events.0`).
pub fn default_lease_name(alias: &str) -> String {
    let mut name: String = format!("kubetrail-events-{alias}")
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    name.truncate(253);
    while name.ends_with(['-', '.']) {
        name.pop();
    }
    name
}

fn read_hostname(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// A DNS-1123 label: what a namespace name must be.
fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain: what most object names (a Lease's) must be.
fn is_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubetrail_core::config::SectionKind;

    fn read(pairs: &[(&str, &str)]) -> Result<Option<LeaderElectionOptions>, String> {
        let mut s = Section::from_pairs(SectionKind::Input, "kubernetes_events", pairs);
        let r = LeaderElectionOptions::from_section(&mut s).map_err(|e| e.to_string())?;
        s.finish().map_err(|e| e.to_string())?;
        Ok(r)
    }

    #[test]
    fn off_by_default_and_client_go_defaults_when_on() {
        assert_eq!(read(&[]).unwrap(), None);
        assert_eq!(read(&[("leader_election", "off")]).unwrap(), None);
        let o = read(&[("leader_election", "on")]).unwrap().unwrap();
        assert_eq!(o.lease_duration, Duration::from_secs(15));
        assert_eq!(o.renew_deadline, Duration::from_secs(10));
        assert_eq!(o.retry_period, Duration::from_secs(2));
        assert_eq!(o.handover_skew, Duration::from_secs(5));
        assert_eq!(
            (o.lease_name, o.lease_namespace, o.identity),
            (None, None, None)
        );
        let o = read(&[
            ("leader_election", "on"),
            ("leader_election.lease_name", "kubetrail-events"),
            ("leader_election.lease_namespace", "kubetrail"),
            ("leader_election.identity", "kubetrail-events-0"),
            ("leader_election.lease_duration", "3s"),
            ("leader_election.renew_deadline", "2s"),
            ("leader_election.retry_period", "500ms"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(o.lease_name.as_deref(), Some("kubetrail-events"));
        assert_eq!(o.retry_period, Duration::from_millis(500));
    }

    fn read_yaml(block: &str) -> Result<Option<LeaderElectionOptions>, String> {
        let yaml = format!(
            "pipeline:\n  inputs:\n    - name: kubernetes_events\n{block}\n  outputs:\n    - name: stdout\n      match: '*'\n"
        );
        let mut c = kubetrail_core::config::Config::parse(&yaml, Path::new("k.yaml"))
            .map_err(|e| e.to_string())?;
        let s = &mut c.inputs[0];
        let r = LeaderElectionOptions::from_section(s).map_err(|e| e.to_string())?;
        s.finish().map_err(|e| e.to_string())?;
        Ok(r)
    }

    #[test]
    fn a_map_of_options_turns_it_on_and_typos_inside_are_named() {
        let o = read_yaml(
            "      leader_election:\n        lease_duration: 4s\n        renew_deadline: 3s",
        )
        .unwrap()
        .unwrap();
        assert_eq!(o.lease_duration, Duration::from_secs(4));
        let o = read_yaml("      leader_election: on\n      leader_election.retry_period: 1s")
            .unwrap()
            .unwrap();
        assert_eq!(o.retry_period, Duration::from_secs(1));
        let e = read_yaml("      leader_election:\n        lease_duraton: 4s").unwrap_err();
        assert!(e.contains("leader_election.lease_duraton"), "{e}");
        assert!(e.contains("k.yaml:5"), "{e}");
    }

    #[test]
    fn timings_follow_client_go_rules() {
        let err = |pairs: &[(&str, &str)]| {
            let mut all = vec![("leader_election", "on")];
            all.extend_from_slice(pairs);
            read(&all).unwrap_err()
        };
        let e = err(&[("leader_election.renew_deadline", "15s")]);
        assert!(
            e.contains("less than leader_election.lease_duration"),
            "{e}"
        );
        let e = err(&[
            ("leader_election.renew_deadline", "2s"),
            ("leader_election.retry_period", "2s"),
        ]);
        assert!(e.contains("1.2"), "{e}");
        let e = err(&[("leader_election.lease_duration", "2500ms")]);
        assert!(e.contains("whole number of seconds"), "{e}");
        let e = err(&[("leader_election.retry_period", "0s")]);
        assert!(e.contains("more than 0"), "{e}");
        let e = err(&[("leader_election.lease_name", "Kubetrail_Events")]);
        assert!(e.contains("not a valid Lease name"), "{e}");
        let e = err(&[("leader_election.lease_namespace", "a.b")]);
        assert!(e.contains("not a valid namespace"), "{e}");
        // A typo inside the block is an unknown key, named.
        let e = read(&[
            ("leader_election", "on"),
            ("leader_election.lease_duraton", "3s"),
        ])
        .unwrap_err();
        assert!(e.contains("lease_duraton"), "{e}");
    }

    #[test]
    fn defaults_come_from_where_it_runs() {
        let o = read(&[("leader_election", "on")]).unwrap().unwrap();
        let mut env = Environment::isolated("/nonexistent");
        env.vars
            .insert("POD_NAME".into(), "kubetrail-events-1".into());
        let c = o
            .resolve("kubernetes_events.0", Some("kubetrail"), &env)
            .unwrap();
        assert_eq!(c.namespace, "kubetrail");
        assert_eq!(c.name, "kubetrail-events-kubernetes-events.0");
        assert!(c.holder.starts_with("kubetrail-events-1_"), "{}", c.holder);
        assert_eq!(c.holder.len(), "kubetrail-events-1_".len() + 6);
        // Unique per process start.
        let again = o
            .resolve("kubernetes_events.0", Some("kubetrail"), &env)
            .unwrap();
        assert_ne!(c.holder, again.holder);
        assert_eq!(
            o.resolve("x", None, &env).unwrap_err(),
            LeaderConfigError::NoNamespace
        );
        env.vars.remove("POD_NAME");
        env.vars.insert("HOSTNAME".into(), "node-a".into());
        let c = o.resolve("events", Some("kubetrail"), &env).unwrap();
        assert!(c.holder.starts_with("node-a_"));
        assert_eq!(c.name, "kubetrail-events-events");
    }

    #[test]
    fn default_lease_names_are_valid_names() {
        for alias in [
            "kubernetes_events.0",
            "EVENTS",
            "a__b",
            "x.",
            &"y".repeat(400),
        ] {
            let n = default_lease_name(alias);
            assert!(is_subdomain(&n), "{alias} -> {n}");
        }
    }
}
