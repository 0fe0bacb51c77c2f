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
use crate::format::{self, SegmentFormat};
use crate::queue::{QueueId, QueueItem};
use crate::recent::Recent;
use crate::segments::{Hints, LogEnd, LogError, Segments, queue_dir};
use crate::store::{connect, open_error, pragma, read_checkpoint};

/// How much of a segment a read fetches at once at most (more when one unit is larger).
const READ_BLOCK: usize = 1 << 20;
/// ... and at least: a read asking for few or small records fetches a smaller chunk, since
/// format-1 items keep their chunk in memory until they are dropped.
const MIN_READ_BLOCK: usize = 64 << 10;
/// Frame bytes besides the data (header, id) assumed per record when sizing a chunk.
const FRAME_OVERHEAD_GUESS: usize = 64;

/// Page cache of a reader, in KiB: readers look up a queue's bounds and checkpoints only
/// (records are in segment files), a few pages.
const READER_CACHE_KIB: i64 = 256;

/// A read-only connection to the state database. `Send`, not `Sync`: one per thread.
pub struct Reader {
    conn: Connection,
    root: PathBuf,
    hints: Arc<Hints>,
    /// The writer's newest committed blocks (`None`: always read the segments).
    recent: Option<Arc<Recent>>,
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

/// A decompressed block: where it is in the log, its first record's seq and its records'
/// bytes (which the items read from it share).
#[derive(Debug)]
struct Decoded {
    pos: u64,
    /// Its length in the log.
    len: u64,
    first_seq: u64,
    count: u64,
    raw: Bytes,
}

/// One queue's segments as this reader sees them, and where its last read ended.
#[derive(Debug)]
struct QueueLog {
    segments: Segments,
    /// `(seq, pos)` of the record after the last one returned and the unit holding it.
    cursor: Option<(u64, u64)>,
    /// The block the last read stopped inside, so that the next one does not decompress it
    /// again.
    decoded: Option<Decoded>,
    buf: Vec<u8>,
    /// Records of damaged blocks met by reads, until taken.
    damaged: Vec<DamagedRecord>,
    /// Blocks taken from the writer's recent blocks instead of the segment.
    #[cfg(test)]
    recent_hits: u64,
}

/// A record of a queue segment block whose bytes are damaged (its checksum, or its block's
/// structure, does not hold): skipped by reads, reported by [`Reader::take_damaged`] so that
/// it goes to the dead-letter file instead of stopping the queue. When a block's header is
/// damaged, the reader skips to the next intact header and one `DamagedRecord` stands for
/// every record in between (`first_seq..=seq`), whose bounds are lost.
#[derive(Debug, Clone)]
pub struct DamagedRecord {
    /// The first record it stands for: `seq` for one record, lower for a run of records lost
    /// with a damaged block header.
    pub first_seq: u64,
    pub seq: u64,
    /// The id as far as it could be read (lossy), empty when the record's bounds are lost.
    pub id: String,
    /// The bytes salvaged, possibly wrong; empty when the record's bounds are lost.
    pub data: Bytes,
    /// The segment file and the offset in it of the damaged block.
    pub path: PathBuf,
    pub offset: u64,
    /// What is wrong.
    pub what: String,
}

/// The bytes read from the log at `pos` on (within one segment), and that segment's format.
struct Chunk {
    pos: u64,
    bytes: Bytes,
    format: SegmentFormat,
}

impl Chunk {
    /// Whether `len` bytes at log position `pos` are in the chunk.
    fn holds(&self, pos: u64, len: usize) -> bool {
        pos >= self.pos && (pos - self.pos) as usize + len <= self.bytes.len()
    }
}

impl QueueLog {
    fn new(dir: PathBuf) -> QueueLog {
        QueueLog {
            segments: Segments::new(dir),
            cursor: None,
            decoded: None,
            buf: Vec::new(),
            damaged: Vec::new(),
            #[cfg(test)]
            recent_hits: 0,
        }
    }

