//! The `nats` output's options (see the module documentation for the list).

use std::path::PathBuf;
use std::time::Duration;

use kubetrail_core::config::{ConfigError, Section, TlsOptions, Value};

use super::auth::{AuthMethod, Secret};
use super::endpoint::Endpoint;
use super::subject::Template;

/// The default subject template.
pub const DEFAULT_SUBJECT: &str = "kubetrail.{kind}.{namespace|object_ref.namespace}";

/// How the stream is made when it is missing.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamOptions {
    pub name: String,
    /// Create the stream when it does not exist.
    pub create: bool,
    /// Subjects of a created stream (default: the template's filter).
    pub subjects: Vec<String>,
    pub duplicate_window: Duration,
    /// `file` or `memory`.
    pub storage: &'static str,
    pub replicas: u64,
    /// 0 = unlimited.
    pub max_age: Duration,
    /// `None` = unlimited.
    pub max_bytes: Option<u64>,
}

/// Everything the output needs.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    pub endpoints: Vec<Endpoint>,
    pub auth: AuthMethod,
    pub subject: Template,
    /// `None`: publish to whatever stream takes the subjects, without checking or creating.
    pub stream: Option<StreamOptions>,
    pub ack_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_in_flight: usize,
    /// The most stream messages read, after a failure, to find what a batch already got there.
    pub verify_limit: u64,
    /// `Some` when TLS is on.
    pub tls: Option<TlsOptions>,
}

const TLS_KEYS: [&str; 7] = [
    "verify", "debug", "vhost", "ca_file", "ca_path", "crt_file", "key_file",
];

/// Reads the `tls` switch: a scalar (`on`/`off`), or a map of `tls.*` options meaning on.
fn tls_switch(s: &mut Section) -> Result<Option<bool>, ConfigError> {
    match s.get_value("tls") {
        None => Ok(None),
        Some(Value::Map(entries)) => {
            // Reading `tls` marks the whole map as known: check its keys here instead.
            for (k, _, _) in &entries {
                if !TLS_KEYS.iter().any(|t| t.eq_ignore_ascii_case(k)) {
                    return Err(s.error(
                        &format!("tls.{k}"),
                        format!("unknown key (known: {})", TLS_KEYS.join(", ")),
                    ));
                }
            }
            Ok(Some(true))
        }
        Some(_) => s.get_bool("tls"),
    }
}

/// A secret given inline (`key`) or as a file (`key_file`), not both.
fn secret(s: &mut Section, key: &str, file_key: &str) -> Result<Option<Secret>, ConfigError> {
    let inline = s.get_str(key)?.filter(|v| !v.is_empty());
    let file = s
        .get_str(file_key)?
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    match (inline, file) {
        (Some(_), Some(_)) => Err(s.error(
            file_key,
            format!("give either {key} or {file_key}, not both"),
        )),
        (Some(v), None) => Ok(Some(Secret::Inline(v))),
        (None, Some(p)) => Ok(Some(Secret::File(p))),
        (None, None) => Ok(None),
    }
}

/// The one authentication method the options name (see [`super::auth`]).
fn auth_method(s: &mut Section) -> Result<AuthMethod, ConfigError> {
    let user = s.get_str("user")?.filter(|u| !u.is_empty());
    let password = secret(s, "password", "password_file")?;
    let token = secret(s, "token", "token_file")?;
    let nkey = secret(s, "nkey_seed", "nkey_seed_file")?;
    let creds = s
        .get_str("credentials_file")?
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    if password.is_some() && user.is_none() {
        return Err(s.error("user", "is required with a password"));
    }
    let mut given: Vec<(&str, AuthMethod)> = Vec::new();
    if let Some(user) = user {
        given.push(("user", AuthMethod::UserPassword { user, password }));
    }
    if let Some(t) = token {
        given.push(("token", AuthMethod::Token(t)));
    }
    if let Some(n) = nkey {
        given.push(("nkey_seed", AuthMethod::NkeySeed(n)));
    }
    if let Some(c) = creds {
        given.push(("credentials_file", AuthMethod::CredentialsFile(c)));
    }
    match given.len() {
        0 => Ok(AuthMethod::FromUrl),
        1 => Ok(given.remove(0).1),
        _ => {
            let names: Vec<&str> = given.iter().map(|(k, _)| *k).collect();
            Err(s.error(
                given[1].0,
                format!(
                    "give one way to authenticate, not several ({})",
                    names.join(", ")
                ),
            ))
        }
    }
}

