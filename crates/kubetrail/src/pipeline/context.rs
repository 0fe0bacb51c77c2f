//! What a running source holds: its name and tag, the shutdown signal, and the handle through
//! which it submits records (filters, routing, encoding, then the journal's commit).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kubetrail_core::Record;
use kubetrail_state::{Checkpoint, Dedup, Entry, QueueId};

use super::Filter;
use super::journal::JournalHandle;
use super::matcher::Matcher;
use crate::shutdown::Shutdown;
use crate::telemetry::health::Health;
use crate::telemetry::{ComponentMetrics, Metrics};

/// Why a submission was not committed. Nothing of it was committed in any case.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PipelineError {
    /// An output's queue reached `storage.total_limit_size`: back off and try again.
    #[error("the queue of output '{output}' is full")]
    QueueFull { output: String },
    /// The file system of the state database is full: nothing new is stored until
    /// deliveries free space; back off and try again (nothing is lost).
    #[error(
        "the state directory's file system is full; records are stored again once deliveries free space"
    )]
    DiskFull,
    /// The state database failed (an I/O error).
    #[error("state storage failed: {0}")]
    Storage(String),
    /// The agent is stopping.
    #[error("the pipeline is shutting down")]
    ShuttingDown,
}

/// Records and the checkpoints they advance, committed together.
#[derive(Debug, Default)]
pub struct Submission {
    pub records: Vec<Record>,
    /// `(stream, value)` pairs stored in the same transaction as the records.
    pub checkpoints: Vec<(String, String)>,
    /// How long the records' dedup keys are kept.
    pub dedup_retention: Duration,
    /// The records already filtered, routed and encoded by [`SourceContext::prepare`] (then
    /// `records` is empty): a source that prepares batch N+1 while batch N commits keeps
    /// the CPU work off the committing path.
    pub prepared: Option<Prepared>,
}

/// Records filtered, routed and encoded, ready for the journal.
#[derive(Debug, Default)]
pub struct Prepared {
    entries: Vec<Entry>,
    records: usize,
    filtered: usize,
    unrouted: usize,
    bytes: u64,
}

impl Prepared {
    /// Appends records prepared after these.
    pub fn append(&mut self, more: Prepared) {
        self.entries.extend(more.entries);
        self.records += more.records;
        self.filtered += more.filtered;
        self.unrouted += more.unrouted;
        self.bytes += more.bytes;
    }
}

/// What became of a submission's records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubmitOutcome {
    /// Committed to the queues of the outputs that match them (or to none if none match).
    pub accepted: usize,
    /// Already seen (same dedup key and value): not queued again.
    pub duplicates: usize,
    /// Dropped by a filter.
    pub filtered: usize,
    /// Encoded bytes of the accepted records.
    pub bytes: u64,
}

/// One output's place in the routing table.
pub(crate) struct Route {
    pub matcher: Matcher,
    pub queue: QueueId,
}

/// The shared part of the pipeline every source submits through.
pub(crate) struct Pipeline {
    pub filters: Vec<(String, Matcher, Arc<dyn Filter>)>,
    pub routes: Vec<Route>,
    pub journal: JournalHandle,
}

impl Pipeline {
    /// Runs filters, routes and encodes, then commits through the journal.
    pub async fn submit(
        &self,
        mut sub: Submission,
        wait: Option<(&Shutdown, &str)>,
    ) -> Result<SubmitOutcome, PipelineError> {
        let prepared = match sub.prepared.take() {
            Some(p) if sub.records.is_empty() => p,
            Some(mut p) => {
                // Records added after preparing: prepare them too, after the others.
                p.append(self.prepare(std::mem::take(&mut sub.records), sub.dedup_retention));
                p
            }
            None => self.prepare(std::mem::take(&mut sub.records), sub.dedup_retention),
        };
        self.commit(prepared, sub.checkpoints, wait).await
    }

