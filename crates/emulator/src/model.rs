//! The stored Event: one model that both API views render, how new events and repeats are
//! built from an [`EventSpec`](crate::EventSpec), and how a recorded core/v1 JSON object is
//! imported.
//!
//! The parts that never change across versions of one event live in a shared [`EventBody`];
//! a version ([`EventObj`]) only adds what a repeat changes, so the history stays small.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::macros::format_description;

/// A shared immutable string.
pub(crate) type Str = Arc<str>;

/// `ObjectReference`; empty fields are omitted like Go's `omitempty`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct ObjectRef {
    #[serde(default, skip_serializing_if = "str_empty")]
    pub kind: Str,
    #[serde(default, skip_serializing_if = "str_empty")]
    pub namespace: Str,
    #[serde(default, skip_serializing_if = "str_empty")]
    pub name: Str,
    #[serde(default, skip_serializing_if = "str_empty")]
    pub uid: Str,
    #[serde(rename = "apiVersion", default, skip_serializing_if = "str_empty")]
    pub api_version: Str,
    #[serde(rename = "resourceVersion", default, skip_serializing_if = "str_empty")]
    pub resource_version: Str,
    #[serde(rename = "fieldPath", default, skip_serializing_if = "str_empty")]
    pub field_path: Str,
}

/// `EventSource`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Source {
    #[serde(default, skip_serializing_if = "str_empty")]
    pub component: Str,
    #[serde(default, skip_serializing_if = "str_empty")]
    pub host: Str,
}

/// `EventSeries` (same JSON shape in both views while count > 0).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Series {
    #[serde(default)]
    pub count: i32,
    #[serde(rename = "lastObservedTime")]
    pub last_observed_time: Str,
}

/// `ManagedFieldsEntry`; `fieldsV1` is kept as raw JSON so imported bytes survive unchanged.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ManagedField {
    #[serde(default, skip_serializing_if = "str_empty")]
    pub manager: Str,
    #[serde(default, skip_serializing_if = "str_empty")]
    pub operation: Str,
    #[serde(rename = "apiVersion", default, skip_serializing_if = "str_empty")]
    pub api_version: Str,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Str>,
    #[serde(rename = "fieldsType", default, skip_serializing_if = "str_empty")]
    pub fields_type: Str,
    #[serde(rename = "fieldsV1", default, skip_serializing_if = "Option::is_none")]
    pub fields_v1: Option<Arc<Box<RawValue>>>,
    #[serde(default, skip_serializing_if = "str_empty")]
    pub subresource: Str,
}

/// What stays the same across every version of one event.
#[derive(Debug)]
pub(crate) struct EventBody {
    /// `<namespace>/<name>`: the etcd key relative to `/registry/events/`.
    pub key: Str,
    pub name: Str,
    pub namespace: Str,
    pub uid: Str,
    pub creation_timestamp: Str,
    /// Sorted by key (Go marshals maps in key order).
    pub labels: Vec<(Str, Str)>,
    pub annotations: Vec<(Str, Str)>,
    pub involved: ObjectRef,
    pub reason: Str,
    pub message: Str,
    pub source: Source,
    pub first_timestamp: Option<Str>,
    pub type_: Str,
    pub event_time: Option<Str>,
    pub action: Str,
    pub related: Option<ObjectRef>,
    pub reporting_component: Str,
    pub reporting_instance: Str,
    /// managedFields were computed here (not imported), so a repeat may recompute them.
    pub generated_fields: bool,
}

/// One version of an event as stored at `rv`.
#[derive(Clone, Debug)]
pub(crate) struct EventObj {
    pub body: Arc<EventBody>,
    pub rv: u64,
    pub count: i32,
    pub last_timestamp: Option<Str>,
    pub series: Option<Series>,
    pub managed_fields: Arc<[ManagedField]>,
}

impl EventObj {
    /// The same version re-stamped with another resourceVersion (DELETED frames carry the
    /// deletion revision).
    pub fn with_rv(&self, rv: u64) -> EventObj {
        EventObj { rv, ..self.clone() }
    }

