//! Replays the committed cargo-fuzz corpora (`fuzz/corpus/<target>/`) through exactly what the
//! fuzz targets run (`kubetrail::fuzzing`), so that every input a fuzzer run found interesting
//! (and every crash it was fixed for) stays a regression test in ordinary CI, which has no
//! nightly toolchain or libFuzzer. (The Fluent Bit readers' corpora replay in
//! `crates/fluentbit/tests/fuzz_corpus.rs`.)

use std::path::PathBuf;

use kubetrail::fuzzing;

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

/// Runs `f` on every input of the corpus, naming the input that panics.
fn replay(target: &str, f: impl Fn(&[u8]) + std::panic::RefUnwindSafe) -> usize {
    let files = corpus(target);
    for (path, data) in &files {
        if let Err(e) = std::panic::catch_unwind(|| f(data)) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{}: {msg}", path.display());
        }
    }
    files.len()
}

#[test]
fn webhook_body_corpus_replays() {
    let accepted = corpus("webhook_body")
        .iter()
        .filter(|(_, data)| fuzzing::webhook_body(data))
        .count();
    assert!(
        accepted > 0,
        "no corpus body parsed at all: the replay would prove nothing"
    );
    replay("webhook_body", |d| {
        fuzzing::webhook_body(d);
    });
    // The fuzzers share inputs: every body also goes through the line parser.
    replay("webhook_body", fuzzing::audit_line);
}

#[test]
fn audit_line_corpus_replays() {
    replay("audit_line", fuzzing::audit_line);
    replay("audit_line", |d| {
        fuzzing::webhook_body(d);
    });
}

#[test]
fn watch_stream_corpus_replays() {
    let records: usize = corpus("watch_stream")
        .iter()
        .map(|(_, data)| fuzzing::watch_stream(data))
        .sum();
    assert!(
        records > 0,
        "no corpus input made a record: the replay would prove nothing"
    );
    replay("watch_stream", |d| {
        fuzzing::watch_stream(d);
    });
}

#[test]
fn segment_corpus_replays() {
    assert!(replay("segment", fuzzing::segment) > 0);
}
