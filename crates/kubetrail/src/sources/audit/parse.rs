//! Parsing of audit events as the apiserver writes them: one JSON object per log line, or a
//! webhook body (an `EventList`, a single `Event`, or a JSON array of Events).
//!
//! Speed matters here (a busy cluster writes gigabytes of audit log a day), so nothing is
//! parsed into a generic `serde_json::Value`. Each event is read into a small borrowed struct
//! that names only the fields the record needs; serde skips everything else
//! (`requestObject`, `responseObject`, ...) without building anything, but checks its syntax,
//! so the bytes the read accepted are kept as the record's original without a second scan.
//! A webhook body is walked once, its items read where they lie (see `one_pass`); unusual
//! bodies are first split into per-item [`RawValue`]s, then read.

use std::cell::RefCell;
use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use kubetrail_core::fields::{JsonStr, MemberIndex, ObjectWriter, write_json_str};
use kubetrail_core::{ByteString, Fields, RawJson, Timestamp};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// The audit API group; an event's (or list's) `apiVersion`, when present, must be in it.
const AUDIT_GROUP_PREFIX: &str = "audit.k8s.io/";

/// One audit event, parsed: its exact bytes plus what the record needs from it.
#[derive(Debug, Clone)]
pub struct AuditItem {
    /// The event's bytes exactly as received (for list items: the item inside `items`).
    pub raw: RawJson,
    /// `{auditID}/{stage}` (the record's id), built once; see [`AuditItem::audit_id`] and
    /// [`AuditItem::stage`].
    pub id: String,
    /// Where `stage` starts in `id`.
    stage_at: usize,
    /// `stageTimestamp`, else `requestReceivedTimestamp`, else v1beta1's `timestamp`;
    /// `None` when none of them is a valid RFC 3339 time.
    pub time: Option<Timestamp>,
    /// The normalized fields (`audit_id`, `stage`, `level`, `verb`, `user`, ...).
    pub fields: Fields,
}

impl AuditItem {
    /// `auditID`.
    pub fn audit_id(&self) -> &str {
        &self.id[..self.stage_at - 1]
    }

    /// `stage`.
    pub fn stage(&self) -> &str {
        &self.id[self.stage_at..]
    }
}

/// An item that is valid JSON but not an audit event. It is kept (as an error record), not
/// dropped, so that nothing disappears silently.
#[derive(Debug, Clone)]
pub struct ItemError {
    /// Why the item is not an audit event.
    pub reason: String,
    /// The item's bytes exactly as received.
    pub raw: RawJson,
}

impl fmt::Display for ItemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not an audit event: {}", self.reason)
    }
}

impl std::error::Error for ItemError {}

