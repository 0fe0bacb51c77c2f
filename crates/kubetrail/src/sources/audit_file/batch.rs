//! A batch in the making and in flight: the lines read (copied into one buffer, so a batch
//! costs one allocation, not one per line), the records made from them, and the checkpoints
//! (file offsets) they advance to.
//!
//! The lines are kept until the batch is committed: when the pipeline answers `QueueFull`, the
//! submitted records are gone, and the same batch is rebuilt from its lines and retried.

use std::sync::Arc;

use bytes::Bytes;
use kubetrail_core::{ByteString, DedupKey, Original, Record, RecordKind, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::fingerprint::Fingerprint;
use super::reader::Event;
use crate::sources::audit;

/// How much of an unparseable line is kept as the original of its error record.
const SNIPPET_BYTES: usize = 1024;
/// The dedup scope of error records made by this source (key: fingerprint/offset).
const ERROR_DEDUP_SCOPE: &str = "audit_file_error";

/// What a checkpoint stream of one file holds (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCheckpoint {
    /// Everything before this offset (of the uncompressed stream) has been submitted.
    pub offset: u64,
    /// The name the file was last known under.
    pub path: String,
    /// The file was seen being rotated (renamed away or removed from its first name).
    #[serde(default)]
    pub rotated: bool,
    /// The file was read to its end after its rotation and left.
    #[serde(default)]
    pub done: bool,
}

impl FileCheckpoint {
    pub fn encode(&self) -> String {
        // A struct of numbers, booleans and a string always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn decode(s: &str) -> Option<FileCheckpoint> {
        serde_json::from_str(s).ok()
    }
}

#[derive(Debug, Clone)]
struct FileRef {
    fp: Fingerprint,
    path: Arc<str>,
}

#[derive(Debug, Clone)]
enum ItemKind {
    Line,
    TooLong { len: u64 },
}

#[derive(Debug, Clone)]
struct Item {
    file: usize,
    offset: u64,
    /// `data[start..end]`: the line, or the first bytes of a too-long one.
    start: usize,
    end: usize,
    kind: ItemKind,
}

/// The lines of a batch: appended to `data` while the batch is read; once it is complete,
/// [`LineStore::seal`] turns them into a shared text (when they are UTF-8, as audit logs
/// are), which the records made from them point into instead of copying their line.
#[derive(Debug, Default, Clone)]
pub struct LineStore {
    data: Vec<u8>,
    /// The sealed lines (then `data` is empty).
    text: Option<ByteString>,
    items: Vec<Item>,
    files: Vec<FileRef>,
}

impl LineStore {
    /// Lines in the store.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Bytes of line data in the store.
    pub fn bytes(&self) -> usize {
        self.all().len()
    }

    fn all(&self) -> &[u8] {
        match &self.text {
            Some(t) => t.as_bytes(),
            None => &self.data,
        }
    }

    /// Ends the appending: the lines become one shared text if they are UTF-8 (else they stay
    /// as they are, and records copy their lines).
    pub fn seal(&mut self) {
        if self.text.is_some() {
            return;
        }
        let bytes = Bytes::from(std::mem::take(&mut self.data));
        match ByteString::try_from(bytes.clone()) {
            Ok(text) => self.text = Some(text),
            // The only other reference is gone: this takes the allocation back, no copy.
            Err(_) => self.data = Vec::from(bytes),
        }
    }

    /// Makes the lines appendable again (a copy if records still point into them).
    fn unseal(&mut self) {
        if let Some(text) = self.text.take() {
            self.data = Vec::from(text.into_bytes());
        }
    }

    fn file_index(&mut self, fp: Fingerprint, path: &Arc<str>) -> usize {
        if let Some(i) = self
            .files
            .iter()
            .position(|f| f.fp == fp && f.path == *path)
        {
            return i;
        }
        self.files.push(FileRef {
            fp,
            path: path.clone(),
        });
        self.files.len() - 1
    }

    /// Appends another store's lines after this one's.
    pub fn append(&mut self, other: LineStore) {
        self.unseal();
        let base = self.data.len();
        let files: Vec<usize> = other
            .files
            .iter()
            .map(|f| self.file_index(f.fp, &f.path))
            .collect();
        self.data.extend_from_slice(other.all());
        self.items.extend(other.items.into_iter().map(|mut i| {
            i.file = files[i.file];
            i.start += base;
            i.end += base;
            i
        }));
    }

