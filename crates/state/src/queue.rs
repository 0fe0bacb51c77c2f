//! Queue identities, the items read back from a queue, and queue depths. Where the records
//! themselves live is segments.rs.
//!
//! Sequence numbers are 48 bits (89 years at 100,000 records/s; schema version 1 packed them
//! with the queue id into one row key), and queue ids 15 bits.

use std::fmt;

use bytes::Bytes;

/// Bits of the row key that hold the sequence number.
pub(crate) const SEQ_BITS: u32 = 48;

/// The largest sequence number a queue can use.
pub const MAX_SEQ: u64 = (1 << SEQ_BITS) - 1;

/// The largest queue id: one more would make the packed key negative.
pub(crate) const MAX_QUEUE_ID: u32 = (1 << (63 - SEQ_BITS)) - 1;

/// The numeric id of a named queue, as returned by `Store::queue_id`. Stable across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(pub(crate) u32);

impl QueueId {
    /// The raw id, for logs and metrics labels.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One record read back from a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueItem {
    /// Its position in the queue; strictly increasing, never reused.
    pub seq: u64,
    /// The record's stable id.
    pub id: String,
    /// The encoded record: a slice of the block the reader read it from (shared, not copied).
    pub data: Bytes,
}

/// How much a queue holds: records not yet acknowledged and the bytes of their frames.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Records in the queue.
    pub records: u64,
    /// Bytes the records take in the queue's log: data, id and a 16-byte header each
    /// (see [`crate::frame_len`]).
    pub bytes: u64,
}
