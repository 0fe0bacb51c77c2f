//! The write side of the state database: opening (lock, pragmas, migrations, cutting the
//! queues' logs back to what was committed), the one commit that stores records, dedup keys,
//! checkpoints and acknowledgements together, and the in-memory queue bounds that follow it.

use std::collections::HashMap;
use std::fs::File;
use std::io::IoSlice;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params,
};

use crate::batch::{Checkpoint, CommitBatch, CommitOutcome, Dedup, Entry};
use crate::error::{StateError, sql};
use crate::fault::{self, FaultSite, Faults};
use crate::format;
use crate::lock;
use crate::queue::{MAX_QUEUE_ID, MAX_SEQ, QueueDepth, QueueId};
use crate::reader::Reader;
use crate::recent::{Recent, RecentBlock};
use crate::reserve::Reserve;
use crate::schema;
use crate::segments::{
    Appender, Hints, LogEnd, LogError, SEGMENT_TARGET, Segments, queue_dir, queues_root, sync_dir,
};
use kubetrail_wal::{Checkpointer, Mode, Step, WalShared};

/// How hard each commit insists on reaching the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// fsync the queue segments and the WAL at every commit: a committed batch survives power
    /// loss. What the exactly-once promise needs, and the default.
    #[default]
    Full,
    /// fsync only at WAL checkpoints, never the segments: a committed batch survives a crash
    /// of kubetrail but the last commits may be lost on power loss or a kernel crash. For
    /// tests and for users who accept that trade.
    Normal,
}

/// How to open the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Durability of each commit.
    pub sync: SyncMode,
    /// How long a statement waits for a lock held by another connection of this process (a
    /// reader during WAL recovery, a checkpoint) before failing.
    pub busy_timeout: Duration,
    /// A commit that finds its queue's current segment file at least this long starts a new
    /// one; segments are deleted once every record in them is acknowledged.
    pub segment_bytes: u64,
    /// WAL length, in pages, at which the WAL is checkpointed and started over (see
    /// the kubetrail-wal crate: copying starts in the background at a quarter of it).
    pub wal_checkpoint_pages: u64,
    /// Bytes kept allocated in `<db>-reserve` for a full disk (reserve.rs); 0 keeps none.
    pub reserve_bytes: u64,
    /// Whether queue blocks are compressed (LZ4) when that makes them smaller; false stores
    /// them as they are (less CPU, about ten times the bytes on disk for audit records).
    /// Blocks of either kind are read whatever the setting.
    pub compress: bool,
    /// Faults to inject (fault.rs): only tests can make one that does anything.
    pub faults: Faults,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            sync: SyncMode::Full,
            busy_timeout: Duration::from_secs(5),
            segment_bytes: SEGMENT_TARGET,
            wal_checkpoint_pages: WAL_CHECKPOINT_PAGES,
            reserve_bytes: RESERVE_BYTES,
            compress: true,
            faults: Faults::default(),
        }
    }
}

/// The disk space kept in reserve for a full disk: room for thousands of acknowledgements'
/// WAL pages (the WAL is checkpointed after every commit while the disk is full).
const RESERVE_BYTES: u64 = 8 << 20;

/// Page size for new databases. A commit writes every page it dirtied in full, and dedup
/// upserts of Event uids land on random leaf pages, so smaller pages keep the WAL down; the
/// records themselves are in segment files, not in pages.
const PAGE_SIZE: u32 = 4096;

/// Pages of WAL after which the WAL is checkpointed (copied back into the database file,
/// which is then fsynced) and started over; the copying starts in the background at a
/// quarter of it (the kubetrail-wal crate). 64 MiB amortises each checkpoint's fsync over many
/// batches and lets a hot dedup leaf written several times in between be copied once. The
/// cost is up to 64 MiB of WAL on disk (256 MiB if checkpoints fall behind) and a longer
/// (sub-second) WAL recovery after a crash.
const WAL_CHECKPOINT_PAGES: u64 = 16384;

/// When a checkpoint resets the WAL, it is truncated to this size if it grew beyond it (e.g.
/// while a long read held the WAL open), so a burst does not keep its disk space forever.
/// Equal to the autocheckpoint size: the WAL file is then reused in place, never regrown.
const JOURNAL_SIZE_LIMIT_BYTES: i64 = 64 * 1024 * 1024;

/// Page cache of the write connection, in KiB. The dedup b-tree is written at random
/// positions; keeping its inner pages and hot leaves cached avoids re-reading them every batch.
const WRITER_CACHE_KIB: i64 = 4 * 1024;

/// Prepared statements kept per connection: every statement the hot paths use stays cached.
const STATEMENT_CACHE: usize = 32;

/// Bytes of records (decompressed) of one queue collected into a block before it is
/// compressed and written to its segment: a commit's records go into blocks of this size
/// (the last one smaller), and a reader decompresses a whole block to read any of its records.
/// See docs/ARCHITECTURE.md for the measurements behind the size.
pub(crate) const BLOCK_RAW_TARGET: u64 = 256 << 10;
/// The largest decompressed block (its length is a `u32`): a record that would take a block
/// past it starts the next one.
const BLOCK_RAW_MAX: u64 = u32::MAX as u64;
/// Entries whose dedup keys are upserted before their frames are appended (see
/// `Writer::write_batch`).
const DEDUP_CHUNK: usize = 256;
/// At most one warning per this long about a writer checkpoint that keeps failing.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// The longest frame list kept for the next commit.
const MAX_KEPT_FRAMES: usize = 1 << 16;

const UPSERT_DEDUP: &str = "INSERT INTO dedup (scope, key, value, expires_at_ms)
     VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT (scope, key) DO UPDATE
         SET value = excluded.value, expires_at_ms = excluded.expires_at_ms
         WHERE dedup.value IS NOT excluded.value";
const UPDATE_QUEUE: &str = "UPDATE queues
     SET next_seq = ?2, head_pos = ?3, tail_seq = ?4, tail_pos = ?5 WHERE id = ?1";
const UPSERT_CHECKPOINT: &str = "INSERT INTO checkpoints (stream, value, updated_at_ms)
     VALUES (?1, ?2, ?3)
     ON CONFLICT (stream) DO UPDATE
         SET value = excluded.value, updated_at_ms = excluded.updated_at_ms";
const DELETE_CHECKPOINT: &str = "DELETE FROM checkpoints WHERE stream = ?1";
/// The streams starting with a prefix: a range of the primary key (`LIKE` would need its
/// wildcards escaped and could not use the index).
const SELECT_CHECKPOINTS_UNDER: &str = "SELECT stream, value, updated_at_ms FROM checkpoints
     WHERE stream >= ?1 AND (?2 IS NULL OR stream < ?2) ORDER BY stream";
pub(crate) const SELECT_CHECKPOINT: &str =
    "SELECT value, updated_at_ms FROM checkpoints WHERE stream = ?1";

/// One queue's committed bounds: frames `tail_seq..next_seq` at positions `tail_pos..head_pos`
/// of its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct QueueState {
    next_seq: u64,
    head_pos: u64,
    tail_seq: u64,
    tail_pos: u64,
}

impl QueueState {
    fn depth(&self) -> QueueDepth {
        QueueDepth {
            records: self.next_seq.saturating_sub(self.tail_seq),
            bytes: self.head_pos.saturating_sub(self.tail_pos),
        }
    }
}

/// A queue as a transaction that has not committed yet changes it.
#[derive(Debug)]
struct PendingQueue {
    id: QueueId,
    state: QueueState,
    /// Whether this commit appended (the segment was prepared for it).
    began: bool,
    /// Records not yet written to the segment, as `(seq, index of the batch entry)`, and
    /// their bytes in a block before compression. Their block goes at `state.head_pos`.
    frames: Vec<(u64, usize)>,
    frames_bytes: u64,
}

/// A queue's on-disk log: the appender (the segment being written) and a reader for walks.
#[derive(Debug)]
struct QueueFiles {
    appender: Appender,
    segments: Segments,
}

/// A closed [`Store`], ready to be opened again (see [`Store::close_for_reopen`]).
#[derive(Debug, Clone)]
pub struct Reopen {
    path: PathBuf,
    opts: StoreOptions,
    hints: Arc<Hints>,
    recent: Arc<Recent>,
}

impl Reopen {
    /// Opens the database again, as [`Store::open`] does.
    pub fn open(&self) -> Result<Store, StateError> {
        let mut store = Store::open(&self.path, &self.opts)?;
        store.hints = self.hints.clone();
        // The readers made before keep looking here; what the closed store committed is read
        // from the segments.
        self.recent.clear();
        store.recent = self.recent.clone();
        Ok(store)
    }
}

/// The state database, write side. Owned by one writer thread; `Send` but not `Sync`.
pub struct Store {
    // Field order matters: fields drop in declaration order, so the checkpoint thread has
    // stopped before the connection closes (SQLite's final checkpoint on close is then the
    // writer's), the connection (whose WAL hook points into `wal`) is gone before `wal`, and
    // all of it before the lock file is released.
    _checkpointer: Checkpointer,
    conn: Connection,
    wal: Arc<WalShared>,
    path: PathBuf,
    root: PathBuf,
    /// As opened (`segment_bytes` at least 1).
    opts: StoreOptions,
    queues: HashMap<QueueId, QueueState>,
    files: HashMap<QueueId, QueueFiles>,
    names: HashMap<String, QueueId>,
    hints: Arc<Hints>,
    /// The newest committed blocks, for the readers (recent.rs).
    recent: Arc<Recent>,
    /// The blocks the commit under way wrote, handed to `recent` once it is durable.
    fresh: Vec<RecentBlock>,
    scratch: Vec<u8>,
    /// A block's records before and after compression, kept from one commit to the next.
    blocks: BlockBufs,
    /// Frame lists kept from one commit to the next.
    frame_lists: Vec<Vec<(u64, usize)>>,
    /// When a failed writer checkpoint was last warned about.
    checkpoint_warned: Option<Instant>,
    /// The disk space kept for a full disk.
    reserve: Reserve,
    /// The disk is full: every byte that can be given back is (no spare segments, drained
    /// segments deleted, the WAL checkpointed after each commit).
    tight: bool,
    _lock: File,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("queues", &self.names)
            .finish_non_exhaustive()
    }
}

/// Maps a SQLite error met while opening or configuring a connection to `path` to
/// [`StateError::Open`], naming the step.
pub(crate) fn open_error(
    path: &Path,
    what: &'static str,
) -> impl FnOnce(rusqlite::Error) -> StateError {
    move |source| StateError::Open {
        path: path.to_path_buf(),
        what,
        source,
    }
}

/// An error of opening `path` that says the file is damaged or not a database, made
/// [`StateError::Damaged`]; other errors as they are.
fn damaged(path: &Path, e: StateError) -> StateError {
    let source = match &e {
        StateError::Open { source, .. }
        | StateError::Migration { source, .. }
        | StateError::Sqlite { source, .. } => source,
        _ => return e,
    };
    match source {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt
            ) =>
        {
            StateError::Damaged {
                path: path.to_path_buf(),
                detail: source.to_string(),
            }
        }
        _ => e,
    }
}

/// Opens a connection to `path` with `flags` (each connection is used by one thread at a
/// time: no SQLite mutex) and `busy_timeout`. `what` names the opening in errors.
pub(crate) fn connect(
    path: &Path,
    flags: OpenFlags,
    busy_timeout: Duration,
    what: &'static str,
) -> Result<Connection, StateError> {
    let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(open_error(path, what))?;
    conn.busy_timeout(busy_timeout)
        .map_err(open_error(path, "set busy_timeout"))?;
    Ok(conn)
}

/// Runs a PRAGMA and discards whatever rows it returns.
pub(crate) fn pragma(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(sql)?;
    let mut rows = stmt.query([])?;
    while rows.next()?.is_some() {}
    Ok(())
}

