//! Tests of the redact filter: the Secrets default on real audit events, its opt-out, `remove`
//! and `mask` on normalized fields and inside the original, configuration errors, and
//! properties (no panics, untouched records keep their bytes).

use std::sync::Arc;

use kubetrail_core::config::{Section, SectionKind};
use kubetrail_core::{Original, Record, RecordKind, Timestamp};
use proptest::prelude::*;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::*;

/// A real audit event about a Secret (audit-sample-200.jsonl; the recorded policy logged
/// Secrets at Metadata level, so it carries no bodies).
const SECRET_CREATE: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"713c371b-322d-4c67-b2fd-a96948008656","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/anchor-demo/secrets?fieldManager=kubectl-create\u0026fieldValidation=Strict","verb":"create","user":{"username":"admin","uid":"uid-admin","groups":["system:masters","system:authenticated"]},"sourceIPs":["127.0.0.1"],"userAgent":"kubectl/v1.28.15 (linux/amd64) kubernetes/8418565","objectRef":{"resource":"secrets","namespace":"anchor-demo","name":"s-1","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":201},"requestReceivedTimestamp":"2026-11-27T00:16:46.922643Z","stageTimestamp":"2026-11-27T00:16:46.925485Z","annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":""}}"#;
/// What a RequestResponse policy adds to that event.
const SECRET_BODIES_JSON: &str = r#""requestObject":{"kind":"Secret","apiVersion":"v1","metadata":{"name":"s-1","namespace":"anchor-demo","creationTimestamp":null},"data":{"password":"aHVudGVyMg=="},"type":"Opaque"},"responseObject":{"kind":"Secret","apiVersion":"v1","metadata":{"name":"s-1","namespace":"anchor-demo","uid":"0b5b0d6e-3c55-4bb4-9a8e-1f7f1b3c1a11","resourceVersion":"241","creationTimestamp":"2026-11-27T00:16:46Z"},"data":{"password":"aHVudGVyMg=="},"type":"Opaque"},"#;
const CONFIGMAP_PATCH: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"RequestResponse","auditID":"6c0e3c2e-6a43-4f0e-9d55-5d9a8e3a0c71","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/anchor-demo/configmaps/cm-a?fieldManager=kubectl-patch","verb":"patch","user":{"username":"admin","uid":"uid-admin","groups":["system:masters","system:authenticated"]},"sourceIPs":["127.0.0.1","10.0.0.7"],"userAgent":"kubectl/v1.28.15 (linux/amd64) kubernetes/8418565","objectRef":{"resource":"configmaps","namespace":"anchor-demo","name":"cm-a","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200},"requestObject":{"data":{"k":"v2","port":8080}},"responseObject":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"cm-a","namespace":"anchor-demo","managedFields":[{"manager":"kubectl-patch","operation":"Update"}]},"data":{"k":"v2","port":"8080"}},"requestReceivedTimestamp":"2026-11-27T00:16:47.100000Z","stageTimestamp":"2026-11-27T00:16:47.103000Z","annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":""}}"#;

/// The Secret event as a RequestResponse policy would have logged it: the real line with the
/// bodies inserted, every other byte as recorded.
fn with_bodies(line: &str) -> String {
    let at = line.find(r#""requestReceivedTimestamp""#).unwrap();
    format!("{}{}{}", &line[..at], SECRET_BODIES_JSON, &line[at..])
}

fn put(m: &mut Map<String, Value>, key: &str, v: &Value) {
    if !v.is_null() {
        m.insert(key.to_string(), v.clone());
    }
}

/// An audit record shaped like the audit sources make them.
fn audit_record(line: &str) -> Record {
    let v: Value = serde_json::from_str(line).unwrap();
    let mut r = Record::new(
        format!(
            "{}:{}",
            v["auditID"].as_str().unwrap(),
            v["stage"].as_str().unwrap()
        ),
        Timestamp::parse_rfc3339(v["stageTimestamp"].as_str().unwrap_or("")).unwrap_or_default(),
        RecordKind::K8sAudit,
        Arc::from("audit_webhook.0"),
        Arc::from("k8s.audit"),
    );
    let f = &mut r.fields;
    for (from, to) in [
        ("stage", "stage"),
        ("level", "level"),
        ("auditID", "audit_id"),
        ("verb", "verb"),
        ("sourceIPs", "source_ips"),
        ("userAgent", "user_agent"),
        ("requestURI", "request_uri"),
    ] {
        put(f, to, &v[from]);
    }
    f.insert(
        "user".into(),
        json!({"username": v["user"]["username"], "uid": v["user"]["uid"], "groups": v["user"]["groups"]}),
    );
    let o = &v["objectRef"];
    if o.is_object() {
        f.insert(
            "object_ref".into(),
            json!({"resource": o["resource"], "namespace": o["namespace"], "name": o["name"], "api_version": o["apiVersion"]}),
        );
    }
    put(f, "response_code", &v["responseStatus"]["code"]);
    put(
        f,
        "decision",
        &v["annotations"]["authorization.k8s.io/decision"],
    );
    r.original = Some(Original::Raw(
        RawValue::from_string(line.to_string()).unwrap().into(),
    ));
    r
}

fn section(pairs: &[(&str, &str)]) -> Section {
    Section::from_pairs(SectionKind::Filter, "redact", pairs)
}

fn redact(pairs: &[(&str, &str)]) -> Redact {
    let mut s = section(pairs);
    let r = Redact::from_section(&mut s).unwrap();
    s.finish().unwrap();
    r
}

fn config_error(pairs: &[(&str, &str)]) -> String {
    Redact::from_section(&mut section(pairs))
        .unwrap_err()
        .to_string()
}

fn original_value(r: &Record) -> Value {
    r.original.as_ref().unwrap().to_value()
}

fn raw_bytes(r: &Record) -> &str {
    match r.original.as_ref().unwrap() {
        Original::Raw(raw) => raw.get(),
        Original::Value(v) => panic!("original was rewritten: {v}"),
    }
}

/// Asserts that `after` equals `before` except for `removed` top-level keys.
fn same_except(before: &Value, after: &Value, removed: &[&str]) {
    let mut expected = before.as_object().unwrap().clone();
    for k in removed {
        assert!(expected.remove(*k).is_some(), "{k} was not there");
    }
    assert_eq!(after.as_object().unwrap(), &expected);
}

// ---------------------------------------------------------------- the Secrets default

#[test]
fn secret_bodies_are_removed_by_default() {
    let line = with_bodies(SECRET_CREATE);
    let mut r = audit_record(&line);
    let fields_before = r.fields.clone();
    assert!(redact(&[]).apply(&mut r));
    let after = original_value(&r);
    same_except(
        &serde_json::from_str(&line).unwrap(),
        &after,
        &["requestObject", "responseObject"],
    );
    assert_eq!(r.fields, fields_before);
    let encoded = String::from_utf8(r.encode()).unwrap();
    assert!(!encoded.contains("aHVudGVyMg=="), "{encoded}");
    assert!(!encoded.contains("requestObject"), "{encoded}");
}

#[test]
fn secret_bodies_are_removed_whatever_the_level_and_whichever_says_secrets() {
    // Level says Metadata but bodies are there anyway: removed.
    let line = with_bodies(SECRET_CREATE);
    assert!(line.contains(r#""level":"Metadata""#));
    // Only the normalized field names the resource.
    let mut r = audit_record(&line.replace(r#""resource":"secrets","#, ""));
    r.fields["object_ref"]["resource"] = json!("secrets");
    redact(&[]).apply(&mut r);
    assert!(original_value(&r).get("requestObject").is_none());
    // Only the original names it (the normalized fields lack object_ref).
    let mut r = audit_record(&line);
    r.fields.remove("object_ref");
    redact(&[]).apply(&mut r);
    let v = original_value(&r);
    assert!(v.get("requestObject").is_none() && v.get("responseObject").is_none());
    // Already parsed originals too.
    let mut r = audit_record(&line);
    r.original = Some(Original::Value(serde_json::from_str(&line).unwrap()));
    redact(&[]).apply(&mut r);
    assert!(original_value(&r).get("responseObject").is_none());
    // Written with escapes the cheap pre-check cannot see through.
    let escaped = line.replace(r#""resource":"secrets""#, r#""resource":"\u0073ecrets""#);
    let mut r = audit_record(&escaped);
    r.fields.remove("object_ref");
    redact(&[]).apply(&mut r);
    assert!(original_value(&r).get("requestObject").is_none());
}

#[test]
fn the_typed_secrets_check_agrees_with_the_tree_or_defers_to_it() {
    let line = with_bodies(SECRET_CREATE);
    assert_eq!(raw_names_secrets(&line), Some(true));
    assert_eq!(raw_names_secrets(CONFIGMAP_PATCH), Some(false));
    let escaped = line.replace(r#""resource":"secrets""#, r#""resource":"\u0073ecrets""#);
    assert_eq!(raw_names_secrets(&escaped), Some(true));
    assert_eq!(
        raw_names_secrets(r#"{"objectRef":null,"x":"\u0041"}"#),
        Some(false)
    );
    assert_eq!(raw_names_secrets(r#"{"objectRef":{"resource":7}}"#), None);
    // An array is not an event (a derived struct would read it by position).
    assert_eq!(raw_names_secrets(r#"[{"resource":"secrets"}]"#), None);
    assert_eq!(
        raw_names_secrets(r#"[{"objectRef":{"resource":"secrets"}}]"#),
        None
    );
    assert_eq!(raw_names_secrets(r#"{"objectRef":["secrets"]}"#), None);
    // Duplicate keys: the tree keeps the last one; the typed reading gives up.
    let dup = r#"{"objectRef":{"resource":"pods"},"objectRef":{"resource":"secrets"},"requestObject":{"data":1}}"#;
    assert_eq!(raw_names_secrets(dup), None);
    let mut r = audit_record(&line);
    r.original = Some(Original::Raw(
        RawValue::from_string(dup.into()).unwrap().into(),
    ));
    r.fields.remove("object_ref");
    redact(&[]).apply(&mut r);
    assert!(original_value(&r).get("requestObject").is_none());
    // A normalized object_ref that is not an object settles nothing (read by position it
    // would say "pods"): the original decides.
    let mut r = audit_record(&line);
    r.fields["object_ref"] = json!(["pods"]);
    redact(&[]).apply(&mut r);
    assert!(original_value(&r).get("requestObject").is_none());
    // An event with no objectRef and an escape keeps its exact bytes.
    let health = r#"{"kind":"Event","auditID":"a","stage":"ResponseComplete","requestURI":"/livez?verbose\u0026x=1","verb":"get"}"#;
    let mut r = audit_record(health);
    assert!(r.fields.get("object_ref").is_none());
    redact(&[]).apply(&mut r);
    assert_eq!(raw_bytes(&r), health);
}

#[test]
fn secret_events_without_bodies_keep_their_exact_bytes() {
    let mut r = audit_record(SECRET_CREATE);
    redact(&[]).apply(&mut r);
    assert_eq!(raw_bytes(&r), SECRET_CREATE);
}

#[test]
fn other_resources_and_other_kinds_are_untouched() {
    let mut r = audit_record(CONFIGMAP_PATCH);
    redact(&[]).apply(&mut r);
    assert_eq!(raw_bytes(&r), CONFIGMAP_PATCH);
    // Only audit records: an Event whose original happens to look like one is left alone.
    let line = with_bodies(SECRET_CREATE);
    let mut r = audit_record(&line);
    r.kind = RecordKind::K8sEvent;
    redact(&[]).apply(&mut r);
    assert_eq!(raw_bytes(&r), line);
}

#[test]
fn secrets_keep_opts_out_only_when_written() {
    let line = with_bodies(SECRET_CREATE);
    for keep in ["keep", "KEEP"] {
        let mut r = audit_record(&line);
        redact(&[("secrets", keep)]).apply(&mut r);
        assert_eq!(raw_bytes(&r), line);
    }
    let mut r = audit_record(&line);
    redact(&[("secrets", "remove")]).apply(&mut r);
    assert!(original_value(&r).get("requestObject").is_none());
    let e = config_error(&[("secrets", "no")]);
    assert!(
        e.contains("filters[0] (redact)") && e.contains("key 'secrets'") && e.contains("keep"),
        "{e}"
    );
}

#[test]
fn records_without_original_do_not_crash() {
    let mut r = audit_record(&with_bodies(SECRET_CREATE));
    r.original = None;
    let f = redact(&[
        ("remove", "object.requestObject, user_agent"),
        ("mask", "object.data"),
    ]);
    assert!(f.apply(&mut r));
    assert!(r.original.is_none());
    assert!(!r.fields.contains_key("user_agent"));
}

fn fixtures() -> std::path::PathBuf {
    std::path::PathBuf::from(std::env::var("KUBETRAIL_FIXTURES").expect(
        "set KUBETRAIL_FIXTURES to the shared fixtures directory (e.g. ../shared/fixtures)",
    ))
}

#[test]
fn recorded_secret_events_lose_their_bodies_and_nothing_else() {
    let text = std::fs::read_to_string(
        fixtures().join("audit/kube-apiserver-1.28/audit-sample-200.jsonl"),
    )
    .unwrap();
    let f = redact(&[]);
    let (mut secrets, mut others) = (0, 0);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap();
        if v["objectRef"]["resource"] == "secrets" {
            secrets += 1;
            let line = with_bodies(line);
            let mut r = audit_record(&line);
            f.apply(&mut r);
            same_except(
                &serde_json::from_str(&line).unwrap(),
                &original_value(&r),
                &["requestObject", "responseObject"],
            );
        } else {
            others += 1;
            // Every other recorded event (bodies included) passes byte for byte.
            let mut r = audit_record(line);
            f.apply(&mut r);
            assert_eq!(raw_bytes(&r), line);
        }
    }
    assert!(secrets >= 2 && others > 100, "{secrets} {others}");
}

// ---------------------------------------------------------------- remove and mask

#[test]
fn remove_fields_and_parts_of_the_original() {
    let f = redact(&[(
        "remove",
        "user_agent, user.uid, source_ips.1, object.responseObject.metadata.managedFields, object.annotations, nope.x, object.nope",
    )]);
    let mut r = audit_record(CONFIGMAP_PATCH);
    let before: Value = serde_json::from_str(CONFIGMAP_PATCH).unwrap();
    f.apply(&mut r);
    assert!(!r.fields.contains_key("user_agent"));
    assert_eq!(
        r.fields["user"],
        json!({"username": "admin", "groups": ["system:masters", "system:authenticated"]})
    );
    assert_eq!(r.fields["source_ips"], json!(["127.0.0.1"]));
    let after = original_value(&r);
    assert!(
        after["responseObject"]["metadata"]
            .get("managedFields")
            .is_none()
    );
    assert_eq!(after["responseObject"]["metadata"]["name"], "cm-a");
    let mut expected = before.clone();
    expected["responseObject"]["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("managedFields");
    expected.as_object_mut().unwrap().remove("annotations");
    assert_eq!(after, expected);
}

#[test]
fn wildcards_reach_every_member() {
    let f = redact(&[("remove", "object.*.metadata, object.responseObject.data.*")]);
    let mut r = audit_record(CONFIGMAP_PATCH);
    f.apply(&mut r);
    let v = original_value(&r);
    assert!(v["responseObject"].get("metadata").is_none());
    assert_eq!(v["responseObject"]["data"], json!({}));
    assert_eq!(v["requestObject"]["data"]["k"], "v2");
    assert_eq!(v["objectRef"]["name"], "cm-a");
}

#[test]
fn mask_replaces_scalars_and_keeps_shapes() {
    let f = redact(&[(
        "mask",
        "object.requestObject.data, object.responseObject.data, source_ips, response_code, user.username",
    )]);
    let mut r = audit_record(CONFIGMAP_PATCH);
    f.apply(&mut r);
    let v = original_value(&r);
    assert_eq!(
        v["requestObject"]["data"],
        json!({"k": "****", "port": "****"})
    );
    assert_eq!(
        v["responseObject"]["data"],
        json!({"k": "****", "port": "****"})
    );
    assert_eq!(v["responseObject"]["metadata"]["name"], "cm-a");
    assert_eq!(r.fields["source_ips"], json!(["****", "****"]));
    assert_eq!(r.fields["response_code"], json!("****"));
    assert_eq!(r.fields["user"]["username"], json!("****"));
    assert_eq!(r.fields["user"]["uid"], json!("uid-admin"));

    let f = redact(&[
        ("mask", "object.requestObject"),
        ("mask_with", "<redacted>"),
    ]);
    let mut r = audit_record(CONFIGMAP_PATCH);
    f.apply(&mut r);
    assert_eq!(
        original_value(&r)["requestObject"],
        json!({"data": {"k": "<redacted>", "port": "<redacted>"}})
    );
    let mut r = audit_record(CONFIGMAP_PATCH);
    r.fields.insert("gone".into(), Value::Null);
    redact(&[("mask", "gone")]).apply(&mut r);
    assert_eq!(r.fields["gone"], Value::Null);
}

#[test]
fn untouched_paths_leave_the_original_bytes() {
    let f = redact(&[
        ("remove", "object.requestObject.nope, user_agent"),
        ("mask", "object.nope"),
    ]);
    let mut r = audit_record(CONFIGMAP_PATCH);
    f.apply(&mut r);
    assert_eq!(raw_bytes(&r), CONFIGMAP_PATCH);
    assert!(!r.fields.contains_key("user_agent"));
}

#[test]
fn remove_object_drops_the_original() {
    let mut r = audit_record(CONFIGMAP_PATCH);
    redact(&[("remove", "object")]).apply(&mut r);
    assert!(r.original.is_none());
    assert_eq!(r.fields["verb"], "patch");
}

#[test]
fn yaml_lists_work() {
    let mut s = section(&[]);
    s.set_list(
        "remove",
        vec!["object.requestObject".into(), "user_agent".into()],
    );
    let f = Redact::from_section(&mut s).unwrap();
    let mut r = audit_record(CONFIGMAP_PATCH);
    f.apply(&mut r);
    assert!(original_value(&r).get("requestObject").is_none());
}

#[test]
fn config_errors_name_the_filter_and_key() {
    for (key, path, what) in [
        ("remove", "id", "envelope"),
        ("mask", "tag", "envelope"),
        ("remove", "kind.x", "envelope"),
        ("remove", "user..uid", "empty part"),
        ("mask", "object.", "empty part"),
        ("remove", "*", "cannot start with '*'"),
    ] {
        let e = config_error(&[(key, path)]);
        assert!(
            e.contains("filters[0] (redact)")
                && e.contains(&format!("key '{key}'"))
                && e.contains(what),
            "{key}: {path}: {e}"
        );
    }
    let mut s = section(&[("hash", "user.username")]);
    Redact::from_section(&mut s).unwrap();
    let e = s.finish().unwrap_err().to_string();
    assert!(e.contains("key 'hash'") && e.contains("unknown key"), "{e}");
}

// ---------------------------------------------------------------- properties

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        "[a-z0-9 ]{0,6}".prop_map(Value::String),
        Just(json!("secrets")),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("objectRef".to_string()),
                    Just("resource".to_string()),
                    Just("requestObject".to_string()),
                    Just("data".to_string()),
                    Just("0".to_string()),
                    "[a-z]{1,3}"
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn applying_to_arbitrary_records_never_panics(
        fields in prop::collection::btree_map("[a-z_]{1,6}|object_ref|user", arb_json(), 0..5),
        original in prop::option::of(arb_json()),
        raw in any::<bool>(),
        audit in any::<bool>(),
        keep in any::<bool>(),
    ) {
        let mut r = Record::new(
            "x",
            Timestamp::from_unix_nanos(0),
            if audit { RecordKind::K8sAudit } else { RecordKind::K8sEvent },
            Arc::from("s"),
            Arc::from("t"),
        );
        r.fields = fields.into_iter().collect();
        r.original = original.map(|o| if raw {
            Original::Raw(RawValue::from_string(o.to_string()).unwrap().into())
        } else {
            Original::Value(o)
        });
        let f = redact(&[
            ("remove", "user.0, object.requestObject.*, object.data.0, a.*.b"),
            ("mask", "object.objectRef, user, object.*.*"),
            ("secrets", if keep { "keep" } else { "remove" }),
        ]);
        let was_secret = r.fields.get("object_ref").and_then(|o| o.get("resource")) == Some(&json!("secrets"))
            || r.original.as_ref().is_some_and(|o| o.to_value()["objectRef"]["resource"] == "secrets");
        if let Some(o) = &r.original {
            let text = o.to_value().to_string();
            if let Some(says) = raw_names_secrets(&text) {
                prop_assert_eq!(says, names_secrets(&o.to_value()));
            }
        }
        prop_assert!(f.apply(&mut r));
        if audit && !keep && was_secret && let Some(o) = &r.original {
            let v = o.to_value();
            prop_assert!(v.get("requestObject").is_none());
            prop_assert!(v.get("responseObject").is_none());
        }
    }
}
