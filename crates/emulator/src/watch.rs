//! WATCH streams. Each watch is a task with a cursor into the store's change log (like an
//! etcd watcher): it replays history after its start revision, then follows new changes as
//! they are written. A watcher costs O(1) memory however far behind it is; if compaction
//! overtakes its cursor it gets the 410 ERROR frame and is closed, as the apiserver does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, sleep_until};

use crate::body::WatchStream;
use crate::faults::{self, Faults};
use crate::model::EventObj;
use crate::render::{self, FrameType, View};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::Status;
use crate::store::{ChangeKind, Store};

/// Frames buffered between a watch task and its connection.
const CHANNEL_FRAMES: usize = 64;
/// Changes read from the log per lock.
const BATCH: usize = 512;

/// Per open watch: the bearer token it was opened with, and how to cut it.
type Entries = HashMap<u64, (Option<String>, Arc<Notify>)>;

/// Open watches, so they can be cut (all, or those of one token).
#[derive(Default)]
pub(crate) struct WatchRegistry {
    next: AtomicU64,
    entries: Mutex<Entries>,
}

/// Removes its watch from the registry when the task ends.
pub(crate) struct Registration {
    id: u64,
    registry: Arc<WatchRegistry>,
    pub cut: Arc<Notify>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

impl WatchRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(self: &Arc<Self>, token: Option<String>) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let cut = Arc::new(Notify::new());
        self.lock().insert(id, (token, cut.clone()));
        Registration {
            id,
            registry: self.clone(),
            cut,
        }
    }

    pub fn open(&self) -> usize {
        self.lock().len()
    }

    pub fn cut_all(&self) {
        for (_, n) in self.lock().values() {
            n.notify_one();
        }
    }

    pub fn cut_token(&self, token: &str) {
        for (t, n) in self.lock().values() {
            if t.as_deref() == Some(token) {
                n.notify_one();
            }
        }
    }
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Start {
    /// No resourceVersion (or "0"): synthetic ADDED for what exists now, then changes.
    Now,
    /// Changes with a revision greater than this.
    After(u64),
}

/// Everything a watch task needs.
pub(crate) struct WatchParams {
    pub view: View,
    /// Key prefix (`"<ns>/"` or `""`).
    pub prefix: String,
    pub fields: FieldSelector,
    pub labels: LabelSelector,
    pub start: Start,
    pub timeout: Duration,
    pub bookmark_every: Option<Duration>,
}

impl WatchParams {
    fn matches(&self, ev: &EventObj) -> bool {
        ev.body.key.starts_with(self.prefix.as_str())
            && self.fields.matches(ev)
            && self.labels.matches(ev)
    }
}

enum Stop {
    /// Timeout or normal end: close cleanly.
    Clean,
    /// The client went away.
    Gone,
    /// Cut: end abruptly.
    Cut,
}

struct Task {
    params: WatchParams,
    store: Arc<Store>,
    faults: Arc<RwLock<Faults>>,
    tx: mpsc::Sender<Bytes>,
    aborted: Arc<AtomicBool>,
    reg: Registration,
    deadline: Instant,
    frames: usize,
    garbage: usize,
    fault: Faults,
}

