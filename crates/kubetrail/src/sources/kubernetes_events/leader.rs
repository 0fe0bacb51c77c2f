//! Leader election for the `kubernetes_events` input (`leader_election: on`): the replica
//! holding the Lease runs the streams; the others stand by, ready.
//!
//! The elector (`kubetrail_kube::leader`) runs in a task of its own, so that its steps are
//! never cut short by the driver's other work, and reports changes on a channel. A *term*
//! starts when the Lease is acquired, once its `emit_from` has come, each stream resuming from
//! the position handed over in the Lease (or, without one, from this replica's own state); it
//! ends when the Lease is lost (the fence has already closed: nothing more is committed) or at
//! shutdown, after which the Lease is released with the final positions so the next leader
//! starts at once and repeats nothing.

use std::sync::Arc;
use std::time::Duration;

use kubetrail_core::Timestamp;
use kubetrail_kube::leader::{
    ElectionEvent, Elector, Fence, Handover, HandoverBook, HttpLeaseApi, LeaseError,
};
use kubetrail_kube::{Environment, KubeClient};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::stream::{Position, Stream};
use super::{KubernetesEvents, join_streams};
use crate::pipeline::{SourceContext, SourceError};
use crate::shutdown::ShutdownTrigger;
use crate::telemetry::health::Readiness;
use crate::telemetry::{Counter, Gauge};

/// What a stream knows of the term it runs in.
#[derive(Clone)]
pub(super) struct Term {
    /// The term's number (the fence is checked for it).
    pub id: u64,
    pub fence: Arc<Fence>,
    /// Where committed positions go, for the next renewal to hand over.
    pub book: HandoverBook,
    /// This stream's handed-over start, when the Lease held one for it.
    pub start: Option<Start>,
    pub metrics: LeaderMetrics,
}

impl Term {
    /// Waits until the Lease holds the handover book as of `generation` (the elector renews
    /// at once); false if the term may no longer emit first (then nothing more is committed in
    /// it anyway).
    pub async fn handed_over(&self, generation: u64) -> bool {
        let written = self.book.handed_over(generation);
        tokio::pin!(written);
        loop {
            tokio::select! {
                _ = &mut written => return true,
                _ = tokio::time::sleep(FENCE_CHECK) => {
                    if !self.fence.may_emit(self.id) {
                        return false;
                    }
                }
            }
        }
    }
}

/// How often a stream waiting for a handover checks that its term still holds the Lease.
const FENCE_CHECK: Duration = Duration::from_millis(50);

/// A stream's start from a handover.
#[derive(Clone)]
pub(super) struct Start {
    pub position: Position,
    /// When the previous leader wrote it.
    pub written: Timestamp,
    /// Events older than this were made records by a previous leader: the time of the
    /// stream's last handed-over record minus `handover_skew`.
    pub floor: Option<Timestamp>,
    /// Records up to this time may have been committed by the previous leader after its last
    /// handover (`until` plus `handover_skew`); `None` after a release (nothing was).
    pub replay_cutoff: Option<Timestamp>,
}

/// The leader series of one input.
#[derive(Clone)]
pub(super) struct LeaderMetrics {
    /// `kubetrail_leader`: 1 while this replica holds the Lease.
    leader: Gauge,
    /// `kubetrail_leader_transitions_total`: this replica became leader or stopped being it.
    transitions: Counter,
    /// `kubetrail_leader_handover_replayed_total`: Events a new leader made records of that the
    /// previous one may have committed after its last handover (an upper bound of the repeats).
    pub replayed: Counter,
    /// `kubetrail_leader_handover_skipped_total`: Events not made records again after a
    /// takeover because a previous leader made them (see `Start::floor`).
    pub skipped: Counter,
    /// `kubetrail_leader_fenced_batches_total`: batches not committed because the Lease might
    /// no longer be held.
    pub fenced: Counter,
    /// `kubetrail_leader_takeover_gap_milliseconds`: at this replica's last takeover from
    /// another one, how long before it its predecessor had written the handover it resumed
    /// from: how long the Events went without a leader handing over (about `lease_duration`
    /// after a leader died, the standby's poll after a release).
    takeover_gap: Gauge,
}

