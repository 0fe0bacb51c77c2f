//! JSON rendering of stored events in the two API views (`core/v1` and `events.k8s.io/v1`),
//! with Go's field order, `omitempty` rules and string escaping, plus list envelopes, watch
//! frames and the pretty-printing real servers do for curl.

use std::io::Write;

use serde::Serialize;
use serde_json::ser::{CharEscape, Formatter};

use crate::model::{EventObj, ManagedField, ObjectRef, Series, Source, Str};

/// Which API group/version renders the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum View {
    /// `/api/v1` (`involvedObject`, `message`, `source`, `count`, ...).
    Core,
    /// `/apis/events.k8s.io/v1` (`regarding`, `note`, `deprecated*`, ...).
    EventsV1,
}

impl View {
    pub fn api_version(self) -> &'static str {
        match self {
            View::Core => "v1",
            View::EventsV1 => "events.k8s.io/v1",
        }
    }

    /// The API group for Status details (`""` for core).
    pub fn group(self) -> &'static str {
        match self {
            View::Core => "",
            View::EventsV1 => "events.k8s.io",
        }
    }
}

/// serde_json formatter that escapes strings like Go's `encoding/json` (as of Go 1.20, which
/// built kube-apiserver 1.28): `<`, `>`, `&`, U+2028 and U+2029 as `\u00XX`/`\u20XX`, and
/// backspace/form feed as `\u0008`/`\u000c`.
pub(crate) struct GoFormatter;

impl Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let bytes = fragment.as_bytes();
        let mut start = 0;
        let mut i = 0;
        while i < bytes.len() {
            let esc: Option<&[u8]> = match bytes[i] {
                b'<' => Some(b"\\u003c"),
                b'>' => Some(b"\\u003e"),
                b'&' => Some(b"\\u0026"),
                0xe2 if i + 2 < bytes.len() && bytes[i + 1] == 0x80 && bytes[i + 2] == 0xa8 => {
                    Some(b"\\u2028")
                }
                0xe2 if i + 2 < bytes.len() && bytes[i + 1] == 0x80 && bytes[i + 2] == 0xa9 => {
                    Some(b"\\u2029")
                }
                _ => None,
            };
            if let Some(esc) = esc {
                writer.write_all(&bytes[start..i])?;
                writer.write_all(esc)?;
                i += if bytes[i] == 0xe2 { 3 } else { 1 };
                start = i;
            } else {
                i += 1;
            }
        }
        writer.write_all(&bytes[start..])
    }

    fn write_char_escape<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        char_escape: CharEscape,
    ) -> std::io::Result<()> {
        match char_escape {
            CharEscape::Backspace => writer.write_all(b"\\u0008"),
            CharEscape::FormFeed => writer.write_all(b"\\u000c"),
            CharEscape::Quote => writer.write_all(b"\\\""),
            CharEscape::ReverseSolidus => writer.write_all(b"\\\\"),
            CharEscape::LineFeed => writer.write_all(b"\\n"),
            CharEscape::CarriageReturn => writer.write_all(b"\\r"),
            CharEscape::Tab => writer.write_all(b"\\t"),
            CharEscape::AsciiControl(b) => write!(writer, "\\u{b:04x}"),
            CharEscape::Solidus => writer.write_all(b"/"),
        }
    }
}

/// Compact JSON with Go's escaping.
pub(crate) fn to_writer_go<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
) -> Result<(), serde_json::Error> {
    let mut ser = serde_json::Serializer::with_formatter(out, GoFormatter);
    value.serialize(&mut ser)
}

/// A sorted string map (labels, annotations).
struct Pairs<'a>(&'a [(Str, Str)]);

impl Serialize for Pairs<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(&**k, &**v)?;
        }
        m.end()
    }
}

/// `ObjectMeta`.
#[derive(Serialize)]
struct Meta<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    namespace: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    uid: &'a str,
    #[serde(rename = "resourceVersion")]
    resource_version: Rv,
    #[serde(rename = "creationTimestamp")]
    creation_timestamp: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<Pairs<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<Pairs<'a>>,
    #[serde(rename = "managedFields", skip_serializing_if = "<[_]>::is_empty")]
    managed_fields: &'a [ManagedField],
}

