//! What the fuzz targets (`fuzz/fuzz_targets/fluentbit_classic.rs`, `fluentbit_yaml.rs`) do
//! with each input, kept here so that the committed corpus replays through exactly the same
//! code in ordinary tests (`tests/fuzz_corpus.rs`). Beyond "never panics": whatever is read
//! and translated without errors, `migrate` prints as YAML that kubetrail's own loader reads.

use std::collections::BTreeMap;
use std::path::Path;

use kubetrail_core::config::Config;

use crate::diag::Diagnostic;
use crate::document::Document;
use crate::translate::translate;

/// Fluent Bit's classic format.
pub fn classic(data: &[u8]) {
    check(crate::classic::read_text(
        data,
        Path::new("/fuzz/fluent-bit.conf"),
    ));
}

/// Fluent Bit's YAML format.
pub fn yaml(data: &[u8]) {
    check(crate::yaml::read_text(
        data,
        Path::new("/fuzz/fluent-bit.yaml"),
    ));
}

fn check(read: Result<Document, Diagnostic>) {
    let Ok(doc) = read else {
        return;
    };
    let migration = translate(&doc, &BTreeMap::new());
    let text = migration.to_yaml();
    let _ = migration.to_config(&BTreeMap::new());
    if !migration.has_errors()
        && let Err(e) = Config::parse(&text, Path::new("/fuzz/migrated.yaml"))
    {
        panic!("migrate printed YAML kubetrail does not read: {e}\n{text}");
    }
}