impl LeaderMetrics {
    fn register(ctx: &SourceContext) -> LeaderMetrics {
        let l = [("component", &*ctx.name)];
        let r = &ctx.registry;
        LeaderMetrics {
            leader: r.gauge("kubetrail_leader", &l),
            transitions: r.counter("kubetrail_leader_transitions_total", &l),
            replayed: r.counter("kubetrail_leader_handover_replayed_total", &l),
            skipped: r.counter("kubetrail_leader_handover_skipped_total", &l),
            fenced: r.counter("kubetrail_leader_fenced_batches_total", &l),
            takeover_gap: r.gauge("kubetrail_leader_takeover_gap_milliseconds", &l),
        }
    }
}

/// The streams of a running term.
struct RunningTerm {
    id: u64,
    stop: ShutdownTrigger,
    tasks: Vec<tokio::task::JoinHandle<Result<(), SourceError>>>,
}

impl RunningTerm {
    /// Stops the streams (each finishes its commit in flight, which the fence lets through
    /// only while the Lease is held) and waits for them.
    async fn stop(self) {
        self.stop.fire();
        if let Err(e) = join_streams(self.tasks).await {
            tracing::error!(error = %e, term = self.id, "an events stream failed");
        }
    }
}

type ReleaseReply = oneshot::Sender<Result<bool, LeaseError>>;