/// Milliseconds since the Unix epoch; 0 if the clock is before 1970.
fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn to_u64(value: i64, what: &str) -> Result<u64, StateError> {
    u64::try_from(value).map_err(|_| StateError::Corrupt {
        what: format!("{what} is negative ({value})"),
    })
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Store {
    /// Opens or creates the database at `path` (its directory must exist), locking
    /// `path` + ".lock" first so that a second process fails at once with
    /// [`StateError::Locked`]. Enables WAL, applies `opts.sync`, migrates the schema, loads
    /// the queues' bounds and cuts their segment files back to what was committed.
    pub fn open(path: &Path, opts: &StoreOptions) -> Result<Store, StateError> {
        Store::open_checked(path, opts).map_err(|e| damaged(path, e))
    }

    fn open_checked(path: &Path, opts: &StoreOptions) -> Result<Store, StateError> {
        let lock = lock::acquire(path)?;
        let open_err = |what| open_error(path, what);
        // Nothing is written when the database exists: a full disk is exactly when a store
        // is opened again after a failed commit.
        let fresh = std::fs::metadata(path).map_or(true, |m| m.len() == 0);
        let mut conn = connect(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
            opts.busy_timeout,
            "open",
        )?;
        // page_size and auto_vacuum only take effect before the first table exists (setting
        // them on an existing database writes to it). Incremental auto-vacuum lets
        // `reclaim_space` return the space of purged dedup keys to the file system.
        if fresh {
            pragma(&conn, &format!("PRAGMA page_size = {PAGE_SIZE}"))
                .map_err(open_err("page_size"))?;
            pragma(&conn, "PRAGMA auto_vacuum = INCREMENTAL").map_err(open_err("auto_vacuum"))?;
        } else {
            // A damaged file (truncated, overwritten) is found now, with a message that says
            // what to do, rather than by a later commit that could never succeed.
            let check: String = conn
                .query_row("PRAGMA quick_check(1)", [], |row| row.get(0))
                .map_err(open_err("quick_check"))?;
            if check != "ok" {
                return Err(StateError::Damaged {
                    path: path.to_path_buf(),
                    detail: check,
                });
            }
        }
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(open_err("journal_mode"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StateError::NotWal {
                path: path.to_path_buf(),
                mode,
            });
        }
        let sync = match opts.sync {
            SyncMode::Full => "FULL",
            SyncMode::Normal => "NORMAL",
        };
        pragma(&conn, &format!("PRAGMA synchronous = {sync}")).map_err(open_err("synchronous"))?;
        pragma(&conn, "PRAGMA foreign_keys = OFF").map_err(open_err("foreign_keys"))?;
        pragma(
            &conn,
            &format!("PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT_BYTES}"),
        )
        .map_err(open_err("journal_size_limit"))?;
        pragma(&conn, &format!("PRAGMA cache_size = -{WRITER_CACHE_KIB}"))
            .map_err(open_err("cache_size"))?;
        pragma(&conn, "PRAGMA temp_store = MEMORY").map_err(open_err("temp_store"))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);

        let found = schema::migrate(&mut conn, path)?;
        // From here on the WAL hook follows the WAL's length and the automatic checkpoint is
        // off; checkpoints are the background thread's and `after_write`'s.
        let wal = Arc::new(WalShared::default());
        kubetrail_wal::install_hook(&conn, &wal);
        let ckpt_conn = connect(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE,
            opts.busy_timeout,
            "open the checkpoint connection",
        )?;
        let checkpointer = Checkpointer::start(ckpt_conn, sync, "state", wal.clone())
            .map_err(|source| StateError::Checkpointer { source })?;
        let root = queues_root(path);
        std::fs::create_dir_all(&root).map_err(|source| LogError::Io {
            path: root.clone(),
            what: "create the queues directory",
            source,
        })?;
        let mut store = Store {
            _checkpointer: checkpointer,
            conn,
            wal,
            path: path.to_path_buf(),
            root,
            opts: StoreOptions {
                segment_bytes: opts.segment_bytes.max(1),
                ..opts.clone()
            },
            queues: HashMap::new(),
            files: HashMap::new(),
            names: HashMap::new(),
            hints: Arc::new(Hints::default()),
            recent: Arc::new(Recent::default()),
            fresh: Vec::new(),
            scratch: Vec::new(),
            blocks: BlockBufs {
                raw: Vec::new(),
                packed: Vec::new(),
                compress: opts.compress,
            },
            frame_lists: Vec::new(),
            checkpoint_warned: None,
            reserve: Reserve::open(path, opts.reserve_bytes),
            tight: false,
            _lock: lock,
        };
        store.load_queues()?;
        tracing::debug!(
            path = %path.display(),
            schema_version = schema::SCHEMA_VERSION,
            previous_schema_version = found,
            queues = store.names.len(),
            "state database opened"
        );
        Ok(store)
    }

    /// Reads the queues' bounds into memory and opens their logs (cutting uncommitted bytes).
    /// Queues written by schema version 1 (records in the `queue_items` table) are moved into
    /// segment files first.
    fn load_queues(&mut self) -> Result<(), StateError> {
        type Row = (i64, String, i64, i64, i64, i64);
        let mut rows: Vec<Row> = Vec::new();
        {
            let mut stmt = self
                .conn
                .prepare(
                    "SELECT id, name, next_seq, tail_seq, tail_pos, head_pos
                     FROM queues ORDER BY id",
                )
                .map_err(sql("load queues"))?;
            let mut it = stmt.query([]).map_err(sql("load queues"))?;
            while let Some(row) = it.next().map_err(sql("load queues"))? {
                let get = |i| row.get::<_, i64>(i).map_err(sql("load queues"));
                rows.push((
                    get(0)?,
                    row.get(1).map_err(sql("load queues"))?,
                    get(2)?,
                    get(3)?,
                    get(4)?,
                    get(5)?,
                ));
            }
        }
        self.remove_stray_queue_dirs(rows.iter().map(|r| r.0));
        for (raw_id, name, next_seq, tail_seq, tail_pos, head_pos) in rows {
            let id = u32::try_from(raw_id)
                .ok()
                .filter(|id| (1..=MAX_QUEUE_ID).contains(id))
                .map(QueueId)
                .ok_or_else(|| StateError::Corrupt {
                    what: format!("queue {name:?} has id {raw_id}"),
                })?;
            let state = if tail_seq == 0 {
                self.convert_legacy_queue(id, &name, to_u64(next_seq, "queues.next_seq")?.max(1))?
            } else {
                QueueState {
                    next_seq: to_u64(next_seq, "queues.next_seq")?,
                    head_pos: to_u64(head_pos, "queues.head_pos")?,
                    tail_seq: to_u64(tail_seq, "queues.tail_seq")?,
                    tail_pos: to_u64(tail_pos, "queues.tail_pos")?,
                }
            };
            if state.tail_seq > state.next_seq || state.tail_pos > state.head_pos {
                return Err(StateError::Corrupt {
                    what: format!("queue {name:?} has its tail past its head: {state:?}"),
                });
            }
            let dir = queue_dir(&self.root, id);
            let appender = Appender::open(
                dir.clone(),
                state.tail_pos,
                state.head_pos,
                self.opts.segment_bytes,
                self.opts.faults.clone(),
            )?;
            let mut segments = Segments::new(dir);
            segments.set_starts(appender.starts());
            self.files.insert(id, QueueFiles { appender, segments });
            self.queues.insert(id, state);
            self.names.insert(name, id);
        }
        Ok(())
    }

    /// Removes the directories `q<id>` of queues the database does not have (deleted by
    /// [`Store::delete_queue`] just before a crash). Failures are logged: they only waste
    /// space.
    fn remove_stray_queue_dirs(&self, ids: impl Iterator<Item = i64>) {
        let known: std::collections::HashSet<i64> = ids.collect();
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_prefix('q'))
                .and_then(|n| n.parse::<i64>().ok())
            else {
                continue;
            };
            if !known.contains(&id) {
                let dir = entry.path();
                match std::fs::remove_dir_all(&dir) {
                    Ok(()) => {
                        tracing::info!(dir = %dir.display(), "removed the directory of a deleted queue")
                    }
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the directory of a deleted queue")
                    }
                }
            }
        }
    }

    /// Moves a schema-1 queue's rows (`queue_items`, keyed `queue << 48 | seq`) into its
    /// segment file, in one transaction that records the new bounds and empties the rows.
    fn convert_legacy_queue(
        &mut self,
        id: QueueId,
        name: &str,
        next_seq: u64,
    ) -> Result<QueueState, StateError> {
        let dir = queue_dir(&self.root, id);
        // Whatever a crashed earlier conversion left is garbage: nothing was committed.
        let _ = std::fs::remove_dir_all(&dir);
        let mut appender =
            Appender::open(dir, 0, 0, self.opts.segment_bytes, self.opts.faults.clone())?;
        let lo = i64::from(id.0) << 48;
        let hi = lo | (MAX_SEQ as i64);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("convert queue: begin"))?;
        let mut first = None;
        let mut seq_end = next_seq;
        let mut head = 0u64;
        let bufs = &mut self.blocks;
        bufs.raw.clear();
        let mut block_first = 0;
        let mut block_count = 0u32;
        {
            let mut stmt = tx
                .prepare("SELECT k, id, data FROM queue_items WHERE k > ?1 AND k <= ?2 ORDER BY k")
                .map_err(sql("convert queue: read rows"))?;
            let mut it = stmt
                .query(params![lo, hi])
                .map_err(sql("convert queue: read rows"))?;
            while let Some(row) = it.next().map_err(sql("convert queue: read rows"))? {
                let k: i64 = row.get(0).map_err(sql("convert queue: read rows"))?;
                let rid: String = row.get(1).map_err(sql("convert queue: read rows"))?;
                let data: Vec<u8> = row.get(2).map_err(sql("convert queue: read rows"))?;
                let seq = (k as u64) & MAX_SEQ;
                if first.is_some() && seq != seq_end {
                    return Err(StateError::Corrupt {
                        what: format!("queue {name:?} has a hole before seq {seq}"),
                    });
                }
                if first.is_none() {
                    appender.begin(0)?;
                }
                first.get_or_insert(seq);
                if block_count == 0 {
                    block_first = seq;
                }
                format::push_record(&mut bufs.raw, rid.as_bytes(), &data);
                block_count += 1;
                seq_end = seq + 1;
                if bufs.raw.len() as u64 >= BLOCK_RAW_TARGET {
                    head += bufs.write(&mut appender, head, block_first, block_count)?;
                    bufs.next_block();
                    block_count = 0;
                }
            }
        }
        if block_count > 0 {
            head += bufs.write(&mut appender, head, block_first, block_count)?;
            bufs.next_block();
        }
        let tail_seq = first.unwrap_or(next_seq);
        let state = QueueState {
            next_seq: seq_end.max(next_seq),
            head_pos: head,
            tail_seq,
            tail_pos: 0,
        };
        if first.is_some() {
            appender.sync()?;
        }
        tx.execute(
            UPDATE_QUEUE,
            params![
                id.0,
                to_i64(state.next_seq),
                to_i64(state.head_pos),
                to_i64(state.tail_seq),
                0
            ],
        )
        .map_err(sql("convert queue: store bounds"))?;
        tx.execute(
            "DELETE FROM queue_items WHERE k > ?1 AND k <= ?2",
            params![lo, hi],
        )
        .map_err(sql("convert queue: delete rows"))?;
        tx.commit().map_err(sql("convert queue: commit"))?;
        tracing::info!(queue = %name, records = state.depth().records, "queue moved from the database into segment files");
        Ok(state)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A read-only handle for queue readers and checkpoint lookups on other threads. With
    /// WAL, readers never block the writer and see only committed transactions.
    pub fn reader(&self) -> Result<Reader, StateError> {
        Reader::open(
            &self.path,
            self.root.clone(),
            self.hints.clone(),
            self.recent.clone(),
            self.opts.busy_timeout,
        )
    }

    /// The committed checkpoint of `stream`, if any.
    pub fn checkpoint(&self, stream: &str) -> Result<Option<Checkpoint>, StateError> {
        read_checkpoint(&self.conn, stream)
    }

    /// Every committed checkpoint whose stream name starts with `prefix`, by name.
    pub fn checkpoints_under(&self, prefix: &str) -> Result<Vec<(String, Checkpoint)>, StateError> {
        let end = prefix_end(prefix);
        let mut stmt = self
            .conn
            .prepare_cached(SELECT_CHECKPOINTS_UNDER)
            .map_err(sql("prepare checkpoint listing"))?;
        let rows = stmt
            .query_map(params![prefix, end], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    Checkpoint {
                        value: row.get(1)?,
                        updated_at_unix_ms: row.get(2)?,
                    },
                ))
            })
            .map_err(sql("list checkpoints"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(sql("list checkpoints"))
    }

    /// Closes the store (its connection, files and lock) and returns what opens it again:
    /// after a commit error whose outcome is unknown (see [`Store::commit_at`]), the
    /// in-memory bounds may be behind what SQLite holds, and only opening again re-reads
    /// them (and cuts the segments back to the committed heads). Readers made from this
    /// store keep working; their position hints carry over.
    pub fn close_for_reopen(self) -> Reopen {
        Reopen {
            path: self.path.clone(),
            opts: self.opts.clone(),
            hints: self.hints.clone(),
            recent: self.recent.clone(),
        }
    }

    /// The newest committed blocks kept for the readers.
    #[cfg(test)]
    pub(crate) fn recent(&self) -> &Recent {
        &self.recent
    }

    /// Keeps the newest committed blocks within other bounds (before any reader is made).
    #[cfg(test)]
    pub(crate) fn set_recent(&mut self, recent: Recent) {
        self.recent = Arc::new(recent);
    }

    /// The id of the queue called `name` (one per output), created empty if it does not exist.
    pub fn queue_id(&mut self, name: &str) -> Result<QueueId, StateError> {
        if let Some(id) = self.names.get(name) {
            return Ok(*id);
        }
        let next: i64 = self
            .conn
            .query_row("SELECT coalesce(max(id), 0) + 1 FROM queues", [], |row| {
                row.get(0)
            })
            .map_err(sql("allocate queue id"))?;
        let id = u32::try_from(next)
            .ok()
            .filter(|id| *id <= MAX_QUEUE_ID)
            .map(QueueId)
            .ok_or_else(|| StateError::TooManyQueues {
                name: name.to_owned(),
                max: MAX_QUEUE_ID,
            })?;
        let dir = queue_dir(&self.root, id);
        // A directory left by a queue created in a transaction that never committed.
        let _ = std::fs::remove_dir_all(&dir);
        let appender = Appender::open(
            dir.clone(),
            0,
            0,
            self.opts.segment_bytes,
            self.opts.faults.clone(),
        )?;
        sync_dir(&self.root).map_err(|source| LogError::Io {
            path: self.root.clone(),
            what: "fsync the queues directory",
            source,
        })?;
        self.conn
            .execute(
                "INSERT INTO queues (id, name, next_seq, tail_seq, tail_pos, head_pos)
                 VALUES (?1, ?2, 1, 1, 0, 0)",
                params![next, name],
            )
            .map_err(sql("create queue"))?;
        self.queues.insert(
            id,
            QueueState {
                next_seq: 1,
                head_pos: 0,
                tail_seq: 1,
                tail_pos: 0,
            },
        );
        self.files.insert(
            id,
            QueueFiles {
                appender,
                segments: Segments::new(dir),
            },
        );
        self.names.insert(name.to_owned(), id);
        // A deleted queue's id can come back, with its log positions starting over.
        self.recent.forget_queue(id);
        tracing::info!(queue = %name, id = id.0, "state queue created");
        Ok(id)
    }

    /// Deletes the queue called `name` with every record still in it (its segment files),
    /// and the checkpoint streams `forget` in the same transaction (e.g. its output's state).
    /// For the queues of outputs removed from the configuration. Returns the records that
    /// were still queued, or `None` when there is no such queue. The directory goes after the
    /// commit; one left by a crash in between is removed by the next open.
    pub fn delete_queue(&mut self, name: &str, forget: &[&str]) -> Result<Option<u64>, StateError> {
        let Some(id) = self.names.get(name).copied() else {
            return Ok(None);
        };
        let records = self.queue_depth(id).records;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("delete queue: begin"))?;
        tx.execute("DELETE FROM queues WHERE id = ?1", [id.0])
            .map_err(sql("delete queue"))?;
        for stream in forget {
            tx.execute(DELETE_CHECKPOINT, [stream])
                .map_err(sql("delete queue: delete checkpoint"))?;
        }
        tx.commit().map_err(sql("delete queue: commit"))?;
        self.names.remove(name);
        self.queues.remove(&id);
        self.files.remove(&id);
        self.recent.forget_queue(id);
        let dir = queue_dir(&self.root, id);
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a deleted queue's directory; the next start will");
        } else if let Err(e) = sync_dir(&self.root) {
            tracing::warn!(dir = %self.root.display(), error = %e, "cannot fsync the queues directory");
        }
        self.after_write();
        Ok(Some(records))
    }

    /// All queues, ordered by id.
    pub fn queues(&self) -> Vec<(String, QueueId)> {
        let mut all: Vec<_> = self
            .names
            .iter()
            .map(|(name, id)| (name.clone(), *id))
            .collect();
        all.sort_by_key(|(_, id)| *id);
        all
    }

    /// Commits `batch` in one transaction, with `updated_at` = now. See [`Store::commit_at`].
    pub fn commit(&mut self, batch: &CommitBatch) -> Result<CommitOutcome, StateError> {
        self.commit_at(batch, now_unix_ms())
    }

    /// Commits `batch` in one IMMEDIATE transaction, stamping checkpoints with `now_unix_ms`:
    ///
    /// 1. trims drop their queue's oldest records until enough bytes are free;
    /// 2. each entry in order: if its dedup `(scope, key)` is stored with the same value it is
    ///    a duplicate and skipped; otherwise the key is upserted (so later entries of the same
    ///    batch see it) and the record is appended to each of its queues' logs with the next
    ///    sequence number (never reused);
    /// 3. checkpoints are upserted;
    /// 4. acks move their queue's tail past `up_to_seq` and upsert their state row;
    /// 5. the appended frames are made durable (fsync, in [`SyncMode::Full`]), then the
    ///    queues' new bounds are stored and the transaction commits.
    ///
    /// On any error the whole transaction is rolled back, appended bytes are cut off (unless
    /// the error came from the commit itself) and the in-memory bounds are left untouched;
    /// they change only after the commit succeeded. One caveat, inherent to any database: if
    /// the error came from the final write or fsync of the WAL, the batch may still turn out
    /// durable after a restart (entirely, never in part), so its appended blocks are kept
    /// (opening the store cuts them off if it did not commit). A writer that sees a commit error for which [`StateError::outcome_known`] is
    /// false must therefore not go on with this `Store` (its bounds may be stale, and the next
    /// commit would write over the records of that batch) but reopen the database
    /// ([`Store::close_for_reopen`]) and let the sources resume from the stored checkpoints,
    /// where the dedup keys make the replay harmless.
    pub fn commit_at(
        &mut self,
        batch: &CommitBatch,
        now_unix_ms: i64,
    ) -> Result<CommitOutcome, StateError> {
        let mut outcome = CommitOutcome {
            inserted: Vec::with_capacity(batch.entries.len()),
            duplicates: 0,
            trimmed: Vec::with_capacity(batch.trims.len()),
        };
        if batch.is_empty() {
            return Ok(outcome);
        }
        // A batch touches few queues; a small vector beats a map here.
        let mut pending: Vec<PendingQueue> = Vec::new();
        let Store {
            conn,
            queues,
            files,
            hints,
            recent,
            fresh,
            scratch,
            blocks,
            opts,
            frame_lists,
            tight,
            ..
        } = self;
        fresh.clear();
        let keep_blocks = recent.enabled();
        // Set once the transaction is told to commit: from then on a failure leaves the
        // outcome unknown (the WAL may hold the commit after all), and the appended blocks
        // must stay where they are for the reopen to find them if it did commit.
        let mut committing = false;
        let result = (|| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql("commit: begin"))?;
            let mut w = Writer {
                tx: &tx,
                queues,
                files,
                hints,
                scratch,
                blocks,
                frame_lists,
                pending: &mut pending,
                fresh: keep_blocks.then_some(&mut *fresh),
            };
            // On error `tx` is dropped, which rolls the transaction back.
            w.write_batch(batch, now_unix_ms, &mut outcome)?;
            w.finish(opts.sync == SyncMode::Full)?;
            committing = true;
            if opts.faults.hit(FaultSite::CommitBefore) {
                // Dropping `tx` rolls it back.
                return Err(sql("commit")(fault::injected_sqlite()));
            }
            tx.commit().map_err(sql("commit"))?;
            if opts.faults.hit(FaultSite::CommitAfter) {
                return Err(sql("commit")(fault::injected_sqlite()));
            }
            Ok(())
        })();
        if let Err(e) = result {
            for p in &pending {
                if !committing
                    && p.began
                    && let Some(f) = files.get_mut(&p.id)
                    && let Some(committed) = queues.get(&p.id)
                {
                    f.appender.rollback(committed.head_pos);
                }
            }
            keep_frame_lists(frame_lists, pending.into_iter().map(|p| p.frames));
            // Its blocks were cut back, or may have been: none goes to the readers.
            fresh.clear();
            return Err(e);
        }
        // Durable: the readers may take its blocks from memory.
        recent.publish(fresh.drain(..));
        let mut lists = Vec::with_capacity(pending.len());
        let tight = *tight;
        for p in pending {
            lists.push(p.frames);
            if let Some(state) = queues.get_mut(&p.id) {
                let moved = p.state.tail_pos != state.tail_pos;
                *state = p.state;
                if moved && let Some(f) = files.get_mut(&p.id) {
                    // Trimmed segments may still be under an output's reader: deleted, not
                    // recycled. On a full disk nothing is kept.
                    let trimmed = batch.trims.iter().any(|t| t.queue == p.id);
                    f.appender
                        .release_before(state.tail_pos, !trimmed && !tight);
                    if tight {
                        f.appender.give_back(state.tail_pos, state.head_pos);
                    }
                    f.segments.set_starts(f.appender.starts());
                }
            }
        }
        keep_frame_lists(frame_lists, lists);
        self.after_write();
        Ok(outcome)
    }

    /// Deletes the disk space reserve (reserve.rs), for a full disk: acknowledgements can then
    /// commit. Returns the bytes given back.
    pub fn release_reserve(&mut self) -> u64 {
        self.reserve.release()
    }

    /// Makes the disk space reserve again if twice its size is free; returns whether it is
    /// held.
    pub fn restore_reserve(&mut self) -> bool {
        self.reserve.restore()
    }

    /// Whether the disk space reserve is held.
    pub fn reserve_held(&self) -> bool {
        self.reserve.held()
    }

    /// While the disk is full (`tight`): no drained segment is kept as a spare, the segments of
    /// drained queues are deleted, and the WAL is checkpointed after every commit so that it
    /// starts over instead of growing. Turning it on gives back what can be given now.
    pub fn set_tight(&mut self, tight: bool) {
        self.tight = tight;
        if tight {
            for (q, f) in self.files.iter_mut() {
                if let Some(st) = self.queues.get(q) {
                    f.appender.give_back(st.tail_pos, st.head_pos);
                    f.segments.set_starts(f.appender.starts());
                }
            }
            self.after_write();
        }
    }

    /// After a write transaction: wakes the background checkpointer, or checkpoints the rest
    /// of the WAL on this connection so the next transaction starts it over (see
    /// the kubetrail-wal crate). A failed checkpoint fails nothing (the commit is durable in the
    /// WAL); it is logged and tried again after a later commit.
    fn after_write(&mut self) {
        let step = match self.wal.step(self.opts.wal_checkpoint_pages) {
            // On a full disk the WAL must not grow: copied back after every commit, it starts
            // over at the next one.
            Step::None | Step::Background if self.tight => Step::Finish,
            step => step,
        };
        match step {
            Step::None => {}
            Step::Background => self.wal.wake_background(),
            step @ (Step::Finish | Step::Force) => {
                let frames = self.wal.frames();
                // At the hard limit: FULL, waiting (up to the busy timeout) for a running
                // background checkpoint and for readers of older snapshots.
                let (mode, wait) = if step == Step::Force {
                    (Mode::Full, Some(self.opts.busy_timeout))
                } else {
                    (Mode::Passive, None)
                };
                match self.wal.writer_checkpoint(&self.conn, mode, wait) {
                    Ok(done) => {
                        tracing::debug!(frames, ?mode, ?done, "WAL checkpointed by the writer")
                    }
                    // Tried again after every commit while it fails: warned once a minute.
                    Err(e)
                        if self
                            .checkpoint_warned
                            .is_none_or(|t| t.elapsed() >= WARN_EVERY) =>
                    {
                        self.checkpoint_warned = Some(Instant::now());
                        tracing::warn!(error = %e, frames, "WAL checkpoint failed; trying again after each commit")
                    }
                    Err(e) => tracing::debug!(error = %e, frames, "WAL checkpoint failed again"),
                }
            }
        }
    }
}