    /// A repeat of this event observed at `now`: legacy events count, new-style ones grow a
    /// series, like the two client-go recorders.
    pub fn bumped(&self, now: OffsetDateTime) -> EventObj {
        let mut next = self.clone();
        let legacy = self.body.event_time.is_none();
        let series_appeared = !legacy && self.series.is_none();
        if legacy {
            next.count = self.count.saturating_add(1).max(2);
            next.last_timestamp = Some(format_time(now));
        } else {
            let count = self
                .series
                .as_ref()
                .map_or(2, |s| s.count.saturating_add(1));
            next.series = Some(Series {
                count,
                last_observed_time: format_micro(now),
            });
        }
        let stamp = format_time(now);
        let mut fields: Vec<ManagedField> = self.managed_fields.to_vec();
        if let Some(last) = fields.last_mut() {
            last.time = Some(stamp);
            if series_appeared && self.body.generated_fields {
                last.fields_v1 = Some(fields_v1(&self.body, true));
            }
        }
        next.managed_fields = fields.into();
        next
    }
}

/// serde helper: Go `omitempty` for strings.
pub(crate) fn str_empty(s: &Str) -> bool {
    s.is_empty()
}

const TIME_FMT: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
const MICRO_FMT: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// `metav1.Time` (RFC 3339, seconds).
pub(crate) fn format_time(t: OffsetDateTime) -> Str {
    // Formatting a UTC OffsetDateTime with a fixed description cannot fail.
    t.format(TIME_FMT).unwrap_or_default().into()
}

/// `metav1.MicroTime` (six fractional digits).
pub(crate) fn format_micro(t: OffsetDateTime) -> Str {
    t.format(MICRO_FMT).unwrap_or_default().into()
}

/// A random RFC 4122 version-4 UUID.
pub(crate) fn new_uid() -> String {
    uid_from_bits(fastrand::u128(..))
}

/// A version-4 UUID made from the given bits (deterministic when the bits are).
pub(crate) fn uid_from_bits(bits: u128) -> String {
    let b = (bits & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let h = format!("{b:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Kinds whose objects live outside namespaces (their references carry no namespace).
fn cluster_scoped(kind: &str) -> bool {
    matches!(
        kind,
        "Node"
            | "Namespace"
            | "PersistentVolume"
            | "ClusterRole"
            | "ClusterRoleBinding"
            | "StorageClass"
            | "CustomResourceDefinition"
            | "PriorityClass"
    )
}

fn api_version_for(kind: &str) -> &'static str {
    match kind {
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "ControllerRevision" => {
            "apps/v1"
        }
        "Job" | "CronJob" => "batch/v1",
        "HorizontalPodAutoscaler" => "autoscaling/v2",
        "Ingress" | "NetworkPolicy" => "networking.k8s.io/v1",
        "Lease" => "coordination.k8s.io/v1",
        _ => "v1",
    }
}

/// The field manager a real writer of this component would show up as.
fn manager_for(component: &str) -> &str {
    match component {
        "kubelet" => "kubelet",
        "default-scheduler" => "kube-scheduler",
        c if c.ends_with("-controller") => "kube-controller-manager",
        "" => "kubetrail-emulator",
        c => c,
    }
}

/// The `action` a new-style recorder would attach to a reason.
fn action_for(reason: &str) -> &'static str {
    match reason {
        "Scheduled" | "FailedScheduling" => "Scheduling",
        "Pulling" | "Pulled" | "Failed" | "ErrImagePull" | "ImagePullBackOff" => "Pulling",
        "BackOff" => "Backoff",
        "Created" | "Started" | "Killing" => "Running",
        "ScalingReplicaSet" => "Scale",
        "SuccessfulCreate" | "FailedCreate" => "Create",
        "FailedMount" => "MountVolume",
        _ => "Update",
    }
}

/// A stable uid for an involved object, so all events about it agree.
fn involved_uid(kind: &str, namespace: &str, name: &str) -> Str {
    // FNV-1a, twice with different seeds, gives 128 stable bits without extra dependencies.
    fn fnv(seed: u64, parts: &[&str]) -> u64 {
        let mut h = seed;
        for p in parts {
            for b in p.bytes().chain(std::iter::once(0)) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x100_0000_01b3);
            }
        }
        h
    }
    let parts = [kind, namespace, name];
    let bits = (u128::from(fnv(0xcbf2_9ce4_8422_2325, &parts)) << 64)
        | u128::from(fnv(0x8422_2325_cbf2_9ce4, &parts));
    uid_from_bits(bits).into()
}

