//! The one error type of the state crate: every variant says which operation on which file
//! failed and keeps the underlying SQLite or I/O error as its source.

use std::path::PathBuf;

use crate::queue::QueueId;

/// Everything that can go wrong in the state database.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Another process (or another `Store` in this process) holds the lock file.
    #[error(
        "state database {} is in use by another kubetrail process (lock file {})",
        path.display(),
        lock_path.display()
    )]
    Locked {
        /// The database path that was asked for.
        path: PathBuf,
        /// The lock file beside it.
        lock_path: PathBuf,
    },

    /// The lock file could not be created, opened or locked for a reason other than
    /// contention (permissions, missing directory, unsupported file system).
    #[error("cannot open or lock the lock file {}", path.display())]
    LockFile {
        /// The lock file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// SQLite could not open or configure the database file.
    #[error("cannot open state database {}: {what}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// Which step failed.
        what: &'static str,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },

    /// The file system or SQLite build refused write-ahead logging, without which
    /// readers would block the writer.
    #[error("state database {} cannot use WAL journal mode (SQLite answered {mode:?})", path.display())]
    NotWal {
        /// The database file.
        path: PathBuf,
        /// The journal mode SQLite kept.
        mode: String,
    },

    /// The database file is damaged (truncated, overwritten) or is not a state database.
    #[error(
        "state database {} is damaged or is not a kubetrail state database ({detail}); kubetrail \
         cannot run on it. Restore it from a backup, or stop kubetrail and move it aside with \
         the files beside it whose names start with its name (-wal, -shm, -queues, -reserve) to \
         start with an empty one: the records queued and not yet delivered and the inputs' \
         checkpoints are then lost (Events are listed again, audit logs read again as \
         read_from_head says)",
        path.display()
    )]
    Damaged {
        /// The database file.
        path: PathBuf,
        /// What SQLite found.
        detail: String,
    },

    /// The database was written by a newer kubetrail; opening it could corrupt it.
    #[error(
        "state database {} has schema version {found}, newer than version {supported} that this \
         kubetrail understands; run a newer kubetrail or point data_dir elsewhere",
        path.display()
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// The version recorded in the database.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },

    /// A migration step failed; its transaction was rolled back, so the database is still
    /// at the previous version.
    #[error("migrating state database {} to schema version {version} failed", path.display())]
    Migration {
        /// The database file.
        path: PathBuf,
        /// The version whose step failed.
        version: i64,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },

    /// A statement failed during normal operation; any transaction was rolled back.
    #[error("state database: {op} failed")]
    Sqlite {
        /// The operation that failed, e.g. "commit: enqueue record".
        op: &'static str,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },

    /// A batch named a queue that this database does not have.
    #[error("state database has no queue with id {queue}")]
    UnknownQueue {
        /// The id that was passed.
        queue: QueueId,
    },

    /// More queues than the sequence-key layout allows (see `queue.rs`).
    #[error("state database cannot hold more than {max} queues (asked for queue {name:?})")]
    TooManyQueues {
        /// The queue that could not be created.
        name: String,
        /// The limit.
        max: u32,
    },

    /// A queue used up its 2^48 sequence numbers (89 years at 100,000 records/s).
    #[error("queue {queue} has used up its sequence numbers")]
    SeqExhausted {
        /// The queue.
        queue: QueueId,
    },

    /// A queue's segment files could not be read or written, or do not match the database.
    #[error(transparent)]
    Log(#[from] crate::segments::LogError),

    /// A record too large for a queue frame (4 GiB).
    #[error("record {id:?} is too large for a queue ({bytes} bytes)")]
    RecordTooLarge {
        /// The record's id.
        id: String,
        /// Its framed size.
        bytes: u64,
    },

    /// The background WAL checkpointer could not be started.
    #[error("cannot start the state database's WAL checkpointer")]
    Checkpointer {
        /// Why.
        #[source]
        source: kubetrail_wal::WalError,
    },

    /// A stored value is not what this build wrote (e.g. a negative sequence number).
    #[error("state database holds an unexpected value: {what}")]
    Corrupt {
        /// What was wrong.
        what: String,
    },
}

/// Maps a rusqlite error to [`StateError::Sqlite`] naming the operation.
pub(crate) fn sql(op: &'static str) -> impl FnOnce(rusqlite::Error) -> StateError {
    move |source| StateError::Sqlite { op, source }
}

fn sqlite_full(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull)
}

impl StateError {
    /// Whether the error means that the file system holding the state has no room left.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StateError::Open { source, .. }
            | StateError::Migration { source, .. }
            | StateError::Sqlite { source, .. } => sqlite_full(source),
            StateError::LockFile { source, .. } => crate::reserve::is_no_space(source),
            StateError::Checkpointer { source } => match source {
                kubetrail_wal::WalError::Sql { source, .. } => sqlite_full(source),
                kubetrail_wal::WalError::Thread { source } => crate::reserve::is_no_space(source),
            },
            StateError::Log(crate::segments::LogError::Io { source, .. }) => {
                crate::reserve::is_no_space(source)
            }
            _ => false,
        }
    }

    /// For a commit error: whether the commit is known to have left nothing behind (it failed
    /// on a check before anything was made durable). When false, the store must be reopened
    /// before the next commit (see [`crate::Store::commit_at`]).
    pub fn outcome_known(&self) -> bool {
        matches!(
            self,
            StateError::UnknownQueue { .. }
                | StateError::RecordTooLarge { .. }
                | StateError::SeqExhausted { .. }
        )
    }
}
