//! The bulk API's wire format: the NDJSON request (a `create` action line with `_index` and
//! `_id` = the record id, then the document) and the per-item answer.
//!
//! `create` rather than `index`: a document sent again after a lost answer meets its own
//! `_id` and is refused with 409, which means "already there", so retries never duplicate and
//! never overwrite. (It is also the only action data streams accept.)

use std::borrow::Cow;
use std::collections::HashMap;

use kubetrail_core::Timestamp;
use kubetrail_state::QueueItem;
use serde_json::Value;

use super::config::EsConfig;
use crate::outputs::http_common::{is_retryable_status, single_line, top_level, top_level_time};

/// One document ready to send.
#[derive(Debug)]
pub struct Doc<'a> {
    pub index: String,
    pub body: Cow<'a, [u8]>,
}

/// Replaces `.` with `_` in every object key, at every depth.
pub fn replace_dots(v: &mut Value) {
    match v {
        Value::Object(m) => {
            let old = std::mem::take(m);
            for (k, mut child) in old {
                replace_dots(&mut child);
                m.insert(k.replace('.', "_"), child);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(replace_dots),
        _ => {}
    }
}

/// The index and the document of one record: its time decides the index; the time key is
/// added when missing; the document is made one line. Records without a time use `now`.
pub fn prepare<'a>(config: &EsConfig, data: &'a [u8], now: Timestamp) -> Doc<'a> {
    let Some(top) = top_level(data) else {
        // Not a JSON object: sent as it is, for Elasticsearch to refuse with a reason.
        return Doc {
            index: config.index.render(now),
            body: single_line(data),
        };
    };
    let time = top_level_time(&top).unwrap_or(now);
    let index = config.index.render(time);
    let add_time = config.time_key.as_deref().filter(|k| !top.contains_key(*k));
    if config.replace_dots
        && let Ok(mut v) = serde_json::from_slice::<Value>(data)
    {
        replace_dots(&mut v);
        if let (Some(k), Value::Object(m)) = (add_time, &mut v) {
            m.entry(k.to_string())
                .or_insert_with(|| Value::String(time.to_rfc3339()));
        }
        return Doc {
            index,
            body: Cow::Owned(serde_json::to_vec(&v).unwrap_or_else(|_| data.to_vec())),
        };
    }
    let line = single_line(data);
    let Some(key) = add_time else {
        return Doc { index, body: line };
    };
    // Splice the field in after the opening brace instead of re-encoding the record.
    let start = line
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(0);
    let rest = &line[start + 1..];
    let empty = rest.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
    let mut out = Vec::with_capacity(line.len() + key.len() + 40);
    out.push(b'{');
    write_str(&mut out, key);
    out.push(b':');
    write_str(&mut out, &time.to_rfc3339());
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    Doc {
        index,
        body: Cow::Owned(out),
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // Serializing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// The bulk request body for the items of `batch` at `indexes`.
pub fn bulk_body(
    config: &EsConfig,
    batch: &[QueueItem],
    indexes: &[usize],
    now: Timestamp,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(indexes.iter().map(|&i| batch[i].data.len() + 128).sum());
    for &i in indexes {
        let item = &batch[i];
        let doc = prepare(config, &item.data, now);
        out.extend_from_slice(b"{\"create\":{\"_index\":");
        write_str(&mut out, &doc.index);
        if let Some(t) = &config.type_name {
            out.extend_from_slice(b",\"_type\":");
            write_str(&mut out, t);
        }
        out.extend_from_slice(b",\"_id\":");
        write_str(&mut out, &item.id);
        out.extend_from_slice(b"}}\n");
        out.extend_from_slice(&doc.body);
        out.push(b'\n');
    }
    out
}

/// What became of one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Indexed now (2xx) or before (409 on `create`).
    Indexed,
    /// Worth sending again (429, 5xx): the reason.
    Retry(String),
    /// Refused for good (a mapping error, say): the reason.
    Refused(String),
}

#[derive(serde::Deserialize)]
struct BulkAnswer {
    #[serde(default)]
    errors: bool,
    #[serde(default)]
    items: Vec<HashMap<String, ItemAnswer>>,
}

#[derive(serde::Deserialize)]
struct ItemAnswer {
    status: u16,
    #[serde(default)]
    error: Option<Value>,
}

fn reason(status: u16, error: Option<&Value>) -> String {
    let Some(e) = error else {
        return format!("status {status}");
    };
    match e {
        Value::Object(_) => {
            let kind = e.get("type").and_then(Value::as_str).unwrap_or("error");
            let why = e.get("reason").and_then(Value::as_str).unwrap_or("");
            let mut s = format!("status {status} {kind}: {why}");
            if let Some(c) = e.pointer("/caused_by/reason").and_then(Value::as_str) {
                s.push_str(&format!(" (caused by: {c})"));
            }
            s
        }
        Value::String(s) => format!("status {status}: {s}"),
        other => format!("status {status}: {other}"),
    }
}

/// Reads a 2xx bulk answer for `sent` documents: `None` when every one was indexed, else each
/// one's fate in request order. An answer that cannot be matched to the request is an error.
pub fn read_answer(body: &[u8], sent: usize) -> Result<Option<Vec<Fate>>, String> {
    let a: BulkAnswer =
        serde_json::from_slice(body).map_err(|e| format!("unreadable bulk answer: {e}"))?;
    if !a.errors {
        return Ok(None);
    }
    if a.items.len() != sent {
        return Err(format!(
            "the bulk answer has {} items for {sent} documents",
            a.items.len()
        ));
    }
    let mut fates = Vec::with_capacity(sent);
    for item in a.items {
        // One action per item: `{"create": {...}}`.
        let Some(r) = item.into_values().next() else {
            return Err("an item of the bulk answer is empty".into());
        };
        fates.push(match r.status {
            200..=299 | 409 => Fate::Indexed,
            s if is_retryable_status(s) => Fate::Retry(reason(s, r.error.as_ref())),
            s => Fate::Refused(reason(s, r.error.as_ref())),
        });
    }
    Ok(Some(fates))
}
