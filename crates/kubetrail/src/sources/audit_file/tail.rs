//! The tailer: which files exist, which of them are the same file under another name, where
//! each was read to, and when a rotated one may be left.
//!
//! Files are tracked by fingerprint ([`super::fingerprint`]). Each tracked file has an entry
//! with its offset (everything before it has been handed to the committer) and a handle: an
//! open file being read, a file to open at the offset, or nothing. An open handle keeps
//! reading the same file after it is renamed or deleted, so a rotated file is read to its end
//! even while the apiserver finishes its last line into it.
//!
//! The loop: scan the glob every `refresh_interval` (new files, renames, rotations, copies and
//! gzipped backups), read every open file until it has no more data (in batches handed to the
//! committer), leave rotated files that stayed idle for `rotate_wait` (emitting a last line
//! without newline), then wait `poll_interval` (or go on at once if a file had more).
//!
//! A file's checkpoint outlives its entry: a file that comes back (renamed into the glob
//! again) goes on from its offset. Once a file has been gone for `dedup_retention` (its
//! events' dedup keys are expiring too), its checkpoint is deleted, so that a log rotated
//! every few minutes does not leave a row per file in the state database forever (Fluent
//! Bit's tail deletes a file's row as soon as the file is deleted). Checkpoints of files that
//! were already gone when kubetrail started are found at the first scan and go the same way.
//!
//! Rotation cases:
//! - rename (`audit.log` → `audit-<time>.log`, new `audit.log`): the open handle reads on; the
//!   scan finds it under its new name (same inode), marks it rotated (its first name holds
//!   another file now) and finds the new file (new fingerprint, read from 0).
//! - gzip of the rotated file: the `.gz` has the same fingerprint, so it is the same file; it
//!   is read only if the plain file was not read to its end (after a restart), decompressing
//!   and skipping to the offset.
//! - copytruncate: the open file becomes shorter than its read position (or its first bytes
//!   change): it is detached and found again as a new file read from 0; the entry keeps its
//!   offset and, if the copy is matched by the glob, reads what the copy has past it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::batch::{Batch, FileCheckpoint, RecordContext, build_records_of};
use super::commit::Committer;
use super::config::AuditFileConfig;
use super::files::{self, Found, Handle, Meta, ScanCache, StepEnd, StepParams};
use super::fingerprint::Fingerprint;
use crate::pipeline::{PipelineError, Submission};
use crate::shutdown::Shutdown;
use crate::telemetry::health::Readiness;
use crate::telemetry::{ComponentMetrics, Counter, Gauge};

/// What a file's checkpoint stream name starts with (after the source's name).
const FP_PREFIX: &str = "fp:";
/// Bytes read from a file at a time.
pub const READ_CHUNK: usize = 64 << 10;
/// Batches read from one file before the others (and the scan) get a turn.
const BATCHES_PER_TURN: usize = 16;
/// Batches of at least this many lines are made on two threads.
const SPLIT_AT: usize = 64;

/// Why the tailer stopped.
#[derive(Debug)]
pub enum Stop {
    /// Shutdown, or the committer stopped (which it does only at shutdown).
    Shutdown,
    /// Something that cannot happen did (a blocking task panicked).
    Failed(String),
}

/// One tracked file.
#[derive(Debug)]
struct Entry {
    fp: Fingerprint,
    stream: String,
    /// Where it was last found.
    path: PathBuf,
    path_str: Arc<str>,
    /// Where it was first found: if another file (or none) is there now, it was rotated.
    home: PathBuf,
    /// Everything before this offset is in a batch handed to the committer.
    offset: u64,
    handle: Handle,
    rotated: bool,
    rotated_at: Instant,
    last_growth: Instant,
    done: bool,
    /// For ordering reads: older files first.
    mtime: Option<SystemTime>,
    /// The metadata of the file it was attached to.
    attached: Option<Meta>,
    /// The metadata of a file it could not be read from: not tried again until it changes.
    failed: Option<Meta>,
    /// The checkpoint last put into a batch, and that batch.
    noted: Option<FileCheckpoint>,
    noted_in: u64,
}

