//! Unit tests of the `loki` output: the push body (labels, grouping, ordering, metadata,
//! line formats) and the options. Wire tests are in `tests/outputs_http.rs`.

use kubetrail_core::Timestamp;
use kubetrail_core::config::{Section, SectionKind};
use kubetrail_state::QueueItem;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn config(pairs: &[(&str, &str)]) -> Result<LokiConfig, ConfigError> {
    let mut s = Section::from_pairs(SectionKind::Output, "loki", pairs);
    let (_, c) = LokiConfig::from_section(&mut s)?;
    s.finish()?;
    Ok(c)
}

fn item(seq: u64, v: Value) -> QueueItem {
    QueueItem {
        seq,
        id: format!("id{seq}"),
        data: serde_json::to_vec(&v).unwrap().into(),
    }
}

fn event(seq: u64, ns: &str, time: &str) -> QueueItem {
    item(
        seq,
        json!({"id": format!("u{seq}:1"), "time": time, "kind": "k8s_event", "source": "kubernetes_events.0",
               "tag": "k8s.events", "namespace": ns, "name": format!("pod-{seq}"), "message": "hi"}),
    )
}

fn body(c: &LokiConfig, batch: &[QueueItem]) -> Value {
    serde_json::from_slice(&push_body(c, batch, Timestamp::from_unix_nanos(42))).unwrap()
}

#[test]
fn groups_by_label_set_and_sorts_values_by_time() {
    let c = config(&[]).unwrap();
    let batch = vec![
        event(1, "b", "2026-11-27T00:00:03Z"),
        event(2, "a", "2026-11-27T00:00:02Z"),
        event(3, "b", "2026-11-27T00:00:01Z"),
        event(4, "b", "2026-11-27T00:00:03Z"),
    ];
    let v = body(&c, &batch);
    let streams = v["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 2);
    assert_eq!(
        streams[0]["stream"],
        json!({"job": "kubetrail", "kind": "k8s_event", "namespace": "a", "source": "kubernetes_events.0"})
    );
    assert_eq!(streams[1]["stream"]["namespace"], "b");
    let b = streams[1]["values"].as_array().unwrap();
    let times: Vec<&str> = b.iter().map(|e| e[0].as_str().unwrap()).collect();
    let t = |s: &str| {
        Timestamp::parse_rfc3339(s)
            .unwrap()
            .unix_nanos()
            .to_string()
    };
    assert_eq!(
        times,
        vec![
            t("2026-11-27T00:00:01Z"),
            t("2026-11-27T00:00:03Z"),
            t("2026-11-27T00:00:03Z")
        ]
    );
    // Equal times keep the queue order; the line is the record itself.
    let ids: Vec<String> = b
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(e[1].as_str().unwrap()).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids, vec!["u3:1", "u1:1", "u4:1"]);
    assert_eq!(
        serde_json::from_str::<Value>(b[0][1].as_str().unwrap()).unwrap(),
        serde_json::from_slice::<Value>(&batch[2].data).unwrap()
    );
    // No structured metadata configured: two-element values.
    assert!(b.iter().all(|e| e.as_array().unwrap().len() == 2));
}

#[test]
fn audit_namespace_cluster_and_missing_fields() {
    let c = config(&[]).unwrap();
    let audit = item(
        1,
        json!({"id": "a:ResponseComplete", "time": "2026-11-27T00:00:01Z", "kind": "k8s_audit", "source": "audit",
               "tag": "t", "object_ref": {"namespace": "fx", "name": "s"}, "cluster": "prod"}),
    );
    let bare = item(2, json!({"no": "fields"}));
    let v = body(&c, &[audit, bare]);
    let s = v["streams"].as_array().unwrap();
    let labels: Vec<&Value> = s.iter().map(|x| &x["stream"]).collect();
    assert!(labels.contains(&&json!({"cluster": "prod", "job": "kubetrail", "kind": "k8s_audit", "namespace": "fx", "source": "audit"})));
    assert!(labels.contains(&&json!({"job": "kubetrail"})));
    // No time: now.
    let bare_stream = s
        .iter()
        .find(|x| x["stream"] == json!({"job": "kubetrail"}))
        .unwrap();
    assert_eq!(bare_stream["values"][0][0], "42");
}

