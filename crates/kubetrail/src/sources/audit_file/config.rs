//! Options of the `audit_file` input. Names follow Fluent Bit's `tail` input where the concept
//! is the same (`path`, `read_from_head`, `buffer_max_size`, `refresh_interval`, `rotate_wait`).

use std::time::Duration;

use kubetrail_core::config::{ConfigError, Section};

/// The smallest `buffer_max_size` accepted: an audit line is rarely under a few hundred bytes,
/// and a buffer smaller than the fingerprint would make every file look too short.
const MIN_BUFFER_MAX_SIZE: u64 = 1024;
/// The largest `buffer_max_size` accepted: one line is held in memory whole.
const MAX_BUFFER_MAX_SIZE: u64 = 1 << 30;

/// The resolved options.
#[derive(Debug, Clone)]
pub struct AuditFileConfig {
    /// `path` (required): a glob of the audit log files, e.g.
    /// `/var/log/kubernetes/audit/audit*.log*`. It should match the active file and its
    /// rotated (and gzipped) backups, so that a rotated file is found under its new name.
    pub path: String,
    /// `exclude_path` (default none): patterns (comma-separated, or a list) of files the
    /// glob matches that are not read, e.g. `*.gz` to leave compressed backups alone. A
    /// pattern matches the whole path, `*` crossing `/` (Fluent Bit's `fnmatch` without
    /// flags).
    pub exclude_path: Vec<glob::Pattern>,
    /// `read_from_head` (default on): a file never seen before, found at start, is read from
    /// its beginning. When off, it starts at its end (after its last complete line). Files
    /// that appear while running are always read from their beginning.
    pub read_from_head: bool,
    /// `buffer_max_size` (default 16M): the longest line read whole. A longer line becomes an
    /// `error` record naming the file and offset and is skipped; reading goes on after it.
    pub buffer_max_size: usize,
    /// `refresh_interval` (default 1s): how often the glob is scanned again for new, renamed,
    /// truncated or removed files.
    pub refresh_interval: Duration,
    /// `rotate_wait` (default 5s): how long a rotated file is kept open after it was last seen
    /// growing. It is always read to its end before it is left.
    pub rotate_wait: Duration,
    /// `poll_interval` (default 250ms): how often open files are checked for new data.
    pub poll_interval: Duration,
    /// `format`: `normalized` (default) or `raw` (each audit event exactly as in the file).
    pub raw_format: bool,
    /// `dedup_retention` (default 1h): how long the `auditID/stage` keys are remembered, so an
    /// event also seen elsewhere (a copy of the file, the webhook) is kept once.
    pub dedup_retention: Duration,
    /// `batch.records` (default 1000): records per submission at most.
    pub batch_records: usize,
    /// `batch.bytes` (default 4M): line bytes per submission at most (one longer line still
    /// goes alone).
    pub batch_bytes: usize,
}

impl AuditFileConfig {
    /// Reads the options (the topology reads the common ones and calls `finish`).
    pub fn from_section(s: &mut Section) -> Result<AuditFileConfig, ConfigError> {
        let path = match s.get_str("path")? {
            Some(p) if !p.trim().is_empty() => p.trim().to_string(),
            _ => return Err(s.error("path", "is required: a glob of the audit log files")),
        };
        if let Err(e) = glob::Pattern::new(&path) {
            return Err(s.error("path", format!("'{path}' is not a valid glob: {e}")));
        }
        let mut exclude_path = Vec::new();
        for p in s.get_list("exclude_path")?.unwrap_or_default() {
            let pattern = glob::Pattern::new(&p)
                .map_err(|e| s.error("exclude_path", format!("'{p}' is not a valid glob: {e}")))?;
            exclude_path.push(pattern);
        }
        let read_from_head = s.get_bool("read_from_head")?.unwrap_or(true);
        let buffer_max_size = s.get_size("buffer_max_size")?.unwrap_or(16 << 20);
        if !(MIN_BUFFER_MAX_SIZE..=MAX_BUFFER_MAX_SIZE).contains(&buffer_max_size) {
            return Err(s.error(
                "buffer_max_size",
                format!("must be between {MIN_BUFFER_MAX_SIZE} bytes and 1G"),
            ));
        }
        let refresh_interval = positive(s, "refresh_interval", Duration::from_secs(1))?;
        let rotate_wait = s
            .get_duration("rotate_wait")?
            .unwrap_or(Duration::from_secs(5));
        let poll_interval = positive(s, "poll_interval", Duration::from_millis(250))?;
        let raw_format = matches!(s.get_choice("format", &["normalized", "raw"])?, Some("raw"));
        let dedup_retention = s
            .get_duration("dedup_retention")?
            .unwrap_or(Duration::from_secs(3600));
        let batch_records = s.get_u64("batch.records")?.unwrap_or(1000);
        if batch_records == 0 || batch_records > 1_000_000 {
            return Err(s.error("batch.records", "must be between 1 and 1000000"));
        }
        let batch_bytes = s.get_size("batch.bytes")?.unwrap_or(4 << 20);
        if !(1024..=(1 << 30)).contains(&batch_bytes) {
            return Err(s.error("batch.bytes", "must be between 1k and 1G"));
        }
        Ok(AuditFileConfig {
            path,
            exclude_path,
            read_from_head,
            // Bounded to 1G above, so it fits in usize on every supported target.
            buffer_max_size: buffer_max_size as usize,
            refresh_interval,
            rotate_wait,
            poll_interval,
            raw_format,
            dedup_retention,
            batch_records: batch_records as usize,
            batch_bytes: batch_bytes as usize,
        })
    }
}

