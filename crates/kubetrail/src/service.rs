//! The `service` section: where state lives, how the agent logs, how long it may take to stop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use kubetrail_core::config::{ConfigError, Section};
use kubetrail_state::SyncMode;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The resolved `service` section.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// `data_dir` (default `/var/lib/kubetrail`): the state database and dead-letter files.
    pub data_dir: PathBuf,
    /// `http_listen` (default off): address of `/metrics`, `/healthz`, `/readyz`.
    pub http_listen: Option<SocketAddr>,
    /// `log_level` (default `info`): error, warn, info, debug, trace (Fluent Bit's `off` too).
    pub log_level: String,
    /// `log_format` (default `text`): `text` or `json`.
    pub log_format: LogFormat,
    /// `grace` (default 5s): how long a shutdown may take to drain before it stops anyway.
    pub grace: Duration,
    /// `db.sync` (default `full`): `full` fsyncs at every commit; `normal` is faster but a
    /// power loss (not a crash) can lose the last commits.
    pub db_sync: SyncMode,
    /// `queue_retention` (default 7d): how long the queue of an output removed from the
    /// configuration is kept (with its undelivered records) before it is deleted.
    pub queue_retention: Duration,
    /// `queue_compress` (default `lz4`): whether the output queues' blocks are compressed;
    /// `off` stores them as they are (less CPU, several times the bytes written).
    pub queue_compress: bool,
    /// `ui.*` (default off): the activity page (see `kubetrail_ui::UiOptions`).
    pub ui: Option<kubetrail_ui::UiOptions>,
}

impl ServiceOptions {
    pub fn from_section(s: &mut Section) -> Result<ServiceOptions, ConfigError> {
        let data_dir = PathBuf::from(s.get_str_or("data_dir", "/var/lib/kubetrail")?);
        let http_listen = match s.get_str("http_listen")? {
            None => None,
            Some(v) if v.is_empty() || v.eq_ignore_ascii_case("off") => None,
            Some(v) => Some(v.parse().map_err(|_| {
                s.error(
                    "http_listen",
                    format!("'{v}' is not an address like 127.0.0.1:2020"),
                )
            })?),
        };
        let log_level = s
            .get_choice(
                "log_level",
                &["off", "error", "warn", "info", "debug", "trace"],
            )?
            .unwrap_or("info")
            .to_string();
        let log_format = match s.get_choice("log_format", &["text", "json"])? {
            Some("json") => LogFormat::Json,
            _ => LogFormat::Text,
        };
        let grace = s.get_duration("grace")?.unwrap_or(Duration::from_secs(5));
        let db_sync = match s.get_choice("db.sync", &["full", "normal"])? {
            Some("normal") => SyncMode::Normal,
            _ => SyncMode::Full,
        };
        let queue_retention = s
            .get_duration("queue_retention")?
            .unwrap_or(Duration::from_secs(7 * 86_400));
        let queue_compress = s.get_choice("queue_compress", &["lz4", "off"])? != Some("off");
        let ui = kubetrail_ui::UiOptions::from_section(s)?;
        Ok(ServiceOptions {
            data_dir,
            http_listen,
            log_level,
            log_format,
            grace,
            db_sync,
            queue_retention,
            queue_compress,
            ui,
        })
    }
}

#[cfg(test)]
mod tests {
    use kubetrail_core::config::SectionKind;

    use super::*;

    fn service(pairs: &[(&str, &str)]) -> Result<ServiceOptions, ConfigError> {
        ServiceOptions::from_section(&mut Section::from_pairs(
            SectionKind::Service,
            "service",
            pairs,
        ))
    }

    #[test]
    fn queue_compress_is_lz4_unless_off() {
        assert!(service(&[]).unwrap().queue_compress);
        assert!(
            service(&[("queue_compress", "lz4")])
                .unwrap()
                .queue_compress
        );
        assert!(
            !service(&[("queue_compress", "off")])
                .unwrap()
                .queue_compress
        );
        let err = service(&[("queue_compress", "zstd")]).unwrap_err();
        assert!(err.to_string().contains("queue_compress"), "{err}");
    }
}
