//! The write side of the state database: opening (lock, pragmas, migrations), the one
//! transaction that stores records, dedup keys, checkpoints and acknowledgements together, and
//! the in-memory queue counters that follow it.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params,
};

use crate::batch::{Checkpoint, CommitBatch, CommitOutcome};
use crate::error::{StateError, sql};
use crate::lock;
use crate::queue::{MAX_QUEUE_ID, MAX_SEQ, QueueDepth, QueueId, item_key, key_seq, keys_after};
use crate::reader::Reader;
use crate::schema;

/// How hard each commit insists on reaching the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// fsync the WAL at every commit: a committed batch survives power loss. What the
    /// exactly-once promise needs, and the default.
    #[default]
    Full,
    /// fsync only at WAL checkpoints: a committed batch survives a crash of kubetrail but the
    /// last commits may be lost on power loss or a kernel crash. For tests and for users who
    /// accept that trade.
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
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            sync: SyncMode::Full,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// Page size for new databases. A commit writes every page it dirtied in full, and dedup
/// upserts land on random leaf pages (keys are uids), so a batch of 1,000 new keys costs about
/// 1,000 pages of WAL: smaller pages keep that down. Queue appends are sequential, and a
/// 1.5 KiB record still fits in a 4 KiB table leaf (see queue.rs), but not in a 1 or 2 KiB
/// one. Measured with examples/throughput.rs: 4 KiB beat 1, 2, 8 and 16 KiB, with and without
/// dedup keys.
const PAGE_SIZE: u32 = 4096;

/// Pages of WAL after which a commit also checkpoints (copies the WAL back into the database
/// file and fsyncs it). The default, 1,000 pages (4 MiB), would checkpoint every second batch
/// of 1,000 × 1.5 KiB records. 64 MiB amortises each checkpoint's fsync over many batches and
/// lets a page written several times in between (queue pages filled and then freed by acks,
/// hot dedup leaves) be copied once: measured ~15% more records/s than 16 MiB with a dedup key
/// per record. The cost is up to 64 MiB of WAL on disk and a longer (sub-second) WAL recovery
/// after a crash.
const WAL_AUTOCHECKPOINT_PAGES: u32 = 16384;

/// When a checkpoint resets the WAL, it is truncated to this size if it grew beyond it (e.g.
/// while a long read held the WAL open), so a burst does not keep its disk space forever.
/// Equal to the autocheckpoint size: the WAL file is then reused in place, never regrown.
const JOURNAL_SIZE_LIMIT_BYTES: i64 = 64 * 1024 * 1024;

/// Page cache of the write connection, in KiB. The dedup b-tree is written at random
/// positions; keeping its inner pages and hot leaves cached avoids re-reading them every batch.
const WRITER_CACHE_KIB: i64 = 16 * 1024;

/// Prepared statements kept per connection: every statement the hot paths use stays cached.
const STATEMENT_CACHE: usize = 32;

const UPSERT_DEDUP: &str = "INSERT INTO dedup (scope, key, value, expires_at_ms)
     VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT (scope, key) DO UPDATE
         SET value = excluded.value, expires_at_ms = excluded.expires_at_ms
         WHERE dedup.value IS NOT excluded.value";
const INSERT_ITEM: &str = "INSERT INTO queue_items (k, id, data) VALUES (?1, ?2, ?3)";
const UPDATE_NEXT_SEQ: &str = "UPDATE queues SET next_seq = ?2 WHERE id = ?1";
const UPSERT_CHECKPOINT: &str = "INSERT INTO checkpoints (stream, value, updated_at_ms)
     VALUES (?1, ?2, ?3)
     ON CONFLICT (stream) DO UPDATE
         SET value = excluded.value, updated_at_ms = excluded.updated_at_ms";
const ACKED_SIZE: &str = "SELECT count(*), coalesce(sum(length(data)), 0)
     FROM queue_items WHERE k > ?1 AND k <= ?2";
const OLDEST_ITEMS: &str =
    "SELECT k, length(data) FROM queue_items WHERE k > ?1 AND k <= ?2 ORDER BY k";
const DELETE_ACKED: &str = "DELETE FROM queue_items WHERE k > ?1 AND k <= ?2";
pub(crate) const SELECT_CHECKPOINT: &str =
    "SELECT value, updated_at_ms FROM checkpoints WHERE stream = ?1";

