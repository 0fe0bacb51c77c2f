//! The `stdout` output: one JSON line per record (`format: json_lines`, the default), or
//! indented JSON for people (`format: pretty`). At least once: stdout cannot be rewound, so a
//! crash between a write and its acknowledgement repeats that batch.

use std::io::Write;

use kubetrail_core::config::{ConfigError, Section};
use kubetrail_state::QueueItem;

use crate::pipeline::{DeliveryError, Output};

/// How records are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdoutFormat {
    JsonLines,
    Pretty,
}

/// The `stdout` output.
pub struct Stdout {
    format: StdoutFormat,
    buf: Vec<u8>,
}

impl Stdout {
    pub fn from_section(s: &mut Section) -> Result<Stdout, ConfigError> {
        let format = match s.get_choice("format", &["json_lines", "json", "pretty"])? {
            Some("pretty") => StdoutFormat::Pretty,
            _ => StdoutFormat::JsonLines,
        };
        Ok(Stdout {
            format,
            buf: Vec::new(),
        })
    }
}

/// Renders a batch into `out`, one record per line (or per indented block).
pub(crate) fn render(format: StdoutFormat, batch: &[QueueItem], out: &mut Vec<u8>) {
    for item in batch {
        match format {
            StdoutFormat::JsonLines => out.extend_from_slice(&item.data),
            StdoutFormat::Pretty => match serde_json::from_slice::<serde_json::Value>(&item.data) {
                Ok(v) => {
                    // Writing a Value into a Vec cannot fail.
                    let _ = serde_json::to_writer_pretty(&mut *out, &v);
                }
                Err(_) => out.extend_from_slice(&item.data),
            },
        }
        out.push(b'\n');
    }
}

#[async_trait::async_trait]
impl Output for Stdout {
    async fn open(&mut self, _committed: Option<String>) -> Result<(), DeliveryError> {
        Ok(())
    }

    async fn deliver(&mut self, batch: &[QueueItem]) -> Result<Option<String>, DeliveryError> {
        self.buf.clear();
        render(self.format, batch, &mut self.buf);
        let buf = std::mem::take(&mut self.buf);
        let buf = tokio::task::spawn_blocking(move || {
            let mut out = std::io::stdout().lock();
            out.write_all(&buf).and_then(|_| out.flush()).map(|_| buf)
        })
        .await
        .map_err(|e| DeliveryError::Retryable {
            message: e.to_string(),
            retry_after: None,
        })?
        .map_err(|e| DeliveryError::Retryable {
            message: format!("writing to stdout: {e}"),
            retry_after: None,
        })?;
        self.buf = buf;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(seq: u64, data: &str) -> QueueItem {
        QueueItem {
            seq,
            id: format!("id{seq}"),
            data: data.as_bytes().to_vec().into(),
        }
    }

    #[test]
    fn json_lines_and_pretty() {
        let batch = vec![item(1, r#"{"a":1}"#), item(2, r#"{"b":[1,2]}"#)];
        let mut out = Vec::new();
        render(StdoutFormat::JsonLines, &batch, &mut out);
        assert_eq!(out, b"{\"a\":1}\n{\"b\":[1,2]}\n");
        out.clear();
        render(StdoutFormat::Pretty, &batch, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("{\n  \"a\": 1\n}\n{\n  \"b\": ["),
            "{text}"
        );
    }

    #[test]
    fn format_option() {
        let mut s = Section::from_pairs(
            kubetrail_core::config::SectionKind::Output,
            "stdout",
            &[("format", "Pretty")],
        );
        assert_eq!(
            Stdout::from_section(&mut s).unwrap().format,
            StdoutFormat::Pretty
        );
        let mut s = Section::from_pairs(
            kubetrail_core::config::SectionKind::Output,
            "stdout",
            &[("format", "xml")],
        );
        assert!(Stdout::from_section(&mut s).is_err());
    }
}
