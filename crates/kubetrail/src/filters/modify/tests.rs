//! Tests of the modify filter: each rule on real Event records, dotted paths, the fixed rule
//! order, protected keys, configuration errors, and properties (no panics).

use std::sync::Arc;

use kubetrail_core::config::{Section, SectionKind};
use kubetrail_core::{Original, Record, RecordKind, Timestamp};
use proptest::prelude::*;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::*;

// From the recorded `kubectl get events -A -o json` (events-A.json), with a label added.
const WARNING_EVENT: &str = r#"{"action":"Scheduling","apiVersion":"v1","eventTime":"2026-11-27T00:16:47.303068Z","firstTimestamp":null,"involvedObject":{"apiVersion":"v1","kind":"Pod","name":"dep-a-84bdd5d788-lfbnk","namespace":"anchor-demo","resourceVersion":"251","uid":"b5e7f58c-3395-43d2-b6e7-0575c74b5d02"},"kind":"Event","lastTimestamp":null,"message":"no nodes available to schedule pods","metadata":{"creationTimestamp":"2026-11-27T00:16:47Z","labels":{"app":"dep-a"},"name":"dep-a-84bdd5d788-lfbnk.18ebbebfc5c11ab1","namespace":"anchor-demo","resourceVersion":"254","uid":"a3a7de79-7352-416e-9790-ebb4c046045f"},"reason":"FailedScheduling","reportingComponent":"default-scheduler","reportingInstance":"default-scheduler-vm","source":{},"type":"Warning"}"#;

fn put(m: &mut Map<String, Value>, key: &str, v: &Value) {
    if !v.is_null() {
        m.insert(key.to_string(), v.clone());
    }
}

/// An Event record shaped like the kubernetes_events source makes them.
fn event_record(line: &str) -> Record {
    let v: Value = serde_json::from_str(line).unwrap();
    let m = &v["metadata"];
    let mut r = Record::new(
        format!(
            "{}:{}",
            m["uid"].as_str().unwrap(),
            m["resourceVersion"].as_str().unwrap()
        ),
        Timestamp::from_unix_nanos(1_795_739_807_000_000_000),
        RecordKind::K8sEvent,
        Arc::from("kubernetes_events.0"),
        Arc::from("k8s.events"),
    );
    let f = &mut r.fields;
    put(f, "namespace", &m["namespace"]);
    put(f, "name", &m["name"]);
    put(f, "uid", &m["uid"]);
    put(f, "resource_version", &m["resourceVersion"]);
    put(f, "reason", &v["reason"]);
    put(f, "type", &v["type"]);
    put(f, "message", &v["message"]);
    put(f, "action", &v["action"]);
    let io = &v["involvedObject"];
    let mut obj = Map::new();
    put(&mut obj, "kind", &io["kind"]);
    put(&mut obj, "name", &io["name"]);
    put(&mut obj, "namespace", &io["namespace"]);
    put(&mut obj, "uid", &io["uid"]);
    put(&mut obj, "api_version", &io["apiVersion"]);
    f.insert("involved_object".into(), Value::Object(obj));
    put(f, "reporting_controller", &v["reportingComponent"]);
    put(f, "reporting_instance", &v["reportingInstance"]);
    f.insert("count".into(), json!(v["count"].as_u64().unwrap_or(1)));
    f.insert("api".into(), json!("core/v1"));
    r.original = Some(Original::Raw(
        RawValue::from_string(line.to_string()).unwrap().into(),
    ));
    r
}

fn build(pairs: &[(&str, &str)], lists: &[(&str, &[&str])]) -> Result<Modify, String> {
    let mut s = Section::from_pairs(SectionKind::Filter, "modify", pairs);
    for (k, items) in lists {
        s.set_list(k, items.iter().map(|i| i.to_string()).collect());
    }
    let m = Modify::from_section(&mut s).map_err(|e| e.to_string())?;
    s.finish().map_err(|e| e.to_string())?;
    Ok(m)
}

