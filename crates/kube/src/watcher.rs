//! The list+watch loop as an explicit state machine (one enum of states, one step function),
//! driven by [`Watcher::next`]. The HTTP layer is behind the [`Api`] trait and the retry delays
//! behind [`Backoff`], so that every hard case (410, empty 200s, cut streams, garbage frames)
//! is tested with scripted answers and paused time.
//!
//! Rules it keeps: LISTs are always paged and yielded page by page; a WATCH resumes from the
//! last good resourceVersion, which is only ever compared for equality; every path that
//! reconnects either made progress first or waits for the backoff (no busy loop); a break in
//! continuity is reported as a gap before the relist.

use std::fmt;
use std::future::{Future, poll_fn};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use kubetrail_core::config::{ConfigError, Section};
use tokio::time::Instant;

use crate::backoff::{Backoff, DEFAULT_BACKOFF_CAP, ExponentialBackoff};
use crate::client::KubeError;
use crate::frames::{
    DEFAULT_MAX_FRAME_BYTES, Frame, FrameError, FrameSplitter, RawObject, WatchEventType,
    parse_frame, parse_list_page,
};
use crate::status::{ApiError, Status};

/// A source of body chunks (a watch response body, or a script in tests).
pub trait ChunkSource: Send {
    /// The next chunk; `None` at the clean end of the stream.
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, WatchError>>>;
}

/// An open watch stream.
pub type WatchStream = Box<dyn ChunkSource>;

/// The API calls the watcher makes. [`crate::HttpApi`] implements them over HTTP; tests script
/// them.
pub trait Api: Send + Sync {
    /// One LIST page: the body of `?limit=N[&continue=T]`, read whole (a page is bounded by
    /// `limit`). An error answer is a [`WatchError::Request`] with the API error inside.
    fn list_page(
        &self,
        continue_token: Option<&str>,
        limit: u32,
    ) -> impl Future<Output = Result<Bytes, WatchError>> + Send;
    /// Checks that `resource_version` is not ahead of the server (one item, `NotOlderThan`);
    /// the error of a future one is a 504 `ResourceVersionTooLarge`.
    fn probe(&self, resource_version: &str) -> impl Future<Output = Result<(), WatchError>> + Send;
    /// Opens `?watch=1&resourceVersion=RV&allowWatchBookmarks=true&timeoutSeconds=N`.
    fn watch(
        &self,
        resource_version: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<WatchStream, WatchError>> + Send;
    /// Forget cached credentials (after a 401), so that the next request reads them again.
    fn invalidate_credentials(&self);
}

/// Why a list or watch attempt failed. The watcher has already arranged its retry when
/// [`Watcher::next`] returns one of these; calling `next` again goes on.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The request failed or was answered with an error status.
    #[error(transparent)]
    Request(#[from] KubeError),
    /// The stream broke (a script's cut, or a transport problem without more detail).
    #[error("the watch stream broke: {0}")]
    Stream(String),
    /// A LIST page could not be used.
    #[error("unusable LIST page: {0}")]
    BadList(#[source] FrameError),
    /// A frame beyond the size cap: the stream cannot be followed.
    #[error("the watch stream is unusable: {0}")]
    BadStream(#[source] FrameError),
    /// Nothing arrived for longer than the watch timeout plus a grace period.
    #[error("the watch sent nothing for {0:?}")]
    Idle(Duration),
    /// An ERROR frame other than 410.
    #[error("the watch sent an ERROR: {0}")]
    ErrorFrame(ApiError),
}

impl WatchError {
    /// The API error inside, if the server sent one.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            WatchError::Request(k) => k.api_error(),
            WatchError::ErrorFrame(e) => Some(e),
            _ => None,
        }
    }

    fn is_gone(&self) -> bool {
        self.api_error().is_some_and(ApiError::is_gone)
    }

    fn is_unauthorized(&self) -> bool {
        self.api_error().is_some_and(ApiError::is_unauthorized)
    }

    fn retry_after(&self) -> Option<Duration> {
        self.api_error().and_then(|e| e.retry_after)
    }
}

/// Why continuity was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapReason {
    /// The watch answered 410 (ERROR frame or status): the resourceVersion was compacted.
    WatchExpired,
    /// The watch answered 200 and closed at once with nothing (kubernetes#104171).
    EmptyWatch,
    /// A LIST continue token expired mid-list; the list started over.
    ListContinueExpired,
    /// The resourceVersion to resume from is ahead of the server's (its data was replaced:
    /// a rebuilt cluster, a restored etcd). A watch from it answers nothing until it times
    /// out, again and again; found by a probe after a watch that ended without anything.
    ResourceVersionTooLarge,
}