#[test]
fn structured_metadata_remove_keys_and_key_value_lines() {
    let c = config(&[
        ("labels", "job=audit, env=prod"),
        ("label_keys", "verb, user_name=user.username"),
        (
            "structured_metadata",
            "id=$id, $object_ref['name'], static=x",
        ),
        ("remove_keys", "object, user.groups"),
    ])
    .unwrap();
    let rec = item(
        1,
        json!({"id": "a:1", "time": "2026-11-27T00:00:01Z", "verb": "get", "user": {"username": "bob", "groups": ["g"]},
               "object_ref": {"name": "s1"}, "object": {"big": true}}),
    );
    let v = body(&c, std::slice::from_ref(&rec));
    let s = &v["streams"][0];
    assert_eq!(
        s["stream"],
        json!({"env": "prod", "job": "audit", "user_name": "bob", "verb": "get"})
    );
    let e = &s["values"][0];
    assert_eq!(
        e[2],
        json!({"id": "a:1", "object_ref_name": "s1", "static": "x"})
    );
    let line: Value = serde_json::from_str(e[1].as_str().unwrap()).unwrap();
    assert!(
        line.get("object").is_none() && line["user"] == json!({"username": "bob"}),
        "{line}"
    );

    let c = config(&[("line_format", "key_value")]).unwrap();
    let v = body(
        &c,
        &[item(
            1,
            json!({"a": "x y", "b": "plain", "c": 3, "d": {"e": 1}, "f": ""}),
        )],
    );
    assert_eq!(
        v["streams"][0]["values"][0][1],
        r#"a="x y" b=plain c=3 d={"e":1} f="""#
    );
}

#[test]
fn label_values_are_sanitized() {
    assert_eq!(label_value(&json!("a\nb\tc")).as_deref(), Some("a b c"));
    assert_eq!(label_value(&json!(3)).as_deref(), Some("3"));
    assert_eq!(label_value(&json!(null)), None);
    assert_eq!(label_value(&json!("  ")), None);
    let long = "é".repeat(1000);
    let v = label_value(&json!(long)).unwrap();
    assert!(v.len() <= 1024 && v.chars().all(|c| c == 'é'));
}

#[test]
fn pretty_printed_records_are_one_line() {
    let c = config(&[]).unwrap();
    let it = QueueItem {
        seq: 1,
        id: "x".into(),
        data: b"{\n  \"kind\": \"k8s_event\",\n  \"time\": \"2026-11-27T00:00:01Z\"\n}"
            .to_vec()
            .into(),
    };
    let v = body(&c, &[it]);
    assert_eq!(
        v["streams"][0]["values"][0][1],
        r#"{"kind":"k8s_event","time":"2026-11-27T00:00:01Z"}"#
    );
}

#[test]
fn options_and_errors() {
    let c = config(&[]).unwrap();
    assert_eq!(c.path, "/loki/api/v1/push");
    assert_eq!(c.labels.len(), 1 + DEFAULT_LABEL_KEYS.len());
    assert!(config(&[("labels", "bad-name=x")]).is_err());
    assert!(config(&[("labels", "__name__=x")]).is_err());
    assert!(
        config(&[("labels", "kind=x")])
            .unwrap_err()
            .to_string()
            .contains("twice")
    );
    assert!(config(&[("labels", "novalue")]).is_err());
    assert!(config(&[("labels", ""), ("label_keys", "")]).is_err());
    assert!(config(&[("label_keys", "$a['b")]).is_err());
    assert!(config(&[("line_format", "xml")]).is_err());
    assert!(config(&[("tenant_id", "team-a")]).is_ok());
    let c = config(&[("url", "https://logs.example/loki/api/v1/push")]).unwrap();
    assert_eq!(c.path, "/loki/api/v1/push");
}

#[test]
fn field_paths() {
    let p = |s: &str| FieldPath::parse(s).map(|p| p.0);
    assert_eq!(p("a.b").unwrap(), vec!["a", "b"]);
    assert_eq!(p("$kind").unwrap(), vec!["kind"]);
    assert_eq!(
        p("$object['metadata']['labels']['app.kubernetes.io/name']").unwrap(),
        vec!["object", "metadata", "labels", "app.kubernetes.io/name"]
    );
    assert_eq!(p("$a[\"b\"].c").unwrap(), vec!["a", "b", "c"]);
    assert!(p("a..b").is_err() && p("").is_err() && p("$a[b]").is_err());
    let v = json!({"a": {"b": [10, 20]}});
    assert_eq!(
        FieldPath::parse("a.b.1").unwrap().lookup(&v),
        Some(&json!(20))
    );
    assert_eq!(FieldPath::parse("a.b.1").unwrap().label_name(), "a_b_1");
}

proptest! {
    #[test]
    fn field_path_parser_never_panics(s in "\\PC{0,30}") {
        let _ = FieldPath::parse(&s);
    }

    #[test]
    fn push_body_is_always_valid_json(data in proptest::collection::vec(any::<u8>(), 0..100), text in "\\PC{0,40}") {
        let c = config(&[("structured_metadata", "m=$x")]).unwrap();
        let batch = vec![
            QueueItem { seq: 1, id: "a".into(), data: data.into() },
            item(2, json!({"kind": text.clone(), "x": text, "time": "2026-11-27T00:00:01Z"})),
        ];
        let v: Value = serde_json::from_slice(&push_body(&c, &batch, Timestamp::now())).unwrap();
        let n: usize = v["streams"].as_array().unwrap().iter().map(|s| s["values"].as_array().unwrap().len()).sum();
        prop_assert_eq!(n, 2);
    }
}
