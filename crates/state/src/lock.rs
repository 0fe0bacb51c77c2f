//! The lock file that keeps a second kubetrail process off the same data directory.
//!
//! SQLite's own locks would let a second writer wait for `busy_timeout` and then interleave
//! with the first, each with its own idea of the queues' next sequence numbers. An exclusive
//! advisory lock on `<db>.lock`, taken without waiting, makes the second process fail at once
//! with a message that says why. The lock belongs to the open file description, so it is
//! released by the kernel however the process dies, including SIGKILL. It is also why a
//! child process holds it from its fork until its exec (the file is close-on-exec): a
//! program that spawns processes while it closes and reopens a store can see `Locked` in
//! that window. kubetrail spawns none; the tests that do serialise it (tests/lock.rs).

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use crate::error::StateError;

/// The lock file path for a database path: the same name with `.lock` appended.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Creates (if needed) and exclusively locks the lock file of `db`, without waiting.
pub(crate) fn acquire(db: &Path) -> Result<File, StateError> {
    let path = lock_path(db);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| StateError::LockFile {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StateError::Locked {
            path: db.to_path_buf(),
            lock_path: path,
        }),
        Err(TryLockError::Error(source)) => Err(StateError::LockFile { path, source }),
    }
}