    /// Makes room for `bytes` of lines at once, so that a batch filled line by line is not
    /// moved to a larger allocation again and again as it grows (a copy of all of it each
    /// time, about twice the batch in all).
    pub fn reserve(&mut self, bytes: usize) {
        self.unseal();
        self.data.reserve(bytes);
    }

    /// Adds what the splitter found. Blank lines are not records and are left out.
    pub fn push(&mut self, fp: Fingerprint, path: &Arc<str>, event: Event<'_>) {
        let (offset, bytes, kind) = match &event {
            Event::Line { offset, line } => {
                if line.iter().all(u8::is_ascii_whitespace) {
                    return;
                }
                (*offset, *line, ItemKind::Line)
            }
            Event::TooLong { offset, len, head } => {
                (*offset, head.as_slice(), ItemKind::TooLong { len: *len })
            }
        };
        let file = self.file_index(fp, path);
        self.unseal();
        let start = self.data.len();
        self.data.extend_from_slice(bytes);
        self.items.push(Item {
            file,
            offset,
            start,
            end: self.data.len(),
            kind,
        });
    }
}

/// What the records of this source carry besides their line.
#[derive(Debug, Clone)]
pub struct RecordContext {
    pub source: Arc<str>,
    pub tag: Arc<str>,
    pub raw_format: bool,
    pub max_line: usize,
}

/// A line that was not an audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub path: Arc<str>,
    pub offset: u64,
    pub reason: String,
}

/// Makes the records of the lines in `store`: `k8s_audit` records, and `error` records for
/// lines that are not audit events (returned as well, for counting and logging).
pub fn build_records(store: &LineStore, cx: &RecordContext) -> (Vec<Record>, Vec<LineError>) {
    build_records_of(store, 0..store.items.len(), cx)
}

/// [`build_records`] for the lines numbered `range` only.
pub fn build_records_of(
    store: &LineStore,
    range: std::ops::Range<usize>,
    cx: &RecordContext,
) -> (Vec<Record>, Vec<LineError>) {
    let items = store.items.get(range).unwrap_or_default();
    let mut records = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for item in items {
        let file = &store.files[item.file];
        let bytes = store.all().get(item.start..item.end).unwrap_or_default();
        let parsed = match &store.text {
            Some(text) => audit::parse_line_in(text, item.start..item.end),
            None => audit::parse_line(bytes),
        };
        let record = match item.kind {
            ItemKind::Line => match parsed {
                Ok(event) => audit::normalize(event, &cx.source, &cx.tag, cx.raw_format),
                Err(e) => {
                    let (original, as_string) = original_of(bytes);
                    let reason = if as_string {
                        audit::nesting::too_deep(&e.to_string())
                    } else {
                        e.to_string()
                    };
                    let r = error_record(file, item.offset, &reason, original, cx);
                    errors.push(LineError {
                        path: file.path.clone(),
                        offset: item.offset,
                        reason,
                    });
                    r
                }
            },
            ItemKind::TooLong { len } => {
                let reason = format!(
                    "line of {len} bytes is longer than buffer_max_size ({} bytes); skipped",
                    cx.max_line
                );
                let r = error_record(file, item.offset, &reason, snippet(bytes), cx);
                errors.push(LineError {
                    path: file.path.clone(),
                    offset: item.offset,
                    reason,
                });
                r
            }
        };
        records.push(record);
    }
    (records, errors)
}

/// The line itself if it is JSON (as a JSON string of its text when it nests too deeply for
/// readers downstream: then `true`), else a JSON string of (the start of) it.
fn original_of(line: &[u8]) -> (Original, bool) {
    match serde_json::from_slice::<&RawValue>(line) {
        Ok(raw) => match RawValue::from_string(raw.get().to_string()) {
            Ok(owned) => {
                let (raw, as_string) = audit::nesting::bounded(owned.into());
                (Original::Raw(raw), as_string)
            }
            Err(_) => (snippet(line), false),
        },
        Err(_) => (snippet(line), false),
    }
}

