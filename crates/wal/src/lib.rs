//! WAL checkpoints of kubetrail's SQLite databases (the state database and the activity
//! database) on a thread of their own, so that a writer's commits do not stop for them.
//!
//! SQLite's automatic checkpoint runs inside the commit that crossed its threshold: under
//! load one commit in every few hundred copied tens of MiB of WAL pages into the database
//! file and fsynced it (27–77 ms on the state database, while every submission waited; on
//! an activity store whose indexes outgrew the page cache, almost every batch). Instead the
//! writer connection reports the WAL's length after each commit (a WAL hook, which also
//! turns the automatic checkpoint off: [`install_hook`]) and asks [`WalShared::step`] what
//! to do:
//!
//! - at the threshold, a background connection ([`Checkpointer`]) runs PASSIVE checkpoints
//!   (they never block the writer or the readers; each copies the frames committed when it
//!   started, syncing the WAL before and the database file after, as SQLite always does),
//!   again while more than a quarter of the threshold is left to copy ([`Step::Background`]);
//! - once the background has copied all but that quarter, the writer runs one PASSIVE
//!   checkpoint itself for the rest, between two of its transactions ([`Step::Finish`]),
//!   after which its next transaction starts the WAL over from the beginning (SQLite restarts
//!   the WAL only when everything in it is in the database file, which under continuous
//!   commits the background alone rarely sees);
//! - at four times the threshold the writer checkpoints whatever the background achieved
//!   ([`Step::Force`]), so the WAL stays bounded if the background falls behind or fails.
//!   How it does so is the writer's choice ([`WalShared::writer_checkpoint`]'s mode and
//!   wait): the state database's writer runs a FULL checkpoint, which may wait for readers of
//!   older snapshots; the activity database's stays PASSIVE, so that a `kubetrail who`
//!   holding a snapshot never stalls delivery (what the reader still needs stays in the WAL
//!   until it lets go).
//!
//! Durability is untouched: what a commit writes to the WAL is synced by the commit itself,
//! and only SQLite decides when WAL frames may be overwritten (after a synced backfill).

use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ffi};

/// The most the writer is left to copy itself, as a fraction (divisor) of the threshold.
const EARLY_DIVISOR: u64 = 4;
/// The WAL length, in multiples of the threshold, at which the writer checkpoints whatever
/// the background did.
const HARD_MULTIPLE: u64 = 4;
/// Pause after a failed background checkpoint: doubled after each failure in a row, up to
/// the cap, with up to half of it added at random.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_CAP: Duration = Duration::from_secs(10);

