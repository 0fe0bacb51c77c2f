//! WAL checkpoints of the activity database on a thread of their own, so that the writer's
//! commits do not stop for them.
//!
//! SQLite's automatic checkpoint runs inside the commit that crossed its threshold (1,000
//! pages): on a store whose indexes outgrew the page cache a batch writes thousands of
//! pages, so almost every commit also copied the WAL into the database file and synced it.
//! Instead the writer connection reports the WAL's length after each commit (a WAL hook,
//! which also turns the automatic checkpoint off) and, as the state database does:
//!
//! - at the threshold, a background connection runs PASSIVE checkpoints (they never block
//!   the writer or the readers; each copies the frames committed when it started, syncing
//!   the WAL before and the database file after, as SQLite always does), again while more
//!   than a quarter of the threshold is left to copy;
//! - once the background has copied all but that quarter, the writer runs one PASSIVE
//!   checkpoint itself for the rest, between two of its transactions, after which its next
//!   transaction starts the WAL over from the beginning (SQLite restarts the WAL only when
//!   everything in it is in the database file, which under continuous commits the
//!   background alone never sees); the WAL file is then cut to `journal_size_limit`;
//! - at four times the threshold the writer waits for a running background checkpoint and
//!   copies everything it can itself, whatever the background achieved, so the WAL stays
//!   bounded if the background falls behind or fails.
//!
//! No checkpoint waits for a reader: what a reader's snapshot still needs stays in the WAL
//! until it lets go (SQLite's rule), and the WAL starts over at the first commit after
//! that. Durability is untouched: what a commit writes to the WAL is synced by the commit
//! itself, and only SQLite decides when WAL frames may be overwritten (after a synced
//! backfill).

use std::ffi::{c_char, c_int, c_void};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, ffi};

use crate::ActivityError;

/// The most the writer is left to copy itself, as a fraction (divisor) of the threshold.
const EARLY_DIVISOR: u64 = 4;
/// The WAL length, in multiples of the threshold, at which the writer checkpoints whatever
/// the background did.
const HARD_MULTIPLE: u64 = 4;
/// How long the writer waits for a running background checkpoint at the hard limit.
const FORCE_WAIT: Duration = Duration::from_secs(10);
/// Pause after a failed background checkpoint: doubled after each failure in a row, up to
/// the cap, with up to half of it added at random.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_CAP: Duration = Duration::from_secs(10);

/// What the writer's WAL hook and the background thread share.
#[derive(Debug, Default)]
pub(crate) struct WalShared {
    /// Frames in the WAL after the writer's last commit (from the WAL hook).
    frames: AtomicU64,
    /// `frames` when the writer last asked what to do (a shorter WAL since: it started over).
    seen: AtomicU64,
    /// The WAL length and the frames copied, as the last background checkpoint reported.
    bg_log: AtomicU64,
    bg_copied: AtomicU64,
    /// Background checkpoints that ran (for tests and logs).
    bg_runs: AtomicU64,
    state: Mutex<BgState>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct BgState {
    /// A checkpoint was asked for.
    wanted: bool,
    /// The background thread is checkpointing (it holds SQLite's checkpoint lock, so a
    /// checkpoint of the writer would fail at once: SQLite does not wait for that lock).
    running: bool,
    /// The writer is checkpointing: the background must not start.
    hold: bool,
    stop: bool,
}

/// What the writer should do after a commit, given the WAL's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing.
    None,
    /// Wake the background checkpointer.
    Background,
    /// Checkpoint the rest on the writer connection, unless the background is at it.
    Finish,
    /// Checkpoint on the writer connection, first waiting for a running background
    /// checkpoint: the WAL reached its hard limit.
    Force,
}

/// The decision, as a pure function of the numbers (tested on its own).
pub(crate) fn step(frames: u64, threshold: u64, bg_log: u64, bg_copied: u64) -> Step {
    let threshold = threshold.max(1);
    if frames >= threshold.saturating_mul(HARD_MULTIPLE) {
        return Step::Force;
    }
    if frames >= threshold {
        // The background's report belongs to this WAL generation only if its log is not
        // longer than the WAL is now (a restart since makes the WAL shorter).
        let copied = if bg_log <= frames { bg_copied } else { 0 };
        if frames.saturating_sub(copied) <= threshold / EARLY_DIVISOR {
            return Step::Finish;
        }
        return Step::Background;
    }
    Step::None
}