/// In-memory view of one queue, kept equal to the committed database state.
#[derive(Debug, Clone, Copy)]
struct QueueState {
    next_seq: u64,
    depth: QueueDepth,
}

/// Changes to one queue made by a transaction that has not committed yet.
#[derive(Debug, Clone, Copy)]
struct PendingQueue {
    id: QueueId,
    next_seq: u64,
    enqueued: bool,
    records: i64,
    bytes: i64,
}

/// The state database, write side. Owned by one writer thread; `Send` but not `Sync`.
pub struct Store {
    // Field order matters: fields drop in declaration order, so the connection (and SQLite's
    // final checkpoint on close) is gone before the lock file is released.
    conn: Connection,
    path: PathBuf,
    busy_timeout: Duration,
    queues: HashMap<QueueId, QueueState>,
    names: HashMap<String, QueueId>,
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

impl Store {
    /// Opens or creates the database at `path` (its directory must exist), locking
    /// `path` + ".lock" first so that a second process fails at once with
    /// [`StateError::Locked`]. Enables WAL, applies `opts.sync`, migrates the schema and loads
    /// the queue counters.
    pub fn open(path: &Path, opts: &StoreOptions) -> Result<Store, StateError> {
        let lock = lock::acquire(path)?;
        let open_err = |what: &'static str| {
            move |source| StateError::Open {
                path: path.to_path_buf(),
                what,
                source,
            }
        };
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err("open"))?;
        conn.busy_timeout(opts.busy_timeout)
            .map_err(open_err("set busy_timeout"))?;
        // page_size and auto_vacuum only take effect before the first table exists; on an
        // existing database they are no-ops. Incremental auto-vacuum lets `reclaim_space`
        // return the space of a drained backlog to the file system.
        pragma(&conn, &format!("PRAGMA page_size = {PAGE_SIZE}")).map_err(open_err("page_size"))?;
        pragma(&conn, "PRAGMA auto_vacuum = INCREMENTAL").map_err(open_err("auto_vacuum"))?;
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
            &format!("PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}"),
        )
        .map_err(open_err("wal_autocheckpoint"))?;
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
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
            busy_timeout: opts.busy_timeout,
            queues: HashMap::new(),
            names: HashMap::new(),
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

    /// Reads the queues and their depths from the tables into memory.
    fn load_queues(&mut self) -> Result<(), StateError> {
        let mut rows: Vec<(i64, String, i64)> = Vec::new();
        {
            let mut stmt = self
                .conn
                .prepare("SELECT id, name, next_seq FROM queues ORDER BY id")
                .map_err(sql("load queues"))?;
            let mut it = stmt.query([]).map_err(sql("load queues"))?;
            while let Some(row) = it.next().map_err(sql("load queues"))? {
                rows.push((
                    row.get(0).map_err(sql("load queues"))?,
                    row.get(1).map_err(sql("load queues"))?,
                    row.get(2).map_err(sql("load queues"))?,
                ));
            }
        }
        for (raw_id, name, next_seq) in rows {
            let id = u32::try_from(raw_id)
                .ok()
                .filter(|id| (1..=MAX_QUEUE_ID).contains(id))
                .map(QueueId)
                .ok_or_else(|| StateError::Corrupt {
                    what: format!("queue {name:?} has id {raw_id}"),
                })?;
            let mut next_seq = to_u64(next_seq, "queues.next_seq")?.max(1);
            let (lo, hi) = keys_after(id, 0);
            let (records, bytes, max_key): (i64, i64, Option<i64>) = self
                .conn
                .query_row(
                    "SELECT count(*), coalesce(sum(length(data)), 0), max(k)
                     FROM queue_items WHERE k > ?1 AND k <= ?2",
                    params![lo, hi],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .map_err(sql("load queue depth"))?;
            if let Some(max_key) = max_key {
                let max_seq = key_seq(max_key);
                if max_seq >= next_seq {
                    // Only possible if the file was edited by hand: never hand out a
                    // sequence number that is already taken.
                    tracing::warn!(queue = %name, next_seq, max_seq, "queue next_seq behind its rows; repairing");
                    next_seq = max_seq + 1;
                    self.conn
                        .execute(UPDATE_NEXT_SEQ, params![raw_id, next_seq as i64])
                        .map_err(sql("repair queue next_seq"))?;
                }
            }
            self.queues.insert(
                id,
                QueueState {
                    next_seq,
                    depth: QueueDepth {
                        records: to_u64(records, "queue record count")?,
                        bytes: to_u64(bytes, "queue byte count")?,
                    },
                },
            );
            self.names.insert(name, id);
        }
        Ok(())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A read-only connection for queue readers and checkpoint lookups on other threads. With
    /// WAL, readers never block the writer and see only committed transactions.
    pub fn reader(&self) -> Result<Reader, StateError> {
        Reader::open(&self.path, self.busy_timeout)
    }

    /// The committed checkpoint of `stream`, if any.
    pub fn checkpoint(&self, stream: &str) -> Result<Option<Checkpoint>, StateError> {
        read_checkpoint(&self.conn, stream)
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
        self.conn
            .execute(
                "INSERT INTO queues (id, name, next_seq) VALUES (?1, ?2, 1)",
                params![next, name],
            )
            .map_err(sql("create queue"))?;
        self.queues.insert(
            id,
            QueueState {
                next_seq: 1,
                depth: QueueDepth::default(),
            },
        );
        self.names.insert(name.to_owned(), id);
        tracing::info!(queue = %name, id = id.0, "state queue created");
        Ok(id)
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
    /// 1. each entry in order: if its dedup `(scope, key)` is stored with the same value it is
    ///    a duplicate and skipped; otherwise the key is upserted (so later entries of the same
    ///    batch see it) and the record is appended to each of its queues;
    /// 2. each queue gets the next sequence numbers, never reused;
    /// 3. checkpoints are upserted;
    /// 4. acks delete their queue's rows up to `up_to_seq` and upsert their state row.
    ///
    /// On any error the whole transaction is rolled back and the in-memory counters are left
    /// untouched; they change only after the commit succeeded. One caveat, inherent to any
    /// database: if the error came from the final write or fsync of the WAL, the batch may
    /// still turn out durable after a restart (entirely, never in part). A writer that sees a
    /// commit error other than [`StateError::UnknownQueue`] should therefore not resubmit the
    /// batch to this `Store` but reopen the database and resume from the stored checkpoints,
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
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("commit: begin"))?;
        // On error `tx` is dropped here, which rolls the transaction back.
        write_batch(
            &tx,
            &self.queues,
            batch,
            now_unix_ms,
            &mut pending,
            &mut outcome,
        )?;
        tx.commit().map_err(sql("commit"))?;

        for p in pending {
            // Present: pending entries are only created for ids found in `self.queues`.
            if let Some(state) = self.queues.get_mut(&p.id) {
                state.next_seq = p.next_seq;
                state.depth.records = state.depth.records.saturating_add_signed(p.records);
                state.depth.bytes = state.depth.bytes.saturating_add_signed(p.bytes);
            }
        }
        Ok(outcome)
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
        }
        Ok(deleted as u64)
    }

    /// Records and bytes waiting in queue `q` as of the last successful commit (zero for an
    /// unknown queue). Kept in memory, so cheap enough for every metrics scrape.
    pub fn queue_depth(&self, q: QueueId) -> QueueDepth {
        self.queues.get(&q).map(|s| s.depth).unwrap_or_default()
    }

    /// The sequence number the next record enqueued into `q` will get.
    pub fn next_seq(&self, q: QueueId) -> Option<u64> {
        self.queues.get(&q).map(|s| s.next_seq)
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

    /// Pages of the database file that are free (left by drained queues and purged keys) and
    /// would be given back to the file system by [`Store::reclaim_space`].
    pub fn free_pages(&self) -> Result<u64, StateError> {
        let n: i64 = self
            .conn
            .query_row("PRAGMA freelist_count", [], |row| row.get(0))
            .map_err(sql("read freelist_count"))?;
        to_u64(n, "freelist_count")
    }

    /// Shrinks the file by up to `max_pages` free pages (4 KiB each), so that a backlog once
    /// drained does not keep its disk space. Work is proportional to `max_pages`; call it with
    /// a bounded number between batches. Returns how many pages were freed.
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
        Ok(before.saturating_sub(self.free_pages()?))
    }
}

