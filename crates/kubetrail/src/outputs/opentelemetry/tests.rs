//! Unit tests of the `opentelemetry` output: the record → log record mapping (severity, body,
//! attributes, resource grouping) on records made by the real normalizers, the options, and
//! the HTTP status judgement. The wire tests against a server are in tests/outputs_otlp.rs.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use kubetrail_core::config::{Section, SectionKind};
use kubetrail_core::{Record, RecordKind, Timestamp};
use kubetrail_state::QueueItem;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, SeverityNumber};
use prost::Message;
use serde_json::json;
use serde_json::value::RawValue;

use super::*;
use crate::sources::kubernetes_events::normalize::{
    EventsApi, NormalizeContext, Observed, Updates, normalize,
};

const POD_EVENT: &str = r#"{"kind":"Event","apiVersion":"v1","metadata":{"name":"web-0.18ebbf","namespace":"shop","uid":"ev-1","resourceVersion":"305","creationTimestamp":"2026-11-27T00:29:51Z"},"involvedObject":{"kind":"Pod","namespace":"shop","name":"web-0","uid":"pod-uid-1","apiVersion":"v1","fieldPath":"spec.containers{web}"},"reason":"BackOff","message":"Back-off pulling image \"nginx:nope\"","source":{"component":"kubelet","host":"node-1"},"firstTimestamp":"2026-11-27T00:29:51Z","lastTimestamp":"2026-11-27T00:30:51.5Z","count":3,"type":"Warning"}"#;
const NODE_EVENT: &str = r#"{"kind":"Event","apiVersion":"v1","metadata":{"name":"node-1.17","namespace":"default","uid":"ev-2","resourceVersion":"306"},"involvedObject":{"kind":"Node","name":"node-1","uid":"node-1"},"reason":"NodeReady","message":"Node node-1 status is now: NodeReady","source":{"component":"kubelet","host":"node-1"},"firstTimestamp":"2026-11-27T00:31:00Z","lastTimestamp":"2026-11-27T00:31:00Z","count":1,"type":"Normal"}"#;
const DEPLOY_EVENT: &str = r#"{"kind":"Event","apiVersion":"events.k8s.io/v1","metadata":{"name":"x","namespace":"shop","uid":"ev-3","resourceVersion":"307"},"eventTime":"2026-11-27T00:31:51.810715Z","reportingController":"deployment-controller","reportingInstance":"kcm-1","action":"Scale","reason":"ScalingReplicaSet","regarding":{"kind":"Deployment","namespace":"shop","name":"web","uid":"dep-uid"},"note":"Scaled up replica set web-5c8 to 3","type":"Normal"}"#;

fn event_record(raw: &str) -> Record {
    let s: Arc<str> = Arc::from("kubernetes_events.0");
    let cx = NormalizeContext {
        api: EventsApi::CoreV1,
        source: &s,
        tag: &s,
        dedup_scope: &s,
        raw_format: false,
        updates: Updates::All,
    };
    normalize(
        RawValue::from_string(raw.to_string()).unwrap(),
        Observed::Added,
        &cx,
    )
    .unwrap()
}

fn audit_record(line: &str) -> Record {
    let item = crate::sources::audit::parse_line(line.as_bytes()).unwrap();
    let s: Arc<str> = Arc::from("audit_webhook.0");
    crate::sources::audit::normalize(item, &s, &s, false)
}

fn audit_line(verb: &str, code: Option<i64>, stage: &str) -> String {
    let status = code
        .map(|c| format!(r#","responseStatus":{{"metadata":{{}},"code":{c}}}"#))
        .unwrap_or_default();
    format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a-{verb}-{}","stage":"{stage}","requestURI":"/api/v1/namespaces/shop/pods/web-0","verb":"{verb}","user":{{"username":"alice","uid":"u-alice","groups":["dev","system:authenticated"]}},"sourceIPs":["10.0.0.7","10.0.0.8"],"userAgent":"kubectl/v1.28.0","objectRef":{{"resource":"pods","namespace":"shop","name":"web-0","apiVersion":"v1"}}{status},"requestReceivedTimestamp":"2026-11-27T00:16:44.307833Z","stageTimestamp":"2026-11-27T00:16:44.308590Z","annotations":{{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":"RBAC"}}}}"#,
        code.unwrap_or(0)
    )
}

