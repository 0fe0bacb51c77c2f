//! The server's shared state, its listener and connections: accept loop, TLS handshakes,
//! HTTP/1.1 serving, restart (same port, data kept) and shutdown, plus the data operations
//! behind the public [`Emulator`](crate::Emulator) methods.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use time::OffsetDateTime;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};
use tokio_rustls::TlsAcceptor;

use crate::api::{self, ConnInfo};
use crate::auth::Auth;
use crate::faults::Faults;
use crate::leases::Leases;
use crate::model::{NewEvent, new_uid};
use crate::stats::Counters;
use crate::store::Store;
use crate::tls::TlsMaterial;
use crate::watch::WatchRegistry;
use crate::{EmulatorError, EmulatorOptions, EventRef, EventSpec};

/// How long a client may take for the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `restart` keeps the port closed.
const RESTART_PAUSE: Duration = Duration::from_millis(100);

/// Everything the server and the public handle share.
pub(crate) struct Shared {
    pub opts: EmulatorOptions,
    pub tls: Option<TlsMaterial>,
    acceptor: Option<TlsAcceptor>,
    pub addr: SocketAddr,
    pub store: Arc<Store>,
    pub auth: Auth,
    pub leases: Leases,
    faults: Arc<RwLock<Faults>>,
    pub stats: Counters,
    pub watches: Arc<WatchRegistry>,
    /// API Priority and Fairness uids (flow schema, priority level) for response headers.
    pub apf: (String, String),
    accept_task: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    conns: Mutex<HashMap<u64, AbortHandle>>,
    next_conn: AtomicU64,
    background: Mutex<Vec<JoinHandle<()>>>,
    shut: AtomicBool,
    /// Last nanosecond timestamp used in a generated name (names must be unique).
    name_clock: AtomicU64,
}

impl Shared {
    pub async fn start(opts: EmulatorOptions) -> Result<Arc<Shared>, EmulatorError> {
        let tls = if opts.tls {
            Some(TlsMaterial::generate(&opts.cert_hostnames)?)
        } else {
            None
        };
        let acceptor = tls
            .as_ref()
            .map(|t| TlsAcceptor::from(t.server_config.clone()));
        let listener =
            TcpListener::bind(opts.bind)
                .await
                .map_err(|source| EmulatorError::Bind {
                    addr: opts.bind,
                    source,
                })?;
        let addr = listener
            .local_addr()
            .map_err(|source| EmulatorError::Bind {
                addr: opts.bind,
                source,
            })?;
        let shared = Arc::new(Shared {
            store: Arc::new(Store::new(opts.history_limit, opts.event_ttl)),
            auth: Auth::new(&opts),
            leases: Leases::default(),
            tls,
            acceptor,
            addr,
            faults: Arc::new(RwLock::new(Faults::default())),
            stats: Counters::default(),
            watches: Arc::new(WatchRegistry::default()),
            apf: (new_uid(), new_uid()),
            accept_task: tokio::sync::Mutex::new(None),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
            background: Mutex::new(Vec::new()),
            shut: AtomicBool::new(false),
            name_clock: AtomicU64::new(0),
            opts,
        });
        let task = tokio::spawn(accept_loop(shared.clone(), listener));
        *shared.accept_task.lock().await = Some(task);
        if shared.opts.event_ttl.is_some() {
            let ttl_task = tokio::spawn(expiry_loop(shared.store.clone()));
            lock(&shared.background).push(ttl_task);
        }
        tracing::info!(url = %format!("{}://{}", if shared.tls.is_some() { "https" } else { "http" }, addr), "emulator listening");
        Ok(shared)
    }

