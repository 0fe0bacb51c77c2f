//! One collection of Events watched (all namespaces, or one): list, watch, and commit each
//! batch with the position it advances to. Under leader election a stream runs for one term:
//! it resumes from the handed-over position, checks the term's fence right before every
//! commit, and writes each committed position into the handover book.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kubetrail_core::{DedupKey, Record, RecordKind, Timestamp};
use kubetrail_kube::{
    Environment, GapInfo, HttpApi, KubeClient, ResourcePath, Selectors, WatchEventType, Watcher,
    WatcherConfig, WatcherEvent,
};
use serde_json::json;

use super::config::EventsConfig;
use super::leader::Term;
use super::normalize::{EventsApi, NormalizeContext, Observed, Updates, normalize};
use crate::pipeline::{PipelineError, SourceContext, SourceError, Submission};
use crate::telemetry::health::Readiness;
use crate::telemetry::{Counter, Gauge};

/// Where a stream is, as committed with each batch: watching from a resourceVersion, or in
/// the middle of a LIST (its continue token), so that a restart finishes the same list
/// snapshot instead of starting a new one (which would miss versions superseded meanwhile).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct Position {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rv: Option<String>,
    #[serde(default, rename = "continue", skip_serializing_if = "Option::is_none")]
    continue_token: Option<String>,
}

impl Position {
    fn watch(rv: String) -> Position {
        Position {
            rv: Some(rv),
            continue_token: None,
        }
    }

    fn encode(&self) -> String {
        // Serializing two optional strings cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    fn decode(s: &str) -> Option<Position> {
        serde_json::from_str::<Position>(s)
            .ok()
            .filter(|p| p.rv.is_some() || p.continue_token.is_some())
    }

    /// The position as the handover annotation holds it.
    fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// A handed-over position; `None` when it is not one.
    pub(super) fn from_value(v: &serde_json::Value) -> Option<Position> {
        serde_json::from_value::<Position>(v.clone())
            .ok()
            .filter(|p| p.rv.is_some() || p.continue_token.is_some())
    }
}

/// What a commit under leader election writes into the handover book once it is durable.
struct Handover {
    term: Term,
    stream: String,
    position: Option<serde_json::Value>,
    /// The time of the batch's last Event.
    last: Option<Timestamp>,
    /// Events in the batch that the previous leader may have committed already.
    replayed: u64,
}

/// How often a quiet stream re-commits its checkpoint, so that its age tells downtime apart
/// from a quiet cluster.
const HEARTBEAT: Duration = Duration::from_secs(60);
/// How often readiness and the seconds-since-last-event gauge are refreshed.
const TICK: Duration = Duration::from_secs(5);

/// One collection watched: all namespaces, or one.
pub(super) struct Stream {
    ctx: SourceContext,
    config: Arc<EventsConfig>,
    watcher: WatcherConfig,
    namespace: Option<String>,
    /// The checkpoint stream name.
    name: String,
    dedup_scope: Arc<str>,
    relists: Counter,
    gaps: Counter,
    since_last_event: Gauge,
    readiness: Arc<Readiness>,
    /// The leadership term this stream runs in (leader election), or `None`.
    term: Option<Term>,
    /// Something was committed in this term (from then on the local checkpoint is the latest
    /// position; before, the handed-over one is).
    committed_in_term: Arc<AtomicBool>,
}

impl Stream {
    /// The checkpoint stream name of a namespace's stream.
    pub(super) fn name(
        ctx: &SourceContext,
        config: &EventsConfig,
        namespace: Option<&str>,
    ) -> String {
        let api = match config.api {
            EventsApi::CoreV1 => "core-v1",
            EventsApi::EventsV1 => "events-v1",
        };
        ctx.stream_name(&format!("{api}/{}", namespace.unwrap_or("*")))
    }

    /// Registers a stream's readiness (once per process: terms come and go, the stream's
    /// health entry stays).
    pub(super) fn register(
        ctx: &SourceContext,
        config: &EventsConfig,
        watcher: &WatcherConfig,
        namespace: Option<&str>,
    ) -> Arc<Readiness> {
        // A healthy watch makes progress at least once per kube_watch_timeout (a change, or a
        // watch that ran its course and was renewed); two timeouts without any is a stall.
        let stall_after = watcher.watch_timeout * 2 + Duration::from_secs(10);
        ctx.health
            .register(&Stream::name(ctx, config, namespace), stall_after)
    }

