//! Unit tests of the `elasticsearch` output: index patterns, documents, the bulk body and the
//! bulk answer. Wire tests (partial failures, 409, dead letters) are in
//! `tests/outputs_http.rs`.

use kubetrail_core::Timestamp;
use kubetrail_core::config::{Section, SectionKind};
use kubetrail_state::QueueItem;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn config(pairs: &[(&str, &str)]) -> Result<EsConfig, ConfigError> {
    let mut s = Section::from_pairs(SectionKind::Output, "elasticsearch", pairs);
    let (_, c) = EsConfig::from_section(&mut s)?;
    s.finish()?;
    Ok(c)
}

fn ts(s: &str) -> Timestamp {
    Timestamp::parse_rfc3339(s).unwrap()
}

#[test]
fn index_patterns() {
    let p = IndexPattern::parse("kubetrail-%Y.%m.%d").unwrap();
    assert!(p.is_dated());
    assert_eq!(
        p.render(ts("2026-03-04T23:59:59.9Z")),
        "kubetrail-2026.03.04"
    );
    assert_eq!(
        IndexPattern::parse("k8s-%y%j-%H%%")
            .unwrap()
            .render(ts("2026-02-01T07:00:00Z")),
        "k8s-26032-07%"
    );
    assert!(!IndexPattern::parse("plain").unwrap().is_dated());
    for bad in ["Upper", "a b", "a/b", "-x", "_x", "%Q", "x%", "", ".", "a*"] {
        assert!(IndexPattern::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn options() {
    let c = config(&[]).unwrap();
    assert_eq!(c.index, IndexPattern::parse(DEFAULT_INDEX).unwrap());
    assert!(
        c.bulk_path.starts_with("/_bulk?filter_path="),
        "{}",
        c.bulk_path
    );
    assert_eq!(c.type_name, None);
    assert_eq!(c.time_key.as_deref(), Some("@timestamp"));
    let c = config(&[
        ("path", "/es/"),
        ("pipeline", "k8s events"),
        ("suppress_type_name", "off"),
        ("time_key", ""),
    ])
    .unwrap();
    assert!(
        c.bulk_path.starts_with("/es/_bulk?") && c.bulk_path.ends_with("&pipeline=k8s%20events"),
        "{}",
        c.bulk_path
    );
    assert_eq!(c.type_name.as_deref(), Some("_doc"));
    assert_eq!(c.time_key, None);
    let c = config(&[("logstash_format", "on"), ("logstash_prefix", "k8s")]).unwrap();
    assert_eq!(c.index.render(ts("2026-01-02T00:00:00Z")), "k8s-2026.01.02");
    assert!(config(&[("logstash_format", "on"), ("index", "x")]).is_err());
    assert!(
        config(&[("index", "Bad")])
            .unwrap_err()
            .to_string()
            .contains("lower case")
    );
    let c = config(&[("url", "https://es.example:9243/proxy")]).unwrap();
    assert!(c.bulk_path.starts_with("/proxy/_bulk?"));
}

#[test]
fn documents_get_the_time_key_and_their_own_days_index() {
    let c = config(&[]).unwrap();
    let now = ts("2030-01-01T00:00:00Z");
    let d = prepare(
        &c,
        br#"{"id":"a","time":"2026-11-27T00:31:51Z","x":1}"#,
        now,
    );
    assert_eq!(d.index, "kubetrail-2026.11.27");
    let v: Value = serde_json::from_slice(&d.body).unwrap();
    assert_eq!(
        v,
        json!({"@timestamp": "2026-11-27T00:31:51Z", "id": "a", "time": "2026-11-27T00:31:51Z", "x": 1})
    );
    // Already there: kept as it is, byte for byte.
    let raw = br#"{"@timestamp":"2000-01-01T00:00:00Z","time":"2026-11-27T00:31:51Z"}"#;
    assert_eq!(&*prepare(&c, raw, now).body, raw);
    // Raw-format audit event: its stageTimestamp; pretty-printed: one line.
    let d = prepare(
        &c,
        b"{\n \"kind\": \"Event\",\n \"stageTimestamp\": \"2026-05-06T01:02:03Z\"\n}",
        now,
    );
    assert_eq!(d.index, "kubetrail-2026.05.06");
    assert!(!d.body.contains(&b'\n'));
    assert_eq!(
        serde_json::from_slice::<Value>(&d.body).unwrap()["@timestamp"],
        "2026-05-06T01:02:03Z"
    );
    // No time at all: now.
    let d = prepare(&c, b"{}", now);
    assert_eq!(
        (d.index.as_str(), &*d.body),
        (
            "kubetrail-2030.01.01",
            &br#"{"@timestamp":"2030-01-01T00:00:00Z"}"#[..]
        )
    );

    let c = config(&[("replace_dots", "on"), ("time_key", "")]).unwrap();
    let d = prepare(&c, br#"{"time":"2026-11-27T00:31:51Z","labels":{"app":"x","app.kubernetes.io/name":"y"},"a":[{"b.c":1}]}"#, now);
    let v: Value = serde_json::from_slice(&d.body).unwrap();
    assert_eq!(
        v,
        json!({"time": "2026-11-27T00:31:51Z", "labels": {"app": "x", "app_kubernetes_io/name": "y"}, "a": [{"b_c": 1}]})
    );
}

#[test]
fn bulk_body_is_ndjson_with_create_actions() {
    let c = config(&[("suppress_type_name", "off")]).unwrap();
    let batch: Vec<QueueItem> = (0..3)
        .map(|i| QueueItem {
            seq: 10 + i,
            id: format!("uid-{i}:\"rv\""),
            data: format!(r#"{{"time":"2026-11-2{i}T00:00:00Z","n":{i}}}"#)
                .into_bytes()
                .into(),
        })
        .collect();
    let body = bulk_body(&c, &batch, &[0, 2], Timestamp::now());
    let text = String::from_utf8(body).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(text.ends_with('\n'));
    assert_eq!(lines.len(), 4);
    assert_eq!(
        lines[0],
        json!({"create": {"_index": "kubetrail-2026.11.20", "_type": "_doc", "_id": "uid-0:\"rv\""}})
    );
    assert_eq!(lines[1]["n"], 0);
    assert_eq!(lines[2]["create"]["_id"], "uid-2:\"rv\"");
    assert_eq!(lines[3]["n"], 2);
}

#[test]
fn bulk_answers() {
    assert_eq!(
        read_answer(br#"{"errors":false,"items":[]}"#, 3).unwrap(),
        None
    );
    let a = br#"{"errors":true,"items":[
        {"create":{"status":201}},
        {"create":{"status":409,"error":{"type":"version_conflict_engine_exception","reason":"exists"}}},
        {"create":{"status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}},
        {"create":{"status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse","caused_by":{"reason":"bad date"}}}},
        {"create":{"status":503,"error":"unavailable"}}]}"#;
    let f = read_answer(a, 5).unwrap().unwrap();
    assert_eq!(f[0], Fate::Indexed);
    assert_eq!(f[1], Fate::Indexed);
    assert!(matches!(&f[2], Fate::Retry(r) if r.contains("429") && r.contains("queue full")));
    assert!(
        matches!(&f[3], Fate::Refused(r) if r.contains("mapper_parsing_exception") && r.contains("bad date"))
    );
    assert!(matches!(&f[4], Fate::Retry(r) if r.contains("unavailable")));
    assert!(read_answer(a, 4).is_err());
    assert!(read_answer(b"<html>", 1).is_err());
}

proptest! {
    #[test]
    fn prepared_documents_stay_valid_json(key in "[a-z@]{0,8}", text in "\\PC{0,30}", pretty in any::<bool>()) {
        let c = config(&[("time_key", key.as_str())]).unwrap();
        let v = json!({"time": "2026-11-27T00:31:51Z", "t": text});
        let data = if pretty { serde_json::to_vec_pretty(&v).unwrap() } else { serde_json::to_vec(&v).unwrap() };
        let d = prepare(&c, &data, Timestamp::now());
        prop_assert!(!d.body.contains(&b'\n'));
        let out: Value = serde_json::from_slice(&d.body).unwrap();
        prop_assert_eq!(&out["t"], &v["t"]);
    }

    #[test]
    fn index_pattern_parser_never_panics(s in "\\PC{0,20}") {
        if let Ok(p) = IndexPattern::parse(&s) {
            let _ = p.render(Timestamp::now());
        }
    }

    #[test]
    fn bulk_answer_reader_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200), n in 0usize..4) {
        let _ = read_answer(&data, n);
    }
}