    pub fn faults(&self) -> Faults {
        self.faults
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn faults_handle(&self) -> Arc<RwLock<Faults>> {
        self.faults.clone()
    }

    pub fn set_faults(&self, f: Faults) {
        *self.faults.write().unwrap_or_else(|p| p.into_inner()) = f;
    }

    pub fn is_shut_down(&self) -> bool {
        self.shut.load(Ordering::Acquire)
    }

    fn abort_connections(&self) {
        let conns: Vec<AbortHandle> = lock(&self.conns).drain().map(|(_, h)| h).collect();
        for h in conns {
            h.abort();
        }
    }

    pub async fn restart(self: &Arc<Self>) {
        if self.is_shut_down() {
            return;
        }
        let mut task = self.accept_task.lock().await;
        if let Some(t) = task.take() {
            t.abort();
            let _ = t.await;
        }
        self.abort_connections();
        self.watches.cut_all();
        tokio::time::sleep(RESTART_PAUSE).await;
        if self.is_shut_down() {
            return;
        }
        let mut delay = Duration::from_millis(20);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) => {
                    if self.is_shut_down() {
                        return;
                    }
                    tracing::warn!(addr = %self.addr, error = %e, "cannot listen again yet, retrying");
                    let jitter = fastrand::u64(0..=delay.as_millis() as u64 / 2);
                    tokio::time::sleep(delay + Duration::from_millis(jitter)).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
            }
        };
        *task = Some(tokio::spawn(accept_loop(self.clone(), listener)));
        tracing::info!(addr = %self.addr, "emulator restarted");
    }

    pub async fn shutdown(&self) {
        self.shut.store(true, Ordering::Release);
        if let Some(t) = self.accept_task.lock().await.take() {
            t.abort();
            let _ = t.await;
        }
        self.abort_connections();
        self.watches.cut_all();
        let bg: Vec<JoinHandle<()>> = lock(&self.background).drain(..).collect();
        for t in bg {
            t.abort();
        }
    }

    /// `<name>.<16 hex digits of a unique nanosecond clock>`, like client-go's recorder.
    fn generated_name(&self, involved: &str) -> String {
        let now = OffsetDateTime::now_utc().unix_timestamp_nanos().max(0) as u64;
        let prev = self
            .name_clock
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                Some(now.max(last + 1))
            })
            .unwrap_or(now);
        let stamp = now.max(prev + 1);
        let base = if involved.is_empty() {
            "event"
        } else {
            involved
        };
        format!("{base}.{stamp:016x}")
    }

    pub fn create_event(&self, mut spec: EventSpec) -> EventRef {
        if spec.namespace.is_empty() {
            spec.namespace = "default".to_string();
        }
        let name = spec
            .name
            .clone()
            .unwrap_or_else(|| self.generated_name(&spec.involved_name));
        let ns = spec.namespace.clone();
        let new = NewEvent::from_spec(spec, name.clone(), new_uid(), OffsetDateTime::now_utc());
        if let Some(obj) = self.store.create(new) {
            return event_ref(&obj);
        }
        // The name is taken: the recorder then patches the existing event (a repeat).
        match self.bump_event(&ns, &name) {
            Some(r) => r,
            None => EventRef {
                namespace: ns,
                name,
                uid: String::new(),
                resource_version: self.store.current_rv().to_string(),
            },
        }
    }

    pub fn bump_event(&self, namespace: &str, name: &str) -> Option<EventRef> {
        let now = OffsetDateTime::now_utc();
        self.store
            .update(&format!("{namespace}/{name}"), |o| o.bumped(now))
            .map(|o| event_ref(&o))
    }

    pub fn delete_event(&self, namespace: &str, name: &str) -> bool {
        self.store.delete(&format!("{namespace}/{name}")).is_some()
    }

    pub fn import_core_event_json(&self, json: &str) -> Result<EventRef, String> {
        let (new, rv) = NewEvent::from_core_json(json)?;
        let key = new.body.key.clone();
        self.store
            .create_at_least(new, rv.unwrap_or(0))
            .map(|o| event_ref(&o))
            .ok_or_else(|| format!("event {key} already exists"))
    }

    pub fn create_events_bulk(&self, n: usize, ns_count: usize, seed: u64) -> usize {
        const KINDS: &[(&str, &str, &str, &str)] = &[
            (
                "Pod",
                "Scheduled",
                "Successfully assigned {ns}/{obj} to node-1",
                "Normal",
            ),
            (
                "Pod",
                "Pulled",
                "Container image \"nginx:1.25\" already present on machine",
                "Normal",
            ),
            ("Pod", "Created", "Created container app", "Normal"),
            ("Pod", "Started", "Started container app", "Normal"),
            (
                "Pod",
                "BackOff",
                "Back-off restarting failed container app in pod {obj}",
                "Warning",
            ),
            (
                "Deployment",
                "ScalingReplicaSet",
                "Scaled up replica set {obj}-5d8f to 3",
                "Normal",
            ),
        ];
        let ns_count = ns_count.max(1);
        let mut rng = fastrand::Rng::with_seed(seed);
        let base = rng.u64(0x1000_0000_0000_0000..0x2000_0000_0000_0000);
        let now = OffsetDateTime::now_utc();
        let items: Vec<NewEvent> = (0..n)
            .map(|i| {
                let ns = format!("bench-{}", i % ns_count);
                let (kind, reason, msg, ty) = KINDS[rng.usize(..KINDS.len())];
                let obj = format!("{}-{}", kind.to_ascii_lowercase(), i / ns_count);
                let mut spec = EventSpec::simple(
                    ns.clone(),
                    kind,
                    obj.clone(),
                    reason,
                    msg.replace("{ns}", &ns).replace("{obj}", &obj),
                );
                spec.type_ = ty.to_string();
                spec.reporting_component = "kubelet".into();
                spec.reporting_instance = "node-1".into();
                spec.labels = vec![("app".into(), format!("app-{}", i % 7))];
                let name = format!("{obj}.{:016x}", base + i as u64);
                let uid = crate::model::uid_from_bits(rng.u128(..));
                NewEvent::from_spec(spec, name, uid, now)
            })
            .collect();
        self.store.create_many(items)
    }
}