/// A resourceVersion: a decimal string.
struct Rv(u64);

impl Serialize for Rv {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

fn meta(ev: &EventObj) -> Meta<'_> {
    let b = &ev.body;
    Meta {
        name: &b.name,
        namespace: &b.namespace,
        uid: &b.uid,
        resource_version: Rv(ev.rv),
        creation_timestamp: Some(&b.creation_timestamp),
        labels: (!b.labels.is_empty()).then(|| Pairs(&b.labels)),
        annotations: (!b.annotations.is_empty()).then(|| Pairs(&b.annotations)),
        managed_fields: &ev.managed_fields,
    }
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// core/v1 `Event`.
#[derive(Serialize)]
struct CoreEvent<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    #[serde(rename = "apiVersion", skip_serializing_if = "Option::is_none")]
    api_version: Option<&'static str>,
    metadata: Meta<'a>,
    #[serde(rename = "involvedObject")]
    involved_object: &'a ObjectRef,
    #[serde(skip_serializing_if = "str::is_empty")]
    reason: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
    source: &'a Source,
    #[serde(rename = "firstTimestamp")]
    first_timestamp: Option<&'a str>,
    #[serde(rename = "lastTimestamp")]
    last_timestamp: Option<&'a str>,
    #[serde(skip_serializing_if = "is_zero")]
    count: i32,
    #[serde(rename = "type", skip_serializing_if = "str::is_empty")]
    type_: &'a str,
    #[serde(rename = "eventTime")]
    event_time: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    series: Option<&'a Series>,
    #[serde(skip_serializing_if = "str::is_empty")]
    action: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    related: Option<&'a ObjectRef>,
    #[serde(rename = "reportingComponent")]
    reporting_component: &'a str,
    #[serde(rename = "reportingInstance")]
    reporting_instance: &'a str,
}

/// events.k8s.io/v1 `Event`.
#[derive(Serialize)]
struct EventsV1Event<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    #[serde(rename = "apiVersion", skip_serializing_if = "Option::is_none")]
    api_version: Option<&'static str>,
    metadata: Meta<'a>,
    #[serde(rename = "eventTime")]
    event_time: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    series: Option<&'a Series>,
    #[serde(rename = "reportingController", skip_serializing_if = "str::is_empty")]
    reporting_controller: &'a str,
    #[serde(rename = "reportingInstance", skip_serializing_if = "str::is_empty")]
    reporting_instance: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    action: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    reason: &'a str,
    regarding: &'a ObjectRef,
    #[serde(skip_serializing_if = "Option::is_none")]
    related: Option<&'a ObjectRef>,
    #[serde(skip_serializing_if = "str::is_empty")]
    note: &'a str,
    #[serde(rename = "type", skip_serializing_if = "str::is_empty")]
    type_: &'a str,
    #[serde(rename = "deprecatedSource")]
    deprecated_source: &'a Source,
    #[serde(rename = "deprecatedFirstTimestamp")]
    deprecated_first_timestamp: Option<&'a str>,
    #[serde(rename = "deprecatedLastTimestamp")]
    deprecated_last_timestamp: Option<&'a str>,
    #[serde(rename = "deprecatedCount", skip_serializing_if = "is_zero")]
    deprecated_count: i32,
}