    /// Filters, routes and encodes records (CPU only; safe on a blocking thread).
    pub fn prepare(&self, records: Vec<Record>, dedup_retention: Duration) -> Prepared {
        let mut filtered = 0;
        let mut bytes = 0u64;
        let now_ms = kubetrail_core::Timestamp::now().unix_nanos() / 1_000_000;
        let expires =
            now_ms.saturating_add(i64::try_from(dedup_retention.as_millis()).unwrap_or(i64::MAX));
        let n = records.len();
        let mut entries = Vec::with_capacity(n);
        let mut unrouted = 0;
        // The records of a batch mostly share a tag, so their queue list is shared too.
        let mut last_route: Option<(Arc<str>, Arc<[QueueId]>)> = None;
        // Every record is encoded into one buffer, and each entry's data is a slice of it: one
        // allocation (and one free, on the journal's thread) per batch instead of per record.
        let mut buf: Vec<u8> =
            Vec::with_capacity(records.iter().map(Record::encoded_size_hint).sum());
        let mut spans: Vec<(usize, usize)> = Vec::with_capacity(n);
        'records: for mut record in records {
            for (_, matcher, filter) in &self.filters {
                if matcher.matches(&record.tag) && !filter.apply(&mut record) {
                    filtered += 1;
                    continue 'records;
                }
            }
            let queues = match &last_route {
                Some((tag, queues)) if *tag == record.tag => queues.clone(),
                _ => {
                    let queues: Arc<[QueueId]> = self
                        .routes
                        .iter()
                        .filter(|r| r.matcher.matches(&record.tag))
                        .map(|r| r.queue)
                        .collect();
                    last_route = Some((record.tag.clone(), queues.clone()));
                    queues
                }
            };
            let dedup = record.dedup.take().map(|d| Dedup {
                scope: d.scope,
                key: d.key,
                value: d.value,
                expires_at_unix_ms: expires,
            });
            if queues.is_empty() && dedup.is_none() {
                // Nowhere to go and nothing to remember.
                unrouted += 1;
                continue;
            }
            // A record no output takes is still remembered (its dedup key), not encoded.
            let start = buf.len();
            if !queues.is_empty() {
                record.encode_into(&mut buf);
            }
            bytes += (buf.len() - start) as u64;
            spans.push((start, buf.len()));
            entries.push(Entry {
                dedup,
                queues,
                id: record.id,
                data: Bytes::new(),
            });
        }
        if buf.capacity() > 2 * buf.len() + 4096 {
            // Filters dropped most of the batch: its entries do not keep the room it needed.
            buf.shrink_to_fit();
        }
        let shared = Bytes::from(buf);
        for (entry, (start, end)) in entries.iter_mut().zip(spans) {
            if end > start {
                entry.data = shared.slice(start..end);
            }
        }
        Prepared {
            entries,
            records: n,
            filtered,
            unrouted,
            bytes,
        }
    }

    /// Commits prepared records and checkpoints through the journal.
    async fn commit(
        &self,
        p: Prepared,
        checkpoints: Vec<(String, String)>,
        wait: Option<(&Shutdown, &str)>,
    ) -> Result<SubmitOutcome, PipelineError> {
        if p.entries.is_empty() && checkpoints.is_empty() {
            return Ok(SubmitOutcome {
                accepted: p.unrouted,
                duplicates: 0,
                filtered: p.filtered,
                bytes: 0,
            });
        }
        let outcome = self.journal.submit(p.entries, checkpoints, wait).await?;
        Ok(SubmitOutcome {
            accepted: outcome.accepted + p.unrouted,
            duplicates: outcome.duplicates,
            filtered: p.filtered,
            bytes: p.bytes,
        })
    }
}