/// Runs the input under leader election until shutdown.
pub(super) async fn run(source: KubernetesEvents, ctx: SourceContext) -> Result<(), SourceError> {
    let Some(options) = source.config.leader_election.clone() else {
        return Err(SourceError("leader election is off".into()));
    };
    let env = Environment::from_process();
    let resolved = source
        .config
        .connection
        .resolve(&env)
        .map_err(|e| SourceError(e.to_string()))?;
    let election = options
        .resolve(&ctx.name, resolved.namespace.as_deref(), &env)
        .map_err(|e| SourceError(format!("{}: {e}", ctx.name)))?;
    let client = KubeClient::new(&resolved).map_err(|e| SourceError(e.to_string()))?;
    let book = HandoverBook::new();
    let elector = Elector::new(
        HttpLeaseApi::new(client, &election.namespace, &election.name),
        election.clone(),
        book.clone(),
    );
    let fence = elector.fence();
    let contact = elector.last_contact();
    let (mut events, release) = spawn_elector(elector);
    // Ready while the Lease API answers: a replica that cannot reach it can neither lead nor
    // take over.
    let lease_health = ctx.health.register(
        &format!("{}/lease", ctx.name),
        election.lease_duration + election.renew_deadline,
    );
    let mut last_contact = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tracing::info!(input = %ctx.name, lease = %format!("{}/{}", election.namespace, election.name),
        holder = %election.holder, lease_duration = ?election.lease_duration,
        renew_deadline = ?election.renew_deadline, retry_period = ?election.retry_period,
        "leader election: standing by until this replica holds the Lease");

    let metrics = LeaderMetrics::register(&ctx);
    metrics.leader.set(0);
    ctx.health
        .set_role(&ctx.name, "standby (looking for the leader)");
    let namespaces = source.namespaces();
    let watcher = source.watcher;
    let config = Arc::new(source.config);
    let streams: Vec<(Option<String>, Arc<Readiness>)> = namespaces
        .into_iter()
        .map(|ns| {
            let r = Stream::register(&ctx, &config, &watcher, ns.as_deref());
            r.set_standby(true);
            (ns, r)
        })
        .collect();

    let mut pending: Option<(u64, Instant, Option<Handover>)> = None;
    let mut running: Option<RunningTerm> = None;
    let mut failures = 0u64;
    loop {
        let start_at = pending.as_ref().map(|p| p.1);
        tokio::select! {
            biased;
            _ = ctx.shutdown.fired() => break,
            ev = events.recv() => {
                let Some(ev) = ev else {
                    return Err(SourceError("the leader election task ended".into()));
                };
                match ev {
                    ElectionEvent::Acquired { term, emit_from, handover } => {
                        if let Some(t) = running.take() {
                            t.stop().await;
                        }
                        failures = 0;
                        metrics.transitions.inc();
                        metrics.leader.set(1);
                        let wait = emit_from.saturating_duration_since(Instant::now());
                        if wait.is_zero() {
                            ctx.health.set_role(&ctx.name, format!("leader ({})", election.holder));
                        } else {
                            tracing::info!(input = %ctx.name, term, wait = ?wait,
                                "created the missing Lease: waiting one lease_duration before emitting, in case a previous holder is still active");
                            ctx.health.set_role(&ctx.name, format!(
                                "leader ({}), emitting in {}s (the Lease was missing)",
                                election.holder, wait.as_secs()));
                        }
                        pending = Some((term, emit_from, handover));
                    }
                    ElectionEvent::Lost { term, reason } => {
                        pending = None;
                        if let Some(t) = running.take() {
                            t.stop().await;
                        }
                        for (_, r) in &streams {
                            r.set_standby(true);
                        }
                        metrics.transitions.inc();
                        metrics.leader.set(0);
                        ctx.health.set_role(&ctx.name, "standby (the Lease was lost)");
                        tracing::warn!(input = %ctx.name, term, %reason, "stopped leading");
                    }
                    ElectionEvent::Leader { holder } => {
                        let role = match &holder {
                            Some(h) => format!("standby (leader: {h})"),
                            None => "standby (no leader)".to_string(),
                        };
                        tracing::info!(input = %ctx.name, leader = ?holder, "the leader changed");
                        ctx.health.set_role(&ctx.name, role);
                    }
                    ElectionEvent::Failed(e) => {
                        failures += 1;
                        ctx.metrics.errors.inc();
                        if failures <= 3 || failures.is_power_of_two() {
                            tracing::warn!(input = %ctx.name, error = %e, failures, "Lease request failed");
                        }
                    }
                }
            }
            _ = tick.tick() => {
                let now = *contact.lock().unwrap_or_else(|p| p.into_inner());
                if now.is_some() && now != last_contact {
                    last_contact = now;
                    lease_health.set_ready(true);
                    lease_health.progress();
                }
            }
            _ = sleep_until_opt(start_at), if start_at.is_some() => {
                let Some((term, _, handover)) = pending.take() else {
                    continue;
                };
                if !fence.may_emit(term) {
                    // Lost meanwhile; the Lost event is on its way.
                    continue;
                }
                ctx.health.set_role(&ctx.name, format!("leader ({})", election.holder));
                running = Some(start_term(
                    &ctx, &config, &watcher, &streams, &fence, &book, &metrics,
                    term, handover.as_ref(), &election.holder, options.handover_skew,
                ));
            }
        }
    }

    // Shutdown: the streams finish their commits in flight, then the Lease is released with
    // the positions they committed.
    if let Some(t) = running.take() {
        t.stop().await;
    }
    let (tx, rx) = oneshot::channel();
    if release.send(tx).is_ok() {
        match tokio::time::timeout(election.renew_deadline, rx).await {
            Ok(Ok(Ok(true))) => {}
            Ok(Ok(Ok(false))) => {}
            Ok(Ok(Err(e))) => {
                tracing::warn!(input = %ctx.name, error = %e, "could not release the Lease; it expires after lease_duration")
            }
            Ok(Err(_)) | Err(_) => {
                tracing::warn!(input = %ctx.name, "releasing the Lease took too long; it expires after lease_duration")
            }
        }
    }
    metrics.leader.set(0);
    Ok(())
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Runs the elector in its own task: its changes come on the channel; sending on the
/// `oneshot` releases the Lease and ends the task.
fn spawn_elector(
    mut elector: Elector<HttpLeaseApi>,
) -> (mpsc::Receiver<ElectionEvent>, oneshot::Sender<ReleaseReply>) {
    let (tx, rx) = mpsc::channel(64);
    let (release_tx, mut release_rx) = oneshot::channel::<ReleaseReply>();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                ev = elector.next() => {
                    let sent = match ev {
                        // Reports of failed calls may be dropped when the driver is busy: the
                        // renewals must go on.
                        ElectionEvent::Failed(_) => tx.try_send(ev).is_ok() || !tx.is_closed(),
                        _ => tx.send(ev).await.is_ok(),
                    };
                    if !sent {
                        return;
                    }
                }
                reply = &mut release_rx => {
                    let released = elector.release().await;
                    if let Ok(reply) = reply {
                        let _ = reply.send(released);
                    }
                    return;
                }
            }
        }
    });
    (rx, release_tx)
}