/// Why a line or a body could not be parsed at all.
#[derive(Debug, thiserror::Error)]
pub enum AuditParseError {
    /// The input is not JSON (or not one JSON value, or nested too deeply).
    #[error("not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// A log line that is JSON but not an audit event.
    #[error("{0}")]
    NotAnEvent(#[source] ItemError),
}

/// Why a webhook body was refused as a whole (items that are not audit events are not a
/// reason: they become [`ItemError`]s).
#[derive(Debug, thiserror::Error)]
pub enum BodyParseError {
    /// The body is not JSON (or not one JSON value).
    #[error("not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// More items than [`MAX_BODY_ITEMS`].
    #[error("more than {max} items in one body")]
    TooManyItems { max: usize },
}

/// The most items a webhook body may hold. The apiserver sends batches of 400 by default
/// (`--audit-webhook-batch-max-size`); the cap bounds what one body can make a request hold
/// in memory: an item can be as small as `{}`, three bytes of a 12 MiB body, but becomes a
/// record of hundreds.
pub const MAX_BODY_ITEMS: usize = 10_000;

/// What JSON counts as whitespace around a value (not all of ASCII's: no form feed).
const JSON_WS: [char; 4] = [' ', '\t', '\n', '\r'];

/// Parses one audit log line (one JSON object; surrounding whitespace, including the line end,
/// is ignored).
pub fn parse_line(line: &[u8]) -> Result<AuditItem, AuditParseError> {
    // The typed read of an audit event checks the syntax of every byte (skipped members
    // included), so a line it accepts is one JSON value and is kept without a second scan.
    // Anything else goes the careful way, which tells "not JSON" from "not an audit event".
    let json_ws = |b: &u8| JSON_WS.contains(&char::from(*b));
    let start = line.iter().position(|b| !json_ws(b)).unwrap_or(line.len());
    let end = line
        .iter()
        .rposition(|b| !json_ws(b))
        .map_or(start, |i| i + 1);
    let trimmed = &line[start..end.max(start)];
    if let Ok(text) = std::str::from_utf8(trimmed)
        && let Ok(p) = read_event(text, None)
    {
        return Ok(p.with_raw(RawJson::trusted(text.to_owned())));
    }
    let raw: Box<RawValue> = serde_json::from_slice(line).map_err(AuditParseError::Json)?;
    parse_item(raw, None).map_err(AuditParseError::NotAnEvent)
}

/// [`parse_line`] for the line at `range` of `text` (a sealed batch of lines): the original
/// of the event it reads is a view into `text`, not a copy.
pub fn parse_line_in(text: &ByteString, range: Range<usize>) -> Result<AuditItem, AuditParseError> {
    let Some(line) = text.get(range.clone()) else {
        return parse_line(text.as_bytes().get(range).unwrap_or_default());
    };
    let trimmed = line.trim_matches(JSON_WS);
    if let Ok(p) = read_event(trimmed, None) {
        return Ok(p.with_raw(RawJson::trusted_in(text, trimmed)));
    }
    parse_line(line.as_bytes())
}

/// Parses a webhook body: an `EventList` (`{"kind":"EventList","items":[...]}`, or an object
/// with `items` and no `kind`), a JSON array of Events, or a single Event. Each item is parsed
/// on its own: an item that is not an audit event becomes an [`ItemError`] while the others
/// are kept. The error is for a body that is not JSON at all, or holds more than
/// [`MAX_BODY_ITEMS`] items.
pub fn parse_body(body: &[u8]) -> Result<Vec<Result<AuditItem, ItemError>>, BodyParseError> {
    // The usual bodies (UTF-8, an EventList or an array, plain keys) in one pass; anything
    // else, and every error, the careful way, which has the same results (a property test
    // checks it) and the precise error messages.
    if let Ok(text) = std::str::from_utf8(body)
        && let Some(items) = one_pass::parse_body(text, None)
    {
        return Ok(items);
    }
    parse_body_split(body)
}

/// [`parse_body`] for a body the caller gives away: the originals of the items read in one
/// pass are views into it (no copy per event); the body stays allocated while they live.
pub fn parse_body_owned(
    body: Vec<u8>,
) -> Result<Vec<Result<AuditItem, ItemError>>, BodyParseError> {
    let body = Bytes::from(body);
    if let Ok(text) = ByteString::try_from(body.clone())
        && let Some(items) = one_pass::parse_body(&text, Some(&text))
    {
        return Ok(items);
    }
    parse_body_split(&body)
}

/// The one-pass reading alone (`None` where [`parse_body`] goes the careful way), for tests
/// that compare the two.
#[cfg(test)]
pub(super) fn parse_body_one_pass(text: &str) -> Option<Vec<Result<AuditItem, ItemError>>> {
    one_pass::parse_body(text, None)
}

/// [`parse_body`] in two passes: the body is split into items (each copied as a
/// [`RawValue`]), then each item is read. Handles every shape and reports every error.
/// Public for the differential fuzz target, which checks that [`parse_body`] (one pass where
/// it can) always says the same.
#[doc(hidden)]
pub fn parse_body_split(body: &[u8]) -> Result<Vec<Result<AuditItem, ItemError>>, BodyParseError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let shape = BodyShape::deserialize(&mut de).map_err(BodyParseError::Json)?;
    de.end().map_err(BodyParseError::Json)?;
    match shape {
        BodyShape::List { api_version, items } => {
            let api_version = api_version.filter(|v| v.starts_with(AUDIT_GROUP_PREFIX));
            Ok(items
                .into_iter()
                .map(|raw| parse_item(raw, api_version.as_deref()))
                .collect())
        }
        BodyShape::Array(items) => Ok(items.into_iter().map(|raw| parse_item(raw, None)).collect()),
        BodyShape::TooMany => Err(BodyParseError::TooManyItems {
            max: MAX_BODY_ITEMS,
        }),
        BodyShape::Single => {
            // Walked once already, so this cannot fail on syntax; it still reports rather than
            // panics if it somehow did.
            let raw: Box<RawValue> = serde_json::from_slice(body).map_err(BodyParseError::Json)?;
            Ok(vec![parse_item(raw, None)])
        }
    }
}

