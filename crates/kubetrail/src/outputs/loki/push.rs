//! Builds a Loki push request body from a batch:
//! `{"streams":[{"stream":{labels},"values":[["<unix ns>","<line>",{metadata}],...]}]}`.
//! Records are grouped by their label set; within a stream the values are in time order
//! (records with equal times keep their queue order). Streams are in label-set order, so the
//! same batch always gives the same body.

use std::collections::BTreeMap;

use kubetrail_core::Timestamp;
use kubetrail_state::QueueItem;
use serde_json::Value;

use super::config::{LineFormat, LokiConfig, Pair, ValueSource};
use crate::outputs::http_common::{single_line, value_time};

/// The longest label value sent, in bytes (Loki refuses values over 2048 by default).
pub const MAX_LABEL_VALUE: usize = 1024;
/// The label set used when a record yields none (Loki refuses streams without labels).
const FALLBACK_LABEL: (&str, &str) = ("job", "kubetrail");

type Labels = Vec<(String, String)>;

struct Entry {
    nanos: i64,
    line: String,
    metadata: Vec<(String, String)>,
}

/// A label value: strings as they are, other scalars as JSON text, one line, at most
/// [`MAX_LABEL_VALUE`] bytes. `None` for null and empty values.
pub fn label_value(v: &Value) -> Option<String> {
    let s = match v {
        Value::Null => return None,
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.len() > MAX_LABEL_VALUE {
        let mut cut = MAX_LABEL_VALUE;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    let s = s.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn resolve(pairs: &[Pair], record: &Value, sanitize: bool) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(pairs.len());
    for p in pairs {
        let value = match &p.source {
            ValueSource::Static(s) => Some(s.clone()),
            ValueSource::Field(paths) => paths.iter().find_map(|path| {
                let v = path.lookup(record)?;
                if sanitize {
                    label_value(v)
                } else {
                    match v {
                        Value::Null => None,
                        Value::String(s) => Some(s.clone()),
                        other => Some(other.to_string()),
                    }
                }
            }),
        };
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            out.push((p.name.clone(), v));
        }
    }
    out
}

/// `key=value` for each top-level key; strings are quoted (JSON style) when they hold spaces,
/// quotes, `=` or nothing; other values are compact JSON.
pub fn key_value_line(v: &Value) -> String {
    let Value::Object(m) = v else {
        return v.to_string();
    };
    let mut out = String::new();
    for (k, v) in m {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(k);
        out.push('=');
        match v {
            Value::String(s)
                if !s.is_empty()
                    && !s
                        .chars()
                        .any(|c| c.is_whitespace() || c == '"' || c == '=' || c.is_control()) =>
            {
                out.push_str(s)
            }
            other => out.push_str(&other.to_string()),
        }
    }
    out
}

fn line_of(config: &LokiConfig, data: &[u8], record: Option<&mut Value>) -> String {
    match record {
        Some(v) if config.line_format == LineFormat::KeyValue || !config.remove_keys.is_empty() => {
            for k in &config.remove_keys {
                k.remove(v);
            }
            match config.line_format {
                LineFormat::Json => v.to_string(),
                LineFormat::KeyValue => key_value_line(v),
            }
        }
        // The record as stored, unless it spans lines.
        _ => String::from_utf8_lossy(&single_line(data)).into_owned(),
    }
}

/// The push body for `batch`. Records without a time get `now`.
pub fn push_body(config: &LokiConfig, batch: &[QueueItem], now: Timestamp) -> Vec<u8> {
    let mut streams: BTreeMap<Labels, Vec<Entry>> = BTreeMap::new();
    for item in batch {
        let mut record = serde_json::from_slice::<Value>(&item.data).ok();
        let (mut labels, metadata, nanos) = match &record {
            Some(v) => (
                resolve(&config.labels, v, true),
                resolve(&config.structured_metadata, v, false),
                value_time(v).unwrap_or(now).unix_nanos(),
            ),
            None => (
                resolve(&config.labels, &Value::Null, true),
                Vec::new(),
                now.unix_nanos(),
            ),
        };
        if labels.is_empty() {
            labels.push((FALLBACK_LABEL.0.to_string(), FALLBACK_LABEL.1.to_string()));
        }
        labels.sort();
        let line = line_of(config, &item.data, record.as_mut());
        streams.entry(labels).or_default().push(Entry {
            nanos,
            line,
            metadata,
        });
    }
    let mut out = Vec::with_capacity(batch.iter().map(|i| i.data.len() + 64).sum::<usize>() + 64);
    out.extend_from_slice(b"{\"streams\":[");
    for (n, (labels, mut entries)) in streams.into_iter().enumerate() {
        // Stable: equal times keep the queue order.
        entries.sort_by_key(|e| e.nanos);
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"stream\":{");
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(&mut out, k);
            out.push(b':');
            write_str(&mut out, v);
        }
        out.extend_from_slice(b"},\"values\":[");
        for (i, e) in entries.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"[\"");
            out.extend_from_slice(e.nanos.to_string().as_bytes());
            out.extend_from_slice(b"\",");
            write_str(&mut out, &e.line);
            if !e.metadata.is_empty() {
                out.extend_from_slice(b",{");
                for (j, (k, v)) in e.metadata.iter().enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    write_str(&mut out, k);
                    out.push(b':');
                    write_str(&mut out, v);
                }
                out.push(b'}');
            }
            out.push(b']');
        }
        out.extend_from_slice(b"]}");
    }
    out.extend_from_slice(b"]}");
    out
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // Serializing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}