impl Entry {
    fn view(&self) -> FileCheckpoint {
        FileCheckpoint {
            offset: self.offset,
            path: self.path_str.to_string(),
            rotated: self.rotated,
            done: self.done,
        }
    }

    fn set_path(&mut self, path: &Path) {
        if self.path != path {
            self.path = path.to_path_buf();
            self.path_str = Arc::from(path.to_string_lossy().as_ref());
        }
    }

    fn mark_rotated(&mut self, now: Instant) {
        if !self.rotated {
            self.rotated = true;
            self.rotated_at = now;
            tracing::info!(file = %self.path.display(), fingerprint = %self.fp, "audit log file rotated");
        }
    }

    /// When an open, rotated file may be left if it does not grow meanwhile.
    fn leave_at(&self, rotate_wait: Duration) -> Option<Instant> {
        match &self.handle {
            Handle::Open(_) if self.rotated => {
                Some(self.rotated_at.max(self.last_growth) + rotate_wait)
            }
            _ => None,
        }
    }
}

/// The source's own series, besides the per-component ones.
#[derive(Clone, Debug, Default)]
pub struct TailMetrics {
    pub open_files: Gauge,
    pub rotations: Counter,
    pub truncations: Counter,
    pub backpressure: Counter,
}

impl TailMetrics {
    pub fn register(registry: &crate::telemetry::Metrics, component: &str) -> TailMetrics {
        let l = [("component", component)];
        TailMetrics {
            open_files: registry.gauge("kubetrail_audit_file_open_files", &l),
            rotations: registry.counter("kubetrail_audit_file_rotations_total", &l),
            truncations: registry.counter("kubetrail_audit_file_truncations_total", &l),
            backpressure: registry.counter("kubetrail_audit_file_backpressure_total", &l),
        }
    }
}

/// The reading half of the source.
pub struct Tailer<C> {
    cfg: AuditFileConfig,
    committer: Arc<C>,
    shutdown: Shutdown,
    metrics: ComponentMetrics,
    tail_metrics: TailMetrics,
    cx: RecordContext,
    entries: HashMap<Fingerprint, Entry>,
    cache: ScanCache,
    scanned: bool,
    rescan: bool,
    batch: Batch,
    committed: Arc<AtomicU64>,
    tx: mpsc::Sender<Batch>,
    readiness: Option<Arc<Readiness>>,
    /// Checkpoint streams of files not seen since the given time (see the module comment).
    gone: HashMap<String, Instant>,
    /// Whether the stored checkpoints were compared with the files found (once per run).
    listed: bool,
}

