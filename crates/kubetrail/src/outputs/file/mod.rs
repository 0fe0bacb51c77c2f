//! The `file` output: JSON lines appended to one file, fsynced per batch, rotated by size, and
//! optionally compressed (`compress: gzip|zstd`, see [`compress`]).
//!
//! Exactly once across crashes: the length of the file that holds only acknowledged records is
//! committed with each acknowledgement (in the same transaction that removes the batch from
//! the queue). At start the file is cut back to that length, so a batch written but not
//! acknowledged before a crash is not kept twice when it is delivered again. A compressed
//! batch is one gzip member or zstd frame, so that length is always a member boundary too.
//!
//! Rotation happens only at a committed boundary: the current file is renamed to `<file>.1`
//! (`<file>.1.gz`, `<file>.1.zst` when compressed; older ones shift up to `max_files`) and a
//! new one started. If a crash comes between the rename and the next acknowledgement, the new
//! file is shorter than the committed length; everything in it is then unacknowledged and it
//! is cut to zero.
//!
//! The committed state names the codec along with the length (`"<len>"` for an uncompressed
//! file, as before compression existed; `"<len> gzip"`, `"<len> zstd"`), because each codec
//! writes its own file (`<file>`, `<file>.gz`, `<file>.zst`). When the configured codec is not
//! the committed one, the output switches files at start as a rotation would: the committed
//! file is cut back to its committed length and renamed into its codec's rotated series, and
//! the new codec's file is started empty. Since a file is always renamed away when the output
//! switches from it, a file of another codec under its active name was made after the last
//! acknowledgement (by a switch that a crash interrupted) and holds nothing acknowledged.

pub mod compress;
#[cfg(test)]
mod tests;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use kubetrail_core::config::{ConfigError, Section};
use kubetrail_state::QueueItem;

use self::compress::{Codec, Encoder};
use crate::outputs::stdout::{StdoutFormat, render};
use crate::pipeline::{DeliveryError, Output};

/// Errors of the file output's own I/O.
#[derive(Debug, thiserror::Error)]
pub enum FileOutputError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<FileOutputError> for DeliveryError {
    fn from(e: FileOutputError) -> Self {
        DeliveryError::Retryable {
            message: e.to_string(),
            retry_after: None,
        }
    }
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> FileOutputError + 'a {
    move |source| FileOutputError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// What the output commits with each acknowledgement: how long its file is, and which of the
/// codecs' files that is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Committed {
    len: u64,
    codec: Codec,
}

impl Committed {
    fn encode(self) -> String {
        match self.codec.state_name() {
            None => self.len.to_string(),
            Some(codec) => format!("{} {codec}", self.len),
        }
    }

    /// `None` for a state this output cannot read (then nothing in the file is cut).
    fn decode(s: &str) -> Option<Committed> {
        let mut words = s.split_whitespace();
        let len = words.next()?.parse().ok()?;
        let codec = Codec::from_state_name(words.next())?;
        words.next().is_none().then_some(Committed { len, codec })
    }
}

/// The `file` output.
pub struct FileOutput {
    dir: PathBuf,
    /// The file name (`file`), before the codec's extension.
    name: String,
    codec: Codec,
    encoder: Option<Encoder>,
    max_size: u64,
    max_files: u32,
    fsync: bool,
    drop_cache: bool,
    mkdir: bool,
    format: StdoutFormat,
    file: Option<File>,
    len: u64,
    /// A rendered batch (`format: pretty`).
    buf: Vec<u8>,
    /// A compressed batch.
    member: Vec<u8>,
}

