//! TLS client settings (CA file, CA directory, inline CA, client certificate, SNI name,
//! verification switch) and how they become a rustls `ClientConfig`. One TLS stack: rustls with
//! the ring provider.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::NetError;

/// How a client verifies servers and authenticates itself. Build a rustls configuration with
/// [`TlsClientSettings::build`].
///
/// CA sources add up: `ca_file`, every PEM file in `ca_path` and `ca_pem` are all trusted.
/// When none is given, `use_webpki_roots` decides whether the bundled Mozilla roots are used
/// (right for outputs to public services) or whether that is an error (right for the
/// Kubernetes API, whose CA is private).
#[derive(Clone)]
pub struct TlsClientSettings {
    /// Verify the server certificate chain and name. `false` accepts any certificate.
    pub verify: bool,
    /// A PEM bundle of CA certificates.
    pub ca_file: Option<PathBuf>,
    /// A directory of PEM CA certificates (every regular file in it is read).
    pub ca_path: Option<PathBuf>,
    /// Inline PEM CA data, e.g. a kubeconfig's `certificate-authority-data` (decoded).
    pub ca_pem: Option<Vec<u8>>,
    /// A PEM client certificate chain file.
    pub client_cert_file: Option<PathBuf>,
    /// A PEM private key file for the client certificate.
    pub client_key_file: Option<PathBuf>,
    /// Inline PEM client certificate chain.
    pub client_cert_pem: Option<Vec<u8>>,
    /// Inline PEM private key. Never logged.
    pub client_key_pem: Option<Vec<u8>>,
    /// The name sent as SNI and verified against the certificate, instead of the URL's host.
    pub vhost: Option<String>,
    /// Handshake diagnostics level 0-4 (0 = quiet). Keys are never logged.
    pub debug: u8,
    /// Trust the bundled webpki (Mozilla) roots when no CA is given.
    pub use_webpki_roots: bool,
}

impl Default for TlsClientSettings {
    fn default() -> Self {
        TlsClientSettings {
            verify: true,
            ca_file: None,
            ca_path: None,
            ca_pem: None,
            client_cert_file: None,
            client_key_file: None,
            client_cert_pem: None,
            client_key_pem: None,
            vhost: None,
            debug: 0,
            use_webpki_roots: false,
        }
    }
}

impl fmt::Debug for TlsClientSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClientSettings")
            .field("verify", &self.verify)
            .field("ca_file", &self.ca_file)
            .field("ca_path", &self.ca_path)
            .field(
                "ca_pem",
                &self.ca_pem.as_ref().map(|p| format!("<{} bytes>", p.len())),
            )
            .field("client_cert_file", &self.client_cert_file)
            .field("client_key_file", &self.client_key_file)
            .field(
                "client_cert_pem",
                &self
                    .client_cert_pem
                    .as_ref()
                    .map(|p| format!("<{} bytes>", p.len())),
            )
            .field(
                "client_key_pem",
                &self.client_key_pem.as_ref().map(|_| "<redacted>"),
            )
            .field("vhost", &self.vhost)
            .field("debug", &self.debug)
            .field("use_webpki_roots", &self.use_webpki_roots)
            .finish()
    }
}

impl TlsClientSettings {
    /// Settings from the shared `tls.*` options (`tls.verify`, `tls.debug`, `tls.vhost`,
    /// `tls.ca_file`, `tls.ca_path`, `tls.crt_file`, `tls.key_file`).
    pub fn from_options(options: &kubetrail_core::config::TlsOptions) -> Self {
        TlsClientSettings {
            verify: options.verify,
            ca_file: options.ca_file.clone(),
            ca_path: options.ca_path.clone(),
            client_cert_file: options.crt_file.clone(),
            client_key_file: options.key_file.clone(),
            vhost: options.vhost.clone(),
            debug: options.debug,
            ..TlsClientSettings::default()
        }
    }