/// Registers the WAL hook on the writer connection: from then on `shared.frames` follows
/// the WAL's length, and SQLite's automatic checkpoint (itself a WAL hook) is off.
///
/// `shared` must outlive `conn`'s hook: the caller keeps an `Arc` of it in a field dropped
/// after the connection.
pub(crate) fn install_hook(conn: &Connection, shared: &Arc<WalShared>) {
    unsafe extern "C" fn hook(
        ctx: *mut c_void,
        _db: *mut ffi::sqlite3,
        _name: *const c_char,
        frames: c_int,
    ) -> c_int {
        // SAFETY: `ctx` is the `WalShared` of an `Arc` that the writer keeps alive for as
        // long as its connection (see install_hook); only an atomic is touched.
        let shared = unsafe { &*(ctx as *const WalShared) };
        shared
            .frames
            .store(u64::try_from(frames).unwrap_or(0), Ordering::Relaxed);
        ffi::SQLITE_OK
    }
    // SAFETY: the handle is the open connection's; the context pointer stays valid while the
    // hook can run (the writer drops its connection before its `Arc<WalShared>`), and the
    // hook only stores into an atomic.
    unsafe {
        ffi::sqlite3_wal_hook(
            conn.handle(),
            Some(hook),
            Arc::as_ptr(shared) as *mut c_void,
        );
    }
}

impl WalShared {
    /// Frames in the WAL as of the writer's last commit.
    pub(crate) fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    /// What to do now, for a WAL threshold of `threshold` frames. Called by the writer after
    /// each write transaction.
    pub(crate) fn step(&self, threshold: u64) -> Step {
        let frames = self.frames();
        if frames < self.seen.swap(frames, Ordering::Relaxed) {
            // The WAL started over: the background's last report is about the previous one.
            self.bg_log.store(0, Ordering::Relaxed);
            self.bg_copied.store(0, Ordering::Relaxed);
        }
        step(
            frames,
            threshold,
            self.bg_log.load(Ordering::Relaxed),
            self.bg_copied.load(Ordering::Relaxed),
        )
    }

    /// Background checkpoints that ran.
    #[cfg(test)]
    pub(crate) fn background_runs(&self) -> u64 {
        self.bg_runs.load(Ordering::Relaxed)
    }

    /// Asks the background thread for a checkpoint (it runs one when it is free).
    pub(crate) fn wake_background(&self) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if !st.wanted {
            st.wanted = true;
            self.wake.notify_all();
        }
    }

    /// A PASSIVE checkpoint on the writer connection `conn`, with the background thread held
    /// off. If the background is checkpointing, `wait` None gives up at once (None);
    /// otherwise the writer first waits up to that long for it to finish.
    pub(crate) fn writer_checkpoint(
        &self,
        conn: &Connection,
        wait: Option<Duration>,
    ) -> Result<Option<(u64, u64)>, ActivityError> {
        {
            let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if st.running {
                let Some(timeout) = wait else {
                    return Ok(None);
                };
                st = self
                    .wake
                    .wait_timeout_while(st, timeout, |st| st.running)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
                if st.running {
                    return Ok(None);
                }
            }
            st.hold = true;
        }
        let result = checkpoint(conn);
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.hold = false;
        self.wake.notify_all();
        result
    }

    /// What the writer does after a write transaction, for a WAL threshold of `threshold`
    /// frames. A failed checkpoint of the writer's is only logged: the commit it follows is
    /// durable, and the next commits try again.
    pub(crate) fn after_commit(&self, conn: &Connection, threshold: u64) {
        let result = match self.step(threshold) {
            Step::None => return,
            Step::Background => {
                self.wake_background();
                return;
            }
            Step::Finish => self.writer_checkpoint(conn, None),
            Step::Force => self.writer_checkpoint(conn, Some(FORCE_WAIT)),
        };
        match result {
            Ok(Some((log, copied))) => {
                tracing::debug!(log, copied, "writer WAL checkpoint");
                if copied < log {
                    // A reader's snapshot keeps the rest; the background copies it later.
                    self.wake_background();
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, wal_frames = self.frames(), "writer WAL checkpoint failed");
            }
        }
    }
}