/// The buffers a block is made in: its records before compression and the compressed block.
#[derive(Debug)]
struct BlockBufs {
    raw: Vec<u8>,
    packed: Vec<u8>,
    /// `StoreOptions::compress`.
    compress: bool,
}

impl BlockBufs {
    /// Seals the records in `raw` (numbered `first_seq` on, `count` of them) into a block and
    /// writes it at log position `pos` of the appender's current segment; returns its length.
    fn write(
        &mut self,
        appender: &mut Appender,
        pos: u64,
        first_seq: u64,
        count: u32,
    ) -> Result<u64, StateError> {
        let (h, payload) =
            format::seal_block_as(first_seq, count, &self.raw, &mut self.packed, self.compress);
        let header = h.encode();
        appender.write_vectored_at(pos, &mut [IoSlice::new(&header), IoSlice::new(payload)])?;
        // A huge record's buffer is not kept.
        if self.packed.capacity() as u64 > 4 * BLOCK_RAW_TARGET {
            self.packed = Vec::new();
        }
        Ok(h.total())
    }

    /// The records of the block just written, taken out of `raw` (for the readers), which is
    /// left empty for the next block.
    fn take_raw(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.raw)
    }

    /// Empties `raw` for the next block (the one written holds its records); a buffer a huge
    /// record grew is not kept.
    fn next_block(&mut self) {
        if self.raw.capacity() as u64 > 4 * BLOCK_RAW_TARGET {
            self.raw = Vec::new();
        } else {
            self.raw.clear();
        }
    }
}

