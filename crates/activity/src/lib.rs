//! kubetrail's activity database: the records kept to answer "who did this?".
//!
//! A SQLite database of its own (not the state database: it lives longer and grows larger),
//! written by the `store` output and read by `kubetrail who`, `kubetrail activity` and the
//! activity page through `kubetrail-query`.
//!
//! - [`extract`]: what is indexed about a record ([`Activity`]), read from the record as
//!   kubetrail encodes it. The `postgresql` output fills its columns from the same code.
//! - [`kinds`]: kinds, resources and `kubectl`-style type names.
//! - [`schema`]: the tables and indexes.
//! - [`writer`]: one connection that inserts batches exactly once (the record id is unique
//!   with its time).
//! - [`shards`]: a store in several files written in parallel, one writer each (records
//!   split by id).
//! - the writer's WAL checkpoints run on a thread of their own (`kubetrail-wal`).
//! - [`retention`]: a background thread that deletes by age and by size in small
//!   transactions, so delivery never waits for more than one of them.
//! - [`pg`]: the same columns and indexes on the `postgresql` output's table.
//! - [`open_reader`]: read-only connections; with the WAL a reader never blocks the writer.

pub mod extract;
pub mod kinds;
pub mod pg;
pub mod retention;
pub mod schema;
pub mod shards;
pub mod writer;

pub use extract::{Activity, Owner};
pub use retention::{Retention, RetentionHandle, RetentionReport};
pub use schema::{BUCKET_SHIFT, BUCKETS_CTE, open_reader, upgrade};
pub use shards::{MAX_SHARDS, ShardRow, ShardedWriter, shard_files, shard_of, shard_path};
pub use writer::{ActivityWriter, InsertStats, WriterOptions};

/// What can go wrong with the activity database.
#[derive(Debug, thiserror::Error)]
pub enum ActivityError {
    #[error("opening the activity database {path}: {source}")]
    Open {
        path: std::path::PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "the activity database {path} has schema version {found}; this kubetrail knows up to {known}"
    )]
    TooNew {
        path: std::path::PathBuf,
        found: i64,
        known: i64,
    },
    #[error(
        "the activity database {path} has schema version {found}: it must be upgraded first (the `store` output does when it opens it)"
    )]
    TooOld {
        path: std::path::PathBuf,
        found: i64,
    },
    #[error("creating the directory of the activity database {path}: {source}")]
    Dir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the activity database's WAL checkpointer: {source}")]
    Checkpointer {
        #[source]
        source: kubetrail_wal::WalError,
    },
    #[error("{0}")]
    Shards(String),
    #[error("no activity database at {0}")]
    Missing(std::path::PathBuf),
    #[error("{what}: {source}")]
    Sql {
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },
}

impl ActivityError {
    pub(crate) fn sql(what: &'static str) -> impl FnOnce(rusqlite::Error) -> ActivityError {
        move |source| ActivityError::Sql { what, source }
    }
}
