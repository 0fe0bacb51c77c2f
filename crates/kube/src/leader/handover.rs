//! The checkpoint a leader hands to the next one, in the Lease annotation
//! `kubetrail.io/checkpoint`: each stream's committed position and the time of its last
//! record, when it was written and until when its writer may still commit.
//!
//! ```json
//! {"v":1,"holder":"kubetrail-events-0_5f3a9c","written":"2026-11-27T00:31:54.509942Z",
//!  "until":"2026-11-27T00:32:04.509942Z",
//!  "streams":{"kubernetes_events.0/events-v1/*":{"position":{"rv":"48213"},"last":"2026-11-27T00:31:53Z"}}}
//! ```
//!
//! Positions are opaque here (the source defines them); the annotation is read defensively,
//! since anyone allowed to update the Lease can write anything into it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use kubetrail_core::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

/// The annotation that holds the handover.
pub const CHECKPOINT_ANNOTATION: &str = "kubetrail.io/checkpoint";

/// The annotation is not written beyond this size (the apiserver allows 256 KiB for all of an
/// object's annotations together); the streams that do not fit are left out, so a new leader
/// resumes those from its own state.
pub const MAX_HANDOVER_BYTES: usize = 128 << 10;

/// Version of the handover format.
const FORMAT: u32 = 1;

/// One stream's handed-over position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamHandover {
    /// Where the stream is, as committed (the source's own encoding).
    pub position: serde_json::Value,
    /// The time of the last record committed in the stream (its occurrence time).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_timestamp"
    )]
    pub last: Option<Timestamp>,
}

/// What a leader leaves in the Lease for the next one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Handover {
    /// Format version.
    pub v: u32,
    /// The holder identity that wrote it.
    pub holder: String,
    /// When it was written (the writer's wall clock).
    #[serde(with = "timestamp")]
    pub written: Timestamp,
    /// Until when the writer may still commit after this write (its wall clock): records it
    /// committed after `written` and before `until` are not in these positions.
    #[serde(with = "timestamp")]
    pub until: Timestamp,
    /// Written by a graceful release, after the writer's last commit: nothing it committed
    /// is past these positions.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub released: bool,
    /// Per stream name.
    #[serde(default)]
    pub streams: BTreeMap<String, StreamHandover>,
}

impl Handover {
    /// Parses the annotation. `None` (with the reason) when it is not a handover this version
    /// understands.
    pub fn parse(text: &str) -> Result<Handover, String> {
        let h: Handover = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if h.v != FORMAT {
            return Err(format!("handover format {} is not {FORMAT}", h.v));
        }
        Ok(h)
    }

    /// The annotation text: the streams in name order, as many as fit in
    /// [`MAX_HANDOVER_BYTES`]; returns how many were left out.
    pub fn to_annotation(&self) -> (String, usize) {
        let text = serde_json::to_string(self).unwrap_or_default();
        if text.len() <= MAX_HANDOVER_BYTES {
            return (text, 0);
        }
        let mut fitting = self.clone();
        fitting.streams.clear();
        let mut size = serde_json::to_string(&fitting).map_or(0, |s| s.len());
        for (name, s) in &self.streams {
            let entry = serde_json::to_string(s).map_or(0, |t| t.len()) + name.len() + 4;
            if size + entry > MAX_HANDOVER_BYTES {
                break;
            }
            size += entry;
            fitting.streams.insert(name.clone(), s.clone());
        }
        let left_out = self.streams.len() - fitting.streams.len();
        (
            serde_json::to_string(&fitting).unwrap_or_default(),
            left_out,
        )
    }
}

/// The positions a leader would hand over right now: the source writes each stream's position
/// after its local commit; the elector reads them into every renewal. Cheap to clone.
///
/// Every change has a number (its generation); once the elector has written a snapshot into
/// the Lease it marks that snapshot's generation handed over, and a stream that must not go on
/// before its position is in the Lease asks for a renewal at once and waits for it
/// ([`HandoverBook::handed_over`]).
#[derive(Debug, Clone)]
pub struct HandoverBook {
    inner: Arc<Mutex<Book>>,
    /// The generation last written into the Lease.
    written: Arc<watch::Sender<u64>>,
    /// A stream waits for its position to be handed over: renew now.
    wanted: Arc<Notify>,
}

#[derive(Debug, Default)]
struct Book {
    streams: BTreeMap<String, StreamHandover>,
    generation: u64,
}

impl Default for HandoverBook {
    fn default() -> Self {
        HandoverBook {
            inner: Arc::default(),
            written: Arc::new(watch::channel(0).0),
            wanted: Arc::default(),
        }
    }
}

impl HandoverBook {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces everything (at the start of a term: the positions it resumes from).
    pub fn reset(&self, streams: BTreeMap<String, StreamHandover>) {
        let mut book = self.lock();
        book.streams = streams;
        book.generation += 1;
    }

    /// Records a stream's committed position (call only after the local commit); returns the
    /// book's generation with it.
    pub fn committed(
        &self,
        stream: &str,
        position: serde_json::Value,
        last: Option<Timestamp>,
    ) -> u64 {
        let mut book = self.lock();
        let entry = book
            .streams
            .entry(stream.to_string())
            .or_insert(StreamHandover {
                position: serde_json::Value::Null,
                last: None,
            });
        entry.position = position;
        // The time of the last record only moves forward (a heartbeat commits no record).
        if last.is_some() && last > entry.last {
            entry.last = last;
        }
        book.generation += 1;
        book.generation
    }

