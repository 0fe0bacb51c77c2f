//! The `store` output's options.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kubetrail_activity::Retention;
use kubetrail_core::config::{ConfigError, Section};

/// The resolved options of a `store` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// `path` (default `<data_dir>/activity.db`; a relative path is under `data_dir`).
    pub path: PathBuf,
    /// `retention.max_age` (default `30d`; `0` keeps records forever),
    /// `retention.max_size` (default `8G`; `0`: no limit), `retention.interval` (`1m`).
    pub retention: Retention,
    /// `sync` (default `full`): fsync every batch; `normal` survives a crash of kubetrail but
    /// not a power loss.
    pub sync_full: bool,
    /// `cache_size` (default `40M`, at least `1M`): the writer's SQLite page cache, KiB.
    /// Most of the output's memory; smaller costs ingest speed on a big store. Shared
    /// between the shards.
    pub cache_kib: u32,
    /// `shards` (default 2, 1 to 16): how many files a new store is kept in, written in
    /// parallel (records split by id; see `kubetrail_activity::shards`). An existing store
    /// keeps the count it was made with.
    pub shards: usize,
}

/// How many files a new store is kept in: two writers use both cores of a small machine
/// (1.5 times the records/s of one on two cores, in the same memory).
pub const SHARDS: usize = 2;

impl StoreConfig {
    /// Reads the section; `data_dir` is the service's.
    pub fn from_section(s: &mut Section, data_dir: &Path) -> Result<StoreConfig, ConfigError> {
        let path = s.get_str_or("path", "activity.db")?;
        if path.trim().is_empty() {
            return Err(s.error("path", "must name a file"));
        }
        let path = data_dir.join(path.trim());
        let defaults = Retention::default();
        let max_age = match s.get_duration("retention.max_age")? {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None => defaults.max_age,
        };
        let max_size = match s.get_size("retention.max_size")? {
            Some(0) => None,
            Some(n) if n < (1 << 20) => {
                return Err(s.error(
                    "retention.max_size",
                    "must be at least 1M (or 0 for no limit)",
                ));
            }
            Some(n) => Some(n),
            None => defaults.max_size,
        };
        let interval = s
            .get_duration("retention.interval")?
            .unwrap_or(defaults.interval)
            .max(Duration::from_secs(1));
        let sync_full = !matches!(s.get_choice("sync", &["full", "normal"])?, Some("normal"));
        let cache_kib = match s.get_size("cache_size")? {
            None => kubetrail_activity::writer::CACHE_KIB,
            Some(n) if n < (1 << 20) => {
                return Err(s.error("cache_size", "must be at least 1M"));
            }
            Some(n) if n > (4 << 30) => {
                return Err(s.error("cache_size", "must be at most 4G"));
            }
            Some(n) => u32::try_from(n >> 10).unwrap_or(u32::MAX),
        };
        let shards = match s.get_u64("shards")? {
            None => SHARDS,
            Some(n) if (1..=kubetrail_activity::MAX_SHARDS as u64).contains(&n) => n as usize,
            Some(_) => {
                return Err(s.error(
                    "shards",
                    format!("must be 1 to {}", kubetrail_activity::MAX_SHARDS),
                ));
            }
        };
        Ok(StoreConfig {
            path,
            retention: Retention {
                max_age,
                max_size,
                interval,
                ..defaults
            },
            sync_full,
            cache_kib,
            shards,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubetrail_core::config::SectionKind;

    fn parse(pairs: &[(&str, &str)]) -> Result<StoreConfig, ConfigError> {
        let mut s = Section::from_pairs(SectionKind::Output, "store", pairs);
        let c = StoreConfig::from_section(&mut s, Path::new("/data"))?;
        s.finish()?;
        Ok(c)
    }

    #[test]
    fn defaults_and_options() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.path, PathBuf::from("/data/activity.db"));
        assert_eq!(c.retention.max_age, Some(Duration::from_secs(30 * 86400)));
        assert_eq!(c.retention.max_size, Some(8 << 30));
        assert!(c.sync_full);
        assert_eq!(c.cache_kib, 40 * 1024);
        assert_eq!(c.shards, 2);
        let c = parse(&[
            ("path", "/srv/a.db"),
            ("retention.max_age", "7d"),
            ("retention.max_size", "0"),
            ("retention.interval", "10s"),
            ("sync", "normal"),
            ("cache_size", "8M"),
            ("shards", "4"),
        ])
        .unwrap();
        assert_eq!(c.shards, 4);
        assert_eq!(c.path, PathBuf::from("/srv/a.db"));
        assert_eq!(c.retention.max_age, Some(Duration::from_secs(7 * 86400)));
        assert_eq!(c.retention.max_size, None);
        assert_eq!(c.retention.interval, Duration::from_secs(10));
        assert!(!c.sync_full);
        assert_eq!(c.cache_kib, 8 * 1024);
        assert_eq!(
            parse(&[("retention.max_age", "0")])
                .unwrap()
                .retention
                .max_age,
            None
        );
        assert!(parse(&[("retention.max_size", "10k")]).is_err());
        assert!(parse(&[("sync", "sometimes")]).is_err());
        assert!(parse(&[("cache_size", "512k")]).is_err());
        assert!(parse(&[("cache_size", "5G")]).is_err());
        assert!(parse(&[("shards", "0")]).is_err());
        assert!(parse(&[("shards", "17")]).is_err());
        assert_eq!(parse(&[("shards", "1")]).unwrap().shards, 1);
        assert!(parse(&[("retention.maxage", "1d")]).is_err());
    }
}