    /// A block whose payload fails its checksum: its intact records (their own checksums
    /// hold) from `from` on go to `items`, the others to `self.damaged`, and the damage is
    /// logged with the file and offset. Returns the seq after the block.
    fn salvage(
        &mut self,
        h: &format::BlockHeader,
        payload: &[u8],
        place: (PathBuf, u64),
        what: String,
        from: u64,
        items: &mut Vec<QueueItem>,
    ) -> u64 {
        let (path, offset) = place;
        let raw = Bytes::from(format::decompress(h, payload).unwrap_or_default());
        let end = h.first_seq + u64::from(h.count);
        // A record's place gives its sequence number only while the framing holds: a damaged
        // length can swallow the next record or split one in two, and every record after it
        // would be numbered wrongly. The framing holds when the payload parses into exactly
        // the header's count of records; otherwise nothing after the first damaged record is
        // trusted.
        let parsed: Vec<Option<format::RawRecord>> = format::records(&raw)
            .take(h.count as usize + 1)
            .map(Result::ok)
            .collect();
        let framed = parsed.len() == h.count as usize && parsed.iter().all(Option::is_some);
        let mut records = parsed.into_iter();
        let (mut intact, mut lost) = (0u64, 0u64);
        let mut trusted = true;
        for n in h.first_seq..end {
            // Past the loss of framing a record's bytes still go to the dead-letter file (its
            // id says which record it was), but it is not delivered under this number.
            let record = records.next().flatten();
            let sound = trusted
                && record.as_ref().is_some_and(|r| {
                    !(r.id.is_empty() && r.data.is_empty())
                        && r.intact(&raw)
                        && std::str::from_utf8(&raw[r.id.clone()]).is_ok()
                });
            if !sound && !framed {
                trusted = false;
            }
            if n < from {
                continue;
            }
            match record {
                // An empty id with empty data has checksum 0: a run of zero bytes (a zeroed
                // tail, a misread length) would pass for one, and no real record is empty.
                Some(r) if sound => {
                    intact += 1;
                    items.push(QueueItem {
                        seq: n,
                        id: String::from_utf8_lossy(&raw[r.id.clone()]).into_owned(),
                        data: raw.slice(r.data),
                    });
                }
                other => {
                    lost += 1;
                    let (id, data) = other.map_or((String::new(), Bytes::new()), |r| {
                        (
                            String::from_utf8_lossy(&raw[r.id.clone()]).into_owned(),
                            raw.slice(r.data),
                        )
                    });
                    self.damaged.push(DamagedRecord {
                        first_seq: n,
                        seq: n,
                        id,
                        data,
                        path: path.clone(),
                        offset,
                        what: what.clone(),
                    });
                }
            }
        }
        tracing::error!(path = %path.display(), offset, error = %what, records_intact = intact,
            records_damaged = lost, first_seq = h.first_seq,
            "a queue segment block is damaged: its intact records are delivered, the damaged ones go to the dead-letter file");
        end
    }

    fn corrupt(&self, what: String) -> LogError {
        LogError::Corrupt {
            dir: self.segments.dir().to_path_buf(),
            what,
        }
    }

