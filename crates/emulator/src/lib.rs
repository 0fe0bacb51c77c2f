//! A Kubernetes API server emulator for kubetrail's tests and its `kubetrail demo` command.
//!
//! It serves the Events API the way the recorded kube-apiserver v1.28.7 did (see the shared
//! fixtures, `$KUBETRAIL_FIXTURES/kube-api`): both `core/v1` and `events.k8s.io/v1` views of one
//! store, paged LISTs with snapshot reads and continue tokens, WATCH with history replay, 410 after
//! compaction, 504 for future resourceVersions, Status bodies, bearer-token and client-certificate
//! authentication, a tiny RBAC, and fault knobs (cut watches, garbage frames, slow or failing
//! answers, restarts). Leases (`coordination.k8s.io/v1`) are served too, for leader election.
//!
//! Deliberate choices, all taken from the recorded server: `remainingItemCount` is omitted
//! when a selector is used; BOOKMARK frames are off unless
//! [`EmulatorOptions::bookmark_interval`] is set; a watch from revision R fails with 410 only
//! when R+1 is below the compacted revision (etcd's rule).
//!
//! ```no_run
//! # async fn demo() -> Result<(), kubetrail_emulator::EmulatorError> {
//! use kubetrail_emulator::{Emulator, EmulatorOptions, EventSpec};
//! let emu = Emulator::start(EmulatorOptions::default()).await?;
//! emu.create_event(EventSpec::simple("default", "Pod", "web-0", "Started", "Started container"));
//! println!("{} (CA:\n{})", emu.url(), emu.ca_pem());
//! emu.shutdown().await;
//! # Ok(()) }
//! ```

pub mod activity;
mod api;
mod auth;
mod body;
mod faults;
pub mod generator;
mod leases;
mod model;
mod paging;
mod query;
mod render;
mod replay;
mod selectors;
mod server;
mod stats;
mod status;
mod store;
mod tls;
mod watch;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use faults::Faults;
pub use replay::ReplayError;
pub use stats::Stats;

/// How to start an [`Emulator`].
#[derive(Clone, Debug)]
pub struct EmulatorOptions {
    /// Address to listen on; port 0 picks a free port (kept across [`Emulator::restart`]).
    pub bind: SocketAddr,
    /// HTTPS with a CA generated at start (true) or plain HTTP (false).
    pub tls: bool,
    /// Accepted bearer tokens: `(token, user name)`.
    pub tokens: Vec<(String, String)>,
    /// When true, requests without credentials are served as `system:anonymous`;
    /// when false (the default) they get 401 like `--anonymous-auth=false`.
    pub anonymous: bool,
    /// Users allowed only get/list/watch on events (403 for anything else).
    pub viewer_users: Vec<String>,
    /// Users that get 403 on everything (RBAC denies).
    pub forbidden_users: Vec<String>,
    /// Subject alternative names of the server certificate.
    pub cert_hostnames: Vec<String>,
    /// `None`: events never expire. `Some(ttl)`: an event is deleted (a DELETED watch frame with
    /// a new resourceVersion) `ttl` after its last write, like kube-apiserver `--event-ttl`.
    pub event_ttl: Option<Duration>,
    /// Cap on a LIST `limit`; `limit=0` or no limit means an unpaged list.
    pub max_page_size: usize,
    /// When set, watches with `allowWatchBookmarks=true` get a BOOKMARK frame this often.
    /// `None` (default) matches the recorded server: Events watches come straight from etcd
    /// and never carry bookmarks.
    pub bookmark_interval: Option<Duration>,
    /// How many changes the history keeps before it compacts itself (the apiserver compacts
    /// etcd every 5 minutes; here the bound is a count so memory stays bounded).
    pub history_limit: usize,
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        EmulatorOptions {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: true,
            tokens: vec![("admin-token".to_string(), "admin".to_string())],
            anonymous: false,
            viewer_users: Vec::new(),
            forbidden_users: Vec::new(),
            cert_hostnames: vec!["localhost".to_string(), "127.0.0.1".to_string()],
            event_ttl: None,
            max_page_size: 500,
            bookmark_interval: None,
            history_limit: 500_000,
        }
    }
}

/// What can fail when starting the emulator.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address that was asked for.
        addr: SocketAddr,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// Certificates or the TLS configuration could not be built.
    #[error("cannot set up TLS")]
    Tls(#[from] tls::TlsError),
}

