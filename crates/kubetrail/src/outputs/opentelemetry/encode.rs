//! Turns a batch of encoded kubetrail records into one OTLP `ExportLogsServiceRequest`: a log
//! record per kubetrail record (time, severity, body, attributes), grouped into
//! `ResourceLogs` by the Kubernetes object they are about (or into one, see
//! [`EncodeOptions::object_resource`]), each with one `ScopeLogs` named `kubetrail`.
//!
//! Nothing here fails: a record that is not the JSON it should be becomes a log record whose
//! body is its text, so one odd item never holds up (or dead-letters) a whole batch.

use std::collections::HashMap;

use kubetrail_core::Timestamp;
use kubetrail_state::QueueItem;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde_json::{Map, Value};

/// The instrumentation scope every log record is sent under.
pub const SCOPE_NAME: &str = "kubetrail";

/// What the log record body holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// A short text: the Event's message, a one-line summary of an audit event, a gap's
    /// message, an error record's reason. The normalized fields are the attributes.
    Message,
    /// The whole kubetrail record (envelope, normalized fields and the original object) as a
    /// JSON string, for backends that parse JSON bodies and for keeping the original.
    Record,
}

/// How records become OTLP log records.
#[derive(Debug, Clone)]
pub struct EncodeOptions {
    pub body: BodyFormat,
    /// `true`: the identity of the Kubernetes object a record is about (`k8s.namespace.name`,
    /// `k8s.pod.name`, `k8s.object.*`, ...) is a resource attribute and records are grouped
    /// into one `ResourceLogs` per object, as the OpenTelemetry Collector's Kubernetes events
    /// receiver does. `false`: those are log record attributes and a batch is one
    /// `ResourceLogs`.
    pub object_resource: bool,
    /// Resource attributes of every `ResourceLogs` (`service.name`, `k8s.cluster.name`, the
    /// `resource` option), in order, without duplicate keys.
    pub resource: Vec<(String, String)>,
}

/// The severity of a record: OTLP number and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Severity {
    pub number: SeverityNumber,
    pub text: String,
}

impl Severity {
    fn of(number: SeverityNumber) -> Severity {
        let text = match number {
            SeverityNumber::Info => "INFO",
            SeverityNumber::Warn => "WARN",
            SeverityNumber::Error => "ERROR",
            SeverityNumber::Fatal => "FATAL",
            _ => "",
        };
        Severity {
            number,
            text: text.to_string(),
        }
    }

    fn unspecified() -> Severity {
        Severity {
            number: SeverityNumber::Unspecified,
            text: String::new(),
        }
    }
}

