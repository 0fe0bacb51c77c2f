//! Replays the committed cargo-fuzz corpora of the Fluent Bit readers
//! (`fuzz/corpus/fluentbit_classic/`, `fuzz/corpus/fluentbit_yaml/`) through the same code the
//! fuzz targets run, so every input a fuzzer run found interesting stays a regression test in
//! ordinary CI (which has no nightly toolchain or libFuzzer).

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let data = std::fs::read(&p).expect("read");
            (p, data)
        })
        .collect();
    files.sort();
    assert!(files.len() >= 5, "the {target} corpus is too small");
    files
}

#[test]
fn classic_corpus_replays() {
    for (path, data) in corpus("fluentbit_classic") {
        eprintln!("{}", path.display());
        kubetrail_fluentbit::fuzzing::classic(&data);
    }
}

#[test]
fn yaml_corpus_replays() {
    for (path, data) in corpus("fluentbit_yaml") {
        eprintln!("{}", path.display());
        kubetrail_fluentbit::fuzzing::yaml(&data);
    }
}
