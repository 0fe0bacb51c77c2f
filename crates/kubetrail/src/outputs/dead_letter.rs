//! Dead-letter files: records an output refused for good, one JSON line each
//! (`{"time","output","reason","id","record"}`) in `<data_dir>/dead-letter/<output>.jsonl`,
//! fsynced and counted. The output runner writes whole refused batches here; outputs that
//! refuse records one by one (Elasticsearch, PostgreSQL, NATS) get the same writer.

use std::io::Write;
use std::path::PathBuf;

use kubetrail_core::Timestamp;
use kubetrail_state::QueueItem;

use crate::telemetry::Counter;

/// The dead-letter file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("writing the dead-letter file {path}: {source}")]
pub struct DeadLetterError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Writes refused records to `<dir>/<output>.jsonl`, one JSON line each:
/// `{"time","output","reason","id","record"}` (the same format as the runner's dead letters),
/// fsynced, and counts them.
#[derive(Debug, Clone)]
pub struct DeadLetterWriter {
    dir: PathBuf,
    output: String,
    failed: Option<Counter>,
}

impl DeadLetterWriter {
    /// A writer for output instance `output` into directory `dir` (created when needed).
    pub fn new(dir: impl Into<PathBuf>, output: impl Into<String>) -> DeadLetterWriter {
        DeadLetterWriter {
            dir: dir.into(),
            output: output.into(),
            failed: None,
        }
    }

    /// Counts written records on `counter` (the output's `failed` counter).
    pub fn with_counter(mut self, counter: Counter) -> DeadLetterWriter {
        self.failed = Some(counter);
        self
    }

    /// The file written.
    pub fn path(&self) -> PathBuf {
        self.dir.join(format!("{}.jsonl", self.output))
    }

    /// The output instance name.
    pub fn output(&self) -> &str {
        &self.output
    }

    /// Appends one line per item, each with its own reason. Blocking (small writes + fsync).
    pub fn write(&self, items: &[(&QueueItem, &str)]) -> Result<(), DeadLetterError> {
        if items.is_empty() {
            return Ok(());
        }
        let path = self.path();
        let err = |source| DeadLetterError {
            path: path.clone(),
            source,
        };
        let now = Timestamp::now().to_rfc3339();
        let mut buf = Vec::new();
        for (item, reason) in items {
            encode_dead_letter(&mut buf, &now, &self.output, reason, item);
        }
        std::fs::create_dir_all(&self.dir).map_err(err)?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(err)?;
        f.write_all(&buf).and_then(|_| f.sync_data()).map_err(err)?;
        if let Some(c) = &self.failed {
            c.add(items.len() as u64);
        }
        tracing::error!(output = %self.output, records = items.len(), reason = items[0].1, file = %path.display(),
            "records refused; written to the dead-letter file");
        Ok(())
    }

    /// Appends a whole batch with one reason.
    pub fn write_batch(&self, batch: &[QueueItem], reason: &str) -> Result<(), DeadLetterError> {
        let items: Vec<(&QueueItem, &str)> = batch.iter().map(|i| (i, reason)).collect();
        self.write(&items)
    }
}

/// One dead-letter line: the record inline when it is JSON, else as a string.
fn encode_dead_letter(buf: &mut Vec<u8>, now: &str, output: &str, reason: &str, item: &QueueItem) {
    // Serializing strings into a Vec cannot fail.
    buf.extend_from_slice(b"{\"time\":\"");
    buf.extend_from_slice(now.as_bytes());
    buf.extend_from_slice(b"\",\"output\":");
    let _ = serde_json::to_writer(&mut *buf, output);
    buf.extend_from_slice(b",\"reason\":");
    let _ = serde_json::to_writer(&mut *buf, reason);
    buf.extend_from_slice(b",\"id\":");
    let _ = serde_json::to_writer(&mut *buf, &item.id);
    buf.extend_from_slice(b",\"record\":");
    if serde_json::from_slice::<serde::de::IgnoredAny>(&item.data).is_ok() {
        buf.extend_from_slice(&item.data);
    } else {
        let _ = serde_json::to_writer(&mut *buf, &String::from_utf8_lossy(&item.data));
    }
    buf.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn dead_letters_have_the_runner_format_and_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let c = Counter::default();
        let w = DeadLetterWriter::new(dir.path().join("dl"), "es.0").with_counter(c.clone());
        let a = QueueItem {
            seq: 1,
            id: "a".into(),
            data: br#"{"x":1}"#.to_vec().into(),
        };
        let b = QueueItem {
            seq: 2,
            id: "b".into(),
            data: b"not json".to_vec().into(),
        };
        w.write(&[(&a, "400 mapper_parsing_exception"), (&b, "other")])
            .unwrap();
        let text = std::fs::read_to_string(w.path()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["output"], "es.0");
        assert_eq!(lines[0]["reason"], "400 mapper_parsing_exception");
        assert_eq!(lines[0]["id"], "a");
        assert_eq!(lines[0]["record"], serde_json::json!({"x": 1}));
        assert_eq!(lines[1]["record"], "not json");
        assert!(Timestamp::parse_rfc3339(lines[0]["time"].as_str().unwrap()).is_some());
        assert_eq!(c.get(), 2);
    }
}
