//! Queue payloads on disk: each output queue is an append-only log of frames, split into
//! segment files of about [`SEGMENT_TARGET`] bytes, under `<database>-queues/q<id>/`. SQLite
//! keeps only positions (the committed head, the acknowledged tail; see store.rs), so a record
//! is written once, sequentially, instead of into the WAL and then again into a b-tree page.
//!
//! A position is a byte offset in the queue's endless log; a segment file is named after the
//! position of its first byte (`00000000000000123456.seg`) and holds whole frames only. Frame:
//!
//! ```text
//! u32 LE  total frame length (header + id + data)
//! u32 LE  id length
//! u64 LE  sequence number
//! id bytes (UTF-8), data bytes
//! ```
//!
//! Crash safety comes from the order of writes in a commit: frames are written past the
//! committed head (and fsynced, in `SyncMode::Full`) before the SQLite transaction that moves
//! the head commits. Bytes past the committed head are garbage by definition: readers never
//! look at them, the writer overwrites them, and opening the store cuts them off.
//!
//! A segment whose frames are all acknowledged is not deleted but kept as the queue's spare
//! (`spare.seg`, one at most), and the next new segment is that file renamed and overwritten
//! from its start, as databases recycle their write-ahead log files: writing into pages the
//! page cache already holds is several times cheaper than growing a new file (the kernel
//! allocates, zeroes and maps every new page). The old frames past what the new segment
//! holds are never read: a segment's bytes end where the next segment starts, and the last
//! segment's at the committed head.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::queue::QueueId;

/// Bytes of a frame before its id.
pub(crate) const FRAME_HEADER: u64 = 16;
/// A commit that finds its queue's current segment at least this long starts a new one.
/// Segments are deleted whole once every frame in them is acknowledged, so this is also the
/// disk space a drained queue can keep.
pub(crate) const SEGMENT_TARGET: u64 = 32 << 20;
/// How much a reader or a scan reads at once.
const BLOCK: usize = 1 << 20;
const SEGMENT_EXT: &str = "seg";
/// The name of a queue's recycled segment (not a segment name: listings ignore it).
const SPARE: &str = "spare.seg";

/// The bytes a record takes in its queue's log: what queue depths and
/// `storage.total_limit_size` count.
pub fn frame_len(id_len: usize, data_len: usize) -> u64 {
    FRAME_HEADER + id_len as u64 + data_len as u64
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

fn segment_path(dir: &Path, start: u64) -> PathBuf {
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

/// Appends one frame to `out`.
pub(crate) fn encode_frame(out: &mut Vec<u8>, seq: u64, id: &str, data: &[u8]) {
    out.extend_from_slice(&frame_header(seq, id, data));
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(data);
}

/// The header of the frame holding record `id` with `data` as number `seq`; the id and the
/// data follow it.
pub(crate) fn frame_header(seq: u64, id: &str, data: &[u8]) -> [u8; FRAME_HEADER as usize] {
    let total = frame_len(id.len(), data.len());
    // A frame over 4 GiB cannot be described; records are bounded far below that by every
    // source (the largest input line or body is capped at 1 GiB), and the caller checks.
    let mut h = [0u8; FRAME_HEADER as usize];
    h[0..4].copy_from_slice(&(total as u32).to_le_bytes());
    h[4..8].copy_from_slice(&(id.len() as u32).to_le_bytes());
    h[8..16].copy_from_slice(&seq.to_le_bytes());
    h
}

/// The largest record a frame can hold.
pub(crate) const MAX_FRAME: u64 = u32::MAX as u64;

/// A frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub total: u64,
    pub id_len: u64,
    pub seq: u64,
}

pub(crate) fn parse_header(b: &[u8]) -> Option<Header> {
    let total = u64::from(u32::from_le_bytes(b.get(0..4)?.try_into().ok()?));
    let id_len = u64::from(u32::from_le_bytes(b.get(4..8)?.try_into().ok()?));
    let seq = u64::from_le_bytes(b.get(8..16)?.try_into().ok()?);
    (total >= FRAME_HEADER + id_len).then_some(Header { total, id_len, seq })
}

/// Why a queue's log could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("queue log {}: {what}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("queue log {}: {what}", dir.display())]
    Corrupt { dir: PathBuf, what: String },
}