/// Keeps a commit's frame lists for the next one: emptied, at most a few, and none that a
/// batch of tiny records grew far past the usual size.
fn keep_frame_lists(
    pool: &mut Vec<Vec<(u64, usize)>>,
    bufs: impl IntoIterator<Item = Vec<(u64, usize)>>,
) {
    for mut b in bufs {
        if pool.len() < 4 && b.capacity() <= MAX_KEPT_FRAMES {
            b.clear();
            pool.push(b);
        }
    }
}

/// The body of one commit transaction.
struct Writer<'a, 't> {
    tx: &'a Transaction<'t>,
    queues: &'a HashMap<QueueId, QueueState>,
    files: &'a mut HashMap<QueueId, QueueFiles>,
    hints: &'a Hints,
    scratch: &'a mut Vec<u8>,
    blocks: &'a mut BlockBufs,
    frame_lists: &'a mut Vec<Vec<(u64, usize)>>,
    /// The queues this transaction changes, with their new bounds.
    pending: &'a mut Vec<PendingQueue>,
    /// Where the blocks written go with their records, for the readers once the commit is
    /// durable (`None`: not kept).
    fresh: Option<&'a mut Vec<RecentBlock>>,
}

impl Writer<'_, '_> {
    fn pending_for(&mut self, q: QueueId) -> Result<usize, StateError> {
        if let Some(i) = self.pending.iter().position(|p| p.id == q) {
            return Ok(i);
        }
        let state = *self
            .queues
            .get(&q)
            .ok_or(StateError::UnknownQueue { queue: q })?;
        self.pending.push(PendingQueue {
            id: q,
            state,
            began: false,
            frames: self.frame_lists.pop().unwrap_or_default(),
            frames_bytes: 0,
        });
        Ok(self.pending.len() - 1)
    }

    fn files(&mut self, q: QueueId) -> Result<&mut QueueFiles, StateError> {
        self.files
            .get_mut(&q)
            .ok_or(StateError::UnknownQueue { queue: q })
    }

    /// Writes queue `i`'s pending records to its segment as one block, and moves its head
    /// past it.
    fn flush(&mut self, i: usize, entries: &[Entry]) -> Result<(), StateError> {
        let q = self.pending[i].id;
        let frames = std::mem::take(&mut self.pending[i].frames);
        let Some(&(first_seq, _)) = frames.first() else {
            self.pending[i].frames = frames;
            return Ok(());
        };
        let head = self.pending[i].state.head_pos;
        let bufs = &mut *self.blocks;
        bufs.raw.clear();
        if self.fresh.is_some() {
            // The records go to the readers in this buffer: sized exactly, as they keep it.
            bufs.raw = Vec::with_capacity(self.pending[i].frames_bytes as usize);
        }
        for &(_, e) in &frames {
            let entry = &entries[e];
            format::push_record(&mut bufs.raw, entry.id.as_bytes(), &entry.data);
        }
        let appender = &mut self
            .files
            .get_mut(&q)
            .ok_or(StateError::UnknownQueue { queue: q })?
            .appender;
        let written = bufs.write(appender, head, first_seq, frames.len() as u32)?;
        if let Some(fresh) = self.fresh.as_deref_mut() {
            fresh.push(RecentBlock {
                queue: q,
                pos: head,
                len: written,
                first_seq,
                count: frames.len() as u64,
                raw: Bytes::from(bufs.take_raw()),
            });
        } else {
            bufs.next_block();
        }
        let p = &mut self.pending[i];
        p.state.head_pos = head + written;
        p.frames_bytes = 0;
        p.frames = frames;
        p.frames.clear();
        Ok(())
    }

    fn write_batch(
        &mut self,
        batch: &CommitBatch,
        now_unix_ms: i64,
        outcome: &mut CommitOutcome,
    ) -> Result<(), StateError> {
        for trim in &batch.trims {
            let i = self.pending_for(trim.queue)?;
            let st = self.pending[i].state;
            let (mut records, mut bytes) = (0u64, 0u64);
            let free = trim.free_bytes;
            let scratch = &mut *self.scratch;
            let f = self
                .files
                .get_mut(&trim.queue)
                .ok_or(StateError::UnknownQueue { queue: trim.queue })?;
            f.segments.set_starts(f.appender.starts());
            // Whole units go: a block is on disk until every record in it is gone.
            let (seq, pos) = f.segments.walk(
                st.tail_seq,
                st.tail_pos,
                st.next_seq,
                LogEnd {
                    next_seq: st.next_seq,
                    head: st.head_pos,
                },
                scratch,
                |u| {
                    if bytes >= free {
                        return false;
                    }
                    records += u.end_seq() - u.first_seq.max(st.tail_seq);
                    bytes += u.len;
                    true
                },
            )?;
            let p = &mut self.pending[i];
            p.state.tail_seq = seq;
            p.state.tail_pos = pos;
            outcome.trimmed.push((records, bytes));
        }

        if !batch.entries.is_empty() {
            let mut dedup = self
                .tx
                .prepare_cached(UPSERT_DEDUP)
                .map_err(sql("commit: prepare dedup upsert"))?;
            // The entries go in chunks: a chunk's keys are upserted, then its fresh entries
            // appended (their frames written once a megabyte is pending, and the disk told to
            // start on them), so the disk writes one chunk while the next one's keys are
            // upserted and the final fsync finds little left to do. Within a chunk the keys
            // are upserted in key order (the b-tree is then walked leaf after leaf instead of
            // at random: audit IDs are random); the order is stable, so entries with one key
            // still see each other in batch order, as when upserted one after the other.
            fn key(d: &Option<Dedup>) -> Option<(&str, &str)> {
                d.as_ref().map(|d| (&*d.scope, d.key.as_str()))
            }
            let n = batch.entries.len();
            let mut fresh_keys = vec![true; n];
            let mut order: Vec<usize> = Vec::with_capacity(n.min(DEDUP_CHUNK));
            for first in (0..n).step_by(DEDUP_CHUNK) {
                let chunk = first..(first + DEDUP_CHUNK).min(n);
                order.clear();
                order.extend(chunk.clone().filter(|&e| batch.entries[e].dedup.is_some()));
                order.sort_by(|&a, &b| {
                    key(&batch.entries[a].dedup).cmp(&key(&batch.entries[b].dedup))
                });
                for &e in &order {
                    if let Some(d) = &batch.entries[e].dedup {
                        // The upsert changes nothing (0 rows) exactly when the key is stored
                        // with the same value: one b-tree descent both decides and records it.
                        fresh_keys[e] = dedup
                            .execute(params![&*d.scope, d.key, d.value, d.expires_at_unix_ms])
                            .map_err(sql("commit: upsert dedup key"))?
                            > 0;
                    }
                }
                for e in chunk {
                    let entry = &batch.entries[e];
                    let fresh = fresh_keys[e];
                    outcome.inserted.push(fresh);
                    if !fresh {
                        outcome.duplicates += 1;
                        continue;
                    }
                    let len = format::record_len(entry.id.len(), entry.data.len());
                    if len > BLOCK_RAW_MAX {
                        return Err(StateError::RecordTooLarge {
                            id: entry.id.clone(),
                            bytes: len,
                        });
                    }
                    for &q in entry.queues.iter() {
                        let i = self.pending_for(q)?;
                        if !self.pending[i].began {
                            let head = self.pending[i].state.head_pos;
                            self.files(q)?.appender.begin(head)?;
                            self.pending[i].began = true;
                        }
                        if self.pending[i].frames_bytes + len > BLOCK_RAW_MAX {
                            self.flush(i, &batch.entries)?;
                        }
                        let p = &mut self.pending[i];
                        if p.state.next_seq > MAX_SEQ {
                            return Err(StateError::SeqExhausted { queue: q });
                        }
                        p.frames.push((p.state.next_seq, e));
                        p.frames_bytes += len;
                        p.state.next_seq += 1;
                        if p.frames_bytes >= BLOCK_RAW_TARGET {
                            self.flush(i, &batch.entries)?;
                        }
                    }
                }
            }
            for i in 0..self.pending.len() {
                if !self.pending[i].frames.is_empty() {
                    self.flush(i, &batch.entries)?;
                }
            }
        }

        for (stream, value) in &batch.checkpoints {
            upsert_checkpoint(self.tx, stream, value, now_unix_ms)?;
        }
        if !batch.forget.is_empty() {
            let mut delete = self
                .tx
                .prepare_cached(DELETE_CHECKPOINT)
                .map_err(sql("commit: prepare checkpoint delete"))?;
            for stream in &batch.forget {
                delete
                    .execute([stream])
                    .map_err(sql("commit: delete checkpoint"))?;
            }
        }

        for ack in &batch.acks {
            let i = self.pending_for(ack.queue)?;
            let st = self.pending[i].state;
            let target = ack.up_to_seq.saturating_add(1);
            if target > st.tail_seq {
                let (seq, pos) = if target >= st.next_seq {
                    (st.next_seq, st.head_pos)
                } else {
                    self.position_of(ack.queue, &st, target)?
                };
                let p = &mut self.pending[i];
                p.state.tail_seq = seq;
                p.state.tail_pos = pos;
            }
            if let Some((stream, value)) = &ack.state {
                upsert_checkpoint(self.tx, stream, value, now_unix_ms)?;
            }
        }
        Ok(())
    }