/// The fieldsV1 a server computes for a freshly written event of this shape.
pub(crate) fn fields_v1(body: &EventBody, has_series: bool) -> Arc<Box<RawValue>> {
    let mut parts: Vec<String> = Vec::new();
    let labels = if body.labels.is_empty() {
        None
    } else {
        let mut s = String::from("\"f:metadata\":{\"f:labels\":{\".\":{}");
        for (k, _) in &body.labels {
            s.push_str(",\"f:");
            s.push_str(&json_escape_inner(k));
            s.push_str("\":{}");
        }
        s.push_str("}}");
        Some(s)
    };
    let f = |name: &str| format!("\"f:{name}\":{{}}");
    if body.event_time.is_none() {
        // Written through core/v1 by the legacy recorder.
        parts.push(f("count"));
        parts.push(f("firstTimestamp"));
        parts.push(f("involvedObject"));
        parts.push(f("lastTimestamp"));
        if !body.message.is_empty() {
            parts.push(f("message"));
        }
        parts.extend(labels);
        if !body.reason.is_empty() {
            parts.push(f("reason"));
        }
        if !body.reporting_component.is_empty() {
            parts.push(f("reportingComponent"));
        }
        if !body.reporting_instance.is_empty() {
            parts.push(f("reportingInstance"));
        }
        let mut src = Vec::new();
        if !body.source.component.is_empty() {
            src.push(f("component"));
        }
        if !body.source.host.is_empty() {
            src.push(f("host"));
        }
        if !src.is_empty() {
            parts.push(format!("\"f:source\":{{{}}}", src.join(",")));
        }
        if !body.type_.is_empty() {
            parts.push(f("type"));
        }
    } else {
        // Written through events.k8s.io/v1 by the new recorder.
        if !body.action.is_empty() {
            parts.push(f("action"));
        }
        parts.push(f("eventTime"));
        parts.extend(labels);
        if !body.message.is_empty() {
            parts.push(f("note"));
        }
        if !body.reason.is_empty() {
            parts.push(f("reason"));
        }
        parts.push(f("regarding"));
        if body.related.is_some() {
            parts.push(f("related"));
        }
        if !body.reporting_component.is_empty() {
            parts.push(f("reportingController"));
        }
        if !body.reporting_instance.is_empty() {
            parts.push(f("reportingInstance"));
        }
        if has_series {
            parts.push("\"f:series\":{\".\":{},\"f:count\":{},\"f:lastObservedTime\":{}}".into());
        }
        if !body.type_.is_empty() {
            parts.push(f("type"));
        }
    }
    let text = format!("{{{}}}", parts.join(","));
    // The text is assembled from fixed fragments and escaped keys, so it is valid JSON.
    Arc::new(RawValue::from_string(text).unwrap_or_else(|_| empty_raw()))
}

fn empty_raw() -> Box<RawValue> {
    // "{}" is valid JSON; this cannot fail.
    RawValue::from_string("{}".to_string()).unwrap_or_else(|_| unreachable!("{{}} is valid JSON"))
}

/// A JSON string's contents (without quotes), escaped.
fn json_escape_inner(s: &str) -> String {
    // Serializing a &str always yields at least the two quotes.
    let quoted = serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string());
    quoted[1..quoted.len() - 1].to_string()
}

/// Everything needed to build a new event besides the resourceVersion.
pub(crate) struct NewEvent {
    pub body: Arc<EventBody>,
    pub count: i32,
    pub last_timestamp: Option<Str>,
    pub series: Option<Series>,
    pub managed_fields: Arc<[ManagedField]>,
}

impl NewEvent {
    pub fn at(self, rv: u64) -> EventObj {
        EventObj {
            body: self.body,
            rv,
            count: self.count,
            last_timestamp: self.last_timestamp,
            series: self.series,
            managed_fields: self.managed_fields,
        }
    }

