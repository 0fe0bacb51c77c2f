//! Turns a Kubernetes Event object, in either API view (core/v1 or events.k8s.io/v1), into a
//! record with normalized fields, keeping the object's exact bytes as the original.
//!
//! Only the fields kubetrail needs are parsed (typed serde, unknown fields skipped).

use std::sync::Arc;

use kubetrail_core::fields::{JsonStr, MemberIndex, ObjectWriter};
use kubetrail_core::{DedupKey, Fields, Original, Record, RecordKind, Timestamp};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Why an object could not be turned into a record.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum NormalizeError {
    #[error("not a JSON object of the expected shape: {0}")]
    Shape(String),
    #[error("unexpected kind '{0}' (expected Event)")]
    Kind(String),
    #[error("the Event has no metadata.uid or metadata.resourceVersion")]
    MissingIdentity,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ObjRef<'a> {
    #[serde(borrow)]
    kind: Option<JsonStr<'a>>,
    #[serde(borrow)]
    name: Option<JsonStr<'a>>,
    #[serde(borrow)]
    namespace: Option<JsonStr<'a>>,
    #[serde(borrow)]
    uid: Option<JsonStr<'a>>,
    #[serde(borrow)]
    api_version: Option<JsonStr<'a>>,
    #[serde(borrow)]
    field_path: Option<JsonStr<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Meta<'a> {
    #[serde(borrow)]
    name: Option<JsonStr<'a>>,
    #[serde(borrow)]
    namespace: Option<JsonStr<'a>>,
    #[serde(borrow)]
    uid: Option<JsonStr<'a>>,
    #[serde(borrow)]
    resource_version: Option<JsonStr<'a>>,
    #[serde(borrow)]
    creation_timestamp: Option<JsonStr<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct EventSource<'a> {
    #[serde(borrow)]
    component: Option<JsonStr<'a>>,
    #[serde(borrow)]
    host: Option<JsonStr<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Series<'a> {
    count: Option<i64>,
    #[serde(borrow)]
    last_observed_time: Option<JsonStr<'a>>,
}

/// The fields of both views that kubetrail reads.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct EventObject<'a> {
    #[serde(borrow)]
    kind: Option<JsonStr<'a>>,
    #[serde(borrow)]
    api_version: Option<JsonStr<'a>>,
    #[serde(borrow, default)]
    metadata: Meta<'a>,
    // core/v1
    #[serde(borrow)]
    involved_object: Option<ObjRef<'a>>,
    #[serde(borrow)]
    message: Option<JsonStr<'a>>,
    #[serde(borrow)]
    source: Option<EventSource<'a>>,
    #[serde(borrow)]
    first_timestamp: Option<JsonStr<'a>>,
    #[serde(borrow)]
    last_timestamp: Option<JsonStr<'a>>,
    count: Option<i64>,
    #[serde(borrow)]
    reporting_component: Option<JsonStr<'a>>,
    // both
    #[serde(borrow)]
    reason: Option<JsonStr<'a>>,
    #[serde(borrow, rename = "type")]
    type_: Option<JsonStr<'a>>,
    #[serde(borrow)]
    action: Option<JsonStr<'a>>,
    #[serde(borrow)]
    event_time: Option<JsonStr<'a>>,
    #[serde(borrow)]
    series: Option<Series<'a>>,
    #[serde(borrow)]
    reporting_instance: Option<JsonStr<'a>>,
    // events.k8s.io/v1
    #[serde(borrow)]
    regarding: Option<ObjRef<'a>>,
    #[serde(borrow)]
    note: Option<JsonStr<'a>>,
    #[serde(borrow)]
    reporting_controller: Option<JsonStr<'a>>,
    #[serde(borrow)]
    deprecated_source: Option<EventSource<'a>>,
    #[serde(borrow)]
    deprecated_first_timestamp: Option<JsonStr<'a>>,
    #[serde(borrow)]
    deprecated_last_timestamp: Option<JsonStr<'a>>,
    deprecated_count: Option<i64>,
}

/// Which API view the objects come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventsApi {
    CoreV1,
    EventsV1,
}

impl EventsApi {
    pub fn as_str(self) -> &'static str {
        match self {
            EventsApi::CoreV1 => "core/v1",
            EventsApi::EventsV1 => "events.k8s.io/v1",
        }
    }
}

