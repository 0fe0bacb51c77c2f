//! Queue payloads on disk: each output queue is an append-only log split into segment files
//! of about [`SEGMENT_TARGET`] bytes, under `<database>-queues/q<id>/`. SQLite keeps only
//! positions (the committed head, the acknowledged tail; see store.rs), so a record is written
//! once, sequentially, instead of into the WAL and then again into a b-tree page.
//!
//! A position is a byte offset in the queue's endless log; a segment file is named after the
//! position of its first byte (`00000000000000123456.seg`). Segments hold whole units only: a
//! commit's records go into checksummed, compressed blocks (format 2, after a 16-byte file
//! header that is not part of the positions), or, in segments written by kubetrail before
//! format 2, uncompressed frames of one record each. format.rs has the bytes; this module the
//! files. A segment's format is read from its first bytes, so a queue upgraded from format 1
//! holds old segments first and new ones after; the writer never appends to an old one.
//!
//! Crash safety comes from the order of writes in a commit: blocks are written past the
//! committed head (and fsynced, in `SyncMode::Full`) before the SQLite transaction that moves
//! the head commits. Bytes past the committed head are garbage by definition: readers never
//! look at them, the writer overwrites them, and opening the store cuts them off.
//!
//! A segment whose records are all acknowledged is not deleted but kept as the queue's spare
//! (`spare.seg`, one at most), and the next new segment is that file renamed and overwritten
//! from its start, as databases recycle their write-ahead log files: writing into pages the
//! page cache already holds is several times cheaper than growing a new file (the kernel
//! allocates, zeroes and maps every new page). The old bytes past what the new segment holds
//! are never read: a segment's bytes end where the next segment starts, and the last
//! segment's at the committed head.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::fault::{FaultSite, Faults};
use crate::format::{self, FormatError, SegmentFormat, Unit};
use crate::queue::QueueId;

/// A commit that finds its queue's current segment at least this long starts a new one.
/// Segments are deleted whole once every record in them is acknowledged, so this is also the
/// disk space a drained queue can keep.
pub(crate) const SEGMENT_TARGET: u64 = 32 << 20;
/// How much a walk reads at once.
const BLOCK: usize = 1 << 20;
const SEGMENT_EXT: &str = "seg";
/// The name of a queue's recycled segment (not a segment name: listings ignore it).
const SPARE: &str = "spare.seg";

/// The most bytes one record can add to its queue's log, which is what admission against
/// `storage.total_limit_size` counts for records not yet written (a record alone in a block,
/// stored uncompressed); once written, a queue's size is the bytes its blocks take.
pub fn frame_len(id_len: usize, data_len: usize) -> u64 {
    format::BLOCK_HEADER_LEN as u64 + format::record_len(id_len, data_len)
}

/// The directory holding every queue's segments, beside the database file.
pub(crate) fn queues_root(db: &Path) -> PathBuf {
    let mut name = db
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "kubetrail.db".into());
    name.push("-queues");
    db.with_file_name(name)
}

/// One queue's directory.
pub(crate) fn queue_dir(root: &Path, q: QueueId) -> PathBuf {
    root.join(format!("q{}", q.get()))
}

pub(crate) fn segment_path(dir: &Path, start: u64) -> PathBuf {
    dir.join(format!("{start:020}.{SEGMENT_EXT}"))
}

/// The segment start positions in `dir`, ascending. Other files are ignored.
pub(crate) fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut starts = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(starts),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(".seg")
            && stem.len() == 20
            && let Ok(start) = stem.parse::<u64>()
        {
            starts.push(start);
        }
    }
    starts.sort_unstable();
    Ok(starts)
}

/// fsyncs a directory, so that files created or removed in it survive a power loss.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Asks the kernel to start writing `len` bytes at `offset` of `file` to disk now
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which does not wait), so that the commit's fsync
/// finds most of them written. Advisory: durability still comes from that fsync alone.
fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (
            libc::off64_t::try_from(offset),
            libc::off64_t::try_from(len),
        ) else {
            return;
        };
        // SAFETY: sync_file_range only reads its integer arguments; the descriptor is open for
        // the duration of the call (borrowed from `file`). A failure is reported by the fsync.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// Why a queue's log could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The operating system refused a read, a write or an fsync.
    #[error("queue log {}: {what}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// The log does not match the database (a missing segment, records out of place).
    #[error("queue log {}: {what}", dir.display())]
    Corrupt { dir: PathBuf, what: String },
    /// Bytes of a segment file are damaged: `offset` is where in the file.
    #[error("queue segment {} is damaged at byte {offset}: {what}", path.display())]
    Damaged {
        path: PathBuf,
        offset: u64,
        what: String,
    },
}