/// The body walked once: each item is read into an [`EventRef`] straight from the body, and
/// its span (where the read ended) becomes its original. serde_json reports where a value
/// ended only through its `StreamDeserializer`, so each item (and each envelope key and
/// value) is read by one started at its first byte; the commas, colons and brackets between
/// them are checked here. Whatever is unusual (an escaped envelope key, `items` that is not
/// an array, a body that is a single Event, any syntax error) gives `None`, and the body goes
/// the careful way.
mod one_pass {
    use super::*;

    /// An item read from the body, waiting for the list's `apiVersion` (which may come after
    /// `items`). Not boxed: one vector per body holds them, and a box would be one more
    /// allocation per item.
    #[allow(clippy::large_enum_variant)]
    enum Pending<'a> {
        Event(EventRef<'a>, &'a str),
        NotEvent(String, &'a str),
    }

    impl Pending<'_> {
        fn finish(
            self,
            list_api_version: Option<&str>,
            body: Option<&ByteString>,
        ) -> Result<AuditItem, ItemError> {
            let (checked, span) = match self {
                Pending::Event(ev, span) => (check_event(&ev, list_api_version), span),
                Pending::NotEvent(reason, span) => (Err(reason), span),
            };
            // The read that found the span's end checked every byte of it.
            let raw = match body {
                Some(body) => RawJson::trusted_in(body, span),
                None => RawJson::trusted(span.to_owned()),
            };
            item(checked, raw)
        }
    }

    /// `body`, when given, is the buffer `text` is (originals become views into it).
    pub(super) fn parse_body(
        text: &str,
        body: Option<&ByteString>,
    ) -> Option<Vec<Result<AuditItem, ItemError>>> {
        let b = text.as_bytes();
        let start = skip_ws(b, 0);
        let (api_version, items, end) = match b.get(start)? {
            b'[' => {
                let (items, end) = items_at(text, start)?;
                (None, items, end)
            }
            b'{' => envelope_at(text, start)?,
            _ => return None,
        };
        if skip_ws(b, end) != b.len() {
            return None;
        }
        let api_version = api_version.filter(|v| v.starts_with(AUDIT_GROUP_PREFIX));
        Some(
            items
                .into_iter()
                .map(|p| p.finish(api_version.as_deref(), body))
                .collect(),
        )
    }

    /// An EventList's `apiVersion`, its items, and where it ends; `None` when the object is
    /// not a list (a single Event) or is unusual.
    #[allow(clippy::type_complexity)]
    fn envelope_at(text: &str, at: usize) -> Option<(Option<String>, Vec<Pending<'_>>, usize)> {
        let b = text.as_bytes();
        // Duplicate keys: the last one wins, as in the apiserver's (Go) decoder.
        let mut kind: Option<&RawValue> = None;
        let mut api_version: Option<&RawValue> = None;
        let mut items: Option<Vec<Pending<'_>>> = None;
        let mut i = skip_ws(b, at + 1);
        if b.get(i) == Some(&b'}') {
            return None;
        }
        loop {
            if b.get(i) != Some(&b'"') {
                return None;
            }
            let (key, end) = value_at::<&str>(text, i).ok()?;
            i = skip_ws(b, end);
            if b.get(i) != Some(&b':') {
                return None;
            }
            i = skip_ws(b, i + 1);
            i = match key {
                "items" => {
                    if b.get(i) != Some(&b'[') {
                        return None;
                    }
                    let (list, end) = items_at(text, i)?;
                    items = Some(list);
                    end
                }
                "kind" | "apiVersion" => {
                    let (raw, end) = value_at::<&RawValue>(text, i).ok()?;
                    if key == "kind" {
                        kind = Some(raw);
                    } else {
                        api_version = Some(raw);
                    }
                    end
                }
                _ => value_at::<IgnoredAny>(text, i).ok()?.1,
            };
            i = skip_ws(b, i);
            match b.get(i) {
                Some(b',') => i = skip_ws(b, i + 1),
                Some(b'}') => break,
                _ => return None,
            }
        }
        let as_str =
            |r: Option<&RawValue>| r.and_then(|r| serde_json::from_str::<String>(r.get()).ok());
        let is_list = match (kind, &items) {
            (Some(k), _) => as_str(Some(k)).as_deref() == Some("EventList"),
            (None, Some(_)) => true,
            (None, None) => false,
        };
        if !is_list {
            return None;
        }
        Some((as_str(api_version), items.unwrap_or_default(), i + 1))
    }

    /// The items of the array that starts at `at`, and where it ends.
    fn items_at(text: &str, at: usize) -> Option<(Vec<Pending<'_>>, usize)> {
        let b = text.as_bytes();
        let mut items = Vec::new();
        let mut i = skip_ws(b, at + 1);
        if b.get(i) == Some(&b']') {
            return Some((items, i + 1));
        }
        loop {
            // Past the cap, the careful way decides (and answers).
            if items.len() == MAX_BODY_ITEMS {
                return None;
            }
            let (item, end) = item_at(text, i)?;
            items.push(item);
            i = skip_ws(b, end);
            match b.get(i) {
                Some(b',') => i = skip_ws(b, i + 1),
                Some(b']') => return Some((items, i + 1)),
                _ => return None,
            }
        }
    }

    /// One item: an audit event read in one pass, or, when the typed read refuses it, any
    /// JSON value (kept with the reason).
    fn item_at(text: &str, at: usize) -> Option<(Pending<'_>, usize)> {
        match value_at::<EventRef<'_>>(text, at) {
            Ok((ev, end)) => Some((Pending::Event(ev, &text[at..end]), end)),
            Err(reason) => {
                let (_, end) = value_at::<&RawValue>(text, at).ok()?;
                Some((Pending::NotEvent(reason?.to_string(), &text[at..end]), end))
            }
        }
    }

    /// Reads the JSON value that starts at `at` into `T`, and says where it ended. `Err(None)`
    /// when there is no value there.
    fn value_at<'a, T: Deserialize<'a>>(
        text: &'a str,
        at: usize,
    ) -> Result<(T, usize), Option<serde_json::Error>> {
        let rest = text.get(at..).ok_or(None)?;
        let mut values = serde_json::Deserializer::from_str(rest).into_iter::<T>();
        match values.next() {
            Some(Ok(v)) => Ok((v, at + values.byte_offset())),
            Some(Err(e)) => Err(Some(e)),
            None => Err(None),
        }
    }

    /// The first index at or after `i` that is not JSON whitespace.
    fn skip_ws(b: &[u8], mut i: usize) -> usize {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
            i += 1;
        }
        i
    }
}