/// Starts the streams of term `id`, each from its handed-over position if there is one.
#[allow(clippy::too_many_arguments)]
fn start_term(
    ctx: &SourceContext,
    config: &Arc<super::config::EventsConfig>,
    watcher: &kubetrail_kube::WatcherConfig,
    streams: &[(Option<String>, Arc<Readiness>)],
    fence: &Arc<Fence>,
    book: &HandoverBook,
    metrics: &LeaderMetrics,
    id: u64,
    handover: Option<&Handover>,
    holder: &str,
    skew: Duration,
) -> RunningTerm {
    let (stop, stopped) = crate::shutdown::channel();
    let term_ctx = SourceContext {
        shutdown: stopped,
        ..ctx.clone()
    };
    let skew_nanos = i64::try_from(skew.as_nanos()).unwrap_or(i64::MAX);
    let shift =
        |t: Timestamp, by: i64| Timestamp::from_unix_nanos(t.unix_nanos().saturating_add(by));
    let mut tasks = Vec::new();
    // A handover this process wrote itself (it lost the Lease, nobody else took it) is behind
    // or at its own state: the local checkpoints are at least as far, and resuming from them
    // repeats nothing.
    let handover = handover.filter(|h| h.holder != holder);
    if let Some(h) = handover {
        // By two replicas' wall clocks: their skew is in it.
        let gap_ms = Timestamp::now()
            .unix_nanos()
            .saturating_sub(h.written.unix_nanos())
            / 1_000_000;
        metrics.takeover_gap.set(gap_ms.max(0));
        tracing::info!(input = %ctx.name, term = id, previous = %h.holder, gap_ms,
            "taking over from the previous leader's handover");
    }
    for (ns, readiness) in streams {
        let name = Stream::name(ctx, config, ns.as_deref());
        let start = handover.and_then(|h| {
            let s = h.streams.get(&name)?;
            let Some(position) = Position::from_value(&s.position) else {
                tracing::warn!(input = %ctx.name, stream = %name, "unreadable handed-over position; resuming from this replica's own state");
                return None;
            };
            Some(Start {
                position,
                written: h.written,
                floor: s.last.map(|l| shift(l, -skew_nanos)),
                // Nothing to count after a release: nothing was committed past it.
                replay_cutoff: (!h.released).then(|| shift(h.until, skew_nanos)),
            })
        });
        tracing::info!(input = %ctx.name, stream = %name, term = id,
            handed_over = ?start.as_ref().map(|s| &s.position),
            "leading: starting the stream");
        readiness.set_ready(false);
        readiness.progress();
        readiness.set_standby(false);
        let term = Term {
            id,
            fence: fence.clone(),
            book: book.clone(),
            start,
            metrics: metrics.clone(),
        };
        let stream = Stream::new(
            &term_ctx,
            config.clone(),
            watcher.clone(),
            ns.clone(),
            readiness.clone(),
            Some(term),
        );
        tasks.push(tokio::spawn(stream.run()));
    }
    RunningTerm { id, stop, tasks }
}
