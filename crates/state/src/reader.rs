//! Read-only access for the queue readers (one per output) and for checkpoint lookups on
//! threads other than the writer's: a SQLite connection (in WAL mode each statement reads a
//! consistent snapshot of committed data and neither blocks nor is blocked by the writer) for
//! the queues' committed bounds, and the queues' segment files for the records themselves,
//! read only up to the committed head.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::batch::Checkpoint;
use crate::error::{StateError, sql};
use crate::queue::{QueueId, QueueItem};
use crate::segments::{FRAME_HEADER, Hints, LogError, Segments, parse_header, queue_dir};
use crate::store::{connect, open_error, pragma, read_checkpoint};

/// How much of a segment a read fetches at once at most (more when one record is larger).
const READ_BLOCK: usize = 1 << 20;
/// ... and at least: a read asking for few or small records fetches a smaller block, since
/// its items keep their block in memory until they are dropped.
const MIN_READ_BLOCK: usize = 64 << 10;
/// Frame bytes besides the data (header, id) assumed per record when sizing a block.
const FRAME_OVERHEAD_GUESS: usize = 64;

/// Page cache of a reader, in KiB: readers look up a queue's bounds and checkpoints only
/// (records are in segment files), a few pages.
const READER_CACHE_KIB: i64 = 256;

/// A read-only connection to the state database. `Send`, not `Sync`: one per thread.
pub struct Reader {
    conn: Connection,
    root: PathBuf,
    hints: Arc<Hints>,
    logs: HashMap<QueueId, QueueLog>,
}

/// A queue's committed range, as of one statement.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    tail_seq: u64,
    tail_pos: u64,
    next_seq: u64,
    head_pos: u64,
}

/// One queue's segments as this reader sees them, and where its last read ended.
#[derive(Debug)]
struct QueueLog {
    segments: Segments,
    /// `(seq, pos)` of the frame after the last one returned.
    cursor: Option<(u64, u64)>,
    buf: Vec<u8>,
}

impl QueueLog {
    fn new(dir: PathBuf) -> QueueLog {
        QueueLog {
            segments: Segments::new(dir),
            cursor: None,
            buf: Vec::new(),
        }
    }

    fn corrupt(&self, what: String) -> LogError {
        LogError::Corrupt {
            dir: self.segments.dir().to_path_buf(),
            what,
        }
    }

    /// Where frame `want` starts: the tail, this reader's cursor, a hint, or a walk.
    fn locate(
        &mut self,
        hints: &Hints,
        q: QueueId,
        b: &Bounds,
        want: u64,
    ) -> Result<u64, LogError> {
        if want == b.tail_seq {
            return Ok(b.tail_pos);
        }
        if let Some((seq, pos)) = self.cursor
            && seq == want
            && pos >= b.tail_pos
        {
            return Ok(pos);
        }
        if let Some(pos) = hints.take(q, want)
            && pos >= b.tail_pos
            && let Some(h) = self.segments.header_at(pos, b.head_pos, &mut self.buf)?
            && h.seq == want
        {
            return Ok(pos);
        }
        let (seq, pos) = self.segments.walk(
            b.tail_seq,
            b.tail_pos,
            want,
            b.head_pos,
            &mut self.buf,
            |_| true,
        )?;
        if seq != want {
            return Err(self.corrupt(format!(
                "the log ends at seq {seq} before seq {want} (head position {})",
                b.head_pos
            )));
        }
        Ok(pos)
    }

    /// Reads the frames from `want` on, up to `max_records` and `max_bytes` of data (at least
    /// one frame). The items' data are slices of the blocks read (no copy per record); a
    /// block is sized for the batch asked for, so a small batch does not hold a large block.
    fn read(
        &mut self,
        hints: &Hints,
        q: QueueId,
        b: &Bounds,
        want: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<QueueItem>, LogError> {
        // Segments appear and disappear between reads; the list is cheap to take.
        self.segments.refresh()?;
        let mut pos = self.locate(hints, q, b, want)?;
        let mut seq = want;
        let mut items = Vec::new();
        let mut bytes = 0usize;
        let block_size = max_bytes
            .saturating_add(max_records.saturating_mul(FRAME_OVERHEAD_GUESS))
            .clamp(MIN_READ_BLOCK, READ_BLOCK);
        // `block` holds the log from `block_pos` on.
        let mut block = Bytes::new();
        let mut block_pos = pos;
        while seq < b.next_seq && pos < b.head_pos && items.len() < max_records {
            let mut off = (pos - block_pos) as usize;
            if off + FRAME_HEADER as usize > block.len() {
                block = self.read_block(pos, b.head_pos, block_size)?;
                block_pos = pos;
                off = 0;
            }
            let h = parse_header(&block[off..])
                .ok_or_else(|| self.corrupt(format!("bad frame header at position {pos}")))?;
            if h.seq != seq {
                return Err(self.corrupt(format!(
                    "frame at position {pos} has seq {} instead of {seq}",
                    h.seq
                )));
            }
            let total = usize::try_from(h.total).unwrap_or(usize::MAX);
            let data_len = total - FRAME_HEADER as usize - h.id_len as usize;
            if !items.is_empty() && bytes.saturating_add(data_len) > max_bytes {
                break;
            }
            if off + total > block.len() {
                block = self.read_block(pos, b.head_pos, total.max(block_size))?;
                block_pos = pos;
                off = 0;
                if total > block.len() {
                    return Err(self.corrupt(format!(
                        "the frame at position {pos} runs past its segment's committed end"
                    )));
                }
            }
            let id_start = off + FRAME_HEADER as usize;
            let id_end = id_start + h.id_len as usize;
            let id = std::str::from_utf8(&block[id_start..id_end])
                .map_err(|_| self.corrupt(format!("frame {seq} has an id that is not UTF-8")))?
                .to_owned();
            items.push(QueueItem {
                seq,
                id,
                data: block.slice(id_end..off + total),
            });
            bytes = bytes.saturating_add(data_len);
            pos += h.total;
            seq += 1;
        }
        self.cursor = Some((seq, pos));
        hints.put(q, seq, pos);
        Ok(items)
    }

    /// Reads up to `want` bytes of the log from `pos` (within one segment) into a new block.
    fn read_block(&mut self, pos: u64, head: u64, want: usize) -> Result<Bytes, LogError> {
        let mut buf = Vec::new();
        self.segments.read_block(pos, head, want, &mut buf)?;
        Ok(Bytes::from(buf))
    }
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("path", &self.conn.path())
            .finish_non_exhaustive()
    }
}