/// Reads one item into an [`AuditItem`]. `list_api_version` is the enclosing list's
/// `apiVersion`, which list items (written without `kind`/`apiVersion`) inherit.
/// Read from the bytes as received, so that a syntax error's line and column are those of the
/// item sent (the kept original has its line breaks turned into spaces, see [`RawJson`]).
fn parse_item(raw: Box<RawValue>, list_api_version: Option<&str>) -> Result<AuditItem, ItemError> {
    let checked = read_event(raw.get(), list_api_version);
    item(checked, raw.into())
}

/// The outcome of reading an item, with its bytes.
fn item(checked: Result<Parsed, String>, raw: RawJson) -> Result<AuditItem, ItemError> {
    match checked {
        Ok(p) => Ok(p.with_raw(raw)),
        Err(reason) => Err(ItemError { reason, raw }),
    }
}

/// What [`read_event`] takes out of an item.
struct Parsed {
    id: String,
    stage_at: usize,
    time: Option<Timestamp>,
    fields: Fields,
}

impl Parsed {
    fn with_raw(self, raw: RawJson) -> AuditItem {
        AuditItem {
            raw,
            id: self.id,
            stage_at: self.stage_at,
            time: self.time,
            fields: self.fields,
        }
    }
}

/// Reads and checks one item; the error is the reason it is not an audit event.
fn read_event(json: &str, list_api_version: Option<&str>) -> Result<Parsed, String> {
    let ev: EventRef<'_> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    check_event(&ev, list_api_version)
}