impl FileOutput {
    /// Options: `path` (directory, required), `file` (name, default `kubetrail.jsonl`),
    /// `max_size` (rotate beyond this size, default 100M, 0 = never), `max_files` (rotated
    /// files kept, default 5), `fsync` (default on), `drop_cache` (default on: see
    /// [`drop_written_pages`]), `mkdir` (default on), `format` (`json_lines` or `pretty`),
    /// `compress` (`gzip` or `zstd`, default off).
    pub fn from_section(s: &mut Section) -> Result<FileOutput, ConfigError> {
        let dir = s.get_str("path")?.filter(|p| !p.is_empty());
        let name = s.get_str_or("file", "kubetrail.jsonl")?;
        let Some(dir) = dir else {
            return Err(s.error("path", "is required: the directory to write to"));
        };
        if name.is_empty() || name.contains('/') {
            return Err(s.error("file", "must be a file name without '/'"));
        }
        let max_size = s.get_size("max_size")?.unwrap_or(100 << 20);
        let max_files = s.get_u64("max_files")?.unwrap_or(5).clamp(1, 10_000) as u32;
        let fsync = s.get_bool("fsync")?.unwrap_or(true);
        let drop_cache = s.get_bool("drop_cache")?.unwrap_or(true);
        let mkdir = s.get_bool("mkdir")?.unwrap_or(true);
        let format = match s.get_choice("format", &["json_lines", "json", "pretty"])? {
            Some("pretty") => StdoutFormat::Pretty,
            _ => StdoutFormat::JsonLines,
        };
        let codec = Codec::from_section(s)?;
        let encoder = Encoder::new(codec).map_err(|e| s.error("compress", e.to_string()))?;
        Ok(FileOutput {
            dir: PathBuf::from(dir),
            name,
            codec,
            encoder,
            max_size,
            max_files,
            fsync,
            drop_cache,
            mkdir,
            format,
            file: None,
            len: 0,
            buf: Vec::new(),
            member: Vec::new(),
        })
    }

    /// The file currently written.
    pub fn path(&self) -> PathBuf {
        self.active(self.codec)
    }

    /// The file `codec` writes.
    fn active(&self, codec: Codec) -> PathBuf {
        self.dir.join(format!("{}{}", self.name, codec.extension()))
    }

    /// The `n`th newest rotated file of `codec`: `<file>.<n>` and its codec's extension, the
    /// names logrotate gives (`audit.jsonl.1.gz`).
    fn rotated(&self, codec: Codec, n: u32) -> PathBuf {
        self.dir
            .join(format!("{}.{n}{}", self.name, codec.extension()))
    }

    fn open_file(&self) -> Result<File, FileOutputError> {
        if self.mkdir {
            std::fs::create_dir_all(&self.dir).map_err(io("creating directory", &self.dir))?;
        }
        let path = self.path();
        OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(io("opening", &path))
    }

    /// Opens the file and cuts from it (and from the file of the committed codec, when that is
    /// another one) what was written but never acknowledged.
    fn recover(&mut self, committed: Option<Committed>) -> Result<(), FileOutputError> {
        let keep = match committed {
            // Never committed anything here: whatever is in the file predates this output's
            // state (another run, or the user's), so it is kept and appended to.
            None => None,
            Some(c) => {
                self.discard_other_codecs(c.codec)?;
                if c.codec == self.codec {
                    Some(c.len)
                } else {
                    self.switch_from(c)?;
                    Some(0)
                }
            }
        };
        let path = self.path();
        let file = self.open_file()?;
        let actual = file
            .metadata()
            .map_err(io("reading metadata of", &path))?
            .len();
        let keep = match keep {
            None => actual,
            Some(c) if actual >= c => c,
            // Shorter than committed: rotated after the last ack; nothing here was acked.
            Some(_) => 0,
        };
        if keep != actual {
            tracing::info!(path = %path.display(), from = actual, to = keep,
                "cutting unacknowledged records from the end of the file");
            file.set_len(keep).map_err(io("truncating", &path))?;
            file.sync_all().map_err(io("syncing", &path))?;
        }
        self.len = keep;
        self.file = Some(file);
        Ok(())
    }