    /// Where the unit holding record `want` starts: the tail, this reader's cursor, a hint,
    /// or a walk.
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
            && let Some(u) = self.segments.unit_at(pos, b.head_pos, &mut self.buf)?
            && u.holds(want)
        {
            return Ok(pos);
        }
        let (seq, pos) = self.segments.walk(
            b.tail_seq,
            b.tail_pos,
            want,
            LogEnd {
                next_seq: b.next_seq,
                head: b.head_pos,
            },
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

    /// Reads the records from `want` on, up to `max_records` and `max_bytes` of data (at least
    /// one record). The items' data are slices of the blocks decompressed (format 2) or of
    /// the chunks read (format 1): no copy per record.
    #[allow(clippy::too_many_arguments)]
    fn read(
        &mut self,
        hints: &Hints,
        recent: Option<&Recent>,
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
        let chunk_size = max_bytes
            .saturating_add(max_records.saturating_mul(FRAME_OVERHEAD_GUESS))
            .clamp(MIN_READ_BLOCK, READ_BLOCK);
        let mut chunk = Chunk {
            pos,
            bytes: Bytes::new(),
            format: SegmentFormat::V2,
        };
        let full = |items: &Vec<QueueItem>, bytes: usize, data_len: usize| {
            items.len() >= max_records
                || (!items.is_empty() && bytes.saturating_add(data_len) > max_bytes)
        };
        'units: while seq < b.next_seq && pos < b.head_pos && items.len() < max_records {
            if let Some(d) = self.decoded.take_if(|d| d.pos == pos) {
                // The rest of the block the last read stopped inside.
                let (reached, next) = self.take(d, seq, &mut items, &mut bytes, &full)?;
                seq = reached;
                match next {
                    Some(next) => pos = next,
                    None => break 'units,
                }
                continue;
            }
            // A block the writer committed a moment ago: its records as it wrote them, with
            // no read, checksum or decompression (anything else is read from the segment).
            if let Some(r) = recent.and_then(|r| r.get(q, pos))
                && r.first_seq <= seq
                && seq < r.first_seq + r.count
                && (r.first_seq == seq || seq == want)
            {
                #[cfg(test)]
                {
                    self.recent_hits += 1;
                }
                let d = Decoded {
                    pos,
                    len: r.len,
                    first_seq: r.first_seq,
                    count: r.count,
                    raw: r.raw,
                };
                let (kept_items, kept_bytes) = (items.len(), bytes);
                match self.take(d, seq, &mut items, &mut bytes, &full) {
                    Ok((reached, next)) => {
                        seq = reached;
                        match next {
                            Some(next) => pos = next,
                            None => break 'units,
                        }
                        continue;
                    }
                    // The copy in memory does not check out (it never should): the block is
                    // read from the segment instead, as if it had not been kept.
                    Err(e) => {
                        tracing::warn!(queue = q.0, position = pos, error = %e,
                            "a block kept in memory does not match its header: read from the segment");
                        items.truncate(kept_items);
                        bytes = kept_bytes;
                    }
                }
            }
            if !chunk.holds(pos, chunk.format.unit_header_len()) {
                chunk = self.read_chunk(pos, b.head_pos, chunk_size)?;
            }
            let off = (pos - chunk.pos) as usize;
            let parsed = format::parse_unit(chunk.format, &chunk.bytes[off..]).and_then(|u| {
                self.segments
                    .check_v1_frame(chunk.format, u, seq, pos, b.head_pos)
            });
            let unit = match parsed {
                Ok(unit) => unit,
                // A damaged block header (or format-1 frame): its length, and so where the
                // next unit starts, is lost. The next intact header (its own checksum holds;
                // in format 1, the next segment's first frame) is found by looking for it,
                // and the records in between are reported as damaged.
                Err(e) => {
                    let (path, offset) = self.segments.place(pos, b.head_pos);
                    let (next_seq, next_pos) = self.segments.next_intact(
                        pos,
                        seq,
                        LogEnd {
                            next_seq: b.next_seq,
                            head: b.head_pos,
                        },
                    )?;
                    tracing::error!(path = %path.display(), offset, error = %e, first_seq = seq,
                        records_lost = next_seq - seq, next_block_position = next_pos,
                        "a queue segment unit header is damaged: its records go to the dead-letter file, the queue goes on at the next intact unit");
                    self.damaged.push(DamagedRecord {
                        first_seq: seq,
                        seq: next_seq - 1,
                        id: String::new(),
                        data: Bytes::new(),
                        path,
                        offset,
                        what: e.to_string(),
                    });
                    // An acknowledgement up to the damage finds where the queue goes on.
                    hints.put(q, next_seq, next_pos);
                    seq = next_seq;
                    pos = next_pos;
                    continue;
                }
            };
            if !unit.holds(seq) || (unit.first_seq != seq && seq != want) {
                return Err(self.corrupt(format!(
                    "the unit at position {pos} holds seqs {}..{}, not {seq}",
                    unit.first_seq,
                    unit.end_seq()
                )));
            }
            let len = usize::try_from(unit.len).unwrap_or(usize::MAX);
            if chunk.format == SegmentFormat::V1 {
                let f = format::parse_v1_frame_header(&chunk.bytes[off..])
                    .map_err(|e| self.segments.damaged(pos, b.head_pos, e))?;
                let data_len = len - format::V1_FRAME_HEADER_LEN - f.id_len as usize;
                if full(&items, bytes, data_len) {
                    break;
                }
            }
            if !chunk.holds(pos, len) {
                chunk = self.read_chunk(pos, b.head_pos, len.max(chunk_size))?;
                if !chunk.holds(pos, len) {
                    return Err(self.corrupt(format!(
                        "the unit at position {pos} runs past its segment's committed end"
                    )));
                }
            }
            let off = (pos - chunk.pos) as usize;
            let unit_bytes = chunk.bytes.slice(off..off + len);
            match chunk.format {
                SegmentFormat::V1 => {
                    let f = format::parse_v1_frame_header(&unit_bytes)
                        .map_err(|e| self.segments.damaged(pos, b.head_pos, e))?;
                    let id_end = format::V1_FRAME_HEADER_LEN + f.id_len as usize;
                    let id = std::str::from_utf8(&unit_bytes[format::V1_FRAME_HEADER_LEN..id_end])
                        .map_err(|_| {
                            self.corrupt(format!("record {seq} has an id that is not UTF-8"))
                        })?
                        .to_owned();
                    let data = unit_bytes.slice(id_end..);
                    bytes = bytes.saturating_add(data.len());
                    items.push(QueueItem { seq, id, data });
                    seq += 1;
                    pos += unit.len;
                }
                SegmentFormat::V2 => {
                    let h = format::parse_block_header(&unit_bytes)
                        .map_err(|e| self.segments.damaged(pos, b.head_pos, e))?;
                    let payload = &unit_bytes[format::BLOCK_HEADER_LEN..];
                    let raw = match format::decode_payload(&h, payload) {
                        Ok(raw) => raw,
                        Err(e) => {
                            // The header holds (its own checksum): the block's length, and so
                            // where the next one starts, can be trusted.
                            let place = self.segments.place(pos, b.head_pos);
                            seq = self.salvage(&h, payload, place, e.to_string(), seq, &mut items);
                            pos += unit.len;
                            continue;
                        }
                    };
                    let d = Decoded {
                        pos,
                        len: unit.len,
                        first_seq: h.first_seq,
                        count: u64::from(h.count),
                        raw: Bytes::from(raw),
                    };
                    let (reached, next) = self.take(d, seq, &mut items, &mut bytes, &full)?;
                    seq = reached;
                    match next {
                        Some(next) => pos = next,
                        None => break 'units,
                    }
                }
            }
        }
        self.cursor = Some((seq, pos));
        hints.put(q, seq, pos);
        Ok(items)
    }