/// Checks that a read item is an audit event, and takes what the record needs from it.
fn check_event(ev: &EventRef<'_>, list_api_version: Option<&str>) -> Result<Parsed, String> {
    if let Some(kind) = ev.kind.as_deref()
        && kind != "Event"
    {
        return Err(format!("kind is '{kind}', not 'Event'"));
    }
    if let Some(v) = ev.api_version.as_deref()
        && !v.starts_with(AUDIT_GROUP_PREFIX)
    {
        return Err(format!("apiVersion '{v}' is not in the audit.k8s.io group"));
    }
    let audit_id = match ev.audit_id.as_deref() {
        Some(id) if !id.is_empty() => id,
        _ => return Err("no auditID".to_string()),
    };
    let stage = match ev.stage.as_deref() {
        Some(s) if !s.is_empty() => s,
        _ => return Err("no stage".to_string()),
    };
    let time = [
        &ev.stage_timestamp,
        &ev.request_received_timestamp,
        &ev.timestamp,
    ]
    .into_iter()
    .flatten()
    .find_map(|t| Timestamp::parse_rfc3339(t));
    let api_version = ev.api_version.as_deref().or(list_api_version);
    let fields = ev.fields(api_version);
    let mut id = String::with_capacity(audit_id.len() + 1 + stage.len());
    id.push_str(audit_id);
    id.push('/');
    id.push_str(stage);
    Ok(Parsed {
        id,
        stage_at: audit_id.len() + 1,
        time,
        fields,
    })
}

/// The fields of an audit Event that records use. Everything else is skipped unparsed.
/// Fields are optional (the apiserver omits empty ones, and a 401 has `"user":{}`), but a
/// field that is present must have the right type, as for the apiserver's own decoder.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventRef<'a> {
    #[serde(borrow)]
    kind: Option<JsonStr<'a>>,
    #[serde(borrow)]
    api_version: Option<JsonStr<'a>>,
    #[serde(borrow)]
    level: Option<JsonStr<'a>>,
    #[serde(borrow, rename = "auditID")]
    audit_id: Option<JsonStr<'a>>,
    #[serde(borrow)]
    stage: Option<JsonStr<'a>>,
    #[serde(borrow, rename = "requestURI")]
    request_uri: Option<JsonStr<'a>>,
    #[serde(borrow)]
    verb: Option<JsonStr<'a>>,
    #[serde(borrow)]
    user: Option<UserRef<'a>>,
    #[serde(borrow)]
    impersonated_user: Option<UserRef<'a>>,
    #[serde(borrow, rename = "sourceIPs")]
    source_ips: Option<Vec<JsonStr<'a>>>,
    #[serde(borrow)]
    user_agent: Option<JsonStr<'a>>,
    #[serde(borrow)]
    object_ref: Option<ObjectRefRef<'a>>,
    response_status: Option<StatusRef>,
    #[serde(borrow)]
    request_received_timestamp: Option<JsonStr<'a>>,
    #[serde(borrow)]
    stage_timestamp: Option<JsonStr<'a>>,
    /// audit.k8s.io/v1beta1 only.
    #[serde(borrow)]
    timestamp: Option<JsonStr<'a>>,
    #[serde(borrow)]
    annotations: Option<AnnotationsRef<'a>>,
}

#[derive(Deserialize)]
struct UserRef<'a> {
    #[serde(borrow)]
    username: Option<JsonStr<'a>>,
    #[serde(borrow)]
    uid: Option<JsonStr<'a>>,
    #[serde(borrow)]
    groups: Option<Vec<JsonStr<'a>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectRefRef<'a> {
    #[serde(borrow)]
    resource: Option<JsonStr<'a>>,
    #[serde(borrow)]
    subresource: Option<JsonStr<'a>>,
    #[serde(borrow)]
    namespace: Option<JsonStr<'a>>,
    #[serde(borrow)]
    name: Option<JsonStr<'a>>,
    #[serde(borrow)]
    api_group: Option<JsonStr<'a>>,
    #[serde(borrow)]
    api_version: Option<JsonStr<'a>>,
}

#[derive(Deserialize)]
struct StatusRef {
    code: Option<i64>,
}