/// Opens a segment file and reads its format from its first bytes.
fn open_segment(path: &Path, write: bool) -> Result<(File, SegmentFormat), LogError> {
    let f = OpenOptions::new()
        .read(true)
        .write(write)
        .open(path)
        .map_err(|source| LogError::Io {
            path: path.to_path_buf(),
            what: "open segment",
            source,
        })?;
    let mut head = [0u8; format::FILE_HEADER_LEN as usize];
    let mut got = 0;
    while got < head.len() {
        match f.read_at(&mut head[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(LogError::Io {
                    path: path.to_path_buf(),
                    what: "read segment header",
                    source,
                });
            }
        }
    }
    let fmt = format::parse_file_header(&head[..got]).map_err(|e| LogError::Damaged {
        path: path.to_path_buf(),
        offset: 0,
        what: e.to_string(),
    })?;
    Ok((f, fmt))
}

/// Where a queue's committed log ends: the seq of the next record and the head position.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogEnd {
    pub next_seq: u64,
    pub head: u64,
}

/// The offsets in `buf` where a block's magic starts.
fn block_magics(buf: &[u8]) -> impl Iterator<Item = usize> + '_ {
    buf.windows(format::BLOCK_MAGIC.len())
        .enumerate()
        .filter(|(_, w)| *w == format::BLOCK_MAGIC)
        .map(|(i, _)| i)
}

/// Read access to one queue's segments, for readers and for the writer's walks. Keeps the
/// last segment it opened.
#[derive(Debug)]
pub(crate) struct Segments {
    dir: PathBuf,
    starts: Vec<u64>,
    open: Option<(u64, File, SegmentFormat)>,
}

