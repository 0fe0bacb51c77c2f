//! The `postgresql` output's options (see the module documentation for the list).

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use kubetrail_core::config::{ConfigError, Section, TlsOptions, Value};
use tokio_postgres::config::SslMode;

/// A table name, optionally schema-qualified; both parts are plain identifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    pub schema: Option<String>,
    pub name: String,
}

impl TableName {
    /// Parses `table` or `schema.table`: letters, digits and `_`, not starting with a digit,
    /// at most 63 bytes each (PostgreSQL's identifier limit).
    pub fn parse(s: &str) -> Result<TableName, String> {
        let ident = |p: &str| {
            !p.is_empty()
                && p.len() <= 63
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !p.starts_with(|c: char| c.is_ascii_digit())
        };
        let (schema, name) = match s.split_once('.') {
            Some((a, b)) => (Some(a), b),
            None => (None, s),
        };
        if !ident(name) || schema.is_some_and(|a| !ident(a)) {
            return Err(format!(
                "'{s}' is not a table name: letters, digits and '_' (optionally 'schema.table'), at most 63 characters each"
            ));
        }
        Ok(TableName {
            schema: schema.map(str::to_string),
            name: name.to_string(),
        })
    }

    /// The name as SQL, each part quoted.
    pub fn sql(&self) -> String {
        match &self.schema {
            Some(s) => format!("\"{s}\".\"{}\"", self.name),
            None => format!("\"{}\"", self.name),
        }
    }
}

/// Everything the output needs to connect and write.
#[derive(Debug, Clone)]
pub struct PostgresqlConfig {
    /// Connection settings (password included unless it comes from `password_file`).
    pub pg: tokio_postgres::Config,
    /// Read at every connection, so a rotated password is picked up.
    pub password_file: Option<PathBuf>,
    pub table: TableName,
    pub create_table: bool,
    /// Bounds connecting and each batch's statement.
    pub timeout: Duration,
    /// `Some` when TLS is on.
    pub tls: Option<TlsOptions>,
}

const TLS_KEYS: [&str; 7] = [
    "verify", "debug", "vhost", "ca_file", "ca_path", "crt_file", "key_file",
];

/// Reads the `tls` switch: a scalar (`on`/`off`), or a map of `tls.*` options meaning on.
/// Returns `None` when `tls` is not written.
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