impl fmt::Display for GapReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GapReason::WatchExpired => "watch_expired",
            GapReason::EmptyWatch => "empty_watch",
            GapReason::ListContinueExpired => "list_continue_expired",
            GapReason::ResourceVersionTooLarge => "resource_version_too_large",
        })
    }
}

/// What a relist follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GapInfo {
    /// The last resourceVersion with unbroken history before the gap (`None` when the list
    /// that broke was not resuming anything).
    pub from_resource_version: Option<String>,
    /// Why.
    pub reason: GapReason,
    /// The server's message, or a description.
    pub message: String,
}

/// What [`Watcher::next`] yields. The caller commits each one durably before calling `next`
/// again, and restarts a watcher from the last committed resourceVersion.
#[derive(Debug)]
pub enum WatcherEvent {
    /// A LIST begins (the first, or a relist after a gap).
    ListStarted {
        /// Set when this list follows a break in continuity.
        after_gap: Option<GapInfo>,
    },
    /// One LIST page, as it arrived. `last` is the list's resourceVersion, on the last page.
    /// `continue_token` is where the list goes on after this page (on every page but the
    /// last): committing it with the page lets a restart finish the same list snapshot
    /// ([`Watcher::resume_list`]) instead of starting a new one, which would miss the versions
    /// superseded in between.
    ListPage {
        items: Vec<RawObject>,
        last: Option<String>,
        continue_token: Option<String>,
    },
    /// Watch changes that were buffered together, and the resourceVersion after them.
    Frames {
        items: Vec<(WatchEventType, RawObject)>,
        resource_version: String,
    },
    /// A bookmark: a new resourceVersion, nothing to record.
    Bookmark { resource_version: String },
}

impl WatcherEvent {
    /// The resourceVersion to commit with this event, if it carries one.
    pub fn resource_version(&self) -> Option<&str> {
        match self {
            WatcherEvent::ListStarted { .. } => None,
            WatcherEvent::ListPage { last, .. } => last.as_deref(),
            WatcherEvent::Frames {
                resource_version, ..
            }
            | WatcherEvent::Bookmark { resource_version } => Some(resource_version),
        }
    }
}

/// Tunables of a watcher.
#[derive(Debug, Clone)]
pub struct WatcherConfig {
    /// Objects of another kind are counted and skipped (e.g. `Event`); `None` accepts all.
    pub expected_kind: Option<String>,
    /// LIST page size (`kube_request_limit`; 0 in the config means the default, never unpaged).
    pub page_limit: u32,
    /// How long a batch of frames may wait for more frames once it holds one (frames arrive
    /// one HTTP chunk at a time; without lingering, a busy watch yields one-frame batches and
    /// every frame pays a commit).
    pub batch_linger: Duration,
    /// WATCH `timeoutSeconds` (`kube_watch_timeout`).
    pub watch_timeout: Duration,
    /// A watch that sends nothing for `watch_timeout + idle_grace` is treated as dead.
    pub idle_grace: Duration,
    /// Size cap of one frame.
    pub max_frame_bytes: usize,
    /// Most frames in one [`WatcherEvent::Frames`].
    pub max_batch_frames: usize,
    /// Most object bytes in one [`WatcherEvent::Frames`] (at least one frame is always taken).
    pub max_batch_bytes: usize,
    /// A watch that ends without a frame within this time is the empty-200 quirk (like client-go).
    pub short_watch: Duration,
    /// A watch that lived this long is healthy: the backoff resets and reconnects are immediate.
    pub healthy_after: Duration,
    /// `Retry-After` is honoured up to this long.
    pub max_retry_after: Duration,
    /// First retry delay (`interval_sec` + `interval_nsec`).
    pub backoff_base: Duration,
    /// Largest retry delay.
    pub backoff_cap: Duration,
}

