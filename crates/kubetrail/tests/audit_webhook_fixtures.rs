//! The audit parsers against the shared real-world fixtures (read from `KUBETRAIL_FIXTURES`):
//! every audit log line and single-event file (audit.k8s.io/v1, v1beta1 and no apiVersion)
//! parses and normalizes, the malformed `fal_01_003.json` is refused cleanly, and the recorded
//! apiserver webhook POSTs give the same records (ids, dedup keys, fields) as the same events
//! read from the audit log.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kubetrail::sources::audit::{self, AuditItem, AuditParseError};
use kubetrail_core::{Original, Record, RecordKind, Timestamp};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(std::env::var("KUBETRAIL_FIXTURES").expect(
        "KUBETRAIL_FIXTURES must point at the shared fixtures directory (e.g. ../shared/fixtures)",
    ))
}

fn names() -> (Arc<str>, Arc<str>) {
    (Arc::from("audit.test"), Arc::from("k8s.audit"))
}

fn lines(path: &Path) -> Vec<Vec<u8>> {
    std::fs::read(path)
        .unwrap()
        .split(|b| *b == b'\n')
        .filter(|l| !l.trim_ascii().is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// The body of a recorded webhook POST (after the blank line).
fn post_body(n: usize) -> Vec<u8> {
    let raw =
        std::fs::read(fixtures().join(format!("kube-api/audit-webhook-post-{n}.txt"))).unwrap();
    let at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a blank line after the headers");
    raw[at + 4..].to_vec()
}

/// Checks what must hold for every parsed event against the event itself (read generically).
fn check(item: &AuditItem, line: &[u8]) -> Record {
    let v: Value = serde_json::from_slice(line).unwrap();
    assert_eq!(item.audit_id(), v["auditID"].as_str().unwrap());
    assert_eq!(item.stage(), v["stage"].as_str().unwrap());
    let expected_time = ["stageTimestamp", "requestReceivedTimestamp", "timestamp"]
        .iter()
        .find_map(|k| v[*k].as_str().and_then(Timestamp::parse_rfc3339));
    assert!(expected_time.is_some(), "every fixture event has a time");
    assert_eq!(item.time, expected_time);
    let (s, t) = names();
    let r = audit::normalize(item.clone(), &s, &t, false);
    assert_eq!(r.id, format!("{}/{}", item.audit_id(), item.stage()));
    assert_eq!(r.kind, RecordKind::K8sAudit);
    let d = r.dedup.clone().unwrap();
    let key = format!("{:020}/{}", expected_time.unwrap().unix_nanos(), r.id);
    assert_eq!(
        (&*d.scope, d.key.as_str(), d.value.as_str()),
        ("audit", key.as_str(), "")
    );
    let f = &r.fields;
    assert_eq!(f.get("verb"), v.get("verb"));
    assert_eq!(f.get("level"), v.get("level"));
    assert_eq!(f.get("request_uri"), v.get("requestURI"));
    assert_eq!(f.get("user_agent"), v.get("userAgent"));
    assert_eq!(f.get("source_ips"), v.get("sourceIPs"));
    assert_eq!(f.get("api_version"), v.get("apiVersion"));
    assert_eq!(f.get("response_code"), v.pointer("/responseStatus/code"));
    assert_eq!(
        f.get("decision"),
        v.pointer("/annotations/authorization.k8s.io~1decision")
    );
    assert_eq!(
        f.get("reason"),
        v.pointer("/annotations/authorization.k8s.io~1reason")
    );
    assert_eq!(
        r.get_path("user.username").as_ref(),
        v.pointer("/user/username")
    );
    assert_eq!(
        r.get_path("user.groups").as_ref(),
        v.pointer("/user/groups")
    );
    assert_eq!(
        r.get_path("impersonated_user.username").as_ref(),
        v.pointer("/impersonatedUser/username")
    );
    assert_eq!(
        r.get_path("object_ref.resource").as_ref(),
        v.pointer("/objectRef/resource")
    );
    assert_eq!(
        r.get_path("object_ref.subresource").as_ref(),
        v.pointer("/objectRef/subresource")
    );
    assert_eq!(
        r.get_path("object_ref.namespace").as_ref(),
        v.pointer("/objectRef/namespace")
    );
    assert_eq!(
        r.get_path("object_ref.name").as_ref(),
        v.pointer("/objectRef/name")
    );
    assert_eq!(
        r.get_path("object_ref.api_group").as_ref(),
        v.pointer("/objectRef/apiGroup")
    );
    // The original is the exact bytes, and encodes back to them.
    match &r.original {
        Some(Original::Raw(raw)) => assert_eq!(raw.get().as_bytes(), line.trim_ascii()),
        o => panic!("{o:?}"),
    }
    let encoded: Value = serde_json::from_slice(&r.encode()).unwrap();
    assert_eq!(encoded["object"], v);
    r
}

#[test]
fn every_audit_log_line_parses_and_normalizes() {
    let dir = fixtures();
    let files = [
        dir.join("kube-api/audit-log-excerpt-300.jsonl"),
        dir.join("audit/kube-apiserver-1.28/audit-sample-200.jsonl"),
        dir.join("audit/public/audit2rbac-demo.log"),
    ];
    let mut counts = BTreeMap::new();
    for f in &files {
        for line in lines(f) {
            let item = audit::parse_line(&line).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            let r = check(&item, &line);
            *counts
                .entry((f.file_name().unwrap().to_owned(), item.stage().to_string()))
                .or_insert(0) += 1;
            assert_eq!(r.fields["api_version"], "audit.k8s.io/v1");
        }
    }
    let excerpt = |stage: &str| counts[&("audit-log-excerpt-300.jsonl".into(), stage.to_string())];
    // As documented in kube-api/README.md, section 10.
    assert_eq!(
        (
            excerpt("RequestReceived"),
            excerpt("ResponseStarted"),
            excerpt("ResponseComplete")
        ),
        (128, 44, 128)
    );
    assert_eq!(counts.values().sum::<usize>(), 300 + 200 + 37);
}

#[test]
fn falco_single_event_files_v1_v1beta1_and_without_api_version() {
    let dir = fixtures().join("audit/public/falco-k8s_audit");
    let mut versions: HashMap<Option<String>, usize> = HashMap::new();
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() == "fal_01_003.json" {
            continue;
        }
        files += 1;
        let file_lines = lines(&path);
        for line in &file_lines {
            let item =
                audit::parse_line(line).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let r = check(&item, line);
            *versions
                .entry(
                    r.fields
                        .get("api_version")
                        .and_then(|v| v.as_str())
                        .map(str::to_string),
                )
                .or_insert(0) += 1;
        }
        // A one-event file is also a valid webhook body (a single Event).
        if file_lines.len() == 1 {
            let body = std::fs::read(&path).unwrap();
            let items = audit::parse_body(&body).unwrap();
            assert_eq!(items.len(), 1);
            check(items[0].as_ref().unwrap(), &file_lines[0]);
        }
    }
    assert_eq!(files, 46);
    for v in [
        None,
        Some("audit.k8s.io/v1".to_string()),
        Some("audit.k8s.io/v1beta1".to_string()),
    ] {
        assert!(
            versions.get(&v).copied().unwrap_or(0) > 0,
            "no event with apiVersion {v:?}: {versions:?}"
        );
    }
}

#[test]
fn the_malformed_falco_file_is_refused_cleanly() {
    let path = fixtures().join("audit/public/falco-k8s_audit/fal_01_003.json");
    let bytes = std::fs::read(&path).unwrap();
    match audit::parse_line(&bytes) {
        Err(AuditParseError::NotAnEvent(e)) => {
            assert_eq!(e.raw.get().as_bytes(), bytes.trim_ascii());
            assert!(!e.reason.is_empty());
        }
        other => panic!("expected NotAnEvent, got {other:?}"),
    }
    let items = audit::parse_body(&bytes).unwrap();
    assert_eq!(items.len(), 1);
    let err = items.into_iter().next().unwrap().unwrap_err();
    let (s, t) = names();
    let r = audit::error_record(err, &s, &t);
    assert_eq!(r.kind, RecordKind::Error);
    let encoded: Value = serde_json::from_slice(&r.encode()).unwrap();
    assert_eq!(encoded["object"], serde_json::json!({"kind": 0}));
    assert_eq!(encoded["source_kind"], "audit");
}

#[test]
fn recorded_webhook_posts_give_the_records_of_the_same_events_in_the_log() {
    let (s, t) = names();
    let mut from_log = HashMap::new();
    for line in lines(&fixtures().join("kube-api/audit-log-excerpt-300.jsonl")) {
        let r = audit::normalize(audit::parse_line(&line).unwrap(), &s, &t, false);
        from_log.insert(r.id.clone(), r);
    }
    let mut total = 0;
    for (n, expected) in [(1, 22), (2, 12), (3, 1)] {
        let body = post_body(n);
        let items = audit::parse_body(&body).unwrap();
        assert_eq!(items.len(), expected, "post-{n}");
        let list: Value = serde_json::from_slice(&body).unwrap();
        for (i, item) in items.into_iter().enumerate() {
            let item = item.unwrap_or_else(|e| panic!("post-{n} item {i}: {e}"));
            assert_eq!(
                serde_json::from_str::<Value>(item.raw.get()).unwrap(),
                list["items"][i]
            );
            let exact = body
                .windows(item.raw.get().len())
                .any(|w| w == item.raw.get().as_bytes());
            assert!(exact, "post-{n} item {i} keeps its bytes exactly as sent");
            let r = audit::normalize(item, &s, &t, false);
            let l = from_log
                .get(&r.id)
                .unwrap_or_else(|| panic!("{} not in the log", r.id));
            assert_eq!(r.dedup, l.dedup, "same dedup key by file and by webhook");
            assert_eq!(r.time, l.time);
            assert_eq!(r.fields, l.fields, "{}", r.id);
            total += 1;
        }
    }
    assert_eq!(total, 35);
}

#[test]
fn the_first_recorded_post_has_the_documented_edge_cases() {
    let items: Vec<AuditItem> = audit::parse_body(&post_body(1))
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let (s, t) = names();
    let records: Vec<Record> = items
        .into_iter()
        .map(|i| audit::normalize(i, &s, &t, false))
        .collect();
    // A 401 is a single ResponseStarted event with an empty user.
    let unauthorized = records
        .iter()
        .find(|r| r.fields.get("response_code") == Some(&Value::from(401)))
        .unwrap();
    assert_eq!(unauthorized.fields["stage"], "ResponseStarted");
    assert_eq!(unauthorized.fields["user"], serde_json::json!({}));
    assert!(
        records
            .iter()
            .any(|r| r.fields.get("decision") == Some(&Value::from("forbid")))
    );
    assert!(
        records
            .iter()
            .any(|r| r.get_path("object_ref.subresource") == Some(Value::from("exec")))
    );
    assert!(records.iter().any(|r| r.fields["verb"] == "patch"));
    // Secrets are logged at Metadata level.
    assert!(records.iter().any(|r| r.get_path("object_ref.resource")
        == Some(Value::from("secrets"))
        && r.fields["level"] == "Metadata"));
}