    /// Where the unit holding record `target` (between the tail and the head of `st`) starts:
    /// the position a reader left as a hint, checked against the unit's header, or found by
    /// walking the log.
    fn position_of(
        &mut self,
        q: QueueId,
        st: &QueueState,
        target: u64,
    ) -> Result<(u64, u64), StateError> {
        let hint = self.hints.take(q, target);
        let scratch = &mut *self.scratch;
        let f = self
            .files
            .get_mut(&q)
            .ok_or(StateError::UnknownQueue { queue: q })?;
        f.segments.set_starts(f.appender.starts());
        if let Some(pos) = hint
            && pos >= st.tail_pos
            && let Some(u) = f.segments.unit_at(pos, st.head_pos, scratch)?
            && u.holds(target)
        {
            return Ok((target, pos));
        }
        let reached = f.segments.walk(
            st.tail_seq,
            st.tail_pos,
            target,
            LogEnd {
                next_seq: st.next_seq,
                head: st.head_pos,
            },
            scratch,
            |_| true,
        )?;
        Ok(reached)
    }

    /// Makes the appended frames durable and stores the queues' new bounds.
    fn finish(&mut self, fsync: bool) -> Result<(), StateError> {
        let mut update = self
            .tx
            .prepare_cached(UPDATE_QUEUE)
            .map_err(sql("commit: prepare queue update"))?;
        for p in self.pending.iter() {
            if p.began && fsync {
                self.files
                    .get_mut(&p.id)
                    .ok_or(StateError::UnknownQueue { queue: p.id })?
                    .appender
                    .sync()?;
            }
            let s = &p.state;
            update
                .execute(params![
                    p.id.0,
                    to_i64(s.next_seq),
                    to_i64(s.head_pos),
                    to_i64(s.tail_seq),
                    to_i64(s.tail_pos)
                ])
                .map_err(sql("commit: store queue bounds"))?;
        }
        Ok(())
    }
}

impl Store {
    /// Deletes the dedup keys with `expires_at_unix_ms < now_unix_ms`; returns how many.
    ///
    /// A sequential scan of the dedup table (there is no expiry index, see schema.rs): meant
    /// to be called every few minutes by the writer thread, between batches.
    pub fn purge_expired(&mut self, now_unix_ms: i64) -> Result<u64, StateError> {
        let deleted = self
            .conn
            .prepare_cached("DELETE FROM dedup WHERE expires_at_ms < ?1")
            .map_err(sql("prepare dedup purge"))?
            .execute([now_unix_ms])
            .map_err(sql("purge expired dedup keys"))?;
        if deleted > 0 {
            tracing::debug!(deleted, "expired dedup keys purged");
            self.after_write();
        }
        Ok(deleted as u64)
    }

    /// Records and bytes (frames in the queue's log, see [`crate::frame_len`]) waiting in
    /// queue `q` as of the last successful commit (zero for an unknown queue). Kept in memory,
    /// so cheap enough for every metrics scrape.
    pub fn queue_depth(&self, q: QueueId) -> QueueDepth {
        self.queues.get(&q).map(|s| s.depth()).unwrap_or_default()
    }

    /// The sequence number the next record enqueued into `q` will get.
    pub fn next_seq(&self, q: QueueId) -> Option<u64> {
        self.queues.get(&q).map(|s| s.next_seq)
    }

    /// How many segment files queue `q` has on disk.
    pub fn segment_count(&self, q: QueueId) -> usize {
        self.files
            .get(&q)
            .map(|f| f.appender.segment_count())
            .unwrap_or(0)
    }

    /// How many dedup keys `scope` holds (expired ones included until purged).
    pub fn dedup_len(&self, scope: &str) -> Result<u64, StateError> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM dedup WHERE scope = ?1")
            .map_err(sql("prepare dedup count"))?
            .query_row([scope], |row| row.get(0))
            .map_err(sql("count dedup keys"))?;
        to_u64(n, "dedup count")
    }

    /// Pages of the database file that are free (left by purged keys) and would be given
    /// back to the file system by [`Store::reclaim_space`].
    pub fn free_pages(&self) -> Result<u64, StateError> {
        let n: i64 = self
            .conn
            .query_row("PRAGMA freelist_count", [], |row| row.get(0))
            .map_err(sql("read freelist_count"))?;
        to_u64(n, "freelist_count")
    }

    /// Shrinks the file by up to `max_pages` free pages (4 KiB each). Work is proportional to
    /// `max_pages`; call it with a bounded number between batches. Returns how many pages
    /// were freed.
    pub fn reclaim_space(&mut self, max_pages: u32) -> Result<u64, StateError> {
        let before = self.free_pages()?;
        if before == 0 || max_pages == 0 {
            return Ok(0);
        }
        pragma(
            &self.conn,
            &format!("PRAGMA incremental_vacuum({max_pages})"),
        )
        .map_err(sql("incremental_vacuum"))?;
        self.after_write();
        Ok(before.saturating_sub(self.free_pages()?))
    }
}

fn upsert_checkpoint(
    tx: &Transaction<'_>,
    stream: &str,
    value: &str,
    now_unix_ms: i64,
) -> Result<(), StateError> {
    tx.prepare_cached(UPSERT_CHECKPOINT)
        .map_err(sql("commit: prepare checkpoint upsert"))?
        .execute(params![stream, value, now_unix_ms])
        .map_err(sql("commit: upsert checkpoint"))?;
    Ok(())
}

