//! The `postgresql` output: every record becomes one row of a table, exactly once.
//!
//! The table (created if missing, with its indexes, unless `create_table: off`):
//!
//! ```sql
//! id text PRIMARY KEY, time timestamptz, kind text, namespace text, object_kind text,
//! object_name text, username text, verb text, reason text, source text, tag text,
//! record jsonb NOT NULL
//! ```
//!
//! with indexes on `time`, `(kind, time)`, `namespace`, `(object_kind, object_name)`,
//! `username`, `verb` and `reason`. `record` holds the whole encoded record; the other columns
//! are read from it: `object_kind`/`object_name` are an Event's involved object (kind, name) or
//! an audit event's `objectRef` (resource, name), `namespace` the Event's or the `objectRef`'s,
//! `username` and `verb` the audit event's, `reason` the Event's reason or the audit
//! authorization reason.
//!
//! The activity columns (`seq`, `api_group`, `resource`, `subresource`, `obj_namespace`,
//! `obj_name`, `obj_uid`, `owner_uid`, `mention_resource`, `mention_name`,
//! `impersonated_user`, `user_groups`, `response_code`, `event_type`, `stage`,
//! `activity_version`) and their indexes (`kubetrail_activity::pg`) are what `kubetrail who`
//! and `kubetrail activity` read; they are added to a table made by an earlier kubetrail
//! (`ADD COLUMN IF NOT EXISTS`; adding `seq` numbers the existing rows) and its rows are then
//! filled in the background (`backfill`) while delivery goes on.
//!
//! Exactly once: a batch is one `INSERT ... SELECT FROM unnest(...) ON CONFLICT (id) DO
//! NOTHING` (one statement, so one transaction). A batch delivered again after a crash or a
//! lost acknowledgement inserts nothing twice: the record id is the primary key.
//!
//! Failures: a server that is down, restarting, out of connections or disk, a lost or hung
//! connection (`timeout`), a missing table (made again), missing privileges or a table whose
//! columns do not match are retried with backoff (they are fixed outside kubetrail and no
//! record is at fault). Only an error about the data itself (SQLSTATE classes 22 and 23,
//! e.g. a constraint the operator added) refuses records: the batch is then written one
//! record at a time and only the refused records go to the dead-letter file, with the
//! server's reason.
//!
//! Options: `url` (a `postgres://` URL or `key=value` connection string; the options below
//! override its parts), `host` (default `127.0.0.1`; a path means a Unix socket directory),
//! `port` (5432), `user` (`postgres`), `password` or `password_file` (read at every
//! connection), `database` (`kubetrail`), `table` (`kubetrail_records`, may be
//! `schema.table`), `create_table` (on), `connection_options` (server options sent at
//! connection, e.g. `-c statement_timeout=10s`, as in Fluent Bit), `timeout` (30s: connecting
//! and each batch), `tls` (off; `on` requires TLS: verified against `tls.ca_file`/`tls.ca_path`
//! or the bundled public roots, `tls.vhost`, `tls.verify`, client certificate `tls.crt_file` +
//! `tls.key_file`). A URL's `sslmode=require` turns TLS on when `tls` is not written.

mod backfill;
mod config;
mod row;
mod sql;
mod tls;

use std::sync::Arc;
use std::time::Duration;

use kubetrail_core::config::{ConfigError, Section};
use kubetrail_state::QueueItem;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls, Statement};

pub use config::{PostgresqlConfig, TableName};
pub use row::Row;

use crate::outputs::dead_letter::DeadLetterWriter;
use crate::pipeline::{DeliveryError, Output};

