//! The record: the unit that flows from sources through filters to outputs.
//!
//! A record has a stable `id` (what makes retries and replays harmless), a `time`, a `kind`,
//! the `source` instance name, a routing `tag`, a few normalized `fields` users filter and
//! search on, and the `original` object untouched (kept as the exact bytes received until a
//! filter needs to look inside it).

use std::sync::Arc;

use bytestring::ByteString;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::fields::{Fields, write_json_str};
use crate::time::Timestamp;

/// What a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// A Kubernetes Event (core/v1 or events.k8s.io/v1).
    K8sEvent,
    /// A Kubernetes audit event (audit.k8s.io).
    K8sAudit,
    /// A break in continuity: something may have been lost, and this says what and when.
    Gap,
    /// Input that could not be understood, kept with the reason so that nothing is silently lost.
    Error,
}

impl RecordKind {
    /// The name used in encoded records and in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::K8sEvent => "k8s_event",
            RecordKind::K8sAudit => "k8s_audit",
            RecordKind::Gap => "gap",
            RecordKind::Error => "error",
        }
    }

    /// Parses the name used in encoded records.
    pub fn parse(s: &str) -> Option<RecordKind> {
        match s {
            "k8s_event" => Some(RecordKind::K8sEvent),
            "k8s_audit" => Some(RecordKind::K8sAudit),
            "gap" => Some(RecordKind::Gap),
            "error" => Some(RecordKind::Error),
            _ => None,
        }
    }
}

/// The exact text of one JSON value, as received: its own, or a view into the buffer it was
/// received in (a webhook body), shared by the records made from that buffer.
#[derive(Clone, PartialEq, Eq)]
pub struct RawJson(ByteString);

impl RawJson {
    /// Text that the caller has just parsed completely as one JSON value (every byte: a
    /// typed parse that skips members with `IgnoredAny` still checks their syntax), so that
    /// it need not be scanned a second time. Surrounding whitespace must be trimmed.
    pub fn trusted(text: String) -> RawJson {
        RawJson(ByteString::from(one_line(text)))
    }

    /// [`RawJson::trusted`] for `text` borrowed from `within`: a view of the same bytes, not
    /// a copy (`within` stays allocated while the view lives). Text from anywhere else is
    /// copied.
    pub fn trusted_in(within: &ByteString, text: &str) -> RawJson {
        let (base, at) = (within.as_ptr() as usize, text.as_ptr() as usize);
        if at >= base && at + text.len() <= base + within.len() && !has_line_break(text) {
            RawJson(within.slice_ref(text))
        } else {
            RawJson::trusted(text.to_owned())
        }
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        &self.0
    }
}

impl From<Box<RawValue>> for RawJson {
    fn from(raw: Box<RawValue>) -> RawJson {
        RawJson(ByteString::from(one_line(String::from(Box::<str>::from(
            raw,
        )))))
    }
}

/// Whether JSON text holds a line break (CR or LF).
fn has_line_break(text: &str) -> bool {
    memchr::memchr2(b'\n', b'\r', text.as_bytes()).is_some()
}

/// Valid JSON text on one line: a record is one line of JSON Lines, and a sender may indent
/// what it sends. JSON strings cannot hold a raw CR or LF (they are escaped there), so every
/// one is whitespace between tokens and becomes a space: the value, and every other byte, stay
/// as they were.
fn one_line(text: String) -> String {
    if !has_line_break(&text) {
        return text;
    }
    let mut bytes = text.into_bytes();
    for b in &mut bytes {
        if *b == b'\n' || *b == b'\r' {
            *b = b' ';
        }
    }
    // Only ASCII bytes were replaced with ASCII: still UTF-8.
    String::from_utf8(bytes).unwrap_or_default()
}

impl std::fmt::Debug for RawJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The original object a record was made from.
#[derive(Debug, Clone)]
pub enum Original {
    /// The bytes received (valid JSON), passed through untouched but for line breaks between
    /// tokens, which become spaces (a record is one line).
    Raw(RawJson),
    /// A parsed tree, once a filter needed to change it.
    Value(Value),
}

impl Original {
    /// The original as a parsed tree (parses raw bytes; does not change `self`).
    pub fn to_value(&self) -> Value {
        match self {
            Original::Raw(raw) => serde_json::from_str(raw.get()).unwrap_or(Value::Null),
            Original::Value(v) => v.clone(),
        }
    }

    /// Turns the original into a parsed tree in place and gives mutable access to it.
    pub fn value_mut(&mut self) -> &mut Value {
        if let Original::Raw(raw) = self {
            // RawValue always holds valid JSON, so this parse only fails on nesting deeper than
            // serde_json's recursion limit, which RawValue would already have rejected.
            let v = serde_json::from_str(raw.get()).unwrap_or(Value::Null);
            *self = Original::Value(v);
        }
        match self {
            Original::Value(v) => v,
            Original::Raw(_) => unreachable!("converted above"),
        }
    }
}