/// Everything a running source needs.
#[derive(Clone)]
pub struct SourceContext {
    /// The instance name (`alias`, or `<plugin>.<index>`).
    pub name: Arc<str>,
    /// The routing tag of its records.
    pub tag: Arc<str>,
    /// Fires when the source must stop.
    pub shutdown: Shutdown,
    /// The source's counters.
    pub metrics: ComponentMetrics,
    /// The whole registry, for sources that register their own series.
    pub registry: Arc<Metrics>,
    /// Readiness: a source registers itself and reports progress.
    pub health: Arc<Health>,
    pub(crate) pipeline: Arc<Pipeline>,
}

impl SourceContext {
    /// Commits records and checkpoints; returns once they are durable in every matching
    /// output's queue (or reports that nothing was committed). When an output's queue is
    /// full it waits for room (backpressure), until shutdown.
    pub async fn submit(&self, sub: Submission) -> Result<SubmitOutcome, PipelineError> {
        self.submit_inner(sub, Some((&self.shutdown, &self.name)))
            .await
    }

    /// Like [`SourceContext::submit`], but a full queue is reported at once as
    /// [`PipelineError::QueueFull`] (for sources that push back on their own clients, such
    /// as the audit webhook answering 503).
    pub async fn try_submit(&self, sub: Submission) -> Result<SubmitOutcome, PipelineError> {
        self.submit_inner(sub, None).await
    }

    /// Filters, routes and encodes a submission's records now (CPU work, fine on a blocking
    /// thread), so that its later [`SourceContext::submit`] only commits.
    pub fn prepare(&self, mut sub: Submission) -> Submission {
        let records = std::mem::take(&mut sub.records);
        let p = self.pipeline.prepare(records, sub.dedup_retention);
        sub.prepared = Some(match sub.prepared.take() {
            Some(mut before) => {
                before.append(p);
                before
            }
            None => p,
        });
        sub
    }

    async fn submit_inner(
        &self,
        sub: Submission,
        wait: Option<(&Shutdown, &str)>,
    ) -> Result<SubmitOutcome, PipelineError> {
        let n = sub.records.len() + sub.prepared.as_ref().map_or(0, |p| p.records);
        let out = self.pipeline.submit(sub, wait).await?;
        self.metrics.records_in.add(n as u64);
        self.metrics.bytes_in.add(out.bytes);
        self.metrics.duplicates.add(out.duplicates as u64);
        self.metrics.filtered.add(out.filtered as u64);
        Ok(out)
    }

    /// The last committed value of a checkpoint stream.
    pub async fn checkpoint(&self, stream: &str) -> Result<Option<Checkpoint>, PipelineError> {
        self.pipeline.journal.checkpoint(stream.to_string()).await
    }

    /// The committed checkpoints of this source whose names start with
    /// `<source name>/<prefix>`, by name.
    pub async fn checkpoints_under(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, Checkpoint)>, PipelineError> {
        self.pipeline
            .journal
            .checkpoints(self.stream_name(prefix))
            .await
    }

    /// Deletes checkpoint streams of this source (full names, from
    /// [`SourceContext::stream_name`]); returns once that is committed.
    pub async fn forget_checkpoints(&self, streams: Vec<String>) -> Result<(), PipelineError> {
        let own = self.stream_name("");
        if let Some(other) = streams.iter().find(|s| !s.starts_with(&own)) {
            return Err(PipelineError::Storage(format!(
                "source {} cannot forget checkpoint {other:?} of another component",
                self.name
            )));
        }
        self.pipeline.journal.forget(streams).await
    }

    /// A checkpoint stream name owned by this source: `<source name>/<suffix>`.
    pub fn stream_name(&self, suffix: &str) -> String {
        format!("{}/{}", self.name, suffix)
    }
}

#[cfg(test)]
mod tests {
    use kubetrail_core::{RecordKind, Timestamp};

    use super::*;
    use crate::pipeline::journal::OnFull;
    use crate::pipeline::journal::tests::setup;

    /// Drops records whose id ends in an odd digit.
    struct DropOdd;