impl Reader {
    pub(crate) fn open(
        path: &Path,
        root: PathBuf,
        hints: Arc<Hints>,
        busy_timeout: Duration,
    ) -> Result<Reader, StateError> {
        let conn = connect(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY,
            busy_timeout,
            "open reader",
        )?;
        pragma(&conn, &format!("PRAGMA cache_size = -{READER_CACHE_KIB}"))
            .map_err(open_error(path, "reader cache_size"))?;
        conn.set_prepared_statement_cache_capacity(16);
        Ok(Reader {
            conn,
            root,
            hints,
            logs: HashMap::new(),
        })
    }

    /// Up to `max_records` items of queue `q` with `seq > after_seq`, in seq order, stopping
    /// before the item that would take the total data size past `max_bytes`. The first item is
    /// always returned if one exists, however big, so a large record cannot stall the queue;
    /// `max_records` of 0 counts as 1. Empty when nothing is after `after_seq`. Items before
    /// the queue's tail (acknowledged or trimmed) are not returned.
    pub fn read_queue(
        &mut self,
        q: QueueId,
        after_seq: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<QueueItem>, StateError> {
        let Some(bounds) = self.bounds(q)? else {
            return Ok(Vec::new());
        };
        let want = after_seq.saturating_add(1).max(bounds.tail_seq);
        if want >= bounds.next_seq {
            return Ok(Vec::new());
        }
        let root = self.root.clone();
        let hints = self.hints.clone();
        let log = self
            .logs
            .entry(q)
            .or_insert_with(|| QueueLog::new(queue_dir(&root, q)));
        let result = log.read(&hints, q, &bounds, want, max_records.max(1), max_bytes);
        match result {
            Ok(items) => Ok(items),
            Err(LogError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                // The writer removed a segment meanwhile (the output's records were trimmed
                // by drop_oldest): start again from the current tail.
                log.cursor = None;
                let Some(bounds) = self.bounds(q)? else {
                    return Ok(Vec::new());
                };
                let want = after_seq.saturating_add(1).max(bounds.tail_seq);
                if want >= bounds.next_seq {
                    return Ok(Vec::new());
                }
                let log = self
                    .logs
                    .entry(q)
                    .or_insert_with(|| QueueLog::new(queue_dir(&root, q)));
                log.read(&hints, q, &bounds, want, max_records.max(1), max_bytes)
                    .map_err(StateError::from)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The committed tail and head of queue `q`, or `None` if there is no such queue.
    fn bounds(&mut self, q: QueueId) -> Result<Option<Bounds>, StateError> {
        self.conn
            .prepare_cached(
                "SELECT tail_seq, tail_pos, next_seq, head_pos FROM queues WHERE id = ?1",
            )
            .map_err(sql("prepare queue bounds"))?
            .query_row([i64::from(q.get())], |row| {
                let get = |i| row.get::<_, i64>(i).map(|v| u64::try_from(v).unwrap_or(0));
                Ok(Bounds {
                    tail_seq: get(0)?,
                    tail_pos: get(1)?,
                    next_seq: get(2)?,
                    head_pos: get(3)?,
                })
            })
            .optional()
            .map_err(sql("read queue bounds"))
    }

    /// The committed checkpoint of `stream`, if any.
    pub fn checkpoint(&mut self, stream: &str) -> Result<Option<Checkpoint>, StateError> {
        read_checkpoint(&self.conn, stream)
    }

    /// The lowest seq still in queue `q`, or `None` when it is empty.
    pub fn first_seq(&mut self, q: QueueId) -> Result<Option<u64>, StateError> {
        Ok(self
            .bounds(q)?
            .filter(|b| b.tail_seq < b.next_seq)
            .map(|b| b.tail_seq))
    }

    /// The id of an existing queue, without creating it (only the writer creates queues).
    pub fn queue_id(&mut self, name: &str) -> Result<Option<QueueId>, StateError> {
        let id: Option<i64> = self
            .conn
            .prepare_cached("SELECT id FROM queues WHERE name = ?1")
            .map_err(sql("prepare queue lookup"))?
            .query_row([name], |row| row.get(0))
            .optional()
            .map_err(sql("look up queue"))?;
        Ok(id.and_then(|id| u32::try_from(id).ok()).map(QueueId))
    }
}
