//! The blocks the writer has just committed, kept in memory for the queues' readers: a reader
//! that is caught up takes the records of the newest blocks from here instead of reading the
//! segment back, checking the block's checksum and decompressing it. The writer holds each
//! block's records uncompressed when it writes the block, and hands them over only once the
//! commit is durable, so nothing here was ever cut back by a failed commit. Newest only,
//! bounded in blocks and in bytes; a reader that falls behind finds nothing here and reads the
//! segment as before.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;

use crate::queue::QueueId;

/// Blocks kept at most (over all queues).
pub(crate) const RECENT_MAX_BLOCKS: usize = 16;
/// Bytes of records kept at most (over all queues): a few blocks of `BLOCK_RAW_TARGET`.
pub(crate) const RECENT_MAX_BYTES: usize = 4 << 20;

/// One committed block of a queue's log, decompressed.
#[derive(Debug, Clone)]
pub(crate) struct RecentBlock {
    pub queue: QueueId,
    /// Where the block starts in the queue's log.
    pub pos: u64,
    /// Its length in the log (header and payload as stored).
    pub len: u64,
    pub first_seq: u64,
    pub count: u64,
    /// The block's records as the payload holds them once decompressed.
    pub raw: Bytes,
}

#[derive(Debug, Default)]
struct Inner {
    blocks: VecDeque<RecentBlock>,
    bytes: usize,
}

/// The newest committed blocks, shared by the writer (which fills it after each commit) and
/// the readers made from its store.
#[derive(Debug)]
pub(crate) struct Recent {
    inner: Mutex<Inner>,
    max_blocks: usize,
    max_bytes: usize,
}

impl Default for Recent {
    fn default() -> Recent {
        Recent::new(RECENT_MAX_BLOCKS, RECENT_MAX_BYTES)
    }
}

impl Recent {
    pub fn new(max_blocks: usize, max_bytes: usize) -> Recent {
        Recent {
            inner: Mutex::new(Inner::default()),
            max_blocks,
            max_bytes,
        }
    }

    /// Whether blocks are kept at all.
    pub fn enabled(&self) -> bool {
        self.max_blocks > 0 && self.max_bytes > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The lists hold no invariant a panic could break halfway: go on with them.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds the blocks of a commit that is durable, in log order, dropping the oldest ones
    /// beyond the bounds. A block larger than the byte bound is not kept.
    pub fn publish(&self, blocks: impl IntoIterator<Item = RecentBlock>) {
        let mut inner = self.lock();
        for b in blocks {
            if b.raw.len() > self.max_bytes || self.max_blocks == 0 {
                continue;
            }
            inner.bytes += b.raw.len();
            inner.blocks.push_back(b);
            while inner.blocks.len() > self.max_blocks || inner.bytes > self.max_bytes {
                let Some(old) = inner.blocks.pop_front() else {
                    break;
                };
                inner.bytes -= old.raw.len();
            }
        }
    }

    /// The block of queue `q` that starts at log position `pos`, if it is still kept.
    pub fn get(&self, q: QueueId, pos: u64) -> Option<RecentBlock> {
        let inner = self.lock();
        // Newest last, and a caught-up reader asks for one of the newest.
        inner
            .blocks
            .iter()
            .rev()
            .find(|b| b.queue == q && b.pos == pos)
            .cloned()
    }

    /// Forgets queue `q`'s blocks (the queue is deleted, or created again with its positions
    /// starting over).
    pub fn forget_queue(&self, q: QueueId) {
        let mut inner = self.lock();
        inner.blocks.retain(|b| b.queue != q);
        inner.bytes = inner.blocks.iter().map(|b| b.raw.len()).sum();
    }

    /// Forgets every block.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.blocks.clear();
        inner.bytes = 0;
    }

    /// Blocks and bytes kept now.
    #[cfg(test)]
    pub fn held(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.blocks.len(), inner.bytes)
    }

    /// The blocks kept now, oldest first: `(queue, pos)`.
    #[cfg(test)]
    pub fn positions(&self) -> Vec<(QueueId, u64)> {
        self.lock()
            .blocks
            .iter()
            .map(|b| (b.queue, b.pos))
            .collect()
    }
}

#[cfg(test)]
mod tests;