impl Segments {
    pub fn new(dir: PathBuf) -> Segments {
        Segments {
            dir,
            starts: Vec::new(),
            open: None,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the list of segments from the writer, who knows it exactly.
    pub fn set_starts(&mut self, starts: &[u64]) {
        self.starts.clear();
        self.starts.extend_from_slice(starts);
        if let Some((s, _, _)) = &self.open
            && !self.starts.contains(s)
        {
            self.open = None;
        }
    }

    /// Re-reads the list of segment files (after the writer may have added or removed some).
    pub fn refresh(&mut self) -> Result<(), LogError> {
        self.starts = list_segments(&self.dir).map_err(|source| LogError::Io {
            path: self.dir.clone(),
            what: "list segments",
            source,
        })?;
        Ok(())
    }

    /// The segment holding `pos`, and where its committed bytes end (the next segment's start,
    /// or `head`).
    pub fn locate(&self, pos: u64, head: u64) -> Result<(u64, u64), LogError> {
        let i = self.starts.partition_point(|s| *s <= pos);
        if i == 0 {
            return Err(LogError::Corrupt {
                dir: self.dir.clone(),
                what: format!("no segment holds position {pos}"),
            });
        }
        let start = self.starts[i - 1];
        let end = self.starts.get(i).copied().unwrap_or(head).min(head);
        Ok((start, end))
    }

    fn file(&mut self, start: u64) -> Result<(&File, SegmentFormat), LogError> {
        if self.open.as_ref().is_none_or(|(s, _, _)| *s != start) {
            let (f, fmt) = open_segment(&segment_path(&self.dir, start), false)?;
            self.open = Some((start, f, fmt));
        }
        match &self.open {
            Some((_, f, fmt)) => Ok((f, *fmt)),
            None => unreachable!("opened above"),
        }
    }

    /// Where position `pos` is: its segment file and the byte offset in it.
    pub fn place(&mut self, pos: u64, head: u64) -> (PathBuf, u64) {
        match self.locate(pos, head) {
            Ok((start, _)) => {
                let header = self.file(start).map_or(0, |(_, fmt)| fmt.header_len());
                (segment_path(&self.dir, start), pos - start + header)
            }
            Err(_) => (self.dir.clone(), pos),
        }
    }

    /// A [`LogError::Damaged`] for the bytes at log position `pos`.
    pub fn damaged(&mut self, pos: u64, head: u64, e: FormatError) -> LogError {
        let (path, offset) = self.place(pos, head);
        LogError::Damaged {
            path,
            offset,
            what: e.to_string(),
        }
    }

    /// Reads up to `want` bytes at `pos` (never past the segment's committed end) into `buf`,
    /// replacing its contents. Returns the segment's format.
    pub fn read_block(
        &mut self,
        pos: u64,
        head: u64,
        want: usize,
        buf: &mut Vec<u8>,
    ) -> Result<SegmentFormat, LogError> {
        let (start, end) = self.locate(pos, head)?;
        let n = usize::try_from(end.saturating_sub(pos))
            .unwrap_or(usize::MAX)
            .min(want);
        buf.clear();
        buf.resize(n, 0);
        let dir = self.dir.clone();
        let (f, fmt) = self.file(start)?;
        f.read_exact_at(buf, pos - start + fmt.header_len())
            .map_err(|source| LogError::Io {
                path: segment_path(&dir, start),
                what: "read segment",
                source,
            })?;
        Ok(fmt)
    }

    /// After a damaged block header at `from` (a block holding `seq`): the seq and position of
    /// the next block whose header is intact (its magic and checksum hold, its first seq is
    /// past `seq` and before the end, it ends within its segment), found by looking through
    /// the rest of the segment and then the next ones (a segment starts with a block); the
    /// end of the log when there is none.
    pub fn next_intact(
        &mut self,
        from: u64,
        seq: u64,
        end: LogEnd,
    ) -> Result<(u64, u64), LogError> {
        let mut pos = from + 1;
        let mut buf = Vec::new();
        while pos < end.head {
            let (seg_start, seg_end) = self.locate(pos, end.head)?;
            let mut at = pos;
            while at < seg_end {
                let fmt = self.read_block(at, end.head, BLOCK, &mut buf)?;
                if fmt != SegmentFormat::V2 {
                    // Format-1 frames carry no magic to find: past the damage, the next
                    // segment, which starts with a frame.
                    if at == seg_start
                        && let Ok(u) = format::parse_unit(fmt, &buf)
                        && u.first_seq > seq
                        && u.first_seq < end.next_seq
                        && at + u.len <= seg_end
                    {
                        return Ok((u.first_seq, at));
                    }
                    break;
                }
                let found = block_magics(&buf).find_map(|i| {
                    let h = format::parse_block_header(&buf[i..]).ok()?;
                    let p = at + i as u64;
                    (h.first_seq > seq && h.first_seq < end.next_seq && p + h.total() <= seg_end)
                        .then_some((h.first_seq, p))
                });
                if let Some(found) = found {
                    return Ok(found);
                }
                if at + buf.len() as u64 >= seg_end || buf.len() <= format::BLOCK_HEADER_LEN {
                    break;
                }
                // The next chunk overlaps this one by a header's length but one, so that a
                // header cut by the chunk's end is seen whole.
                at += (buf.len() - format::BLOCK_HEADER_LEN + 1) as u64;
            }
            pos = seg_end;
        }
        Ok((end.next_seq, end.head))
    }

    /// Walks the log's units from `(seq, pos)` (`pos` starts the unit holding `seq`) until
    /// the unit holding record `target`, or the end; calls `each(unit)` for every unit passed
    /// over and stops before a unit for which it returns false. Returns the `(seq, pos)`
    /// reached: `(target, start of its unit)` when found. A block whose header is damaged is
    /// passed over as one unit up to the next intact block (see [`Segments::next_intact`]):
    /// readers report its records, which is how an acknowledgement or a trim gets past them.
    pub fn walk(
        &mut self,
        mut seq: u64,
        mut pos: u64,
        target: u64,
        end: LogEnd,
        buf: &mut Vec<u8>,
        mut each: impl FnMut(&Unit) -> bool,
    ) -> Result<(u64, u64), LogError> {
        let head = end.head;
        let mut block_pos = pos;
        let mut fmt = SegmentFormat::V2;
        let mut first = true;
        buf.clear();
        while seq < target && pos < head {
            let off = (pos - block_pos) as usize;
            if off + fmt.unit_header_len() > buf.len() {
                fmt = self.read_block(pos, head, BLOCK, buf)?;
                block_pos = pos;
                if buf.len() < fmt.unit_header_len() {
                    return Err(self.damaged(
                        pos,
                        head,
                        FormatError::Short {
                            need: fmt.unit_header_len() as u64,
                            have: buf.len() as u64,
                        },
                    ));
                }
                continue;
            }
            let parsed = format::parse_unit(fmt, &buf[off..])
                .and_then(|u| self.check_v1_frame(fmt, u, seq, pos, head));
            let u = match parsed {
                Ok(u) => u,
                Err(e) => {
                    let (next_seq, next_pos) = self.next_intact(pos, seq, end)?;
                    if next_seq <= seq {
                        return Err(self.damaged(pos, head, e));
                    }
                    let (path, offset) = self.place(pos, head);
                    tracing::warn!(path = %path.display(), offset, error = %e, first_seq = seq, next_seq,
                        "passing over a queue segment block whose header is damaged");
                    // The next read starts afresh at the unit after it.
                    buf.clear();
                    block_pos = next_pos;
                    Unit {
                        first_seq: seq,
                        count: next_seq - seq,
                        len: next_pos - pos,
                    }
                }
            };
            let in_place = if first {
                u.holds(seq)
            } else {
                u.first_seq == seq
            };
            if !in_place {
                return Err(LogError::Corrupt {
                    dir: self.dir.clone(),
                    what: format!(
                        "the unit at position {pos} holds seqs {}..{}, not {seq}",
                        u.first_seq,
                        u.end_seq()
                    ),
                });
            }
            if u.holds(target) {
                return Ok((target, pos));
            }
            if !each(&u) {
                break;
            }
            first = false;
            pos += u.len;
            seq = u.end_seq();
        }
        Ok((seq, pos))
    }

    /// A format-1 frame has no checksum: a damaged one shows as a frame that does not hold
    /// the seq due at its place (`seq`) or runs past its segment's end. Such a frame is an
    /// error, as a header that does not parse is; a format-2 unit passes as it is (its header
    /// has a checksum of its own).
    pub fn check_v1_frame(
        &self,
        fmt: SegmentFormat,
        u: Unit,
        seq: u64,
        pos: u64,
        head: u64,
    ) -> Result<Unit, FormatError> {
        if fmt != SegmentFormat::V1 {
            return Ok(u);
        }
        if u.first_seq != seq {
            return Err(FormatError::Header(format!(
                "format-1 frame holds seq {} where seq {seq} is due",
                u.first_seq
            )));
        }
        match self.locate(pos, head) {
            Ok((_, seg_end)) if pos + u.len <= seg_end => Ok(u),
            _ => Err(FormatError::Header(format!(
                "format-1 frame of {} bytes runs past its segment's end",
                u.len
            ))),
        }
    }

    /// Reads the header of the unit at `pos`, if it is before `head`.
    pub fn unit_at(
        &mut self,
        pos: u64,
        head: u64,
        buf: &mut Vec<u8>,
    ) -> Result<Option<Unit>, LogError> {
        if pos >= head {
            return Ok(None);
        }
        let fmt = self.read_block(pos, head, format::BLOCK_HEADER_LEN, buf)?;
        Ok(format::parse_unit(fmt, buf).ok())
    }
}

/// The writer's side of one queue's log: the segment being appended to.
#[derive(Debug)]
pub(crate) struct Appender {
    dir: PathBuf,
    /// Existing segments (the writer is the only one adding or removing them).
    starts: Vec<u64>,
    /// The last segment, open for writing, and its format.
    current: Option<(u64, File, SegmentFormat)>,
    /// Whether this commit created the current segment (its directory entry needs an fsync).
    created: bool,
    /// Whether this commit wrote anything.
    dirty: bool,
    /// Segment size after which a commit starts a new one.
    target: u64,
    /// Whether the directory holds a spare segment file to reuse.
    spare: bool,
    /// Injected faults (tests only; see fault.rs).
    faults: Faults,
}

impl Appender {
    /// Opens a queue's log for appending at `head`, after a restart or creation: creates the
    /// directory, removes segments wholly before `tail` or starting at or after `head`, and
    /// cuts the last one back to `head` (bytes past it were never committed).
    pub fn open(
        dir: PathBuf,
        tail: u64,
        head: u64,
        target: u64,
        faults: Faults,
    ) -> Result<Appender, LogError> {
        let io_err = |path: &Path, what: &'static str| {
            let path = path.to_path_buf();
            move |source| LogError::Io { path, what, source }
        };
        fs::create_dir_all(&dir).map_err(io_err(&dir, "create queue directory"))?;
        let mut starts = list_segments(&dir).map_err(io_err(&dir, "list segments"))?;
        let mut removed = false;
        // Segments that start at or past the head hold only uncommitted bytes.
        while let Some(&last) = starts.last() {
            if last >= head {
                let p = segment_path(&dir, last);
                fs::remove_file(&p).map_err(io_err(&p, "remove uncommitted segment"))?;
                starts.pop();
                removed = true;
            } else {
                break;
            }
        }
        // Segments whose every byte is before the tail are acknowledged.
        while starts.len() > 1 && starts[1] <= tail {
            let p = segment_path(&dir, starts[0]);
            fs::remove_file(&p).map_err(io_err(&p, "remove acknowledged segment"))?;
            starts.remove(0);
            removed = true;
        }
        if removed {
            faults
                .check(FaultSite::DirSync)
                .and_then(|()| sync_dir(&dir))
                .map_err(io_err(&dir, "sync queue directory"))?;
        }
        if head > tail && starts.first().is_none_or(|s| *s > tail) {
            return Err(LogError::Corrupt {
                dir: dir.clone(),
                what: format!(
                    "the committed records between positions {tail} and {head} have no segment file"
                ),
            });
        }
        let mut current = None;
        if let Some(&last) = starts.last() {
            let p = segment_path(&dir, last);
            let (f, fmt) = open_segment(&p, true)?;
            let committed = head - last + fmt.header_len();
            let len = f.metadata().map_err(io_err(&p, "stat segment"))?.len();
            if len < committed {
                return Err(LogError::Corrupt {
                    dir: dir.clone(),
                    what: format!(
                        "segment {} is {len} bytes long but {committed} are committed",
                        p.display()
                    ),
                });
            }
            if len > committed {
                f.set_len(committed)
                    .map_err(io_err(&p, "cut uncommitted bytes"))?;
            }
            current = Some((last, f, fmt));
        }
        let spare = dir.join(SPARE).is_file();
        Ok(Appender {
            dir,
            starts,
            current,
            created: false,
            dirty: false,
            target,
            spare,
            faults,
        })
    }

    /// Starts this commit's appends at `head`: a new segment if there is none yet, the current
    /// one reached its target size, or it is of format 1 (read, never appended to).
    pub fn begin(&mut self, head: u64) -> Result<(), LogError> {
        self.dirty = false;
        self.created = false;
        let roll = match &self.current {
            None => true,
            Some((start, _, fmt)) => {
                *fmt != SegmentFormat::V2 || head.saturating_sub(*start) >= self.target
            }
        };
        if roll {
            let p = segment_path(&self.dir, head);
            // The spare, renamed, keeps its old bytes: they are past the head until
            // overwritten. (A crash before the head moves leaves a segment starting at the
            // committed head, which opening the store removes.)
            let reuse = std::mem::take(&mut self.spare)
                && match fs::rename(self.dir.join(SPARE), &p) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(dir = %self.dir.display(), error = %e, "cannot reuse the spare queue segment; creating a new one");
                        false
                    }
                };
            let io_err = |what| {
                let path = p.clone();
                move |source| LogError::Io { path, what, source }
            };
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(!reuse)
                .open(&p)
                .map_err(io_err("create segment"))?;
            if self.starts.last() != Some(&head) {
                self.starts.push(head);
            }
            // In the list before the header is written: a failed commit's rollback or the
            // next open removes it.
            self.current = Some((head, f, SegmentFormat::V2));
            self.created = true;
            self.dirty = true;
            if let Some((_, f, _)) = &self.current {
                f.write_all_at(&format::file_header(), 0)
                    .and_then(|()| self.faults.check(FaultSite::SegmentWrite))
                    .map_err(io_err("write segment header"))?;
            }
        }
        Ok(())
    }

    /// Writes the blocks in `slices` (headers and payloads, in order) at log position `pos`,
    /// inside the current segment, with vectored writes: stored payloads go from the batch to
    /// the file without being copied into one buffer first.
    pub fn write_vectored_at(
        &mut self,
        pos: u64,
        mut slices: &mut [IoSlice<'_>],
    ) -> Result<(), LogError> {
        let Some((start, f, fmt)) = &self.current else {
            return Err(LogError::Corrupt {
                dir: self.dir.clone(),
                what: "append without a segment".into(),
            });
        };
        if *fmt != SegmentFormat::V2 || pos < *start {
            return Err(LogError::Corrupt {
                dir: self.dir.clone(),
                what: format!("append at position {pos} outside the current segment"),
            });
        }
        let io_err = |source| LogError::Io {
            path: segment_path(&self.dir, *start),
            what: "write segment",
            source,
        };
        let offset = pos - start + fmt.header_len();
        let mut file = f;
        file.seek(SeekFrom::Start(offset)).map_err(io_err)?;
        let mut written = 0u64;
        while !slices.is_empty() {
            match file.write_vectored(slices) {
                Ok(0) => return Err(io_err(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    written += n as u64;
                    IoSlice::advance_slices(&mut slices, n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(e)),
            }
        }
        self.dirty = true;
        self.faults.check(FaultSite::SegmentWrite).map_err(io_err)?;
        start_writeback(f, offset, written);
        Ok(())
    }

    /// Makes this commit's appends durable (data, and the new segment's directory entry).
    pub fn sync(&mut self) -> Result<(), LogError> {
        if let Some((start, f, _)) = &self.current
            && self.dirty
        {
            self.faults
                .check(FaultSite::SegmentSync)
                .and_then(|()| f.sync_data())
                .map_err(|source| LogError::Io {
                    path: segment_path(&self.dir, *start),
                    what: "fsync segment",
                    source,
                })?;
        }
        if self.created {
            self.faults
                .check(FaultSite::DirSync)
                .and_then(|()| sync_dir(&self.dir))
                .map_err(|source| LogError::Io {
                    path: self.dir.clone(),
                    what: "fsync queue directory",
                    source,
                })?;
        }
        Ok(())
    }

    /// After a failed commit: cuts the current segment back to the committed `head`, or
    /// removes it when this commit made it (its header may be incomplete).
    pub fn rollback(&mut self, head: u64) {
        self.dirty = false;
        let Some((start, f, fmt)) = &self.current else {
            return;
        };
        if *start < head {
            let _ = f.set_len(head - start + fmt.header_len());
            return;
        }
        let p = segment_path(&self.dir, *start);
        self.current = None;
        if self.starts.last() == Some(&head) {
            self.starts.pop();
        }
        if let Err(e) = fs::remove_file(&p)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %p.display(), error = %e, "cannot remove a segment of a failed commit; the next start will");
        }
    }

    /// Releases the segments whose every unit is before `tail` (all acknowledged or
    /// trimmed): the first becomes the spare when `recycle` allows and there is none yet (and
    /// it is not outsized), the others are deleted. `recycle` must be false when a reader may
    /// still be inside them (a trim moved the tail past an output's reads): an open file that
    /// is deleted keeps its bytes, a recycled one does not. Failing to delete only wastes space
    /// until the next start, so errors are logged.
    pub fn release_before(&mut self, tail: u64, recycle: bool) {
        let mut removed = false;
        while self.starts.len() > 1 && self.starts[1] <= tail {
            let p = segment_path(&self.dir, self.starts[0]);
            let fits = self.starts[1] - self.starts[0] <= 2 * self.target;
            let result = self.faults.check(FaultSite::SegmentRemove).and_then(|()| {
                if recycle && fits && !self.spare {
                    fs::rename(&p, self.dir.join(SPARE)).map(|()| self.spare = true)
                } else {
                    fs::remove_file(&p)
                }
            });
            if let Err(e) = result {
                tracing::warn!(path = %p.display(), error = %e, "cannot remove an acknowledged queue segment");
                break;
            }
            self.starts.remove(0);
            removed = true;
        }
        if removed
            && let Err(e) = self
                .faults
                .check(FaultSite::DirSync)
                .and_then(|()| sync_dir(&self.dir))
        {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot fsync the queue directory");
        }
    }

    /// For a full disk: deletes the spare segment and, when the queue is drained (`tail` is
    /// `head`), every segment (the next commit starts a new one at the head).
    pub fn give_back(&mut self, tail: u64, head: u64) {
        if self.spare {
            match fs::remove_file(self.dir.join(SPARE)) {
                Ok(()) => self.spare = false,
                Err(e) if e.kind() == io::ErrorKind::NotFound => self.spare = false,
                Err(e) => {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "cannot delete the spare queue segment")
                }
            }
        }
        if tail < head || self.starts.is_empty() {
            return;
        }
        self.current = None;
        while let Some(start) = self.starts.pop() {
            let p = segment_path(&self.dir, start);
            if let Err(e) = self
                .faults
                .check(FaultSite::SegmentRemove)
                .and_then(|()| fs::remove_file(&p))
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(path = %p.display(), error = %e, "cannot remove a drained queue segment");
                // Still listed, so that the next open removes it.
                self.starts.push(start);
                break;
            }
        }
        if let Err(e) = sync_dir(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot fsync the queue directory");
        }
    }

    /// The start positions of the queue's segments.
    pub fn starts(&self) -> &[u64] {
        &self.starts
    }

    /// How many segment files the queue has.
    pub fn segment_count(&self) -> usize {
        self.starts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_end(next_seq: u64, head: u64) -> LogEnd {
        LogEnd { next_seq, head }
    }

    /// A block of records `(seq, id, data)` as the writer makes it.
    pub(crate) fn block(first_seq: u64, recs: &[(&str, &[u8])]) -> Vec<u8> {
        let mut raw = Vec::new();
        for (id, data) in recs {
            format::push_record(&mut raw, id.as_bytes(), data);
        }
        let mut out = Vec::new();
        let (h, payload) = format::seal_block(first_seq, recs.len() as u32, &raw, &mut out);
        let mut b = h.encode().to_vec();
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn segment_names_sort_by_position_and_foreign_files_are_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        for start in [300u64, 5, 1 << 40] {
            File::create(segment_path(dir.path(), start)).expect("create");
        }
        File::create(dir.path().join("notes.txt")).expect("create");
        File::create(dir.path().join("12.seg")).expect("create");
        assert_eq!(
            list_segments(dir.path()).expect("list"),
            vec![5, 300, 1 << 40]
        );
    }

    #[test]
    fn open_cuts_uncommitted_bytes_and_drops_dead_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let qdir = dir.path().join("q1");
        let mut a =
            Appender::open(qdir.clone(), 0, 0, SEGMENT_TARGET, Faults::default()).expect("open");
        a.begin(0).expect("begin");
        let b1 = block(1, &[("a", b"xxxx"), ("b", b"yyyy")]);
        let b2 = block(3, &[("c", b"zzzz")]);
        a.write_vectored_at(0, &mut [IoSlice::new(&b1), IoSlice::new(&b2)])
            .expect("write");
        a.sync().expect("sync");
        let head = (b1.len() + b2.len()) as u64;
        // Garbage past the head (an uncommitted append), and a segment past it.
        a.write_vectored_at(head, &mut [IoSlice::new(b"garbage")])
            .expect("write");
        File::create(segment_path(&qdir, head + 100)).expect("create");
        drop(a);
        let a = Appender::open(qdir.clone(), 0, head, SEGMENT_TARGET, Faults::default())
            .expect("reopen");
        assert_eq!(a.segment_count(), 1);
        let len = fs::metadata(segment_path(&qdir, 0)).expect("stat").len();
        assert_eq!(len, head + format::FILE_HEADER_LEN);

        let mut s = Segments::new(qdir.clone());
        s.refresh().expect("refresh");
        let mut buf = Vec::new();
        let mut seen = Vec::new();
        let end = s
            .walk(1, 0, u64::MAX, log_end(4, head), &mut buf, |u| {
                seen.push((u.first_seq, u.count));
                true
            })
            .expect("walk");
        assert_eq!(seen, [(1, 2), (3, 1)]);
        assert_eq!(end, (4, head));
        // Seq 2 is inside the first block: the walk stops at that block's start.
        assert_eq!(
            s.walk(1, 0, 2, log_end(4, head), &mut buf, |_| true)
                .expect("walk"),
            (2, 0)
        );
        assert_eq!(
            s.walk(1, 0, 3, log_end(4, head), &mut buf, |_| true)
                .expect("walk"),
            (3, b1.len() as u64)
        );
        // Records committed but without a segment file: refused, not silently skipped.
        fs::remove_file(segment_path(&qdir, 0)).expect("rm");
        let err = Appender::open(qdir, 0, head, SEGMENT_TARGET, Faults::default())
            .expect_err("missing segment");
        assert!(matches!(err, LogError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn a_damaged_block_header_is_passed_over_to_the_next_intact_block() {
        let dir = tempfile::tempdir().expect("tempdir");
        let qdir = dir.path().join("q1");
        let mut a =
            Appender::open(qdir.clone(), 0, 0, SEGMENT_TARGET, Faults::default()).expect("open");
        a.begin(0).expect("begin");
        let b1 = block(1, &[("a", b"xxxx")]);
        let b2 = block(2, &[("b", b"yyyy"), ("c", b"zzzz")]);
        let b3 = block(4, &[("d", b"wwww")]);
        a.write_vectored_at(
            0,
            &mut [IoSlice::new(&b1), IoSlice::new(&b2), IoSlice::new(&b3)],
        )
        .expect("write");
        let head = (b1.len() + b2.len() + b3.len()) as u64;
        let path = segment_path(&qdir, 0);
        let mut bytes = fs::read(&path).expect("read");
        let at = format::FILE_HEADER_LEN as usize + b1.len() + 9;
        bytes[at] ^= 1;
        fs::write(&path, &bytes).expect("write");
        let mut s = Segments::new(qdir);
        s.refresh().expect("refresh");
        let mut seen = Vec::new();
        let reached = s
            .walk(1, 0, u64::MAX, log_end(5, head), &mut Vec::new(), |u| {
                seen.push((u.first_seq, u.count, u.len));
                true
            })
            .expect("walk");
        // The damaged block is one unit up to the next intact header.
        let (l1, l2, l3) = (b1.len() as u64, b2.len() as u64, b3.len() as u64);
        assert_eq!(seen, [(1, 1, l1), (2, 2, l2), (4, 1, l3)]);
        assert_eq!(reached, (5, head));
        // A walk to a record after it, or to one inside it.
        assert_eq!(
            s.walk(1, 0, 4, log_end(5, head), &mut Vec::new(), |_| true)
                .expect("walk"),
            (4, l1 + l2)
        );
        assert_eq!(
            s.walk(1, 0, 3, log_end(5, head), &mut Vec::new(), |_| true)
                .expect("walk"),
            (3, l1)
        );
        // The last block damaged: passed over to the end of the log.
        assert_eq!(
            s.next_intact(l1 + l2, 4, log_end(5, head)).expect("next"),
            (5, head)
        );
    }
}

/// Where frames start, as learned by readers: `(seq, pos)` pairs per queue. An output
/// acknowledges the last record of a batch it read, and the writer must turn that sequence
/// number into the position after it; the reader that handed out the batch knows it, so it
/// leaves it here and the writer checks it against the frame header instead of walking the
/// log. Bounded: a handful per queue.
#[derive(Debug, Default)]
pub(crate) struct Hints {
    inner: std::sync::Mutex<
        std::collections::HashMap<QueueId, std::collections::VecDeque<(u64, u64)>>,
    >,
}

/// Hints kept per queue.
const HINTS_PER_QUEUE: usize = 64;

impl Hints {
    /// Frame `seq` starts at `pos`.
    pub fn put(&self, q: QueueId, seq: u64, pos: u64) {
        if let Ok(mut m) = self.inner.lock() {
            let v = m.entry(q).or_default();
            if v.back().is_some_and(|(s, _)| *s >= seq) {
                v.retain(|(s, _)| *s < seq);
            }
            v.push_back((seq, pos));
            while v.len() > HINTS_PER_QUEUE {
                v.pop_front();
            }
        }
    }

    /// The position of frame `seq`, if known; forgets hints for frames before it.
    pub fn take(&self, q: QueueId, seq: u64) -> Option<u64> {
        let mut m = self.inner.lock().ok()?;
        let v = m.get_mut(&q)?;
        while v.front().is_some_and(|(s, _)| *s < seq) {
            v.pop_front();
        }
        v.front().filter(|(s, _)| *s == seq).map(|(_, p)| *p)
    }
}
