//! Where `kubetrail who` and `kubetrail activity` read: the `store` output's database
//! (`--store`), a PostgreSQL table (`--postgres`), or whichever of the two a kubetrail
//! configuration writes (`-c`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use kubetrail::outputs::postgresql::{PostgresqlConfig, connect_client};
use kubetrail::outputs::store::StoreConfig;
use kubetrail::service::ServiceOptions;
use kubetrail_core::config::{Section, SectionKind};
use kubetrail_query::Store;
use tokio::task::JoinHandle;

/// The store's default place (`service.data_dir`'s default).
const DEFAULT_STORE: &str = "/var/lib/kubetrail/activity.db";

#[derive(clap::Args, Debug)]
pub struct SourceArgs {
    /// The `store` output's activity database [default: /var/lib/kubetrail/activity.db].
    #[arg(long, value_name = "PATH", conflicts_with_all = ["postgres", "config"])]
    store: Option<PathBuf>,
    /// The `postgresql` output's server: a postgres:// URL or a key=value string.
    #[arg(long, value_name = "URL", conflicts_with = "config")]
    postgres: Option<String>,
    /// The table, with --postgres (`table` or `schema.table`).
    #[arg(long, value_name = "TABLE", default_value = "kubetrail_records")]
    table: String,
    /// A kubetrail configuration: read what its `store` output (else its `postgresql` output)
    /// writes.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// With -c: the output to read (its alias or instance name, e.g. `store.0`).
    #[arg(long, value_name = "NAME", requires = "config")]
    alias: Option<String>,
    /// The time limit of each read.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    timeout: String,
}

/// An open store, and the task driving its PostgreSQL connection if any.
pub struct Opened {
    pub store: Store,
    _driver: Option<JoinHandle<()>>,
}

impl SourceArgs {
    /// What a configuration's `store` output (else its `postgresql` output, or the output
    /// named `alias`) writes, with a time limit per read: the activity page of `kubetrail run`.
    pub fn of_config(config: PathBuf, alias: Option<String>, timeout: Duration) -> SourceArgs {
        SourceArgs {
            store: None,
            postgres: None,
            table: "kubetrail_records".into(),
            config: Some(config),
            alias,
            timeout: format!("{}ms", timeout.as_millis()),
        }
    }

    pub async fn open(&self) -> anyhow::Result<Opened> {
        let timeout =
            kubetrail_core::config::parse_duration(&self.timeout).map_err(anyhow::Error::msg)?;
        if let Some(url) = &self.postgres {
            let mut s = Section::from_pairs(
                SectionKind::Output,
                "postgresql",
                &[("url", url.as_str()), ("table", self.table.as_str())],
            );
            let cfg = PostgresqlConfig::from_section(&mut s).map_err(|e| anyhow::anyhow!("{e}"))?;
            return postgres(&cfg, timeout).await;
        }
        if let Some(path) = &self.config {
            return self.open_config(path, timeout).await;
        }
        let path = self
            .store
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STORE));
        Ok(Opened {
            store: Store::sqlite_with_timeout(&path, timeout)?,
            _driver: None,
        })
    }

    async fn open_config(
        &self,
        path: &std::path::Path,
        timeout: Duration,
    ) -> anyhow::Result<Opened> {
        // kubetrail YAML, or a Fluent Bit file read as `kubetrail run` reads it.
        let mut config = kubetrail_fluentbit::load(path)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .config;
        let service = ServiceOptions::from_section(&mut config.service)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        // Instance names as the pipeline gives them: the alias, else `<plugin>.<n>`.
        let mut counts = std::collections::HashMap::<String, usize>::new();
        let mut candidates: Vec<(String, &mut Section)> = Vec::new();
        for s in config.outputs.iter_mut() {
            let n = counts.entry(s.name().to_string()).or_default();
            let default = format!("{}.{}", s.name(), n);
            *n += 1;
            let name = match s.get_str("alias").map_err(|e| anyhow::anyhow!("{e}"))? {
                Some(a) if !a.trim().is_empty() => a.trim().to_string(),
                _ => default,
            };
            if s.name() == "store" || s.name() == "postgresql" {
                candidates.push((name, s));
            }
        }
        let pick = match &self.alias {
            Some(a) => candidates.into_iter().find(|(n, _)| n == a),
            None => {
                let store = candidates.iter().position(|(_, s)| s.name() == "store");
                match store {
                    Some(i) => Some(candidates.swap_remove(i)),
                    None => candidates.into_iter().next(),
                }
            }
        };
        let Some((name, s)) = pick else {
            match &self.alias {
                Some(a) => bail!(
                    "{} has no store or postgresql output named {a}",
                    path.display()
                ),
                None => bail!(
                    "{} has no store or postgresql output to read",
                    path.display()
                ),
            }
        };
        if s.name() == "store" {
            let cfg = StoreConfig::from_section(s, &service.data_dir)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let store = Store::sqlite_with_timeout(&cfg.path, timeout)
                .with_context(|| format!("reading the activity store of output {name}"))?;
            return Ok(Opened {
                store,
                _driver: None,
            });
        }
        let cfg = PostgresqlConfig::from_section(s).map_err(|e| anyhow::anyhow!("{e}"))?;
        postgres(&cfg, timeout).await
    }
}

async fn postgres(cfg: &PostgresqlConfig, timeout: Duration) -> anyhow::Result<Opened> {
    let (client, driver) = connect_client(cfg).await?;
    let table = match &cfg.table.schema {
        Some(schema) => format!("{schema}.{}", cfg.table.name),
        None => cfg.table.name.clone(),
    };
    let store = Store::postgres(client, &table, timeout).await?;
    Ok(Opened {
        store,
        _driver: Some(driver),
    })
}

impl Drop for Opened {
    fn drop(&mut self) {
        if let Some(d) = &self._driver {
            d.abort();
        }
    }
}