/// How a record came to be seen: in a list, or as a watch change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    Listed,
    Added,
    Modified,
    Deleted,
}

impl Observed {
    fn as_str(self) -> &'static str {
        match self {
            Observed::Listed => "LISTED",
            Observed::Added => "ADDED",
            Observed::Modified => "MODIFIED",
            Observed::Deleted => "DELETED",
        }
    }
}

/// Dedup policy for Event occurrences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Updates {
    /// Every new resourceVersion of an Event is a new occurrence (the default).
    All,
    /// Only the first sighting of each uid (Fluent Bit's behaviour).
    First,
}

/// What the source passes to [`normalize`] besides the object.
pub struct NormalizeContext<'a> {
    pub api: EventsApi,
    pub source: &'a Arc<str>,
    pub tag: &'a Arc<str>,
    pub dedup_scope: &'a Arc<str>,
    pub raw_format: bool,
    pub updates: Updates,
}

fn non_empty<'a>(v: &'a Option<JsonStr<'a>>) -> Option<&'a str> {
    v.as_deref().filter(|s| !s.is_empty())
}

fn first_of<'a>(candidates: &[&'a Option<JsonStr<'a>>]) -> Option<&'a str> {
    candidates.iter().find_map(|c| non_empty(c))
}

/// Builds the record for one Event object (`raw` = the object's exact bytes).
pub fn normalize(
    raw: Box<RawValue>,
    observed: Observed,
    cx: &NormalizeContext<'_>,
) -> Result<Record, NormalizeError> {
    let ev: EventObject<'_> =
        serde_json::from_str(raw.get()).map_err(|e| NormalizeError::Shape(e.to_string()))?;
    if let Some(kind) = non_empty(&ev.kind)
        && kind != "Event"
    {
        return Err(NormalizeError::Kind(kind.to_string()));
    }
    let (Some(uid), Some(rv)) = (
        non_empty(&ev.metadata.uid),
        non_empty(&ev.metadata.resource_version),
    ) else {
        return Err(NormalizeError::MissingIdentity);
    };
    let empty = ObjRef::default();
    let obj = ev
        .involved_object
        .as_ref()
        .or(ev.regarding.as_ref())
        .unwrap_or(&empty);
    let src = ev.source.as_ref().or(ev.deprecated_source.as_ref());
    let no_src = EventSource::default();
    let src = src.unwrap_or(&no_src);
    let series_last = ev
        .series
        .as_ref()
        .and_then(|s| non_empty(&s.last_observed_time));
    let first_time = first_of(&[
        &ev.first_timestamp,
        &ev.deprecated_first_timestamp,
        &ev.event_time,
        &ev.metadata.creation_timestamp,
    ]);
    let last_time = series_last.or_else(|| {
        first_of(&[
            &ev.last_timestamp,
            &ev.deprecated_last_timestamp,
            &ev.event_time,
            &ev.first_timestamp,
            &ev.deprecated_first_timestamp,
            &ev.metadata.creation_timestamp,
        ])
    });
    let count = ev
        .series
        .as_ref()
        .and_then(|s| s.count)
        .or(ev.count)
        .or(ev.deprecated_count)
        .unwrap_or(1);

    // Written as JSON text in key order (see kubetrail_core::Fields).
    let mut out = Vec::with_capacity(raw.get().len() / 2 + 256);
    let mut index = MemberIndex::new();
    let mut f = ObjectWriter::open_indexed(&mut out, &mut index);
    f.str_opt("action", non_empty(&ev.action));
    f.str_opt("api", Some(cx.api.as_str()));
    f.key("count")
        .extend_from_slice(count.to_string().as_bytes());
    f.str_opt("first_time", first_time);
    {
        let mut io = f.object("involved_object");
        io.str_opt("api_version", non_empty(&obj.api_version));
        io.str_opt("field_path", non_empty(&obj.field_path));
        io.str_opt("kind", non_empty(&obj.kind));
        io.str_opt("name", non_empty(&obj.name));
        io.str_opt("namespace", non_empty(&obj.namespace));
        io.str_opt("uid", non_empty(&obj.uid));
        io.close();
    }
    f.str_opt("last_time", last_time);
    f.str_opt("message", first_of(&[&ev.message, &ev.note]));
    f.str_opt("name", non_empty(&ev.metadata.name));
    f.str_opt("namespace", non_empty(&ev.metadata.namespace));
    f.str_opt("object_api_version", non_empty(&ev.api_version));
    f.str_opt("observed", Some(observed.as_str()));
    f.str_opt("reason", non_empty(&ev.reason));
    f.str_opt(
        "reporting_controller",
        first_of(&[
            &ev.reporting_controller,
            &ev.reporting_component,
            &src.component,
        ]),
    );
    f.str_opt(
        "reporting_instance",
        first_of(&[&ev.reporting_instance, &src.host]),
    );
    f.str_opt("resource_version", Some(rv));
    f.str_opt("type", non_empty(&ev.type_));
    f.str_opt("uid", Some(uid));
    f.close();
    // Only complete JSON of valid strings was written.
    let fields = Fields::from_encoded_indexed(String::from_utf8(out).unwrap_or_default(), index);

    let time = last_time
        .and_then(Timestamp::parse_rfc3339)
        .unwrap_or_else(Timestamp::now);
    let (key, value) = match cx.updates {
        Updates::All => (uid.to_string(), rv.to_string()),
        Updates::First => (uid.to_string(), String::new()),
    };
    let id = format!("{uid}:{rv}");
    let mut record = Record::new(
        id,
        time,
        RecordKind::K8sEvent,
        cx.source.clone(),
        cx.tag.clone(),
    );
    record.fields = fields;
    record.raw_format = cx.raw_format;
    record.dedup = Some(DedupKey {
        scope: cx.dedup_scope.clone(),
        key,
        value,
    });
    drop(ev);
    record.original = Some(Original::Raw(raw.into()));
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cx<'a>(api: EventsApi, s: &'a Arc<str>) -> NormalizeContext<'a> {
        NormalizeContext {
            api,
            source: s,
            tag: s,
            dedup_scope: s,
            raw_format: false,
            updates: Updates::All,
        }
    }

    const CORE: &str = r#"{"kind":"Event","apiVersion":"v1","metadata":{"name":"fx-pod-0.18ebbf","namespace":"fx","uid":"u-1","resourceVersion":"305","creationTimestamp":"2026-11-27T00:29:51Z"},"involvedObject":{"kind":"Pod","namespace":"fx","name":"fx-pod-0","uid":"p-1","apiVersion":"v1"},"reason":"BackOff","message":"Back-off pulling image \"nginx:nope\"","source":{"component":"kubelet","host":"node-1"},"firstTimestamp":"2026-11-27T00:29:51Z","lastTimestamp":"2026-11-27T00:30:51Z","count":3,"type":"Warning","eventTime":null,"reportingComponent":"","reportingInstance":""}"#;
    const NEW: &str = r#"{"kind":"Event","apiVersion":"events.k8s.io/v1","metadata":{"name":"x","namespace":"fx","uid":"u-2","resourceVersion":"306"},"eventTime":"2026-11-27T00:31:51.810715Z","series":{"count":4,"lastObservedTime":"2026-11-27T00:35:00.000001Z"},"reportingController":"fx-controller","reportingInstance":"fx-controller-1","action":"Reconcile","reason":"Synced","regarding":{"kind":"Deployment","namespace":"fx","name":"fx-web"},"note":"synced","type":"Normal","deprecatedSource":{},"deprecatedFirstTimestamp":null,"deprecatedLastTimestamp":null}"#;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
    }

    /// Fields are written as JSON text; decoded and edited they must encode the same bytes.
    #[test]
    fn encoded_fields_encode_like_the_decoded_map() {
        let s: Arc<str> = Arc::from("k");
        for (obj, api) in [(CORE, EventsApi::CoreV1), (NEW, EventsApi::EventsV1)] {
            let r = normalize(raw(obj), Observed::Added, &cx(api, &s)).unwrap();
            assert!(r.fields.encoded_members().is_some());
            // Every member is found through the writer's index, as the decoded map has it.
            for (k, v) in r.fields.iter() {
                let m = r
                    .fields
                    .get_member(k)
                    .and_then(|m| m.read::<serde_json::Value>());
                assert_eq!(m.as_ref(), Some(v), "{k}");
            }
            let mut edited = r.clone();
            let _ = edited.fields.remove("nothing");
            assert!(edited.fields.encoded_members().is_none());
            assert_eq!(
                String::from_utf8(r.encode()).unwrap(),
                String::from_utf8(edited.encode()).unwrap()
            );
        }
    }

    #[test]
    fn core_v1_legacy_event() {
        let s: Arc<str> = Arc::from("k");
        let r = normalize(raw(CORE), Observed::Modified, &cx(EventsApi::CoreV1, &s)).unwrap();
        assert_eq!(r.id, "u-1:305");
        assert_eq!(r.fields["reason"], "BackOff");
        assert_eq!(r.fields["type"], "Warning");
        assert_eq!(r.fields["count"], 3);
        assert_eq!(r.fields["involved_object"]["kind"], "Pod");
        assert_eq!(r.fields["reporting_controller"], "kubelet");
        assert_eq!(r.fields["reporting_instance"], "node-1");
        assert_eq!(r.fields["first_time"], "2026-11-27T00:29:51Z");
        assert_eq!(r.fields["last_time"], "2026-11-27T00:30:51Z");
        assert_eq!(r.fields["observed"], "MODIFIED");
        assert_eq!(r.time.to_rfc3339(), "2026-11-27T00:30:51Z");
        let d = r.dedup.as_ref().unwrap();
        assert_eq!((d.key.as_str(), d.value.as_str()), ("u-1", "305"));
        // The original is passed through byte for byte.
        let line = String::from_utf8(r.encode()).unwrap();
        assert!(line.ends_with(&format!(",\"object\":{CORE}}}")), "{line}");
    }

    #[test]
    fn events_k8s_io_series_event() {
        let s: Arc<str> = Arc::from("k");
        let r = normalize(raw(NEW), Observed::Added, &cx(EventsApi::EventsV1, &s)).unwrap();
        assert_eq!(r.fields["count"], 4);
        assert_eq!(r.fields["message"], "synced");
        assert_eq!(r.fields["involved_object"]["name"], "fx-web");
        assert_eq!(r.fields["reporting_controller"], "fx-controller");
        assert_eq!(r.fields["first_time"], "2026-11-27T00:31:51.810715Z");
        assert_eq!(r.fields["last_time"], "2026-11-27T00:35:00.000001Z");
        assert_eq!(r.fields["api"], "events.k8s.io/v1");
    }

    #[test]
    fn updates_first_dedups_by_uid_only() {
        let s: Arc<str> = Arc::from("k");
        let mut c = cx(EventsApi::CoreV1, &s);
        c.updates = Updates::First;
        let r = normalize(raw(CORE), Observed::Added, &c).unwrap();
        assert_eq!(r.dedup.unwrap().value, "");
    }

    #[test]
    fn rejects_other_kinds_and_missing_identity() {
        let s: Arc<str> = Arc::from("k");
        let c = cx(EventsApi::CoreV1, &s);
        let cm = r#"{"kind":"ConfigMap","metadata":{"uid":"a","resourceVersion":"1"}}"#;
        assert_eq!(
            normalize(raw(cm), Observed::Added, &c).unwrap_err(),
            NormalizeError::Kind("ConfigMap".into())
        );
        let no_uid = r#"{"kind":"Event","metadata":{"resourceVersion":"1"}}"#;
        assert_eq!(
            normalize(raw(no_uid), Observed::Added, &c).unwrap_err(),
            NormalizeError::MissingIdentity
        );
        assert!(matches!(
            normalize(raw("[1,2]"), Observed::Added, &c),
            Err(NormalizeError::Shape(_))
        ));
        assert!(matches!(
            normalize(raw(r#"{"metadata":5}"#), Observed::Added, &c),
            Err(NormalizeError::Shape(_))
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_json_never_panics(s in "\\{(\"[a-zA-Z]{1,8}\":(\"[a-z0-9:.-]{0,10}\"|[0-9]{1,4}|null|\\{\\}|\\[\\]),?){0,6}\\}") {
            let sc: Arc<str> = Arc::from("k");
            if let Ok(r) = RawValue::from_string(s.clone()) {
                let _ = normalize(r, Observed::Listed, &cx(EventsApi::CoreV1, &sc));
            }
        }
    }
}
