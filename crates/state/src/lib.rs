//! kubetrail's embedded state: one SQLite database (WAL) in the data directory holding the
//! per-stream checkpoints, the dedup keys with their expiry, output states such as file
//! offsets, and the bounds of the per-output durable queues, whose records live in
//! append-only segment files beside the database (`<database>-queues/`).
//!
//! The core promise: a record's dedup key, its enqueueing into every matching output queue and
//! its source's checkpoint are committed in one transaction ([`Store::commit`]), so a kill -9
//! at any instant neither loses nor repeats a record. One writer thread owns the [`Store`] and
//! merges many submissions into one batch (group commit, one fsync per batch); queue readers
//! use their own [`Reader`] connections.
//!
//! ```no_run
//! # fn main() -> Result<(), kubetrail_state::StateError> {
//! use kubetrail_state::{CommitBatch, Dedup, Entry, Store, StoreOptions};
//! let mut store = Store::open("/var/lib/kubetrail/kubetrail.db".as_ref(), &StoreOptions::default())?;
//! let stdout = store.queue_id("stdout")?;
//! let outcome = store.commit(&CommitBatch {
//!     entries: vec![Entry {
//!         dedup: Some(Dedup {
//!             scope: "events".into(),
//!             key: "uid-1".into(),
//!             value: "rv-7".into(),
//!             expires_at_unix_ms: 1_700_000_000_000,
//!         }),
//!         queues: [stdout].into(),
//!         id: "uid-1/rv-7".into(),
//!         data: br#"{"kind":"k8s_event"}"#.to_vec().into(),
//!     }],
//!     checkpoints: vec![("events".into(), "rv-7".into())],
//!     ..CommitBatch::default()
//! })?;
//! assert_eq!(outcome.inserted, [true]);
//! let items = store.reader()?.read_queue(stdout, 0, 1000, 1 << 20)?;
//! # let _ = items; Ok(()) }
//! ```

mod batch;
mod error;
mod fault;
/// Public only for the fuzz target of the segment reader (`fuzz/fuzz_targets/segment.rs`).
#[doc(hidden)]
pub mod format;
mod lock;
mod queue;
mod reader;
mod recent;
mod reserve;
mod schema;
mod segments;
mod store;

pub use batch::{Ack, Checkpoint, CommitBatch, CommitOutcome, Dedup, Entry, Trim};
pub use error::StateError;
pub use fault::{FaultSite, Faults};
pub use lock::lock_path;
pub use queue::{MAX_SEQ, QueueDepth, QueueId, QueueItem};
pub use reader::{DamagedRecord, Reader};
pub use reserve::{free_bytes, is_no_space};
pub use schema::SCHEMA_VERSION;
pub use segments::{LogError, frame_len};
pub use store::{Reopen, Store, StoreOptions, SyncMode};