/// Default `kube_request_limit`.
pub const DEFAULT_PAGE_LIMIT: u32 = 500;
/// Default `kube_watch_timeout`.
pub const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(600);
/// Default reconnect tick (`interval_nsec` 500000000).
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(500);

impl Default for WatcherConfig {
    fn default() -> Self {
        WatcherConfig {
            expected_kind: None,
            page_limit: DEFAULT_PAGE_LIMIT,
            watch_timeout: DEFAULT_WATCH_TIMEOUT,
            idle_grace: Duration::from_secs(30),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_batch_frames: 500,
            batch_linger: Duration::from_millis(5),
            max_batch_bytes: 8 << 20,
            short_watch: Duration::from_secs(1),
            healthy_after: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(300),
            backoff_base: DEFAULT_INTERVAL,
            backoff_cap: DEFAULT_BACKOFF_CAP,
        }
    }
}

impl WatcherConfig {
    /// Reads the watch options of a component section:
    /// - `kube_request_limit` (default 500): LIST page size. Fluent Bit's 0 ("no paging") is
    ///   taken as the default: kubetrail never lists unpaged.
    /// - `kube_watch_timeout` (default `10m`): WATCH `timeoutSeconds`; also the read-idle limit
    ///   (plus 30 s).
    /// - `interval_sec` (default 0) + `interval_nsec` (default 500000000): the first retry
    ///   delay; retries back off exponentially from it, with jitter, up to 30 s.
    pub fn from_section(
        section: &mut Section,
        expected_kind: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let mut c = WatcherConfig {
            expected_kind: expected_kind.map(str::to_string),
            ..WatcherConfig::default()
        };
        match section.get_u64("kube_request_limit")? {
            None | Some(0) => {}
            Some(n) => {
                c.page_limit = u32::try_from(n)
                    .map_err(|_| section.error("kube_request_limit", "is too large"))?
            }
        }
        if let Some(t) = section.get_duration("kube_watch_timeout")? {
            if t < Duration::from_secs(1) {
                return Err(section.error("kube_watch_timeout", "must be at least 1s"));
            }
            c.watch_timeout = t;
        }
        let sec = section.get_u64("interval_sec")?;
        let nsec = section.get_u64("interval_nsec")?;
        if sec.is_some() || nsec.is_some() {
            let nsec = nsec.unwrap_or(DEFAULT_INTERVAL.as_nanos() as u64);
            if nsec >= 1_000_000_000 {
                return Err(section.error("interval_nsec", "must be less than 1000000000"));
            }
            let base = Duration::from_secs(sec.unwrap_or(0)) + Duration::from_nanos(nsec);
            if base.is_zero() {
                return Err(section.error(
                    "interval_nsec",
                    "interval_sec and interval_nsec are both 0; the reconnect interval must be more than 0",
                ));
            }
            c.backoff_base = base;
            c.backoff_cap = c.backoff_cap.max(base);
        }
        Ok(c)
    }

    /// The default backoff for these settings.
    pub fn backoff(&self) -> ExponentialBackoff {
        ExponentialBackoff::new(self.backoff_base, self.backoff_cap)
    }
}

/// Counters of what a watcher did, for metrics and readiness.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatcherCounters {
    /// LIST requests made.
    pub list_requests: u64,
    /// WATCH requests made.
    pub watch_requests: u64,
    /// Relists after a gap (410, empty watch).
    pub relists: u64,
    /// Lists started over after an expired continue token.
    pub list_restarts: u64,
    /// Watches reopened from the last resourceVersion.
    pub watch_restarts: u64,
    /// Watches that ended at once with nothing (kubernetes#104171).
    pub empty_watches: u64,
    /// Change frames received.
    pub frames: u64,
    /// Bookmarks received.
    pub bookmarks: u64,
    /// Frames that were not JSON, lacked fields or had an unknown type.
    pub malformed_frames: u64,
    /// Frames or list items of another kind.
    pub unexpected_kind: u64,
    /// Frames beyond the size cap.
    pub oversized_frames: u64,
    /// Partial frames discarded when a stream ended mid-frame.
    pub truncated_frames: u64,
    /// List items skipped (missing uid or resourceVersion, wrong kind).
    pub skipped_list_items: u64,
    /// Requests that failed without an answer (connection, TLS, cut body).
    pub request_errors: u64,
    /// Error answers (status codes and ERROR frames other than 410).
    pub api_errors: u64,
    /// 401 answers.
    pub unauthorized: u64,
    /// Watches dropped for sending nothing too long.
    pub idle_timeouts: u64,
    /// Checks that the resourceVersion is not ahead of the server (when resuming, and after a
    /// watch that brought nothing).
    pub probes: u64,
}