/// What went wrong talking to PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum PostgresqlError {
    #[error("reading password_file {path}: {source}")]
    PasswordFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS settings: {0}")]
    Tls(#[source] kubetrail_net::NetError),
    #[error("connecting to PostgreSQL at {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("{what} timed out after {after:?}")]
    Timeout { what: &'static str, after: Duration },
    #[error("{what}: {source}")]
    Query {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
}

impl PostgresqlError {
    /// Whether the batch itself is at fault (so retrying cannot help).
    fn is_data_error(&self) -> bool {
        match self {
            PostgresqlError::Query { source, .. } => source
                .code()
                .is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23")),
            _ => false,
        }
    }

    /// The SQLSTATE, when the server sent one.
    fn sqlstate(&self) -> Option<&str> {
        match self {
            PostgresqlError::Query { source, .. } | PostgresqlError::Connect { source, .. } => {
                source.code().map(|c| c.code())
            }
            _ => None,
        }
    }

    /// The full message: tokio-postgres keeps the server's message in the source.
    fn full(&self) -> String {
        let mut s = self.to_string();
        let mut src = std::error::Error::source(self);
        while let Some(e) = src {
            let t = e.to_string();
            if !s.contains(&t) {
                s.push_str(": ");
                s.push_str(&t);
            }
            src = e.source();
        }
        s
    }
}

impl From<PostgresqlError> for DeliveryError {
    fn from(e: PostgresqlError) -> Self {
        if e.is_data_error() {
            DeliveryError::Rejected { message: e.full() }
        } else {
            DeliveryError::Retryable {
                message: e.full(),
                retry_after: None,
            }
        }
    }
}

/// An open connection: the client, the task driving its socket, the prepared insert.
struct Conn {
    client: Client,
    driver: JoinHandle<()>,
    insert: Option<Statement>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // A hung server would otherwise keep the driver task (and its socket) forever.
        self.driver.abort();
    }
}

/// The `postgresql` output.
pub struct PostgresqlOutput {
    config: PostgresqlConfig,
    tls: Option<tls::MakeRustls>,
    conn: Option<Conn>,
    table_ready: bool,
    dead_letters: Option<DeadLetterWriter>,
    /// The background pass filling the activity columns of rows stored before them.
    backfill: Option<JoinHandle<()>>,
}

impl PostgresqlOutput {
    pub fn from_section(s: &mut Section) -> Result<PostgresqlOutput, ConfigError> {
        Ok(PostgresqlOutput::new(PostgresqlConfig::from_section(s)?))
    }

    pub fn new(config: PostgresqlConfig) -> PostgresqlOutput {
        PostgresqlOutput {
            config,
            tls: None,
            conn: None,
            table_ready: false,
            dead_letters: None,
            backfill: None,
        }
    }

    fn make_tls(&mut self) -> Result<Option<tls::MakeRustls>, PostgresqlError> {
        if self.tls.is_none() {
            self.tls = tls_for(&self.config)?;
        }
        Ok(self.tls.clone())
    }

    async fn connect(&mut self) -> Result<Conn, PostgresqlError> {
        let tls = self.make_tls()?;
        let (client, driver) = open_connection(&self.config, tls).await?;
        Ok(Conn {
            client,
            driver,
            insert: None,
        })
    }

    /// Connects if needed, makes the table if needed, prepares the insert; then inserts.
    async fn write(&mut self, batch: &[QueueItem]) -> Result<u64, PostgresqlError> {
        if self.conn.as_ref().is_some_and(|c| c.client.is_closed()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            self.conn = Some(self.connect().await?);
        }
        let table = self.config.table.clone();
        let create = self.config.create_table && !self.table_ready;
        let Some(conn) = self.conn.as_mut() else {
            unreachable!("connected above")
        };
        if create {
            conn.client
                .batch_execute(&sql::create_table(&table))
                .await
                .map_err(|source| PostgresqlError::Query {
                    what: "creating the table",
                    source,
                })?;
            self.table_ready = true;
            tracing::info!(table = %table.sql(), "table and indexes ready");
            if self.backfill.as_ref().is_none_or(|b| b.is_finished()) {
                self.backfill = Some(backfill::spawn(self.config.clone()));
            }
        }
        let stmt = match &conn.insert {
            Some(s) => s.clone(),
            None => {
                let s = conn
                    .client
                    .prepare(&sql::insert(&table))
                    .await
                    .map_err(|source| PostgresqlError::Query {
                        what: "preparing the insert",
                        source,
                    })?;
                conn.insert = Some(s.clone());
                s
            }
        };
        let cols = sql::Columns::from_batch(batch);
        conn.client
            .execute(&stmt, &cols.params())
            .await
            .map_err(|source| PostgresqlError::Query {
                what: "inserting a batch",
                source,
            })
    }
}

impl PostgresqlOutput {
    /// `write` within `timeout`, then the connection kept or dropped as the error says.
    async fn write_timed(&mut self, batch: &[QueueItem]) -> Result<u64, PostgresqlError> {
        let timeout = self.config.timeout;
        let result = match tokio::time::timeout(timeout, self.write(batch)).await {
            Ok(r) => r,
            Err(_) => Err(PostgresqlError::Timeout {
                what: "writing a batch to PostgreSQL",
                after: timeout,
            }),
        };
        if let Err(e) = &result {
            if e.sqlstate() == Some("42P01") {
                // The table was dropped under us: make it again on the next try.
                self.table_ready = false;
            }
            let keep = e.sqlstate().is_some() && !matches!(e, PostgresqlError::Connect { .. });
            match self.conn.as_mut() {
                // A statement error leaves the connection usable; the insert is prepared
                // again in case the table changed.
                Some(c) if keep && !c.client.is_closed() => c.insert = None,
                _ => self.conn = None,
            }
        }
        result
    }

    /// Inserts each record on its own; the ones refused for their data are dead-lettered.
    async fn one_by_one(&mut self, batch: &[QueueItem]) -> Result<Option<String>, DeliveryError> {
        let mut refused: Vec<(&QueueItem, String)> = Vec::new();
        for item in batch {
            match self.write_timed(std::slice::from_ref(item)).await {
                Ok(_) => {}
                Err(e) if e.is_data_error() => refused.push((item, e.full())),
                // Rows written so far are kept; the batch is retried and they are skipped.
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(w) = &self.dead_letters {
            let items: Vec<(&QueueItem, &str)> =
                refused.iter().map(|(i, r)| (*i, r.as_str())).collect();
            w.write(&items).map_err(|e| DeliveryError::Retryable {
                message: format!("writing refused records to the dead-letter file: {e}"),
                retry_after: None,
            })?;
        }
        Ok(None)
    }
}

/// `host:port/database as user`, for messages.
fn target(config: &PostgresqlConfig) -> String {
    use tokio_postgres::config::Host;
    let host = match config.pg.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(Host::Unix(p)) => p.display().to_string(),
        None => String::new(),
    };
    let port = config.pg.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{host}:{port}/{} as {}",
        config.pg.get_dbname().unwrap_or(""),
        config.pg.get_user().unwrap_or("")
    )
}

/// The TLS connector the options ask for (`None` without TLS).
fn tls_for(config: &PostgresqlConfig) -> Result<Option<tls::MakeRustls>, PostgresqlError> {
    let Some(opts) = &config.tls else {
        return Ok(None);
    };
    let mut settings = kubetrail_net::TlsClientSettings::from_options(opts);
    settings.use_webpki_roots = true;
    let mut cfg = (*settings.build().map_err(PostgresqlError::Tls)?).clone();
    cfg.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Some(tls::MakeRustls {
        config: Arc::new(cfg),
        vhost: opts.vhost.clone(),
    }))
}

