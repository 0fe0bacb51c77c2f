//! Room kept back on the data directory's file system for the day it fills up.
//!
//! When the disk is full, the only way out is to deliver what is queued and let the
//! acknowledgements free the delivered segments; but an acknowledgement is itself a commit,
//! which writes a few pages of WAL. A file of [`StoreOptions::reserve_bytes`] (`<db>-reserve`,
//! its blocks allocated) is kept beside the database: when a commit fails for lack of space the
//! writer deletes it, which leaves room for the acknowledgements (and for the WAL's
//! checkpoints), and makes it again once there is twice its size free.
//!
//! [`StoreOptions::reserve_bytes`]: crate::StoreOptions::reserve_bytes

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// The reserve file of database `db`.
pub(crate) fn reserve_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-reserve");
    PathBuf::from(name)
}

/// Bytes free for an unprivileged writer on the file system holding `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path that outlives the call; `st` is a valid statvfs
    // for the kernel to fill.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // fsblkcnt_t and c_ulong are narrower than u64 on 32-bit targets.
    #[allow(clippy::useless_conversion)]
    Ok(u64::from(st.f_bavail).saturating_mul(u64::from(st.f_frsize)))
}

/// Whether an I/O error means that the file system has no room left (or the quota is used up).
pub fn is_no_space(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull
        || e.kind() == io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// The reserve file of one database.
#[derive(Debug)]
pub(crate) struct Reserve {
    path: PathBuf,
    bytes: u64,
    /// Whether the file is there with its blocks allocated.
    held: bool,
}

impl Reserve {
    /// The reserve of `db`, made now if it is missing and there is room (failing to make it is
    /// only logged: it is a margin, not a condition to run).
    pub fn open(db: &Path, bytes: u64) -> Reserve {
        let mut r = Reserve {
            path: reserve_path(db),
            bytes,
            held: false,
        };
        if bytes == 0 {
            let _ = std::fs::remove_file(&r.path);
            return r;
        }
        match std::fs::metadata(&r.path) {
            Ok(m) if m.len() == bytes => r.held = true,
            _ => {
                if let Err(e) = r.make() {
                    tracing::warn!(path = %r.path.display(), error = %e, "cannot keep a reserve of disk space for a full disk");
                }
            }
        }
        r
    }

    /// Whether the reserve is held.
    pub fn held(&self) -> bool {
        self.held
    }

    fn make(&mut self) -> io::Result<()> {
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.path)?;
        if let Err(e) = allocate(&f, self.bytes).and_then(|()| f.sync_all()) {
            drop(f);
            let _ = std::fs::remove_file(&self.path);
            return Err(e);
        }
        self.held = true;
        Ok(())
    }

    /// Deletes the reserve; returns the bytes it gave back.
    pub fn release(&mut self) -> u64 {
        if !self.held {
            return 0;
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => {
                self.held = false;
                self.bytes
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.held = false;
                0
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot delete the disk space reserve");
                0
            }
        }
    }

    /// Makes the reserve again if twice its size is free; returns whether it is held.
    pub fn restore(&mut self) -> bool {
        if self.held || self.bytes == 0 {
            return self.held;
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        if free_bytes(dir).is_ok_and(|free| free >= 2 * self.bytes)
            && let Err(e) = self.make()
        {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot make the disk space reserve again");
        }
        self.held
    }
}

/// Allocates `len` bytes of blocks to `f` (so that deleting it frees them: a sparse file would
/// free nothing).
fn allocate(f: &File, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len =
        libc::off_t::try_from(len).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: posix_fallocate only reads its integer arguments; the descriptor is open for the
    // duration of the call.
    let rc = unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, len) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}