fn snippet(bytes: &[u8]) -> Original {
    let cut = &bytes[..bytes.len().min(SNIPPET_BYTES)];
    Original::Value(Value::String(String::from_utf8_lossy(cut).into_owned()))
}

/// An `error` record: fields `error`, `file`, `offset` and `source_kind: "audit_file"`. Its id
/// and dedup key name the file (by fingerprint) and the offset, which is what makes it unique.
/// It is never in raw format: without its envelope the reason would be lost.
fn error_record(
    file: &FileRef,
    offset: u64,
    reason: &str,
    original: Original,
    cx: &RecordContext,
) -> Record {
    let key = format!("{}/{offset}", file.fp.hex());
    let mut r = Record::new(
        format!("audit_file:{key}"),
        Timestamp::now(),
        RecordKind::Error,
        cx.source.clone(),
        cx.tag.clone(),
    );
    r.fields
        .insert("error".into(), Value::String(reason.to_string()));
    r.fields
        .insert("source_kind".into(), Value::String("audit_file".into()));
    r.fields
        .insert("file".into(), Value::String(file.path.to_string()));
    r.fields.insert("offset".into(), Value::from(offset));
    r.original = Some(original);
    r.dedup = Some(DedupKey {
        scope: Arc::from(ERROR_DEDUP_SCOPE),
        key,
        value: String::new(),
    });
    r
}

/// A batch on its way to the pipeline.
#[derive(Debug, Default)]
pub struct Batch {
    /// Increasing per source run; the committer publishes the last one committed.
    pub seq: u64,
    pub lines: LineStore,
    pub records: Vec<Record>,
    /// The records already filtered and encoded (then `records` is empty).
    pub prepared: Option<crate::pipeline::Prepared>,
    /// `(stream, value)`, one per file.
    pub checkpoints: Vec<(String, String)>,
}

impl Batch {
    /// Whether `next` can be appended to this batch (both prepared, or neither).
    pub fn can_absorb(&self, next: &Batch) -> bool {
        self.prepared.is_some() == next.prepared.is_some()
    }

    /// Appends the next batch (in reading order) to this one: its lines, records and
    /// checkpoints (which replace older values of the same stream); its seq becomes this one's.
    pub fn absorb(&mut self, next: Batch) {
        self.seq = next.seq;
        self.lines.append(next.lines);
        self.records.extend(next.records);
        match (&mut self.prepared, next.prepared) {
            (Some(a), Some(b)) => a.append(b),
            (slot @ None, Some(b)) => *slot = Some(b),
            (_, None) => {}
        }
        for (stream, value) in next.checkpoints {
            self.set_checkpoint(&stream, value);
        }
    }