    /// A copy of every stream's position and the generation it is.
    pub fn snapshot_generation(&self) -> (BTreeMap<String, StreamHandover>, u64) {
        let book = self.lock();
        (book.streams.clone(), book.generation)
    }

    /// The elector wrote the snapshot of `generation` into the Lease.
    pub fn mark_handed_over(&self, generation: u64) {
        self.written.send_if_modified(|g| {
            let newer = generation > *g;
            if newer {
                *g = generation;
            }
            newer
        });
    }

    /// Waits until the Lease holds the book as of `generation` (or a later one), asking the
    /// elector to renew at once. It waits as long as it takes: the caller bounds it (by its
    /// term's end).
    pub async fn handed_over(&self, generation: u64) {
        let mut rx = self.written.subscribe();
        if *rx.borrow() >= generation {
            return;
        }
        self.wanted.notify_one();
        // The sender lives as long as this book: `wait_for` cannot fail while it is borrowed.
        let _ = rx.wait_for(|g| *g >= generation).await;
    }

    /// Fires when a stream waits for a handover (the elector renews at once).
    pub async fn wanted(&self) {
        self.wanted.notified().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

mod timestamp {
    use kubetrail_core::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse_rfc3339(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not an RFC 3339 time")))
    }
}

mod opt_timestamp {
    use kubetrail_core::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&t.to_rfc3339()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        match s {
            None => Ok(None),
            Some(s) => Timestamp::parse_rfc3339(&s)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not an RFC 3339 time"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn round_trips_and_reads_the_documented_form() {
        let text = r#"{"v":1,"holder":"kubetrail-events-0_5f3a9c","written":"2026-11-27T00:31:54.509942Z","until":"2026-11-27T00:32:04.509942Z","streams":{"kubernetes_events.0/events-v1/*":{"position":{"rv":"48213"},"last":"2026-11-27T00:31:53Z"}}}"#;
        let h = Handover::parse(text).unwrap();
        assert_eq!(h.holder, "kubetrail-events-0_5f3a9c");
        assert!(!h.released);
        let s = &h.streams["kubernetes_events.0/events-v1/*"];
        assert_eq!(s.position, json!({"rv": "48213"}));
        assert_eq!(s.last, Some(ts("2026-11-27T00:31:53Z")));
        assert_eq!(h.to_annotation(), (text.to_string(), 0));
        let released = Handover {
            released: true,
            ..h.clone()
        };
        assert!(released.to_annotation().0.contains(r#""released":true"#));
        assert_eq!(
            Handover::parse(&released.to_annotation().0).unwrap(),
            released
        );
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in [
            "",
            "{}",
            "null",
            r#"{"v":2,"holder":"x","written":"2026-11-27T00:31:54Z","until":"2026-11-27T00:31:54Z"}"#,
            r#"{"v":1,"holder":"x","written":"yesterday","until":"2026-11-27T00:31:54Z"}"#,
            r#"{"v":1,"holder":"x","written":"2026-11-27T00:31:54Z","until":"2026-11-27T00:31:54Z","streams":{"a":{"last":"x","position":1}}}"#,
        ] {
            assert!(Handover::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn too_many_streams_are_cut_to_fit() {
        let mut h = Handover {
            v: 1,
            holder: "h".into(),
            written: Timestamp::from_unix_nanos(0),
            until: Timestamp::from_unix_nanos(0),
            released: false,
            streams: BTreeMap::new(),
        };
        for i in 0..5000 {
            h.streams.insert(
                format!("kubernetes_events.0/events-v1/namespace-{i:05}"),
                StreamHandover {
                    position: json!({"rv": format!("{}", 1_000_000 + i)}),
                    last: Some(Timestamp::from_unix_nanos(1)),
                },
            );
        }
        let (text, left_out) = h.to_annotation();
        assert!(text.len() <= MAX_HANDOVER_BYTES, "{}", text.len());
        assert!(left_out > 0 && left_out < 5000);
        let back = Handover::parse(&text).unwrap();
        assert_eq!(back.streams.len(), 5000 - left_out);
        // The first streams by name are the ones kept.
        assert!(
            back.streams
                .contains_key("kubernetes_events.0/events-v1/namespace-00000")
        );
    }

    #[test]
    fn the_book_keeps_the_latest_position_and_the_latest_record_time() {
        let b = HandoverBook::new();
        let g1 = b.committed("s", json!({"rv": "1"}), Some(ts("2026-11-27T00:00:02Z")));
        let g2 = b.committed("s", json!({"rv": "2"}), None);
        let g3 = b.committed("s", json!({"rv": "3"}), Some(ts("2026-11-27T00:00:01Z")));
        assert!(g1 < g2 && g2 < g3, "every change has a newer generation");
        let (streams, generation) = b.snapshot_generation();
        assert_eq!(generation, g3);
        let s = &streams["s"];
        assert_eq!(s.position, json!({"rv": "3"}));
        assert_eq!(s.last, Some(ts("2026-11-27T00:00:02Z")));
        b.reset(BTreeMap::new());
        let (streams, generation) = b.snapshot_generation();
        assert!(streams.is_empty());
        assert!(generation > g3);
    }
}