/// Where a record's duplicate check lives. The check and the insert of the key happen in the
/// same database transaction as the record's enqueueing and its source's checkpoint.
///
/// A record is a duplicate when a key with the same `scope` and `key` is stored with the same
/// `value`. For Kubernetes Events the key is the uid and the value the resourceVersion (a
/// relist shows only the latest version of each object, so one row per live uid is the whole
/// dedup horizon); for audit events the key is `auditID/stage` and the value empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupKey {
    pub scope: Arc<str>,
    pub key: String,
    pub value: String,
}

/// The unit that flows through the pipeline.
#[derive(Debug, Clone)]
pub struct Record {
    /// Stable identifier: Events `uid:resourceVersion`, audit `auditID:stage`, gaps what they cover.
    pub id: String,
    /// When the thing happened.
    pub time: Timestamp,
    pub kind: RecordKind,
    /// The source instance name (e.g. `kubernetes_events.0` or its `alias`).
    pub source: Arc<str>,
    /// The routing tag.
    pub tag: Arc<str>,
    /// Normalized fields, encoded at the top level of the record.
    pub fields: Fields,
    /// The original object, encoded under `object`.
    pub original: Option<Original>,
    /// When set (`format: raw`), the record is encoded as the original object alone.
    pub raw_format: bool,
    /// The duplicate check for this record, if its source wants one.
    pub dedup: Option<DedupKey>,
}

/// Keys that the encoding puts at the top level of every record, before the normalized fields.
pub const ENVELOPE_KEYS: [&str; 5] = ["id", "time", "kind", "source", "tag"];
/// The key the original object is encoded under.
pub const ORIGINAL_KEY: &str = "object";

impl Record {
    /// A record without normalized fields or original.
    pub fn new(
        id: impl Into<String>,
        time: Timestamp,
        kind: RecordKind,
        source: Arc<str>,
        tag: Arc<str>,
    ) -> Record {
        Record {
            id: id.into(),
            time,
            kind,
            source,
            tag,
            fields: Fields::default(),
            original: None,
            raw_format: false,
            dedup: None,
        }
    }

    /// Reads a field by dotted path (`involved_object.kind`, `object.metadata.name`,
    /// `user.groups.0`). Envelope keys (`id`, `time`, `kind`, `source`, `tag`) are
    /// addressable too. Returns an owned value because envelope fields are not stored as JSON.
    pub fn get_path(&self, path: &str) -> Option<Value> {
        let mut parts = path.split('.');
        let first = parts.next()?;
        let rest: Vec<&str> = parts.collect();
        let root: Value = match first {
            "id" => Value::String(self.id.clone()),
            "time" => Value::String(self.time.to_rfc3339()),
            "kind" => Value::String(self.kind.as_str().to_string()),
            "source" => Value::String(self.source.to_string()),
            "tag" => Value::String(self.tag.to_string()),
            ORIGINAL_KEY if !self.fields.contains_key(ORIGINAL_KEY) => {
                let original = self.original.as_ref()?;
                return match original {
                    Original::Value(v) => walk(v, &rest).cloned(),
                    Original::Raw(_) => walk(&original.to_value(), &rest).cloned(),
                };
            }
            other => return walk(self.fields.get(other)?, &rest).cloned(),
        };
        if rest.is_empty() { Some(root) } else { None }
    }

    /// Encodes the record as one line of JSON (without the trailing newline) into `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        if self.raw_format
            && let Some(original) = &self.original
        {
            match original {
                Original::Raw(raw) => out.extend_from_slice(raw.get().as_bytes()),
                Original::Value(v) => write_json(out, v),
            }
            return;
        }
        out.extend_from_slice(b"{\"id\":");
        write_json_str(out, &self.id);
        out.extend_from_slice(b",\"time\":\"");
        self.time.write_rfc3339(out);
        out.extend_from_slice(b"\",\"kind\":\"");
        out.extend_from_slice(self.kind.as_str().as_bytes());
        out.extend_from_slice(b"\",\"source\":");
        write_json_str(out, &self.source);
        out.extend_from_slice(b",\"tag\":");
        write_json_str(out, &self.tag);
        match self.fields.encoded_members() {
            Some(members) => {
                if !members.is_empty() {
                    out.push(b',');
                    out.extend_from_slice(members.as_bytes());
                }
            }
            None => {
                for (k, v) in self.fields.iter() {
                    if ENVELOPE_KEYS.contains(&k.as_str()) || k == ORIGINAL_KEY {
                        continue;
                    }
                    out.push(b',');
                    write_json_str(out, k);
                    out.push(b':');
                    write_json(out, v);
                }
            }
        }
        if let Some(original) = &self.original {
            out.extend_from_slice(b",\"object\":");
            match original {
                Original::Raw(raw) => out.extend_from_slice(raw.get().as_bytes()),
                Original::Value(v) => write_json(out, v),
            }
        }
        out.push(b'}');
    }

    /// The record as one line of JSON.
    pub fn encode(&self) -> Vec<u8> {
        // Sized for the usual case up front: growing by doubling would copy a large record
        // several times and leave up to half of its buffer unused while it waits in a queue.
        let mut out = Vec::with_capacity(self.encoded_size_hint());
        self.encode_into(&mut out);
        out
    }

    /// About how many bytes [`Record::encode`] writes, in constant time: the original and
    /// the encoded fields dominate (a parsed original or decoded fields are not counted).
    pub fn encoded_size_hint(&self) -> usize {
        let original = match &self.original {
            Some(Original::Raw(raw)) => raw.get().len(),
            _ => 0,
        };
        let fields = self.fields.encoded_members().map_or(0, str::len);
        original + fields + self.id.len() + 160
    }
}

fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    // Serializing strings and `Value`s into a Vec cannot fail: there is no IO and no map with
    // non-string keys.
    let _ = serde_json::to_writer(&mut *out, v);
}

fn walk<'a>(mut v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    for p in path {
        v = match v {
            Value::Object(m) => m.get(*p)?,
            Value::Array(a) => a.get(p.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

#[cfg(test)]
mod raw_json_tests {
    use super::*;

    #[test]
    fn views_share_their_buffer_and_anything_else_is_copied() {
        let body = ByteString::from(String::from(r#"[{"a":1},{"b":2}]"#));
        let second = &body[9..16];
        let view = RawJson::trusted_in(&body, second);
        assert_eq!(view.get(), r#"{"b":2}"#);
        assert_eq!(view.get().as_ptr(), second.as_ptr());
        // Text from elsewhere, even equal, is copied; so is text partly outside.
        let other = String::from(r#"{"b":2}"#);
        let copy = RawJson::trusted_in(&body, &other);
        assert_eq!(copy, view);
        assert_ne!(copy.get().as_ptr(), other.as_ptr());
        let text = format!("{body}xx");
        let straddling = &text[10..];
        assert_eq!(RawJson::trusted_in(&body, straddling).get(), straddling);
        assert_eq!(RawJson::trusted_in(&body, "").get(), "");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A sender may indent JSON: the raw original keeps every byte but line breaks, which
    /// become spaces, so the record stays one line; a line break escaped in a string stays.
    #[test]
    fn a_raw_original_with_line_breaks_encodes_on_one_line() {
        let text = "{\r\n  \"a\": \"x\\ny\",\n  \"b\": [1,\n 2]\n}";
        let within = ByteString::from(format!("[{text}]"));
        for raw in [
            RawJson::trusted(text.to_owned()),
            RawJson::trusted_in(&within, &within[1..within.len() - 1]),
            RawJson::from(RawValue::from_string(text.to_owned()).unwrap()),
        ] {
            assert_eq!(raw.get(), "{    \"a\": \"x\\ny\",   \"b\": [1,  2] }");
            let mut r = sample();
            r.original = Some(Original::Raw(raw));
            let line = r.encode();
            assert!(!line.contains(&b'\n') && !line.contains(&b'\r'));
            let v: Value = serde_json::from_slice(&line).unwrap();
            assert_eq!(v["object"], json!({"a": "x\ny", "b": [1, 2]}));
        }
    }

    fn sample() -> Record {
        let mut r = Record::new(
            "u1:42",
            Timestamp::from_unix_nanos(1_700_000_000_123_000_000),
            RecordKind::K8sEvent,
            Arc::from("kubernetes_events.0"),
            Arc::from("k8s.events"),
        );
        r.fields.insert("reason".into(), json!("BackOff"));
        r.fields.insert(
            "involved_object".into(),
            json!({"kind": "Pod", "name": "p"}),
        );
        let raw = RawValue::from_string(r#"{"metadata":{"name":"x"},"count": 3}"#.into()).unwrap();
        r.original = Some(Original::Raw(raw.into()));
        r
    }

    #[test]
    fn encodes_envelope_fields_and_original_untouched() {
        let r = sample();
        let line = String::from_utf8(r.encode()).unwrap();
        assert!(
            line.ends_with(r#""object":{"metadata":{"name":"x"},"count": 3}}"#),
            "{line}"
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["id"], "u1:42");
        assert_eq!(v["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["kind"], "k8s_event");
        assert_eq!(v["reason"], "BackOff");
        assert_eq!(v["object"]["count"], 3);
    }

    #[test]
    fn raw_format_is_the_original_bytes() {
        let mut r = sample();
        r.raw_format = true;
        assert_eq!(
            r.encode(),
            br#"{"metadata":{"name":"x"},"count": 3}"#.to_vec()
        );
    }

    #[test]
    fn paths_reach_envelope_fields_and_original() {
        let r = sample();
        assert_eq!(r.get_path("kind"), Some(json!("k8s_event")));
        assert_eq!(r.get_path("involved_object.kind"), Some(json!("Pod")));
        assert_eq!(r.get_path("object.metadata.name"), Some(json!("x")));
        assert_eq!(r.get_path("object.nope"), None);
        assert_eq!(r.get_path("kind.x"), None);
    }

    #[test]
    fn value_mut_parses_raw_once() {
        let mut r = sample();
        let v = r.original.as_mut().unwrap().value_mut();
        v["count"] = json!(4);
        let line = String::from_utf8(r.encode()).unwrap();
        assert!(
            line.contains(r#""object":{"count":4,"metadata":{"name":"x"}}"#)
                || line.contains(r#""count":4"#)
        );
    }
}