fn item(r: &Record) -> QueueItem {
    QueueItem {
        seq: 1,
        id: r.id.clone(),
        data: r.encode().into(),
    }
}

fn opts(object_resource: bool) -> EncodeOptions {
    EncodeOptions {
        body: BodyFormat::Message,
        object_resource,
        resource: vec![
            ("service.name".into(), "kubetrail".into()),
            ("k8s.cluster.name".into(), "prod-eu".into()),
        ],
    }
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Any> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn s(attrs: &[KeyValue], key: &str) -> Option<String> {
    match attr(attrs, key) {
        Some(Any::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

fn body(r: &LogRecord) -> String {
    match r.body.as_ref().and_then(|b| b.value.as_ref()) {
        Some(Any::StringValue(s)) => s.clone(),
        other => panic!("body is not a string: {other:?}"),
    }
}

/// Encodes and decodes, so every test also checks the bytes are a valid message.
fn roundtrip(items: &[QueueItem], o: &EncodeOptions) -> ExportLogsServiceRequest {
    let req = build_request(
        items,
        o,
        Timestamp::from_unix_nanos(1_800_000_000_000_000_000),
    );
    ExportLogsServiceRequest::decode(req.encode_to_vec().as_slice()).unwrap()
}

#[test]
fn warning_pod_event_maps_to_warn_with_semconv_attributes() {
    let r = event_record(POD_EVENT);
    let m = encode::map_item(&item(&r), &opts(true));
    let lr = &m.record;
    assert_eq!(lr.severity_number, SeverityNumber::Warn as i32);
    assert_eq!(lr.severity_text, "Warning");
    assert_eq!(body(lr), "Back-off pulling image \"nginx:nope\"");
    assert_eq!(
        lr.time_unix_nano,
        Timestamp::parse_rfc3339("2026-11-27T00:30:51.5Z")
            .unwrap()
            .unix_nanos() as u64
    );
    let a = &lr.attributes;
    assert_eq!(s(a, "log.record.uid").as_deref(), Some("ev-1:305"));
    assert_eq!(s(a, "kubetrail.record.kind").as_deref(), Some("k8s_event"));
    assert_eq!(s(a, "k8s.event.reason").as_deref(), Some("BackOff"));
    assert_eq!(s(a, "k8s.event.name").as_deref(), Some("web-0.18ebbf"));
    assert_eq!(s(a, "k8s.event.uid").as_deref(), Some("ev-1"));
    assert_eq!(
        s(a, "k8s.event.start_time").as_deref(),
        Some("2026-11-27T00:29:51Z")
    );
    assert_eq!(
        s(a, "k8s.event.reporting_controller").as_deref(),
        Some("kubelet")
    );
    assert_eq!(
        s(a, "k8s.event.reporting_instance").as_deref(),
        Some("node-1")
    );
    assert_eq!(
        s(a, "k8s.object.fieldpath").as_deref(),
        Some("spec.containers{web}")
    );
    assert_eq!(attr(a, "k8s.event.count"), Some(&Any::IntValue(3)));
    // The message is the body, not repeated as an attribute.
    assert!(attr(a, "message").is_none() && attr(a, "k8s.event.message").is_none());
    // Identity goes to the resource.
    let id: Vec<(&str, &str)> = m
        .identity
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        id,
        vec![
            ("k8s.namespace.name", "shop"),
            ("k8s.pod.name", "web-0"),
            ("k8s.pod.uid", "pod-uid-1"),
            ("k8s.object.kind", "Pod"),
            ("k8s.object.name", "web-0"),
            ("k8s.object.uid", "pod-uid-1"),
        ]
    );
}

#[test]
fn normal_node_event_is_info_without_the_default_namespace() {
    let r = event_record(NODE_EVENT);
    let m = encode::map_item(&item(&r), &opts(true));
    assert_eq!(m.record.severity_number, SeverityNumber::Info as i32);
    assert_eq!(m.record.severity_text, "Normal");
    assert!(
        m.identity
            .iter()
            .any(|(k, v)| k == "k8s.node.name" && v == "node-1")
    );
    assert!(
        m.identity
            .iter()
            .any(|(k, v)| k == "k8s.node.uid" && v == "node-1")
    );
    // The Event lives in `default`, but a Node has no namespace.
    assert!(
        !m.identity.iter().any(|(k, _)| k == "k8s.namespace.name"),
        "{:?}",
        m.identity
    );
}

#[test]
fn events_k8s_io_deployment_event() {
    let r = event_record(DEPLOY_EVENT);
    let m = encode::map_item(&item(&r), &opts(false));
    assert!(
        m.identity
            .iter()
            .any(|(k, v)| k == "k8s.deployment.name" && v == "web")
    );
    assert_eq!(
        s(&m.record.attributes, "k8s.event.action").as_deref(),
        Some("Scale")
    );
    assert_eq!(body(&m.record), "Scaled up replica set web-5c8 to 3");
}

#[test]
fn event_severity_by_type() {
    assert_eq!(event_severity(Some("Warning")).number, SeverityNumber::Warn);
    assert_eq!(event_severity(Some("normal")).number, SeverityNumber::Info);
    assert_eq!(event_severity(Some("Error")).number, SeverityNumber::Error);
    assert_eq!(
        event_severity(Some("Critical")).number,
        SeverityNumber::Fatal
    );
    assert_eq!(
        event_severity(Some("Odd")).number,
        SeverityNumber::Unspecified
    );
    assert_eq!(event_severity(Some("Odd")).text, "Odd");
    assert_eq!(event_severity(None).number, SeverityNumber::Unspecified);
}

#[test]
fn audit_severity_by_response_code() {
    for (code, want, text) in [
        (Some(200), SeverityNumber::Info, "INFO"),
        (Some(201), SeverityNumber::Info, "INFO"),
        (Some(404), SeverityNumber::Warn, "WARN"),
        (Some(403), SeverityNumber::Warn, "WARN"),
        (Some(500), SeverityNumber::Error, "ERROR"),
        (Some(503), SeverityNumber::Error, "ERROR"),
        (None, SeverityNumber::Info, "INFO"),
    ] {
        let r = audit_record(&audit_line(
            "delete",
            code,
            if code.is_some() {
                "ResponseComplete"
            } else {
                "RequestReceived"
            },
        ));
        let m = encode::map_item(&item(&r), &opts(true));
        assert_eq!(m.record.severity_number, want as i32, "{code:?}");
        assert_eq!(m.record.severity_text, text);
    }
}

#[test]
fn audit_event_summary_and_attributes() {
    let r = audit_record(&audit_line("delete", Some(403), "ResponseComplete"));
    let m = encode::map_item(&item(&r), &opts(true));
    let a = &m.record.attributes;
    assert_eq!(body(&m.record), "delete pods/web-0 in shop by alice → 403");
    assert_eq!(s(a, "user.name").as_deref(), Some("alice"));
    assert_eq!(s(a, "user.id").as_deref(), Some("u-alice"));
    assert_eq!(s(a, "client.address").as_deref(), Some("10.0.0.7"));
    assert_eq!(
        s(a, "user_agent.original").as_deref(),
        Some("kubectl/v1.28.0")
    );
    assert_eq!(s(a, "k8s.audit.verb").as_deref(), Some("delete"));
    assert_eq!(s(a, "k8s.audit.stage").as_deref(), Some("ResponseComplete"));
    assert_eq!(s(a, "k8s.audit.decision").as_deref(), Some("allow"));
    assert_eq!(
        s(a, "k8s.audit.object_ref.resource").as_deref(),
        Some("pods")
    );
    assert_eq!(
        s(a, "k8s.audit.request_uri").as_deref(),
        Some("/api/v1/namespaces/shop/pods/web-0")
    );
    assert_eq!(
        attr(a, "http.response.status_code"),
        Some(&Any::IntValue(403))
    );
    match attr(a, "k8s.audit.user.groups") {
        Some(Any::ArrayValue(arr)) => {
            let g: Vec<_> = arr.values.iter().filter_map(|v| v.value.clone()).collect();
            assert_eq!(
                g,
                vec![
                    Any::StringValue("dev".into()),
                    Any::StringValue("system:authenticated".into())
                ]
            );
        }
        other => panic!("groups: {other:?}"),
    }
    assert!(
        m.identity
            .contains(&("k8s.pod.name".to_string(), "web-0".to_string()))
    );
    assert!(
        m.identity
            .contains(&("k8s.namespace.name".to_string(), "shop".to_string()))
    );
    assert_eq!(
        m.record.time_unix_nano,
        Timestamp::parse_rfc3339("2026-11-27T00:16:44.308590Z")
            .unwrap()
            .unix_nanos() as u64
    );

    let received = audit_record(&audit_line("get", None, "RequestReceived"));
    let m = encode::map_item(&item(&received), &opts(true));
    assert_eq!(
        body(&m.record),
        "get pods/web-0 in shop by alice (RequestReceived)"
    );
}

#[test]
fn gap_and_error_records() {
    let mut gap = Record::new(
        "gap:k:305",
        Timestamp::now(),
        RecordKind::Gap,
        Arc::from("kubernetes_events.0"),
        Arc::from("t"),
    );
    gap.fields.insert("stream".into(), json!("events"));
    gap.fields.insert("reason".into(), json!("expired"));
    gap.fields.insert(
        "message".into(),
        json!("the watch position expired; events may be lost"),
    );
    gap.fields.insert("namespace".into(), json!("shop"));
    let m = encode::map_item(&item(&gap), &opts(true));
    assert_eq!(m.record.severity_number, SeverityNumber::Warn as i32);
    assert_eq!(
        body(&m.record),
        "the watch position expired; events may be lost"
    );
    assert_eq!(
        s(&m.record.attributes, "kubetrail.gap.reason").as_deref(),
        Some("expired")
    );
    assert_eq!(
        m.identity,
        vec![("k8s.namespace.name".to_string(), "shop".to_string())]
    );

    let s_: Arc<str> = Arc::from("audit_file.0");
    let err = crate::sources::audit::invalid_input_record(b"{not json", "not JSON", &s_, &s_);
    let m = encode::map_item(&item(&err), &opts(true));
    assert_eq!(m.record.severity_number, SeverityNumber::Error as i32);
    assert_eq!(body(&m.record), "not JSON");
    assert_eq!(
        s(&m.record.attributes, "kubetrail.error.input").as_deref(),
        Some("{not json")
    );
}

#[test]
fn fields_added_by_filters_keep_their_names_flattened() {
    let mut r = event_record(POD_EVENT);
    r.fields
        .insert("team".into(), json!({"name": "payments", "oncall": true}));
    r.fields.insert("env".into(), json!("prod"));
    let m = encode::map_item(&item(&r), &opts(true));
    let a = &m.record.attributes;
    assert_eq!(s(a, "team.name").as_deref(), Some("payments"));
    assert_eq!(attr(a, "team.oncall"), Some(&Any::BoolValue(true)));
    assert_eq!(s(a, "env").as_deref(), Some("prod"));
}

#[test]
fn record_body_format_keeps_the_whole_record() {
    let r = event_record(POD_EVENT);
    let o = EncodeOptions {
        body: BodyFormat::Record,
        ..opts(true)
    };
    let m = encode::map_item(&item(&r), &o);
    let v: serde_json::Value = serde_json::from_str(&body(&m.record)).unwrap();
    assert_eq!(v["id"], "ev-1:305");
    assert_eq!(v["object"]["involvedObject"]["name"], "web-0");
    // Attributes are the same in both body formats.
    assert_eq!(
        s(&m.record.attributes, "k8s.event.reason").as_deref(),
        Some("BackOff")
    );
}

#[test]
fn raw_format_and_garbage_still_become_log_records() {
    let raw = QueueItem {
        seq: 1,
        id: "ev-1:305".into(),
        data: POD_EVENT.as_bytes().to_vec().into(),
    };
    let m = encode::map_item(&raw, &opts(true));
    assert_eq!(m.record.severity_number, SeverityNumber::Warn as i32);
    assert_eq!(body(&m.record), POD_EVENT);
    assert_eq!(
        m.record.time_unix_nano,
        Timestamp::parse_rfc3339("2026-11-27T00:30:51.5Z")
            .unwrap()
            .unix_nanos() as u64
    );
    assert_eq!(
        s(&m.record.attributes, "log.record.uid").as_deref(),
        Some("ev-1:305")
    );

    let raw_audit = audit_line("create", Some(502), "ResponseComplete");
    let m = encode::map_item(
        &QueueItem {
            seq: 2,
            id: "a".into(),
            data: raw_audit.into_bytes().into(),
        },
        &opts(true),
    );
    assert_eq!(m.record.severity_number, SeverityNumber::Error as i32);

    let junk = QueueItem {
        seq: 3,
        id: "j".into(),
        data: vec![0xff, b'x', 0].into(),
    };
    let m = encode::map_item(&junk, &opts(true));
    assert_eq!(m.record.severity_number, 0);
    assert_eq!(m.record.time_unix_nano, 0);
    assert!(body(&m.record).contains('x'));
}

#[test]
fn records_are_grouped_by_object_into_resource_logs() {
    let a = event_record(POD_EVENT);
    let b = event_record(NODE_EVENT);
    let mut a2 = event_record(POD_EVENT);
    a2.id = "ev-1:306".into();
    let items = vec![item(&a), item(&b), item(&a2)];
    let req = roundtrip(&items, &opts(true));
    assert_eq!(req.resource_logs.len(), 2);
    let pod = &req.resource_logs[0];
    let res = &pod.resource.as_ref().unwrap().attributes;
    assert_eq!(s(res, "service.name").as_deref(), Some("kubetrail"));
    assert_eq!(s(res, "k8s.cluster.name").as_deref(), Some("prod-eu"));
    assert_eq!(s(res, "k8s.pod.name").as_deref(), Some("web-0"));
    assert_eq!(pod.scope_logs.len(), 1);
    let scope = pod.scope_logs[0].scope.as_ref().unwrap();
    assert_eq!(scope.name, "kubetrail");
    assert_eq!(scope.version, env!("CARGO_PKG_VERSION"));
    let uids: Vec<_> = pod.scope_logs[0]
        .log_records
        .iter()
        .map(|r| s(&r.attributes, "log.record.uid").unwrap())
        .collect();
    assert_eq!(uids, vec!["ev-1:305", "ev-1:306"]);
    let node = &req.resource_logs[1];
    assert_eq!(
        s(&node.resource.as_ref().unwrap().attributes, "k8s.node.name").as_deref(),
        Some("node-1")
    );
    for lr in req
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .flat_map(|s| &s.log_records)
    {
        assert_eq!(lr.observed_time_unix_nano, 1_800_000_000_000_000_000);
    }

    // object_resource off: one ResourceLogs, identity on the records.
    let req = roundtrip(&items, &opts(false));
    assert_eq!(req.resource_logs.len(), 1);
    let res = &req.resource_logs[0].resource.as_ref().unwrap().attributes;
    assert!(s(res, "k8s.pod.name").is_none());
    let recs = &req.resource_logs[0].scope_logs[0].log_records;
    assert_eq!(recs.len(), 3);
    assert_eq!(
        s(&recs[0].attributes, "k8s.pod.name").as_deref(),
        Some("web-0")
    );
    assert_eq!(
        s(&recs[1].attributes, "k8s.node.name").as_deref(),
        Some("node-1")
    );
}

#[test]
fn options_defaults_and_validation() {
    let mut sec = Section::from_pairs(SectionKind::Output, "opentelemetry", &[]);
    let o = OtlpOptions::from_section(&mut sec).unwrap();
    assert_eq!(o.base_url, "http://127.0.0.1:4318");
    assert_eq!(o.logs_uri, "/v1/logs");
    assert!(!o.gzip);
    assert_eq!(o.timeout, Duration::from_secs(30));
    assert_eq!(o.auth, Auth::None);
    assert!(o.encode.object_resource);
    assert_eq!(o.encode.body, BodyFormat::Message);
    assert_eq!(
        o.encode.resource,
        vec![("service.name".to_string(), "kubetrail".to_string())]
    );

    let mut sec = Section::from_pairs(
        SectionKind::Output,
        "opentelemetry",
        &[
            ("host", "otel.example.com"),
            ("port", "443"),
            ("tls", "on"),
            ("tls.verify", "off"),
            ("logs_uri", "/otlp/v1/logs"),
            ("compress", "gzip"),
            ("http_user", "u"),
            ("http_passwd", "p"),
            ("header", "X-Scope-OrgID tenant-1, X-Other: v"),
            ("cluster_name", "prod-eu"),
            ("body_format", "record"),
            ("object_resource", "off"),
            ("timeout", "5s"),
        ],
    );
    let o = OtlpOptions::from_section(&mut sec).unwrap();
    assert_eq!(o.base_url, "https://otel.example.com:443");
    assert!(o.gzip && !o.tls.verify && o.tls.use_webpki_roots);
    assert_eq!(o.headers.len(), 2);
    assert_eq!(o.headers[0].0.as_str(), "x-scope-orgid");
    assert_eq!(o.headers[0].1, "tenant-1");
    assert_eq!(o.headers[1].1, "v");
    match &o.auth {
        Auth::Basic(v) => assert_eq!(v, "Basic dTpw"),
        other => panic!("{other:?}"),
    }
    // Secrets never show in debug output.
    assert!(!format!("{o:?}").contains("dTpw"));
    assert!(
        o.encode
            .resource
            .contains(&("k8s.cluster.name".to_string(), "prod-eu".to_string()))
    );
    assert_eq!(o.encode.body, BodyFormat::Record);
    sec.finish().unwrap();

    for (pairs, key) in [
        (vec![("port", "0")], "port"),
        (vec![("logs_uri", "v1/logs")], "logs_uri"),
        (vec![("tls.ca_file", "/ca.pem")], "tls.ca_file"),
        (vec![("compress", "zip")], "compress"),
        (
            vec![("http_user", "u"), ("bearer_token", "t")],
            "alternatives",
        ),
        (vec![("http_passwd", "p")], "http_passwd"),
        (vec![("header", "Content-Type text/plain")], "header"),
        (vec![("body_format", "json")], "body_format"),
    ] {
        let mut sec = Section::from_pairs(SectionKind::Output, "opentelemetry", &pairs);
        let err = OtlpOptions::from_section(&mut sec).unwrap_err().to_string();
        assert!(err.contains(key), "{pairs:?}: {err}");
    }
}

#[test]
fn options_from_yaml_maps() {
    let yaml = r#"
pipeline:
  outputs:
    - name: opentelemetry
      match: '*'
      host: "::1"
      tls:
        verify: off
        vhost: collector.local
      headers:
        X-Api-Key: secret-key
      resource:
        service.name: audit-trail
        deployment.environment.name: prod
"#;
    let mut c =
        kubetrail_core::config::Config::parse(yaml, std::path::Path::new("t.yaml")).unwrap();
    let sec = &mut c.outputs[0];
    let o = OtlpOptions::from_section(sec).unwrap();
    assert_eq!(o.base_url, "https://[::1]:4318");
    assert_eq!(o.tls.vhost.as_deref(), Some("collector.local"));
    assert_eq!(o.headers[0].1, "secret-key");
    assert!(!format!("{o:?}").contains("secret-key"));
    assert_eq!(
        o.encode.resource,
        vec![
            ("service.name".to_string(), "audit-trail".to_string()),
            (
                "deployment.environment.name".to_string(),
                "prod".to_string()
            )
        ]
    );

    let bad = yaml.replace("vhost:", "vhots:");
    let mut c =
        kubetrail_core::config::Config::parse(&bad, std::path::Path::new("t.yaml")).unwrap();
    let err = OtlpOptions::from_section(&mut c.outputs[0])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tls.vhots") && err.contains("tls.vhost"),
        "{err}"
    );
}

#[test]
fn status_judgement() {
    let retry = |code: u16| {
        matches!(
            judge(StatusCode::from_u16(code).unwrap(), None, "u", ""),
            DeliveryError::Retryable { .. }
        )
    };
    for code in [408, 429, 500, 502, 503, 504, 401, 403] {
        assert!(retry(code), "{code}");
    }
    for code in [400, 404, 405, 413, 415, 422] {
        assert!(!retry(code), "{code}");
    }
    match judge(
        StatusCode::SERVICE_UNAVAILABLE,
        Some(Duration::from_secs(7)),
        "u",
        "busy",
    ) {
        DeliveryError::Retryable {
            retry_after,
            message,
        } => {
            assert_eq!(retry_after, Some(Duration::from_secs(7)));
            assert!(
                message.contains("busy") && message.contains("503"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    match judge(
        StatusCode::TOO_MANY_REQUESTS,
        Some(Duration::from_secs(86_400)),
        "u",
        "",
    ) {
        DeliveryError::Retryable { retry_after, .. } => {
            assert_eq!(retry_after, Some(MAX_RETRY_AFTER))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn retry_after_forms() {
    assert_eq!(parse_retry_after(" 12 "), Some(Duration::from_secs(12)));
    assert_eq!(
        parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
        Some(Duration::ZERO)
    );
    let future = time::OffsetDateTime::now_utc() + time::Duration::seconds(120);
    let text = future
        .format(&time::format_description::well_known::Rfc2822)
        .unwrap();
    let d = parse_retry_after(&text).unwrap();
    assert!(
        d > Duration::from_secs(100) && d <= Duration::from_secs(120),
        "{text}: {d:?}"
    );
    assert_eq!(parse_retry_after("soon"), None);
}

#[test]
fn error_bodies_show_the_status_message() {
    let status = RpcStatus {
        code: 3,
        message: "log record too large".into(),
    };
    assert_eq!(
        error_detail(&status.encode_to_vec(), true),
        "log record too large"
    );
    assert_eq!(error_detail(b"  bad request\n", false), "bad request");
}

#[test]
fn attributes_values_are_typed() {
    let v = json!({"a": 1, "b": 1.5, "c": [1, "x"], "d": null});
    let mut r = event_record(POD_EVENT);
    r.fields.insert("extra".into(), v);
    let m = encode::map_item(&item(&r), &opts(true));
    let a = &m.record.attributes;
    assert_eq!(attr(a, "extra.a"), Some(&Any::IntValue(1)));
    assert_eq!(attr(a, "extra.b"), Some(&Any::DoubleValue(1.5)));
    assert_eq!(
        attr(a, "extra.c"),
        Some(&Any::ArrayValue(
            opentelemetry_proto::tonic::common::v1::ArrayValue {
                values: vec![
                    AnyValue {
                        value: Some(Any::IntValue(1))
                    },
                    AnyValue {
                        value: Some(Any::StringValue("x".into()))
                    }
                ]
            }
        ))
    );
    assert!(attr(a, "extra.d").is_none());
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn json_object() -> impl Strategy<Value = String> {
        let value = prop_oneof![
            Just("null".to_string()),
            "-?[0-9]{1,20}(\\.[0-9]{1,3})?".prop_map(|s| s),
            "\"[a-zA-Z0-9:./ -]{0,12}\"".prop_map(|s| s),
            Just("{\"kind\":\"Pod\",\"name\":\"p\"}".to_string()),
            Just("[1,\"x\",{}]".to_string()),
        ];
        let key = prop_oneof![
            Just("id"),
            Just("kind"),
            Just("time"),
            Just("type"),
            Just("involved_object"),
            Just("object_ref"),
            Just("user"),
            Just("response_code"),
            Just("count"),
            Just("message"),
            Just("source_ips"),
            Just("x"),
        ];
        let kind = prop_oneof![
            Just("k8s_event"),
            Just("k8s_audit"),
            Just("gap"),
            Just("error"),
            Just("other")
        ];
        (kind, proptest::collection::vec((key, value), 0..8)).prop_map(|(kind, fields)| {
            let mut s = format!("{{\"id\":\"r\",\"kind\":\"{kind}\"");
            for (k, v) in fields {
                s.push_str(&format!(",\"{k}\":{v}"));
            }
            s.push('}');
            s
        })
    }

    proptest! {
        /// Whatever is in the queue, every item becomes exactly one log record, the request
        /// encodes and decodes, and nothing panics.
        #[test]
        fn any_item_becomes_one_log_record(
            items in proptest::collection::vec(
                prop_oneof![
                    json_object().prop_map(String::into_bytes),
                    proptest::collection::vec(any::<u8>(), 0..64),
                ],
                1..8,
            ),
            object_resource in any::<bool>(),
        ) {
            let batch: Vec<QueueItem> = items
                .into_iter()
                .enumerate()
                .map(|(i, data)| QueueItem { seq: i as u64, id: format!("id-{i}"), data: data.into() })
                .collect();
            let req = roundtrip(&batch, &opts(object_resource));
            let uids: Vec<String> = req
                .resource_logs
                .iter()
                .flat_map(|r| &r.scope_logs)
                .flat_map(|s| &s.log_records)
                .map(|r| s(&r.attributes, "log.record.uid").unwrap())
                .collect();
            let mut want: Vec<String> = batch.iter().map(|i| i.id.clone()).collect();
            let mut got = uids.clone();
            want.sort();
            got.sort();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn retry_after_never_panics(v in "\\PC{0,40}") {
            let _ = parse_retry_after(&v);
        }
    }
}
