//! The body of one commit transaction ([`Writer`]): dedup-key upserts, records cut into
//! blocks and appended to the queues' segments, checkpoints and acknowledgements; and the
//! buffers blocks are sealed in.

use super::*;

/// The buffers a block is made in: its records before compression and the compressed block.
#[derive(Debug)]
pub(super) struct BlockBufs {
    pub(super) raw: Vec<u8>,
    pub(super) packed: Vec<u8>,
    /// `StoreOptions::compress`.
    pub(super) compress: bool,
}

impl BlockBufs {
    /// Seals the records in `raw` (numbered `first_seq` on, `count` of them) into a block and
    /// writes it at log position `pos` of the appender's current segment; returns its length.
    pub(super) fn write(
        &mut self,
        appender: &mut Appender,
        pos: u64,
        first_seq: u64,
        count: u32,
    ) -> Result<u64, StateError> {
        let (h, payload) =
            format::seal_block_as(first_seq, count, &self.raw, &mut self.packed, self.compress);
        let header = h.encode();
        appender.write_vectored_at(pos, &mut [IoSlice::new(&header), IoSlice::new(payload)])?;
        // A huge record's buffer is not kept.
        if self.packed.capacity() as u64 > 4 * BLOCK_RAW_TARGET {
            self.packed = Vec::new();
        }
        Ok(h.total())
    }

    /// The records of the block just written, taken out of `raw` (for the readers), which is
    /// left empty for the next block.
    fn take_raw(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.raw)
    }

    /// Empties `raw` for the next block (the one written holds its records); a buffer a huge
    /// record grew is not kept.
    pub(super) fn next_block(&mut self) {
        if self.raw.capacity() as u64 > 4 * BLOCK_RAW_TARGET {
            self.raw = Vec::new();
        } else {
            self.raw.clear();
        }
    }
}

/// Keeps a commit's frame lists for the next one: emptied, at most a few, and none that a
/// batch of tiny records grew far past the usual size.
pub(super) fn keep_frame_lists(
    pool: &mut Vec<Vec<(u64, usize)>>,
    bufs: impl IntoIterator<Item = Vec<(u64, usize)>>,
) {
    for mut b in bufs {
        if pool.len() < 4 && b.capacity() <= MAX_KEPT_FRAMES {
            b.clear();
            pool.push(b);
        }
    }
}

/// The body of one commit transaction.
pub(super) struct Writer<'a, 't> {
    pub(super) tx: &'a Transaction<'t>,
    pub(super) queues: &'a HashMap<QueueId, QueueState>,
    pub(super) files: &'a mut HashMap<QueueId, QueueFiles>,
    pub(super) hints: &'a Hints,
    pub(super) scratch: &'a mut Vec<u8>,
    pub(super) blocks: &'a mut BlockBufs,
    pub(super) frame_lists: &'a mut Vec<Vec<(u64, usize)>>,
    /// The queues this transaction changes, with their new bounds.
    pub(super) pending: &'a mut Vec<PendingQueue>,
    /// Where the blocks written go with their records, for the readers once the commit is
    /// durable (`None`: not kept).
    pub(super) fresh: Option<&'a mut Vec<RecentBlock>>,
}

impl Writer<'_, '_> {
    fn pending_for(&mut self, q: QueueId) -> Result<usize, StateError> {
        if let Some(i) = self.pending.iter().position(|p| p.id == q) {
            return Ok(i);
        }
        let state = *self
            .queues
            .get(&q)
            .ok_or(StateError::UnknownQueue { queue: q })?;
        self.pending.push(PendingQueue {
            id: q,
            state,
            began: false,
            frames: self.frame_lists.pop().unwrap_or_default(),
            frames_bytes: 0,
        });
        Ok(self.pending.len() - 1)
    }

    fn files(&mut self, q: QueueId) -> Result<&mut QueueFiles, StateError> {
        self.files
            .get_mut(&q)
            .ok_or(StateError::UnknownQueue { queue: q })
    }

