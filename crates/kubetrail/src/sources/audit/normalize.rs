//! Turning parsed audit events into records (`k8s_audit`), and items that are not audit events
//! into error records, the same way for the file and the webhook sources.

use std::fmt::Write as _;
use std::sync::Arc;

use kubetrail_core::{DedupKey, Original, Record, RecordKind, Timestamp};
use serde_json::Value;
use serde_json::value::RawValue;

use super::nesting;
use super::parse::{AuditItem, ItemError};

/// The dedup scope of audit records. Both audit sources use it, so the same event arriving by
/// file and by webhook (or twice by webhook after an apiserver retry) is kept once.
pub const DEDUP_SCOPE: &str = "audit";
/// [`DEDUP_SCOPE`], shared: a reference count per record instead of an allocation.
static SCOPE: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from(DEDUP_SCOPE));

/// The dedup scope of error records made from items that are not audit events.
pub const ERROR_DEDUP_SCOPE: &str = "audit_error";
/// The `source_kind` field of error records made here.
pub const ERROR_SOURCE_KIND: &str = "audit";

/// A `k8s_audit` record: id and dedup key `{auditID}/{stage}`, time = `stageTimestamp`
/// (else `requestReceivedTimestamp`, else v1beta1 `timestamp`, else now), the normalized
/// fields, and the event's exact bytes as original. `raw_format` (the `format: raw` option)
/// makes the record encode as the original alone.
pub fn normalize(item: AuditItem, source: &Arc<str>, tag: &Arc<str>, raw_format: bool) -> Record {
    let id = item.id;
    // The dedup key leads with the event's own time (the same event always carries the same
    // one): audit events arrive roughly in time order, so new keys land at the right edge of
    // the dedup index instead of at random places, which keeps each commit's page writes few.
    let key = match item.time {
        Some(t) => {
            let mut key = String::with_capacity(21 + id.len());
            let _ = write!(key, "{:020}/", t.unix_nanos());
            key.push_str(&id);
            key
        }
        None => id.clone(),
    };
    Record {
        id,
        time: item.time.unwrap_or_else(Timestamp::now),
        kind: RecordKind::K8sAudit,
        source: source.clone(),
        tag: tag.clone(),
        fields: item.fields,
        original: Some(Original::Raw(item.raw)),
        raw_format,
        dedup: Some(DedupKey {
            scope: SCOPE.clone(),
            key,
            value: String::new(),
        }),
    }
}

/// An `error` record for an item that is JSON but not an audit event: fields `error` (the
/// reason) and `source_kind: "audit"`, the item's exact bytes as original (a JSON string of
/// them when it nests deeper than [`MAX_STORED_DEPTH`], which the reason then says), time =
/// now. Its id (and dedup key) is a hash of the bytes, so an apiserver retry of the same batch
/// does not repeat it. It is never in raw format: without its envelope the reason would be
/// lost.
pub fn error_record(err: ItemError, source: &Arc<str>, tag: &Arc<str>) -> Record {
    let key = format!("error/{:016x}", fnv1a64(err.raw.get().as_bytes()));
    let (raw, as_string) = nesting::bounded(err.raw);
    let reason = if as_string {
        nesting::too_deep(&err.reason)
    } else {
        err.reason
    };
    let mut record = Record::new(
        key.clone(),
        Timestamp::now(),
        RecordKind::Error,
        source.clone(),
        tag.clone(),
    );
    record.fields.insert("error".into(), Value::String(reason));
    record.fields.insert(
        "source_kind".into(),
        Value::String(ERROR_SOURCE_KIND.into()),
    );
    record.original = Some(Original::Raw(raw));
    record.dedup = Some(DedupKey {
        scope: Arc::from(ERROR_DEDUP_SCOPE),
        key,
        value: String::new(),
    });
    record
}

/// An `error` record for input that is not JSON at all (e.g. a truncated log line): like
/// [`error_record`], with the input (lossily decoded as UTF-8) as a JSON string original.
pub fn invalid_input_record(
    input: &[u8],
    reason: &str,
    source: &Arc<str>,
    tag: &Arc<str>,
) -> Record {
    let text = String::from_utf8_lossy(input);
    // A JSON string of valid UTF-8 always serializes; the fallback only keeps this total.
    let raw = serde_json::value::to_raw_value(&text).unwrap_or_else(|_| null_raw());
    error_record(
        ItemError {
            reason: reason.to_string(),
            raw: raw.into(),
        },
        source,
        tag,
    )
}

fn null_raw() -> Box<RawValue> {
    // "null" is valid JSON, so this cannot fail.
    RawValue::from_string("null".to_string()).unwrap_or_else(|_| unreachable!("null is JSON"))
}

/// FNV-1a, 64 bits: a stable (across versions and platforms) hash for error record ids.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
