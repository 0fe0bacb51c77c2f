//! The `file` output: JSON lines appended to one file, fsynced per batch, rotated by size.
//!
//! Exactly once across crashes: the length of the file that holds only acknowledged records is
//! committed with each acknowledgement (in the same transaction that removes the batch from
//! the queue). At start the file is cut back to that length, so a batch written but not
//! acknowledged before a crash is not kept twice when it is delivered again.
//!
//! Rotation happens only at a committed boundary: the current file is renamed to `<file>.1`
//! (older ones shift up to `max_files`) and a new one started. If a crash comes between the
//! rename and the next acknowledgement, the new file is shorter than the committed length;
//! everything in it is then unacknowledged and it is cut to zero.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use kubetrail_core::config::{ConfigError, Section};
use kubetrail_state::QueueItem;

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

/// The `file` output.
pub struct FileOutput {
    path: PathBuf,
    max_size: u64,
    max_files: u32,
    fsync: bool,
    drop_cache: bool,
    mkdir: bool,
    format: StdoutFormat,
    file: Option<File>,
    len: u64,
    buf: Vec<u8>,
}

impl FileOutput {
    /// Options: `path` (directory, required), `file` (name, default `kubetrail.jsonl`),
    /// `max_size` (rotate beyond this size, default 100M, 0 = never), `max_files` (rotated
    /// files kept, default 5), `fsync` (default on), `drop_cache` (default on: see
    /// [`drop_written_pages`]), `mkdir` (default on), `format` (`json_lines` or `pretty`).
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
        Ok(FileOutput {
            path: Path::new(&dir).join(name),
            max_size,
            max_files,
            fsync,
            drop_cache,
            mkdir,
            format,
            file: None,
            len: 0,
            buf: Vec::new(),
        })
    }

    /// The file currently written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut s = self.path.clone().into_os_string();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    fn open_file(&self) -> Result<File, FileOutputError> {
        if self.mkdir
            && let Some(dir) = self.path.parent()
        {
            std::fs::create_dir_all(dir).map_err(io("creating directory", dir))?;
        }
        OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&self.path)
            .map_err(io("opening", &self.path))
    }

    fn recover(&mut self, committed: Option<u64>) -> Result<(), FileOutputError> {
        let file = self.open_file()?;
        let actual = file
            .metadata()
            .map_err(io("reading metadata of", &self.path))?
            .len();
        let keep = match committed {
            // Never committed anything here: whatever is in the file predates this output's
            // state (another run, or the user's), so it is kept and appended to.
            None => actual,
            Some(c) if actual >= c => c,
            // Shorter than committed: rotated after the last ack; nothing here was acked.
            Some(_) => 0,
        };
        if keep != actual {
            tracing::info!(path = %self.path.display(), from = actual, to = keep,
                "cutting unacknowledged records from the end of the file");
            file.set_len(keep).map_err(io("truncating", &self.path))?;
            file.sync_all().map_err(io("syncing", &self.path))?;
        }
        self.len = keep;
        self.file = Some(file);
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), FileOutputError> {
        self.file = None;
        let oldest = self.rotated(self.max_files);
        if oldest.exists() {
            std::fs::remove_file(&oldest).map_err(io("removing", &oldest))?;
        }
        for n in (1..self.max_files).rev() {
            let from = self.rotated(n);
            if from.exists() {
                let to = self.rotated(n + 1);
                std::fs::rename(&from, &to).map_err(io("renaming", &from))?;
            }
        }
        let first = self.rotated(1);
        std::fs::rename(&self.path, &first).map_err(io("renaming", &self.path))?;
        if let Some(dir) = self.path.parent() {
            // Make the renames durable before anything is written to the new file.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        self.file = Some(self.open_file()?);
        self.len = 0;
        tracing::info!(path = %self.path.display(), rotated_to = %first.display(), "rotated output file");
        Ok(())
    }

    fn write_batch(&mut self, batch: &[QueueItem]) -> Result<u64, FileOutputError> {
        if self.file.is_none() {
            self.recover(Some(self.len))?;
        }
        if self.max_size > 0 && self.len >= self.max_size {
            self.rotate()?;
        }
        self.buf.clear();
        let json_lines = self.format == StdoutFormat::JsonLines;
        let written: u64 = if json_lines {
            // The records go to the file as they are, one write for many records: no copy
            // of the batch into a buffer first.
            batch.iter().map(|i| i.data.len() as u64 + 1).sum()
        } else {
            render(self.format, batch, &mut self.buf);
            self.buf.len() as u64
        };
        let Some(file) = self.file.as_mut() else {
            unreachable!("opened above")
        };
        use std::io::{Seek, SeekFrom};
        let result = file
            .seek(SeekFrom::Start(self.len))
            .and_then(|_| {
                if json_lines {
                    write_lines(file, batch)
                } else {
                    file.write_all(&self.buf)
                }
            })
            .and_then(|_| if self.fsync { file.sync_data() } else { Ok(()) });
        if let Err(e) = result {
            // Reopen next time and cut back to the last good length.
            self.file = None;
            return Err(FileOutputError::Io {
                op: "writing",
                path: self.path.clone(),
                source: e,
            });
        }
        if self.fsync && self.drop_cache {
            drop_written_pages(file, self.len, written);
        }
        self.len += written;
        Ok(self.len)
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
        let committed = committed.and_then(|c| c.trim().parse::<u64>().ok());
        tokio::task::block_in_place(|| self.recover(committed)).map_err(Into::into)
    }

    fn initial_state(&self) -> Option<String> {
        Some(self.len.to_string())
    }

    async fn deliver(&mut self, batch: &[QueueItem]) -> Result<Option<String>, DeliveryError> {
        let len = tokio::task::block_in_place(|| self.write_batch(batch))?;
        Ok(Some(len.to_string()))
    }

    async fn close(&mut self) -> Result<(), DeliveryError> {
        if let Some(f) = self.file.take() {
            let _ = f.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubetrail_core::config::SectionKind;

    fn output(dir: &Path, extra: &[(&str, &str)]) -> FileOutput {
        let d = dir.to_string_lossy().to_string();
        let mut pairs = vec![("path", d.as_str())];
        pairs.extend_from_slice(extra);
        let mut s = Section::from_pairs(SectionKind::Output, "file", &pairs);
        FileOutput::from_section(&mut s).unwrap()
    }

    fn items(from: u64, n: u64) -> Vec<QueueItem> {
        (from..from + n)
            .map(|i| QueueItem {
                seq: i,
                id: i.to_string(),
                data: format!("{{\"n\":{i}}}").into_bytes().into(),
            })
            .collect()
    }

    /// How many pages of `path` are in the page cache (mincore over a mapping of it).
    #[cfg(target_os = "linux")]
    fn resident_pages(path: &Path) -> usize {
        use std::os::fd::AsRawFd;
        let f = File::open(path).unwrap();
        let len = f.metadata().unwrap().len() as usize;
        let page = 4096;
        let mut vec = vec![0u8; len.div_ceil(page)];
        // SAFETY: a private read-only mapping of a file nobody truncates meanwhile, only
        // passed to mincore (its pages are never read) and unmapped before returning.
        unsafe {
            let addr = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                f.as_raw_fd(),
                0,
            );
            assert_ne!(addr, libc::MAP_FAILED);
            assert_eq!(libc::mincore(addr, len, vec.as_mut_ptr()), 0);
            libc::munmap(addr, len);
        }
        vec.iter().filter(|b| *b & 1 == 1).count()
    }

    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn written_pages_leave_the_page_cache_unless_kept() {
        // In a directory of the build (a disk file system; tmpfs pages are the storage).
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let big: Vec<QueueItem> = (0..256)
            .map(|i| QueueItem {
                seq: i,
                id: i.to_string(),
                data: format!("{{\"pad\":\"{}\"}}", "x".repeat(8000))
                    .into_bytes()
                    .into(),
            })
            .collect();
        let mut dropped = output(dir.path(), &[("file", "dropped.jsonl")]);
        dropped.open(None).await.unwrap();
        dropped.deliver(&big).await.unwrap();
        let mut kept = output(dir.path(), &[("file", "kept.jsonl"), ("drop_cache", "off")]);
        kept.open(None).await.unwrap();
        kept.deliver(&big).await.unwrap();
        let pages = 256 * 8012 / 4096;
        let (d, k) = (
            resident_pages(&dir.path().join("dropped.jsonl")),
            resident_pages(&dir.path().join("kept.jsonl")),
        );
        assert!(d <= 2, "{d} of {pages} pages still cached");
        assert!(k >= pages - 2, "only {k} of {pages} pages cached");
        // The content is all there.
        let text = std::fs::read_to_string(dir.path().join("dropped.jsonl")).unwrap();
        assert_eq!(text.lines().count(), 256);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn cuts_unacknowledged_tail_on_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = output(dir.path(), &[]);
        o.open(None).await.unwrap();
        let acked = o.deliver(&items(1, 3)).await.unwrap();
        o.deliver(&items(4, 2)).await.unwrap(); // written, never acknowledged
        let mut o2 = output(dir.path(), &[]);
        o2.open(acked).await.unwrap();
        o2.deliver(&items(4, 2)).await.unwrap();
        let text = std::fs::read_to_string(o2.path()).unwrap();
        let ns: Vec<&str> = text.lines().collect();
        assert_eq!(
            ns,
            vec![
                r#"{"n":1}"#,
                r#"{"n":2}"#,
                r#"{"n":3}"#,
                r#"{"n":4}"#,
                r#"{"n":5}"#
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn rotates_at_committed_boundaries_and_keeps_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = output(dir.path(), &[("max_size", "20"), ("max_files", "2")]);
        o.open(None).await.unwrap();
        for i in 0..5 {
            o.deliver(&items(i * 3 + 1, 3)).await.unwrap();
        }
        let base = o.path().to_path_buf();
        assert!(o.rotated(1).exists() && o.rotated(2).exists() && !o.rotated(3).exists());
        let all: String = [o.rotated(2), o.rotated(1), base]
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        // The newest 3 files hold the newest batches in order, each file whole batches.
        assert!(
            all.ends_with("{\"n\":13}\n{\"n\":14}\n{\"n\":15}\n"),
            "{all}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn crash_after_rotation_before_ack_discards_new_file_content() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = output(dir.path(), &[("max_size", "10")]);
        o.open(None).await.unwrap();
        let acked = o.deliver(&items(1, 2)).await.unwrap();
        o.deliver(&items(3, 1)).await.unwrap(); // rotates, writes, crash before ack
        let mut o2 = output(dir.path(), &[("max_size", "10")]);
        o2.open(acked).await.unwrap();
        assert_eq!(std::fs::read_to_string(o2.path()).unwrap(), "");
        assert_eq!(
            std::fs::read_to_string(o2.rotated(1)).unwrap(),
            "{\"n\":1}\n{\"n\":2}\n"
        );
    }

    #[test]
    fn path_is_required() {
        let mut s = Section::from_pairs(SectionKind::Output, "file", &[]);
        assert!(
            FileOutput::from_section(&mut s)
                .err()
                .unwrap()
                .to_string()
                .contains("path")
        );
    }
}