/// Read access to one queue's segments, for readers and for the writer's scans. Keeps the
/// last segment it opened.
#[derive(Debug)]
pub(crate) struct Segments {
    dir: PathBuf,
    starts: Vec<u64>,
    open: Option<(u64, File)>,
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
        if let Some((s, _)) = &self.open
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
    fn locate(&self, pos: u64, head: u64) -> Result<(u64, u64), LogError> {
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

    fn file(&mut self, start: u64) -> Result<&File, LogError> {
        if self.open.as_ref().is_none_or(|(s, _)| *s != start) {
            let path = segment_path(&self.dir, start);
            let f = File::open(&path).map_err(|source| LogError::Io {
                path,
                what: "open segment",
                source,
            })?;
            self.open = Some((start, f));
        }
        match &self.open {
            Some((_, f)) => Ok(f),
            None => unreachable!("opened above"),
        }
    }

    /// Reads up to `want` bytes at `pos` (never past the segment's committed end) into `buf`,
    /// replacing its contents. Returns the number of bytes read.
    pub fn read_block(
        &mut self,
        pos: u64,
        head: u64,
        want: usize,
        buf: &mut Vec<u8>,
    ) -> Result<usize, LogError> {
        let (start, end) = self.locate(pos, head)?;
        let n = usize::try_from(end.saturating_sub(pos))
            .unwrap_or(usize::MAX)
            .min(want);
        buf.clear();
        buf.resize(n, 0);
        let dir = self.dir.clone();
        let f = self.file(start)?;
        f.read_exact_at(buf, pos - start)
            .map_err(|source| LogError::Io {
                path: segment_path(&dir, start),
                what: "read segment",
                source,
            })?;
        Ok(n)
    }

    /// Walks frames from `(seq, pos)` (a frame boundary) until the frame numbered `target`
    /// or `head`; calls `each(header)` for every frame passed over and stops early when it
    /// returns false. Returns the `(seq, pos)` reached.
    pub fn walk(
        &mut self,
        mut seq: u64,
        mut pos: u64,
        target: u64,
        head: u64,
        buf: &mut Vec<u8>,
        mut each: impl FnMut(&Header) -> bool,
    ) -> Result<(u64, u64), LogError> {
        let mut block_pos = pos;
        buf.clear();
        while seq < target && pos < head {
            let off = (pos - block_pos) as usize;
            if off + FRAME_HEADER as usize > buf.len() {
                self.read_block(pos, head, BLOCK, buf)?;
                block_pos = pos;
                continue_if_short(buf, &self.dir, pos)?;
            }
            let off = (pos - block_pos) as usize;
            let h = parse_header(&buf[off..]).ok_or_else(|| LogError::Corrupt {
                dir: self.dir.clone(),
                what: format!("bad frame header at position {pos}"),
            })?;
            if h.seq != seq {
                return Err(LogError::Corrupt {
                    dir: self.dir.clone(),
                    what: format!("frame at position {pos} has seq {} instead of {seq}", h.seq),
                });
            }
            if !each(&h) {
                break;
            }
            pos += h.total;
            seq += 1;
        }
        Ok((seq, pos))
    }

    /// Reads the header of the frame at `pos`, if it is before `head`.
    pub fn header_at(
        &mut self,
        pos: u64,
        head: u64,
        buf: &mut Vec<u8>,
    ) -> Result<Option<Header>, LogError> {
        if pos >= head {
            return Ok(None);
        }
        let n = self.read_block(pos, head, FRAME_HEADER as usize, buf)?;
        if n < FRAME_HEADER as usize {
            return Ok(None);
        }
        Ok(parse_header(buf))
    }
}

fn continue_if_short(buf: &[u8], dir: &Path, pos: u64) -> Result<(), LogError> {
    if buf.len() < FRAME_HEADER as usize {
        return Err(LogError::Corrupt {
            dir: dir.to_path_buf(),
            what: format!("segment ends inside the frame header at position {pos}"),
        });
    }
    Ok(())
}

/// The writer's side of one queue's log: the segment being appended to.
#[derive(Debug)]
pub(crate) struct Appender {
    dir: PathBuf,
    /// Existing segments (the writer is the only one adding or removing them).
    starts: Vec<u64>,
    /// The last segment, open for writing.
    current: Option<(u64, File)>,
    /// Whether this commit created the current segment (its directory entry needs an fsync).
    created: bool,
    /// Whether this commit wrote anything.
    dirty: bool,
    /// Segment size after which a commit starts a new one.
    target: u64,
    /// Whether the directory holds a spare segment file to reuse.
    spare: bool,
}

impl Appender {
    /// Opens a queue's log for appending at `head`, after a restart or creation: creates the
    /// directory, removes segments wholly before `tail` or starting after `head`, and cuts
    /// the last one back to `head` (bytes past it were never committed).
    pub fn open(dir: PathBuf, tail: u64, head: u64, target: u64) -> Result<Appender, LogError> {
        let io_err = |path: &Path, what: &'static str| {
            let path = path.to_path_buf();
            move |source| LogError::Io { path, what, source }
        };
        fs::create_dir_all(&dir).map_err(io_err(&dir, "create queue directory"))?;
        let mut starts = list_segments(&dir).map_err(io_err(&dir, "list segments"))?;
        let mut removed = false;
        // Segments that start past the head hold only uncommitted bytes.
        while let Some(&last) = starts.last() {
            if last > head || (last == head && starts.len() > 1) {
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
            sync_dir(&dir).map_err(io_err(&dir, "sync queue directory"))?;
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
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&p)
                .map_err(io_err(&p, "open segment"))?;
            let committed = head.saturating_sub(last);
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
            current = Some((last, f));
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
        })
    }

    /// Starts this commit's appends at `head`: a new segment if there is none yet or the
    /// current one reached its target size.
    pub fn begin(&mut self, head: u64) -> Result<(), LogError> {
        self.dirty = false;
        self.created = false;
        let roll = match &self.current {
            None => true,
            Some((start, _)) => head.saturating_sub(*start) >= self.target,
        };
        if roll {
            let p = segment_path(&self.dir, head);
            // The spare, renamed, keeps its old bytes: they are past the head until
            // overwritten. (A crash before the head moves leaves a segment starting at the
            // committed head, which opening the store cuts back to nothing.)
            let reuse = std::mem::take(&mut self.spare)
                && match fs::rename(self.dir.join(SPARE), &p) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(dir = %self.dir.display(), error = %e, "cannot reuse the spare queue segment; creating a new one");
                        false
                    }
                };
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(!reuse)
                .open(&p)
                .map_err(|source| LogError::Io {
                    path: p.clone(),
                    what: "create segment",
                    source,
                })?;
            if self.starts.last() != Some(&head) {
                self.starts.push(head);
            }
            self.current = Some((head, f));
            self.created = true;
        }
        Ok(())
    }

    /// Writes `bytes` (whole frames) at log position `pos`, inside the current segment.
    pub fn write_at(&mut self, pos: u64, bytes: &[u8]) -> Result<(), LogError> {
        let Some((start, f)) = &self.current else {
            return Err(LogError::Corrupt {
                dir: self.dir.clone(),
                what: "append without a segment".into(),
            });
        };
        f.write_all_at(bytes, pos - start)
            .map_err(|source| LogError::Io {
                path: segment_path(&self.dir, *start),
                what: "write segment",
                source,
            })?;
        self.dirty = true;
        Ok(())
    }

    /// Writes the frames in `slices` (headers, ids and data, in order) at log position
    /// `pos`, inside the current segment, with vectored writes: the records go from the
    /// batch to the file without being copied into one buffer first.
    pub fn write_vectored_at(
        &mut self,
        pos: u64,
        mut slices: &mut [IoSlice<'_>],
    ) -> Result<(), LogError> {
        let Some((start, f)) = &self.current else {
            return Err(LogError::Corrupt {
                dir: self.dir.clone(),
                what: "append without a segment".into(),
            });
        };
        let io_err = |source| LogError::Io {
            path: segment_path(&self.dir, *start),
            what: "write segment",
            source,
        };
        let mut file = f;
        file.seek(SeekFrom::Start(pos - start)).map_err(io_err)?;
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
        start_writeback(f, pos - start, written);
        self.dirty = true;
        Ok(())
    }

    /// Makes this commit's appends durable (data, and the new segment's directory entry).
    pub fn sync(&mut self) -> Result<(), LogError> {
        if let Some((start, f)) = &self.current
            && self.dirty
        {
            f.sync_data().map_err(|source| LogError::Io {
                path: segment_path(&self.dir, *start),
                what: "fsync segment",
                source,
            })?;
        }
        if self.created {
            sync_dir(&self.dir).map_err(|source| LogError::Io {
                path: self.dir.clone(),
                what: "fsync queue directory",
                source,
            })?;
        }
        Ok(())
    }

    /// After a failed commit: cuts the current segment back to the committed `head`.
    pub fn rollback(&mut self, head: u64) {
        if let Some((start, f)) = &self.current
            && head >= *start
        {
            let _ = f.set_len(head - start);
        }
        self.dirty = false;
    }

    /// Releases the segments whose every frame is before `tail` (all acknowledged or
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
            let result = if recycle && fits && !self.spare {
                fs::rename(&p, self.dir.join(SPARE)).map(|()| self.spare = true)
            } else {
                fs::remove_file(&p)
            };
            if let Err(e) = result {
                tracing::warn!(path = %p.display(), error = %e, "cannot remove an acknowledged queue segment");
                break;
            }
            self.starts.remove(0);
            removed = true;
        }
        if removed && let Err(e) = sync_dir(&self.dir) {
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

    #[test]
    fn frames_round_trip_and_bad_headers_are_refused() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, 7, "id-1", b"payload");
        assert_eq!(buf.len() as u64, frame_len(4, 7));
        let h = parse_header(&buf).expect("header");
        assert_eq!(
            h,
            Header {
                total: frame_len(4, 7),
                id_len: 4,
                seq: 7
            }
        );
        assert_eq!(&buf[16..20], b"id-1");
        // A total shorter than header + id is refused.
        let mut bad = buf.clone();
        bad[0..4].copy_from_slice(&10u32.to_le_bytes());
        assert_eq!(parse_header(&bad), None);
        assert_eq!(parse_header(&buf[..8]), None);
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
        let mut a = Appender::open(qdir.clone(), 0, 0, SEGMENT_TARGET).expect("open");
        a.begin(0).expect("begin");
        let mut frames = Vec::new();
        encode_frame(&mut frames, 1, "a", b"xxxx");
        encode_frame(&mut frames, 2, "b", b"yyyy");
        a.write_at(0, &frames).expect("write");
        a.sync().expect("sync");
        let head = frames.len() as u64;
        // Garbage past the head (an uncommitted append), and a segment past it.
        a.write_at(head, b"garbage").expect("write");
        File::create(segment_path(&qdir, head + 100)).expect("create");
        drop(a);
        let a = Appender::open(qdir.clone(), 0, head, SEGMENT_TARGET).expect("reopen");
        assert_eq!(a.segment_count(), 1);
        let len = fs::metadata(segment_path(&qdir, 0)).expect("stat").len();
        assert_eq!(len, head);

        let mut s = Segments::new(qdir.clone());
        s.refresh().expect("refresh");
        let mut buf = Vec::new();
        let mut seen = Vec::new();
        let end = s
            .walk(1, 0, u64::MAX, head, &mut buf, |h| {
                seen.push(h.seq);
                true
            })
            .expect("walk");
        assert_eq!(seen, [1, 2]);
        assert_eq!(end, (3, head));
        // Records committed but without a segment file: refused, not silently skipped.
        fs::remove_file(segment_path(&qdir, 0)).expect("rm");
        let err = Appender::open(qdir, 0, head, SEGMENT_TARGET).expect_err("missing segment");
        assert!(matches!(err, LogError::Corrupt { .. }), "{err}");
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