#[derive(Deserialize)]
struct AnnotationsRef<'a> {
    #[serde(borrow, rename = "authorization.k8s.io/decision")]
    decision: Option<JsonStr<'a>>,
    #[serde(borrow, rename = "authorization.k8s.io/reason")]
    reason: Option<JsonStr<'a>>,
}

impl EventRef<'_> {
    /// The normalized fields, named as documented for `k8s_audit` records, written as one
    /// JSON object with keys in sorted order.
    fn fields(&self, api_version: Option<&str>) -> Fields {
        // Written into this thread's scratch buffer, then copied into an allocation of
        // exactly the right size: no buffer grown (and copied) member by member, no room
        // left unused (the audit_file input holds tens of thousands of records in flight).
        thread_local! {
            static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(4096));
        }
        SCRATCH.with_borrow_mut(|out| {
            out.clear();
            let index = self.write_fields(out, api_version);
            // Only complete JSON was written: object syntax and string literals of valid str.
            let text = String::from_utf8(out.as_slice().to_vec()).unwrap_or_default();
            if out.capacity() > 64 << 10 {
                // One huge event does not keep its buffer for the thread's lifetime.
                *out = Vec::with_capacity(4096);
            }
            Fields::from_encoded_indexed(text, index)
        })
    }

    /// Called once `auditID` and `stage` are known to be there.
    fn write_fields(&self, out: &mut Vec<u8>, api_version: Option<&str>) -> MemberIndex {
        let mut index = MemberIndex::new();
        // Every string of an `EventRef` was read by serde_json from JSON text.
        let mut f = ObjectWriter::open_indexed(out, &mut index).strings_from_json_text();
        if let Some(v) = api_version {
            write_json_str(f.key("api_version"), v);
        }
        f.str("audit_id", &self.audit_id);
        if let Some(a) = &self.annotations {
            f.str("decision", &a.decision);
        }
        if let Some(u) = &self.impersonated_user {
            let mut m = f.object("impersonated_user");
            m.list("groups", &u.groups);
            m.str("username", &u.username);
            m.close();
        }
        f.str("level", &self.level);
        if let Some(o) = &self.object_ref {
            let mut m = f.object("object_ref");
            m.str("api_group", &o.api_group);
            m.str("api_version", &o.api_version);
            m.str("name", &o.name);
            m.str("namespace", &o.namespace);
            m.str("resource", &o.resource);
            m.str("subresource", &o.subresource);
            m.close();
        }
        if let Some(a) = &self.annotations {
            f.str("reason", &a.reason);
        }
        f.str("request_uri", &self.request_uri);
        if let Some(code) = self.response_status.as_ref().and_then(|s| s.code) {
            let out = f.key("response_code");
            write_i64(out, code);
        }
        f.list("source_ips", &self.source_ips);
        f.str("stage", &self.stage);
        if let Some(u) = &self.user {
            let mut m = f.object("user");
            m.list("groups", &u.groups);
            m.str("uid", &u.uid);
            m.str("username", &u.username);
            m.close();
        }
        f.str("user_agent", &self.user_agent);
        f.str("verb", &self.verb);
        f.close();
        index
    }
}

/// Appends `v` in decimal, without the formatting machinery's allocation.
fn write_i64(out: &mut Vec<u8>, v: i64) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    let mut n = v.unsigned_abs();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[at..]);
}

/// What a webhook body turned out to be, after one pass over it.
enum BodyShape {
    /// An `EventList` (or an object with `items`): its `apiVersion` and its items.
    List {
        api_version: Option<String>,
        items: Vec<Box<RawValue>>,
    },
    /// A JSON array of items.
    Array(Vec<Box<RawValue>>),
    /// A list or an array of more than [`MAX_BODY_ITEMS`] items.
    TooMany,
    /// Anything else: the whole body is one item.
    Single,
}

impl<'de> Deserialize<'de> for BodyShape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(BodyVisitor)
    }
}

struct BodyVisitor;

