//! Unit tests of the `http` output: body formats and options. The wire tests against a test
//! server are in `tests/outputs_http.rs`.

use kubetrail_core::config::{Section, SectionKind};
use kubetrail_state::QueueItem;

use super::*;

fn items(data: &[&str]) -> Vec<QueueItem> {
    data.iter()
        .enumerate()
        .map(|(i, d)| QueueItem {
            seq: i as u64 + 1,
            id: format!("id{i}"),
            data: d.as_bytes().to_vec().into(),
        })
        .collect()
}

fn output(pairs: &[(&str, &str)]) -> Result<HttpOutput, ConfigError> {
    let mut s = Section::from_pairs(SectionKind::Output, "http", pairs);
    let o = HttpOutput::from_section(&mut s)?;
    s.finish()?;
    Ok(o)
}

#[test]
fn json_lines_and_json_array_bodies() {
    let batch = items(&[r#"{"a":1}"#, "{\n \"b\": [1,\n 2]\n}"]);
    let lines = HttpOutput::render(BodyFormat::JsonLines, &batch);
    assert_eq!(
        String::from_utf8(lines).unwrap(),
        "{\"a\":1}\n{\"b\":[1,2]}\n"
    );
    let array = HttpOutput::render(BodyFormat::Json, &batch);
    let v: serde_json::Value = serde_json::from_slice(&array).unwrap();
    assert_eq!(v, serde_json::json!([{"a": 1}, {"b": [1, 2]}]));
    assert_eq!(HttpOutput::render(BodyFormat::Json, &[]), b"[]");
}

#[test]
fn options() {
    let o = output(&[]).unwrap();
    assert_eq!(
        (o.config.format, o.config.path.as_str()),
        (BodyFormat::JsonLines, "/")
    );
    let o = output(&[("format", "JSON"), ("uri", "/ingest?x=1"), ("port", "8080")]).unwrap();
    assert_eq!(
        (o.config.format, o.config.path.as_str()),
        (BodyFormat::Json, "/ingest?x=1")
    );
    assert_eq!(
        o.sender.url_for(&o.config.path),
        "http://127.0.0.1:8080/ingest?x=1"
    );
    let o = output(&[("url", "https://collector.example")]).unwrap();
    assert_eq!(
        o.sender.url_for(&o.config.path),
        "https://collector.example/"
    );
    assert!(output(&[("format", "msgpack")]).is_err());
    assert!(output(&[("compress", "zstd")]).is_err());
    assert!(
        output(&[("formt", "json")])
            .unwrap_err()
            .to_string()
            .contains("format")
    );
    // TLS files are read at start: a missing CA is a configuration error.
    let e = output(&[("tls", "on"), ("tls.ca_file", "/nonexistent/ca.pem")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/ca.pem"), "{e}");
}
