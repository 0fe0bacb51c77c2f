//! The blocking file work of the tailer, run on tokio's blocking pool: scanning the glob
//! (with fingerprints cached by path and file metadata, so an unchanged gzip backup is not
//! decompressed again every scan), opening a file at a checkpoint offset after checking it is
//! the file the checkpoint belongs to, and reading a file into a batch.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use super::batch::LineStore;
use super::fingerprint::{Fingerprint, is_gzip_path, read_start_gzip, read_start_plain};
use super::reader::{Input, LineSplitter, PositionError, last_line_end};

/// Which file (device and inode) an open handle or a path refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    #[cfg(unix)]
    pub fn of(m: &Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        FileId {
            dev: m.dev(),
            ino: m.ino(),
        }
    }

    #[cfg(not(unix))]
    pub fn of(_m: &Metadata) -> FileId {
        // Without inodes, identity rests on fingerprints alone.
        FileId { dev: 0, ino: 0 }
    }
}

/// What a scan saw of a path; a file whose metadata did not change keeps its fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub id: FileId,
    pub len: u64,
    pub mtime: Option<SystemTime>,
}

impl Meta {
    pub fn of(m: &Metadata) -> Meta {
        Meta {
            id: FileId::of(m),
            len: m.len(),
            mtime: m.modified().ok(),
        }
    }
}

/// A file matched by the glob.
#[derive(Debug, Clone)]
pub struct Found {
    pub path: PathBuf,
    pub meta: Meta,
    pub compressed: bool,
    /// `None`: too short to fingerprint yet.
    pub fp: Option<Fingerprint>,
    /// Where reading starts when the file is not read from its head (after its last newline);
    /// only computed when asked for.
    pub tail_start: Option<u64>,
}

/// Fingerprints of the last scan, by path.
pub type ScanCache = HashMap<PathBuf, (Meta, Option<Fingerprint>)>;

/// Lists the files matching `pattern` and none of `exclude` with their fingerprints: plain
/// files first, then gzip files (so a backup that exists both ways is read from the plain
/// file), each group oldest first. Unreadable entries are logged and left out. Returns the new
/// cache (only paths seen now).
pub fn scan(
    pattern: &str,
    exclude: &[glob::Pattern],
    mut cache: ScanCache,
    want_tail_start: bool,
) -> (Vec<Found>, ScanCache) {
    let mut found = Vec::new();
    let mut next_cache = ScanCache::new();
    let paths = match glob::glob(pattern) {
        Ok(p) => p,
        Err(e) => {
            // Checked when the configuration was read; kept total all the same.
            tracing::error!(pattern, error = %e, "invalid path glob");
            return (found, next_cache);
        }
    };
    for entry in paths {
        let path = match entry {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read a path matched by the glob");
                continue;
            }
        };
        if exclude.iter().any(|p| p.matches_path(&path)) {
            continue;
        }
        let Ok(m) = std::fs::metadata(&path) else {
            continue;
        };
        if !m.is_file() {
            continue;
        }
        let meta = Meta::of(&m);
        let compressed = is_gzip_path(&path);
        let cached = cache
            .remove(&path)
            .filter(|(old, _)| *old == meta)
            .map(|(_, fp)| fp);
        let (fp, tail_start) = match cached {
            Some(fp) if !want_tail_start || compressed || fp.is_none() => (fp, None),
            _ => match look(&path, compressed, want_tail_start) {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(path = %path.display(), error = %e, "cannot read a file matched by the glob");
                    continue;
                }
            },
        };
        next_cache.insert(path.clone(), (meta.clone(), fp));
        found.push(Found {
            path,
            meta,
            compressed,
            fp,
            tail_start,
        });
    }
    found.sort_by(|a, b| {
        (a.compressed, a.meta.mtime, &a.path).cmp(&(b.compressed, b.meta.mtime, &b.path))
    });
    (found, next_cache)
}

/// The fingerprint of a file, and (for a plain file, when asked) where its last line ends.
fn look(
    path: &Path,
    compressed: bool,
    want_tail_start: bool,
) -> io::Result<(Option<Fingerprint>, Option<u64>)> {
    let file = File::open(path)?;
    if compressed {
        return Ok((Fingerprint::of_start(&read_start_gzip(file)), None));
    }
    let fp = Fingerprint::of_start(&read_start_plain(&file)?);
    let tail = if want_tail_start && fp.is_some() {
        let len = file.metadata()?.len();
        Some(last_line_end(&file, len)?)
    } else {
        None
    };
    Ok((fp, tail))
}

/// A file being read.
pub struct OpenFile {
    input: Input,
    pub splitter: LineSplitter,
    pub id: FileId,
    pub compressed: bool,
    /// The last read found no more data.
    pub at_eof: bool,
}

impl std::fmt::Debug for OpenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenFile")
            .field("id", &self.id)
            .field("compressed", &self.compressed)
            .field("at_eof", &self.at_eof)
            .field("line_start", &self.splitter.line_start())
            .finish()
    }
}

/// A tracked file's connection to the file system.
#[derive(Debug, Default)]
pub enum Handle {
    /// Not open: nothing to read now (read to the end, truncated, or not found).
    #[default]
    Detached,
    /// To be opened at the entry's offset (at the next read).
    Pending {
        path: PathBuf,
        compressed: bool,
    },
    Open(Box<OpenFile>),
}

/// What a read step is about.
#[derive(Debug, Clone)]
pub struct StepParams {
    pub fp: Fingerprint,
    pub path: Arc<str>,
    pub offset: u64,
    pub max_line: usize,
    pub chunk: usize,
    /// The batch is full at this many lines or bytes.
    pub limit_records: usize,
    pub limit_bytes: usize,
}