impl<'de> Visitor<'de> for BodyVisitor {
    type Value = BodyShape;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an audit EventList, an Event or an array of Events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<BodyShape, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while items.len() < MAX_BODY_ITEMS {
            match seq.next_element::<Box<RawValue>>()? {
                Some(item) => items.push(item),
                None => return Ok(BodyShape::Array(items)),
            }
        }
        // Past the cap: the rest is only checked to be JSON (the answer for a body that is
        // not JSON stays 400), nothing of it is kept.
        let mut more = false;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            more = true;
        }
        Ok(if more {
            BodyShape::TooMany
        } else {
            BodyShape::Array(items)
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<BodyShape, A::Error> {
        // Duplicate keys: the last one wins, as in the apiserver's (Go) decoder.
        let mut kind: Option<Box<RawValue>> = None;
        let mut api_version: Option<Box<RawValue>> = None;
        let mut items: Option<Items> = None;
        while let Some(key) = map.next_key::<EnvelopeKey>()? {
            match key {
                EnvelopeKey::Kind => kind = Some(map.next_value()?),
                EnvelopeKey::ApiVersion => api_version = Some(map.next_value()?),
                EnvelopeKey::Items => items = Some(map.next_value()?),
                EnvelopeKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let as_str = |r: &Option<Box<RawValue>>| {
            r.as_ref()
                .and_then(|r| serde_json::from_str::<String>(r.get()).ok())
        };
        let kind_str = as_str(&kind);
        let is_list = match (kind_str.as_deref(), &items) {
            (Some("EventList"), _) => true,
            (None, Some(Items::List(_) | Items::TooMany)) => kind.is_none(),
            _ => false,
        };
        if !is_list {
            return Ok(BodyShape::Single);
        }
        let items = match items {
            Some(Items::List(v)) => v,
            Some(Items::TooMany) => return Ok(BodyShape::TooMany),
            None | Some(Items::Null) => Vec::new(),
            // `"kind":"EventList"` with `items` that is not a list: not something we can split.
            Some(Items::NotAList) => return Ok(BodyShape::Single),
        };
        Ok(BodyShape::List {
            api_version: as_str(&api_version),
            items,
        })
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<BodyShape, E> {
        Ok(BodyShape::Single)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<BodyShape, E> {
        Ok(BodyShape::Single)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<BodyShape, E> {
        Ok(BodyShape::Single)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<BodyShape, E> {
        Ok(BodyShape::Single)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<BodyShape, E> {
        Ok(BodyShape::Single)
    }
    fn visit_unit<E: de::Error>(self) -> Result<BodyShape, E> {
        Ok(BodyShape::Single)
    }
}

/// The envelope keys that matter; compared without allocating.
enum EnvelopeKey {
    Kind,
    ApiVersion,
    Items,
    Other,
}

impl<'de> Deserialize<'de> for EnvelopeKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = EnvelopeKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EnvelopeKey, E> {
                Ok(match v {
                    "kind" => EnvelopeKey::Kind,
                    "apiVersion" => EnvelopeKey::ApiVersion,
                    "items" => EnvelopeKey::Items,
                    _ => EnvelopeKey::Other,
                })
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

/// An envelope's `items`: split into per-item raw values when it is a list.
enum Items {
    List(Vec<Box<RawValue>>),
    TooMany,
    Null,
    NotAList,
}

impl<'de> Deserialize<'de> for Items {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ItemsVisitor)
    }
}

struct ItemsVisitor;

impl<'de> Visitor<'de> for ItemsVisitor {
    type Value = Items;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of items")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Items, A::Error> {
        match BodyVisitor.visit_seq(seq)? {
            BodyShape::Array(items) => Ok(Items::List(items)),
            BodyShape::TooMany => Ok(Items::TooMany),
            // visit_seq returns nothing else.
            _ => Ok(Items::NotAList),
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Items, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Items::NotAList)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Items, E> {
        Ok(Items::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Items, E> {
        Ok(Items::Null)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Items, E> {
        Ok(Items::NotAList)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Items, E> {
        Ok(Items::NotAList)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Items, E> {
        Ok(Items::NotAList)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Items, E> {
        Ok(Items::NotAList)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Items, E> {
        Ok(Items::NotAList)
    }
}

#[cfg(test)]
mod unit {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn write_i64_is_decimal(v in any::<i64>()) {
            let mut out = b"x".to_vec();
            super::write_i64(&mut out, v);
            prop_assert_eq!(out, format!("x{v}").into_bytes());
        }
    }
}
