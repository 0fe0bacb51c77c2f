//! Watch frames and list pages: splitting a streamed body into newline-delimited JSON frames
//! (a frame may span chunks, a chunk may hold several frames, a frame has a size cap) and
//! parsing frames and list pages with typed serde while keeping each object's exact bytes.

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::status::{Status, snippet};

/// Default cap for one watch frame: beyond it the stream is treated as broken.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 << 20;

/// An object as the API server sent it, with the few fields kubetrail needs pulled out.
#[derive(Debug, Clone)]
pub struct RawObject {
    /// The object's exact JSON bytes, untouched.
    pub raw: Box<RawValue>,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.resourceVersion` (opaque).
    pub resource_version: String,
    /// `kind`; list items carry none.
    pub kind: Option<String>,
    /// `metadata.name`.
    pub name: Option<String>,
    /// `metadata.namespace`.
    pub namespace: Option<String>,
}

/// The type of a change reported by a watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatchEventType {
    /// `ADDED`
    Added,
    /// `MODIFIED`
    Modified,
    /// `DELETED`
    Deleted,
}

impl WatchEventType {
    /// The wire name (`ADDED`, `MODIFIED`, `DELETED`).
    pub fn as_str(self) -> &'static str {
        match self {
            WatchEventType::Added => "ADDED",
            WatchEventType::Modified => "MODIFIED",
            WatchEventType::Deleted => "DELETED",
        }
    }
}

/// One parsed watch frame.
#[derive(Debug, Clone)]
pub enum Frame {
    /// ADDED, MODIFIED or DELETED with its object.
    Change(WatchEventType, RawObject),
    /// BOOKMARK: a new resourceVersion, nothing to emit.
    Bookmark { resource_version: String },
    /// ERROR with the Status it carried.
    Error(Status),
}

/// Why a frame or a list page could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not JSON, or not the expected shape.
    #[error("not a valid {what}: {reason} (starts with: {snippet})")]
    Malformed {
        what: &'static str,
        reason: String,
        snippet: String,
    },
    /// A required field is missing or empty.
    #[error("{what} has no {field} (starts with: {snippet})")]
    MissingField {
        what: &'static str,
        field: &'static str,
        snippet: String,
    },
    /// The `type` of a watch frame is not one of the five known ones.
    #[error("unknown watch event type {0:?}")]
    UnknownType(String),
    /// The object is not of the kind this watch is for.
    #[error("expected an object of kind {expected:?}, got {found:?}")]
    UnexpectedKind { expected: String, found: String },
    /// A frame is larger than the cap.
    #[error("a watch frame is larger than {limit} bytes")]
    Oversized { limit: usize },
}

impl FrameError {
    /// A short label for counters and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            FrameError::Malformed { .. } => "malformed",
            FrameError::MissingField { .. } => "missing_field",
            FrameError::UnknownType(_) => "unknown_type",
            FrameError::UnexpectedKind { .. } => "unexpected_kind",
            FrameError::Oversized { .. } => "oversized",
        }
    }
}

/// Splits a byte stream into newline-terminated frames.
///
/// Memory is bounded: at most one incomplete frame (up to the cap) plus the chunk being added.
pub struct FrameSplitter {
    buf: BytesMut,
    /// Bytes at the front of `buf` already known to hold no newline.
    scanned: usize,
    max_frame: usize,
}

impl fmt::Debug for FrameSplitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameSplitter")
            .field("buffered", &self.buf.len())
            .field("max_frame", &self.max_frame)
            .finish()
    }
}

impl FrameSplitter {
    /// A splitter that refuses frames longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        FrameSplitter {
            buf: BytesMut::new(),
            scanned: 0,
            max_frame,
        }
    }

    /// Adds a chunk of the stream.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Bytes held that are not yet a complete frame (or not yet taken).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame without its newline, skipping blank lines; `None` when more
    /// data is needed. An error means the stream cannot go on (a frame beyond the cap).
    pub fn next_frame(&mut self) -> Option<Result<Bytes, FrameError>> {
        loop {
            let Some(pos) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') else {
                self.scanned = self.buf.len();
                if self.buf.len() > self.max_frame {
                    return Some(Err(FrameError::Oversized {
                        limit: self.max_frame,
                    }));
                }
                return None;
            };
            let end = self.scanned + pos;
            let line = self.buf.split_to(end).freeze();
            self.buf.advance(1);
            self.scanned = 0;
            if line.len() > self.max_frame {
                return Some(Err(FrameError::Oversized {
                    limit: self.max_frame,
                }));
            }
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            return Some(Ok(line));
        }
    }

    /// At the end of the stream: what is left. A last frame without a newline is still a
    /// complete frame if it parses; the caller decides. Blank leftovers give `None`.
    pub fn take_rest(&mut self) -> Option<Bytes> {
        self.scanned = 0;
        let rest = std::mem::take(&mut self.buf).freeze();
        if rest.iter().all(|b| b.is_ascii_whitespace()) {
            None
        } else {
            Some(rest)
        }
    }
}

#[derive(Deserialize)]
struct WireFrame {
    #[serde(rename = "type")]
    kind: String,
    object: Box<RawValue>,
}

#[derive(Deserialize, Default)]
struct Head {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: Option<Meta>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Meta {
    #[serde(default)]
    resource_version: Option<String>,
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default, rename = "continue")]
    continue_token: Option<String>,
}

fn malformed(what: &'static str, e: impl fmt::Display, bytes: &[u8]) -> FrameError {
    FrameError::Malformed {
        what,
        reason: e.to_string(),
        snippet: snippet(bytes),
    }
}

/// Parses one watch frame. `expected_kind` (e.g. `Event`) rejects objects of other kinds.
pub fn parse_frame(bytes: &[u8], expected_kind: Option<&str>) -> Result<Frame, FrameError> {
    let wire: WireFrame =
        serde_json::from_slice(bytes).map_err(|e| malformed("watch frame", e, bytes))?;
    match wire.kind.as_str() {
        "ADDED" | "MODIFIED" | "DELETED" => {
            let t = match wire.kind.as_str() {
                "ADDED" => WatchEventType::Added,
                "MODIFIED" => WatchEventType::Modified,
                _ => WatchEventType::Deleted,
            };
            let obj = raw_object(wire.object, "watch object")?;
            check_kind(&obj, expected_kind)?;
            Ok(Frame::Change(t, obj))
        }
        "BOOKMARK" => {
            let head: Head = serde_json::from_str(wire.object.get())
                .map_err(|e| malformed("bookmark", e, bytes))?;
            match head.metadata.and_then(|m| m.resource_version) {
                Some(rv) if !rv.is_empty() => Ok(Frame::Bookmark {
                    resource_version: rv,
                }),
                _ => Err(FrameError::MissingField {
                    what: "bookmark",
                    field: "metadata.resourceVersion",
                    snippet: snippet(bytes),
                }),
            }
        }
        "ERROR" => {
            let status: Status = serde_json::from_str(wire.object.get())
                .map_err(|e| malformed("ERROR frame", e, bytes))?;
            Ok(Frame::Error(status))
        }
        other => Err(FrameError::UnknownType(snippet(other.as_bytes()))),
    }
}

fn raw_object(raw: Box<RawValue>, what: &'static str) -> Result<RawObject, FrameError> {
    let head: Head =
        serde_json::from_str(raw.get()).map_err(|e| malformed(what, e, raw.get().as_bytes()))?;
    let meta = head.metadata.unwrap_or_default();
    let missing = |field| FrameError::MissingField {
        what,
        field,
        snippet: snippet(raw.get().as_bytes()),
    };
    let uid = meta
        .uid
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("metadata.uid"))?;
    let resource_version = meta
        .resource_version
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("metadata.resourceVersion"))?;
    Ok(RawObject {
        raw,
        uid,
        resource_version,
        kind: head.kind,
        name: meta.name,
        namespace: meta.namespace,
    })
}

fn check_kind(obj: &RawObject, expected: Option<&str>) -> Result<(), FrameError> {
    match (expected, obj.kind.as_deref()) {
        (Some(want), Some(got)) if want != got => Err(FrameError::UnexpectedKind {
            expected: want.to_string(),
            found: got.to_string(),
        }),
        // A watch object without a kind is accepted: the path already says what it is.
        _ => Ok(()),
    }
}

/// One page of a LIST answer.
#[derive(Debug)]
pub struct ListPage {
    /// Items that could be used.
    pub items: Vec<RawObject>,
    /// Items that were skipped, and why.
    pub skipped: Vec<FrameError>,
    /// `metadata.continue` when more pages follow.
    pub continue_token: Option<String>,
    /// `metadata.resourceVersion` of the list.
    pub resource_version: String,
}

#[derive(Deserialize)]
struct WireList {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: Option<Meta>,
    #[serde(default)]
    items: Option<Vec<Box<RawValue>>>,
}

/// Parses a LIST page (`{"kind":"EventList","metadata":{...},"items":[...]}`). A bad item is
/// skipped and reported; a page without a resourceVersion is an error.
pub fn parse_list_page(bytes: &[u8], expected_kind: Option<&str>) -> Result<ListPage, FrameError> {
    let wire: WireList = serde_json::from_slice(bytes).map_err(|e| malformed("list", e, bytes))?;
    if let (Some(want), Some(got)) = (expected_kind, wire.kind.as_deref())
        && got != format!("{want}List")
    {
        return Err(FrameError::UnexpectedKind {
            expected: format!("{want}List"),
            found: got.to_string(),
        });
    }
    let meta = wire.metadata.unwrap_or_default();
    let resource_version = meta
        .resource_version
        .filter(|s| !s.is_empty())
        .ok_or_else(|| FrameError::MissingField {
            what: "list",
            field: "metadata.resourceVersion",
            snippet: snippet(bytes),
        })?;
    let mut items = Vec::new();
    let mut skipped = Vec::new();
    for raw in wire.items.unwrap_or_default() {
        match raw_object(raw, "list item").and_then(|o| check_kind(&o, expected_kind).map(|_| o)) {
            Ok(o) => items.push(o),
            Err(e) => skipped.push(e),
        }
    }
    Ok(ListPage {
        items,
        skipped,
        continue_token: meta.continue_token.filter(|s| !s.is_empty()),
        resource_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn event(rv: &str, uid: &str) -> String {
        format!(
            r#"{{"kind":"Event","apiVersion":"v1","metadata":{{"name":"e-{uid}","namespace":"fx","uid":"{uid}","resourceVersion":"{rv}"}},"reason":"BackOff","message":"a\nb"}}"#
        )
    }

    fn frame(t: &str, rv: &str, uid: &str) -> String {
        format!(r#"{{"type":"{t}","object":{}}}"#, event(rv, uid))
    }

    #[test]
    fn parses_changes_keeping_exact_bytes() {
        let f = frame("MODIFIED", "312", "u1");
        let Frame::Change(t, obj) = parse_frame(f.as_bytes(), Some("Event")).unwrap() else {
            panic!("not a change");
        };
        assert_eq!(t, WatchEventType::Modified);
        assert_eq!(obj.raw.get(), event("312", "u1"));
        assert_eq!(obj.uid, "u1");
        assert_eq!(obj.resource_version, "312");
        assert_eq!(obj.kind.as_deref(), Some("Event"));
        assert_eq!(obj.name.as_deref(), Some("e-u1"));
        assert_eq!(obj.namespace.as_deref(), Some("fx"));
    }

    #[test]
    fn parses_bookmarks_and_errors_from_the_fixtures_shapes() {
        let b = r#"{"type":"BOOKMARK","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"resourceVersion":"333","creationTimestamp":null}}}"#;
        assert!(matches!(parse_frame(b.as_bytes(), Some("Event")).unwrap(),
            Frame::Bookmark { resource_version } if resource_version == "333"));
        let e = r#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"The resourceVersion for the provided watch is too old.","reason":"Expired","code":410}}"#;
        let Frame::Error(s) = parse_frame(e.as_bytes(), Some("Event")).unwrap() else {
            panic!()
        };
        assert_eq!(s.code, Some(410));
        assert_eq!(s.reason.as_deref(), Some("Expired"));
    }

    #[test]
    fn rejects_bad_frames_with_reasons() {
        let cases: &[(&str, &str)] = &[
            ("not json", "malformed"),
            (r#"{"type":"ADDED"}"#, "malformed"),
            (r#"{"type":"ADDED","object":null}"#, "malformed"),
            (
                r#"{"type":"ADDED","object":{"kind":"Event","metadata":{"uid":"u"}}}"#,
                "missing_field",
            ),
            (
                r#"{"type":"ADDED","object":{"kind":"Event","metadata":{"resourceVersion":"1"}}}"#,
                "missing_field",
            ),
            (
                r#"{"type":"ADDED","object":{"kind":"Pod","metadata":{"uid":"u","resourceVersion":"1"}}}"#,
                "unexpected_kind",
            ),
            (r#"{"type":"SURPRISE","object":{}}"#, "unknown_type"),
            (
                r#"{"type":"BOOKMARK","object":{"metadata":{}}}"#,
                "missing_field",
            ),
            (
                r#"{"type":"ADDED","object":{"kind":"Event","metadata":{"uid":7,"resourceVersion":"1"}}}"#,
                "malformed",
            ),
        ];
        for (input, kind) in cases {
            let err = parse_frame(input.as_bytes(), Some("Event")).unwrap_err();
            assert_eq!(err.kind(), *kind, "{input}: {err}");
        }
    }

    #[test]
    fn splitter_handles_spanning_and_multiple_frames() {
        let mut s = FrameSplitter::new(1024);
        s.push(b"{\"a\":1}\n{\"b\"");
        assert_eq!(s.next_frame().unwrap().unwrap(), &b"{\"a\":1}"[..]);
        assert!(s.next_frame().is_none());
        s.push(b":2}\n\n  \n{\"c\":3}\n{\"d");
        assert_eq!(s.next_frame().unwrap().unwrap(), &b"{\"b\":2}"[..]);
        assert_eq!(s.next_frame().unwrap().unwrap(), &b"{\"c\":3}"[..]);
        assert!(s.next_frame().is_none());
        assert_eq!(s.take_rest().unwrap(), &b"{\"d"[..]);
        assert!(s.take_rest().is_none());
    }

    #[test]
    fn splitter_caps_frames() {
        let mut s = FrameSplitter::new(8);
        s.push(b"0123456789");
        assert!(matches!(
            s.next_frame(),
            Some(Err(FrameError::Oversized { limit: 8 }))
        ));
        let mut s = FrameSplitter::new(8);
        s.push(b"0123456789\n");
        assert!(matches!(
            s.next_frame(),
            Some(Err(FrameError::Oversized { .. }))
        ));
        let mut s = FrameSplitter::new(8);
        s.push(b"01234567\n");
        assert!(s.next_frame().unwrap().is_ok());
    }

    #[test]
    fn list_pages() {
        let body = format!(
            r#"{{"kind":"EventList","apiVersion":"v1","metadata":{{"resourceVersion":"301","continue":"tok","remainingItemCount":37}},"items":[{},{{"metadata":{{"name":"x"}}}},{}]}}"#,
            event("291", "a").replace(r#""kind":"Event","apiVersion":"v1","#, ""),
            event("267", "b")
        );
        let page = parse_list_page(body.as_bytes(), Some("Event")).unwrap();
        assert_eq!(page.resource_version, "301");
        assert_eq!(page.continue_token.as_deref(), Some("tok"));
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.items[0].kind, None);
        assert_eq!(page.skipped.len(), 1);
        assert!(
            parse_list_page(
                br#"{"kind":"EventList","metadata":{},"items":[]}"#,
                Some("Event")
            )
            .is_err()
        );
        assert!(
            parse_list_page(
                br#"{"kind":"PodList","metadata":{"resourceVersion":"1"}}"#,
                Some("Event")
            )
            .is_err()
        );
        let last = parse_list_page(br#"{"kind":"EventList","metadata":{"resourceVersion":"9","continue":""},"items":null}"#, Some("Event")).unwrap();
        assert!(last.continue_token.is_none() && last.items.is_empty());
    }

    #[test]
    fn fixture_streams_parse() {
        let dir = std::env::var("KUBETRAIL_FIXTURES").expect(
            "set KUBETRAIL_FIXTURES to the shared fixtures directory (e.g. ../shared/fixtures)",
        );
        let dir = std::path::Path::new(&dir).join("kube-api");
        let read = |name: &str| {
            let text = std::fs::read(dir.join(name)).unwrap();
            let nl = text.iter().position(|&b| b == b'\n').unwrap();
            let header: serde_json::Value = serde_json::from_slice(&text[..nl]).unwrap();
            (header, text[nl + 1..].to_vec())
        };
        let (h, body) = read("core-v1-events-watch-fx-bookmarks.txt");
        let mut s = FrameSplitter::new(DEFAULT_MAX_FRAME_BYTES);
        s.push(&body);
        let mut changes = Vec::new();
        while let Some(f) = s.next_frame() {
            match parse_frame(&f.unwrap(), Some("Event")).unwrap() {
                Frame::Change(t, o) => changes.push((t, o.resource_version)),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(changes.len() as u64, h["frame_count"].as_u64().unwrap());
        assert!(changes.contains(&(WatchEventType::Deleted, "312".to_string())));

        let (_, body) = read("configmaps-watch-fx-bookmarks.txt");
        let mut s = FrameSplitter::new(DEFAULT_MAX_FRAME_BYTES);
        s.push(&body);
        let mut bookmarks = 0;
        while let Some(f) = s.next_frame() {
            match parse_frame(&f.unwrap(), Some("ConfigMap")).unwrap() {
                Frame::Bookmark { resource_version } => {
                    bookmarks += 1;
                    assert_eq!(resource_version, "333");
                }
                Frame::Change(..) => {}
                Frame::Error(_) => panic!(),
            }
        }
        assert_eq!(bookmarks, 2);

        let (_, body) = read("events-k8s-io-v1-events-watch-compacted-rv.txt");
        let line = body.split(|&b| b == b'\n').next().unwrap();
        assert!(
            matches!(parse_frame(line, Some("Event")).unwrap(), Frame::Error(s) if s.code == Some(410))
        );

        for (name, n, cont) in [
            ("core-v1-events-list-limit5-page1.txt", 5, true),
            ("core-v1-events-list-limit5-lastpage.txt", 2, false),
            ("core-v1-events-list-all.txt", 42, false),
            ("events-k8s-io-v1-events-list-limit5-page1.txt", 5, true),
        ] {
            let (_, body) = read(name);
            let page = parse_list_page(&body, Some("Event")).unwrap();
            assert_eq!(page.items.len(), n, "{name}");
            assert!(page.skipped.is_empty(), "{name}");
            assert_eq!(page.continue_token.is_some(), cont, "{name}");
        }
    }

    fn frames_of(stream: &[u8], chunks: &[usize]) -> Vec<Result<Bytes, FrameError>> {
        let mut s = FrameSplitter::new(1 << 16);
        let mut out = Vec::new();
        let mut rest = stream;
        let mut i = 0;
        while !rest.is_empty() {
            let n = chunks
                .get(i)
                .copied()
                .unwrap_or(rest.len())
                .clamp(1, rest.len());
            i += 1;
            s.push(&rest[..n]);
            rest = &rest[n..];
            while let Some(f) = s.next_frame() {
                out.push(f);
            }
        }
        if let Some(r) = s.take_rest() {
            out.push(Ok(r));
        }
        out
    }

    proptest! {
        #[test]
        fn any_chunking_yields_the_same_frames(
            rvs in proptest::collection::vec(1u32..100_000, 1..20),
            chunks in proptest::collection::vec(1usize..300, 0..200),
        ) {
            let frames: Vec<String> = rvs.iter().enumerate()
                .map(|(i, rv)| frame("ADDED", &rv.to_string(), &format!("u{i}")))
                .collect();
            let stream = frames.iter().map(|f| format!("{f}\n")).collect::<String>();
            let whole = frames_of(stream.as_bytes(), &[]);
            let chunked = frames_of(stream.as_bytes(), &chunks);
            prop_assert_eq!(&whole, &chunked);
            prop_assert_eq!(whole.len(), frames.len());
            for (got, want) in chunked.iter().zip(&frames) {
                let got = got.as_ref().unwrap();
                prop_assert_eq!(&got[..], want.as_bytes());
                let parsed = parse_frame(got, Some("Event")).unwrap();
                prop_assert!(matches!(parsed, Frame::Change(WatchEventType::Added, _)));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            data in proptest::collection::vec(any::<u8>(), 0..2000),
            chunks in proptest::collection::vec(1usize..64, 0..50),
        ) {
            for f in frames_of(&data, &chunks).into_iter().flatten() {
                let _ = parse_frame(&f, Some("Event"));
                let _ = parse_frame(&f, None);
            }
            let _ = parse_list_page(&data, Some("Event"));
        }

        #[test]
        fn json_like_garbage_never_panics(s in r#"[\{\}\[\]":,a-zA-Z0-9 \n\\]{0,400}"#) {
            for f in frames_of(s.as_bytes(), &[]).into_iter().flatten() {
                let _ = parse_frame(&f, Some("Event"));
            }
            let _ = parse_list_page(s.as_bytes(), None);
        }
    }
}