fn valid_stream_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 255
        && !n.contains(|c: char| c.is_whitespace() || c.is_control() || ".*>/\\".contains(c))
}

impl NatsConfig {
    pub fn from_section(s: &mut Section) -> Result<NatsConfig, ConfigError> {
        let url = s.get_str("url")?.filter(|u| !u.trim().is_empty());
        let host = s.get_str("host")?.filter(|h| !h.is_empty());
        let port = s.get_u64("port")?;
        let endpoints = match (url, host) {
            (Some(_), Some(_)) => {
                return Err(s.error("host", "give either url or host/port, not both"));
            }
            (Some(u), None) => Endpoint::parse_list(&u).map_err(|m| s.error("url", m))?,
            (None, h) => {
                let port = match port {
                    None => 4222,
                    Some(p) if (1..=65535).contains(&p) => p as u16,
                    Some(_) => return Err(s.error("port", "must be between 1 and 65535")),
                };
                let host = h.unwrap_or_else(|| "127.0.0.1".into());
                let host = host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string();
                vec![Endpoint {
                    host,
                    port,
                    tls: false,
                    user: None,
                    password: None,
                    token: None,
                }]
            }
        };
        let auth = auth_method(s)?;
        let subject = Template::parse(&s.get_str_or("subject", DEFAULT_SUBJECT)?)
            .map_err(|m| s.error("subject", m))?;

        let stream_name = s.get_str_or("stream", "KUBETRAIL")?;
        let create = s.get_bool("stream_create")?.unwrap_or(true);
        let subjects = s
            .get_list("stream_subjects")?
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| vec![subject.filter()]);
        let duplicate_window = s
            .get_duration("duplicate_window")?
            .unwrap_or(Duration::from_secs(120));
        let storage = s
            .get_choice("stream_storage", &["file", "memory"])?
            .unwrap_or("file");
        let replicas = s.get_u64("stream_replicas")?.unwrap_or(1);
        let max_age = s.get_duration("stream_max_age")?.unwrap_or(Duration::ZERO);
        let max_bytes = s.get_size("stream_max_bytes")?.filter(|b| *b > 0);
        let stream = if stream_name.trim().is_empty() {
            None
        } else {
            let name = stream_name.trim().to_string();
            if !valid_stream_name(&name) {
                return Err(s.error(
                    "stream",
                    "a stream name has no spaces, '.', '*', '>', '/' or '\\'",
                ));
            }
            if duplicate_window.is_zero() {
                return Err(s.error(
                    "duplicate_window",
                    "must be more than 0: it is what makes redelivery harmless",
                ));
            }
            if !(1..=5).contains(&replicas) {
                return Err(s.error("stream_replicas", "must be between 1 and 5"));
            }
            Some(StreamOptions {
                name,
                create,
                subjects,
                duplicate_window,
                storage,
                replicas,
                max_age,
                max_bytes,
            })
        };
        let ack_timeout = s
            .get_duration("ack_timeout")?
            .unwrap_or(Duration::from_secs(10));
        let connect_timeout = s
            .get_duration("connect_timeout")?
            .unwrap_or(Duration::from_secs(10));
        if ack_timeout.is_zero() || connect_timeout.is_zero() {
            return Err(s.error(
                if ack_timeout.is_zero() {
                    "ack_timeout"
                } else {
                    "connect_timeout"
                },
                "must be more than 0",
            ));
        }
        let max_in_flight = s.get_u64("max_in_flight")?.unwrap_or(1024).clamp(1, 65_536) as usize;

        let verify_limit = s.get_u64("verify_limit")?.unwrap_or(20_000);

