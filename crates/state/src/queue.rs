//! Queue identities and the layout of queue rows.
//!
//! All queues share one rowid table, `queue_items`, whose INTEGER PRIMARY KEY packs the queue id
//! and the sequence number: `k = (queue_id << 48) | seq`. That keeps each queue's rows
//! contiguous and ordered by seq with no secondary index at all (a `PRIMARY KEY (queue, seq)`
//! on a rowid table would add an index b-tree written on every insert and delete), and it keeps
//! the rows in a *table* b-tree, where a 1.5 KiB record fits inside a 4 KiB leaf page. In a
//! WITHOUT ROWID table the rows would live in an index b-tree whose in-page payload limit is
//! about a quarter page, so every such record would spill into an overflow page.
//!
//! 48 bits of sequence last 89 years at 100,000 records/s; 15 bits of queue id keep the key a
//! positive i64 and allow 32,767 queues, far more than outputs anyone configures.

use std::fmt;

/// Bits of the row key that hold the sequence number.
const SEQ_BITS: u32 = 48;

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
    /// The encoded record.
    pub data: Vec<u8>,
}

/// How much a queue holds: records not yet acknowledged and the sum of their data lengths.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Records in the queue.
    pub records: u64,
    /// Sum of the records' `data` lengths in bytes (ids and storage overhead not counted).
    pub bytes: u64,
}

/// The row key of `seq` in queue `q`. `seq` is clamped to [`MAX_SEQ`] so that range bounds
/// computed from caller-supplied numbers never spill into the next queue's keys.
pub(crate) fn item_key(q: QueueId, seq: u64) -> i64 {
    // Cannot overflow: q.0 <= MAX_QUEUE_ID (checked when ids are created or loaded), so the
    // shifted id is below 2^63, and the clamped seq fits in the low 48 bits.
    ((i64::from(q.0)) << SEQ_BITS) | (seq.min(MAX_SEQ) as i64)
}

/// The sequence number inside a row key.
pub(crate) fn key_seq(k: i64) -> u64 {
    (k as u64) & MAX_SEQ
}

/// Keys `lo < k <= hi` of queue `q` with seq in `(after_seq, MAX_SEQ]`.
pub(crate) fn keys_after(q: QueueId, after_seq: u64) -> (i64, i64) {
    (item_key(q, after_seq), item_key(q, MAX_SEQ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_neighbouring_queues_do_not_overlap() {
        let a = QueueId(1);
        let b = QueueId(2);
        let (_, a_hi) = keys_after(a, 0);
        let (b_lo, _) = keys_after(b, 0);
        assert!(
            a_hi < b_lo,
            "last key of queue 1 must be below first key of queue 2"
        );
        assert_eq!(key_seq(item_key(b, 17)), 17);
        assert_eq!(key_seq(item_key(a, u64::MAX)), MAX_SEQ);
        assert!(item_key(QueueId(MAX_QUEUE_ID), MAX_SEQ) > 0);
    }
}