    /// The configured codec is not the committed one: the committed codec's file is cut back
    /// to what was acknowledged and renamed into its rotated series (removed when nothing
    /// acknowledged is left in it).
    fn switch_from(&self, committed: Committed) -> Result<(), FileOutputError> {
        let old = self.active(committed.codec);
        let actual = match std::fs::metadata(&old) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io("reading metadata of", &old)(e)),
        };
        // Shorter than committed: rotated after the last ack, so nothing in it was acked.
        let keep = if actual >= committed.len {
            committed.len
        } else {
            0
        };
        if keep == 0 {
            std::fs::remove_file(&old).map_err(io("removing", &old))?;
        } else {
            if keep != actual {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&old)
                    .map_err(io("opening", &old))?;
                f.set_len(keep).map_err(io("truncating", &old))?;
                f.sync_all().map_err(io("syncing", &old))?;
            }
            self.shift(committed.codec)?;
            let first = self.rotated(committed.codec, 1);
            std::fs::rename(&old, &first).map_err(io("renaming", &old))?;
        }
        self.sync_dir();
        tracing::info!(from = %old.display(), to = %self.path().display(), kept = keep,
            "compress changed: the output continues in a new file");
        Ok(())
    }

    /// Removes the active files of the codecs other than `committed`'s: only the committed
    /// codec's file can hold acknowledged records (the output renames a file away whenever it
    /// switches from it), so another one was made by a change of `compress` that a crash
    /// interrupted before its first acknowledgement.
    fn discard_other_codecs(&self, committed: Codec) -> Result<(), FileOutputError> {
        for codec in [Codec::None, Codec::Gzip, Codec::Zstd] {
            let path = self.active(codec);
            if codec == committed || !path.exists() {
                continue;
            }
            tracing::info!(path = %path.display(),
                "removing the file of an interrupted change of compress: nothing in it was acknowledged");
            std::fs::remove_file(&path).map_err(io("removing", &path))?;
        }
        Ok(())
    }

    /// Makes room for a new `<file>.1` of `codec`: removes the oldest rotated file and renames
    /// the others one up.
    fn shift(&self, codec: Codec) -> Result<(), FileOutputError> {
        let oldest = self.rotated(codec, self.max_files);
        if oldest.exists() {
            std::fs::remove_file(&oldest).map_err(io("removing", &oldest))?;
        }
        for n in (1..self.max_files).rev() {
            let from = self.rotated(codec, n);
            if from.exists() {
                let to = self.rotated(codec, n + 1);
                std::fs::rename(&from, &to).map_err(io("renaming", &from))?;
            }
        }
        Ok(())
    }

    /// Makes renames and removals in the directory durable (best effort: a directory that
    /// cannot be opened changes nothing about the data already synced).
    fn sync_dir(&self) {
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
    }

    fn rotate(&mut self) -> Result<(), FileOutputError> {
        self.file = None;
        self.shift(self.codec)?;
        let (path, first) = (self.path(), self.rotated(self.codec, 1));
        std::fs::rename(&path, &first).map_err(io("renaming", &path))?;
        // Make the renames durable before anything is written to the new file.
        self.sync_dir();
        self.file = Some(self.open_file()?);
        self.len = 0;
        tracing::info!(path = %path.display(), rotated_to = %first.display(), "rotated output file");
        Ok(())
    }

    fn write_batch(&mut self, batch: &[QueueItem]) -> Result<u64, FileOutputError> {
        if self.file.is_none() {
            self.recover(Some(Committed {
                len: self.len,
                codec: self.codec,
            }))?;
        }
        if self.max_size > 0 && self.len >= self.max_size {
            self.rotate()?;
        }
        self.buf.clear();
        let json_lines = self.format == StdoutFormat::JsonLines;
        if !json_lines {
            render(self.format, batch, &mut self.buf);
        }
        let path = self.path();
        let Some(file) = self.file.as_mut() else {
            unreachable!("opened above")
        };
        use std::io::{Seek, SeekFrom};
        let result = (|| {
            let written = match &mut self.encoder {
                // The records go to the file as they are, one write for many records: no
                // copy of the batch into a buffer first.
                None if json_lines => {
                    file.seek(SeekFrom::Start(self.len))?;
                    write_lines(file, batch)?;
                    batch.iter().map(|i| i.data.len() as u64 + 1).sum()
                }
                None => {
                    file.seek(SeekFrom::Start(self.len))?;
                    file.write_all(&self.buf)?;
                    self.buf.len() as u64
                }
                Some(encoder) => {
                    self.member.clear();
                    if json_lines {
                        let lines = batch.iter().flat_map(|i| [&i.data[..], b"\n"]);
                        encoder.member(lines, &mut self.member)?;
                    } else {
                        encoder.member([&self.buf[..]], &mut self.member)?;
                    }
                    file.seek(SeekFrom::Start(self.len))?;
                    file.write_all(&self.member)?;
                    self.member.len() as u64
                }
            };
            if self.fsync {
                file.sync_data()?;
            }
            Ok(written)
        })();
        let written = match result {
            Ok(w) => w,
            Err(e) => {
                // Reopen next time and cut back to the last good length.
                self.file = None;
                return Err(FileOutputError::Io {
                    op: "writing",
                    path,
                    source: e,
                });
            }
        };
        if self.fsync && self.drop_cache {
            drop_written_pages(file, self.len, written);
        }
        self.len += written;
        Ok(self.len)
    }

    fn committed(&self) -> String {
        Committed {
            len: self.len,
            codec: self.codec,
        }
        .encode()
    }
}