    /// Builds an event from a spec, as the matching client-go recorder would have written it.
    pub fn from_spec(
        spec: crate::EventSpec,
        name: String,
        uid: String,
        now: OffsetDateTime,
    ) -> Self {
        let stamp = format_time(now);
        let mut labels: Vec<(Str, Str)> = spec
            .labels
            .into_iter()
            .map(|(k, v)| (Str::from(k), Str::from(v)))
            .collect();
        labels.sort_by(|a, b| a.0.cmp(&b.0));
        labels.dedup_by(|a, b| a.0 == b.0);
        let kind = spec.involved_kind;
        let ref_ns = if cluster_scoped(&kind) {
            String::new()
        } else {
            spec.namespace.clone()
        };
        let involved = ObjectRef {
            uid: involved_uid(&kind, &ref_ns, &spec.involved_name),
            api_version: api_version_for(&kind).into(),
            namespace: ref_ns.into(),
            name: spec.involved_name.into(),
            kind: kind.into(),
            ..ObjectRef::default()
        };
        let component: Str = spec.reporting_component.into();
        let instance: Str = spec.reporting_instance.into();
        let (source, first, last, count, event_time, action) = if spec.new_style {
            let action = action_for(&spec.reason);
            (
                Source::default(),
                None,
                None,
                0,
                Some(format_micro(now)),
                Str::from(action),
            )
        } else {
            let host = if &*component == "kubelet" {
                instance.clone()
            } else {
                Str::from("")
            };
            (
                Source {
                    component: component.clone(),
                    host,
                },
                Some(stamp.clone()),
                Some(stamp.clone()),
                1,
                None,
                Str::from(""),
            )
        };
        let manager: Str = manager_for(&component).into();
        let body = EventBody {
            key: format!("{}/{}", spec.namespace, name).into(),
            name: name.into(),
            namespace: spec.namespace.into(),
            uid: uid.into(),
            creation_timestamp: stamp.clone(),
            labels,
            annotations: Vec::new(),
            involved,
            reason: spec.reason.into(),
            message: spec.message.into(),
            source,
            first_timestamp: first,
            type_: spec.type_.into(),
            event_time,
            action,
            related: None,
            reporting_component: component,
            reporting_instance: instance,
            generated_fields: true,
        };
        let api_version: Str = if spec.new_style {
            "events.k8s.io/v1".into()
        } else {
            "v1".into()
        };
        let managed = ManagedField {
            manager,
            operation: "Update".into(),
            api_version,
            time: Some(stamp),
            fields_type: "FieldsV1".into(),
            fields_v1: Some(fields_v1(&body, false)),
            subresource: "".into(),
        };
        NewEvent {
            body: Arc::new(body),
            count,
            last_timestamp: last,
            series: None,
            managed_fields: vec![managed].into(),
        }
    }

    /// Imports a full core/v1 Event as recorded from a real server; also returns its
    /// recorded resourceVersion (if numeric).
    pub fn from_core_json(json: &str) -> Result<(NewEvent, Option<u64>), String> {
        let ev: CoreEventIn = serde_json::from_str(json).map_err(|e| e.to_string())?;
        if ev.metadata.name.is_empty() {
            return Err("metadata.name is empty".into());
        }
        let mut labels: Vec<(Str, Str)> = ev
            .metadata
            .labels
            .into_iter()
            .map(|(k, v)| (Str::from(k), Str::from(v)))
            .collect();
        labels.sort_by(|a, b| a.0.cmp(&b.0));
        let mut annotations: Vec<(Str, Str)> = ev
            .metadata
            .annotations
            .into_iter()
            .map(|(k, v)| (Str::from(k), Str::from(v)))
            .collect();
        annotations.sort_by(|a, b| a.0.cmp(&b.0));
        let uid = if ev.metadata.uid.is_empty() {
            new_uid().into()
        } else {
            ev.metadata.uid
        };
        let created = ev
            .metadata
            .creation_timestamp
            .unwrap_or_else(|| format_time(OffsetDateTime::now_utc()));
        let body = EventBody {
            key: format!("{}/{}", ev.metadata.namespace, ev.metadata.name).into(),
            name: ev.metadata.name,
            namespace: ev.metadata.namespace,
            uid,
            creation_timestamp: created,
            labels,
            annotations,
            involved: ev.involved_object,
            reason: ev.reason,
            message: ev.message,
            source: ev.source,
            first_timestamp: ev.first_timestamp,
            type_: ev.type_,
            event_time: ev.event_time,
            action: ev.action,
            related: ev.related,
            reporting_component: ev.reporting_component,
            reporting_instance: ev.reporting_instance,
            generated_fields: false,
        };
        let rv = ev.metadata.resource_version.parse::<u64>().ok();
        let new = NewEvent {
            body: Arc::new(body),
            count: ev.count,
            last_timestamp: ev.last_timestamp,
            series: ev.series,
            managed_fields: ev.metadata.managed_fields.into(),
        };
        Ok((new, rv))
    }
}

