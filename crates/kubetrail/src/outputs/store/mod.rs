//! The `store` output: records kept in kubetrail's own activity database (SQLite, a file of
//! its own beside the state database), indexed for `kubetrail who`, `kubetrail activity` and
//! the activity page (see `kubetrail-activity` for the schema).
//!
//! Exactly once: a batch is one transaction per file of the store (records split between its
//! shards by id, written in parallel) and the record id is unique, so a batch delivered again
//! after a crash stores nothing twice. Retention (by age and by size) runs on
//! a thread of its own in small transactions, so delivery waits for at most one of them.
//! Readers (`kubetrail who` while kubetrail runs) never block the writer (WAL).

mod config;

use std::sync::Arc;

use kubetrail_activity::{RetentionHandle, ShardedWriter, WriterOptions};
use kubetrail_core::Timestamp;
use kubetrail_core::config::{ConfigError, Section};
use kubetrail_state::QueueItem;

pub use config::StoreConfig;

use crate::pipeline::{DeliveryError, Output};

/// The `store` output.
pub struct StoreOutput {
    config: StoreConfig,
    /// In a mutex only so that the output is `Sync`; only `deliver` (`&mut self`) uses it.
    writer: std::sync::Mutex<Option<ShardedWriter>>,
    /// One retention thread per file of the store.
    retention: Vec<Arc<RetentionHandle>>,
}

impl StoreOutput {
    /// Reads the section (`data_dir` is the service's: a relative `path` is under it).
    pub fn from_section(
        s: &mut Section,
        data_dir: &std::path::Path,
    ) -> Result<StoreOutput, ConfigError> {
        Ok(StoreOutput::new(StoreConfig::from_section(s, data_dir)?))
    }

    pub fn new(config: StoreConfig) -> StoreOutput {
        StoreOutput {
            config,
            writer: std::sync::Mutex::new(None),
            retention: Vec::new(),
        }
    }

    /// The database file.
    pub fn path(&self) -> &std::path::Path {
        &self.config.path
    }

    fn retryable(message: String) -> DeliveryError {
        DeliveryError::Retryable {
            message,
            retry_after: None,
        }
    }

    /// Opens the database (on a blocking thread) and starts retention, if not done yet.
    fn writer(&mut self) -> &mut Option<ShardedWriter> {
        self.writer.get_mut().unwrap_or_else(|p| p.into_inner())
    }

    async fn ensure_open(&mut self) -> Result<(), DeliveryError> {
        if self.writer().is_some() {
            return Ok(());
        }
        let path = self.config.path.clone();
        let opts = WriterOptions {
            synchronous_full: self.config.sync_full,
            cache_kib: self.config.cache_kib,
            ..WriterOptions::default()
        };
        let shards = self.config.shards;
        let writer = tokio::task::spawn_blocking(move || ShardedWriter::open(&path, shards, &opts))
            .await
            .map_err(|e| Self::retryable(format!("opening the activity database: {e}")))?
            .map_err(|e| Self::retryable(e.to_string()))?;
        let files = writer.paths();
        *self.writer() = Some(writer);
        if self.retention.is_empty()
            && (self.config.retention.max_age.is_some() || self.config.retention.max_size.is_some())
        {
            // The records are spread evenly over the files (by a hash of their ids): each
            // keeps its share of the size.
            let mut policy = self.config.retention.clone();
            policy.max_size = policy
                .max_size
                .map(|m| (m / files.len() as u64).max(1 << 20));
            for file in &files {
                let handle = RetentionHandle::spawn(file, policy.clone())
                    .map_err(|e| Self::retryable(format!("starting the retention thread: {e}")))?;
                self.retention.push(Arc::new(handle));
            }
        }
        tracing::info!(path = %self.config.path.display(), shards = files.len(), cache_kib = self.config.cache_kib, "activity store open");
        Ok(())
    }
}

#[async_trait::async_trait]
impl Output for StoreOutput {
    fn preflight(&self) -> Result<(), String> {
        let dir = self
            .config
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        if dir.exists() && !dir.is_dir() {
            return Err(format!("{} is not a directory", dir.display()));
        }
        Ok(())
    }

    async fn open(&mut self, _committed: Option<String>) -> Result<(), DeliveryError> {
        self.ensure_open().await
    }

    async fn deliver(&mut self, batch: &[QueueItem]) -> Result<Option<String>, DeliveryError> {
        if batch.is_empty() {
            return Ok(None);
        }
        self.ensure_open().await?;
        let Some(mut writer) = self.writer().take() else {
            unreachable!("opened above")
        };
        // The items are cheap to clone (their bytes are shared), and the blocking thread
        // needs them owned.
        let items: Vec<QueueItem> = batch.to_vec();
        let now = Timestamp::now().unix_nanos();
        let (writer, result) = tokio::task::spawn_blocking(move || {
            let r = writer.insert(items.iter().map(|i| (i.id.as_str(), &i.data[..])), now);
            (writer, r)
        })
        .await
        .map_err(|e| Self::retryable(format!("a store batch task failed: {e}")))?;
        match result {
            Ok(stats) => {
                *self.writer() = Some(writer);
                if stats.duplicates > 0 {
                    tracing::debug!(
                        records = batch.len(),
                        already_stored = stats.duplicates,
                        "records already in the activity store were skipped"
                    );
                }
                Ok(None)
            }
            Err(e) => {
                // The connection is opened again for the retry: an error may have left it in a
                // state no one should write on.
                drop(writer);
                Err(Self::retryable(e.to_string()))
            }
        }
    }

    async fn close(&mut self) -> Result<(), DeliveryError> {
        *self.writer() = None;
        self.retention.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn item(i: u64) -> QueueItem {
        let id = format!("a-{i}/ResponseComplete");
        let data = format!(
            r#"{{"id":"{id}","time":"2026-12-06T23:04:34.84Z","kind":"k8s_audit","source":"audit_file.0","verb":"delete","user":{{"username":"viewer"}},"object_ref":{{"resource":"pods","namespace":"shop","name":"p{i}"}},"response_code":403}}"#
        );
        QueueItem {
            seq: i,
            id,
            data: data.into_bytes().into(),
        }
    }

    #[tokio::test]
    async fn batches_are_stored_once_and_readable_while_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = StoreOutput::new(StoreConfig {
            path: dir.path().join("a.db"),
            retention: kubetrail_activity::Retention {
                interval: Duration::from_secs(3600),
                max_age: None,
                ..Default::default()
            },
            sync_full: true,
            cache_kib: 2048,
            shards: 2,
        });
        o.open(None).await.unwrap();
        let batch: Vec<QueueItem> = (0..100).map(item).collect();
        o.deliver(&batch).await.unwrap();
        o.deliver(&batch[50..]).await.unwrap();
        let store = kubetrail_query::Store::sqlite(dir.path().join("a.db")).unwrap();
        let page = store
            .timeline(&kubetrail_query::TimelineQuery {
                failed: true,
                limit: Some(1000),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page.entries.len(), 100);
        assert!(page.entries.iter().all(|e| e.code == Some(403)));
        // The configured cache is the writer's, shared by the store's two files, which
        // both hold records.
        let cache = o.writer().as_ref().map(|w| w.cache_kib().unwrap());
        assert_eq!(cache, Some(2048));
        for file in ["a.db", "a.1.db"] {
            let c = kubetrail_activity::open_reader(&dir.path().join(file)).unwrap();
            let n: i64 = c
                .query_row("SELECT count(*) FROM records", [], |r| r.get(0))
                .unwrap();
            assert!((20..=80).contains(&n), "{file}: {n} of 100 records");
        }
        o.close().await.unwrap();
    }
}