fn event_ref(o: &crate::model::EventObj) -> EventRef {
    EventRef {
        namespace: o.body.namespace.to_string(),
        name: o.body.name.to_string(),
        uid: o.body.uid.to_string(),
        resource_version: o.rv.to_string(),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => {
                backoff = Duration::from_millis(5);
                x
            }
            Err(e) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                let jitter = fastrand::u64(0..=backoff.as_millis() as u64);
                tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        shared.stats.connection();
        let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        // Hold the map lock while spawning so the task's own removal cannot run first.
        let mut conns = lock(&shared.conns);
        let task_shared = shared.clone();
        let handle = tokio::spawn(async move {
            serve_connection(&task_shared, stream, peer).await;
            lock(&task_shared.conns).remove(&id);
        });
        conns.insert(id, handle.abort_handle());
    }
}

async fn serve_connection(shared: &Arc<Shared>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    match &shared.acceptor {
        Some(acceptor) => {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let cert_user = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| shared.tls.as_ref().and_then(|t| t.user_for_cert(c)));
            serve_http(shared, TokioIo::new(tls), ConnInfo { cert_user }, peer).await;
        }
        None => serve_http(shared, TokioIo::new(stream), ConnInfo::default(), peer).await,
    }
}

async fn serve_http<I>(shared: &Arc<Shared>, io: I, info: ConnInfo, peer: SocketAddr)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let info = Arc::new(info);
    let svc_shared = shared.clone();
    let svc = service_fn(move |req| api::handle(svc_shared.clone(), info.clone(), req));
    let result = http1::Builder::new()
        .title_case_headers(true)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(io, svc)
        .await;
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

async fn expiry_loop(store: Arc<Store>) {
    loop {
        let now = tokio::time::Instant::now();
        let wake = store
            .next_expiry()
            .unwrap_or(now + Duration::from_secs(1))
            .min(now + Duration::from_secs(1));
        tokio::time::sleep_until(wake).await;
        let n = store.expire_due(tokio::time::Instant::now());
        if n > 0 {
            tracing::debug!(expired = n, "events expired");
        }
    }
}