/// Runs `PRAGMA wal_checkpoint(PASSIVE)`: returns (WAL frames, frames copied), or None when
/// it could not run (another connection's checkpoint held the lock).
pub(crate) fn checkpoint(conn: &Connection) -> Result<Option<(u64, u64)>, ActivityError> {
    let (busy, log, copied): (i64, i64, i64) = conn
        .query_row("PRAGMA main.wal_checkpoint(PASSIVE)", [], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .map_err(ActivityError::sql("checkpointing the WAL"))?;
    if busy != 0 || log < 0 || copied < 0 {
        return Ok(None);
    }
    Ok(Some((log as u64, copied as u64)))
}

/// The background checkpoint thread. Dropping it stops the thread and waits for it.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    shared: Arc<WalShared>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Opens a connection of its own to `path` (already in WAL mode) and starts the thread.
    /// `synchronous` is the writer's setting: a checkpoint then syncs as the writer would.
    pub(crate) fn start(
        path: &Path,
        synchronous: &str,
        shared: Arc<WalShared>,
    ) -> Result<Checkpointer, ActivityError> {
        let open = |source| ActivityError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open)?;
        conn.busy_timeout(crate::schema::BUSY_TIMEOUT)
            .map_err(open)?;
        crate::schema::pragma(&conn, &format!("PRAGMA synchronous = {synchronous}"))
            .map_err(open)?;
        // It commits nothing, but must not checkpoint on close behind the writer's back
        // either: the writer's close does the last one.
        crate::schema::pragma(&conn, "PRAGMA wal_autocheckpoint = 0").map_err(open)?;
        // A checkpoint copies frames through a buffer of its own, not the page cache.
        crate::schema::pragma(&conn, "PRAGMA cache_size = -256").map_err(open)?;
        let bg = shared.clone();
        let thread = std::thread::Builder::new()
            .name("kubetrail-activity-ckpt".into())
            .spawn(move || run(conn, &bg))
            .map_err(|source| ActivityError::Thread { source })?;
        Ok(Checkpointer {
            shared,
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        {
            let mut st = self
                .shared
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            st.stop = true;
            self.shared.wake.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(conn: Connection, shared: &WalShared) {
    let mut failures: u32 = 0;
    loop {
        {
            let mut st = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
            while (!st.wanted || st.hold) && !st.stop {
                st = shared.wake.wait(st).unwrap_or_else(PoisonError::into_inner);
            }
            if st.stop {
                return;
            }
            st.wanted = false;
            st.running = true;
        }
        let started = std::time::Instant::now();
        let result = checkpoint(&conn);
        tracing::debug!(result = ?result.as_ref().ok(), micros = started.elapsed().as_micros() as u64, "background WAL checkpoint of the activity database");
        {
            let mut st = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
            st.running = false;
            shared.wake.notify_all();
        }
        match result {
            Ok(Some((log, copied))) => {
                failures = 0;
                shared.bg_runs.fetch_add(1, Ordering::Relaxed);
                shared.bg_log.store(log, Ordering::Relaxed);
                shared.bg_copied.store(copied, Ordering::Relaxed);
            }
            Ok(None) => {}
            Err(e) => {
                failures = failures.saturating_add(1);
                let pause = retry_pause(failures);
                tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "background WAL checkpoint of the activity database failed; the writer checkpoints if the WAL grows too long");
                let st = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
                // Sleep unless told to stop.
                let _ = shared
                    .wake
                    .wait_timeout_while(st, pause, |st| !st.stop)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
    }
}

/// The pause after `failures` failed checkpoints in a row: exponential, capped, jittered.
fn retry_pause(failures: u32) -> Duration {
    let base = RETRY_FIRST
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(RETRY_CAP);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    // Up to half of `base` more, from the clock's nanoseconds (jitter, not cryptography).
    let extra = base.mul_f64(f64::from(nanos % 1000) / 2000.0);
    base + extra
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps() {
        let t = 1000;
        assert_eq!(step(0, t, 0, 0), Step::None);
        assert_eq!(step(999, t, 0, 0), Step::None);
        // At the threshold with nothing copied: keep the background going.
        assert_eq!(step(1000, t, 0, 0), Step::Background);
        // ... with all but a quarter copied (in this WAL generation): the writer finishes.
        assert_eq!(step(1000, t, 900, 750), Step::Finish);
        assert_eq!(step(1000, t, 900, 749), Step::Background);
        // A report from before a restart (its log longer than the WAL now) does not count.
        assert_eq!(step(1200, t, 3000, 3000), Step::Background);
        // Four times the threshold: the writer, whatever the background did.
        assert_eq!(step(4000, t, 0, 0), Step::Force);
    }

    #[test]
    fn a_report_from_before_the_wal_started_over_is_forgotten() {
        let w = WalShared::default();
        let t = 1000;
        w.frames.store(1100, Ordering::Relaxed);
        w.bg_log.store(1000, Ordering::Relaxed);
        w.bg_copied.store(1000, Ordering::Relaxed);
        assert_eq!(w.step(t), Step::Finish);
        w.frames.store(10, Ordering::Relaxed);
        assert_eq!(w.step(t), Step::None);
        w.frames.store(1100, Ordering::Relaxed);
        assert_eq!(w.step(t), Step::Background);
    }

    #[test]
    fn retry_pauses_grow_to_the_cap() {
        assert!(retry_pause(1) >= RETRY_FIRST && retry_pause(1) <= RETRY_FIRST * 3 / 2);
        assert!(retry_pause(2) >= RETRY_FIRST * 2);
        assert!(retry_pause(40) >= RETRY_CAP && retry_pause(40) <= RETRY_CAP * 3 / 2);
    }
}