    impl Filter for DropOdd {
        fn apply(&self, record: &mut Record) -> bool {
            record
                .id
                .bytes()
                .last()
                .is_some_and(|b| (b - b'0').is_multiple_of(2))
        }
    }

    fn record(i: usize, tag: &str) -> Record {
        let mut r = Record::new(
            format!("r{i}"),
            Timestamp::from_unix_nanos(i as i64),
            RecordKind::K8sEvent,
            Arc::from("src"),
            Arc::from(tag),
        );
        r.fields.insert("n".into(), serde_json::json!(i));
        r.fields
            .insert("pad".into(), serde_json::json!("x".repeat(i * 37 % 500)));
        r
    }

    #[tokio::test]
    async fn a_source_lists_and_forgets_its_own_checkpoints_only() {
        let (_dir, journal, _q, _, mut reader) = setup(OnFull::Backpressure);
        let (_trigger, shutdown) = crate::shutdown::channel();
        let ctx = SourceContext {
            name: Arc::from("audit_file.0"),
            tag: Arc::from("t"),
            shutdown,
            metrics: crate::telemetry::ComponentMetrics::default(),
            registry: crate::telemetry::Metrics::new(),
            health: crate::telemetry::health::Health::new(),
            pipeline: Arc::new(Pipeline {
                filters: vec![],
                routes: vec![],
                journal,
            }),
        };
        let mine = ctx.stream_name("fp:1");
        ctx.submit(Submission {
            checkpoints: vec![
                (mine.clone(), "1".into()),
                ("audit_file.1/fp:1".into(), "2".into()),
            ],
            ..Submission::default()
        })
        .await
        .unwrap();
        let listed = ctx.checkpoints_under("fp:").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].0, mine);
        assert!(matches!(
            ctx.forget_checkpoints(vec!["audit_file.1/fp:1".into()])
                .await,
            Err(PipelineError::Storage(_))
        ));
        ctx.forget_checkpoints(vec![mine.clone()]).await.unwrap();
        assert_eq!(reader.checkpoint(&mine).unwrap(), None);
        assert!(reader.checkpoint("audit_file.1/fp:1").unwrap().is_some());
    }

    #[test]
    fn prepared_entries_share_one_buffer_and_hold_each_records_encoding() {
        let (_dir, journal, q, _, _reader) = setup(OnFull::Backpressure);
        let pipeline = Pipeline {
            filters: vec![(
                "drop-odd".into(),
                Matcher::Wildcard("*".into()),
                Arc::new(DropOdd),
            )],
            routes: vec![Route {
                matcher: Matcher::Wildcard("routed".into()),
                queue: q,
            }],
            journal,
        };
        let records: Vec<Record> = (0..200)
            .map(|i| record(i, if i % 4 == 2 { "unrouted" } else { "routed" }))
            .collect();
        let expected: Vec<(String, Vec<u8>)> = records
            .iter()
            .filter(|r| {
                r.id.bytes()
                    .last()
                    .is_some_and(|b| (b - b'0').is_multiple_of(2))
            })
            .filter(|r| &*r.tag == "routed")
            .map(|r| (r.id.clone(), r.encode()))
            .collect();
        let p = pipeline.prepare(records, Duration::from_secs(60));
        assert_eq!((p.records, p.filtered, p.unrouted), (200, 100, 50));
        let got: Vec<(String, Vec<u8>)> = p
            .entries
            .iter()
            .map(|e| (e.id.clone(), e.data.to_vec()))
            .collect();
        assert_eq!(got, expected);
        assert_eq!(
            p.bytes,
            expected.iter().map(|(_, d)| d.len() as u64).sum::<u64>()
        );
        // One buffer: each entry's data follows the previous one's.
        for pair in p.entries.windows(2) {
            let end = pair[0].data.as_ptr() as usize + pair[0].data.len();
            assert_eq!(pair[1].data.as_ptr() as usize, end);
        }
    }
}