        let switch = tls_switch(s)?;
        let tls_options = TlsOptions::from_section(s)?;
        let tls_on =
            switch.unwrap_or(false) || (switch.is_none() && endpoints.iter().any(|e| e.tls));
        Ok(NatsConfig {
            endpoints,
            auth,
            subject,
            stream,
            ack_timeout,
            connect_timeout,
            max_in_flight,
            verify_limit,
            tls: tls_on.then_some(tls_options),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubetrail_core::config::SectionKind;

    fn cfg(pairs: &[(&str, &str)]) -> Result<NatsConfig, ConfigError> {
        let mut s = Section::from_pairs(SectionKind::Output, "nats", pairs);
        let c = NatsConfig::from_section(&mut s)?;
        s.finish()?;
        Ok(c)
    }

    #[test]
    fn defaults() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.endpoints[0].addr(), "127.0.0.1:4222");
        let st = c.stream.unwrap();
        assert_eq!(st.name, "KUBETRAIL");
        assert_eq!(st.subjects, vec!["kubetrail.*.*".to_string()]);
        assert_eq!(st.duplicate_window, Duration::from_secs(120));
        assert!(st.create && st.storage == "file" && st.replicas == 1 && st.max_bytes.is_none());
        assert_eq!(
            (c.ack_timeout, c.max_in_flight),
            (Duration::from_secs(10), 1024)
        );
        assert!(c.tls.is_none());
    }

    #[test]
    fn options() {
        let c = cfg(&[
            ("url", "tls://a:4223,tls://b:4223"),
            ("tls.verify", "off"),
            ("subject", "audit.{verb}"),
            ("stream", "AUDIT"),
            ("stream_subjects", "audit.>"),
            ("duplicate_window", "10m"),
            ("stream_storage", "memory"),
            ("user", "u"),
            ("password", "p"),
        ])
        .unwrap();
        assert_eq!(c.endpoints.len(), 2);
        assert!(
            c.tls.as_ref().is_some_and(|t| !t.verify),
            "tls:// turns TLS on"
        );
        let st = c.stream.unwrap();
        assert_eq!(
            (st.subjects[0].as_str(), st.duplicate_window, st.storage),
            ("audit.>", Duration::from_secs(600), "memory")
        );
        assert!(cfg(&[("stream", "")]).unwrap().stream.is_none());
        assert!(
            cfg(&[("host", "nats.local"), ("port", "4333"), ("tls", "on")])
                .unwrap()
                .tls
                .is_some()
        );
    }

    #[test]
    fn authentication() {
        assert_eq!(cfg(&[]).unwrap().auth, AuthMethod::FromUrl);
        assert_eq!(
            cfg(&[("credentials_file", "/etc/nats/kubetrail.creds")])
                .unwrap()
                .auth,
            AuthMethod::CredentialsFile("/etc/nats/kubetrail.creds".into())
        );
        assert_eq!(
            cfg(&[("nkey_seed_file", "/etc/nats/seed")]).unwrap().auth,
            AuthMethod::NkeySeed(Secret::File("/etc/nats/seed".into()))
        );
        assert_eq!(
            cfg(&[("nkey_seed", "SUA")]).unwrap().auth,
            AuthMethod::NkeySeed(Secret::Inline("SUA".into()))
        );
        assert_eq!(
            cfg(&[("user", "u"), ("password_file", "/p")]).unwrap().auth,
            AuthMethod::UserPassword {
                user: "u".into(),
                password: Some(Secret::File("/p".into()))
            }
        );
        assert_eq!(
            cfg(&[("token", "t")]).unwrap().auth,
            AuthMethod::Token(Secret::Inline("t".into()))
        );
        let e = cfg(&[("nkey_seed_file", "/s"), ("token", "t")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("one way to authenticate"), "{e}");
    }

    #[test]
    fn invalid() {
        for pairs in [
            vec![("url", "nats://a"), ("host", "b")],
            vec![("subject", "a..b")],
            vec![("stream", "a.b")],
            vec![("duplicate_window", "0s")],
            vec![("password", "p")],
            vec![("token", "t"), ("user", "u")],
            vec![("token", "t"), ("token_file", "/t")],
            vec![("nkey_seed", "SU"), ("nkey_seed_file", "/s")],
            vec![("credentials_file", "/c"), ("nkey_seed_file", "/s")],
            vec![("credentials_file", "/c"), ("user", "u"), ("password", "p")],
            vec![("ack_timeout", "0s")],
            vec![("tls.vhots", "x")],
            vec![("port", "70000")],
        ] {
            assert!(cfg(&pairs).is_err(), "{pairs:?}");
        }
    }
}
