//! The values passed to and returned from `Store::commit`: what one transaction writes.

use std::sync::Arc;

use bytes::Bytes;

use crate::queue::QueueId;

/// Everything one transaction writes. Many submissions from the pipeline are merged into one
/// batch by the writer thread (group commit), so one fsync covers them all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitBatch {
    /// Records to enqueue, in order.
    pub entries: Vec<Entry>,
    /// `(stream name, value)` rows upserted with `updated_at` = the commit time.
    pub checkpoints: Vec<(String, String)>,
    /// Checkpoint streams deleted (after the upserts), e.g. those of files long gone.
    pub forget: Vec<String>,
    /// Queue acknowledgements, applied after the entries.
    pub acks: Vec<Ack>,
    /// Oldest records dropped to make room (a queue's `drop_oldest` overflow policy),
    /// applied before the entries.
    pub trims: Vec<Trim>,
}

impl CommitBatch {
    /// True when committing it would write nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
            && self.checkpoints.is_empty()
            && self.forget.is_empty()
            && self.acks.is_empty()
            && self.trims.is_empty()
    }
}

/// One record to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its dedup key; `None` means it is never a duplicate.
    pub dedup: Option<Dedup>,
    /// Every output queue it goes to. Empty: only the dedup key is stored.
    /// (Shared: the records of a batch mostly go to the same queues.)
    pub queues: Arc<[QueueId]>,
    /// The record's stable id.
    pub id: String,
    /// The encoded record (often a slice of a buffer its batch's records share).
    pub data: Bytes,
}

/// A dedup key. A record whose `(scope, key)` is stored with the same `value` is a duplicate;
/// a different value replaces the stored one and the record is new (e.g. key = an Event's uid,
/// value = its resourceVersion).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dedup {
    /// Namespace of the key, typically the source instance (shared by its records).
    pub scope: Arc<str>,
    /// The key.
    pub key: String,
    /// The value compared for equality.
    pub value: String,
    /// When `Store::purge_expired` may forget the key.
    pub expires_at_unix_ms: i64,
}

/// An acknowledgement: the output has durably delivered everything up to `up_to_seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The queue.
    pub queue: QueueId,
    /// Rows with `seq <= up_to_seq` are deleted.
    pub up_to_seq: u64,
    /// A checkpoint row `(stream, value)` written in the same transaction, e.g. a file
    /// output's committed length.
    pub state: Option<(String, String)>,
}

/// Drop a queue's oldest records until at least `free_bytes` are freed (or it is empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trim {
    /// The queue.
    pub queue: QueueId,
    /// Bytes to free at least.
    pub free_bytes: u64,
}

/// What `Store::commit` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitOutcome {
    /// Per entry, in order: `true` = stored and enqueued, `false` = duplicate, skipped.
    pub inserted: Vec<bool>,
    /// How many entries were duplicates.
    pub duplicates: u64,
    /// Per trim, in order: `(records, bytes)` dropped.
    pub trimmed: Vec<(u64, u64)>,
}

/// A stored checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The value last committed.
    pub value: String,
    /// When it was committed, milliseconds since the Unix epoch.
    pub updated_at_unix_ms: i64,
}