/// Tells the kernel that the `len` bytes just written and synced at `offset` will not be read
/// again (`posix_fadvise(DONTNEED)`), so their pages are freed at once instead of staying in
/// the page cache. Without it an archive of gigabytes of audit events fills the cache (which
/// counts toward a container's memory) with data nobody reads, and every write needs a page
/// never used before, which on virtual machines costs several times the copy itself: freed
/// pages are reused while still warm (bench/audit-webhook.sh, below). Advisory: a refusal
/// changes nothing. `drop_cache: off` keeps the pages, for a process that tails the file.
fn drop_written_pages(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len))
        else {
            return;
        };
        // SAFETY: posix_fadvise only reads its integer arguments; the descriptor is open for
        // the duration of the call (borrowed from `file`).
        let rc = unsafe {
            libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_DONTNEED)
        };
        if rc != 0 {
            tracing::debug!(
                error = rc,
                "posix_fadvise(DONTNEED) refused on the output file"
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// Writes each record followed by a newline with vectored writes (up to 512 records each).
fn write_lines(file: &mut std::fs::File, batch: &[QueueItem]) -> std::io::Result<()> {
    use std::io::{IoSlice, Write};
    for chunk in batch.chunks(512) {
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(chunk.len() * 2);
        for item in chunk {
            slices.push(IoSlice::new(&item.data));
            slices.push(IoSlice::new(b"\n"));
        }
        let mut bufs: &mut [IoSlice<'_>] = &mut slices;
        while !bufs.is_empty() {
            match file.write_vectored(bufs) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut bufs, n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl Output for FileOutput {
    async fn open(&mut self, committed: Option<String>) -> Result<(), DeliveryError> {
        let committed = committed.as_deref().and_then(Committed::decode);
        tokio::task::block_in_place(|| self.recover(committed)).map_err(Into::into)
    }

    fn initial_state(&self) -> Option<String> {
        Some(self.committed())
    }

    async fn deliver(&mut self, batch: &[QueueItem]) -> Result<Option<String>, DeliveryError> {
        tokio::task::block_in_place(|| self.write_batch(batch))?;
        Ok(Some(self.committed()))
    }

    async fn close(&mut self) -> Result<(), DeliveryError> {
        if let Some(f) = self.file.take() {
            let _ = f.sync_all();
        }
        Ok(())
    }
}