fn modify(pairs: &[(&str, &str)], lists: &[(&str, &[&str])]) -> Modify {
    build(pairs, lists).unwrap()
}

fn applied(pairs: &[(&str, &str)], lists: &[(&str, &[&str])]) -> Record {
    let mut r = event_record(WARNING_EVENT);
    assert!(modify(pairs, lists).apply(&mut r));
    r
}

fn raw_bytes(r: &Record) -> &str {
    match r.original.as_ref().unwrap() {
        Original::Raw(raw) => raw.get(),
        Original::Value(v) => panic!("original was rewritten: {v}"),
    }
}

#[test]
fn add_only_when_absent() {
    let r = applied(&[], &[("add", &["cluster prod-eu", "reason Overwritten"])]);
    assert_eq!(r.fields["cluster"], "prod-eu");
    assert_eq!(r.fields["reason"], "FailedScheduling");
    assert_eq!(raw_bytes(&r), WARNING_EVENT);
    let encoded: Value = serde_json::from_slice(&r.encode()).unwrap();
    assert_eq!(encoded["cluster"], "prod-eu");
}

#[test]
fn set_overwrites_and_values_are_strings() {
    let r = applied(
        &[],
        &[("set", &["reason Overwritten", "count 5", "team sre"])],
    );
    assert_eq!(r.fields["reason"], "Overwritten");
    assert_eq!(r.fields["count"], json!("5"));
    assert_eq!(r.fields["team"], "sre");
}

#[test]
fn values_keep_everything_after_the_key_and_lose_surrounding_quotes() {
    let r = applied(
        &[],
        &[(
            "set",
            &[
                "note no nodes, none at all",
                r#"quoted "  spaced  ""#,
                r#""my key" v"#,
                r#"empty """#,
                "single 'it''s'",
            ],
        )],
    );
    assert_eq!(r.fields["note"], "no nodes, none at all");
    assert_eq!(r.fields["quoted"], "  spaced  ");
    assert_eq!(r.fields["my key"], "v");
    assert_eq!(r.fields["empty"], "");
    assert_eq!(r.fields["single"], "it''s");
}

#[test]
fn dotted_paths_create_objects_and_respect_non_objects() {
    let r = applied(
        &[],
        &[(
            "set",
            &[
                "labels.team sre",
                "labels.env prod",
                "involved_object.cluster prod-eu",
                "reason.sub x",
            ],
        )],
    );
    assert_eq!(r.fields["labels"], json!({"team": "sre", "env": "prod"}));
    assert_eq!(r.fields["involved_object"]["cluster"], "prod-eu");
    assert_eq!(r.fields["involved_object"]["kind"], "Pod");
    // `reason` is a string: nothing is written through it.
    assert_eq!(r.fields["reason"], "FailedScheduling");
}

#[test]
fn rename_moves_only_into_free_keys() {
    let r = applied(&[("rename", "involved_object.kind object_kind")], &[]);
    assert_eq!(r.fields["object_kind"], "Pod");
    assert!(r.fields["involved_object"].get("kind").is_none());

    // NEW exists: nothing happens.
    let r = applied(&[("rename", "reason type")], &[]);
    assert_eq!(r.fields["reason"], "FailedScheduling");
    assert_eq!(r.fields["type"], "Warning");
    // hard_rename replaces it.
    let r = applied(&[("hard_rename", "reason type")], &[]);
    assert!(!r.fields.contains_key("reason"));
    assert_eq!(r.fields["type"], "FailedScheduling");
    // OLD missing: nothing happens.
    let r = applied(&[("rename", "nope other")], &[]);
    assert!(!r.fields.contains_key("other"));
    // NEW runs through a string: OLD stays.
    let r = applied(&[("hard_rename", "action reason.action")], &[]);
    assert_eq!(r.fields["action"], "Scheduling");
    assert_eq!(r.fields["reason"], "FailedScheduling");
    // Into a nested place.
    let r = applied(&[("rename", "action event.action")], &[]);
    assert_eq!(r.fields["event"], json!({"action": "Scheduling"}));
}