/// Live counters plus progress times; shared with whoever reports metrics and readiness.
#[derive(Debug, Default)]
pub struct WatcherStats {
    counters: Mutex<WatcherCounters>,
    last_progress: Mutex<Option<Instant>>,
    last_event: Mutex<Option<Instant>>,
}

impl WatcherStats {
    /// A copy of the counters.
    pub fn counters(&self) -> WatcherCounters {
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// When the watcher last made progress (a page, frames, a bookmark, a watch that ran its
    /// course). Readiness fails when this gets old.
    pub fn last_progress(&self) -> Option<Instant> {
        *self.last_progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When the last change frame or list item arrived.
    pub fn last_event(&self) -> Option<Instant> {
        *self.last_event.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, f: impl FnOnce(&mut WatcherCounters)) {
        f(&mut self.counters.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn progress(&self, events: bool) {
        let now = Instant::now();
        *self.last_progress.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
        if events {
            *self.last_event.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
        }
    }
}

enum State {
    /// Decide: watch from the resume point, or list.
    Start { resume_from: Option<String> },
    /// Fetch the next LIST page.
    Listing {
        continue_token: Option<String>,
        gap_from: Option<String>,
    },
    /// Open a WATCH.
    Connect { resource_version: String },
    /// Before resuming, and after a watch that lasted but brought nothing: check that the
    /// resourceVersion is not ahead of the server before watching from it.
    Probing { resource_version: String },
    /// Read an open WATCH.
    Watching(Box<Watching>),
    /// Wait for the backoff, then go on.
    Waiting { until: Instant, then: Box<State> },
}

struct Watching {
    /// The last good resourceVersion (of the last complete frame or bookmark).
    resource_version: String,
    stream: WatchStream,
    splitter: FrameSplitter,
    opened_at: Instant,
    /// A change or bookmark arrived on this stream.
    progressed: bool,
    /// An ERROR frame or an oversized frame: nothing after it is read.
    poisoned: bool,
    end: Option<StreamEnd>,
    /// Frames parsed but not yet yielded. Kept here, not in `read_watch`'s locals, so that
    /// dropping a `next()` future while it lingers for more frames loses none of them
    /// (`resource_version` has already moved past them).
    pending: PendingBatch,
}

/// The batch `read_watch` is assembling.
#[derive(Default)]
struct PendingBatch {
    items: Vec<(WatchEventType, RawObject)>,
    bytes: usize,
    bookmark: bool,
    linger_until: Option<tokio::time::Instant>,
}

enum StreamEnd {
    Closed,
    ErrorFrame(Status),
    Broken(WatchError),
}

/// A list+watch loop over one collection. See the module documentation.
pub struct Watcher<A, B = ExponentialBackoff> {
    api: A,
    backoff: B,
    config: WatcherConfig,
    stats: Arc<WatcherStats>,
    state: State,
    resource_version: Option<String>,
}

impl<A: Api, B: Backoff> Watcher<A, B> {
    /// A watcher that resumes from `resume_from` (a committed resourceVersion) or, without
    /// one, starts with a LIST.
    pub fn new(api: A, config: WatcherConfig, backoff: B, resume_from: Option<String>) -> Self {
        // An empty resourceVersion would mean "from now" to the server and skip history
        // silently: treat it as having none, which lists.
        let resume_from = resume_from.filter(|rv| !rv.is_empty());
        Watcher {
            api,
            backoff,
            config,
            stats: Arc::new(WatcherStats::default()),
            resource_version: resume_from.clone(),
            state: State::Start { resume_from },
        }
    }

    /// A watcher that finishes a LIST interrupted by a restart, from the `continue_token`
    /// committed with its last page. If the token has expired meanwhile, the list starts over
    /// and a gap is reported.
    pub fn resume_list(api: A, config: WatcherConfig, backoff: B, continue_token: String) -> Self {
        Watcher {
            api,
            backoff,
            config,
            stats: Arc::new(WatcherStats::default()),
            resource_version: None,
            state: State::Listing {
                continue_token: Some(continue_token),
                gap_from: None,
            },
        }
    }

    /// The shared counters.
    pub fn stats(&self) -> Arc<WatcherStats> {
        self.stats.clone()
    }

    /// The last resourceVersion yielded (or resumed from).
    pub fn resource_version(&self) -> Option<&str> {
        self.resource_version.as_deref()
    }

    /// The API this watcher uses.
    pub fn api(&self) -> &A {
        &self.api
    }

    /// The next event. Errors are reports: the retry is already arranged (with backoff), and
    /// the next call goes on. Cancel-safe: dropping the future loses nothing that was not
    /// yielded.
    pub async fn next(&mut self) -> Result<WatcherEvent, WatchError> {
        loop {
            if let Some(out) = self.step().await {
                if let Ok(ev) = &out
                    && let Some(rv) = ev.resource_version()
                {
                    self.resource_version = Some(rv.to_string());
                }
                return out;
            }
        }
    }

    /// One transition; `Some` when there is something to hand to the caller.
    async fn step(&mut self) -> Option<Result<WatcherEvent, WatchError>> {
        let Watcher {
            api,
            backoff,
            config,
            stats,
            state,
            ..
        } = self;
        match state {
            State::Start { resume_from } => match resume_from.take() {
                // A committed resourceVersion is checked first: after a restart against a
                // rebuilt cluster it may be ahead of the server, and a watch from it would
                // answer nothing until its timeout, again and again.
                Some(rv) => {
                    *state = State::Probing {
                        resource_version: rv,
                    };
                    None
                }
                None => {
                    *state = State::Listing {
                        continue_token: None,
                        gap_from: None,
                    };
                    Some(Ok(WatcherEvent::ListStarted { after_gap: None }))
                }
            },

            State::Waiting { until, then } => {
                tokio::time::sleep_until(*until).await;
                *state = std::mem::replace(then.as_mut(), State::Start { resume_from: None });
                None
            }

            State::Listing {
                continue_token,
                gap_from,
            } => {
                stats.count(|c| c.list_requests += 1);
                let result = api
                    .list_page(continue_token.as_deref(), config.page_limit.max(1))
                    .await;
                let body = match result {
                    Ok(body) => body,
                    Err(e) if e.is_gone() && continue_token.is_some() => {
                        stats.count(|c| c.list_restarts += 1);
                        tracing::warn!(error = %e, "LIST continue token expired; starting the list over");
                        let gap = GapInfo {
                            from_resource_version: gap_from.clone(),
                            reason: GapReason::ListContinueExpired,
                            message: e.api_error().map(|a| a.message.clone()).unwrap_or_default(),
                        };
                        let then = State::Listing {
                            continue_token: None,
                            gap_from: gap_from.take(),
                        };
                        *state = wait(backoff.next_delay(), then);
                        return Some(Ok(WatcherEvent::ListStarted {
                            after_gap: Some(gap),
                        }));
                    }
                    Err(e) => {
                        record_error(stats, api, &e);
                        let delay = retry_delay(backoff, config, e.retry_after());
                        let then = State::Listing {
                            continue_token: continue_token.take(),
                            gap_from: gap_from.take(),
                        };
                        *state = wait(delay, then);
                        return Some(Err(e));
                    }
                };
                let page = match parse_list_page(&body, config.expected_kind.as_deref()) {
                    Ok(page) => page,
                    Err(e) => {
                        stats.count(|c| c.api_errors += 1);
                        let then = State::Listing {
                            continue_token: continue_token.take(),
                            gap_from: gap_from.take(),
                        };
                        *state = wait(backoff.next_delay(), then);
                        return Some(Err(WatchError::BadList(e)));
                    }
                };
                for e in &page.skipped {
                    stats.count(|c| {
                        c.skipped_list_items += 1;
                        if matches!(e, FrameError::UnexpectedKind { .. }) {
                            c.unexpected_kind += 1;
                        }
                    });
                    tracing::warn!(error = %e, "skipping a LIST item");
                }
                stats.progress(!page.items.is_empty());
                let (last, next) = match page.continue_token {
                    Some(next) => {
                        *continue_token = Some(next.clone());
                        (None, Some(next))
                    }
                    None => {
                        *state = State::Connect {
                            resource_version: page.resource_version.clone(),
                        };
                        (Some(page.resource_version), None)
                    }
                };
                Some(Ok(WatcherEvent::ListPage {
                    items: page.items,
                    last,
                    continue_token: next,
                }))
            }

            State::Connect { resource_version } => {
                stats.count(|c| c.watch_requests += 1);
                match api.watch(resource_version, config.watch_timeout).await {
                    Ok(stream) => {
                        *state = State::Watching(Box::new(Watching {
                            resource_version: std::mem::take(resource_version),
                            stream,
                            splitter: FrameSplitter::new(config.max_frame_bytes),
                            opened_at: Instant::now(),
                            progressed: false,
                            poisoned: false,
                            end: None,
                            pending: PendingBatch::default(),
                        }));
                        None
                    }
                    Err(e) => {
                        let rv = std::mem::take(resource_version);
                        failed_from(e, rv, state, api, backoff, config, stats)
                    }
                }
            }

            State::Probing { resource_version } => {
                stats.count(|c| c.probes += 1);
                match api.probe(resource_version).await {
                    Ok(()) => {
                        *state = State::Connect {
                            resource_version: std::mem::take(resource_version),
                        };
                        None
                    }
                    // The probe is only a check: on a failure other than a gap, watch again.
                    Err(e) => {
                        let rv = std::mem::take(resource_version);
                        failed_from(e, rv, state, api, backoff, config, stats)
                    }
                }
            }

            State::Watching(w) => {
                if let Some(ev) = read_watch(w, config, stats).await {
                    return Some(Ok(ev));
                }
                let State::Watching(w) =
                    std::mem::replace(state, State::Start { resume_from: None })
                else {
                    // The match arm above holds exactly this variant and nothing replaced it.
                    return None;
                };
                end_of_watch(*w, state, api, backoff, config, stats)
            }
        }
    }
}

/// Reads the open watch until there is something to yield (`Some`) or the stream has ended
/// and everything buffered was yielded (`None`, with `w.end` set).
async fn read_watch(
    w: &mut Watching,
    config: &WatcherConfig,
    stats: &WatcherStats,
) -> Option<WatcherEvent> {
    let kind = config.expected_kind.as_deref();
    let idle = config.watch_timeout + config.idle_grace;
    loop {
        let mut full = false;
        while !w.poisoned {
            if !w.pending.items.is_empty()
                && (w.pending.items.len() >= config.max_batch_frames
                    || w.pending.bytes >= config.max_batch_bytes)
            {
                full = true;
                break;
            }
            let frame = match w.splitter.next_frame() {
                None => break,
                Some(Ok(frame)) => frame,
                Some(Err(e)) => {
                    stats.count(|c| c.oversized_frames += 1);
                    tracing::warn!(error = %e, resource_version = %w.resource_version, "dropping the watch stream");
                    w.poisoned = true;
                    w.end = Some(StreamEnd::Broken(WatchError::BadStream(e)));
                    break;
                }
            };
            match parse_frame(&frame, kind) {
                Ok(Frame::Change(t, obj)) => {
                    w.resource_version.clone_from(&obj.resource_version);
                    w.progressed = true;
                    w.pending.bytes += frame.len();
                    w.pending.items.push((t, obj));
                }
                Ok(Frame::Bookmark { resource_version }) => {
                    w.resource_version = resource_version;
                    w.progressed = true;
                    w.pending.bookmark = true;
                    stats.count(|c| c.bookmarks += 1);
                }
                Ok(Frame::Error(status)) => {
                    w.poisoned = true;
                    w.end = Some(StreamEnd::ErrorFrame(status));
                }
                Err(e) => {
                    let n = {
                        let mut n = 0;
                        stats.count(|c| {
                            if matches!(e, FrameError::UnexpectedKind { .. }) {
                                c.unexpected_kind += 1;
                            } else {
                                c.malformed_frames += 1;
                            }
                            n = c.malformed_frames + c.unexpected_kind;
                        });
                        n
                    };
                    // Garbage can come in floods: log the first ones, then ever more rarely.
                    if n <= 10 || n.is_power_of_two() {
                        tracing::warn!(error = %e, kind = e.kind(), total = n, "skipping a bad watch frame");
                    }
                }
            }
        }
        let have = !w.pending.items.is_empty() || w.pending.bookmark;
        if full || (have && w.end.is_some()) {
            break;
        }
        if w.end.is_some() {
            return None;
        }
        let polled = if have {
            // With frames in hand, wait for more only briefly (`batch_linger`), to batch them.
            let until = *w
                .pending
                .linger_until
                .get_or_insert_with(|| tokio::time::Instant::now() + config.batch_linger);
            match tokio::time::timeout_at(until, poll_fn(|cx| w.stream.poll_chunk(cx))).await {
                Ok(x) => x,
                Err(_) => break,
            }
        } else {
            match tokio::time::timeout(idle, poll_fn(|cx| w.stream.poll_chunk(cx))).await {
                Ok(x) => x,
                Err(_) => {
                    stats.count(|c| c.idle_timeouts += 1);
                    w.end = Some(StreamEnd::Broken(WatchError::Idle(idle)));
                    return None;
                }
            }
        };
        match polled {
            Some(Ok(chunk)) => w.splitter.push(&chunk),
            Some(Err(e)) => w.end = Some(StreamEnd::Broken(e)),
            None => w.end = Some(StreamEnd::Closed),
        }
    }
    let PendingBatch { items, .. } = std::mem::take(&mut w.pending);
    stats.count(|c| c.frames += items.len() as u64);
    stats.progress(!items.is_empty());
    let resource_version = w.resource_version.clone();
    if items.is_empty() {
        Some(WatcherEvent::Bookmark { resource_version })
    } else {
        Some(WatcherEvent::Frames {
            items,
            resource_version,
        })
    }
}

/// Decides what follows a finished watch stream.
fn end_of_watch<A: Api, B: Backoff>(
    mut w: Watching,
    state: &mut State,
    api: &A,
    backoff: &mut B,
    config: &WatcherConfig,
    stats: &WatcherStats,
) -> Option<Result<WatcherEvent, WatchError>> {
    let lived = w.opened_at.elapsed();
    let healthy = w.progressed || lived >= config.healthy_after.min(config.watch_timeout / 2);
    if healthy {
        backoff.reset();
    }
    let truncated = if w.poisoned {
        None
    } else {
        w.splitter.take_rest()
    };
    if let Some(rest) = &truncated {
        stats.count(|c| c.truncated_frames += 1);
        tracing::warn!(
            bytes = rest.len(),
            resource_version = %w.resource_version,
            "the watch stream ended inside a frame; discarding it and resuming from the last complete one"
        );
    }
    let rv = std::mem::take(&mut w.resource_version);
    let rewatch = |state: &mut State, backoff: &mut B, retry_after: Option<Duration>| {
        stats.count(|c| c.watch_restarts += 1);
        let then = State::Connect {
            resource_version: rv.clone(),
        };
        *state = if healthy && retry_after.is_none() {
            then
        } else {
            wait(retry_delay(backoff, config, retry_after), then)
        };
    };
    match w.end.take() {
        Some(StreamEnd::ErrorFrame(status)) => {
            let error = ApiError::from_status(&status);
            if error.is_gone() {
                return Some(Ok(gap(
                    state,
                    backoff,
                    stats,
                    Some(rv),
                    GapReason::WatchExpired,
                    error.message,
                )));
            }
            stats.count(|c| c.api_errors += 1);
            if error.is_unauthorized() {
                stats.count(|c| c.unauthorized += 1);
                api.invalidate_credentials();
            }
            // An ERROR frame is never progress: always back off before the next watch.
            stats.count(|c| c.watch_restarts += 1);
            let then = State::Connect {
                resource_version: rv,
            };
            *state = wait(retry_delay(backoff, config, error.retry_after), then);
            Some(Err(WatchError::ErrorFrame(error)))
        }
        Some(StreamEnd::Broken(e)) => {
            if matches!(e, WatchError::Request(_) | WatchError::Stream(_)) {
                stats.count(|c| c.request_errors += 1);
            }
            rewatch(state, backoff, None);
            Some(Err(e))
        }
        Some(StreamEnd::Closed) | None => {
            if !w.progressed && truncated.is_none() && lived < config.short_watch {
                stats.count(|c| c.empty_watches += 1);
                return Some(Ok(gap(
                    state,
                    backoff,
                    stats,
                    Some(rv),
                    GapReason::EmptyWatch,
                    format!("the watch closed after {lived:?} without sending anything"),
                )));
            }
            if healthy {
                stats.progress(false);
            }
            if !w.progressed && truncated.is_none() {
                // A whole watch with nothing: a quiet collection, or a resourceVersion ahead
                // of the server's, which would answer nothing forever. Check before watching.
                stats.count(|c| c.watch_restarts += 1);
                let then = State::Probing {
                    resource_version: rv,
                };
                *state = if healthy {
                    then
                } else {
                    wait(retry_delay(backoff, config, None), then)
                };
                return None;
            }
            rewatch(state, backoff, None);
            None
        }
    }
}

/// After a WATCH or a probe from `rv` failed: a 410 (compacted) or a resourceVersion ahead of
/// the server's is a gap and a relist; anything else is reported and the watch is opened again
/// after the backoff.
fn failed_from<A: Api, B: Backoff>(
    e: WatchError,
    rv: String,
    state: &mut State,
    api: &A,
    backoff: &mut B,
    config: &WatcherConfig,
    stats: &WatcherStats,
) -> Option<Result<WatcherEvent, WatchError>> {
    let reason = if e.is_gone() {
        Some(GapReason::WatchExpired)
    } else if e
        .api_error()
        .is_some_and(ApiError::is_too_large_resource_version)
    {
        Some(GapReason::ResourceVersionTooLarge)
    } else {
        None
    };
    if let Some(reason) = reason {
        let message = e.api_error().map(|a| a.message.clone()).unwrap_or_default();
        return Some(Ok(gap(state, backoff, stats, Some(rv), reason, message)));
    }
    record_error(stats, api, &e);
    let delay = retry_delay(backoff, config, e.retry_after());
    *state = wait(
        delay,
        State::Connect {
            resource_version: rv,
        },
    );
    Some(Err(e))
}

fn wait(delay: Duration, then: State) -> State {
    State::Waiting {
        until: Instant::now() + delay,
        then: Box::new(then),
    }
}

/// Reports a gap and arranges a relist after the backoff.
fn gap<B: Backoff>(
    state: &mut State,
    backoff: &mut B,
    stats: &WatcherStats,
    from: Option<String>,
    reason: GapReason,
    message: String,
) -> WatcherEvent {
    stats.count(|c| c.relists += 1);
    tracing::warn!(from_resource_version = ?from, %reason, %message, "watch continuity lost; listing again");
    let then = State::Listing {
        continue_token: None,
        gap_from: from.clone(),
    };
    *state = wait(backoff.next_delay(), then);
    WatcherEvent::ListStarted {
        after_gap: Some(GapInfo {
            from_resource_version: from,
            reason,
            message,
        }),
    }
}

fn retry_delay<B: Backoff>(
    backoff: &mut B,
    config: &WatcherConfig,
    retry_after: Option<Duration>,
) -> Duration {
    let d = backoff.next_delay();
    match retry_after {
        Some(r) => d.max(r.min(config.max_retry_after)),
        None => d,
    }
}

fn record_error<A: Api>(stats: &WatcherStats, api: &A, e: &WatchError) {
    if e.is_unauthorized() {
        stats.count(|c| c.unauthorized += 1);
        api.invalidate_credentials();
    }
    if e.api_error().is_some() {
        stats.count(|c| c.api_errors += 1);
    } else {
        stats.count(|c| c.request_errors += 1);
    }
}

#[cfg(test)]
#[path = "watcher_tests.rs"]
mod tests;