/// A new Event to store (core/v1 semantics). Build one with [`EventSpec::simple`] and adjust.
#[derive(Clone, Debug, Default)]
pub struct EventSpec {
    /// Namespace of the Event (and of the involved object, unless it is cluster-scoped).
    pub namespace: String,
    /// Event name; `None` generates `<involved_name>.<16 hex digits>` like client-go.
    pub name: Option<String>,
    /// Kind of the involved object (`Pod`, `Deployment`, `Node`, ...).
    pub involved_kind: String,
    /// Name of the involved object.
    pub involved_name: String,
    /// Machine-readable reason (`Scheduled`, `BackOff`, ...).
    pub reason: String,
    /// Human-readable message.
    pub message: String,
    /// `Normal` or `Warning`.
    pub type_: String,
    /// `source.component` / `reportingComponent` (`reportingController` in events.k8s.io).
    pub reporting_component: String,
    /// `source.host` for kubelet events / `reportingInstance`.
    pub reporting_instance: String,
    /// New-style event (written by the events.k8s.io recorder): `eventTime`, `action`,
    /// `reportingController`, and repeats as `series` instead of count/first/lastTimestamp.
    pub new_style: bool,
    /// Labels on the Event object itself.
    pub labels: Vec<(String, String)>,
}

impl EventSpec {
    /// A Normal, legacy-style (count/firstTimestamp/lastTimestamp) event reported by
    /// component `kubetrail-emulator`; adjust the public fields for anything else.
    pub fn simple(
        namespace: impl Into<String>,
        kind: impl Into<String>,
        name: impl Into<String>,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> EventSpec {
        EventSpec {
            namespace: namespace.into(),
            name: None,
            involved_kind: kind.into(),
            involved_name: name.into(),
            reason: reason.into(),
            message: message.into(),
            type_: "Normal".to_string(),
            reporting_component: "kubetrail-emulator".to_string(),
            reporting_instance: String::new(),
            new_style: false,
            labels: Vec::new(),
        }
    }
}

/// Identity of a stored Event after a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRef {
    /// Namespace of the Event.
    pub namespace: String,
    /// Name of the Event.
    pub name: String,
    /// `metadata.uid` (stable across updates).
    pub uid: String,
    /// `metadata.resourceVersion` written by this change.
    pub resource_version: String,
}

/// A running emulated API server. Cheap to clone; all clones control the same server.
#[derive(Clone)]
pub struct Emulator {
    shared: Arc<server::Shared>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("url", &self.url())
            .finish()
    }
}

impl Emulator {
    /// Generates the CA and server certificate, binds the socket and starts serving.
    pub async fn start(opts: EmulatorOptions) -> Result<Emulator, EmulatorError> {
        let shared = server::Shared::start(opts).await?;
        Ok(Emulator { shared })
    }

