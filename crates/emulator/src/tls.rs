//! Certificates made at start (a CA, the server certificate, client certificates on demand)
//! and the rustls server configuration that accepts, but does not require, client
//! certificates signed by the CA.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// What can fail while building certificates or the TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rcgen could not generate a key or certificate.
    #[error("cannot generate a certificate")]
    Generate(#[from] rcgen::Error),
    /// rustls rejected the configuration.
    #[error("cannot build the rustls configuration")]
    Config(#[from] rustls::Error),
    /// The client certificate verifier could not be built.
    #[error("cannot build the client certificate verifier")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The CA, the server configuration, and the client certificates issued so far.
pub(crate) struct TlsMaterial {
    ca_cert: rcgen::Certificate,
    ca_key: KeyPair,
    ca_pem: String,
    pub server_config: Arc<rustls::ServerConfig>,
    /// DER of each issued client certificate → user name (the certificate's CN).
    issued: Mutex<HashMap<Vec<u8>, String>>,
}

fn ca(common_name: &str) -> Result<(rcgen::Certificate, KeyPair), TlsError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key)?;
    Ok((cert, key))
}

/// A CA unrelated to any running emulator, as PEM.
pub(crate) fn unrelated_ca_pem() -> String {
    // Key generation with ring does not fail in practice; an empty PEM would make the
    // caller's TLS setup fail loudly rather than silently trust something.
    ca("unrelated-ca").map(|(c, _)| c.pem()).unwrap_or_default()
}

impl TlsMaterial {
    pub fn generate(hostnames: &[String]) -> Result<TlsMaterial, TlsError> {
        let (ca_cert, ca_key) = ca("kubetrail-emulator-ca")?;
        let server_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(hostnames.to_vec())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "kube-apiserver");
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let server_cert = params.signed_by(&server_key, &ca_cert, &ca_key)?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(ca_cert.der().clone())?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
        let chain: Vec<CertificateDer<'static>> = vec![server_cert.der().clone()];
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key_der)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsMaterial {
            ca_pem: ca_cert.pem(),
            ca_cert,
            ca_key,
            server_config: Arc::new(config),
            issued: Mutex::new(HashMap::new()),
        })
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A client certificate (CN = user, EKU clientAuth) signed by the CA: `(cert, key)` PEM.
    pub fn issue_client_cert(&self, user: &str) -> (String, String) {
        let issue = || -> Result<(String, String, Vec<u8>), TlsError> {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, user);
            params.distinguished_name = dn;
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            let cert = params.signed_by(&key, &self.ca_cert, &self.ca_key)?;
            Ok((cert.pem(), key.serialize_pem(), cert.der().to_vec()))
        };
        match issue() {
            Ok((cert, key, der)) => {
                self.issued
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(der, user.to_string());
                (cert, key)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot issue a client certificate");
                (String::new(), String::new())
            }
        }
    }

    /// The user a verified client certificate stands for. Only certificates this CA issued
    /// can pass the handshake, and each was recorded with its CN when issued.
    pub fn user_for_cert(&self, der: &[u8]) -> Option<String> {
        self.issued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(der)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_and_issues() {
        let m = TlsMaterial::generate(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        assert!(m.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let (cert, key) = m.issue_client_cert("alice");
        assert!(cert.contains("BEGIN CERTIFICATE"));
        assert!(key.contains("PRIVATE KEY"));
        assert_eq!(m.issued.lock().unwrap().len(), 1);
        assert_ne!(unrelated_ca_pem(), m.ca_pem());
    }
}