/// Connects with the options (the password file read now), returning the client and the
/// task that drives its socket.
async fn open_connection(
    config: &PostgresqlConfig,
    tls: Option<tls::MakeRustls>,
) -> Result<(Client, JoinHandle<()>), PostgresqlError> {
    let mut pg = config.pg.clone();
    if let Some(path) = &config.password_file {
        let text =
            std::fs::read_to_string(path).map_err(|source| PostgresqlError::PasswordFile {
                path: path.clone(),
                source,
            })?;
        pg.password(text.trim_end_matches(['\r', '\n']));
    }
    let target = target(config);
    let err = |source| PostgresqlError::Connect {
        target: target.clone(),
        source,
    };
    let (client, driver) = match tls {
        None => {
            let (client, connection) = pg.connect(NoTls).await.map_err(err)?;
            (client, tokio::spawn(drive(connection)))
        }
        Some(tls) => {
            let (client, connection) = pg.connect(tls).await.map_err(err)?;
            (client, tokio::spawn(drive(connection)))
        }
    };
    tracing::info!(target = %target, tls = config.tls.is_some(), "connected to PostgreSQL");
    Ok((client, driver))
}

/// Connects to the output's server as the output does (password file, TLS), for readers of
/// its table (`kubetrail who --postgres`). The returned task drives the connection.
pub async fn connect_client(
    config: &PostgresqlConfig,
) -> Result<(Client, JoinHandle<()>), PostgresqlError> {
    open_connection(config, tls_for(config)?).await
}

impl Drop for PostgresqlOutput {
    fn drop(&mut self) {
        if let Some(b) = self.backfill.take() {
            b.abort();
        }
    }
}

async fn drive<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(e) = connection.await {
        tracing::warn!(error = %e, "PostgreSQL connection closed");
    }
}

#[async_trait::async_trait]
impl Output for PostgresqlOutput {
    fn preflight(&self) -> Result<(), String> {
        if let Some(opts) = &self.config.tls {
            let mut settings = kubetrail_net::TlsClientSettings::from_options(opts);
            settings.use_webpki_roots = true;
            settings.build().map_err(|e| e.to_string())?;
        }
        if let Some(path) = &self.config.password_file {
            std::fs::metadata(path)
                .map_err(|e| format!("cannot read password_file {}: {e}", path.display()))?;
        }
        Ok(())
    }

    async fn open(&mut self, _committed: Option<String>) -> Result<(), DeliveryError> {
        // Connecting waits for the first batch: a server that is down then goes through
        // the same retries as any failed delivery.
        Ok(())
    }

    async fn deliver(&mut self, batch: &[QueueItem]) -> Result<Option<String>, DeliveryError> {
        if batch.is_empty() {
            return Ok(None);
        }
        match self.write_timed(batch).await {
            Ok(inserted) => {
                let repeated = batch.len() as u64 - inserted.min(batch.len() as u64);
                if repeated > 0 {
                    tracing::debug!(
                        records = batch.len(),
                        already_stored = repeated,
                        "rows already in the table were skipped"
                    );
                }
                Ok(None)
            }
            // One record the table refuses (a constraint the operator added, ...) must not
            // take the others with it: they are written one by one and only the refused ones
            // go to the dead-letter file.
            Err(e) if e.is_data_error() && self.dead_letters.is_some() => {
                tracing::warn!(error = %e.full(), records = batch.len(), "the table refused the batch; writing its records one by one");
                self.one_by_one(batch).await
            }
            Err(e) => Err(e.into()),
        }
    }

    fn attach_dead_letters(&mut self, writer: DeadLetterWriter) {
        self.dead_letters = Some(writer);
    }

    async fn close(&mut self) -> Result<(), DeliveryError> {
        self.conn = None;
        if let Some(b) = self.backfill.take() {
            b.abort();
        }
        Ok(())
    }
}
