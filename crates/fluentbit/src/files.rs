//! How the readers reach files: the disk, or (for tests and fuzzing) a map in memory. Includes
//! go through this, so the parsers can be exercised without a file system.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// The identity of a file: Fluent Bit refuses to read the same file twice (by inode), however
/// it was named.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileId {
    Inode(u64, u64),
    Name(PathBuf),
}

/// Where configuration files are read from.
pub trait Files {
    /// The file's identity and bytes.
    fn read(&self, path: &Path) -> io::Result<(FileId, Vec<u8>)>;
    /// Whether something exists at `path` (Fluent Bit's `stat`).
    fn exists(&self, path: &Path) -> bool;
    /// The files matching a glob pattern, sorted.
    fn glob(&self, pattern: &str) -> Result<Vec<PathBuf>, String>;
    /// The directory relative includes are resolved against for a main file at `path`
    /// (Fluent Bit takes the directory of its real path).
    fn root_dir(&self, path: &Path) -> PathBuf;
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct Disk;

impl Files for Disk {
    fn read(&self, path: &Path) -> io::Result<(FileId, Vec<u8>)> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path)?;
        if meta.is_dir() {
            return Err(io::Error::other("is a directory"));
        }
        let bytes = std::fs::read(path)?;
        Ok((FileId::Inode(meta.dev(), meta.ino()), bytes))
    }

    fn exists(&self, path: &Path) -> bool {
        std::fs::metadata(path).is_ok()
    }

    fn glob(&self, pattern: &str) -> Result<Vec<PathBuf>, String> {
        let paths = glob::glob(pattern).map_err(|e| format!("'{pattern}' is not a glob: {e}"))?;
        let mut out: Vec<PathBuf> = paths.filter_map(Result::ok).collect();
        out.sort();
        Ok(out)
    }

    fn root_dir(&self, path: &Path) -> PathBuf {
        let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        real.parent().map(Path::to_path_buf).unwrap_or_default()
    }
}

/// Files held in memory, by path (for tests and fuzzing).
#[derive(Debug, Clone, Default)]
pub struct Memory {
    pub files: BTreeMap<PathBuf, Vec<u8>>,
}

impl Memory {
    pub fn with(mut self, path: &str, text: &str) -> Memory {
        self.files
            .insert(PathBuf::from(path), text.as_bytes().to_vec());
        self
    }
}

impl Files for Memory {
    fn read(&self, path: &Path) -> io::Result<(FileId, Vec<u8>)> {
        self.files
            .get(path)
            .map(|b| (FileId::Name(path.to_path_buf()), b.clone()))
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn exists(&self, path: &Path) -> bool {
        self.files.contains_key(path)
    }

    fn glob(&self, pattern: &str) -> Result<Vec<PathBuf>, String> {
        let p =
            glob::Pattern::new(pattern).map_err(|e| format!("'{pattern}' is not a glob: {e}"))?;
        Ok(self
            .files
            .keys()
            .filter(|k| p.matches_path(k))
            .cloned()
            .collect())
    }

    fn root_dir(&self, path: &Path) -> PathBuf {
        path.parent().map(Path::to_path_buf).unwrap_or_default()
    }
}
