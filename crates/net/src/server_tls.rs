//! TLS for kubetrail's servers (the audit webhook, the activity page): the server certificate,
//! re-read when its files change (so a renewed certificate, e.g. from cert-manager, is used
//! without a restart), client certificate verification against `tls.client_ca_file`, and the
//! `tls` options as a server section writes them.
//!
//! A client without a certificate still completes the handshake (the certificate is optional
//! at the TLS level) and gets a clear 401 from the HTTP layer unless it sends a valid token;
//! a client whose certificate does not chain to the CA fails the handshake.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::time::Instant;

use kubetrail_core::config::{ConfigError, Section, SettingError, Value, closest};

use crate::tokens::RELOAD_CHECK_INTERVAL;

/// Why the TLS settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} holds no usable PEM data: {message}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("the key in {key} does not fit the certificate in {crt}: {source}")]
    Key {
        crt: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("client CA {path}: {message}")]
    ClientCa { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// Keys accepted inside a `tls` map.
const TLS_KEYS: [&str; 3] = ["crt_file", "key_file", "client_ca_file"];

/// The server certificate and, optionally, the CA that client certificates must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// `tls.crt_file`: PEM certificate chain, re-read when it changes.
    pub crt_file: PathBuf,
    /// `tls.key_file`: PEM private key of `tls.crt_file`, re-read with it.
    pub key_file: PathBuf,
    /// `tls.client_ca_file`: PEM CA bundle; a request is authenticated by a client
    /// certificate that chains to it.
    pub client_ca_file: Option<PathBuf>,
}

/// Reads a server's `tls` options under `prefix` (`tls` for a component, `ui.tls` in the
/// `service` section): `PREFIX: off`, or `PREFIX.crt_file` + `PREFIX.key_file` and optionally
/// `PREFIX.client_ca_file` (also written as a map). HTTPS is the default: without a
/// certificate the error says so, naming `server` (`the audit webhook`).
pub fn read_server_tls(
    s: &mut Section,
    prefix: &str,
    server: &str,
) -> Result<Option<ServerTls>, ConfigError> {
    let key = |k: &str| format!("{prefix}.{k}");
    let nested = TLS_KEYS.iter().any(|k| s.has(&key(k)));
    // `tls` itself is only read when no nested key is written: reading it marks the whole
    // map as known, which would hide a misspelled key inside it from `finish`.
    let mut enabled = true;
    if s.has(prefix) && !nested {
        match s.get_value(prefix) {
            Some(Value::Map(entries)) => {
                // Only unknown keys (the known ones were checked above).
                if let Some((k, line, _)) = entries.first() {
                    return Err(unknown_tls_key(s, prefix, k, *line));
                }
            }
            Some(_) => enabled = s.get_bool(prefix)?.unwrap_or(true),
            None => {}
        }
    }
    let crt = s
        .get_str(&key("crt_file"))?
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    let key_file = s
        .get_str(&key("key_file"))?
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    let client_ca = s
        .get_str(&key("client_ca_file"))?
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    if !enabled {
        if let Some(k) = [
            ("crt_file", &crt),
            ("key_file", &key_file),
            ("client_ca_file", &client_ca),
        ]
        .into_iter()
        .find_map(|(k, v)| v.is_some().then_some(k))
        {
            return Err(s.error(
                &key(k),
                format!("is set but '{prefix}: off' serves plain HTTP"),
            ));
        }
        return Ok(None);
    }
    match (crt, key_file) {
        (Some(crt_file), Some(key_file)) => Ok(Some(ServerTls {
            crt_file,
            key_file,
            client_ca_file: client_ca,
        })),
        (None, _) => Err(s.error(
            &key("crt_file"),
            format!(
                "{server} serves HTTPS: set {prefix}.crt_file and {prefix}.key_file \
                 (or write '{prefix}: off' for plain HTTP)"
            ),
        )),
        (Some(_), None) => Err(s.error(
            &key("key_file"),
            format!("{prefix}.crt_file and {prefix}.key_file go together"),
        )),
    }
}