/// `now + d`, capped far in the future instead of overflowing (timeoutSeconds is client input).
fn deadline_after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(10 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

/// Starts a watch task and returns the body that streams its frames.
pub(crate) fn spawn(
    params: WatchParams,
    store: Arc<Store>,
    faults: Arc<RwLock<Faults>>,
    reg: Registration,
) -> WatchStream {
    let (tx, rx) = mpsc::channel(CHANNEL_FRAMES);
    let aborted = Arc::new(AtomicBool::new(false));
    let fault = faults.read().unwrap_or_else(|p| p.into_inner()).clone();
    let task = Task {
        deadline: deadline_after(params.timeout),
        params,
        store,
        faults,
        tx,
        aborted: aborted.clone(),
        reg,
        frames: 0,
        garbage: 0,
        fault,
    };
    tokio::spawn(task.run());
    WatchStream {
        rx,
        aborted,
        done: false,
        abort_grace: None,
    }
}

impl Task {
    async fn run(mut self) {
        let stop: Stop = self.stream().await.into();
        match stop {
            Stop::Clean | Stop::Gone => {}
            Stop::Cut => {
                let mid_frame = self
                    .faults
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .cut_watch_after_frames
                    .is_some();
                if mid_frame {
                    let frame = render::bookmark_frame(self.store.current_rv(), self.params.view);
                    let _ = self
                        .tx
                        .try_send(Bytes::copy_from_slice(faults::half(&frame)));
                }
                self.aborted.store(true, Ordering::Release);
            }
        }
        // Dropping `tx` ends the body: cleanly, or abruptly when `aborted` is set.
    }

    /// Sends raw bytes as one chunk, watching for the cut, the deadline and the client.
    async fn send_raw(&mut self, bytes: Bytes) -> Result<(), Stop> {
        tokio::select! {
            biased;
            _ = self.reg.cut.notified() => Err(Stop::Cut),
            _ = sleep_until(self.deadline) => Err(Stop::Clean),
            r = self.tx.send(bytes) => r.map_err(|_| Stop::Gone),
        }
    }

    /// Sends one real frame, applying the frame-level faults.
    async fn send_frame(&mut self, frame: Vec<u8>) -> Result<(), Stop> {
        if self.fault.cut_watch_after_frames == Some(self.frames) {
            let half = Bytes::copy_from_slice(faults::half(&frame));
            self.send_raw(half).await?;
            return Err(Stop::Cut);
        }
        self.send_raw(Bytes::from(frame)).await?;
        self.frames += 1;
        if self.fault.garbage_frames {
            self.send_garbage().await?;
        }
        Ok(())
    }

    async fn send_garbage(&mut self) -> Result<(), Stop> {
        let g = faults::garbage_frame(self.garbage);
        self.garbage += 1;
        self.send_raw(Bytes::from_static(g)).await
    }

    async fn stream(&mut self) -> Result<(), Stop> {
        if self.fault.stale_watch_empty_200 {
            return Ok(());
        }
        if self.fault.garbage_frames {
            self.send_garbage().await?;
        }
        let mut changes = self.store.subscribe();
        changes.borrow_and_update();
        let mut cursor = match self.params.start {
            Start::After(rv) => rv,
            Start::Now => {
                let snap = match self.store.snapshot(&self.params.prefix, None) {
                    Ok(s) => s,
                    // The current revision always exists; nothing to stream if it does not.
                    Err(_) => return Ok(()),
                };
                for obj in snap.items.iter() {
                    if self.params.matches(obj) {
                        let f = render::event_frame(FrameType::Added, obj, self.params.view);
                        self.send_frame(f).await?;
                    }
                }
                snap.rv
            }
        };
        let mut bookmark = self.params.bookmark_every.map(|d| {
            let mut i = tokio::time::interval_at(deadline_after(d), d);
            // A busy watcher sends one bookmark when it gets to it, not a burst.
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        loop {
            changes.borrow_and_update();
            loop {
                let batch = match self.store.changes_after(cursor, BATCH) {
                    Ok(b) => b,
                    Err(_) => {
                        let status = Status::watch_expired().to_bytes();
                        let frame = render::raw_frame(FrameType::Error, &status);
                        self.send_raw(Bytes::from(frame)).await?;
                        return Ok(());
                    }
                };
                if batch.is_empty() {
                    break;
                }
                for change in batch {
                    cursor = change.rv();
                    if !self.params.matches(&change.obj) {
                        continue;
                    }
                    let ty = match change.kind {
                        ChangeKind::Added => FrameType::Added,
                        ChangeKind::Modified => FrameType::Modified,
                        ChangeKind::Deleted => FrameType::Deleted,
                    };
                    let f = render::event_frame(ty, &change.obj, self.params.view);
                    self.send_frame(f).await?;
                }
            }
            let tick = async {
                match bookmark.as_mut() {
                    Some(i) => {
                        i.tick().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                biased;
                _ = self.reg.cut.notified() => return Err(Stop::Cut),
                _ = sleep_until(self.deadline) => return Ok(()),
                _ = self.tx.closed() => return Err(Stop::Gone),
                r = changes.changed() => {
                    if r.is_err() {
                        return Ok(());
                    }
                }
                _ = tick => {
                    let f = render::bookmark_frame(cursor, self.params.view);
                    self.send_frame(f).await?;
                }
            }
        }
    }
}

impl From<Result<(), Stop>> for Stop {
    fn from(r: Result<(), Stop>) -> Stop {
        match r {
            Ok(()) => Stop::Clean,
            Err(s) => s,
        }
    }
}
