//! Replays the committed cargo-fuzz corpus (`fuzz/corpus/<target>/`) through the parsers the
//! fuzz targets exercise, the same way they do, so that every input a fuzzer run found
//! interesting (and every crash it was fixed for) stays a regression test in ordinary CI,
//! which has no nightly toolchain or libFuzzer.

use std::path::PathBuf;
use std::sync::Arc;

use kubetrail::sources::audit::{self, AuditParseError};
use kubetrail_core::Record;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let data = std::fs::read(&p).unwrap();
            (p, data)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the {target} corpus is empty");
    files
}

fn names() -> (Arc<str>, Arc<str>) {
    (Arc::from("fuzz"), Arc::from("fuzz"))
}

/// What the `webhook_body` target does.
fn webhook_body(data: &[u8]) -> Option<Vec<Record>> {
    let (s, t) = names();
    let items = audit::parse_body(data).ok()?;
    Some(
        items
            .into_iter()
            .map(|i| match i {
                Ok(item) => audit::normalize(item, &s, &t, false),
                Err(err) => audit::error_record(err, &s, &t),
            })
            .collect(),
    )
}

/// What the `audit_line` target does.
fn audit_line(data: &[u8]) -> Record {
    let (s, t) = names();
    match audit::parse_line(data) {
        Ok(item) => audit::normalize(item, &s, &t, true),
        Err(AuditParseError::NotAnEvent(err)) => audit::error_record(err, &s, &t),
        Err(AuditParseError::Json(e)) => audit::invalid_input_record(data, &e.to_string(), &s, &t),
    }
}

#[test]
fn webhook_body_corpus_replays_without_panics() {
    let mut accepted = 0;
    for (path, data) in corpus("webhook_body") {
        // The same result as the careful two-pass parser (as the fuzz target checks).
        match (audit::parse_body(&data), audit::parse_body_split(&data)) {
            (Ok(a), Ok(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}"), "{}", path.display()),
            (Err(_), Err(_)) => {}
            _ => panic!("{}: one pass and the careful way disagree", path.display()),
        }
        if let Some(records) = webhook_body(&data) {
            accepted += 1;
            for r in records {
                let line = r.encode();
                assert!(
                    serde_json::from_slice::<serde_json::Value>(&line).is_ok(),
                    "{}: {r:?}",
                    path.display()
                );
            }
        }
        // Every corpus entry also goes through the line parser (the fuzzers share inputs).
        let _ = audit_line(&data);
    }
    assert!(
        accepted > 0,
        "no corpus body parsed at all: the replay would prove nothing"
    );
}

#[test]
fn audit_line_corpus_replays_without_panics() {
    for (path, data) in corpus("audit_line") {
        let r = audit_line(&data);
        let line = r.encode();
        assert!(
            serde_json::from_slice::<serde_json::Value>(&line).is_ok(),
            "{}: {r:?}",
            path.display()
        );
        let _ = webhook_body(&data);
    }
}
