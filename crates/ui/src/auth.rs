//! Who may read the page. A request is served when one of these holds:
//!
//! - the TLS handshake verified a client certificate (`ui.tls.client_ca_file`);
//! - it carries `Authorization: Bearer <token>` with a token of `ui.token_file` (programs:
//!   `curl -H "Authorization: Bearer $T" https://…/timeline.json`);
//! - it carries the session cookie the sign-in form sets (people in a browser, who cannot
//!   attach a header to a link they click).
//!
//! The session cookie holds no token: it is `EXPIRY.TAG`, where `TAG` is
//! HMAC-SHA256(key = a token of the file, message = the expiry). The server keeps no session
//! state, so a cookie stays valid across restarts and on every replica that reads the same
//! token file, and removing a token from the file ends every session signed in with it. It is
//! `HttpOnly` (scripts cannot read it), `SameSite=Strict` (other sites cannot make the browser
//! send it: the page is read-only, and this also stops cross-site requests from reading it),
//! and over TLS `Secure` with the `__Host-` prefix (never sent in clear, never set for another
//! host).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE};
use kubetrail_net::tokens::{TokenFile, bearer_token};
use ring::hmac;

/// The session cookie's name over plain HTTP.
const COOKIE_PLAIN: &str = "kubetrail_session";
/// Over TLS: the `__Host-` prefix makes browsers refuse it unless Secure, Path=/, no Domain.
const COOKIE_TLS: &str = "__Host-kubetrail_session";
/// What the session tag signs besides the expiry, so the tag means nothing elsewhere.
const TAG_CONTEXT: &[u8] = b"kubetrail activity page session v1\n";

/// How a request was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// `ui.auth: none`.
    Anyone,
    /// A client certificate the handshake verified.
    ClientCertificate,
    /// An `Authorization: Bearer` token.
    Bearer,
    /// A session cookie from the sign-in form.
    Session,
}

/// The page's authentication policy.
#[derive(Debug)]
pub struct Auth {
    open: bool,
    client_certs: bool,
    tokens: Option<TokenFile>,
    session_ttl: Duration,
    tls: bool,
}

impl Auth {
    /// A policy: `open` for `ui.auth: none`; `client_certs` when a client CA is configured;
    /// `tls` when the page is served over HTTPS (the cookie is then `Secure`).
    pub fn new(
        open: bool,
        client_certs: bool,
        tokens: Option<TokenFile>,
        session_ttl: Duration,
        tls: bool,
    ) -> Auth {
        Auth {
            open,
            client_certs,
            tokens,
            session_ttl,
            tls,
        }
    }

    /// Whether people can sign in with a token (the form is shown).
    pub fn has_tokens(&self) -> bool {
        self.tokens.is_some()
    }

    /// Whether a sign-out makes sense (a session is what authenticates people).
    pub fn uses_sessions(&self) -> bool {
        !self.open && self.tokens.is_some()
    }

    /// Who the request is, if anyone the page serves.
    pub fn identify(&self, cert_verified: bool, headers: &HeaderMap) -> Option<Identity> {
        if self.open {
            return Some(Identity::Anyone);
        }
        if self.client_certs && cert_verified {
            return Some(Identity::ClientCertificate);
        }
        let tokens = self.tokens.as_ref()?;
        if let Some(t) = headers
            .get(AUTHORIZATION)
            .and_then(|v| bearer_token(v.as_bytes()))
        {
            return tokens.accepts(t).then_some(Identity::Bearer);
        }
        let cookie = session_cookie(headers, self.cookie_name())?;
        self.session_valid(tokens, cookie, now_secs())
            .then_some(Identity::Session)
    }

    /// Checks a token typed into the sign-in form; on success, the `Set-Cookie` value of a
    /// new session.
    pub fn sign_in(&self, token: &str) -> Option<String> {
        let tokens = self.tokens.as_ref()?;
        let token = token.trim().as_bytes();
        if token.is_empty() || !tokens.accepts(token) {
            return None;
        }
        let expiry = now_secs().saturating_add(self.session_ttl.as_secs());
        let value = format!("{expiry}.{}", hex(&tag(token, expiry)));
        Some(self.cookie(&value, self.session_ttl.as_secs()))
    }

    /// The `Set-Cookie` value that ends a session.
    pub fn sign_out(&self) -> String {
        self.cookie("", 0)
    }

    fn cookie_name(&self) -> &'static str {
        if self.tls { COOKIE_TLS } else { COOKIE_PLAIN }
    }

    fn cookie(&self, value: &str, max_age: u64) -> String {
        let secure = if self.tls { "; Secure" } else { "" };
        format!(
            "{}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}",
            self.cookie_name()
        )
    }

    fn session_valid(&self, tokens: &TokenFile, value: &str, now: u64) -> bool {
        let Some((expiry, tag_hex)) = value.split_once('.') else {
            return false;
        };
        let (Ok(expiry), Some(presented)) = (expiry.parse::<u64>(), unhex(tag_hex)) else {
            return false;
        };
        // Expired, or further ahead than a session can last (not made by this policy).
        if expiry <= now || expiry > now.saturating_add(self.session_ttl.as_secs()) {
            return false;
        }
        tokens.with_tokens(|ts| {
            // Every token is tried, with no early exit.
            let mut ok = false;
            for t in ts {
                let key = hmac::Key::new(hmac::HMAC_SHA256, t);
                ok |= hmac::verify(&key, &message(expiry), &presented).is_ok();
            }
            ok
        })
    }
}