fn positive(s: &mut Section, key: &str, default: Duration) -> Result<Duration, ConfigError> {
    let d = s.get_duration(key)?.unwrap_or(default);
    if d.is_zero() {
        return Err(s.error(key, "must be greater than zero"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use kubetrail_core::config::SectionKind;

    use super::*;

    fn section(pairs: &[(&str, &str)]) -> Section {
        Section::from_pairs(SectionKind::Input, "audit_file", pairs)
    }

    #[test]
    fn defaults() {
        let mut s = section(&[("path", "/var/log/kubernetes/audit/audit*.log*")]);
        let c = AuditFileConfig::from_section(&mut s).unwrap();
        s.finish().unwrap();
        assert_eq!(c.path, "/var/log/kubernetes/audit/audit*.log*");
        assert!(c.exclude_path.is_empty());
        assert!(c.read_from_head);
        assert_eq!(c.buffer_max_size, 16 << 20);
        assert_eq!(c.refresh_interval, Duration::from_secs(1));
        assert_eq!(c.rotate_wait, Duration::from_secs(5));
        assert_eq!(c.poll_interval, Duration::from_millis(250));
        assert!(!c.raw_format);
        assert_eq!(c.dedup_retention, Duration::from_secs(3600));
        assert_eq!(c.batch_records, 1000);
        assert_eq!(c.batch_bytes, 4 << 20);
    }

    #[test]
    fn options_are_read() {
        let mut s = section(&[
            ("path", "/a/*.log"),
            ("Read_From_Head", "off"),
            ("buffer_max_size", "64k"),
            ("refresh_interval", "10s"),
            ("rotate_wait", "0"),
            ("format", "raw"),
            ("dedup_retention", "2h"),
            ("batch.records", "10"),
            ("batch.bytes", "1M"),
        ]);
        let c = AuditFileConfig::from_section(&mut s).unwrap();
        s.finish().unwrap();
        assert!(!c.read_from_head);
        assert_eq!(c.buffer_max_size, 64 << 10);
        assert_eq!(c.refresh_interval, Duration::from_secs(10));
        assert_eq!(c.rotate_wait, Duration::ZERO);
        assert!(c.raw_format);
        assert_eq!(c.dedup_retention, Duration::from_secs(7200));
        assert_eq!((c.batch_records, c.batch_bytes), (10, 1 << 20));
    }

    #[test]
    fn bad_values_name_the_key() {
        for (pairs, key) in [
            (vec![], "path"),
            (vec![("path", "  ")], "path"),
            (vec![("path", "/a/[")], "path"),
            (
                vec![("path", "/a"), ("buffer_max_size", "12")],
                "buffer_max_size",
            ),
            (
                vec![("path", "/a"), ("refresh_interval", "0")],
                "refresh_interval",
            ),
            (
                vec![("path", "/a"), ("batch.records", "0")],
                "batch.records",
            ),
            (vec![("path", "/a"), ("format", "yaml")], "format"),
            (vec![("path", "/a"), ("rotate_wait", "soon")], "rotate_wait"),
            (
                vec![("path", "/a"), ("exclude_path", "*.gz, [")],
                "exclude_path",
            ),
        ] {
            let err = AuditFileConfig::from_section(&mut section(&pairs)).unwrap_err();
            assert!(
                err.to_string().contains(&format!("'{key}'")),
                "{key}: {err}"
            );
        }
    }

    #[test]
    fn exclude_path_is_fluent_bits_comma_separated_list() {
        let mut s = section(&[("path", "/a/*"), ("exclude_path", "*.gz, /a/old-*")]);
        let c = AuditFileConfig::from_section(&mut s).unwrap();
        s.finish().unwrap();
        let excluded = |p: &str| c.exclude_path.iter().any(|x| x.matches(p));
        assert!(excluded("/a/audit-1.log.gz"));
        assert!(excluded("/a/old-audit.log"));
        assert!(!excluded("/a/audit.log"));
    }

    #[test]
    fn unknown_keys_are_reported_after_reading() {
        let mut s = section(&[("path", "/a"), ("rotate_wiat", "5s")]);
        AuditFileConfig::from_section(&mut s).unwrap();
        let err = s.finish().unwrap_err().to_string();
        assert!(err.contains("rotate_wait"), "{err}");
    }
}