/// Appends one event. `typed`: with `kind`/`apiVersion` (single objects and watch frames);
/// list items go without.
pub(crate) fn write_event(out: &mut Vec<u8>, ev: &EventObj, view: View, typed: bool) {
    let b = &ev.body;
    let kind = typed.then_some("Event");
    let api_version = typed.then_some(view.api_version());
    // Serializing these borrowed structs into a Vec cannot fail: every map key is a string.
    let _ = match view {
        View::Core => to_writer_go(
            out,
            &CoreEvent {
                kind,
                api_version,
                metadata: meta(ev),
                involved_object: &b.involved,
                reason: &b.reason,
                message: &b.message,
                source: &b.source,
                first_timestamp: b.first_timestamp.as_deref(),
                last_timestamp: ev.last_timestamp.as_deref(),
                count: ev.count,
                type_: &b.type_,
                event_time: b.event_time.as_deref(),
                series: ev.series.as_ref(),
                action: &b.action,
                related: b.related.as_ref(),
                reporting_component: &b.reporting_component,
                reporting_instance: &b.reporting_instance,
            },
        ),
        View::EventsV1 => to_writer_go(
            out,
            &EventsV1Event {
                kind,
                api_version,
                metadata: meta(ev),
                event_time: b.event_time.as_deref(),
                series: ev.series.as_ref(),
                reporting_controller: &b.reporting_component,
                reporting_instance: &b.reporting_instance,
                action: &b.action,
                reason: &b.reason,
                regarding: &b.involved,
                related: b.related.as_ref(),
                note: &b.message,
                type_: &b.type_,
                deprecated_source: &b.source,
                deprecated_first_timestamp: b.first_timestamp.as_deref(),
                deprecated_last_timestamp: ev.last_timestamp.as_deref(),
                deprecated_count: ev.count,
            },
        ),
    };
}

/// A single-object answer (`GET .../events/<name>`): typed, compact, ends with `\n`.
pub(crate) fn event_document(ev: &EventObj, view: View) -> Vec<u8> {
    let mut out = Vec::with_capacity(1400);
    write_event(&mut out, ev, view, true);
    out.push(b'\n');
    out
}

/// Watch event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameType {
    Added,
    Modified,
    Deleted,
    Bookmark,
    Error,
}

impl FrameType {
    pub fn as_str(self) -> &'static str {
        match self {
            FrameType::Added => "ADDED",
            FrameType::Modified => "MODIFIED",
            FrameType::Deleted => "DELETED",
            FrameType::Bookmark => "BOOKMARK",
            FrameType::Error => "ERROR",
        }
    }
}

/// `{"type":"…","object":…}\n`, one watch frame.
pub(crate) fn event_frame(ty: FrameType, ev: &EventObj, view: View) -> Vec<u8> {
    let mut out = Vec::with_capacity(1400);
    frame_prefix(&mut out, ty);
    write_event(&mut out, ev, view, true);
    out.extend_from_slice(b"}\n");
    out
}

fn frame_prefix(out: &mut Vec<u8>, ty: FrameType) {
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(ty.as_str().as_bytes());
    out.extend_from_slice(b"\",\"object\":");
}

/// A frame around an already rendered object (e.g. a Status for ERROR frames).
pub(crate) fn raw_frame(ty: FrameType, object: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(object.len() + 32);
    frame_prefix(&mut out, ty);
    let trimmed = object.strip_suffix(b"\n").unwrap_or(object);
    out.extend_from_slice(trimmed);
    out.extend_from_slice(b"}\n");
    out
}

/// A BOOKMARK frame: an empty Event of the view carrying only the resourceVersion, serialized
/// the way Go serializes a zero-valued Event (timestamps `null`, empty structs `{}`).
pub(crate) fn bookmark_frame(rv: u64, view: View) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    frame_prefix(&mut out, FrameType::Bookmark);
    let rv = rv.to_string();
    match view {
        View::Core => {
            out.extend_from_slice(
                b"{\"kind\":\"Event\",\"apiVersion\":\"v1\",\"metadata\":{\"resourceVersion\":\"",
            );
            out.extend_from_slice(rv.as_bytes());
            out.extend_from_slice(b"\",\"creationTimestamp\":null},\"involvedObject\":{},\"source\":{},\"firstTimestamp\":null,\"lastTimestamp\":null,\"eventTime\":null,\"reportingComponent\":\"\",\"reportingInstance\":\"\"}");
        }
        View::EventsV1 => {
            out.extend_from_slice(b"{\"kind\":\"Event\",\"apiVersion\":\"events.k8s.io/v1\",\"metadata\":{\"resourceVersion\":\"");
            out.extend_from_slice(rv.as_bytes());
            out.extend_from_slice(b"\",\"creationTimestamp\":null},\"eventTime\":null,\"regarding\":{},\"deprecatedSource\":{},\"deprecatedFirstTimestamp\":null,\"deprecatedLastTimestamp\":null}");
        }
    }
    out.extend_from_slice(b"}\n");
    out
}