    pub(super) fn new(
        ctx: &SourceContext,
        config: Arc<EventsConfig>,
        watcher: WatcherConfig,
        namespace: Option<String>,
        readiness: Arc<Readiness>,
        term: Option<Term>,
    ) -> Stream {
        let name = Stream::name(ctx, &config, namespace.as_deref());
        let labels = [("component", &*ctx.name)];
        Stream {
            readiness,
            relists: ctx
                .registry
                .counter("kubetrail_events_relists_total", &labels),
            gaps: ctx.registry.counter("kubetrail_gap_records_total", &labels),
            since_last_event: ctx
                .registry
                .gauge("kubetrail_events_seconds_since_last_event", &labels),
            dedup_scope: Arc::from(format!(
                "{}/{}",
                ctx.name,
                namespace.as_deref().unwrap_or("*")
            )),
            ctx: ctx.clone(),
            config,
            watcher,
            namespace,
            name,
            term,
            committed_in_term: Arc::new(AtomicBool::new(false)),
        }
    }

    fn path(&self) -> Result<ResourcePath, String> {
        let ns = self.namespace.as_deref();
        match self.config.api {
            EventsApi::CoreV1 => ResourcePath::core_v1_events(ns),
            EventsApi::EventsV1 => ResourcePath::events_k8s_io_v1(ns),
        }
        .map_err(|e| e.to_string())
    }

    fn gap_record(
        &self,
        from_rv: Option<&str>,
        reason: &str,
        message: &str,
        since: Option<Timestamp>,
    ) -> Record {
        let now = Timestamp::now();
        let from = from_rv.unwrap_or("");
        // A gap is identified by the position it lost (so a retried relist after a crash
        // reports it once); without one, by when it was noticed.
        let id = if from.is_empty() {
            format!("gap:{}:{reason}@{}", self.name, now.unix_nanos())
        } else {
            format!("gap:{}:{from}", self.name)
        };
        let mut r = Record::new(
            id.clone(),
            now,
            RecordKind::Gap,
            self.ctx.name.clone(),
            self.ctx.tag.clone(),
        );
        r.fields.insert("stream".into(), json!(self.name));
        r.fields.insert("reason".into(), json!(reason));
        r.fields.insert("message".into(), json!(message));
        if !from.is_empty() {
            r.fields.insert("from_resource_version".into(), json!(from));
        }
        if let Some(s) = since {
            r.fields.insert("since".into(), json!(s.to_rfc3339()));
        }
        r.fields.insert("until".into(), json!(now.to_rfc3339()));
        if let Some(ns) = &self.namespace {
            r.fields.insert("namespace".into(), json!(ns));
        }
        // One gap per lost position, even if the same relist is retried after a crash.
        r.dedup = Some(DedupKey {
            scope: Arc::from("gap"),
            key: id,
            value: String::new(),
        });
        r
    }

    /// Submits, treating shutdown as the end and other failures as fatal for this attempt.
    async fn commit(
        &self,
        records: Vec<Record>,
        pos: Option<&Position>,
    ) -> Result<bool, PipelineError> {
        self.start_commit(records, pos).await
    }