/// How a read step ended.
#[derive(Debug)]
pub enum StepEnd {
    /// The batch is full; the file may have more.
    Full,
    /// No more data for now.
    Eof,
    /// A gzip stream ended: the file is complete and was read whole (last partial line
    /// included).
    Ended,
    /// The file is shorter than what was read, or its start changed: truncated (or rewritten)
    /// in place.
    Truncated,
    /// The file to open is not this entry's file any more (gone, different content, shorter
    /// than the checkpoint).
    Lost(String),
    /// Reading failed (or a gzip stream is corrupt or still being written).
    Failed(io::Error),
}

/// Opens a pending file, or reads an open one, adding lines to `store` until the batch is
/// full or there is no more data. Returns the new handle, how the step ended and how many
/// bytes were read.
pub fn step(handle: Handle, store: &mut LineStore, p: &StepParams) -> (Handle, StepEnd, u64) {
    let (mut of, resumed) = match handle {
        Handle::Detached => return (Handle::Detached, StepEnd::Eof, 0),
        Handle::Pending { path, compressed } => match open(&path, compressed, p) {
            Ok(of) => (Box::new(of), false),
            Err(end) => return (Handle::Detached, end, 0),
        },
        Handle::Open(of) => (of, true),
    };
    if resumed && !of.compressed {
        // Check the file was not cut or replaced in place since the last read (copytruncate):
        // reading on at the old position would start in the middle of some other line.
        match still_same(&of, p.fp) {
            Ok(true) => {}
            Ok(false) => return (Handle::Detached, StepEnd::Truncated, 0),
            Err(e) => return (Handle::Detached, StepEnd::Failed(e), 0),
        }
    }
    of.at_eof = false;
    let mut read = 0u64;
    if store.is_empty() {
        // A batch read at full speed fills up to the byte limit and one line more; one that
        // is read as lines come holds a few, and the pages reserved and not written to are
        // never touched, so they take no memory.
        store.reserve(p.limit_bytes.saturating_add(p.chunk));
    }
    loop {
        while let Some(event) = of.splitter.next_event() {
            store.push(p.fp, &p.path, event);
            if store.len() >= p.limit_records || store.bytes() >= p.limit_bytes {
                return (Handle::Open(of), StepEnd::Full, read);
            }
        }
        let OpenFile {
            input, splitter, ..
        } = &mut *of;
        match splitter.fill(input) {
            Ok(0) => {
                of.at_eof = true;
                if of.compressed {
                    if let Some(event) = of.splitter.finish() {
                        store.push(p.fp, &p.path, event);
                    }
                    return (Handle::Open(of), StepEnd::Ended, read);
                }
                return (Handle::Open(of), StepEnd::Eof, read);
            }
            Ok(n) => read += n as u64,
            Err(e) => return (Handle::Open(of), StepEnd::Failed(e), read),
        }
    }
}

/// Whether an open plain file still holds what was read from it: not shorter than the read
/// position, and the same first bytes.
fn still_same(of: &OpenFile, fp: Fingerprint) -> io::Result<bool> {
    let Input::Plain(file) = &of.input else {
        return Ok(true);
    };
    let len = file.metadata()?.len();
    if len < of.splitter.read_pos() {
        return Ok(false);
    }
    Ok(Fingerprint::of_start(&read_start_plain(file)?) == Some(fp))
}

fn open(path: &Path, compressed: bool, p: &StepParams) -> Result<OpenFile, StepEnd> {
    let file = File::open(path).map_err(|e| StepEnd::Lost(format!("cannot open: {e}")))?;
    let id = FileId::of(&file.metadata().map_err(StepEnd::Failed)?);
    let start = if compressed {
        let start = read_start_gzip(file.try_clone().map_err(StepEnd::Failed)?);
        // The clone shares the read position: rewind it for the real read.
        (&file).seek(SeekFrom::Start(0)).map_err(StepEnd::Failed)?;
        start
    } else {
        read_start_plain(&file).map_err(StepEnd::Failed)?
    };
    if Fingerprint::of_start(&start) != Some(p.fp) {
        return Err(StepEnd::Lost(
            "its content is not the file being tracked any more".into(),
        ));
    }
    let input = Input::open_at(file, compressed, p.offset).map_err(|e| match e {
        PositionError::TooShort => {
            StepEnd::Lost(format!("shorter than the checkpoint offset {}", p.offset))
        }
        PositionError::Io(e) => StepEnd::Failed(e),
    })?;
    Ok(OpenFile {
        input,
        splitter: LineSplitter::new(p.offset, p.max_line, p.chunk),
        id,
        compressed,
        at_eof: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_leaves_out_excluded_paths() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["audit.log", "audit-1.log.gz", "notes.txt"] {
            std::fs::write(dir.path().join(name), "{\"auditID\":\"a\"}\n").unwrap();
        }
        let pattern = format!("{}/*", dir.path().display());
        let exclude = vec![
            glob::Pattern::new("*.gz").unwrap(),
            glob::Pattern::new("*/notes.*").unwrap(),
        ];
        let (found, _) = scan(&pattern, &exclude, ScanCache::new(), false);
        let names: Vec<_> = found
            .iter()
            .map(|f| f.path.file_name().unwrap().to_string_lossy().to_string())
            .collect();
        assert_eq!(names, vec!["audit.log"]);
        let (all, _) = scan(&pattern, &[], ScanCache::new(), false);
        assert_eq!(all.len(), 3);
    }
}
