//! TLS options as Fluent Bit names them (`tls.verify`, `tls.ca_file`, ...), shared by every
//! component that opens or accepts TLS connections.

use std::path::PathBuf;

use super::{ConfigError, Section};

/// TLS settings read from a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// `tls.verify` (default on): verify the peer's certificate chain and hostname.
    pub verify: bool,
    /// `tls.debug` (0-4, default 0): TLS diagnostics in the logs.
    pub debug: u8,
    /// `tls.vhost`: the name sent as SNI and verified against the certificate.
    pub vhost: Option<String>,
    /// `tls.ca_file`: a PEM bundle of CAs to trust.
    pub ca_file: Option<PathBuf>,
    /// `tls.ca_path`: a directory of PEM CA files to trust.
    pub ca_path: Option<PathBuf>,
    /// `tls.crt_file`: a PEM certificate (client certificate, or the server's own).
    pub crt_file: Option<PathBuf>,
    /// `tls.key_file`: the PEM private key of `tls.crt_file`.
    pub key_file: Option<PathBuf>,
}

impl Default for TlsOptions {
    fn default() -> Self {
        TlsOptions {
            verify: true,
            debug: 0,
            vhost: None,
            ca_file: None,
            ca_path: None,
            crt_file: None,
            key_file: None,
        }
    }
}

impl TlsOptions {
    /// Reads `tls.verify`, `tls.debug`, `tls.vhost`, `tls.ca_file`, `tls.ca_path`,
    /// `tls.crt_file` and `tls.key_file`.
    pub fn from_section(section: &mut Section) -> Result<TlsOptions, ConfigError> {
        let verify = section.get_bool("tls.verify")?.unwrap_or(true);
        let debug = match section.get_u64("tls.debug")? {
            None => 0,
            Some(d) if d <= 4 => d as u8,
            Some(_) => return Err(section.error("tls.debug", "must be between 0 and 4")),
        };
        let path = |s: Option<String>| s.filter(|s| !s.is_empty()).map(PathBuf::from);
        let vhost = section.get_str("tls.vhost")?.filter(|s| !s.is_empty());
        let ca_file = path(section.get_str("tls.ca_file")?);
        let ca_path = path(section.get_str("tls.ca_path")?);
        let crt_file = path(section.get_str("tls.crt_file")?);
        let key_file = path(section.get_str("tls.key_file")?);
        if crt_file.is_some() != key_file.is_some() {
            let key = if crt_file.is_some() {
                "tls.key_file"
            } else {
                "tls.crt_file"
            };
            return Err(section.error(key, "tls.crt_file and tls.key_file go together"));
        }
        Ok(TlsOptions {
            verify,
            debug,
            vhost,
            ca_file,
            ca_path,
            crt_file,
            key_file,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SectionKind;

    #[test]
    fn defaults_and_pairs() {
        let mut s = Section::from_pairs(SectionKind::Output, "http", &[]);
        assert_eq!(
            TlsOptions::from_section(&mut s).unwrap(),
            TlsOptions::default()
        );
        let mut s = Section::from_pairs(SectionKind::Output, "http", &[("tls.crt_file", "/c")]);
        assert!(
            TlsOptions::from_section(&mut s)
                .unwrap_err()
                .to_string()
                .contains("tls.key_file")
        );
        let mut s = Section::from_pairs(SectionKind::Output, "http", &[("tls.debug", "7")]);
        assert!(TlsOptions::from_section(&mut s).is_err());
    }
}