impl PostgresqlConfig {
    pub fn from_section(s: &mut Section) -> Result<PostgresqlConfig, ConfigError> {
        let url = s.get_str("url")?.filter(|u| !u.trim().is_empty());
        let mut pg = match &url {
            // The error never echoes the URL: it may hold a password.
            Some(u) => tokio_postgres::Config::from_str(u.trim()).map_err(|e| {
                s.error(
                    "url",
                    format!("is not a PostgreSQL URL or key=value connection string: {e}"),
                )
            })?,
            None => tokio_postgres::Config::new(),
        };
        let url_sslmode = url.as_deref().is_some_and(|u| u.contains("sslmode="));

        if let Some(h) = s.get_str("host")?.filter(|h| !h.is_empty()) {
            pg.host(&h);
        } else if pg.get_hosts().is_empty() {
            pg.host("127.0.0.1");
        }
        match s.get_u64("port")? {
            Some(p) if (1..=65535).contains(&p) => {
                pg.port(p as u16);
            }
            Some(_) => return Err(s.error("port", "must be between 1 and 65535")),
            None if pg.get_ports().is_empty() => {
                pg.port(5432);
            }
            None => {}
        }
        if let Some(u) = s.get_str("user")?.filter(|u| !u.is_empty()) {
            pg.user(&u);
        } else if pg.get_user().is_none() {
            pg.user("postgres");
        }
        let password = s.get_str("password")?;
        let password_file = s
            .get_str("password_file")?
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        if password.is_some() && password_file.is_some() {
            return Err(s.error(
                "password_file",
                "give either password or password_file, not both",
            ));
        }
        if let Some(p) = password {
            pg.password(p);
        }
        if let Some(d) = s.get_str("database")?.filter(|d| !d.is_empty()) {
            pg.dbname(&d);
        } else if pg.get_dbname().is_none() {
            pg.dbname("kubetrail");
        }
        if let Some(o) = s.get_str("connection_options")?.filter(|o| !o.is_empty()) {
            pg.options(&o);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("kubetrail");
        }
        let table = TableName::parse(s.get_str_or("table", "kubetrail_records")?.trim())
            .map_err(|m| s.error("table", m))?;
        let create_table = s.get_bool("create_table")?.unwrap_or(true);
        let timeout = s
            .get_duration("timeout")?
            .unwrap_or(Duration::from_secs(30));
        if timeout.is_zero() {
            return Err(s.error("timeout", "must be more than 0"));
        }
        pg.connect_timeout(timeout);
        pg.keepalives(true);

        let switch = tls_switch(s)?;
        let tls_options = TlsOptions::from_section(s)?;
        let tls_on = match switch {
            Some(on) => on,
            // Without `tls`, a URL's `sslmode=require` turns it on; `prefer` is not honoured
            // (it would silently fall back to plain text when the handshake fails).
            None => url_sslmode && pg.get_ssl_mode() == SslMode::Require,
        };
        pg.ssl_mode(if tls_on {
            SslMode::Require
        } else {
            SslMode::Disable
        });
        Ok(PostgresqlConfig {
            pg,
            password_file,
            table,
            create_table,
            timeout,
            tls: tls_on.then_some(tls_options),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubetrail_core::config::SectionKind;

    fn cfg(pairs: &[(&str, &str)]) -> Result<PostgresqlConfig, ConfigError> {
        let mut s = Section::from_pairs(SectionKind::Output, "postgresql", pairs);
        let c = PostgresqlConfig::from_section(&mut s)?;
        s.finish()?;
        Ok(c)
    }

    #[test]
    fn defaults() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.pg.get_user(), Some("postgres"));
        assert_eq!(c.pg.get_dbname(), Some("kubetrail"));
        assert_eq!(c.pg.get_ports(), &[5432]);
        assert_eq!(
            c.table,
            TableName {
                schema: None,
                name: "kubetrail_records".into()
            }
        );
        assert!(c.create_table && c.tls.is_none());
        assert_eq!(c.pg.get_ssl_mode(), SslMode::Disable);
        assert_eq!(c.timeout, Duration::from_secs(30));
    }

    #[test]
    fn url_then_explicit_options_override() {
        let c = cfg(&[
            ("url", "postgres://u:secret@db.example:6543/audit"),
            ("database", "other"),
        ])
        .unwrap();
        assert_eq!(c.pg.get_user(), Some("u"));
        assert_eq!(c.pg.get_password(), Some(&b"secret"[..]));
        assert_eq!(c.pg.get_ports(), &[6543]);
        assert_eq!(c.pg.get_dbname(), Some("other"));
        assert!(
            !format!("{c:?}").contains("secret"),
            "Debug never shows the password"
        );
        let c = cfg(&[("url", "postgres://u@h/d?sslmode=require")]).unwrap();
        assert!(c.tls.is_some());
        let c = cfg(&[("url", "postgres://u@h/d?sslmode=require"), ("tls", "off")]).unwrap();
        assert!(c.tls.is_none());
        let e = cfg(&[("url", "postgres://u:pw@h/d?sslmode=bogus")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("url") && !e.contains("pw@"), "{e}");
    }

    #[test]
    fn tls_switch_and_nested_options() {
        let c = cfg(&[
            ("tls", "on"),
            ("tls.verify", "off"),
            ("tls.ca_file", "/ca.pem"),
        ])
        .unwrap();
        let t = c.tls.unwrap();
        assert!(!t.verify);
        assert_eq!(t.ca_file, Some(PathBuf::from("/ca.pem")));
        assert_eq!(c.pg.get_ssl_mode(), SslMode::Require);
        assert!(
            cfg(&[("tls.verfy", "off")]).is_err(),
            "misspelled keys are reported"
        );
    }

    #[test]
    fn table_names() {
        assert_eq!(
            TableName::parse("audit.records").unwrap().sql(),
            "\"audit\".\"records\""
        );
        for bad in [
            "",
            "a b",
            "x;drop",
            "1abc",
            "a.b.c",
            "\"q\"",
            &"x".repeat(64),
        ] {
            assert!(TableName::parse(bad).is_err(), "{bad}");
        }
        assert!(
            cfg(&[("table", "bad name")])
                .unwrap_err()
                .to_string()
                .contains("table")
        );
    }

    #[test]
    fn password_and_password_file_exclusive() {
        assert!(cfg(&[("password", "a"), ("password_file", "/f")]).is_err());
        assert!(cfg(&[("port", "0")]).is_err());
        assert!(cfg(&[("timeout", "0s")]).is_err());
    }
}