/// `ListMeta` of an EventList.
pub(crate) struct ListMeta {
    pub resource_version: u64,
    pub continue_token: Option<String>,
    pub remaining: Option<i64>,
}

/// The part of an EventList before the first item: `{"kind":"EventList",…,"items":[`.
pub(crate) fn list_head(out: &mut Vec<u8>, view: View, meta: &ListMeta) {
    out.extend_from_slice(b"{\"kind\":\"EventList\",\"apiVersion\":\"");
    out.extend_from_slice(view.api_version().as_bytes());
    out.extend_from_slice(b"\",\"metadata\":{\"resourceVersion\":\"");
    out.extend_from_slice(meta.resource_version.to_string().as_bytes());
    out.push(b'"');
    if let Some(c) = &meta.continue_token {
        out.extend_from_slice(b",\"continue\":\"");
        out.extend_from_slice(c.as_bytes());
        out.push(b'"');
    }
    if let Some(r) = meta.remaining {
        out.extend_from_slice(b",\"remainingItemCount\":");
        out.extend_from_slice(r.to_string().as_bytes());
    }
    out.extend_from_slice(b"},\"items\":[");
}

/// Closes what [`list_head`] opened.
pub(crate) const LIST_TAIL: &[u8] = b"]}\n";

/// Re-indents compact JSON like Go's `json.Indent(dst, src, "", "  ")`: empty objects and
/// arrays stay `{}`/`[]`, no trailing newline.
pub(crate) fn indent(compact: &[u8]) -> Vec<u8> {
    let src = compact.strip_suffix(b"\n").unwrap_or(compact);
    let mut out = Vec::with_capacity(src.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut need_indent = false;
    let newline = |out: &mut Vec<u8>, depth: usize| {
        out.push(b'\n');
        for _ in 0..depth {
            out.extend_from_slice(b"  ");
        }
    };
    for &c in src {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_string = false;
            }
            continue;
        }
        if matches!(c, b' ' | b'\t' | b'\r' | b'\n') {
            continue;
        }
        if need_indent && c != b']' && c != b'}' {
            need_indent = false;
            depth += 1;
            newline(&mut out, depth);
        }
        match c {
            b'"' => {
                in_string = true;
                out.push(c);
            }
            b'{' | b'[' => {
                out.push(c);
                need_indent = true;
            }
            b',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            b':' => {
                out.extend_from_slice(b": ");
            }
            b'}' | b']' => {
                if need_indent {
                    // an empty object or array
                    need_indent = false;
                } else {
                    depth = depth.saturating_sub(1);
                    newline(&mut out, depth);
                }
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_escaping() {
        let mut out = Vec::new();
        to_writer_go(&mut out, "a<b>&c\u{2028}\u{8}\u{c}\u{1}é").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"a\\u003cb\\u003e\\u0026c\\u2028\\u0008\\u000c\\u0001é\""
        );
    }

    #[test]
    fn indent_like_go() {
        let got = indent(b"{\"a\":{},\"b\":[1,2],\"c\":{\"d\":\"x,y:{\"}}\n");
        let want = "{\n  \"a\": {},\n  \"b\": [\n    1,\n    2\n  ],\n  \"c\": {\n    \"d\": \"x,y:{\"\n  }\n}";
        assert_eq!(String::from_utf8(got).unwrap(), want);
    }

    #[test]
    fn bookmark_shape() {
        let f = bookmark_frame(7, View::Core);
        let v: serde_json::Value = serde_json::from_slice(&f).unwrap();
        assert_eq!(v["type"], "BOOKMARK");
        assert_eq!(v["object"]["metadata"]["resourceVersion"], "7");
        assert!(f.ends_with(b"}\n"));
        let v: serde_json::Value =
            serde_json::from_slice(&bookmark_frame(7, View::EventsV1)).unwrap();
        assert_eq!(v["object"]["apiVersion"], "events.k8s.io/v1");
    }
}