#[test]
fn copy_reads_fields_envelope_and_original() {
    let r = applied(
        &[],
        &[(
            "copy",
            &[
                "involved_object.name pod",
                "object.metadata.labels.app app",
                "tag route",
                "kind record_kind",
                "object.nope never",
                "reason type",
            ],
        )],
    );
    assert_eq!(r.fields["pod"], "dep-a-84bdd5d788-lfbnk");
    assert_eq!(
        r.fields["involved_object"]["name"],
        "dep-a-84bdd5d788-lfbnk"
    );
    assert_eq!(r.fields["app"], "dep-a");
    assert_eq!(r.fields["route"], "k8s.events");
    assert_eq!(r.fields["record_kind"], "k8s_event");
    assert!(!r.fields.contains_key("never"));
    assert_eq!(r.fields["type"], "Warning");
    assert_eq!(raw_bytes(&r), WARNING_EVENT);
    let r = applied(&[("hard_copy", "reason type")], &[]);
    assert_eq!(r.fields["type"], "FailedScheduling");
    assert_eq!(r.fields["reason"], "FailedScheduling");
    // Whole objects copy deeply.
    let r = applied(&[("copy", "involved_object io")], &[]);
    assert_eq!(r.fields["io"], r.fields["involved_object"]);
}

#[test]
fn removes() {
    let r = applied(
        &[],
        &[
            (
                "remove",
                &["action", "involved_object.uid", "nope", "reason.x"],
            ),
            ("remove_wildcard", &["reporting_*"]),
            ("remove_regex", &["^(api|count)$"]),
        ],
    );
    assert!(!r.fields.contains_key("action"));
    assert!(r.fields["involved_object"].get("uid").is_none());
    assert_eq!(r.fields["involved_object"]["kind"], "Pod");
    assert!(!r.fields.contains_key("reporting_controller"));
    assert!(!r.fields.contains_key("reporting_instance"));
    assert!(!r.fields.contains_key("api") && !r.fields.contains_key("count"));
    assert_eq!(r.fields["reason"], "FailedScheduling");
    assert_eq!(raw_bytes(&r), WARNING_EVENT);
}

#[test]
fn rules_run_in_the_documented_order() {
    // rename before add, add before set, copy before remove: a move.
    let r = applied(
        &[
            ("rename", "reason why"),
            ("add", "reason added"),
            ("set", "reason set"),
        ],
        &[],
    );
    assert_eq!(r.fields["why"], "FailedScheduling");
    assert_eq!(r.fields["reason"], "set");
    let r = applied(&[("copy", "message msg"), ("remove", "message")], &[]);
    assert_eq!(r.fields["msg"], "no nodes available to schedule pods");
    assert!(!r.fields.contains_key("message"));
    // Within one key, in list order.
    let r = applied(&[], &[("rename", &["a b", "reason a"])]);
    assert_eq!(r.fields["a"], "FailedScheduling");
    assert!(!r.fields.contains_key("b"));
}

#[test]
fn protected_keys_are_config_errors() {
    for (key, rule, what) in [
        ("rename", "tag t2", "envelope"),
        ("rename", "reason id", "envelope"),
        ("hard_rename", "object.kind k", "original object"),
        ("remove", "id", "envelope"),
        ("remove", "time", "envelope"),
        ("set", "kind x", "envelope"),
        ("add", "source.x y", "envelope"),
        ("add", "object.x y", "original object"),
        ("copy", "reason tag", "envelope"),
        ("copy", "reason object.x", "original object"),
    ] {
        let e = build(&[(key, rule)], &[]).unwrap_err();
        assert!(
            e.contains("filters[0] (modify)")
                && e.contains(&format!("key '{key}'"))
                && e.contains(what),
            "{key}: {rule}: {e}"
        );
    }
}