fn message(expiry: u64) -> Vec<u8> {
    let mut m = TAG_CONTEXT.to_vec();
    m.extend_from_slice(expiry.to_string().as_bytes());
    m
}

fn tag(token: &[u8], expiry: u64) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, token);
    hmac::sign(&key, &message(expiry)).as_ref().to_vec()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The value of the cookie `name` among the request's `Cookie` headers.
fn session_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 128 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn policy(dir: &std::path::Path, tls: bool) -> Auth {
        let path = dir.join("tokens");
        std::fs::write(&path, "first-token\nsecond-token\n").unwrap();
        Auth::new(
            false,
            true,
            Some(TokenFile::load(&path).unwrap()),
            Duration::from_secs(3600),
            tls,
        )
    }

    fn with_cookie(set_cookie: &str) -> HeaderMap {
        let pair = set_cookie.split(';').next().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_str(&format!("other=1; {pair}; x=y")).unwrap(),
        );
        h
    }

    #[test]
    fn bearer_tokens_certificates_and_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let a = policy(dir.path(), false);
        let mut h = HeaderMap::new();
        assert_eq!(a.identify(false, &h), None);
        assert_eq!(
            a.identify(true, &h),
            Some(Identity::ClientCertificate),
            "a verified certificate is enough"
        );
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Bearer second-token"),
        );
        assert_eq!(a.identify(false, &h), Some(Identity::Bearer));
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Bearer second-toke"),
        );
        assert_eq!(a.identify(false, &h), None);
        let open = Auth::new(true, false, None, Duration::from_secs(60), false);
        assert_eq!(
            open.identify(false, &HeaderMap::new()),
            Some(Identity::Anyone)
        );
    }

    #[test]
    fn sessions_sign_in_and_hold_no_token() {
        let dir = tempfile::tempdir().unwrap();
        let a = policy(dir.path(), true);
        assert_eq!(a.sign_in("wrong"), None);
        assert_eq!(a.sign_in(""), None);
        let set = a.sign_in(" first-token\n").unwrap();
        assert!(set.starts_with("__Host-kubetrail_session="), "{set}");
        for attr in [
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
            "Path=/",
            "Max-Age=3600",
        ] {
            assert!(set.contains(attr), "{set} lacks {attr}");
        }
        assert!(
            !set.contains("first-token"),
            "the cookie must not hold the token"
        );
        assert_eq!(
            a.identify(false, &with_cookie(&set)),
            Some(Identity::Session)
        );
        // Plain HTTP: another name (browsers refuse __Host- without Secure), no Secure.
        let plain = policy(dir.path(), false);
        let set_plain = plain.sign_in("first-token").unwrap();
        assert!(set_plain.starts_with("kubetrail_session=") && !set_plain.contains("Secure"));
        assert_eq!(
            plain.identify(false, &with_cookie(&set_plain)),
            Some(Identity::Session)
        );
        let out = a.sign_out();
        assert!(out.contains("Max-Age=0"), "{out}");
        assert_eq!(a.identify(false, &with_cookie(&out)), None);
    }

    #[test]
    fn forged_expired_and_revoked_sessions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = policy(dir.path(), false);
        let tokens = a.tokens.as_ref().unwrap();
        let now = now_secs();
        let good = format!("{}.{}", now + 60, hex(&tag(b"first-token", now + 60)));
        assert!(a.session_valid(tokens, &good, now));
        // The expiry is signed: moving it breaks the tag.
        let moved = format!("{}.{}", now + 120, hex(&tag(b"first-token", now + 60)));
        assert!(!a.session_valid(tokens, &moved, now));
        assert!(!a.session_valid(tokens, &good, now + 60), "expired");
        let far = format!(
            "{}.{}",
            now + 99_999,
            hex(&tag(b"first-token", now + 99_999))
        );
        assert!(
            !a.session_valid(tokens, &far, now),
            "longer than a session lasts"
        );
        let other = format!("{}.{}", now + 60, hex(&tag(b"not-a-token", now + 60)));
        assert!(!a.session_valid(tokens, &other, now));
        for junk in ["", ".", "x.y", "12", "12.zz", "12.abc"] {
            assert!(!a.session_valid(tokens, junk, now), "{junk}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn removing_a_token_ends_its_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let a = policy(dir.path(), false);
        let set = a.sign_in("first-token").unwrap();
        std::fs::write(dir.path().join("tokens"), "second-token\n").unwrap();
        tokio::time::advance(kubetrail_net::tokens::RELOAD_CHECK_INTERVAL).await;
        assert_eq!(a.identify(false, &with_cookie(&set)), None);
        assert!(a.sign_in("second-token").is_some());
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(
            unhex(&hex(&[0, 1, 0xab, 0xff])).unwrap(),
            vec![0, 1, 0xab, 0xff]
        );
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("abc"), None);
    }
}
