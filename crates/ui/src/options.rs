//! The activity page's options: the `ui.*` keys of the `service` section (or the same keys
//! built from `kubetrail ui`'s flags), checked the way the audit webhook checks its own:
//! HTTPS and authentication are on unless the configuration says otherwise in so many words.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use kubetrail_core::config::{ConfigError, Section};
use kubetrail_net::server_tls::{ServerTls, read_server_tls};

/// How long a sign-in lasts by default.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// The default time limit of one query.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// The default number of connections served at once.
pub const DEFAULT_MAX_CONNECTIONS: u64 = 64;
/// The default number of live streams (open pages receiving new records) at once.
pub const DEFAULT_MAX_LIVE: u64 = 32;

/// Every `ui.*` key, for the check that a key is not set while the page is off.
const KEYS: &[&str] = &[
    "ui.tls",
    "ui.tls.crt_file",
    "ui.tls.key_file",
    "ui.tls.client_ca_file",
    "ui.token_file",
    "ui.auth",
    "ui.store",
    "ui.session_ttl",
    "ui.query_timeout",
    "ui.max_connections",
    "ui.max_live",
];

/// The resolved options of the activity page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiOptions {
    /// `ui.listen`: the address to serve on (the page is off without it).
    pub listen: SocketAddr,
    /// `ui.tls.crt_file`, `ui.tls.key_file`, `ui.tls.client_ca_file`; `None` only when
    /// `ui.tls: off` is written.
    pub tls: Option<ServerTls>,
    /// `ui.token_file`: accepted bearer tokens, one per line, re-read when the file changes.
    /// A person signs in by pasting one into the page's form (a session cookie follows); a
    /// program sends `Authorization: Bearer <token>`.
    pub token_file: Option<PathBuf>,
    /// `false` only when `ui.auth: none` is written: then anyone who can connect may read.
    pub auth_required: bool,
    /// `ui.store`: the output whose records the page reads (its alias or instance name, a
    /// `store` or `postgresql` output); by default the `store` output, else the
    /// `postgresql` one.
    pub store: Option<String>,
    /// `ui.session_ttl` (default `12h`): how long a sign-in lasts.
    pub session_ttl: Duration,
    /// `ui.query_timeout` (default `10s`): the time limit of one query.
    pub query_timeout: Duration,
    /// `ui.max_connections` (default 64): connections beyond this are closed at once.
    pub max_connections: usize,
    /// `ui.max_live` (default 32): pages receiving live updates at once; more get 503 and
    /// keep working without them.
    pub max_live: usize,
}

impl UiOptions {
    /// Reads the `ui.*` keys of the `service` section: `None` when `ui.listen` is not set
    /// (the page is off), an error when another `ui.*` key is set without it.
    pub fn from_section(s: &mut Section) -> Result<Option<UiOptions>, ConfigError> {
        let listen = match s.get_str("ui.listen")? {
            Some(v) if !v.trim().is_empty() && !v.trim().eq_ignore_ascii_case("off") => v,
            _ => {
                if let Some(k) = KEYS.iter().find(|k| s.has(k)) {
                    return Err(s.error(
                        k,
                        "is set but ui.listen is not (the activity page is off without it)",
                    ));
                }
                return Ok(None);
            }
        };
        let listen: SocketAddr = listen.trim().parse().map_err(|_| {
            s.error(
                "ui.listen",
                format!("'{}' is not an address like 127.0.0.1:2021", listen.trim()),
            )
        })?;
        let tls = read_server_tls(s, "ui.tls", "the activity page")?;
        let token_file = s
            .get_str("ui.token_file")?
            .filter(|p| !p.trim().is_empty())
            .map(|p| PathBuf::from(p.trim()));
        let auth_required = !matches!(
            s.get_choice("ui.auth", &["required", "none"])?,
            Some("none")
        );
        let client_ca = tls.as_ref().is_some_and(|t| t.client_ca_file.is_some());
        if auth_required && !client_ca && token_file.is_none() {
            return Err(s.error(
                "ui.token_file",
                "the activity page requires authentication: set ui.token_file and/or \
                 ui.tls.client_ca_file, or write 'ui.auth: none' to let anyone who can \
                 connect read the cluster's activity",
            ));
        }
        if !auth_required && (client_ca || token_file.is_some()) {
            let key = if token_file.is_some() {
                "ui.token_file"
            } else {
                "ui.tls.client_ca_file"
            };
            return Err(s.error(
                key,
                "'ui.auth: none' disables authentication; remove one of them",
            ));
        }
        let store = s
            .get_str("ui.store")?
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty());
        let session_ttl = s
            .get_duration("ui.session_ttl")?
            .unwrap_or(DEFAULT_SESSION_TTL);
        if session_ttl < Duration::from_secs(60) {
            return Err(s.error("ui.session_ttl", "must be at least 1m"));
        }
        let query_timeout = s
            .get_duration("ui.query_timeout")?
            .unwrap_or(DEFAULT_QUERY_TIMEOUT);
        if query_timeout.is_zero() {
            return Err(s.error("ui.query_timeout", "must be more than 0"));
        }
        let max_connections = s
            .get_u64("ui.max_connections")?
            .unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            return Err(s.error("ui.max_connections", "must be at least 1"));
        }
        let max_live = s.get_u64("ui.max_live")?.unwrap_or(DEFAULT_MAX_LIVE);
        Ok(Some(UiOptions {
            listen,
            tls,
            token_file,
            auth_required,
            store,
            session_ttl,
            query_timeout,
            max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
            max_live: usize::try_from(max_live).unwrap_or(usize::MAX),
        }))
    }
}