    /// A commit as an owned future, so that the next batch can be fetched while it runs.
    fn start_commit(
        &self,
        records: Vec<Record>,
        pos: Option<&Position>,
    ) -> impl std::future::Future<Output = Result<bool, PipelineError>> + Send + 'static {
        let checkpoints = pos
            .map(|p| vec![(self.name.clone(), p.encode())])
            .unwrap_or_default();
        // Under leader election: the fence to check before committing, and what to write into
        // the handover book after.
        let handover = self.term.as_ref().map(|t| {
            let events = records.iter().filter(|r| r.kind == RecordKind::K8sEvent);
            let replayed = t
                .start
                .as_ref()
                .and_then(|s| s.replay_cutoff)
                .map_or(0, |cutoff| {
                    events.clone().filter(|r| r.time <= cutoff).count()
                });
            Handover {
                term: t.clone(),
                stream: self.name.clone(),
                position: pos.map(Position::to_value),
                last: events.map(|r| r.time).max(),
                replayed: replayed as u64,
            }
        });
        let sub = Submission {
            records,
            checkpoints,
            dedup_retention: self.config.retention,
            ..Submission::default()
        };
        let ctx = self.ctx.clone();
        let committed_in_term = self.committed_in_term.clone();
        async move {
            // Filters and encoding on a blocking thread, beside the fetching of the next batch.
            let prep = ctx.clone();
            let sub = match tokio::task::spawn_blocking(move || prep.prepare(sub)).await {
                Ok(sub) => sub,
                Err(e) => {
                    return Err(PipelineError::Storage(format!(
                        "preparing records failed: {e}"
                    )));
                }
            };
            // Right before the commit: a leader whose Lease may have expired commits nothing
            // more (the next leader resumes from the last handover, before this batch).
            if let Some(h) = &handover
                && !h.term.fence.may_emit(h.term.id)
            {
                h.term.metrics.fenced.inc();
                tracing::warn!(input = %ctx.name, stream = %h.stream, term = h.term.id,
                    "not committing a batch: the Lease may no longer be held");
                return Ok(false);
            }
            match ctx.submit(sub).await {
                Ok(_) => {
                    // A term that ended meanwhile hands nothing over any more.
                    if let Some(h) = handover.filter(|h| h.term.fence.until(h.term.id).is_some()) {
                        if let Some(position) = h.position {
                            let generation = h.term.book.committed(&h.stream, position, h.last);
                            let first = !committed_in_term.swap(true, Ordering::Relaxed);
                            // A term that found no position of this stream in the Lease: until
                            // a renewal carries one, a leader taking over would have to list
                            // afresh (a list shows only the latest version of each Event, so
                            // the versions superseded meanwhile would be lost). The next
                            // commit waits for the handover of the first one.
                            if first && h.term.start.is_none() {
                                h.term.handed_over(generation).await;
                            }
                        }
                        h.term.metrics.replayed.add(h.replayed);
                    }
                    Ok(true)
                }
                Err(PipelineError::ShuttingDown) => Ok(false),
                Err(e) => Err(e),
            }
        }
    }

    /// Where to resume, and when that position was committed: in a term that has not
    /// committed yet, the handed-over position; otherwise the local checkpoint.
    async fn resume_point(&self) -> Result<(Option<Position>, Option<Timestamp>), String> {
        if let Some(start) = self.term.as_ref().and_then(|t| t.start.as_ref())
            && !self.committed_in_term.load(Ordering::Relaxed)
        {
            return Ok((Some(start.position.clone()), Some(start.written)));
        }
        let checkpoint = self
            .ctx
            .checkpoint(&self.name)
            .await
            .map_err(|e| e.to_string())?;
        let position = checkpoint.as_ref().and_then(|c| {
            let p = Position::decode(&c.value);
            if p.is_none() {
                tracing::warn!(input = %self.ctx.name, stream = %self.name, "unreadable checkpoint; listing from scratch");
            }
            p
        });
        let at = checkpoint
            .map(|c| Timestamp::from_unix_nanos(c.updated_at_unix_ms.saturating_mul(1_000_000)));
        Ok((position, at))
    }

    /// After taking over with a handover, the records a previous leader already made are not
    /// made again: on a relist after a gap, Events last seen before the handed-over time of
    /// the stream's last record (minus `handover_skew`); with `updates: first`, Events first
    /// seen before it.
    fn drop_handed_over(&self, records: &mut Vec<Record>, relisting: bool) {
        let Some(term) = &self.term else {
            return;
        };
        let Some(floor) = term.start.as_ref().and_then(|s| s.floor) else {
            return;
        };
        let first_only = self.config.updates == Updates::First;
        if !relisting && !first_only {
            return;
        }
        let before = records.len();
        records.retain(|r| {
            if r.kind != RecordKind::K8sEvent {
                return true;
            }
            let t = if first_only {
                r.fields
                    .get_member("first_time")
                    .and_then(|m| m.read::<&str>())
                    .and_then(Timestamp::parse_rfc3339)
                    .unwrap_or(r.time)
            } else {
                r.time
            };
            t >= floor
        });
        term.metrics.skipped.add((before - records.len()) as u64);
    }

    pub(super) async fn run(self) -> Result<(), SourceError> {
        let mut attempt = 0u32;
        loop {
            if self.ctx.shutdown.is_fired() {
                return Ok(());
            }
            match self.run_once().await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.ctx.metrics.errors.inc();
                    let delay = crate::topology::backoff(
                        self.watcher.backoff_base,
                        Duration::from_secs(30),
                        attempt,
                    );
                    attempt = attempt.saturating_add(1);
                    tracing::error!(input = %self.ctx.name, stream = %self.name, error = %e, retry_in = ?delay,
                        "events stream failed; restarting from the last committed resourceVersion");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.ctx.shutdown.fired() => return Ok(()),
                    }
                }
            }
        }
    }

    /// Runs until shutdown (Ok) or an error after which the stream starts over from the state.
    async fn run_once(&self) -> Result<(), String> {
        let (position, committed_at) = self.resume_point().await?;
        if let (Some(term), Some(p)) = (&self.term, &position) {
            // Renewals hand over at least where this term starts. Resuming from this
            // replica's own state (the Lease had no position of this stream): in the Lease
            // before anything more is committed, so that a leader taking over resumes from it.
            let generation = term.book.committed(&self.name, p.to_value(), None);
            if term.start.is_none() && !term.handed_over(generation).await {
                return Ok(());
            }
        }
        let resume = position.as_ref().and_then(|p| p.rv.clone());
        if let Some(since) = committed_at {
            let age_ms = (Timestamp::now().unix_nanos() - since.unix_nanos()) / 1_000_000;
            let retention_ms = i64::try_from(self.config.retention.as_millis()).unwrap_or(i64::MAX);
            if age_ms > retention_ms {
                let msg = format!(
                    "kubetrail was not collecting for {}s, longer than kube_retention_time ({}s): Events that expired meanwhile are lost",
                    age_ms / 1000,
                    self.config.retention.as_secs()
                );
                tracing::warn!(input = %self.ctx.name, stream = %self.name, "{msg}");
                self.gaps.inc();
                let gap = self.gap_record(resume.as_deref(), "downtime", &msg, Some(since));
                if !self
                    .commit(vec![gap], None)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    return Ok(());
                }
            }
        }

        let resolved = self
            .config
            .connection
            .resolve(&Environment::from_process())
            .map_err(|e| e.to_string())?;
        let client = KubeClient::new(&resolved).map_err(|e| e.to_string())?;
        let selectors = Selectors {
            field_selector: self.config.field_selector.clone(),
            label_selector: self.config.label_selector.clone(),
        };
        let api = HttpApi::new(client, self.path()?, selectors);
        let mut watcher = match position.as_ref().and_then(|p| p.continue_token.clone()) {
            Some(token) => {
                Watcher::resume_list(api, self.watcher.clone(), self.watcher.backoff(), token)
            }
            None => Watcher::new(
                api,
                self.watcher.clone(),
                self.watcher.backoff(),
                resume.clone(),
            ),
        };
        let stats = watcher.stats();
        tracing::info!(input = %self.ctx.name, stream = %self.name, url = %resolved.url,
            resume = ?position, "events stream starting");

        let source: Arc<str> = self.ctx.name.clone();
        let cx = NormalizeContext {
            api: self.config.api,
            source: &source,
            tag: &self.ctx.tag,
            dedup_scope: &self.dedup_scope,
            raw_format: self.config.raw_format,
            updates: self.config.updates,
        };
        let mut last_commit = Instant::now();
        let mut last_event = Instant::now();
        let mut committed = position;
        let mut relisting = false;
        let mut errors_seen = 0u64;
        let mut tick = tokio::time::interval(TICK);
        tick.tick().await;
        // At most one commit in flight while the next batch is fetched. Commits stay in order
        // (each waits for the previous); if one fails, the stream restarts from the state, so
        // fetching ahead of a commit can never skip anything.
        let mut inflight: Option<tokio::task::JoinHandle<Result<bool, PipelineError>>> = None;
        async fn settle(
            h: &mut Option<tokio::task::JoinHandle<Result<bool, PipelineError>>>,
        ) -> Result<bool, String> {
            match h.take() {
                None => Ok(true),
                Some(h) => h
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string()),
            }
        }
        loop {
            let next = tokio::select! {
                biased;
                _ = self.ctx.shutdown.fired() => {
                    settle(&mut inflight).await?;
                    return Ok(());
                }
                _ = tick.tick() => {
                    self.since_last_event.set(last_event.elapsed().as_secs() as i64);
                    if stats.last_progress().is_some_and(|p| p.elapsed() < TICK * 2) {
                        self.readiness.progress();
                    }
                    if last_commit.elapsed() >= HEARTBEAT {
                        if !settle(&mut inflight).await? {
                            return Ok(());
                        }
                        if let Some(pos) = committed.clone() {
                            if !self.commit(Vec::new(), Some(&pos)).await.map_err(|e| e.to_string())? {
                                return Ok(());
                            }
                            last_commit = Instant::now();
                        }
                    }
                    continue;
                }
                n = watcher.next() => n,
            };
            // Malformed frames and unexpected kinds are counted by the watcher; surface them.
            let c = stats.counters();
            let errs = c.malformed_frames
                + c.unexpected_kind
                + c.oversized_frames
                + c.truncated_frames
                + c.skipped_list_items;
            if errs > errors_seen {
                self.ctx.metrics.errors.add(errs - errors_seen);
                errors_seen = errs;
            }
            let event = match next {
                Ok(ev) => {
                    self.readiness.set_ready(true);
                    self.readiness.progress();
                    ev
                }
                Err(e) => {
                    // The watcher has arranged its retry (with backoff); report and go on.
                    self.ctx.metrics.errors.inc();
                    tracing::warn!(input = %self.ctx.name, stream = %self.name, error = %e, "events list/watch error");
                    continue;
                }
            };
            let (records, pos) = match event {
                WatcherEvent::ListStarted { after_gap } => {
                    if c.list_requests > 0 || after_gap.is_some() {
                        self.relists.inc();
                    }
                    match after_gap {
                        Some(GapInfo {
                            from_resource_version,
                            reason,
                            message,
                        }) => {
                            relisting = true;
                            tracing::warn!(input = %self.ctx.name, stream = %self.name, %reason, %message,
                                "continuity lost; relisting");
                            self.gaps.inc();
                            let gap = self.gap_record(
                                from_resource_version.as_deref(),
                                &reason.to_string(),
                                &message,
                                None,
                            );
                            (vec![gap], None)
                        }
                        None => continue,
                    }
                }
                WatcherEvent::ListPage {
                    items,
                    last,
                    continue_token,
                } => {
                    let mut records = Vec::with_capacity(items.len());
                    for item in items {
                        self.push(&mut records, item.raw, Observed::Listed, &cx);
                    }
                    self.drop_handed_over(&mut records, relisting);
                    if last.is_some() {
                        relisting = false;
                    }
                    let pos = match (last, continue_token) {
                        (Some(rv), _) => Some(Position::watch(rv)),
                        (None, Some(token)) => Some(Position {
                            rv: None,
                            continue_token: Some(token),
                        }),
                        (None, None) => None,
                    };
                    (records, pos)
                }
                WatcherEvent::Frames {
                    items,
                    resource_version,
                } => {
                    last_event = Instant::now();
                    let mut records = Vec::with_capacity(items.len());
                    for (ty, item) in items {
                        let observed = match ty {
                            WatchEventType::Added => Observed::Added,
                            WatchEventType::Modified => Observed::Modified,
                            WatchEventType::Deleted if self.config.emit_deleted => {
                                Observed::Deleted
                            }
                            WatchEventType::Deleted => continue,
                        };
                        self.push(&mut records, item.raw, observed, &cx);
                    }
                    self.drop_handed_over(&mut records, false);
                    (records, Some(Position::watch(resource_version)))
                }
                WatcherEvent::Bookmark { resource_version } => {
                    (Vec::new(), Some(Position::watch(resource_version)))
                }
            };
            if records.is_empty() && pos.is_none() {
                continue;
            }
            if !settle(&mut inflight).await? {
                return Ok(());
            }
            inflight = Some(tokio::spawn(self.start_commit(records, pos.as_ref())));
            last_commit = Instant::now();
            if pos.is_some() {
                committed = pos;
            }
        }
    }

    fn push(
        &self,
        out: &mut Vec<Record>,
        raw: Box<serde_json::value::RawValue>,
        observed: Observed,
        cx: &NormalizeContext<'_>,
    ) {
        match normalize(raw, observed, cx) {
            Ok(r) => out.push(r),
            Err(e) => {
                self.ctx.metrics.errors.inc();
                tracing::warn!(input = %self.ctx.name, stream = %self.name, error = %e, "skipping an object that is not a usable Event");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_garbage_is_none() {
        let w = Position::watch("12345".into());
        assert_eq!(w.encode(), r#"{"rv":"12345"}"#);
        assert_eq!(Position::decode(&w.encode()), Some(w));
        let l = Position {
            rv: None,
            continue_token: Some("eyJ2Ijoi".into()),
        };
        assert_eq!(l.encode(), r#"{"continue":"eyJ2Ijoi"}"#);
        assert_eq!(Position::decode(&l.encode()), Some(l));
        for bad in ["", "12345", "{}", "[1]", r#"{"rv":5}"#] {
            assert_eq!(Position::decode(bad), None, "{bad}");
        }
    }
}
