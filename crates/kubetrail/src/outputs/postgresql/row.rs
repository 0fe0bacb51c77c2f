//! One queued record turned into the table's columns: the indexed columns are read from the
//! encoded record with a typed parse of only the fields they need (the original object under
//! `object` is skipped, not built), and the record itself is made acceptable to `jsonb`.
//!
//! `jsonb` refuses two things valid JSON may hold: the escape `\u0000` and a lone UTF-16
//! surrogate escape (`\ud800` without its pair). Both are replaced by `\ufffd` (the
//! replacement character) so that one odd string in an audit body cannot block a batch; text
//! columns likewise never hold NUL. Everything else is stored byte for byte as encoded.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The columns of one row, in table order (see `super::sql`).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: String,
    pub time: Option<OffsetDateTime>,
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub object_kind: Option<String>,
    pub object_name: Option<String>,
    pub username: Option<String>,
    pub verb: Option<String>,
    pub reason: Option<String>,
    pub source: Option<String>,
    pub tag: Option<String>,
    /// The record as JSON text `jsonb` accepts.
    pub record: String,
    /// The activity columns (what `kubetrail who` and `activity` query).
    pub activity: ActivityCols,
}

/// The activity columns of a row (see `kubetrail_activity::pg`), text without NUL.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActivityCols {
    pub api_group: Option<String>,
    pub resource: Option<String>,
    pub subresource: Option<String>,
    pub obj_namespace: Option<String>,
    pub obj_name: Option<String>,
    pub obj_uid: Option<String>,
    pub owner_uid: Option<String>,
    pub mention_resource: Option<String>,
    pub mention_name: Option<String>,
    pub impersonated_user: Option<String>,
    /// The user's groups as a JSON array (turned into `text[]` by the statement).
    pub user_groups: Option<String>,
    pub response_code: Option<i32>,
    pub event_type: Option<String>,
    pub stage: Option<String>,
}

impl ActivityCols {
    /// The columns of an encoded record.
    pub fn from_record(data: &[u8]) -> ActivityCols {
        let a = kubetrail_activity::Activity::from_record(data);
        let t = |v: Option<String>| v.filter(|s| !s.is_empty()).map(no_nul);
        let (mention_resource, mention_name) = match a.mention {
            Some((r, n)) => (Some(r), Some(n)),
            None => (None, None),
        };
        let groups: Vec<String> = a.groups.into_iter().map(no_nul).collect();
        ActivityCols {
            // The core group is "", which is a value here (not "unknown").
            api_group: a.api_group.map(no_nul),
            resource: t(a.resource),
            subresource: t(a.subresource),
            obj_namespace: t(a.namespace),
            obj_name: t(a.name),
            obj_uid: t(a.uid),
            owner_uid: t(a.owner.map(|o| o.uid)),
            mention_resource: t(mention_resource),
            mention_name: t(mention_name),
            impersonated_user: t(a.impersonated),
            user_groups: (!groups.is_empty())
                .then(|| serde_json::to_string(&groups).unwrap_or_default()),
            response_code: a.response_code.and_then(|c| i32::try_from(c).ok()),
            event_type: t(a.event_type),
            stage: t(a.stage),
        }
    }
}

/// A string field that reads as `None` when it holds anything but a string (a filter may
/// have put a number or an object there): a wrong type must not make the row unreadable.
#[derive(Debug, Default)]
struct Str(Option<String>);

