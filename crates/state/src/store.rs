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

mod writer;
use writer::{BlockBufs, Writer, keep_frame_lists};

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
mod recycle_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod trim_tests;