    /// Says which trust anchors these settings use, for error messages:
    /// `CA file: /path`, `CA directory: /dir`, `inline CA data`, `webpki roots`, or
    /// `verification disabled`.
    pub fn ca_description(&self) -> String {
        if !self.verify {
            return "verification disabled".to_string();
        }
        let mut parts = Vec::new();
        if let Some(f) = &self.ca_file {
            parts.push(format!("CA file: {}", f.display()));
        }
        if let Some(d) = &self.ca_path {
            parts.push(format!("CA directory: {}", d.display()));
        }
        if self.ca_pem.is_some() {
            parts.push("inline CA data".to_string());
        }
        if parts.is_empty() {
            if self.use_webpki_roots {
                parts.push("webpki roots".to_string());
            } else {
                parts.push("no CA configured".to_string());
            }
        }
        parts.join(", ")
    }

    /// Builds the rustls client configuration: ring provider, safe default protocol versions,
    /// ALPN `http/1.1`. Errors name the file that could not be read or parsed.
    pub fn build(&self) -> Result<Arc<ClientConfig>, NetError> {
        self.build_inner(false)
    }

    /// Like [`TlsClientSettings::build`], for a client that opens its connections with the
    /// URL's host as the server name and cannot be given another (the NATS client): the
    /// server certificate is verified against `vhost` when it is set, whatever name the
    /// connection was opened with (SNI stays the URL's host).
    pub fn build_verifying_vhost(&self) -> Result<Arc<ClientConfig>, NetError> {
        self.build_inner(true)
    }