#[test]
fn config_errors_name_the_filter_and_key() {
    for (key, rule, what) in [
        ("add", "cluster", "missing value"),
        ("set", "  ", "empty rule"),
        ("rename", "reason", "expected 'OLD NEW'"),
        ("copy", "reason", "expected 'FROM TO'"),
        ("rename", "a b c", "found more"),
        ("remove", "a b", "found more"),
        ("remove_wildcard", "a* b", "found more"),
        ("remove_regex", "(", "invalid regular expression"),
        ("add", "\"unterminated v", "unterminated quote"),
        ("set", "a..b v", "empty part"),
    ] {
        let e = build(&[(key, rule)], &[]).unwrap_err();
        assert!(
            e.contains("filters[0] (modify)")
                && e.contains(&format!("key '{key}'"))
                && e.contains(what),
            "{key}: {rule}: {e}"
        );
    }
    let e = build(&[], &[]).unwrap_err();
    assert!(e.contains("at least one rule"), "{e}");
    let e = build(&[("add", "a b"), ("condition", "x")], &[]).unwrap_err();
    assert!(
        e.contains("key 'condition'") && e.contains("unknown key"),
        "{e}"
    );
}

#[test]
fn wildcard_matching() {
    assert!(wildcard(b"reporting_*", b"reporting_instance"));
    assert!(wildcard(b"*_time", b"first_time"));
    assert!(wildcard(b"*", b""));
    assert!(wildcard(b"a*b*c", b"aXbYbc"));
    assert!(!wildcard(b"a*b*c", b"aXbY"));
    assert!(!wildcard(b"reason", b"reasons"));
}

fn fixtures() -> std::path::PathBuf {
    std::path::PathBuf::from(std::env::var("KUBETRAIL_FIXTURES").expect(
        "set KUBETRAIL_FIXTURES to the shared fixtures directory (e.g. ../shared/fixtures)",
    ))
}

#[test]
fn recorded_events_get_a_cluster_label() {
    let text = std::fs::read_to_string(fixtures().join("events/kube-apiserver-1.28/events-A.json"))
        .unwrap();
    let list: Value = serde_json::from_str(&text).unwrap();
    let items = list["items"].as_array().unwrap();
    assert!(!items.is_empty());
    let m = modify(&[("add", "cluster prod-eu")], &[]);
    for item in items {
        let line = item.to_string();
        let mut r = event_record(&line);
        let before = r.fields.clone();
        assert!(m.apply(&mut r));
        assert_eq!(r.fields["cluster"], "prod-eu");
        assert_eq!(r.fields.len(), before.len() + 1);
        assert_eq!(raw_bytes(&r), line);
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        "[a-z ]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-c]|reason|labels", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn parsing_arbitrary_rules_never_panics(text in "\\PC{0,24}|[ab.\"' *]{0,12}") {
        for key in KEYS {
            let _ = parse_op(key, &text);
        }
    }

    #[test]
    fn applying_to_arbitrary_records_never_panics(
        fields in prop::collection::btree_map("[a-c]|reason|labels|involved_object", arb_json(), 0..5),
        original in prop::option::of(arb_json()),
    ) {
        let mut r = event_record(WARNING_EVENT);
        r.fields = fields.into_iter().collect();
        r.original = original.map(Original::Value);
        let m = modify(&[], &[
            ("rename", &["a b", "labels.a c.d", "reason a.b"]),
            ("hard_rename", &["b.a a.b.c"]),
            ("copy", &["object.a labels.x", "labels.0 z", "tag a.t"]),
            ("hard_copy", &["a a.a"]),
            ("add", &["labels.team sre", "a.b.c x"]),
            ("set", &["involved_object.kind X", "b y"]),
            ("remove", &["c.d", "labels.a"]),
            ("remove_wildcard", &["*x*"]),
            ("remove_regex", &["^z$"]),
        ]);
        prop_assert!(m.apply(&mut r));
    }
}