impl<'de> Deserialize<'de> for Str {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str, E> {
                Ok(Str(Some(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Str, E> {
                Ok(Str(Some(v)))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Str, E> {
                Ok(Str(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Str, E> {
                Ok(Str(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Str, E> {
                Ok(Str(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Str, E> {
                Ok(Str(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Str, E> {
                Ok(Str(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Str, E> {
                Ok(Str(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Str, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Str(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Str, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Str(None))
            }
        }
        d.deserialize_any(V)
    }
}

impl Str {
    fn get(self) -> Option<String> {
        self.0.filter(|s| !s.is_empty()).map(no_nul)
    }
}

/// The fields of an encoded record the columns come from. Nested objects are small and read
/// as `Value`, which also tolerates a filter having changed their shape. The raw-format
/// fields (`metadata`, `involvedObject`, ...) are there for records encoded as the original
/// object alone (`format: raw`).
#[derive(Deserialize, Default)]
#[serde(default)]
struct Fields {
    id: Str,
    time: Str,
    kind: Str,
    source: Str,
    tag: Str,
    namespace: Str,
    reason: Str,
    verb: Str,
    user: Option<Value>,
    involved_object: Option<Value>,
    object_ref: Option<Value>,
    // Raw format: a Kubernetes Event or an audit event as the apiserver wrote it.
    #[serde(rename = "apiVersion")]
    api_version: Str,
    metadata: Option<Value>,
    #[serde(rename = "involvedObject")]
    involved_object_raw: Option<Value>,
    regarding: Option<Value>,
    #[serde(rename = "objectRef")]
    object_ref_raw: Option<Value>,
    #[serde(rename = "lastTimestamp")]
    last_timestamp: Str,
    #[serde(rename = "eventTime")]
    event_time: Str,
    #[serde(rename = "stageTimestamp")]
    stage_timestamp: Str,
    #[serde(rename = "auditID")]
    audit_id: Str,
}

fn nested(v: &Option<Value>, key: &str) -> Option<String> {
    v.as_ref()?
        .get(key)?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(|s| no_nul(s.to_string()))
}

fn no_nul(s: String) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{fffd}")
    } else {
        s
    }
}

fn parse_time(s: Option<String>) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s?.as_str(), &Rfc3339).ok()
}

impl Row {
    /// The row for a queued record. `id` is the queue's id for it (the record's own).
    pub fn from_record(id: &str, data: &[u8]) -> Row {
        let id = no_nul(id.to_string());
        // One parse in the common case: the escapes are fixed on the text first (safe on any
        // text, and right on JSON), then the fields are read, which also validates the JSON.
        let Ok(text) = std::str::from_utf8(data) else {
            return Row::bare(id, jsonb_text(data).into_owned());
        };
        let json = fix_escapes(text);
        let fields = match serde_json::from_str::<Fields>(&json) {
            Ok(f) => f,
            // Valid JSON that is not an object (a raw original that is a string or a list):
            // kept whole, with no indexed columns.
            Err(_) if serde_json::from_str::<IgnoredAny>(&json).is_ok() => {
                return Row::bare(id, json.into_owned());
            }
            Err(_) => return Row::bare(id, jsonb_text(data).into_owned()),
        };
        let raw = fields.id.0.is_none() && fields.source.0.is_none() && fields.tag.0.is_none();
        let mut row = if raw {
            Row::from_raw(id, fields)
        } else {
            Row::from_envelope(id, fields)
        };
        row.activity = ActivityCols::from_record(json.as_bytes());
        row.record = json.into_owned();
        row
    }

    fn bare(id: String, record: String) -> Row {
        Row {
            id,
            time: None,
            kind: None,
            namespace: None,
            object_kind: None,
            object_name: None,
            username: None,
            verb: None,
            reason: None,
            source: None,
            tag: None,
            record,
            activity: ActivityCols::default(),
        }
    }

    fn from_envelope(id: String, f: Fields) -> Row {
        let audit = f.object_ref.is_some();
        let (object_kind, object_name) = if audit {
            (
                nested(&f.object_ref, "resource"),
                nested(&f.object_ref, "name"),
            )
        } else {
            (
                nested(&f.involved_object, "kind"),
                nested(&f.involved_object, "name"),
            )
        };
        Row {
            id,
            time: parse_time(f.time.get()),
            kind: f.kind.get(),
            namespace: f
                .namespace
                .get()
                .or_else(|| nested(&f.object_ref, "namespace"))
                .or_else(|| nested(&f.involved_object, "namespace")),
            object_kind,
            object_name,
            username: nested(&f.user, "username"),
            verb: f.verb.get(),
            reason: f.reason.get(),
            source: f.source.get(),
            tag: f.tag.get(),
            record: String::new(),
            activity: ActivityCols::default(),
        }
    }

    fn from_raw(id: String, f: Fields) -> Row {
        let audit = f.audit_id.0.is_some()
            || f.api_version
                .0
                .as_deref()
                .is_some_and(|v| v.starts_with("audit.k8s.io/"));
        if audit {
            Row {
                id,
                time: parse_time(f.stage_timestamp.get()),
                kind: Some("k8s_audit".into()),
                namespace: nested(&f.object_ref_raw, "namespace"),
                object_kind: nested(&f.object_ref_raw, "resource"),
                object_name: nested(&f.object_ref_raw, "name"),
                username: nested(&f.user, "username"),
                verb: f.verb.get(),
                reason: None,
                source: None,
                tag: None,
                record: String::new(),
                activity: ActivityCols::default(),
            }
        } else {
            let object = f.involved_object_raw.or(f.regarding);
            Row {
                id,
                time: parse_time(f.last_timestamp.get()).or_else(|| parse_time(f.event_time.get())),
                kind: Some("k8s_event".into()),
                namespace: nested(&f.metadata, "namespace"),
                object_kind: nested(&object, "kind"),
                object_name: nested(&object, "name"),
                username: None,
                verb: None,
                reason: f.reason.get(),
                source: None,
                tag: None,
                record: String::new(),
                activity: ActivityCols::default(),
            }
        }
    }
}

/// The record as JSON text `jsonb` accepts: `\u0000` and lone surrogate escapes become
/// `\ufffd`; bytes that are not JSON at all become one JSON string holding them (lossily
/// decoded), so that they are still stored and can be looked at.
pub fn jsonb_text(data: &[u8]) -> Cow<'_, str> {
    let text = match std::str::from_utf8(data) {
        Ok(t) if serde_json::from_str::<IgnoredAny>(t).is_ok() => t,
        _ => {
            let lossy = String::from_utf8_lossy(data).replace('\0', "\u{fffd}");
            return Cow::Owned(Value::String(lossy).to_string());
        }
    };
    fix_escapes(text)
}

/// Replaces the escapes `jsonb` refuses. The input is valid JSON, where a backslash only
/// appears inside strings and always starts an escape, so escapes can be found without a
/// full parse.
fn fix_escapes(text: &str) -> Cow<'_, str> {
    let b = text.as_bytes();
    if memchr::memmem::find(b, b"\\u").is_none() {
        return Cow::Borrowed(text);
    }
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while let Some(p) = memchr::memchr(b'\\', &b[i..]) {
        let j = i + p;
        if b.get(j + 1) != Some(&b'u') {
            i = j + 2; // `\\`, `\"`, `\n`, ...: the escaped byte is never the start of one
            continue;
        }
        let unit = |at: usize| -> Option<u32> {
            let hex = b.get(at + 2..at + 6)?;
            u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
        };
        let Some(u) = unit(j) else {
            i = j + 2;
            continue;
        };
        let bad = match u {
            0 => true,
            0xD800..=0xDBFF => {
                let paired = b.get(j + 6..j + 8) == Some(b"\\u")
                    && unit(j + 6).is_some_and(|l| (0xDC00..=0xDFFF).contains(&l));
                if paired {
                    i = j + 12;
                    continue;
                }
                true
            }
            0xDC00..=0xDFFF => true,
            _ => false,
        };
        if bad {
            let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
            o.push_str(&text[copied..j]);
            o.push_str("\\ufffd");
            copied = j + 6;
        }
        i = j + 6;
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut o) => {
            o.push_str(&text[copied..]);
            Cow::Owned(o)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EVENT: &str = r#"{"id":"u-1:305","time":"2026-11-27T00:30:51Z","kind":"k8s_event","source":"kubernetes_events.0","tag":"k8s.events","namespace":"fx","name":"fx-pod-0.18ebbf","reason":"BackOff","involved_object":{"kind":"Pod","name":"fx-pod-0","namespace":"fx"},"count":3,"object":{"kind":"Event","reason":"ignored","verb":"ignored"}}"#;
    const AUDIT: &str = r#"{"id":"a-1:ResponseComplete","time":"2026-11-27T00:32:55.741Z","kind":"k8s_audit","source":"audit_webhook.0","tag":"k8s.audit","audit_id":"a-1","verb":"get","user":{"username":"admin","groups":["g"]},"object_ref":{"resource":"secrets","namespace":"fx","name":"s"},"decision":"allow","reason":"RBAC: allowed","object":{"verb":"list"}}"#;

    #[test]
    fn event_columns() {
        let r = Row::from_record("u-1:305", EVENT.as_bytes());
        assert_eq!(r.id, "u-1:305");
        assert_eq!(
            r.time,
            Some(time::macros::datetime!(2026-11-27 00:30:51 UTC))
        );
        assert_eq!(r.kind.as_deref(), Some("k8s_event"));
        assert_eq!(r.namespace.as_deref(), Some("fx"));
        assert_eq!(r.object_kind.as_deref(), Some("Pod"));
        assert_eq!(r.object_name.as_deref(), Some("fx-pod-0"));
        assert_eq!(r.reason.as_deref(), Some("BackOff"));
        assert_eq!((r.username, r.verb), (None, None));
        assert_eq!(r.source.as_deref(), Some("kubernetes_events.0"));
        assert_eq!(r.tag.as_deref(), Some("k8s.events"));
        assert_eq!(r.record, EVENT, "the record is stored as encoded");
    }

    #[test]
    fn audit_columns() {
        let r = Row::from_record("a-1:ResponseComplete", AUDIT.as_bytes());
        assert_eq!(
            r.time,
            Some(time::macros::datetime!(2026-11-27 00:32:55.741 UTC))
        );
        assert_eq!(r.kind.as_deref(), Some("k8s_audit"));
        assert_eq!(r.namespace.as_deref(), Some("fx"));
        assert_eq!(r.object_kind.as_deref(), Some("secrets"));
        assert_eq!(r.object_name.as_deref(), Some("s"));
        assert_eq!(r.username.as_deref(), Some("admin"));
        assert_eq!(r.verb.as_deref(), Some("get"));
        assert_eq!(r.reason.as_deref(), Some("RBAC: allowed"));
    }

    #[test]
    fn raw_format_records() {
        let ev = r#"{"kind":"Event","apiVersion":"v1","metadata":{"namespace":"fx","name":"e"},"involvedObject":{"kind":"Pod","name":"p"},"reason":"Pulled","lastTimestamp":"2026-11-27T00:29:51Z"}"#;
        let r = Row::from_record("u:1", ev.as_bytes());
        assert_eq!(r.kind.as_deref(), Some("k8s_event"));
        assert_eq!(
            (
                r.namespace.as_deref(),
                r.object_kind.as_deref(),
                r.object_name.as_deref()
            ),
            (Some("fx"), Some("Pod"), Some("p"))
        );
        assert_eq!(r.reason.as_deref(), Some("Pulled"));
        assert!(r.time.is_some());
        let au = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"x","verb":"create","user":{"username":"bob"},"objectRef":{"resource":"pods","namespace":"n","name":"p"},"stageTimestamp":"2026-11-27T00:29:51.5Z"}"#;
        let r = Row::from_record("x:ResponseComplete", au.as_bytes());
        assert_eq!(r.kind.as_deref(), Some("k8s_audit"));
        assert_eq!(
            (
                r.username.as_deref(),
                r.verb.as_deref(),
                r.object_kind.as_deref()
            ),
            (Some("bob"), Some("create"), Some("pods"))
        );
        assert_eq!(r.source, None);
    }

    #[test]
    fn wrong_types_and_odd_input_never_fail() {
        let odd = r#"{"id":"i","kind":5,"namespace":{"a":1},"user":"bob","involved_object":[1],"time":"yesterday","reason":""}"#;
        let r = Row::from_record("i", odd.as_bytes());
        assert_eq!(
            (
                r.kind,
                r.namespace,
                r.username,
                r.object_kind,
                r.time,
                r.reason
            ),
            (None, None, None, None, None, None)
        );
        let r = Row::from_record("s", br#""just a string""#);
        assert_eq!(r.record, r#""just a string""#);
        let r = Row::from_record("b", b"not json \xff\x00");
        let v: Value = serde_json::from_str(&r.record).unwrap();
        assert!(v.as_str().unwrap().starts_with("not json "));
        assert!(!r.record.contains("\\u0000"));
    }

    #[test]
    fn nul_and_lone_surrogates_are_replaced() {
        let t = r#"{"id":"a\u0000b","reason":"x\u0000y","m":"\ud800 \udc00 \ud83d\ude00 \\u0000 \u0041"}"#;
        let r = Row::from_record("a\0b", t.as_bytes());
        assert_eq!(r.id, "a\u{fffd}b");
        assert_eq!(r.reason.as_deref(), Some("x\u{fffd}y"));
        assert_eq!(
            r.record,
            r#"{"id":"a\ufffdb","reason":"x\ufffdy","m":"\ufffd \ufffd \ud83d\ude00 \\u0000 \u0041"}"#
        );
    }

    proptest! {
        /// Whatever strings a record holds, the stored text is valid JSON with no NUL and no
        /// lone surrogate, equal to the input when the input had neither.
        #[test]
        fn jsonb_text_is_always_acceptable(units in proptest::collection::vec(any::<u16>(), 0..40), s in "[^\\x00]{0,20}") {
            let mut esc = String::new();
            for u in &units {
                esc.push_str(&format!("\\u{u:04x}"));
            }
            let text = format!(r#"{{"a":"{esc}","b":{}}}"#, serde_json::to_string(&s).unwrap());
            let fixed = jsonb_text(text.as_bytes());
            let v: Value = serde_json::from_str(&fixed).expect("valid JSON");
            prop_assert!(!v["a"].as_str().unwrap().contains('\0'));
            prop_assert_eq!(v["b"].as_str().unwrap(), s.as_str());
            let lone = char::decode_utf16(units.iter().copied()).any(|c| c.is_err());
            if !lone && !units.contains(&0) {
                prop_assert_eq!(fixed.as_ref(), text.as_str());
            }
        }
    }
}