fn unknown_tls_key(s: &Section, prefix: &str, key: &str, line: usize) -> ConfigError {
    ConfigError::Setting(Box::new(SettingError {
        file: s.file().into(),
        component: s.label(),
        key: Some(format!("{prefix}.{key}")),
        line: (line > 0).then_some(line),
        message: "unknown key".to_string(),
        suggestion: closest(&key.to_ascii_lowercase(), TLS_KEYS.iter().copied())
            .map(|k| format!("{prefix}.{k}")),
    }))
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsSetupError> {
    std::fs::read(path).map_err(|source| TlsSetupError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Builds the server configuration (HTTP/1.1 only, ring, TLS 1.2 and 1.3).
pub fn server_config(tls: &ServerTls) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let provider = crate::crypto_provider();
    let resolver = ReloadingCert::load(&tls.crt_file, &tls.key_file)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsSetupError::Config)?;
    let builder = match &tls.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let pem = read("client CA file", path)?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| TlsSetupError::Pem {
                    what: "client CA file",
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                roots.add(cert).map_err(|e| TlsSetupError::ClientCa {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            }
            if roots.is_empty() {
                return Err(TlsSetupError::Pem {
                    what: "client CA file",
                    path: path.clone(),
                    message: "no certificate".into(),
                });
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsSetupError::ClientCa {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The server certificate, re-read from its files when their content changes (checked at
/// most every [`RELOAD_CHECK_INTERVAL`], during a handshake). A bad new pair is logged and
/// the previous one kept, so a half-written rotation never takes the server down.
#[derive(Debug)]
pub struct ReloadingCert {
    crt_file: PathBuf,
    key_file: PathBuf,
    state: Mutex<CertState>,
}

#[derive(Debug)]
struct CertState {
    checked_at: Instant,
    crt_pem: Vec<u8>,
    key_pem: Vec<u8>,
    current: Arc<CertifiedKey>,
}

impl ReloadingCert {
    /// Loads the pair; any problem is an error at startup.
    pub fn load(crt_file: &Path, key_file: &Path) -> Result<ReloadingCert, TlsSetupError> {
        let crt_pem = read("certificate file", crt_file)?;
        let key_pem = read("key file", key_file)?;
        let current = certified_key(crt_file, &crt_pem, key_file, &key_pem)?;
        Ok(ReloadingCert {
            crt_file: crt_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            state: Mutex::new(CertState {
                checked_at: Instant::now(),
                crt_pem,
                key_pem,
                current,
            }),
        })
    }

    /// The certificate to present now (re-reading the files if it is time to).
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.checked_at.elapsed() >= RELOAD_CHECK_INTERVAL {
            st.checked_at = Instant::now();
            self.reload(&mut st);
        }
        st.current.clone()
    }

    fn reload(&self, st: &mut CertState) {
        let (crt_pem, key_pem) = match (
            std::fs::read(&self.crt_file),
            std::fs::read(&self.key_file),
        ) {
            (Ok(c), Ok(k)) => (c, k),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(crt_file = %self.crt_file.display(), error = %e, "cannot re-read the server certificate; keeping the current one");
                return;
            }
        };
        if crt_pem == st.crt_pem && key_pem == st.key_pem {
            return;
        }
        match certified_key(&self.crt_file, &crt_pem, &self.key_file, &key_pem) {
            Ok(k) => {
                st.current = k;
                st.crt_pem = crt_pem;
                st.key_pem = key_pem;
                tracing::info!(crt_file = %self.crt_file.display(), "server certificate reloaded");
            }
            // Often the two files are caught between their updates; the next check retries.
            Err(e) => {
                tracing::warn!(error = %e, "the changed server certificate is not usable (yet); keeping the current one")
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn certified_key(
    crt_file: &Path,
    crt_pem: &[u8],
    key_file: &Path,
    key_pem: &[u8],
) -> Result<Arc<CertifiedKey>, TlsSetupError> {
    let pem_err = |what, path: &Path, message: String| TlsSetupError::Pem {
        what,
        path: path.to_path_buf(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(crt_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err("certificate file", crt_file, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_err(
            "certificate file",
            crt_file,
            "no certificate".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| pem_err("key file", key_file, e.to_string()))?;
    let provider = crate::crypto_provider();
    let ck =
        CertifiedKey::from_der(chain, key, &provider).map_err(|source| TlsSetupError::Key {
            crt: crt_file.to_path_buf(),
            key: key_file.to_path_buf(),
            source,
        })?;
    Ok(Arc::new(ck))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Replaces a file the way a Kubernetes Secret volume does: a new file renamed over it.
    fn replace(path: &Path, content: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_certificate_is_reloaded_when_its_files_change_and_kept_when_they_break() {
        let dir = tempfile::tempdir().unwrap();
        let (crt, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let (c1, k1) = self_signed("one.example");
        std::fs::write(&crt, &c1).unwrap();
        std::fs::write(&key, &k1).unwrap();
        let r = ReloadingCert::load(&crt, &key).unwrap();
        let first = r.current();
        let (c2, k2) = self_signed("two.example");
        replace(&crt, &c2);
        replace(&key, &k2);
        assert!(
            Arc::ptr_eq(&first, &r.current()),
            "not re-read before the interval"
        );
        tokio::time::advance(RELOAD_CHECK_INTERVAL).await;
        let second = r.current();
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(
            second.cert[0].as_ref(),
            CertificateDer::from_pem_slice(c2.as_bytes())
                .unwrap()
                .as_ref()
        );
        // Half a rotation: the new certificate with the old key. Kept until the key follows.
        let (c3, k3) = self_signed("three.example");
        replace(&crt, &c3);
        tokio::time::advance(RELOAD_CHECK_INTERVAL).await;
        assert!(Arc::ptr_eq(&second, &r.current()));
        replace(&key, &k3);
        tokio::time::advance(RELOAD_CHECK_INTERVAL).await;
        assert_eq!(
            r.current().cert[0].as_ref(),
            CertificateDer::from_pem_slice(c3.as_bytes())
                .unwrap()
                .as_ref()
        );
    }

    #[test]
    fn startup_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (crt, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let err = ReloadingCert::load(&crt, &key).unwrap_err().to_string();
        assert!(err.contains("tls.crt"), "{err}");
        let (c1, _) = self_signed("one.example");
        let (_, k2) = self_signed("two.example");
        std::fs::write(&crt, &c1).unwrap();
        std::fs::write(&key, &k2).unwrap();
        let err = ReloadingCert::load(&crt, &key).unwrap_err().to_string();
        assert!(err.contains("does not fit"), "{err}");
        std::fs::write(&key, "garbage").unwrap();
        assert!(ReloadingCert::load(&crt, &key).is_err());
        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, "no pem here").unwrap();
        let tls = ServerTls {
            crt_file: crt.clone(),
            key_file: key.clone(),
            client_ca_file: Some(ca),
        };
        std::fs::write(&key, self_signed("x").1).unwrap();
        assert!(server_config(&tls).is_err());
    }
}
