//! Bearer tokens a server accepts, from a file (one per line) that is re-read when its
//! content changes (checked at most every [`RELOAD_CHECK_INTERVAL`]), so a rotated Secret
//! takes effect without a restart. Tokens are compared in constant time and never logged.
//! Used by the audit webhook and the activity page.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How often, at most, files that may rotate (token file, server certificate) are re-read.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Why a token file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read token file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The accepted bearer tokens, re-read from their file when it changes.
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    state: Mutex<TokenState>,
}

#[derive(Debug)]
struct TokenState {
    checked_at: Instant,
    content: Vec<u8>,
    tokens: Vec<Vec<u8>>,
}

impl TokenFile {
    /// Loads the file; an unreadable file is an error at startup (later, the last good set
    /// stays in force and a warning is logged).
    pub fn load(path: &Path) -> Result<TokenFile, TokenFileError> {
        let content = std::fs::read(path).map_err(|source| TokenFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let tokens = parse_tokens(&content);
        if tokens.is_empty() {
            tracing::warn!(path = %path.display(), "the token file holds no token: every request will be refused");
        }
        Ok(TokenFile {
            path: path.to_path_buf(),
            state: Mutex::new(TokenState {
                checked_at: Instant::now(),
                content,
                tokens,
            }),
        })
    }

    /// Whether `presented` is one of the tokens.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        self.with_tokens(|tokens| {
            // Every token is compared, with no early exit, so timing says nothing about which
            // (or how much of one) matched.
            let mut ok = false;
            for t in tokens {
                ok |= ct_eq(t, presented);
            }
            ok
        })
    }

    /// Runs `f` over the tokens in force (re-reading the file first if it is time to), for
    /// checks that derive something from each token (the activity page's session cookies).
    pub fn with_tokens<R>(&self, f: impl FnOnce(&[Vec<u8>]) -> R) -> R {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.checked_at.elapsed() >= RELOAD_CHECK_INTERVAL {
            st.checked_at = Instant::now();
            match std::fs::read(&self.path) {
                Ok(content) if content != st.content => {
                    st.tokens = parse_tokens(&content);
                    st.content = content;
                    tracing::info!(path = %self.path.display(), tokens = st.tokens.len(), "token file reloaded");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot re-read the token file; keeping the tokens loaded before");
                }
            }
        }
        f(&st.tokens)
    }
}

/// One token per line; surrounding whitespace trimmed; empty lines and `#` comments skipped.
fn parse_tokens(content: &[u8]) -> Vec<Vec<u8>> {
    content
        .split(|b| *b == b'\n')
        .map(|l| l.trim_ascii())
        .filter(|l| !l.is_empty() && !l.starts_with(b"#"))
        .map(<[u8]>::to_vec)
        .collect()
}

/// Compares in time that depends only on the lengths, not on where the bytes differ.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    // Lengths that differ make the result false, without returning early.
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= std::hint::black_box(x ^ y);
    }
    diff == 0
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer_token(header: &[u8]) -> Option<&[u8]> {
    let header = header.trim_ascii();
    let (scheme, rest) = header.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || !rest.first().is_some_and(u8::is_ascii_whitespace)
    {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_equality() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(ct_eq(b"", b""));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
        assert!(!ct_eq(b"abc\0", b"abc"));
        assert!(!ct_eq(b"", b"a"));
    }

    #[test]
    fn bearer_header_forms() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bearer   abc  "), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bearerabc"), None);
        assert_eq!(bearer_token(b"Bearer "), None);
        assert_eq!(bearer_token(b"Bear"), None);
    }

    #[test]
    fn token_lines() {
        let t = parse_tokens(b"# comment\n  one \n\r\ntwo\r\n\n");
        assert_eq!(t, vec![b"one".to_vec(), b"two".to_vec()]);
    }

    #[tokio::test(start_paused = true)]
    async fn token_file_is_reloaded_when_it_changes_but_not_more_often_than_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "old\n").unwrap();
        let f = TokenFile::load(&path).unwrap();
        assert!(f.accepts(b"old"));
        std::fs::write(&path, "new\n").unwrap();
        assert!(f.accepts(b"old"), "not re-read before the interval");
        assert!(!f.accepts(b"new"));
        tokio::time::advance(RELOAD_CHECK_INTERVAL).await;
        assert!(f.accepts(b"new"));
        assert!(!f.accepts(b"old"));
        std::fs::remove_file(&path).unwrap();
        tokio::time::advance(RELOAD_CHECK_INTERVAL).await;
        assert!(
            f.accepts(b"new"),
            "a vanished file keeps the last good tokens"
        );
    }
}