/// The body of the commit transaction; `pending` collects the queue changes to apply in memory
/// once the transaction has committed.
fn write_batch(
    tx: &Transaction<'_>,
    queues: &HashMap<QueueId, QueueState>,
    batch: &CommitBatch,
    now_unix_ms: i64,
    pending: &mut Vec<PendingQueue>,
    outcome: &mut CommitOutcome,
) -> Result<(), StateError> {
    let pending_for = |pending: &mut Vec<PendingQueue>, q: QueueId| {
        if let Some(i) = pending.iter().position(|p| p.id == q) {
            return Ok(i);
        }
        let state = queues
            .get(&q)
            .ok_or(StateError::UnknownQueue { queue: q })?;
        pending.push(PendingQueue {
            id: q,
            next_seq: state.next_seq,
            enqueued: false,
            records: 0,
            bytes: 0,
        });
        Ok(pending.len() - 1)
    };

    for trim in &batch.trims {
        let i = pending_for(pending, trim.queue)?;
        let (lo, hi) = (item_key(trim.queue, 0), item_key(trim.queue, MAX_SEQ));
        let (mut records, mut bytes, mut last) = (0i64, 0i64, None);
        {
            let mut oldest = tx
                .prepare_cached(OLDEST_ITEMS)
                .map_err(sql("commit: prepare trim scan"))?;
            let mut rows = oldest
                .query(params![lo, hi])
                .map_err(sql("commit: trim scan"))?;
            while (bytes as u64) < trim.free_bytes {
                let Some(row) = rows.next().map_err(sql("commit: trim scan"))? else {
                    break;
                };
                let k: i64 = row.get(0).map_err(sql("commit: trim scan"))?;
                let len: i64 = row.get(1).map_err(sql("commit: trim scan"))?;
                records += 1;
                bytes += len;
                last = Some(k);
            }
        }
        if let Some(last) = last {
            tx.prepare_cached(DELETE_ACKED)
                .map_err(sql("commit: prepare trim delete"))?
                .execute(params![lo, last])
                .map_err(sql("commit: trim delete"))?;
            pending[i].records -= records;
            pending[i].bytes -= bytes;
        }
        outcome.trimmed.push((records as u64, bytes as u64));
    }

    if !batch.entries.is_empty() {
        let mut dedup = tx
            .prepare_cached(UPSERT_DEDUP)
            .map_err(sql("commit: prepare dedup upsert"))?;
        let mut insert = tx
            .prepare_cached(INSERT_ITEM)
            .map_err(sql("commit: prepare enqueue"))?;
        for entry in &batch.entries {
            let fresh = match &entry.dedup {
                // The upsert changes nothing (0 rows) exactly when the key is stored with the
                // same value: one b-tree descent both decides and records it.
                Some(d) => {
                    dedup
                        .execute(params![d.scope, d.key, d.value, d.expires_at_unix_ms])
                        .map_err(sql("commit: upsert dedup key"))?
                        > 0
                }
                None => true,
            };
            outcome.inserted.push(fresh);
            if !fresh {
                outcome.duplicates += 1;
                continue;
            }
            let len = i64::try_from(entry.data.len()).unwrap_or(i64::MAX);
            for &q in &entry.queues {
                let i = pending_for(pending, q)?;
                let p = &mut pending[i];
                if p.next_seq > MAX_SEQ {
                    return Err(StateError::SeqExhausted { queue: q });
                }
                insert
                    .execute(params![item_key(q, p.next_seq), entry.id, entry.data])
                    .map_err(sql("commit: enqueue record"))?;
                p.next_seq += 1;
                p.enqueued = true;
                p.records += 1;
                p.bytes += len;
            }
        }
        let mut update = tx
            .prepare_cached(UPDATE_NEXT_SEQ)
            .map_err(sql("commit: prepare next_seq update"))?;
        for p in pending.iter().filter(|p| p.enqueued) {
            update
                .execute(params![p.id.0, p.next_seq as i64])
                .map_err(sql("commit: store next_seq"))?;
        }
    }

    for (stream, value) in &batch.checkpoints {
        upsert_checkpoint(tx, stream, value, now_unix_ms)?;
    }

    for ack in &batch.acks {
        let i = pending_for(pending, ack.queue)?;
        let (lo, hi) = (item_key(ack.queue, 0), item_key(ack.queue, ack.up_to_seq));
        if hi > lo {
            let (records, bytes): (i64, i64) = tx
                .prepare_cached(ACKED_SIZE)
                .map_err(sql("commit: prepare ack count"))?
                .query_row(params![lo, hi], |row| Ok((row.get(0)?, row.get(1)?)))
                .map_err(sql("commit: count acked records"))?;
            if records > 0 {
                tx.prepare_cached(DELETE_ACKED)
                    .map_err(sql("commit: prepare ack delete"))?
                    .execute(params![lo, hi])
                    .map_err(sql("commit: delete acked records"))?;
                pending[i].records -= records;
                pending[i].bytes -= bytes;
            }
        }
        if let Some((stream, value)) = &ack.state {
            upsert_checkpoint(tx, stream, value, now_unix_ms)?;
        }
    }
    Ok(())
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
            queues: queues.to_vec(),
            id: id.into(),
            data: data.to_vec(),
        }
    }

    fn entries(entries: Vec<Entry>) -> CommitBatch {
        CommitBatch {
            entries,
            ..CommitBatch::default()
        }
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
        assert_eq!(
            store.queue_depth(q),
            QueueDepth {
                records: 3,
                bytes: 13
            }
        );
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
        let dir = tempfile::tempdir().expect("tempdir");
        let (q, r) = {
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
            assert_eq!(
                store.queue_depth(q),
                QueueDepth {
                    records: 3,
                    bytes: 1100
                }
            );
            store
                .commit(&CommitBatch {
                    acks: vec![Ack {
                        queue: q,
                        up_to_seq: 1,
                        state: None,
                    }],
                    ..CommitBatch::default()
                })
                .expect("ack");
            assert_eq!(
                store.queue_depth(q),
                QueueDepth {
                    records: 2,
                    bytes: 1000
                }
            );
            (q, r)
        };
        let store = open(&dir);
        assert_eq!(
            store.queue_depth(q),
            QueueDepth {
                records: 2,
                bytes: 1000
            }
        );
        assert_eq!(
            store.queue_depth(r),
            QueueDepth {
                records: 1,
                bytes: 1000
            }
        );
        assert_eq!(store.queue_depth(QueueId(999)), QueueDepth::default());
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
                data: vec![3; 5000]
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
    fn drained_space_can_be_reclaimed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = open(&dir);
        let q = store.queue_id("q").expect("queue");
        store
            .commit(&entries(
                (0..200)
                    .map(|i| entry(&i.to_string(), None, &[q], &[7; 4000]))
                    .collect(),
            ))
            .expect("commit");
        store
            .commit(&CommitBatch {
                acks: vec![Ack {
                    queue: q,
                    up_to_seq: 200,
                    state: None,
                }],
                ..CommitBatch::default()
            })
            .expect("ack");
        let free = store.free_pages().expect("free");
        assert!(free >= 190, "200 records of 4000 bytes freed {free} pages");
        assert_eq!(store.reclaim_space(50).expect("reclaim"), 50);
        assert_eq!(store.free_pages().expect("free"), free - 50);
    }
}

#[cfg(test)]
mod trim_tests {
    use super::*;
    use crate::batch::{Entry, Trim};

    #[test]
    fn trims_drop_the_oldest_records_until_enough_bytes_are_free() {
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
        let entries = (0..10)
            .map(|i| Entry {
                dedup: None,
                queues: vec![q],
                id: i.to_string(),
                data: vec![b'x'; 100],
            })
            .collect();
        store
            .commit(&CommitBatch {
                entries,
                ..Default::default()
            })
            .unwrap();
        let out = store
            .commit(&CommitBatch {
                trims: vec![Trim {
                    queue: q,
                    free_bytes: 250,
                }],
                ..Default::default()
            })
            .unwrap();
        assert_eq!(out.trimmed, vec![(3, 300)]);
        assert_eq!(store.queue_depth(q).records, 7);
        assert_eq!(store.queue_depth(q).bytes, 700);
        let mut r = store.reader().unwrap();
        let items = r.read_queue(q, 0, 100, usize::MAX).unwrap();
        assert_eq!(items.first().map(|i| i.id.as_str()), Some("3"));
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
        assert_eq!(out.trimmed, vec![(7, 700)]);
        assert_eq!(store.queue_depth(q).records, 0);
    }
}