/// The smallest string greater than every string that starts with `prefix` (SQLite compares
/// text bytewise, as `str` does); `None` when there is none (empty, or all U+10FFFF).
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        // The next scalar value; UTF-8 order is scalar order, and surrogates are skipped.
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(c) = next {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// Reads one checkpoint row through `conn` (the writer's or a reader's).
pub(crate) fn read_checkpoint(
    conn: &Connection,
    stream: &str,
) -> Result<Option<Checkpoint>, StateError> {
    conn.prepare_cached(SELECT_CHECKPOINT)
        .map_err(sql("prepare checkpoint lookup"))?
        .query_row([stream], |row| {
            Ok(Checkpoint {
                value: row.get(0)?,
                updated_at_unix_ms: row.get(1)?,
            })
        })
        .optional()
        .map_err(sql("read checkpoint"))
}

/// Bytes that do not compress, the same for the same seed: tests that count on segment sizes
/// need records whose blocks are as large as the records.
#[cfg(test)]
pub(crate) fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{Ack, Dedup, Entry};
    use crate::queue::QueueItem;

    fn options() -> StoreOptions {
        StoreOptions {
            sync: SyncMode::Normal,
            ..StoreOptions::default()
        }
    }

    fn open(dir: &tempfile::TempDir) -> Store {
        Store::open(&dir.path().join("kubetrail.db"), &options()).expect("open store")
    }

    fn dedup(key: &str, value: &str, expires: i64) -> Option<Dedup> {
        Some(Dedup {
            scope: "s".into(),
            key: key.into(),
            value: value.into(),
            expires_at_unix_ms: expires,
        })
    }

    fn entry(id: &str, dedup: Option<Dedup>, queues: &[QueueId], data: &[u8]) -> Entry {
        Entry {
            dedup,
            queues: queues.into(),
            id: id.into(),
            data: data.to_vec().into(),
        }
    }

    fn entries(entries: Vec<Entry>) -> CommitBatch {
        CommitBatch {
            entries,
            ..CommitBatch::default()
        }
    }

    #[test]
    fn the_wal_is_checkpointed_in_the_background_and_stays_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("kubetrail.db");
        let threshold = 64;
        let mut store = Store::open(
            &db,
            &StoreOptions {
                wal_checkpoint_pages: threshold,
                ..options()
            },
        )
        .expect("open store");
        let q = store.queue_id("out").expect("queue");
        let (mut max_frames, mut restarts, mut last, mut bg_seen) = (0, 0, 0, false);
        let mut n = 0u64;
        for round in 0..400 {
            // Keys scattered over the key space, so each commit dirties many pages.
            let batch = (0..40)
                .map(|_| {
                    n += 1;
                    let k = format!("{:016x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                    entry(&k, dedup(&k, "", i64::MAX), &[q], b"x")
                })
                .collect();
            store.commit(&entries(batch)).expect("commit");
            let frames = store.wal.frames();
            max_frames = max_frames.max(frames);
            if frames < last {
                restarts += 1;
            }
            last = frames;
            bg_seen |= store.wal.background_copied() > 0;
            if round % 50 == 49 {
                // Let the background thread get a turn even on a loaded machine.
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        assert!(restarts >= 3, "the WAL was started over {restarts} times");
        // At most the hard limit plus what one commit adds (40 keys: far fewer pages than
        // the threshold).
        assert!(
            max_frames <= threshold * 4 + threshold,
            "the WAL reached {max_frames} frames"
        );
        assert!(bg_seen, "the background thread never checkpointed");
        let before = all(&store, q).len();
        assert_eq!(before, 400 * 40);
        drop(store);
        let store = Store::open(&db, &options()).expect("reopen");
        assert_eq!(all(&store, q).len(), before);
        assert_eq!(store.dedup_len("s").expect("len"), 400 * 40);
    }

    fn all(store: &Store, q: QueueId) -> Vec<QueueItem> {
        store
            .reader()
            .expect("reader")
            .read_queue(q, 0, usize::MAX, usize::MAX)
            .expect("read queue")
    }

    fn seqs(store: &Store, q: QueueId) -> Vec<u64> {
        all(store, q).iter().map(|i| i.seq).collect()
    }

    /// `compress: false` stores blocks as they are; a queue holding both kinds (the setting
    /// changed between starts) reads back every record from the segments.
    #[test]
    fn blocks_are_stored_uncompressed_when_asked_and_both_kinds_read_back() {
        let record = |i: usize| {
            format!(
                r#"{{"verb":"get","user":{{"username":"alice"}},"n":{i},"pad":"{}"}}"#,
                "x".repeat(900)
            )
        };
        let commit = |store: &mut Store, q: QueueId, from: usize| {
            let batch = (from..from + 200)
                .map(|i| entry(&format!("r{i}"), None, &[q], record(i).as_bytes()))
                .collect();
            store.commit(&entries(batch)).expect("commit");
        };
        let raw: u64 = (0..200).map(|i| record(i).len() as u64).sum();
        let mut depth = Vec::new();
        for compress in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            let db = dir.path().join("kubetrail.db");
            let opts = |compress| StoreOptions {
                compress,
                ..options()
            };
            let mut store = Store::open(&db, &opts(compress)).expect("open store");
            let q = store.queue_id("out").expect("queue");
            commit(&mut store, q, 0);
            depth.push(store.queue_depth(q).bytes);
            // The other setting at the next start: both kinds of blocks in one queue.
            drop(store);
            let mut store = Store::open(&db, &opts(!compress)).expect("reopen");
            commit(&mut store, q, 200);
            drop(store);
            // Read after a reopen: from the segments, not the blocks kept in memory.
            let store = Store::open(&db, &opts(compress)).expect("reopen");
            let got: Vec<(String, Vec<u8>)> = all(&store, q)
                .into_iter()
                .map(|i| (i.id, i.data.to_vec()))
                .collect();
            let want: Vec<(String, Vec<u8>)> = (0..400)
                .map(|i| (format!("r{i}"), record(i).into_bytes()))
                .collect();
            assert_eq!(got, want, "compress {compress} first");
        }
        // Stored: every byte of the records is on disk; compressed: a fraction of them.
        assert!(depth[0] > raw, "stored {} of {raw} bytes", depth[0]);
        assert!(
            depth[1] < raw / 4,
            "compressed to {} of {raw} bytes",
            depth[1]
        );
    }

    #[test]
    fn dedup_holds_across_the_chunks_of_one_commit() {
        // Keys upserted chunk by chunk (DEDUP_CHUNK entries each): a key repeated on both sides
        // of a chunk boundary, with the same and with another value, and one repeated within
        // a chunk in the reverse of key order.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = open(&dir);
        let q = store.queue_id("a").expect("queue");
        let n = 2 * DEDUP_CHUNK + 10;
        let key_of = |i: usize| match i {
            i if i == DEDUP_CHUNK => ("k-edge".to_string(), "v1"),
            i if i == DEDUP_CHUNK - 1 => ("k-edge".to_string(), "v1"),
            i if i == DEDUP_CHUNK + 1 => ("k-edge".to_string(), "v2"),
            i if i == 2 * DEDUP_CHUNK + 3 => ("k-edge".to_string(), "v1"),
            5 | 9 => ("k-z".to_string(), "v"),
            i => (format!("k{:05}", n - i), "v"),
        };
        let batch: Vec<Entry> = (0..n)
            .map(|i| {
                let (k, v) = key_of(i);
                entry(&format!("id-{i}"), dedup(&k, v, i64::MAX), &[q], b"x")
            })
            .collect();
        let out = store.commit(&entries(batch)).expect("commit");
        let dups: Vec<usize> = (0..n).filter(|&i| !out.inserted[i]).collect();
        // k-edge: v1 new, v1 again (dup), v2 new, v1 new again; k-z: the second is a dup.
        assert_eq!(dups, [9, DEDUP_CHUNK]);
        let ids: Vec<String> = all(&store, q).into_iter().map(|i| i.id).collect();
        assert_eq!(ids.len(), n - 2);
        assert!(ids.windows(2).all(|w| {
            let num = |s: &str| s[3..].parse::<usize>().unwrap();
            num(&w[0]) < num(&w[1])
        }));
    }

    #[test]
    fn commits_larger_than_the_append_buffer_keep_every_frame_in_order() {
        // Written in several vectored writes per queue, with duplicates skipped between them,
        // records going to two queues, empty data, and read back across block boundaries.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = open(&dir);
        let (a, b) = (
            store.queue_id("a").expect("queue a"),
            store.queue_id("b").expect("queue b"),
        );
        let mut batch = Vec::new();
        for i in 0..1500u32 {
            let data = vec![
                b'0' + (i % 10) as u8;
                if i % 97 == 0 {
                    0
                } else {
                    1000 + (i as usize * 7) % 3000
                }
            ];
            let key = if i % 50 == 49 {
                format!("k{}", i - 1)
            } else {
                format!("k{i}")
            };
            let queues: &[QueueId] = if i % 3 == 0 { &[a, b] } else { &[a] };
            batch.push(entry(
                &format!("id-{i}"),
                dedup(&key, "", i64::MAX),
                queues,
                &data,
            ));
        }
        let out = store.commit(&entries(batch.clone())).expect("commit");
        let kept: Vec<&Entry> = batch
            .iter()
            .zip(&out.inserted)
            .filter_map(|(e, &fresh)| fresh.then_some(e))
            .collect();
        assert_eq!(out.duplicates, 30);
        let in_a: u64 = kept
            .iter()
            .map(|e| format::record_len(e.id.len(), e.data.len()))
            .sum();
        assert!(in_a > 3 * BLOCK_RAW_TARGET, "{in_a}");
        for (q, want) in [
            (a, kept.clone()),
            (
                b,
                kept.iter()
                    .copied()
                    .filter(|e| e.queues.len() == 2)
                    .collect(),
            ),
        ] {
            let got = all(&store, q);
            assert_eq!(got.len(), want.len());
            for (n, (item, e)) in got.iter().zip(&want).enumerate() {
                assert_eq!(item.seq, n as u64 + 1);
                assert_eq!(item.id, e.id);
                assert_eq!(&item.data[..], &e.data[..]);
            }
        }
        // And after a reopen (the frames are where the bounds say).
        drop(store);
        let store = open(&dir);
        assert_eq!(all(&store, a).len(), kept.len());
    }

    #[test]
    fn same_dedup_value_is_a_duplicate_and_different_value_replaces_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = open(&dir);
        let q = store.queue_id("out").expect("queue");
        let out = store
            .commit(&entries(vec![entry("a1", dedup("a", "1", 10), &[q], b"x")]))
            .expect("commit");
        assert_eq!(out.inserted, [true]);
        assert_eq!(out.duplicates, 0);

        let out = store
            .commit(&entries(vec![entry("a1", dedup("a", "1", 99), &[q], b"x")]))
            .expect("commit");
        assert_eq!(out.inserted, [false]);
        assert_eq!(out.duplicates, 1);
        assert_eq!(seqs(&store, q), [1]);

        let out = store
            .commit(&entries(vec![entry("a2", dedup("a", "2", 20), &[q], b"y")]))
            .expect("commit");
        assert_eq!(out.inserted, [true]);
        assert_eq!(
            store.dedup_len("s").expect("len"),
            1,
            "value replaced, not added"
        );
        // The old value is gone: it is new again.
        let out = store
            .commit(&entries(vec![entry("a1", dedup("a", "1", 30), &[q], b"x")]))
            .expect("commit");
        assert_eq!(out.inserted, [true]);
        let ids: Vec<_> = all(&store, q).into_iter().map(|i| i.id).collect();
        assert_eq!(ids, ["a1", "a2", "a1"]);
    }

    #[test]
    fn same_key_in_another_scope_is_not_a_duplicate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = open(&dir);
        let mut other = dedup("a", "1", 10);
        if let Some(d) = other.as_mut() {
            d.scope = "t".into();
        }
        let out = store
            .commit(&entries(vec![
                entry("1", dedup("a", "1", 10), &[], b""),
                entry("2", other, &[], b""),
            ]))
            .expect("commit");
        assert_eq!(out.inserted, [true, true]);
        assert_eq!(store.dedup_len("s").expect("len"), 1);
        assert_eq!(store.dedup_len("t").expect("len"), 1);
    }

    #[test]
    fn duplicates_within_one_batch_are_detected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = open(&dir);
        let q = store.queue_id("out").expect("queue");
        let out = store
            .commit(&entries(vec![
                entry("a", dedup("k", "1", 10), &[q], b"1"),
                entry("a", dedup("k", "1", 10), &[q], b"1"),
                entry("b", dedup("k", "2", 10), &[q], b"2"),
                entry("b", dedup("k", "2", 10), &[q], b"2"),
                entry("n", None, &[q], b"3"),
                entry("n", None, &[q], b"3"),
            ]))
            .expect("commit");
        assert_eq!(out.inserted, [true, false, true, false, true, true]);
        assert_eq!(out.duplicates, 2);
        assert_eq!(seqs(&store, q), [1, 2, 3, 4]);
        assert_eq!(store.queue_depth(q).records, 4);
    }

    #[test]
    fn entry_without_queues_stores_only_its_dedup_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = open(&dir);
        let q = store.queue_id("out").expect("queue");
        let out = store
            .commit(&entries(vec![entry("a", dedup("k", "1", 10), &[], b"1")]))
            .expect("commit");
        assert_eq!(out.inserted, [true]);
        assert_eq!(store.dedup_len("s").expect("len"), 1);
        assert!(all(&store, q).is_empty());
        let out = store
            .commit(&entries(vec![entry("a", dedup("k", "1", 10), &[q], b"1")]))
            .expect("commit");
        assert_eq!(out.inserted, [false], "the stored key makes it a duplicate");
    }

    #[test]
    fn purge_deletes_only_keys_expired_before_now() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = open(&dir);
        store
            .commit(&entries(vec![
                entry("1", dedup("a", "1", 100), &[], b""),
                entry("2", dedup("b", "1", 200), &[], b""),
                entry("3", dedup("c", "1", 300), &[], b""),
            ]))
            .expect("commit");
        assert_eq!(
            store.purge_expired(200).expect("purge"),
            1,
            "100 < 200 only"
        );
        assert_eq!(store.dedup_len("s").expect("len"), 2);
        assert_eq!(store.purge_expired(200).expect("purge"), 0);
        // A purged key no longer makes its record a duplicate.
        let out = store
            .commit(&entries(vec![
                entry("1", dedup("a", "1", 400), &[], b""),
                entry("2", dedup("b", "1", 400), &[], b""),
            ]))
            .expect("commit");
        assert_eq!(out.inserted, [true, false]);
        assert_eq!(store.purge_expired(i64::MAX).expect("purge"), 3);
        assert_eq!(store.dedup_len("s").expect("len"), 0);
    }

    #[test]
    fn sequence_numbers_survive_reopen_and_draining() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (q, r) = {
            let mut store = open(&dir);
            let q = store.queue_id("q").expect("queue");
            let r = store.queue_id("r").expect("queue");
            store
                .commit(&entries(vec![
                    entry("1", None, &[q, r], b"a"),
                    entry("2", None, &[q], b"b"),
                ]))
                .expect("commit");
            assert_eq!(seqs(&store, q), [1, 2]);
            assert_eq!(seqs(&store, r), [1]);
            // Drain q completely.
            store
                .commit(&CommitBatch {
                    acks: vec![Ack {
                        queue: q,
                        up_to_seq: 2,
                        state: None,
                    }],
                    ..CommitBatch::default()
                })
                .expect("ack");
            assert!(all(&store, q).is_empty());
            (q, r)
        };
        let mut store = open(&dir);
        assert_eq!(store.queue_id("q").expect("queue"), q, "ids are stable");
        assert_eq!(store.queue_id("r").expect("queue"), r);
        assert_eq!(store.next_seq(q), Some(3));
        store
            .commit(&entries(vec![entry("3", None, &[q, r], b"c")]))
            .expect("commit");
        assert_eq!(seqs(&store, q), [3], "seq 1 and 2 are never reused");
        assert_eq!(seqs(&store, r), [1, 2]);
    }

    #[test]
    fn ack_deletes_up_to_seq_and_writes_its_state_in_the_same_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = open(&dir);
        let q = store.queue_id("q").expect("queue");
        let other = store.queue_id("other").expect("queue");
        store
            .commit(&entries(
                (1..=5)
                    .map(|i| entry(&i.to_string(), None, &[q, other], b"12345"))
                    .collect(),
            ))
            .expect("commit");
        let out = store
            .commit_at(
                &CommitBatch {
                    entries: vec![entry("6", None, &[q], b"123")],
                    checkpoints: vec![("src".into(), "rv9".into())],
                    forget: vec![],
                    acks: vec![Ack {
                        queue: q,
                        up_to_seq: 3,
                        state: Some(("file:q".into(), "1234".into())),
                    }],
                    trims: vec![],
                },
                42,
            )
            .expect("commit");
        assert_eq!(out.inserted, [true]);
        assert_eq!(seqs(&store, q), [4, 5, 6]);
        assert_eq!(
            seqs(&store, other),
            [1, 2, 3, 4, 5],
            "other queues untouched"
        );
        // Records 4 and 5 keep their block (records 1..=5, written by one commit) on disk.
        assert_eq!(store.queue_depth(q).records, 3);
        assert_eq!(store.queues[&q].tail_pos, 0);
        assert_eq!(store.queue_depth(q).bytes, store.queues[&q].head_pos);
        let state = store.checkpoint("file:q").expect("checkpoint");
        assert_eq!(
            state,
            Some(Checkpoint {
                value: "1234".into(),
                updated_at_unix_ms: 42
            })
        );
        assert_eq!(
            store
                .checkpoint("src")
                .expect("checkpoint")
                .map(|c| c.value),
            Some("rv9".into())
        );
        // An ack that covers nothing still writes its state; acking beyond the end is harmless.
        store
            .commit(&CommitBatch {
                acks: vec![
                    Ack {
                        queue: q,
                        up_to_seq: 1,
                        state: Some(("file:q".into(), "1300".into())),
                    },
                    Ack {
                        queue: other,
                        up_to_seq: u64::MAX,
                        state: None,
                    },
                ],
                ..CommitBatch::default()
            })
            .expect("commit");
        assert_eq!(
            store
                .checkpoint("file:q")
                .expect("checkpoint")
                .map(|c| c.value),
            Some("1300".into())
        );
        assert!(all(&store, other).is_empty());
        assert_eq!(store.queue_depth(other), QueueDepth::default());
        assert_eq!(seqs(&store, q), [4, 5, 6], "q untouched by ack of other");
    }

    #[test]
    fn queue_depth_follows_commits_and_is_reloaded_at_open() {
        // Depth bytes are the bytes of the queue's blocks on disk, from the one holding the
        // oldest record to the head: compressed, and a block goes only with its last record.
        let dir = tempfile::tempdir().expect("tempdir");
        let (q, r, depth_q, depth_r) = {
            let mut store = open(&dir);
            let q = store.queue_id("q").expect("queue");
            let r = store.queue_id("r").expect("queue");
            assert_eq!(store.queue_depth(q), QueueDepth::default());
            store
                .commit(&entries(vec![
                    entry("1", None, &[q], &[0; 100]),
                    entry("2", None, &[q, r], &[0; 1000]),
                    entry("3", None, &[q], &[]),
                ]))
                .expect("commit");
            let first = store.queue_depth(q);
            assert_eq!(first.records, 3);
            let logical: u64 = [100, 1000, 0].map(|n| crate::frame_len(1, n)).iter().sum();
            assert!(
                first.bytes > 0 && first.bytes < logical / 4,
                "compressed: {first:?}"
            );
            store
                .commit(&entries(vec![entry("4", None, &[q], &[1; 10])]))
                .expect("commit");
            let second = store.queue_depth(q);
            assert!(second.bytes > first.bytes);
            // Acknowledging part of the first block frees no bytes; all of it frees its bytes.
            ack_to(&mut store, q, 1);
            assert_eq!(
                store.queue_depth(q),
                QueueDepth {
                    records: 3,
                    bytes: second.bytes
                }
            );
            ack_to(&mut store, q, 3);
            assert_eq!(
                store.queue_depth(q),
                QueueDepth {
                    records: 1,
                    bytes: second.bytes - first.bytes
                }
            );
            (q, r, store.queue_depth(q), store.queue_depth(r))
        };
        let store = open(&dir);
        assert_eq!(store.queue_depth(q), depth_q);
        assert_eq!(store.queue_depth(r), depth_r);
        assert_eq!(depth_r.records, 1);
        assert_eq!(store.queue_depth(QueueId(999)), QueueDepth::default());
    }

    fn ack_to(store: &mut Store, q: QueueId, up_to_seq: u64) {
        store
            .commit(&CommitBatch {
                acks: vec![Ack {
                    queue: q,
                    up_to_seq,
                    state: None,
                }],
                ..CommitBatch::default()
            })
            .expect("ack");
    }

    #[test]
    fn read_queue_honours_after_seq_and_limits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = open(&dir);
        let q = store.queue_id("q").expect("queue");
        let sizes = [10usize, 20, 30, 5000, 40];
        store
            .commit(&entries(
                sizes
                    .iter()
                    .enumerate()
                    .map(|(i, n)| entry(&format!("id{i}"), None, &[q], &vec![i as u8; *n]))
                    .collect(),
            ))
            .expect("commit");
        let mut reader = store.reader().expect("reader");
        let read = |reader: &mut Reader, after, records, bytes| -> Vec<u64> {
            reader
                .read_queue(q, after, records, bytes)
                .expect("read")
                .iter()
                .map(|i| i.seq)
                .collect()
        };
        assert_eq!(read(&mut reader, 0, 2, usize::MAX), [1, 2]);
        assert_eq!(read(&mut reader, 2, 100, usize::MAX), [3, 4, 5]);
        assert_eq!(read(&mut reader, 0, 100, 60), [1, 2, 3], "10+20+30 fits 60");
        assert_eq!(read(&mut reader, 0, 100, 59), [1, 2]);
        assert_eq!(
            read(&mut reader, 3, 100, 10),
            [4],
            "one item even if too big"
        );
        assert_eq!(
            read(&mut reader, 0, 0, usize::MAX),
            [1],
            "0 records counts as 1"
        );
        assert_eq!(read(&mut reader, 5, 100, usize::MAX), Vec::<u64>::new());
        assert_eq!(
            read(&mut reader, u64::MAX, 100, usize::MAX),
            Vec::<u64>::new()
        );
        let items = reader.read_queue(q, 3, 1, usize::MAX).expect("read");
        assert_eq!(
            items,
            [QueueItem {
                seq: 4,
                id: "id3".into(),
                data: vec![3; 5000].into()
            }]
        );
        assert_eq!(reader.first_seq(q).expect("first"), Some(1));
        assert_eq!(reader.queue_id("q").expect("lookup"), Some(q));
        assert_eq!(reader.queue_id("nope").expect("lookup"), None);
        store
            .commit(&CommitBatch {
                acks: vec![Ack {
                    queue: q,
                    up_to_seq: 5,
                    state: None,
                }],
                ..CommitBatch::default()
            })
            .expect("ack");
        assert_eq!(reader.first_seq(q).expect("first"), None);
    }

    #[test]
    fn a_failed_commit_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = open(&dir);
        let q = store.queue_id("q").expect("queue");
        store
            .commit(&entries(vec![entry(
                "0",
                dedup("zero", "1", 5),
                &[q],
                b"0",
            )]))
            .expect("commit");
        let before_depth = store.queue_depth(q);
        let unknown = QueueId(77);
        let err = store
            .commit(&CommitBatch {
                entries: vec![
                    entry("1", dedup("one", "1", 5), &[q], b"111"),
                    entry("2", dedup("two", "1", 5), &[q], b"222"),
                    entry("3", None, &[q, unknown], b"333"),
                ],
                checkpoints: vec![("src".into(), "7".into())],
                forget: vec![],
                acks: vec![Ack {
                    queue: q,
                    up_to_seq: 1,
                    state: Some(("st".into(), "x".into())),
                }],
                trims: vec![],
            })
            .expect_err("unknown queue must fail");
        assert!(matches!(err, StateError::UnknownQueue { queue } if queue == unknown));
        assert_eq!(store.dedup_len("s").expect("len"), 1, "no dedup key kept");
        assert_eq!(seqs(&store, q), [1], "nothing enqueued, nothing acked");
        assert_eq!(store.checkpoint("src").expect("cp"), None);
        assert_eq!(store.checkpoint("st").expect("cp"), None);
        assert_eq!(store.queue_depth(q), before_depth);
        assert_eq!(store.next_seq(q), Some(2));

        // An ack of an unknown queue fails the same way, after its entries were written.
        let err = store
            .commit(&CommitBatch {
                entries: vec![entry("1", dedup("one", "1", 5), &[q], b"111")],
                acks: vec![Ack {
                    queue: unknown,
                    up_to_seq: 1,
                    state: None,
                }],
                ..CommitBatch::default()
            })
            .expect_err("unknown queue must fail");
        assert!(matches!(err, StateError::UnknownQueue { .. }));
        assert_eq!(seqs(&store, q), [1]);

        // The next good commit continues right after the last committed seq.
        let out = store
            .commit(&entries(vec![entry(
                "1",
                dedup("one", "1", 5),
                &[q],
                b"111",
            )]))
            .expect("commit");
        assert_eq!(out.inserted, [true], "the rolled-back key did not survive");
        assert_eq!(seqs(&store, q), [1, 2]);
    }

    #[test]
    fn reopening_after_an_unknown_outcome_reads_the_committed_bounds_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = open(&dir);
        let q = store.queue_id("q").expect("queue");
        let mut reader = store.reader().expect("reader");
        let before = store.queues[&q];
        store
            .commit(&entries(vec![entry(
                "1",
                dedup("one", "1", 5),
                &[q],
                b"111",
            )]))
            .expect("commit");
        // As if that commit had reported an error (a failed WAL fsync) although it is
        // durable: the in-memory bounds were not moved.
        store.queues.insert(q, before);
        let again = store.close_for_reopen();
        let mut store = again.open().expect("reopen");
        let out = store
            .commit(&entries(vec![
                entry("1", dedup("one", "1", 5), &[q], b"111"),
                entry("2", dedup("two", "1", 5), &[q], b"222"),
            ]))
            .expect("commit");
        assert_eq!(out.inserted, [false, true], "the first batch is known");
        assert_eq!(seqs(&store, q), [1, 2], "nothing written over");
        // A reader made before the reopen goes on.
        let items = reader.read_queue(q, 0, 10, usize::MAX).expect("read");
        assert_eq!(
            items.iter().map(|i| &i.data[..]).collect::<Vec<_>>(),
            [&b"111"[..], b"222"]
        );
        assert!(StateError::UnknownQueue { queue: q }.outcome_known());
    }

    #[test]
    fn checkpoints_are_listed_by_prefix_and_forgotten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = open(&dir);
        let names = [
            "a/fp:1",
            "a/fp:2",
            "a/fp;",
            "a/fp",
            "a/fq:1",
            "ab/fp:1",
            "b/fp:1",
            "a/fp:\u{10FFFF}",
        ];
        store
            .commit_at(
                &CommitBatch {
                    checkpoints: names.iter().map(|n| (n.to_string(), "v".into())).collect(),
                    ..CommitBatch::default()
                },
                1000,
            )
            .expect("commit");
        let under = |store: &Store, prefix: &str| -> Vec<String> {
            store
                .checkpoints_under(prefix)
                .expect("list")
                .into_iter()
                .map(|(s, c)| {
                    assert_eq!(c.updated_at_unix_ms, 1000);
                    s
                })
                .collect()
        };
        assert_eq!(
            under(&store, "a/fp:"),
            ["a/fp:1", "a/fp:2", "a/fp:\u{10FFFF}"]
        );
        assert_eq!(
            under(&store, "a/"),
            [
                "a/fp",
                "a/fp:1",
                "a/fp:2",
                "a/fp:\u{10FFFF}",
                "a/fp;",
                "a/fq:1"
            ]
        );
        assert_eq!(under(&store, "").len(), names.len());
        assert!(under(&store, "c").is_empty());
        // Forgetting deletes in the commit's transaction (after its upserts); unknown names
        // are no error.
        store
            .commit(&CommitBatch {
                checkpoints: vec![("a/fp:3".into(), "w".into())],
                forget: vec!["a/fp:1".into(), "a/fp:3".into(), "zz".into()],
                ..CommitBatch::default()
            })
            .expect("forget");
        assert_eq!(under(&store, "a/fp:"), ["a/fp:2", "a/fp:\u{10FFFF}"]);
        assert_eq!(store.checkpoint("a/fp:1").expect("cp"), None);
    }

    #[test]
    fn prefix_ends_are_the_next_string_after_every_extension() {
        assert_eq!(prefix_end("a/fp:").as_deref(), Some("a/fp;"));
        assert_eq!(prefix_end("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{10FFFF}"), None);
        assert_eq!(prefix_end(""), None);
    }

    #[test]
    fn readers_see_committed_state_only_and_checkpoints_carry_their_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = open(&dir);
        let mut reader = store.reader().expect("reader");
        assert_eq!(reader.checkpoint("src").expect("cp"), None);
        store
            .commit_at(
                &CommitBatch {
                    checkpoints: vec![("src".into(), "a".into())],
                    ..CommitBatch::default()
                },
                1000,
            )
            .expect("commit");
        store
            .commit_at(
                &CommitBatch {
                    checkpoints: vec![("src".into(), "b".into())],
                    ..CommitBatch::default()
                },
                2000,
            )
            .expect("commit");
        assert_eq!(
            reader.checkpoint("src").expect("cp"),
            Some(Checkpoint {
                value: "b".into(),
                updated_at_unix_ms: 2000
            })
        );
        let before = now_unix_ms();
        store
            .commit(&CommitBatch {
                checkpoints: vec![("src".into(), "c".into())],
                ..CommitBatch::default()
            })
            .expect("commit");
        let cp = store.checkpoint("src").expect("cp").expect("present");
        assert_eq!(cp.value, "c");
        assert!(
            cp.updated_at_unix_ms >= before,
            "commit stamps the wall clock"
        );
    }

    #[test]
    fn store_and_reader_can_move_to_other_threads() {
        fn assert_send<T: Send>() {}
        assert_send::<Store>();
        assert_send::<Reader>();
    }

    #[test]
    fn drained_segments_are_deleted_and_reopen_cuts_uncommitted_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("kubetrail.db");
        let opts = StoreOptions {
            segment_bytes: 10_000,
            ..options()
        };
        let mut store = Store::open(&db, &opts).expect("open");
        let q = store.queue_id("q").expect("queue");
        // 10 commits of 3 records of 2,000 bytes: a new segment every second commit.
        for c in 0..10 {
            store
                .commit(&entries(
                    (0..3)
                        .map(|i| entry(&format!("{c}-{i}"), None, &[q], &noise(c * 10 + i, 2000)))
                        .collect(),
                ))
                .expect("commit");
        }
        assert_eq!(store.segment_count(q), 5);
        let mut r = store.reader().expect("reader");
        let items = r.read_queue(q, 0, 13, usize::MAX).expect("read");
        assert_eq!(items.len(), 13);
        store
            .commit(&CommitBatch {
                acks: vec![Ack {
                    queue: q,
                    up_to_seq: 13,
                    state: None,
                }],
                ..CommitBatch::default()
            })
            .expect("ack");
        // Seqs 1..=12 fill the first two segments, which go; 13 is in the third, which stays.
        assert_eq!(store.segment_count(q), 3);
        assert_eq!(seqs(&store, q), (14..=30).collect::<Vec<_>>());
        // An append that never committed (garbage past the head) is cut at the next open.
        let qdir = crate::segments::queue_dir(&crate::segments::queues_root(&db), q);
        let last = crate::segments::list_segments(&qdir).expect("list");
        let last = qdir.join(format!("{:020}.seg", last[last.len() - 1]));
        let len = std::fs::metadata(&last).expect("stat").len();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&last)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"not committed"))
            .expect("append");
        drop(r);
        drop(store);
        let mut store = Store::open(&db, &opts).expect("reopen");
        assert_eq!(std::fs::metadata(&last).expect("stat").len(), len);
        assert_eq!(seqs(&store, q), (14..=30).collect::<Vec<_>>());
        store
            .commit(&entries(vec![entry("after", None, &[q], b"x")]))
            .expect("commit");
        let items = all(&store, q);
        assert_eq!(
            items.last().map(|i| (i.seq, i.id.as_str())),
            Some((31, "after"))
        );
        // Acking everything leaves one (current) segment.
        store
            .commit(&CommitBatch {
                acks: vec![Ack {
                    queue: q,
                    up_to_seq: u64::MAX,
                    state: None,
                }],
                ..CommitBatch::default()
            })
            .expect("ack");
        assert_eq!(store.segment_count(q), 1);
        assert!(all(&store, q).is_empty());
    }
}