    /// Sets (or replaces) the checkpoint of a stream.
    pub fn set_checkpoint(&mut self, stream: &str, value: String) {
        match self.checkpoints.iter_mut().find(|(s, _)| s == stream) {
            Some(slot) => slot.1 = value,
            None => self.checkpoints.push((stream.to_string(), value)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.checkpoints.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx() -> RecordContext {
        RecordContext {
            source: Arc::from("audit_file.0"),
            tag: Arc::from("audit"),
            raw_format: false,
            max_line: 100,
        }
    }

    const EVENT: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a-1","stage":"ResponseComplete","requestURI":"/api","verb":"get","user":{"username":"u"},"stageTimestamp":"2024-01-01T00:00:00.000000Z"}"#;

    /// Encoded records, for comparing two ways of making them (error records carry the time
    /// they were made, which is left out).
    fn encoded(records: &[Record]) -> Vec<String> {
        records
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.time = Timestamp::from_unix_nanos(0);
                String::from_utf8(r.encode()).unwrap()
            })
            .collect()
    }

    fn store_of(lines: &[&[u8]]) -> LineStore {
        let (fp, path) = (Fingerprint(7), Arc::from("/a.log"));
        let mut store = LineStore::default();
        let mut offset = 0;
        for line in lines {
            store.push(fp, &path, Event::Line { offset, line });
            offset += line.len() as u64 + 1;
        }
        store
    }

    #[test]
    fn sealed_lines_make_the_same_records_pointing_into_the_lines() {
        let other = EVENT.replace("a-1", "a-2");
        let owned: Vec<Vec<u8>> = vec![
            EVENT.as_bytes().to_vec(),
            format!("  {other}\r").into_bytes(),
            br#"{"kind":"Pod"}"#.to_vec(),
            b"{\"trunc".to_vec(),
        ];
        let lines: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        let open = store_of(&lines);
        let mut sealed = open.clone();
        sealed.seal();
        assert!(sealed.text.is_some() && sealed.data.is_empty());
        assert_eq!(sealed.bytes(), open.bytes());
        let (a, _) = build_records(&open, &cx());
        let (b, _) = build_records(&sealed, &cx());
        assert_eq!(encoded(&a), encoded(&b));
        let text = sealed.text.as_ref().unwrap();
        let range = text.as_ptr() as usize..text.as_ptr() as usize + text.len();
        for r in &b[..2] {
            let Some(Original::Raw(raw)) = &r.original else {
                panic!("raw original expected")
            };
            assert!(
                range.contains(&(raw.get().as_ptr() as usize)),
                "{}",
                raw.get()
            );
        }
        // Lines added after sealing, and batches joined, read the same.
        let mut more = sealed.clone();
        more.push(
            Fingerprint(7),
            &Arc::from("/a.log"),
            Event::Line {
                offset: 999,
                line: EVENT.as_bytes(),
            },
        );
        let mut joined = sealed.clone();
        joined.append(store_of(&[EVENT.as_bytes()]));
        assert_eq!(
            encoded(&build_records(&more, &cx()).0)[..4],
            encoded(&a)[..]
        );
        assert_eq!(build_records(&more, &cx()).0.len(), 5);
        assert_eq!(build_records(&joined, &cx()).0.len(), 5);
    }

    #[test]
    fn lines_that_are_not_utf8_stay_unsealed_and_still_read() {
        let mut store = store_of(&[EVENT.as_bytes(), b"{\"x\":\"\xff\"}"]);
        store.seal();
        assert!(store.text.is_none());
        let (records, errors) = build_records(&store, &cx());
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].kind, RecordKind::K8sAudit);
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn a_line_nested_too_deeply_is_kept_as_a_string() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let store = store_of(&[deep.as_bytes()]);
        let (records, errors) = build_records(&store, &cx());
        assert_eq!((records.len(), errors.len()), (1, 1));
        let v: Value = serde_json::from_slice(&records[0].encode()).expect("readable JSON");
        assert_eq!(v["object"].as_str(), Some(deep.as_str()));
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("kept as a JSON string"),
            "{}",
            v["error"]
        );
    }

    #[test]
    fn lines_become_audit_and_error_records() {
        let fp = Fingerprint(0xab);
        let path: Arc<str> = Arc::from("/var/log/audit.log");
        let mut store = LineStore::default();
        store.push(
            fp,
            &path,
            Event::Line {
                offset: 0,
                line: EVENT.as_bytes(),
            },
        );
        store.push(
            fp,
            &path,
            Event::Line {
                offset: 300,
                line: b"   ",
            },
        );
        store.push(
            fp,
            &path,
            Event::Line {
                offset: 304,
                line: br#"{"kind":"Pod"}"#,
            },
        );
        store.push(
            fp,
            &path,
            Event::Line {
                offset: 400,
                line: b"{\"trunc",
            },
        );
        store.push(
            fp,
            &path,
            Event::TooLong {
                offset: 500,
                len: 5000,
                head: b"{\"kind\"".to_vec(),
            },
        );
        assert_eq!(store.len(), 4);
        let (records, errors) = build_records(&store, &cx());
        assert_eq!(records.len(), 4);
        assert_eq!(errors.len(), 3);

        assert_eq!(records[0].kind, RecordKind::K8sAudit);
        assert_eq!(records[0].id, "a-1/ResponseComplete");
        assert_eq!(records[0].dedup.as_ref().unwrap().scope.as_ref(), "audit");

        let not_event = &records[1];
        assert_eq!(not_event.kind, RecordKind::Error);
        assert_eq!(not_event.fields["file"], "/var/log/audit.log");
        assert_eq!(not_event.fields["offset"], 304);
        assert!(
            matches!(&not_event.original, Some(Original::Raw(r)) if r.get() == r#"{"kind":"Pod"}"#)
        );
        assert_eq!(not_event.id, "audit_file:00000000000000ab/304");

        let not_json = &records[2];
        assert!(
            matches!(&not_json.original, Some(Original::Value(Value::String(s))) if s == "{\"trunc")
        );

        let long = &records[3];
        assert!(
            long.fields["error"]
                .as_str()
                .unwrap()
                .contains("5000 bytes"),
            "{:?}",
            long.fields
        );
        assert_eq!(long.fields["offset"], 500);
        assert_eq!(
            errors[2],
            LineError {
                path: path.clone(),
                offset: 500,
                reason: long.fields["error"].as_str().unwrap().to_string()
            }
        );
    }

    #[test]
    fn checkpoints_round_trip_and_replace() {
        let c = FileCheckpoint {
            offset: 42,
            path: "/a/audit.log".into(),
            rotated: true,
            done: false,
        };
        assert_eq!(FileCheckpoint::decode(&c.encode()), Some(c.clone()));
        assert_eq!(
            FileCheckpoint::decode(r#"{"offset":7,"path":"/x"}"#).map(|c| (c.offset, c.done)),
            Some((7, false))
        );
        assert_eq!(FileCheckpoint::decode("7"), None);
        let mut b = Batch::default();
        assert!(b.is_empty());
        b.set_checkpoint("s/fp:1", "a".into());
        b.set_checkpoint("s/fp:2", "b".into());
        b.set_checkpoint("s/fp:1", "c".into());
        assert_eq!(
            b.checkpoints,
            vec![
                ("s/fp:1".to_string(), "c".to_string()),
                ("s/fp:2".to_string(), "b".to_string())
            ]
        );
    }

    #[test]
    fn absorbed_batches_keep_line_order_files_and_latest_checkpoints() {
        let a_path: Arc<str> = Arc::from("/var/log/a.log");
        let b_path: Arc<str> = Arc::from("/var/log/b.log");
        let line = |id: &str| EVENT.replace("a-1", id);
        let mut first = Batch::default();
        let l1 = line("x-1");
        first.lines.push(
            Fingerprint(1),
            &a_path,
            Event::Line {
                offset: 0,
                line: l1.as_bytes(),
            },
        );
        first.set_checkpoint("a", "10".into());
        let mut second = Batch {
            seq: 7,
            ..Batch::default()
        };
        let (l2, l3) = (line("x-2"), line("x-3"));
        second.lines.push(
            Fingerprint(2),
            &b_path,
            Event::Line {
                offset: 0,
                line: b"{oops",
            },
        );
        second.lines.push(
            Fingerprint(1),
            &a_path,
            Event::Line {
                offset: 50,
                line: l2.as_bytes(),
            },
        );
        second.lines.push(
            Fingerprint(2),
            &b_path,
            Event::Line {
                offset: 9,
                line: l3.as_bytes(),
            },
        );
        second.set_checkpoint("a", "99".into());
        second.set_checkpoint("b", "5".into());
        assert!(first.can_absorb(&second));
        first.absorb(second);
        assert_eq!(first.seq, 7);
        assert_eq!(
            first.checkpoints,
            vec![
                ("a".to_string(), "99".to_string()),
                ("b".to_string(), "5".to_string())
            ]
        );
        let (records, errors) = build_records(&first.lines, &cx());
        let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids[0], "x-1/ResponseComplete");
        assert!(ids[1].starts_with("audit_file:"), "{ids:?}");
        assert_eq!(&ids[2..], ["x-2/ResponseComplete", "x-3/ResponseComplete"]);
        assert_eq!(errors.len(), 1);
        assert_eq!(&*errors[0].path, "/var/log/b.log");
        // Halves made apart are the same records as the whole.
        let (left, _) = build_records_of(&first.lines, 0..2, &cx());
        let (right, _) = build_records_of(&first.lines, 2..4, &cx());
        let halves: Vec<String> = left.iter().chain(&right).map(|r| r.id.clone()).collect();
        assert_eq!(halves, ids);
    }
}