    /// Adds the records of block `d` from `seq` on to `items` until `full` says stop. Returns
    /// the seq reached and whether the block is done.
    /// The records of decoded block `d` from `seq` on, into `items`: the seq reached, and
    /// where the next block starts, or `None` when the read filled up inside this one (kept
    /// for the next read to go on from).
    fn take(
        &mut self,
        d: Decoded,
        seq: u64,
        items: &mut Vec<QueueItem>,
        bytes: &mut usize,
        full: &impl Fn(&Vec<QueueItem>, usize, usize) -> bool,
    ) -> Result<(u64, Option<u64>), LogError> {
        let (reached, done) = self.items_of(&d, seq, items, bytes, full)?;
        if done {
            Ok((reached, Some(d.pos + d.len)))
        } else {
            self.decoded = Some(d);
            Ok((reached, None))
        }
    }

    fn items_of(
        &mut self,
        d: &Decoded,
        mut seq: u64,
        items: &mut Vec<QueueItem>,
        bytes: &mut usize,
        full: &impl Fn(&Vec<QueueItem>, usize, usize) -> bool,
    ) -> Result<(u64, bool), LogError> {
        let mut n = d.first_seq;
        for r in format::records(&d.raw) {
            let r = r.map_err(|e| self.corrupt(format!("block at position {}: {e}", d.pos)))?;
            if n >= seq {
                if full(items, *bytes, r.data.len()) {
                    return Ok((seq, false));
                }
                let id = std::str::from_utf8(&d.raw[r.id.clone()])
                    .map_err(|_| self.corrupt(format!("record {n} has an id that is not UTF-8")))?
                    .to_owned();
                *bytes = bytes.saturating_add(r.data.len());
                items.push(QueueItem {
                    seq: n,
                    id,
                    data: d.raw.slice(r.data),
                });
                seq = n + 1;
            }
            n += 1;
        }
        if n != d.first_seq + d.count {
            return Err(self.corrupt(format!(
                "the block at position {} holds {} records, its header says {}",
                d.pos,
                n - d.first_seq,
                d.count
            )));
        }
        Ok((seq, true))
    }

    /// Reads up to `want` bytes of the log from `pos` (within one segment) into a new chunk.
    fn read_chunk(&mut self, pos: u64, head: u64, want: usize) -> Result<Chunk, LogError> {
        let mut buf = Vec::new();
        let format = self.segments.read_block(pos, head, want, &mut buf)?;
        Ok(Chunk {
            pos,
            bytes: Bytes::from(buf),
            format,
        })
    }
}

#[cfg(test)]
impl Reader {
    /// This reader, reading every block from the segments.
    pub(crate) fn without_recent(mut self) -> Reader {
        self.recent = None;
        self
    }

    /// Blocks of queue `q` this reader took from the writer's recent blocks.
    pub(crate) fn recent_hits(&self, q: QueueId) -> u64 {
        self.logs.get(&q).map_or(0, |l| l.recent_hits)
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
        recent: Arc<Recent>,
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
            recent: Some(recent),
            logs: HashMap::new(),
        })
    }

    /// The damaged records of queue `q` that reads skipped since the last call, in seq order
    /// (see [`DamagedRecord`]). A read that met a damaged block returns its intact records,
    /// possibly more than `max_records`, and none when every record after `after_seq` it
    /// reached was damaged: the caller acknowledges up to the last damaged seq.
    pub fn take_damaged(&mut self, q: QueueId) -> Vec<DamagedRecord> {
        self.logs
            .get_mut(&q)
            .map(|l| std::mem::take(&mut l.damaged))
            .unwrap_or_default()
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
        let recent = self.recent.clone();
        let recent = recent.as_deref();
        let log = self
            .logs
            .entry(q)
            .or_insert_with(|| QueueLog::new(queue_dir(&root, q)));
        let result = log.read(
            &hints,
            recent,
            q,
            &bounds,
            want,
            max_records.max(1),
            max_bytes,
        );
        match result {
            Ok(items) => Ok(items),
            Err(LogError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                // The writer removed a segment meanwhile (the output's records were trimmed
                // by drop_oldest): start again from the current tail.
                log.cursor = None;
                log.decoded = None;
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
                log.read(
                    &hints,
                    recent,
                    q,
                    &bounds,
                    want,
                    max_records.max(1),
                    max_bytes,
                )
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
