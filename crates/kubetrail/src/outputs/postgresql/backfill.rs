//! Fills the activity columns (what `kubetrail who` and `kubetrail activity` query) of the
//! rows a table held before those columns were added to it, in the background: pages of rows
//! whose `activity_version` is unset are read, their columns computed from the stored record
//! by the same code that fills new rows, and written back, until none is left. Delivery goes
//! on meanwhile on its own connection. A failure is retried with backoff; the pass resumes
//! where the table says it stopped (the rows still unset).

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_postgres::types::ToSql;

use super::row::ActivityCols;
use super::sql::{self, ActivityColumns};
use super::{PostgresqlConfig, PostgresqlError, open_connection, tls_for};
use crate::topology::backoff;

/// Rows per page.
const PAGE: i64 = 500;

/// Starts the pass; it ends when every row is filled (or the handle is aborted).
pub(super) fn spawn(config: PostgresqlConfig) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut attempt = 0u32;
        let mut filled = 0u64;
        loop {
            match pass(&config, &mut filled).await {
                Ok(()) => {
                    if filled > 0 {
                        tracing::info!(table = %config.table.sql(), rows = filled, "activity columns filled for the rows stored before them");
                    }
                    return;
                }
                Err(e) => {
                    let wait = backoff(Duration::from_secs(1), Duration::from_secs(300), attempt);
                    attempt = attempt.saturating_add(1);
                    tracing::warn!(table = %config.table.sql(), error = %e, retry_in = ?wait, "filling the activity columns failed");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    })
}

async fn pass(config: &PostgresqlConfig, filled: &mut u64) -> Result<(), PostgresqlError> {
    let (client, driver) = open_connection(config, tls_for(config)?).await?;
    let _driver = AbortOnDrop(driver);
    let q = |what| move |source| PostgresqlError::Query { what, source };
    let select = client
        .prepare(&sql::unfilled(&config.table))
        .await
        .map_err(q("preparing the backfill"))?;
    let update = client
        .prepare(&sql::backfill(&config.table))
        .await
        .map_err(q("preparing the backfill"))?;
    loop {
        let rows = client
            .query(&select, &[&PAGE])
            .await
            .map_err(q("reading rows to fill"))?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut ids: Vec<String> = Vec::with_capacity(rows.len());
        let mut cols = ActivityColumns::default();
        for r in &rows {
            let id: String = r.try_get(0).map_err(q("reading rows to fill"))?;
            let record: String = r.try_get(1).map_err(q("reading rows to fill"))?;
            ids.push(id);
            cols.push(ActivityCols::from_record(record.as_bytes()));
        }
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&ids];
        params.extend(cols.params());
        client
            .execute(&update, &params)
            .await
            .map_err(q("filling activity columns"))?;
        *filled += rows.len() as u64;
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