#[cfg(test)]
mod recycle_tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::batch::{Ack, Entry, Trim};

    fn commit_records(store: &mut Store, q: QueueId, c: u8, n: usize, len: usize) {
        let entries = (0..n)
            .map(|i| Entry {
                dedup: None,
                queues: [q].into(),
                id: format!("{c}-{i}"),
                data: noise(u64::from(c) * 1000 + i as u64, len).into(),
            })
            .collect();
        store
            .commit(&CommitBatch {
                entries,
                ..CommitBatch::default()
            })
            .expect("commit");
    }

    fn ack(store: &mut Store, q: QueueId, up_to_seq: u64) {
        store
            .commit(&CommitBatch {
                acks: vec![Ack {
                    queue: q,
                    up_to_seq,
                    state: None,
                }],
                ..CommitBatch::default()
            })
            .expect("ack");
    }

    fn read_all(store: &Store, q: QueueId) -> Vec<(u64, String, Vec<u8>)> {
        let mut r = store.reader().expect("reader");
        r.read_queue(q, 0, usize::MAX, usize::MAX)
            .expect("read")
            .into_iter()
            .map(|i| (i.seq, i.id, i.data.to_vec()))
            .collect()
    }

    /// A store with 10,000-byte segments and one queue: (its database path, options, store,
    /// queue, the queue's directory).
    fn small_segments(dir: &tempfile::TempDir) -> (PathBuf, StoreOptions, Store, QueueId, PathBuf) {
        let db = dir.path().join("kubetrail.db");
        let opts = StoreOptions {
            segment_bytes: 10_000,
            ..StoreOptions::default()
        };
        let mut store = Store::open(&db, &opts).expect("open");
        let q = store.queue_id("q").expect("queue");
        let qdir = crate::segments::queue_dir(&crate::segments::queues_root(&db), q);
        (db, opts, store, q, qdir)
    }

    #[test]
    fn acknowledged_segments_are_recycled_and_their_old_bytes_never_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (db, opts, mut store, q, qdir) = small_segments(&dir);
        let spare = qdir.join("spare.seg");
        // Two commits of 3 × 2,000 bytes fill a segment; the third starts the second one.
        for c in 1..=3 {
            commit_records(&mut store, q, c, 3, 2000);
        }
        assert_eq!(store.segment_count(q), 2);
        ack(&mut store, q, 6);
        assert_eq!(store.segment_count(q), 1);
        let spare_inode = std::fs::metadata(&spare)
            .expect("the drained segment is kept")
            .ino();
        // Small records now: the next segment (the spare, renamed) holds fewer bytes than the
        // old frames still in the file.
        commit_records(&mut store, q, 4, 3, 2000);
        commit_records(&mut store, q, 5, 2, 10);
        assert!(!spare.exists(), "the spare became the new segment");
        let starts = crate::segments::list_segments(&qdir).expect("list");
        assert_eq!(starts.len(), 2);
        let last = qdir.join(format!("{:020}.seg", starts[1]));
        let meta = std::fs::metadata(&last).expect("stat");
        assert_eq!(meta.ino(), spare_inode);
        // The committed bytes of the file: its header and its blocks.
        let committed = store.queues[&q].head_pos - starts[1] + format::FILE_HEADER_LEN;
        assert!(meta.len() > committed, "old bytes remain past the head");
        let expect: Vec<(u64, String, Vec<u8>)> = (7..=9)
            .map(|s| (s, format!("3-{}", s - 7), noise(3000 + s - 7, 2000)))
            .chain((10..=12).map(|s| (s, format!("4-{}", s - 10), noise(4000 + s - 10, 2000))))
            .chain((13..=14).map(|s| (s, format!("5-{}", s - 13), noise(5000 + s - 13, 10))))
            .collect();
        assert_eq!(read_all(&store, q), expect);
        // Reopening cuts the old bytes and keeps every record; appends go on.
        drop(store);
        let mut store = Store::open(&db, &opts).expect("reopen");
        assert_eq!(std::fs::metadata(&last).expect("stat").len(), committed);
        assert_eq!(read_all(&store, q), expect);
        commit_records(&mut store, q, 6, 1, 10);
        assert_eq!(read_all(&store, q).len(), expect.len() + 1);
    }

    #[test]
    fn trimmed_segments_are_deleted_not_recycled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, _, mut store, q, qdir) = small_segments(&dir);
        for c in 1..=3 {
            commit_records(&mut store, q, c, 3, 2000);
        }
        store
            .commit(&CommitBatch {
                trims: vec![Trim {
                    queue: q,
                    free_bytes: 12_000,
                }],
                ..CommitBatch::default()
            })
            .expect("trim");
        assert_eq!(store.segment_count(q), 1);
        assert!(!qdir.join("spare.seg").exists());
    }
}