/// Builds the request for a batch. `observed` is the `observed_time_unix_nano` of every record.
pub fn build_request(
    items: &[QueueItem],
    opts: &EncodeOptions,
    observed: Timestamp,
) -> ExportLogsServiceRequest {
    let observed = nanos(observed);
    let mut groups: Vec<(Vec<KeyValue>, Vec<LogRecord>)> = Vec::new();
    let mut index: HashMap<Vec<(String, String)>, usize> = HashMap::new();
    for item in items {
        let mapped = map_item(item, opts);
        let mut record = mapped.record;
        record.observed_time_unix_nano = observed;
        let identity = if opts.object_resource {
            mapped.identity
        } else {
            // Identity first, so the attributes read the same in both modes.
            let mut attrs: Vec<KeyValue> = mapped
                .identity
                .into_iter()
                .map(|(k, v)| kv(k, Any::StringValue(v)))
                .collect();
            attrs.append(&mut record.attributes);
            record.attributes = attrs;
            Vec::new()
        };
        let slot = match index.get(&identity) {
            Some(i) => *i,
            None => {
                let mut attrs: Vec<(String, String)> = opts.resource.clone();
                for (k, v) in &identity {
                    upsert(&mut attrs, k, v);
                }
                let attrs = attrs
                    .into_iter()
                    .map(|(k, v)| kv(k, Any::StringValue(v)))
                    .collect();
                groups.push((attrs, Vec::new()));
                index.insert(identity, groups.len() - 1);
                groups.len() - 1
            }
        };
        groups[slot].1.push(record);
    }
    ExportLogsServiceRequest {
        resource_logs: groups
            .into_iter()
            .map(|(attributes, log_records)| ResourceLogs {
                resource: Some(Resource {
                    attributes,
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: SCOPE_NAME.to_string(),
                        version: env!("CARGO_PKG_VERSION").to_string(),
                        ..Default::default()
                    }),
                    log_records,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
}

fn upsert(attrs: &mut Vec<(String, String)>, k: &str, v: &str) {
    match attrs.iter_mut().find(|(key, _)| key == k) {
        Some(slot) => slot.1 = v.to_string(),
        None => attrs.push((k.to_string(), v.to_string())),
    }
}

/// One record mapped: the log record (without observed time) and the identity of the object
/// it is about, as (key, value) pairs in a stable order.
pub struct Mapped {
    pub record: LogRecord,
    pub identity: Vec<(String, String)>,
}

/// Maps one queue item. Its `id` is the record id even when the data is not an envelope
/// (`format: raw` sources encode only the original object).
pub fn map_item(item: &QueueItem, opts: &EncodeOptions) -> Mapped {
    let parsed = serde_json::from_slice::<Value>(&item.data).ok();
    let mut m = Mapper {
        attrs: Vec::new(),
        identity: Vec::new(),
    };
    m.str("log.record.uid", &item.id);
    let envelope = parsed.as_ref().and_then(|v| v.as_object()).filter(|o| {
        o.get("id").is_some_and(Value::is_string)
            && o.get("kind")
                .and_then(Value::as_str)
                .is_some_and(|k| KINDS.contains(&k))
    });
    let (time, severity, message) = match envelope {
        Some(o) => m.envelope(o),
        None => m.raw(parsed.as_ref()),
    };
    let body = match (opts.body, message) {
        (BodyFormat::Message, Some(text)) => text,
        _ => String::from_utf8_lossy(&item.data).into_owned(),
    };
    Mapped {
        record: LogRecord {
            time_unix_nano: time.map(nanos).unwrap_or(0),
            severity_number: severity.number as i32,
            severity_text: severity.text,
            body: Some(AnyValue {
                value: Some(Any::StringValue(body)),
            }),
            attributes: m.attrs,
            ..Default::default()
        },
        identity: m.identity,
    }
}

const KINDS: [&str; 4] = ["k8s_event", "k8s_audit", "gap", "error"];

/// Nanoseconds for OTLP: times before 1970 (never real here) become 0, "unknown".
fn nanos(t: Timestamp) -> u64 {
    u64::try_from(t.unix_nanos()).unwrap_or(0)
}

fn kv(key: impl Into<String>, value: Any) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// A JSON value as an OTLP value; `None` for null. Objects become key/value lists.
fn any(v: &Value) -> Option<Any> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => Any::BoolValue(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Any::IntValue(i),
            None => Any::DoubleValue(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => Any::StringValue(s.clone()),
        Value::Array(a) => Any::ArrayValue(ArrayValue {
            values: a.iter().map(|v| AnyValue { value: any(v) }).collect(),
        }),
        Value::Object(o) => {
            Any::KvlistValue(opentelemetry_proto::tonic::common::v1::KeyValueList {
                values: o
                    .iter()
                    .filter_map(|(k, v)| any(v).map(|a| kv(k.clone(), a)))
                    .collect(),
            })
        }
    })
}

/// The Kubernetes kinds whose names and uids have OpenTelemetry semantic-convention attributes
/// (`k8s.<key>.name`, `k8s.<key>.uid`): (kind, audit resource, key, has a uid attribute).
const SEMCONV_KINDS: &[(&str, &str, &str, bool)] = &[
    ("Pod", "pods", "pod", true),
    ("Node", "nodes", "node", true),
    ("Namespace", "namespaces", "namespace", false),
    ("Deployment", "deployments", "deployment", true),
    ("ReplicaSet", "replicasets", "replicaset", true),
    ("StatefulSet", "statefulsets", "statefulset", true),
    ("DaemonSet", "daemonsets", "daemonset", true),
    ("Job", "jobs", "job", true),
    ("CronJob", "cronjobs", "cronjob", true),
    (
        "ReplicationController",
        "replicationcontrollers",
        "replicationcontroller",
        true,
    ),
    ("ResourceQuota", "resourcequotas", "resourcequota", true),
    (
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        "hpa",
        true,
    ),
];

/// Collects attributes while a record is read.
struct Mapper {
    attrs: Vec<KeyValue>,
    identity: Vec<(String, String)>,
}

fn text<'a>(o: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    o.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

impl Mapper {
    fn str(&mut self, key: &str, v: &str) {
        self.attrs.push(kv(key, Any::StringValue(v.to_string())));
    }

    fn value(&mut self, key: &str, v: Option<&Value>) {
        if let Some(a) = v.and_then(any) {
            self.attrs.push(kv(key, a));
        }
    }

    fn text(&mut self, key: &str, o: &Map<String, Value>, field: &str) {
        if let Some(v) = text(o, field) {
            self.str(key, v);
        }
    }

    fn ident(&mut self, key: &str, v: &str) {
        if !v.is_empty() && !self.identity.iter().any(|(k, _)| k == key) {
            self.identity.push((key.to_string(), v.to_string()));
        }
    }

    /// A field nobody mapped (e.g. one a `modify` filter added) under its own name, objects
    /// flattened with dots.
    fn extra(&mut self, key: &str, v: &Value) {
        match v {
            Value::Object(o) => {
                for (k, v) in o {
                    self.extra(&format!("{key}.{k}"), v);
                }
            }
            v => self.value(key, Some(v)),
        }
    }

    /// A record in kubetrail's envelope: time, severity and message text.
    fn envelope(
        &mut self,
        o: &Map<String, Value>,
    ) -> (Option<Timestamp>, Severity, Option<String>) {
        let kind = text(o, "kind").unwrap_or_default();
        self.str("kubetrail.record.kind", kind);
        self.text("kubetrail.source", o, "source");
        self.text("kubetrail.tag", o, "tag");
        let time = text(o, "time").and_then(Timestamp::parse_rfc3339);
        let (severity, message, used): (Severity, Option<String>, &[&str]) = match kind {
            "k8s_event" => (
                self.event(o),
                text(o, "message").or(text(o, "reason")).map(str::to_string),
                EVENT_KEYS,
            ),
            "k8s_audit" => {
                let (s, m) = self.audit(o);
                (s, Some(m), AUDIT_KEYS)
            }
            "gap" => (
                Severity::of(SeverityNumber::Warn),
                Some(self.gap(o)),
                GAP_KEYS,
            ),
            _ => (
                Severity::of(SeverityNumber::Error),
                Some(self.error(o)),
                ERROR_KEYS,
            ),
        };
        for (k, v) in o {
            if !ENVELOPE_KEYS.contains(&k.as_str()) && !used.contains(&k.as_str()) {
                self.extra(k, v);
            }
        }
        (time, severity, message)
    }

    fn object_identity(
        &mut self,
        kind: Option<&str>,
        name: Option<&str>,
        namespace: Option<&str>,
        uid: Option<&str>,
    ) {
        if let Some(ns) = namespace {
            self.ident("k8s.namespace.name", ns);
        }
        let semconv = kind.and_then(|k| SEMCONV_KINDS.iter().find(|(kind, ..)| *kind == k));
        if let (Some((_, _, key, has_uid)), Some(name)) = (semconv, name) {
            self.ident(&format!("k8s.{key}.name"), name);
            if let (true, Some(uid)) = (*has_uid, uid) {
                self.ident(&format!("k8s.{key}.uid"), uid);
            }
        }
    }

    fn event(&mut self, o: &Map<String, Value>) -> Severity {
        let empty = Map::new();
        let io = o
            .get("involved_object")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let io_kind = text(io, "kind");
        // A cluster-scoped object (a Node) has Events in `default`: that namespace says
        // nothing about the object, so only the object's own namespace is used when it is known.
        let namespace = if io_kind.is_some() {
            text(io, "namespace")
        } else {
            text(o, "namespace")
        };
        self.object_identity(io_kind, text(io, "name"), namespace, text(io, "uid"));
        for (key, field) in [
            ("k8s.object.kind", "kind"),
            ("k8s.object.name", "name"),
            ("k8s.object.uid", "uid"),
        ] {
            if let Some(v) = text(io, field) {
                self.ident(key, v);
            }
        }
        self.text("k8s.object.api_version", io, "api_version");
        self.text("k8s.object.fieldpath", io, "field_path");
        self.text("k8s.event.name", o, "name");
        self.text("k8s.event.uid", o, "uid");
        self.text("k8s.event.resource_version", o, "resource_version");
        self.text("k8s.event.reason", o, "reason");
        self.text("k8s.event.action", o, "action");
        self.text("k8s.event.type", o, "type");
        self.value("k8s.event.count", o.get("count"));
        self.text("k8s.event.start_time", o, "first_time");
        self.text("k8s.event.last_time", o, "last_time");
        self.text("k8s.event.reporting_controller", o, "reporting_controller");
        self.text("k8s.event.reporting_instance", o, "reporting_instance");
        self.text("k8s.event.api_version", o, "object_api_version");
        self.text("kubetrail.events_api", o, "api");
        self.text("kubetrail.observed", o, "observed");
        event_severity(text(o, "type"))
    }

    fn audit(&mut self, o: &Map<String, Value>) -> (Severity, String) {
        let empty = Map::new();
        let obj = o
            .get("object_ref")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let user = o.get("user").and_then(Value::as_object).unwrap_or(&empty);
        let resource = text(obj, "resource");
        let kind = resource
            .and_then(|r| SEMCONV_KINDS.iter().find(|(_, res, ..)| *res == r))
            .map(|k| k.0);
        self.object_identity(kind, text(obj, "name"), text(obj, "namespace"), None);
        self.text("k8s.audit.id", o, "audit_id");
        self.text("k8s.audit.stage", o, "stage");
        self.text("k8s.audit.level", o, "level");
        self.text("k8s.audit.verb", o, "verb");
        self.text("user.name", user, "username");
        self.text("user.id", user, "uid");
        self.value("k8s.audit.user.groups", user.get("groups"));
        if let Some(imp) = o.get("impersonated_user").and_then(Value::as_object) {
            self.text("k8s.audit.impersonated_user.name", imp, "username");
            self.value("k8s.audit.impersonated_user.groups", imp.get("groups"));
        }
        let ips = o.get("source_ips").and_then(Value::as_array);
        if let Some(first) = ips.and_then(|a| a.first()).and_then(Value::as_str) {
            self.str("client.address", first);
        }
        self.value("k8s.audit.source_ips", o.get("source_ips"));
        self.text("user_agent.original", o, "user_agent");
        for f in [
            "resource",
            "subresource",
            "name",
            "namespace",
            "api_group",
            "api_version",
        ] {
            self.text(&format!("k8s.audit.object_ref.{f}"), obj, f);
        }
        let code = o.get("response_code").and_then(Value::as_i64);
        self.value("http.response.status_code", o.get("response_code"));
        self.text("k8s.audit.request_uri", o, "request_uri");
        self.text("k8s.audit.decision", o, "decision");
        self.text("k8s.audit.reason", o, "reason");
        self.text("k8s.audit.api_version", o, "api_version");
        (audit_severity(code), audit_summary(o, obj, user, code))
    }

    fn gap(&mut self, o: &Map<String, Value>) -> String {
        if let Some(ns) = text(o, "namespace") {
            self.ident("k8s.namespace.name", ns);
        }
        for f in [
            "stream",
            "reason",
            "from_resource_version",
            "since",
            "until",
        ] {
            self.value(&format!("kubetrail.gap.{f}"), o.get(f));
        }
        match (text(o, "message"), text(o, "reason")) {
            (Some(m), _) => m.to_string(),
            (None, Some(r)) => format!("gap: {r}"),
            (None, None) => "gap: records may have been lost".to_string(),
        }
    }

    fn error(&mut self, o: &Map<String, Value>) -> String {
        self.value("kubetrail.error.source_kind", o.get("source_kind"));
        // The input that could not be understood: without it the error says little.
        if let Some(obj) = o.get("object") {
            let s = match obj {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            self.str("kubetrail.error.input", &s);
        }
        text(o, "error")
            .unwrap_or("input that could not be understood")
            .to_string()
    }

    /// Data that is not kubetrail's envelope: a `format: raw` source's original object, or
    /// (never expected) not JSON at all. Time and severity as far as the object tells them.
    fn raw(&mut self, v: Option<&Value>) -> (Option<Timestamp>, Severity, Option<String>) {
        let Some(o) = v.and_then(Value::as_object) else {
            return (None, Severity::unspecified(), None);
        };
        let audit = o
            .get("apiVersion")
            .and_then(Value::as_str)
            .is_some_and(|a| a.starts_with("audit.k8s.io/"));
        let time_keys: &[&str] = if audit {
            &["stageTimestamp", "requestReceivedTimestamp", "timestamp"]
        } else {
            &[
                "lastTimestamp",
                "eventTime",
                "deprecatedLastTimestamp",
                "firstTimestamp",
            ]
        };
        let time = time_keys
            .iter()
            .find_map(|k| text(o, k).and_then(Timestamp::parse_rfc3339));
        let severity = if audit {
            let code = o
                .get("responseStatus")
                .and_then(|s| s.get("code"))
                .and_then(Value::as_i64);
            audit_severity(code)
        } else {
            event_severity(text(o, "type"))
        };
        (time, severity, None)
    }
}

const ENVELOPE_KEYS: &[&str] = &["id", "time", "kind", "source", "tag", "object"];
const EVENT_KEYS: &[&str] = &[
    "namespace",
    "name",
    "uid",
    "resource_version",
    "api",
    "observed",
    "reason",
    "type",
    "message",
    "action",
    "involved_object",
    "reporting_controller",
    "reporting_instance",
    "count",
    "first_time",
    "last_time",
    "object_api_version",
];
const AUDIT_KEYS: &[&str] = &[
    "audit_id",
    "stage",
    "level",
    "verb",
    "user",
    "impersonated_user",
    "source_ips",
    "user_agent",
    "object_ref",
    "response_code",
    "request_uri",
    "decision",
    "reason",
    "api_version",
];
const GAP_KEYS: &[&str] = &[
    "namespace",
    "stream",
    "reason",
    "message",
    "from_resource_version",
    "since",
    "until",
];
const ERROR_KEYS: &[&str] = &["error", "source_kind"];

/// An Event's `type`: Normal → INFO, Warning → WARN (and the Error / Critical some
/// controllers write → ERROR / FATAL). The text is the type as written.
pub fn event_severity(event_type: Option<&str>) -> Severity {
    let Some(t) = event_type else {
        return Severity::unspecified();
    };
    let number = match t.to_ascii_lowercase().as_str() {
        "normal" => SeverityNumber::Info,
        "warning" => SeverityNumber::Warn,
        "error" => SeverityNumber::Error,
        "critical" => SeverityNumber::Fatal,
        _ => SeverityNumber::Unspecified,
    };
    Severity {
        number,
        text: t.to_string(),
    }
}

/// An audit event's response code: 5xx → ERROR, 4xx → WARN, else (or none yet, at stage
/// RequestReceived) INFO.
pub fn audit_severity(code: Option<i64>) -> Severity {
    Severity::of(match code {
        Some(c) if c >= 500 => SeverityNumber::Error,
        Some(c) if c >= 400 => SeverityNumber::Warn,
        _ => SeverityNumber::Info,
    })
}

/// `delete pods/web-0 in shop by alice → 200`: what happened to which object, by whom, and
/// how it ended; the request URI when there is no object reference.
fn audit_summary(
    o: &Map<String, Value>,
    obj: &Map<String, Value>,
    user: &Map<String, Value>,
    code: Option<i64>,
) -> String {
    let mut s = text(o, "verb").unwrap_or("request").to_string();
    match text(obj, "resource") {
        Some(r) => {
            s.push(' ');
            s.push_str(r);
            if let Some(sub) = text(obj, "subresource") {
                s.push('/');
                s.push_str(sub);
            }
            if let Some(name) = text(obj, "name") {
                s.push('/');
                s.push_str(name);
            }
            if let Some(ns) = text(obj, "namespace") {
                s.push_str(" in ");
                s.push_str(ns);
            }
        }
        None => {
            if let Some(uri) = text(o, "request_uri") {
                s.push(' ');
                s.push_str(uri);
            }
        }
    }
    s.push_str(" by ");
    s.push_str(text(user, "username").unwrap_or("unknown user"));
    if let Some(c) = code {
        s.push_str(&format!(" → {c}"));
    } else if let Some(stage) = text(o, "stage") {
        s.push_str(&format!(" ({stage})"));
    }
    s
}