#[derive(Deserialize)]
struct MetaIn {
    #[serde(default)]
    name: Str,
    #[serde(default)]
    namespace: Str,
    #[serde(default)]
    uid: Str,
    #[serde(rename = "resourceVersion", default)]
    resource_version: String,
    #[serde(rename = "creationTimestamp", default)]
    creation_timestamp: Option<Str>,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
    #[serde(rename = "managedFields", default)]
    managed_fields: Vec<ManagedField>,
}

#[derive(Deserialize)]
struct CoreEventIn {
    metadata: MetaIn,
    #[serde(rename = "involvedObject", default)]
    involved_object: ObjectRef,
    #[serde(default)]
    reason: Str,
    #[serde(default)]
    message: Str,
    #[serde(default)]
    source: Source,
    #[serde(rename = "firstTimestamp", default)]
    first_timestamp: Option<Str>,
    #[serde(rename = "lastTimestamp", default)]
    last_timestamp: Option<Str>,
    #[serde(default)]
    count: i32,
    #[serde(rename = "type", default)]
    type_: Str,
    #[serde(rename = "eventTime", default)]
    event_time: Option<Str>,
    #[serde(default)]
    series: Option<Series>,
    #[serde(default)]
    action: Str,
    #[serde(default)]
    related: Option<ObjectRef>,
    #[serde(rename = "reportingComponent", default)]
    reporting_component: Str,
    #[serde(rename = "reportingInstance", default)]
    reporting_instance: Str,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64, nanos: u32) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(secs)
            .unwrap()
            .replace_nanosecond(nanos)
            .unwrap()
    }

    #[test]
    fn time_formats_match_metav1() {
        let t = at(1_795_739_239, 69_199_000);
        assert_eq!(&*format_time(t), "2026-11-27T00:27:19Z");
        assert_eq!(&*format_micro(t), "2026-11-27T00:27:19.069199Z");
    }

    #[test]
    fn uids_are_version_4() {
        for _ in 0..100 {
            let u = new_uid();
            assert_eq!(u.len(), 36);
            assert_eq!(&u[14..15], "4");
            assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
        }
    }

    #[test]
    fn legacy_bump_counts_and_new_style_bump_grows_a_series() {
        let now = at(1_795_739_239, 0);
        let mut spec = crate::EventSpec::simple("fx", "Pod", "p", "BackOff", "m");
        let legacy = NewEvent::from_spec(spec.clone(), "p.1".into(), new_uid(), now).at(5);
        let b = legacy.bumped(at(1_795_739_300, 0));
        assert_eq!(b.count, 2);
        assert_eq!(b.last_timestamp.as_deref(), Some("2026-11-27T00:28:20Z"));
        assert!(b.series.is_none());
        spec.new_style = true;
        let new = NewEvent::from_spec(spec, "p.2".into(), new_uid(), now).at(6);
        let b1 = new.bumped(at(1_795_739_300, 0));
        assert_eq!(b1.series.as_ref().map(|s| s.count), Some(2));
        let b2 = b1.bumped(at(1_795_739_301, 0));
        assert_eq!(b2.series.as_ref().map(|s| s.count), Some(3));
        assert_eq!(b2.count, 0);
        let fields = b1.managed_fields[0].fields_v1.as_ref().unwrap().get();
        assert!(fields.contains("f:series"), "{fields}");
    }

    #[test]
    fn involved_uid_is_stable_per_object() {
        assert_eq!(involved_uid("Pod", "a", "b"), involved_uid("Pod", "a", "b"));
        assert_ne!(involved_uid("Pod", "a", "b"), involved_uid("Pod", "a", "c"));
    }
}