#[cfg(test)]
mod tests {
    use kubetrail_core::config::{Config, SectionKind};

    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<Option<UiOptions>, String> {
        let mut s = Section::from_pairs(SectionKind::Service, "", pairs);
        let o = UiOptions::from_section(&mut s).map_err(|e| e.to_string())?;
        s.finish().map_err(|e| e.to_string())?;
        Ok(o)
    }

    fn yaml(service: &str) -> Result<Option<UiOptions>, String> {
        let text = format!("service:\n{service}");
        let mut cfg =
            Config::parse(&text, std::path::Path::new("t.yaml")).map_err(|e| e.to_string())?;
        let o = UiOptions::from_section(&mut cfg.service).map_err(|e| e.to_string())?;
        cfg.service.finish().map_err(|e| e.to_string())?;
        Ok(o)
    }

    #[test]
    fn off_unless_listen_is_set() {
        assert_eq!(read(&[]).unwrap(), None);
        assert_eq!(read(&[("ui.listen", "off")]).unwrap(), None);
        let e = read(&[("ui.token_file", "/t")]).unwrap_err();
        assert!(
            e.contains("ui.token_file") && e.contains("ui.listen"),
            "{e}"
        );
    }

    #[test]
    fn https_and_authentication_by_default() {
        let e = read(&[("ui.listen", "127.0.0.1:2021"), ("ui.token_file", "/t")]).unwrap_err();
        assert!(
            e.contains("ui.tls.crt_file") && e.contains("'ui.tls: off'"),
            "{e}"
        );
        let e = read(&[("ui.listen", "127.0.0.1:2021"), ("ui.tls", "off")]).unwrap_err();
        assert!(e.contains("requires authentication"), "{e}");
        let o = read(&[
            ("ui.listen", "0.0.0.0:2021"),
            ("ui.tls.crt_file", "/c"),
            ("ui.tls.key_file", "/k"),
            ("ui.token_file", "/t"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(o.listen, "0.0.0.0:2021".parse().unwrap());
        assert_eq!(o.tls.as_ref().unwrap().crt_file, PathBuf::from("/c"));
        assert!(o.auth_required);
        assert_eq!(o.session_ttl, DEFAULT_SESSION_TTL);
        assert_eq!(o.query_timeout, DEFAULT_QUERY_TIMEOUT);
        assert_eq!((o.max_connections, o.max_live), (64, 32));
        // A client CA alone authenticates.
        let o = read(&[
            ("ui.listen", "0.0.0.0:2021"),
            ("ui.tls.crt_file", "/c"),
            ("ui.tls.key_file", "/k"),
            ("ui.tls.client_ca_file", "/ca"),
        ])
        .unwrap()
        .unwrap();
        assert!(o.auth_required && o.token_file.is_none());
    }

    #[test]
    fn auth_none_is_explicit_and_alone() {
        let o = read(&[
            ("ui.listen", "127.0.0.1:2021"),
            ("ui.tls", "off"),
            ("ui.auth", "none"),
        ])
        .unwrap()
        .unwrap();
        assert!(!o.auth_required && o.tls.is_none());
        let e = read(&[
            ("ui.listen", "127.0.0.1:2021"),
            ("ui.tls", "off"),
            ("ui.auth", "none"),
            ("ui.token_file", "/t"),
        ])
        .unwrap_err();
        assert!(e.contains("disables authentication"), "{e}");
    }

    #[test]
    fn yaml_forms_and_typos() {
        let o = yaml(
            "  ui.listen: 127.0.0.1:2021\n  ui:\n    tls: off\n    token_file: /t\n    store: store.0\n    session_ttl: 1h\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(o.store.as_deref(), Some("store.0"));
        assert_eq!(o.session_ttl, Duration::from_secs(3600));
        let o = yaml(
            "  ui:\n    listen: 127.0.0.1:2021\n    token_file: /t\n    tls:\n      crt_file: /c\n      key_file: /k\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(o.tls.unwrap().key_file, PathBuf::from("/k"));
        let e = yaml("  ui:\n    listen: 127.0.0.1:2021\n    token_file: /t\n    tls:\n      crt_file: /c\n      key_file: /k\n      client_ca_fil: /ca\n")
            .unwrap_err();
        assert!(
            e.contains("ui.tls.client_ca_fil") && e.contains("ui.tls.client_ca_file"),
            "{e}"
        );
        let e = yaml("  ui.listen: 127.0.0.1:2021\n  ui.tls: off\n  ui.token_file: /t\n  ui.sesion_ttl: 1h\n")
            .unwrap_err();
        assert!(e.contains("ui.session_ttl"), "{e}");
        let e = yaml("  ui.listen: nowhere\n").unwrap_err();
        assert!(e.contains("not an address"), "{e}");
        let e = read(&[
            ("ui.listen", "127.0.0.1:2021"),
            ("ui.tls", "off"),
            ("ui.token_file", "/t"),
            ("ui.session_ttl", "5s"),
        ])
        .unwrap_err();
        assert!(e.contains("at least 1m"), "{e}");
    }
}