    /// Writes queue `i`'s pending records to its segment as one block, and moves its head
    /// past it.
    fn flush(&mut self, i: usize, entries: &[Entry]) -> Result<(), StateError> {
        let q = self.pending[i].id;
        let frames = std::mem::take(&mut self.pending[i].frames);
        let Some(&(first_seq, _)) = frames.first() else {
            self.pending[i].frames = frames;
            return Ok(());
        };
        let head = self.pending[i].state.head_pos;
        let bufs = &mut *self.blocks;
        bufs.raw.clear();
        if self.fresh.is_some() {
            // The records go to the readers in this buffer: sized exactly, as they keep it.
            bufs.raw = Vec::with_capacity(self.pending[i].frames_bytes as usize);
        }
        for &(_, e) in &frames {
            let entry = &entries[e];
            format::push_record(&mut bufs.raw, entry.id.as_bytes(), &entry.data);
        }
        let appender = &mut self
            .files
            .get_mut(&q)
            .ok_or(StateError::UnknownQueue { queue: q })?
            .appender;
        let written = bufs.write(appender, head, first_seq, frames.len() as u32)?;
        if let Some(fresh) = self.fresh.as_deref_mut() {
            fresh.push(RecentBlock {
                queue: q,
                pos: head,
                len: written,
                first_seq,
                count: frames.len() as u64,
                raw: Bytes::from(bufs.take_raw()),
            });
        } else {
            bufs.next_block();
        }
        let p = &mut self.pending[i];
        p.state.head_pos = head + written;
        p.frames_bytes = 0;
        p.frames = frames;
        p.frames.clear();
        Ok(())
    }

    pub(super) fn write_batch(
        &mut self,
        batch: &CommitBatch,
        now_unix_ms: i64,
        outcome: &mut CommitOutcome,
    ) -> Result<(), StateError> {
        for trim in &batch.trims {
            let i = self.pending_for(trim.queue)?;
            let st = self.pending[i].state;
            let (mut records, mut bytes) = (0u64, 0u64);
            let free = trim.free_bytes;
            let scratch = &mut *self.scratch;
            let f = self
                .files
                .get_mut(&trim.queue)
                .ok_or(StateError::UnknownQueue { queue: trim.queue })?;
            f.segments.set_starts(f.appender.starts());
            // Whole units go: a block is on disk until every record in it is gone.
            let (seq, pos) = f.segments.walk(
                st.tail_seq,
                st.tail_pos,
                st.next_seq,
                LogEnd {
                    next_seq: st.next_seq,
                    head: st.head_pos,
                },
                scratch,
                |u| {
                    if bytes >= free {
                        return false;
                    }
                    records += u.end_seq() - u.first_seq.max(st.tail_seq);
                    bytes += u.len;
                    true
                },
            )?;
            let p = &mut self.pending[i];
            p.state.tail_seq = seq;
            p.state.tail_pos = pos;
            outcome.trimmed.push((records, bytes));
        }

        if !batch.entries.is_empty() {
            let mut dedup = self
                .tx
                .prepare_cached(UPSERT_DEDUP)
                .map_err(sql("commit: prepare dedup upsert"))?;
            // The entries go in chunks: a chunk's keys are upserted, then its fresh entries
            // appended (their frames written once a megabyte is pending, and the disk told to
            // start on them), so the disk writes one chunk while the next one's keys are
            // upserted and the final fsync finds little left to do. Within a chunk the keys
            // are upserted in key order (the b-tree is then walked leaf after leaf instead of
            // at random: audit IDs are random); the order is stable, so entries with one key
            // still see each other in batch order, as when upserted one after the other.
            fn key(d: &Option<Dedup>) -> Option<(&str, &str)> {
                d.as_ref().map(|d| (&*d.scope, d.key.as_str()))
            }
            let n = batch.entries.len();
            let mut fresh_keys = vec![true; n];
            let mut order: Vec<usize> = Vec::with_capacity(n.min(DEDUP_CHUNK));
            for first in (0..n).step_by(DEDUP_CHUNK) {
                let chunk = first..(first + DEDUP_CHUNK).min(n);
                order.clear();
                order.extend(chunk.clone().filter(|&e| batch.entries[e].dedup.is_some()));
                order.sort_by(|&a, &b| {
                    key(&batch.entries[a].dedup).cmp(&key(&batch.entries[b].dedup))
                });
                for &e in &order {
                    if let Some(d) = &batch.entries[e].dedup {
                        // The upsert changes nothing (0 rows) exactly when the key is stored
                        // with the same value: one b-tree descent both decides and records it.
                        fresh_keys[e] = dedup
                            .execute(params![&*d.scope, d.key, d.value, d.expires_at_unix_ms])
                            .map_err(sql("commit: upsert dedup key"))?
                            > 0;
                    }
                }
                for e in chunk {
                    let entry = &batch.entries[e];
                    let fresh = fresh_keys[e];
                    outcome.inserted.push(fresh);
                    if !fresh {
                        outcome.duplicates += 1;
                        continue;
                    }
                    let len = format::record_len(entry.id.len(), entry.data.len());
                    if len > BLOCK_RAW_MAX {
                        return Err(StateError::RecordTooLarge {
                            id: entry.id.clone(),
                            bytes: len,
                        });
                    }
                    for &q in entry.queues.iter() {
                        let i = self.pending_for(q)?;
                        if !self.pending[i].began {
                            let head = self.pending[i].state.head_pos;
                            self.files(q)?.appender.begin(head)?;
                            self.pending[i].began = true;
                        }
                        if self.pending[i].frames_bytes + len > BLOCK_RAW_MAX {
                            self.flush(i, &batch.entries)?;
                        }
                        let p = &mut self.pending[i];
                        if p.state.next_seq > MAX_SEQ {
                            return Err(StateError::SeqExhausted { queue: q });
                        }
                        p.frames.push((p.state.next_seq, e));
                        p.frames_bytes += len;
                        p.state.next_seq += 1;
                        if p.frames_bytes >= BLOCK_RAW_TARGET {
                            self.flush(i, &batch.entries)?;
                        }
                    }
                }
            }
            for i in 0..self.pending.len() {
                if !self.pending[i].frames.is_empty() {
                    self.flush(i, &batch.entries)?;
                }
            }
        }

        for (stream, value) in &batch.checkpoints {
            upsert_checkpoint(self.tx, stream, value, now_unix_ms)?;
        }
        if !batch.forget.is_empty() {
            let mut delete = self
                .tx
                .prepare_cached(DELETE_CHECKPOINT)
                .map_err(sql("commit: prepare checkpoint delete"))?;
            for stream in &batch.forget {
                delete
                    .execute([stream])
                    .map_err(sql("commit: delete checkpoint"))?;
            }
        }

        for ack in &batch.acks {
            let i = self.pending_for(ack.queue)?;
            let st = self.pending[i].state;
            let target = ack.up_to_seq.saturating_add(1);
            if target > st.tail_seq {
                let (seq, pos) = if target >= st.next_seq {
                    (st.next_seq, st.head_pos)
                } else {
                    self.position_of(ack.queue, &st, target)?
                };
                let p = &mut self.pending[i];
                p.state.tail_seq = seq;
                p.state.tail_pos = pos;
            }
            if let Some((stream, value)) = &ack.state {
                upsert_checkpoint(self.tx, stream, value, now_unix_ms)?;
            }
        }
        Ok(())
    }