impl<C: Committer> Tailer<C> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: AuditFileConfig,
        committer: Arc<C>,
        shutdown: Shutdown,
        metrics: ComponentMetrics,
        tail_metrics: TailMetrics,
        cx: RecordContext,
        committed: Arc<AtomicU64>,
        tx: mpsc::Sender<Batch>,
        readiness: Option<Arc<Readiness>>,
    ) -> Tailer<C> {
        Tailer {
            cfg,
            committer,
            shutdown,
            metrics,
            tail_metrics,
            cx,
            entries: HashMap::new(),
            cache: ScanCache::new(),
            scanned: false,
            rescan: false,
            batch: Batch {
                seq: 1,
                ..Batch::default()
            },
            committed,
            tx,
            readiness,
            gone: HashMap::new(),
            listed: false,
        }
    }

    /// Runs until shutdown (or until the committer stops); says why it stopped.
    pub async fn run(mut self) -> Stop {
        match self.run_loop().await {
            Ok(never) => match never {},
            Err(stop) => stop,
        }
    }

    async fn run_loop(&mut self) -> Result<std::convert::Infallible, Stop> {
        let mut next_scan = Instant::now();
        loop {
            if self.shutdown.is_fired() {
                return Err(Stop::Shutdown);
            }
            if self.rescan || Instant::now() >= next_scan {
                self.rescan = false;
                self.scan().await?;
                next_scan = Instant::now() + self.cfg.refresh_interval;
            }
            let more = self.read_round().await?;
            self.leave_idle_rotated();
            self.flush().await?;
            if let Some(r) = &self.readiness {
                r.set_ready(true);
                r.progress();
            }
            self.tail_metrics.open_files.set(
                self.entries
                    .values()
                    .filter(|e| matches!(e.handle, Handle::Open(_)))
                    .count() as i64,
            );
            if more || self.rescan {
                tokio::task::yield_now().await;
                continue;
            }
            let mut wake = (Instant::now() + self.cfg.poll_interval).min(next_scan);
            if let Some(t) = self
                .entries
                .values()
                .filter_map(|e| e.leave_at(self.cfg.rotate_wait))
                .min()
            {
                wake = wake.min(t.max(Instant::now()));
            }
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = self.shutdown.fired() => return Err(Stop::Shutdown),
            }
        }
    }

    /// Scans the glob and brings the entries up to date.
    async fn scan(&mut self) -> Result<(), Stop> {
        let want_tail_start = !self.scanned && !self.cfg.read_from_head;
        let pattern = self.cfg.path.clone();
        let exclude = self.cfg.exclude_path.clone();
        let cache = std::mem::take(&mut self.cache);
        let (found, cache) = tokio::task::spawn_blocking(move || {
            files::scan(&pattern, &exclude, cache, want_tail_start)
        })
        .await
        .map_err(|e| Stop::Failed(format!("scanning the audit log files failed: {e}")))?;
        self.cache = cache;
        if found.is_empty() && !self.scanned {
            tracing::info!(path = %self.cfg.path, "no file matches the path yet; waiting for one");
        }
        let now = Instant::now();

        // Rotations and renames of the files being read.
        let at: HashMap<&Path, files::FileId> = found
            .iter()
            .map(|f| (f.path.as_path(), f.meta.id))
            .collect();
        for e in self.entries.values_mut() {
            let Handle::Open(of) = &e.handle else {
                continue;
            };
            if of.compressed {
                continue;
            }
            let id = of.id;
            if at.get(e.home.as_path()) != Some(&id) {
                if !e.rotated {
                    self.tail_metrics.rotations.inc();
                }
                e.mark_rotated(now);
            }
            if let Some(f) = found.iter().find(|f| f.meta.id == id && !f.compressed) {
                e.set_path(&f.path);
            }
        }

        for f in &found {
            let Some(fp) = f.fp else { continue };
            if !self.entries.contains_key(&fp) {
                match self.discover(f, fp).await {
                    Ok(()) => {}
                    Err(PipelineError::ShuttingDown) => return Err(Stop::Shutdown),
                    Err(e) => {
                        tracing::warn!(file = %f.path.display(), error = %e, "cannot read the file's checkpoint; will retry");
                        continue;
                    }
                }
            }
            self.attach(f, fp, now);
        }
        self.scanned = true;

        // Forget files that are gone, once their last checkpoint is committed (the database
        // still knows them if they come back).
        let present: HashSet<Fingerprint> = found.iter().filter_map(|f| f.fp).collect();
        let committed = self.committed.load(Ordering::Acquire);
        let gone = &mut self.gone;
        self.entries.retain(|fp, e| {
            let forget = matches!(e.handle, Handle::Detached)
                && !present.contains(fp)
                && e.noted_in <= committed;
            if forget {
                gone.insert(e.stream.clone(), now);
            }
            !forget
        });
        for fp in self.entries.keys().copied().collect::<Vec<_>>() {
            self.note(fp);
        }
        self.forget_gone(&present, now).await
    }

    /// Keeps [`Tailer::gone`] up to date and deletes the checkpoints of files gone for
    /// `dedup_retention`. Failures are logged and tried again at the next scan.
    async fn forget_gone(
        &mut self,
        present: &HashSet<Fingerprint>,
        now: Instant,
    ) -> Result<(), Stop> {
        if !self.listed {
            // Checkpoints of files that were gone before this run started.
            match self.committer.checkpoints_under(FP_PREFIX).await {
                Ok(stored) => {
                    self.listed = true;
                    // The tracked and present files' streams leave the map again below.
                    for (stream, _) in stored {
                        self.gone.entry(stream).or_insert(now);
                    }
                }
                Err(PipelineError::ShuttingDown) => return Err(Stop::Shutdown),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list the stored file checkpoints; will retry");
                }
            }
        }
        if self.gone.is_empty() {
            return Ok(());
        }
        // A file found again (even one whose entry could not be made) is not gone.
        for fp in present {
            self.gone.remove(&self.stream_of(*fp));
        }
        for e in self.entries.values() {
            self.gone.remove(&e.stream);
        }
        let retention = self.cfg.dedup_retention;
        let expired: Vec<String> = self
            .gone
            .iter()
            .filter(|(_, since)| now.saturating_duration_since(**since) >= retention)
            .map(|(stream, _)| stream.clone())
            .collect();
        if expired.is_empty() {
            return Ok(());
        }
        match self.committer.forget(expired.clone()).await {
            Ok(()) => {
                tracing::info!(
                    checkpoints = expired.len(),
                    "forgot the checkpoints of audit log files gone for longer than dedup_retention"
                );
                for stream in &expired {
                    self.gone.remove(stream);
                }
                Ok(())
            }
            Err(PipelineError::ShuttingDown) => Err(Stop::Shutdown),
            Err(e) => {
                tracing::warn!(error = %e, "cannot delete the checkpoints of gone files; will retry");
                Ok(())
            }
        }
    }

    /// The checkpoint stream of the file with fingerprint `fp`.
    fn stream_of(&self, fp: Fingerprint) -> String {
        self.committer
            .stream_name(&format!("{FP_PREFIX}{}", fp.hex()))
    }

    /// Creates the entry of a file seen for the first time in this run, from its checkpoint
    /// if it has one.
    async fn discover(&mut self, f: &Found, fp: Fingerprint) -> Result<(), PipelineError> {
        let stream = self.stream_of(fp);
        let stored = self.committer.checkpoint(&stream).await?;
        let path_str: Arc<str> = Arc::from(f.path.to_string_lossy().as_ref());
        // Seen before, even if what was stored cannot be read: never start such a file at its end.
        let seen_before = stored.is_some();
        let noted = stored.and_then(|c| match FileCheckpoint::decode(&c.value) {
            Some(c) => Some(c),
            None => {
                tracing::warn!(stream, value = %c.value, "unreadable file checkpoint; reading the file from its start");
                None
            }
        });
        let (offset, rotated, done) = match &noted {
            Some(c) => (c.offset, c.rotated || c.path != *path_str, c.done),
            None if !seen_before && !self.scanned && !self.cfg.read_from_head => {
                // Found at start and never seen: start at its end.
                if f.compressed {
                    (0, true, true)
                } else {
                    (f.tail_start.unwrap_or(f.meta.len), false, false)
                }
            }
            None => (0, false, false),
        };
        let now = Instant::now();
        let e = Entry {
            fp,
            stream,
            path: f.path.clone(),
            path_str,
            home: f.path.clone(),
            offset,
            handle: Handle::Detached,
            rotated: rotated || f.compressed,
            rotated_at: now,
            last_growth: now,
            done,
            mtime: f.meta.mtime,
            attached: None,
            failed: None,
            noted,
            noted_in: 0,
        };
        tracing::info!(file = %f.path.display(), fingerprint = %fp, offset, rotated = e.rotated, done, "audit log file found");
        self.entries.insert(fp, e);
        Ok(())
    }

    /// Opens (at the next read) a file found for a tracked entry that is not being read, if
    /// the file has something past the entry's offset.
    fn attach(&mut self, f: &Found, fp: Fingerprint, now: Instant) {
        let Some(e) = self.entries.get_mut(&fp) else {
            return;
        };
        if !matches!(e.handle, Handle::Detached) || e.failed.as_ref() == Some(&f.meta) {
            return;
        }
        let worth = if f.compressed {
            !e.done
        } else if e.done {
            // A file left after its rotation that grew again after all.
            f.meta.len > e.offset
        } else {
            f.meta.len >= e.offset
        };
        if !worth {
            return;
        }
        e.done = false;
        e.set_path(&f.path);
        e.handle = Handle::Pending {
            path: f.path.clone(),
            compressed: f.compressed,
        };
        e.attached = Some(f.meta.clone());
        e.failed = None;
        if f.compressed || f.path != e.home {
            e.mark_rotated(now);
        }
    }

    /// Puts an entry's checkpoint into the batch being built if it changed.
    fn note(&mut self, fp: Fingerprint) {
        let Some(e) = self.entries.get_mut(&fp) else {
            return;
        };
        let view = e.view();
        if e.noted.as_ref() != Some(&view) {
            self.batch.set_checkpoint(&e.stream, view.encode());
            e.noted = Some(view);
            e.noted_in = self.batch.seq;
        }
    }

    /// Reads every file that has a handle until it has no more data (or its turn is over).
    /// Returns whether some file has more to read.
    async fn read_round(&mut self) -> Result<bool, Stop> {
        // Oldest first, so records come roughly in the order they were written.
        let mut order: Vec<(Option<SystemTime>, PathBuf, Fingerprint)> = self
            .entries
            .values()
            .filter(|e| !matches!(e.handle, Handle::Detached))
            .map(|e| (e.mtime, e.path.clone(), e.fp))
            .collect();
        order.sort();
        let mut more = false;
        for (.., fp) in order {
            let mut batches = 0;
            loop {
                if self.shutdown.is_fired() {
                    return Err(Stop::Shutdown);
                }
                match self.step(fp).await? {
                    StepEnd::Full => {
                        self.flush().await?;
                        batches += 1;
                        if batches >= BATCHES_PER_TURN {
                            more = true;
                            break;
                        }
                    }
                    _ => break,
                }
            }
        }
        Ok(more)
    }

    /// One read step of one file, on the blocking pool.
    async fn step(&mut self, fp: Fingerprint) -> Result<StepEnd, Stop> {
        let limit_records = self.cfg.batch_records;
        let limit_bytes = self.cfg.batch_bytes;
        let max_line = self.cfg.buffer_max_size;
        let Some(e) = self.entries.get_mut(&fp) else {
            return Ok(StepEnd::Eof);
        };
        let handle = std::mem::take(&mut e.handle);
        let params = StepParams {
            fp,
            path: e.path_str.clone(),
            offset: e.offset,
            max_line,
            chunk: READ_CHUNK,
            limit_records,
            limit_bytes,
        };
        let mut lines = std::mem::take(&mut self.batch.lines);
        let joined = tokio::task::spawn_blocking(move || {
            let (handle, end, read) = files::step(handle, &mut lines, &params);
            (handle, lines, end, read)
        })
        .await;
        let (handle, lines, end, read) =
            joined.map_err(|e| Stop::Failed(format!("reading an audit log file failed: {e}")))?;
        self.batch.lines = lines;
        let now = Instant::now();
        let Some(e) = self.entries.get_mut(&fp) else {
            return Ok(end);
        };
        e.handle = handle;
        if let Handle::Open(of) = &e.handle {
            e.offset = of.splitter.line_start();
        }
        if read > 0 {
            e.last_growth = now;
        }
        match &end {
            StepEnd::Full | StepEnd::Eof => {}
            StepEnd::Ended => {
                if let Handle::Open(of) = &e.handle {
                    e.offset = of.splitter.read_pos();
                }
                e.done = true;
                e.handle = Handle::Detached;
                tracing::info!(file = %e.path.display(), offset = e.offset, "compressed audit log file read to its end");
            }
            StepEnd::Truncated => {
                e.handle = Handle::Detached;
                self.tail_metrics.truncations.inc();
                self.rescan = true;
                tracing::warn!(
                    file = %e.path.display(),
                    offset = e.offset,
                    "audit log file truncated or rewritten in place; reading it again from its start"
                );
            }
            StepEnd::Lost(reason) => {
                e.handle = Handle::Detached;
                e.failed = e.attached.take();
                tracing::debug!(file = %e.path.display(), reason, "file not read");
            }
            StepEnd::Failed(err) => {
                e.handle = Handle::Detached;
                e.failed = e.attached.take();
                self.metrics.errors.inc();
                tracing::warn!(
                    file = %e.path.display(),
                    offset = e.offset,
                    error = %err,
                    "reading the audit log file failed; will retry when it changes"
                );
            }
        }
        self.note(fp);
        Ok(end)
    }

    /// Leaves rotated files that were read to their end and did not grow for `rotate_wait`,
    /// emitting a last line that has no newline.
    fn leave_idle_rotated(&mut self) {
        let now = Instant::now();
        let wait = self.cfg.rotate_wait;
        let mut left = Vec::new();
        for e in self.entries.values_mut() {
            let Some(at) = e.leave_at(wait) else { continue };
            let Handle::Open(of) = &mut e.handle else {
                continue;
            };
            if !of.at_eof || now < at {
                continue;
            }
            if let Some(event) = of.splitter.finish() {
                self.batch.lines.push(e.fp, &e.path_str, event);
            }
            e.offset = of.splitter.line_start();
            e.done = true;
            e.handle = Handle::Detached;
            tracing::info!(file = %e.path.display(), offset = e.offset, "rotated audit log file read to its end");
            left.push(e.fp);
        }
        for fp in left {
            self.note(fp);
        }
    }

    /// Seals the batch being built (makes its records) and hands it to the committer; waits
    /// while the committer is behind.
    async fn flush(&mut self) -> Result<(), Stop> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let seq = self.batch.seq;
        let mut batch = std::mem::replace(
            &mut self.batch,
            Batch {
                seq: seq + 1,
                ..Batch::default()
            },
        );
        // Parsing, filtering and encoding take most of the source's CPU: a large batch is
        // cut in two halves made on two blocking threads, then joined in order.
        batch.lines.seal();
        let lines = Arc::new(std::mem::take(&mut batch.lines));
        let n = lines.len();
        let cut = if n >= SPLIT_AT { n / 2 } else { n };
        let make = |range: std::ops::Range<usize>| {
            let lines = lines.clone();
            let cx = self.cx.clone();
            let committer = self.committer.clone();
            let dedup_retention = self.cfg.dedup_retention;
            tokio::task::spawn_blocking(move || {
                let (records, errors) = build_records_of(&lines, range, &cx);
                // Filters and encoding too, while the committer waits for the previous batch.
                let sub = committer.prepare(Submission {
                    records,
                    dedup_retention,
                    ..Submission::default()
                });
                (sub, errors)
            })
        };
        let first = make(0..cut);
        let second = (cut < n).then(|| make(cut..n));
        let failed =
            |e: tokio::task::JoinError| Stop::Failed(format!("making audit records failed: {e}"));
        let (mut sub, mut errors) = first.await.map_err(failed)?;
        if let Some(second) = second {
            let (more, more_errors) = second.await.map_err(failed)?;
            // The same committer prepared both halves, so both are prepared or neither is.
            match (&mut sub.prepared, more.prepared) {
                (Some(a), Some(b)) => a.append(b),
                (Some(_), None) | (None, None) => sub.records.extend(more.records),
                (None, Some(b)) => {
                    let first_half = std::mem::take(&mut sub.records);
                    let mut p = self.committer.prepare(Submission {
                        records: first_half,
                        dedup_retention: self.cfg.dedup_retention,
                        ..Submission::default()
                    });
                    match &mut p.prepared {
                        Some(a) => a.append(b),
                        None => p.prepared = Some(b),
                    }
                    sub = p;
                }
            }
            errors.extend(more_errors);
        }
        // Both tasks are done, so this is the only reference (a copy otherwise).
        batch.lines = Arc::try_unwrap(lines).unwrap_or_else(|shared| (*shared).clone());
        batch.records = sub.records;
        batch.prepared = sub.prepared;
        if let Some(first) = errors.first() {
            self.metrics.errors.add(errors.len() as u64);
            tracing::warn!(
                count = errors.len(),
                file = %first.path,
                offset = first.offset,
                reason = %first.reason,
                "lines that are not audit events were kept as error records"
            );
        }
        tokio::select! {
            sent = self.tx.send(batch) => sent.map_err(|_| Stop::Shutdown),
            _ = self.shutdown.fired() => Err(Stop::Shutdown),
        }
    }
}