    /// `https://127.0.0.1:PORT` (or `http://` without TLS).
    pub fn url(&self) -> String {
        let scheme = if self.shared.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.shared.addr)
    }

    /// The listening address (the port stays the same across restarts).
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// PEM of the CA that signed the server certificate (empty without TLS).
    pub fn ca_pem(&self) -> String {
        self.shared
            .tls
            .as_ref()
            .map(|t| t.ca_pem().to_string())
            .unwrap_or_default()
    }

    /// Writes [`Emulator::ca_pem`] to `path`.
    pub fn write_ca_file(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.ca_pem())
    }

    /// PEM of a freshly generated CA that has nothing to do with this server ("wrong CA" tests).
    pub fn generate_unrelated_ca_pem() -> String {
        tls::unrelated_ca_pem()
    }

    /// A client certificate for `user` (CN = user) signed by the CA: `(cert_pem, key_pem)`.
    /// Returns empty strings when TLS is off.
    pub fn issue_client_cert(&self, user: &str) -> (String, String) {
        match &self.shared.tls {
            Some(t) => t.issue_client_cert(user),
            None => (String::new(), String::new()),
        }
    }

    /// Stores a new Event (an ADDED change). If `spec.name` names an event that exists, this
    /// is a repeat instead (a MODIFIED, like the recorder's patch after AlreadyExists).
    pub fn create_event(&self, spec: EventSpec) -> EventRef {
        self.shared.create_event(spec)
    }

    /// Creates `n` events spread over `ns_count` namespaces (`bench-0`, `bench-1`, ...) in one
    /// write batch; deterministic names for a given `seed`. For benchmarks.
    pub fn create_events_bulk(&self, n: usize, ns_count: usize, seed: u64) -> usize {
        self.shared.create_events_bulk(n, ns_count, seed)
    }

    /// Stores a full core/v1 Event JSON object as given (uid, timestamps, managedFields kept).
    /// Its resourceVersion is kept when it is newer than the store's current one (the global
    /// counter jumps, as if other resources were written meanwhile); otherwise it gets the
    /// next one. Used to load recorded fixtures; an ADDED change like any create.
    pub fn import_core_event_json(&self, json: &str) -> Result<EventRef, String> {
        self.shared.import_core_event_json(json)
    }

    /// A repeat of an existing event: `count+1, lastTimestamp=now` (legacy) or a series bump
    /// (new style). A MODIFIED change with a new resourceVersion; `None` if it does not exist.
    pub fn bump_event(&self, namespace: &str, name: &str) -> Option<EventRef> {
        self.shared.bump_event(namespace, name)
    }

    /// Deletes an event; watchers get DELETED carrying the deletion resourceVersion.
    pub fn delete_event(&self, namespace: &str, name: &str) -> bool {
        self.shared.delete_event(namespace, name)
    }

    /// Like `etcdctl compact <current revision>`: every older resourceVersion now answers 410.
    pub fn compact(&self) {
        self.shared.store.compact_current();
    }

    /// The store's current resourceVersion.
    pub fn current_resource_version(&self) -> String {
        self.shared.store.current_rv().to_string()
    }

    /// Number of stored (not deleted) events.
    pub fn event_count(&self) -> usize {
        self.shared.store.live_count()
    }

    /// `spec.holderIdentity` of a Lease (`coordination.k8s.io/v1`), if it exists.
    pub fn lease_holder(&self, namespace: &str, name: &str) -> Option<String> {
        self.shared.leases.holder(namespace, name)
    }

    /// The Lease as a GET would answer it (`metadata`, `spec`), if it exists.
    pub fn lease(&self, namespace: &str, name: &str) -> Option<serde_json::Value> {
        self.shared.leases.get_json(namespace, name)
    }

    /// Annotates a Lease by hand (`kubectl annotate`): a new resourceVersion, so its holder's
    /// next renewal gets 409 Conflict. False when the Lease does not exist.
    pub fn annotate_lease(&self, namespace: &str, name: &str, key: &str, value: &str) -> bool {
        self.shared.leases.edit(
            namespace,
            name,
            "kubectl-annotate",
            || self.shared.store.bump_revision(),
            |annotations, _| {
                annotations.insert(key.to_string(), value.to_string());
            },
        )
    }

    /// Writes another holder into a Lease by hand (`kubectl edit`): `holderIdentity`, a fresh
    /// `renewTime` and `acquireTime`. False when the Lease does not exist.
    pub fn set_lease_holder(&self, namespace: &str, name: &str, holder: &str) -> bool {
        let now = model::format_micro(time::OffsetDateTime::now_utc()).to_string();
        self.shared.leases.edit(
            namespace,
            name,
            "kubectl-edit",
            || self.shared.store.bump_revision(),
            |_, spec| {
                spec.holder_identity = Some(holder.to_string());
                spec.acquire_time = Some(now.clone());
                spec.renew_time = Some(now);
            },
        )
    }

    /// Deletes a Lease by hand (`kubectl delete lease`). False when it does not exist.
    pub fn delete_lease(&self, namespace: &str, name: &str) -> bool {
        self.shared
            .leases
            .delete(namespace, name, || self.shared.store.bump_revision())
            .is_ok()
    }

    /// Accepts a new bearer token for `user`.
    pub fn add_token(&self, token: &str, user: &str) {
        self.shared.auth.add_token(token, user);
    }

    /// Rejects `token` from now on (401) and cuts the open watches that used it.
    pub fn revoke_token(&self, token: &str) {
        self.shared.auth.revoke_token(token);
        self.shared.watches.cut_token(token);
    }

    /// Replaces the current fault settings.
    pub fn set_faults(&self, f: Faults) {
        self.shared.set_faults(f);
    }

    /// Drops every connection, stops listening briefly, and listens again on the same port.
    /// Data, tokens and the CA are kept.
    pub async fn restart(&self) {
        self.shared.restart().await;
    }

    /// Closes every open watch stream abruptly (no terminating chunk). With
    /// `Faults::cut_watch_after_frames` set, half a frame is written first.
    pub fn cut_watches(&self) {
        self.shared.watches.cut_all();
    }

    /// Request counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats.snapshot(self.shared.watches.open())
    }

    /// Stops serving: closes the listener, every connection and every watch.
    pub async fn shutdown(&self) {
        self.shared.shutdown().await;
    }

    /// True once [`Emulator::shutdown`] ran.
    pub fn is_shut_down(&self) -> bool {
        self.shared.is_shut_down()
    }
}