    /// Where the unit holding record `target` (between the tail and the head of `st`) starts:
    /// the position a reader left as a hint, checked against the unit's header, or found by
    /// walking the log.
    fn position_of(
        &mut self,
        q: QueueId,
        st: &QueueState,
        target: u64,
    ) -> Result<(u64, u64), StateError> {
        let hint = self.hints.take(q, target);
        let scratch = &mut *self.scratch;
        let f = self
            .files
            .get_mut(&q)
            .ok_or(StateError::UnknownQueue { queue: q })?;
        f.segments.set_starts(f.appender.starts());
        if let Some(pos) = hint
            && pos >= st.tail_pos
            && let Some(u) = f.segments.unit_at(pos, st.head_pos, scratch)?
            && u.holds(target)
        {
            return Ok((target, pos));
        }
        let reached = f.segments.walk(
            st.tail_seq,
            st.tail_pos,
            target,
            LogEnd {
                next_seq: st.next_seq,
                head: st.head_pos,
            },
            scratch,
            |_| true,
        )?;
        Ok(reached)
    }

    /// Makes the appended frames durable and stores the queues' new bounds.
    pub(super) fn finish(&mut self, fsync: bool) -> Result<(), StateError> {
        let mut update = self
            .tx
            .prepare_cached(UPDATE_QUEUE)
            .map_err(sql("commit: prepare queue update"))?;
        for p in self.pending.iter() {
            if p.began && fsync {
                self.files
                    .get_mut(&p.id)
                    .ok_or(StateError::UnknownQueue { queue: p.id })?
                    .appender
                    .sync()?;
            }
            let s = &p.state;
            update
                .execute(params![
                    p.id.0,
                    to_i64(s.next_seq),
                    to_i64(s.head_pos),
                    to_i64(s.tail_seq),
                    to_i64(s.tail_pos)
                ])
                .map_err(sql("commit: store queue bounds"))?;
        }
        Ok(())
    }
}