    fn build_inner(&self, pin_vhost: bool) -> Result<Arc<ClientConfig>, NetError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|source| NetError::TlsConfig {
                source: Box::new(source),
            })?;

        let builder = if self.verify && pin_vhost && self.vhost.is_some() {
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(self.root_store()?),
                provider.clone(),
            )
            .build()
            .map_err(|e| NetError::TlsConfig {
                source: Box::new(rustls::Error::General(e.to_string())),
            })?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(VerifyAsName {
                    inner,
                    name: self.server_name("")?,
                }))
        } else if self.verify {
            builder.with_root_certificates(self.root_store()?)
        } else {
            tracing::warn!(
                "TLS verification is disabled (tls.verify off): any server certificate is accepted"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert {
                    algorithms: provider.signature_verification_algorithms,
                }))
        };

        let mut config = match self.client_identity()? {
            Some((chain, key, cert_origin, key_origin)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|source| NetError::ClientCert {
                    cert: cert_origin,
                    key: key_origin,
                    source: Box::new(source),
                })?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The server name to send as SNI and verify, given the URL's host (without brackets).
    pub fn server_name(&self, url_host: &str) -> Result<ServerName<'static>, NetError> {
        let name = self.vhost.as_deref().unwrap_or(url_host);
        ServerName::try_from(name.to_string()).map_err(|_| NetError::InvalidVhost {
            name: name.to_string(),
        })
    }

    fn root_store(&self) -> Result<RootCertStore, NetError> {
        let mut roots = RootCertStore::empty();
        let mut any_source = false;
        if let Some(path) = &self.ca_file {
            any_source = true;
            let data = read_file("CA file", path)?;
            let added = add_pem_certs(&mut roots, &data, "CA file", &path.display().to_string())?;
            if added == 0 {
                return Err(NetError::NoCertificates {
                    what: "CA file",
                    origin: path.display().to_string(),
                });
            }
        }
        if let Some(dir) = &self.ca_path {
            any_source = true;
            load_ca_dir(&mut roots, dir)?;
        }
        if let Some(pem) = &self.ca_pem {
            any_source = true;
            let added = add_pem_certs(&mut roots, pem, "CA data", "(inline)")?;
            if added == 0 {
                return Err(NetError::NoCertificates {
                    what: "CA data",
                    origin: "(inline)".to_string(),
                });
            }
        }
        if !any_source {
            if self.use_webpki_roots {
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            } else {
                return Err(NetError::NoTrustAnchors);
            }
        }
        Ok(roots)
    }

    #[allow(clippy::type_complexity)]
    fn client_identity(
        &self,
    ) -> Result<
        Option<(
            Vec<CertificateDer<'static>>,
            PrivateKeyDer<'static>,
            String,
            String,
        )>,
        NetError,
    > {
        let cert = match (&self.client_cert_pem, &self.client_cert_file) {
            (Some(pem), _) => Some((pem.clone(), "(inline client certificate)".to_string())),
            (None, Some(path)) => Some((
                read_file("client certificate file", path)?,
                path.display().to_string(),
            )),
            (None, None) => None,
        };
        let key = match (&self.client_key_pem, &self.client_key_file) {
            (Some(pem), _) => Some((pem.clone(), "(inline client key)".to_string())),
            (None, Some(path)) => Some((
                read_file("client key file", path)?,
                path.display().to_string(),
            )),
            (None, None) => None,
        };
        let ((cert_pem, cert_origin), (key_pem, key_origin)) = match (cert, key) {
            (None, None) => return Ok(None),
            (Some(_), None) => {
                return Err(NetError::IncompleteClientCert {
                    present: "certificate",
                });
            }
            (None, Some(_)) => return Err(NetError::IncompleteClientCert { present: "key" }),
            (Some(c), Some(k)) => (c, k),
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| NetError::ParsePem {
                what: "client certificate",
                origin: cert_origin.clone(),
                reason: e.to_string(),
            })?;
        if chain.is_empty() {
            return Err(NetError::ParsePem {
                what: "client certificate",
                origin: cert_origin,
                reason: "no CERTIFICATE block found".to_string(),
            });
        }
        // The key's parse error text never contains key material (it names PEM structure only).
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| NetError::ParsePem {
            what: "client key",
            origin: key_origin.clone(),
            reason: e.to_string(),
        })?;
        Ok(Some((chain, key, cert_origin, key_origin)))
    }
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, NetError> {
    std::fs::read(path).map_err(|source| NetError::ReadFile {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Adds every certificate of a PEM bundle; returns how many were accepted.
fn add_pem_certs(
    roots: &mut RootCertStore,
    pem: &[u8],
    what: &'static str,
    origin: &str,
) -> Result<usize, NetError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| NetError::ParsePem {
            what,
            origin: origin.to_string(),
            reason: e.to_string(),
        })?;
    let (added, ignored) = roots.add_parsable_certificates(certs);
    if ignored > 0 {
        tracing::warn!(
            what,
            origin,
            ignored,
            "some CA certificates could not be parsed and were ignored"
        );
    }
    Ok(added)
}

/// Loads every regular file of a CA directory (OpenSSL `-CApath` style: hashed links and the
/// files they point to; duplicates are harmless). Files without certificates are skipped, so a
/// system directory with other files in it still works; a directory with none at all is an error.
fn load_ca_dir(roots: &mut RootCertStore, dir: &Path) -> Result<(), NetError> {
    let entries = std::fs::read_dir(dir).map_err(|source| NetError::ReadFile {
        what: "CA directory",
        path: dir.to_path_buf(),
        source,
    })?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| NetError::ReadFile {
            what: "CA directory",
            path: dir.to_path_buf(),
            source,
        })?;
        paths.push(entry.path());
    }
    paths.sort();
    let mut total = 0;
    for path in paths {
        // metadata() follows symlinks, so hashed links to certificate files count as files.
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => {}
            _ => continue,
        }
        let data = read_file("CA file", &path)?;
        match add_pem_certs(roots, &data, "CA file", &path.display().to_string()) {
            Ok(n) => total += n,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "skipping a file of the CA directory");
            }
        }
    }
    if total == 0 {
        return Err(NetError::NoCertificates {
            what: "CA directory",
            origin: dir.display().to_string(),
        });
    }
    Ok(())
}

/// A verifier that checks the server certificate against one fixed name (`tls.vhost`)
/// instead of the name the connection was opened with; everything else is the webpki
/// verifier's.
#[derive(Debug)]
struct VerifyAsName {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for VerifyAsName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The verifier behind `tls.verify off`: accepts any certificate and name, but still checks
/// that the server holds the key of the certificate it presented (handshake signatures).
#[derive(Debug)]
struct AcceptAnyServerCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The ring provider, for callers (tests, servers) that need the same one.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