/// What can go wrong here.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A statement on a connection failed.
    #[error("{what}: {source}")]
    Sql {
        /// What was being done.
        what: &'static str,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The background thread could not be started.
    #[error("cannot start the WAL checkpoint thread: {source}")]
    Thread {
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
}

fn sql(what: &'static str) -> impl FnOnce(rusqlite::Error) -> WalError {
    move |source| WalError::Sql { what, source }
}

/// What the writer's WAL hook, the writer and the background thread share.
#[derive(Debug, Default)]
pub struct WalShared {
    /// Frames in the WAL after the writer's last commit (from the WAL hook).
    frames: AtomicU64,
    /// `frames` when the writer last asked what to do (a shorter WAL since: it started over).
    seen: AtomicU64,
    /// The WAL length and the frames copied, as the last background checkpoint reported.
    bg_log: AtomicU64,
    bg_copied: AtomicU64,
    /// Background checkpoints that ran to the end.
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
pub enum Step {
    /// Nothing.
    None,
    /// Wake the background checkpointer ([`WalShared::wake_background`]).
    Background,
    /// Checkpoint the rest on the writer connection, without waiting for anything.
    Finish,
    /// Checkpoint on the writer connection whatever the background did: the WAL reached its
    /// hard limit.
    Force,
}

/// The decision, as a pure function of the numbers: the WAL's length, the threshold (both in
/// frames) and the background's last report.
pub fn step(frames: u64, threshold: u64, bg_log: u64, bg_copied: u64) -> Step {
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

/// Registers the WAL hook on the writer connection: from then on `shared.frames()` follows
/// the WAL's length, and SQLite's automatic checkpoint (itself a WAL hook) is off.
///
/// `shared` must outlive `conn`'s hook: the caller keeps an `Arc` of it in a field dropped
/// after the connection (or made before it, so that it drops after).
pub fn install_hook(conn: &Connection, shared: &Arc<WalShared>) {
    unsafe extern "C" fn hook(
        ctx: *mut c_void,
        _db: *mut ffi::sqlite3,
        _name: *const c_char,
        frames: c_int,
    ) -> c_int {
        // SAFETY: `ctx` is the `WalShared` of an `Arc` that the caller keeps alive for as
        // long as its connection (see install_hook); only an atomic is touched.
        let shared = unsafe { &*(ctx as *const WalShared) };
        shared
            .frames
            .store(u64::try_from(frames).unwrap_or(0), Ordering::Relaxed);
        ffi::SQLITE_OK
    }
    // SAFETY: the handle is the open connection's; the context pointer stays valid while the
    // hook can run (the caller drops its connection before its `Arc<WalShared>`), and the
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
    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    /// What to do now, for a WAL threshold of `threshold` frames. Called by the writer after
    /// each write transaction.
    pub fn step(&self, threshold: u64) -> Step {
        let frames = self.frames();
        if frames < self.seen.swap(frames, Ordering::Relaxed) {
            // The WAL started over: the background's last report is about the previous one
            // (step() also ignores a report longer than the WAL, but a new WAL that has grown
            // past it would take it for its own).
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

    /// Frames the background thread's last checkpoint copied (0 before its first, or since
    /// the WAL started over).
    pub fn background_copied(&self) -> u64 {
        self.bg_copied.load(Ordering::Relaxed)
    }

    /// Background checkpoints that ran to the end.
    pub fn background_runs(&self) -> u64 {
        self.bg_runs.load(Ordering::Relaxed)
    }

    /// Asks the background thread for a checkpoint (it runs one when it is free).
    pub fn wake_background(&self) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if !st.wanted {
            st.wanted = true;
            self.wake.notify_all();
        }
    }

    /// A checkpoint on the writer connection `conn`, with the background thread held off.
    /// If the background is checkpointing, `wait` None gives up at once (Ok(None));
    /// otherwise the writer first waits up to that long for it to finish. Returns (WAL
    /// frames, frames copied) as [`checkpoint`] does.
    pub fn writer_checkpoint(
        &self,
        conn: &Connection,
        mode: Mode,
        wait: Option<Duration>,
    ) -> Result<Option<(u64, u64)>, WalError> {
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
        let result = checkpoint(conn, mode);
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.hold = false;
        self.wake.notify_all();
        result
    }
}

/// How a checkpoint treats other connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Copies what it can without waiting; gives up at once if another checkpoint runs.
    Passive,
    /// Waits (up to the connection's busy timeout) for another checkpoint and for readers of
    /// older snapshots, then copies every frame.
    Full,
}

/// Runs `PRAGMA wal_checkpoint`: returns (WAL frames, frames copied), or None when it could
/// not run (another connection's checkpoint held the lock).
pub fn checkpoint(conn: &Connection, mode: Mode) -> Result<Option<(u64, u64)>, WalError> {
    let sql_text = match mode {
        Mode::Passive => "PRAGMA main.wal_checkpoint(PASSIVE)",
        Mode::Full => "PRAGMA main.wal_checkpoint(FULL)",
    };
    let (busy, log, copied): (i64, i64, i64) = conn
        .query_row(sql_text, [], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .map_err(sql("checkpointing the WAL"))?;
    if busy != 0 || log < 0 || copied < 0 {
        return Ok(None);
    }
    Ok(Some((log as u64, copied as u64)))
}

/// Runs a pragma, reading whatever rows it returns.
fn pragma(conn: &Connection, text: &str, what: &'static str) -> Result<(), WalError> {
    let mut stmt = conn.prepare(text).map_err(sql(what))?;
    let mut rows = stmt.query([]).map_err(sql(what))?;
    while rows.next().map_err(sql(what))?.is_some() {}
    Ok(())
}

/// The background checkpoint thread. Dropping it stops the thread and waits for it.
#[derive(Debug)]
pub struct Checkpointer {
    shared: Arc<WalShared>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread on `conn`, a connection of its own to the database (already in WAL
    /// mode, opened read-write with the caller's busy timeout). `synchronous` is the
    /// writer's setting (`FULL`, `NORMAL`): a checkpoint then syncs as the writer would.
    /// `database` names the database in the thread's name and logs ("state", "activity").
    pub fn start(
        conn: Connection,
        synchronous: &str,
        database: &'static str,
        shared: Arc<WalShared>,
    ) -> Result<Checkpointer, WalError> {
        pragma(
            &conn,
            &format!("PRAGMA synchronous = {synchronous}"),
            "setting the checkpoint connection's synchronous",
        )?;
        // It commits nothing, but must not checkpoint on close behind the writer's back
        // either: the writer's close does the last one.
        pragma(
            &conn,
            "PRAGMA wal_autocheckpoint = 0",
            "turning the checkpoint connection's automatic checkpoint off",
        )?;
        // A checkpoint copies frames through a buffer of its own, not the page cache.
        pragma(
            &conn,
            "PRAGMA cache_size = -256",
            "setting the checkpoint connection's cache",
        )?;
        let bg = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("kubetrail-ckpt-{database}"))
            .spawn(move || run(conn, &bg, database))
            .map_err(|source| WalError::Thread { source })?;
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

fn run(conn: Connection, shared: &WalShared, database: &'static str) {
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
        let started = Instant::now();
        let result = checkpoint(&conn, Mode::Passive);
        tracing::debug!(database, result = ?result.as_ref().ok(), micros = started.elapsed().as_micros() as u64, "background WAL checkpoint");
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
                tracing::warn!(database, error = %e, retry_in_ms = pause.as_millis() as u64, "background WAL checkpoint failed; the writer checkpoints if the WAL grows too long");
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
mod tests;
