//! Who may post audit events: a verified client certificate (checked during the TLS
//! handshake, see `kubetrail_net::server_tls`) and/or a bearer token from `token_file`
//! (`kubetrail_net::tokens`: re-read when it changes, compared in constant time, never logged).

use kubetrail_net::tokens::{TokenFile, bearer_token};

/// The authentication policy of one webhook.
#[derive(Debug)]
pub struct Authenticator {
    /// `auth: none`: everyone is accepted.
    pub open: bool,
    /// A client certificate verified against `tls.client_ca_file` is enough.
    pub client_certs: bool,
    pub tokens: Option<TokenFile>,
}

impl Authenticator {
    /// Whether a request may be served: `cert_verified` says the TLS peer presented a
    /// certificate that the handshake verified; `authorization` is the header's value.
    pub fn allows(&self, cert_verified: bool, authorization: Option<&[u8]>) -> bool {
        if self.open || (self.client_certs && cert_verified) {
            return true;
        }
        match (&self.tokens, authorization.and_then(bearer_token)) {
            (Some(tokens), Some(t)) => tokens.accepts(t),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "s3cret\n").unwrap();
        let a = Authenticator {
            open: false,
            client_certs: true,
            tokens: Some(TokenFile::load(&path).unwrap()),
        };
        assert!(a.allows(true, None));
        assert!(a.allows(false, Some(b"Bearer s3cret")));
        assert!(!a.allows(false, Some(b"Bearer s3cre")));
        assert!(!a.allows(false, None));
        let certs_only = Authenticator {
            open: false,
            client_certs: true,
            tokens: None,
        };
        assert!(!certs_only.allows(false, Some(b"Bearer s3cret")));
        let open = Authenticator {
            open: true,
            client_certs: false,
            tokens: None,
        };
        assert!(open.allows(false, None));
        assert!(TokenFile::load(&dir.path().join("missing")).is_err());
    }
}