#[cfg(test)]
mod trim_tests {
    use super::*;
    use crate::batch::{Ack, Entry, Trim};

    #[test]
    fn trims_drop_the_oldest_blocks_until_enough_bytes_are_free() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(
            &dir.path().join("t.db"),
            &StoreOptions {
                sync: SyncMode::Normal,
                ..Default::default()
            },
        )
        .unwrap();
        let q = store.queue_id("out").unwrap();
        // Ten commits of two records: ten blocks of the same size.
        for i in 0..10 {
            let entries = (0..2)
                .map(|j| Entry {
                    dedup: None,
                    queues: [q].into(),
                    id: format!("{i}-{j}"),
                    data: vec![b'x'; 100].into(),
                })
                .collect();
            store
                .commit(&CommitBatch {
                    entries,
                    ..Default::default()
                })
                .unwrap();
        }
        let block = store.queue_depth(q).bytes / 10;
        assert_eq!(store.queue_depth(q).bytes, 10 * block);
        let out = store
            .commit(&CommitBatch {
                trims: vec![Trim {
                    queue: q,
                    free_bytes: 2 * block + 1,
                }],
                ..Default::default()
            })
            .unwrap();
        assert_eq!(out.trimmed, vec![(6, 3 * block)]);
        assert_eq!(store.queue_depth(q).records, 14);
        assert_eq!(store.queue_depth(q).bytes, 7 * block);
        let mut r = store.reader().unwrap();
        let items = r.read_queue(q, 0, 100, usize::MAX).unwrap();
        assert_eq!(items.first().map(|i| i.id.as_str()), Some("3-0"));
        // A tail inside a block (one record of it acknowledged): the trim counts only the
        // records that were left of it.
        store
            .commit(&CommitBatch {
                acks: vec![Ack {
                    queue: q,
                    up_to_seq: 7,
                    state: None,
                }],
                trims: vec![Trim {
                    queue: q,
                    free_bytes: 1,
                }],
                ..Default::default()
            })
            .unwrap();
        let items = r.read_queue(q, 0, 100, usize::MAX).unwrap();
        assert_eq!(items.first().map(|i| i.id.as_str()), Some("4-0"));
        // Asking for more than there is empties the queue and says how much it dropped.
        let out = store
            .commit(&CommitBatch {
                trims: vec![Trim {
                    queue: q,
                    free_bytes: 1 << 20,
                }],
                ..Default::default()
            })
            .unwrap();
        assert_eq!(out.trimmed, vec![(12, 6 * block)]);
        assert_eq!(store.queue_depth(q).records, 0);
    }
}
