//! Read-only connections for the queue readers (one per output) and for checkpoint lookups on
//! threads other than the writer's. In WAL mode each statement reads a consistent snapshot of
//! committed data and neither blocks nor is blocked by the writer.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::batch::Checkpoint;
use crate::error::{StateError, sql};
use crate::queue::{QueueId, QueueItem, key_seq, keys_after};
use crate::store::{pragma, read_checkpoint};

/// Page cache of a reader, in KiB: queue reads are sequential and read each page once, so a
/// small cache is enough.
const READER_CACHE_KIB: i64 = 4 * 1024;

/// A read-only connection to the state database. `Send`, not `Sync`: one per thread.
pub struct Reader {
    conn: Connection,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("path", &self.conn.path())
            .finish_non_exhaustive()
    }
}

impl Reader {
    pub(crate) fn open(path: &Path, busy_timeout: Duration) -> Result<Reader, StateError> {
        let open_err = |what: &'static str| {
            move |source| StateError::Open {
                path: path.to_path_buf(),
                what,
                source,
            }
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err("open reader"))?;
        conn.busy_timeout(busy_timeout)
            .map_err(open_err("set reader busy_timeout"))?;
        pragma(&conn, &format!("PRAGMA cache_size = -{READER_CACHE_KIB}"))
            .map_err(open_err("reader cache_size"))?;
        conn.set_prepared_statement_cache_capacity(16);
        Ok(Reader { conn })
    }

    /// Up to `max_records` items of queue `q` with `seq > after_seq`, in seq order, stopping
    /// before the item that would take the total data size past `max_bytes`. The first item is
    /// always returned if one exists, however big, so a large record cannot stall the queue;
    /// `max_records` of 0 counts as 1. Empty when nothing is after `after_seq`.
    pub fn read_queue(
        &mut self,
        q: QueueId,
        after_seq: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<QueueItem>, StateError> {
        let (lo, hi) = keys_after(q, after_seq);
        let limit = i64::try_from(max_records.max(1)).unwrap_or(i64::MAX);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT k, id, data FROM queue_items WHERE k > ?1 AND k <= ?2 ORDER BY k LIMIT ?3",
            )
            .map_err(sql("prepare queue read"))?;
        let mut rows = stmt
            .query(params![lo, hi, limit])
            .map_err(sql("read queue"))?;
        let mut items = Vec::new();
        let mut bytes = 0usize;
        while let Some(row) = rows.next().map_err(sql("read queue"))? {
            let data = row
                .get_ref(2)
                .and_then(|v| v.as_blob().map_err(Into::into))
                .map_err(sql("read queue record data"))?;
            if !items.is_empty() && bytes.saturating_add(data.len()) > max_bytes {
                break;
            }
            bytes = bytes.saturating_add(data.len());
            let data = data.to_vec();
            items.push(QueueItem {
                seq: key_seq(row.get(0).map_err(sql("read queue record seq"))?),
                id: row.get(1).map_err(sql("read queue record id"))?,
                data,
            });
        }
        Ok(items)
    }

    /// The committed checkpoint of `stream`, if any.
    pub fn checkpoint(&mut self, stream: &str) -> Result<Option<Checkpoint>, StateError> {
        read_checkpoint(&self.conn, stream)
    }

    /// The lowest seq still in queue `q`, or `None` when it is empty.
    pub fn first_seq(&mut self, q: QueueId) -> Result<Option<u64>, StateError> {
        let (lo, hi) = keys_after(q, 0);
        let k: Option<i64> = self
            .conn
            .prepare_cached("SELECT min(k) FROM queue_items WHERE k > ?1 AND k <= ?2")
            .map_err(sql("prepare first_seq"))?
            .query_row(params![lo, hi], |row| row.get(0))
            .map_err(sql("read first_seq"))?;
        Ok(k.map(key_seq))
    }

    /// The id of an existing queue, without creating it (only the writer creates queues).
    pub fn queue_id(&mut self, name: &str) -> Result<Option<QueueId>, StateError> {
        let id: Option<i64> = self
            .conn
            .prepare_cached("SELECT id FROM queues WHERE name = ?1")
            .map_err(sql("prepare queue lookup"))?
            .query_row([name], |row| row.get(0))
            .optional()
            .map_err(sql("look up queue"))?;
        Ok(id.and_then(|id| u32::try_from(id).ok()).map(QueueId))
    }
}
