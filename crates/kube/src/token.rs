//! The bearer token: read from a file (service account token, rotated by the kubelet), kept for
//! `kube_token_ttl`, re-read after that and at once after a 401. Never logged.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// A bearer token. Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Arc<str>);

impl Token {
    /// Wraps a token value (already trimmed).
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Token(value.into())
    }

    /// The secret value, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(<redacted, {} bytes>)", self.0.len())
    }
}

/// Why a token could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token file could not be read.
    #[error("cannot read the token file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The token file holds only whitespace.
    #[error("the token file {path} is empty")]
    Empty { path: PathBuf },
    /// The token holds characters that cannot go into an HTTP header.
    #[error("the token {origin} holds characters that cannot be sent in an HTTP header")]
    Invalid { origin: String },
}

enum Mode {
    None,
    Static(Token),
    File { path: PathBuf, ttl: Duration },
}

#[derive(Default)]
struct Cache {
    token: Option<Token>,
    read_at: Option<Instant>,
}

/// Where the bearer token comes from. Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct TokenSource {
    mode: Arc<Mode>,
    cache: Arc<Mutex<Cache>>,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.mode {
            Mode::None => write!(f, "TokenSource::None"),
            Mode::Static(_) => write!(f, "TokenSource::Static(<redacted>)"),
            Mode::File { path, ttl } => f
                .debug_struct("TokenSource::File")
                .field("path", path)
                .field("ttl", ttl)
                .finish(),
        }
    }
}

impl TokenSource {
    /// No bearer token (client certificate only, or `kubectl proxy`).
    pub fn none() -> Self {
        Self::with_mode(Mode::None)
    }

    /// A fixed token (e.g. a kubeconfig `token`). Surrounding whitespace is trimmed.
    pub fn fixed(token: &str) -> Result<Self, TokenError> {
        let t = token.trim();
        check_header_safe(t, "from the kubeconfig")?;
        Ok(Self::with_mode(Mode::Static(Token::new(t))))
    }

    /// A token file, re-read after `ttl` and after [`TokenSource::invalidate`].
    pub fn file(path: impl Into<PathBuf>, ttl: Duration) -> Self {
        Self::with_mode(Mode::File {
            path: path.into(),
            ttl,
        })
    }

    fn with_mode(mode: Mode) -> Self {
        TokenSource {
            mode: Arc::new(mode),
            cache: Arc::new(Mutex::new(Cache::default())),
        }
    }

    /// Whether re-reading can give a different token (only file tokens can).
    pub fn can_refresh(&self) -> bool {
        matches!(*self.mode, Mode::File { .. })
    }

    /// The token file, if the token comes from one.
    pub fn path(&self) -> Option<&Path> {
        match &*self.mode {
            Mode::File { path, .. } => Some(path),
            _ => None,
        }
    }

    /// The current token: cached while younger than the TTL, else read again.
    pub fn token(&self) -> Result<Option<Token>, TokenError> {
        let (path, ttl) = match &*self.mode {
            Mode::None => return Ok(None),
            Mode::Static(t) => return Ok(Some(t.clone())),
            Mode::File { path, ttl } => (path, *ttl),
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(t), Some(at)) = (&cache.token, cache.read_at)
            && at.elapsed() < ttl
        {
            return Ok(Some(t.clone()));
        }
        // A token file is a few hundred bytes on a tmpfs: a blocking read is cheaper than a
        // thread hop, and it keeps paused-time tests deterministic.
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.clone(),
            source,
        })?;
        let value = text.trim();
        if value.is_empty() {
            return Err(TokenError::Empty { path: path.clone() });
        }
        check_header_safe(value, &format!("in {}", path.display()))?;
        let token = Token::new(value);
        if cache.token.as_ref().is_some_and(|old| *old != token) {
            tracing::info!(path = %path.display(), "the bearer token file changed; using the new token");
        }
        cache.token = Some(token.clone());
        cache.read_at = Some(Instant::now());
        Ok(Some(token))
    }

    /// Forget the cached token so that the next [`TokenSource::token`] reads the file again
    /// (after a 401: the kubelet may have rotated it).
    pub fn invalidate(&self) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.read_at = None;
    }
}

fn check_header_safe(value: &str, origin: &str) -> Result<(), TokenError> {
    if value.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        Ok(())
    } else {
        Err(TokenError::Invalid {
            origin: origin.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn cached_for_the_ttl_then_reread_and_at_once_after_invalidate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first-token\n").unwrap();
        let src = TokenSource::file(&path, Duration::from_secs(600));
        assert_eq!(src.token().unwrap().unwrap().expose(), "first-token");

        std::fs::write(&path, "  second-token \n").unwrap();
        tokio::time::advance(Duration::from_secs(599)).await;
        assert_eq!(src.token().unwrap().unwrap().expose(), "first-token");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(src.token().unwrap().unwrap().expose(), "second-token");

        std::fs::write(&path, "third-token").unwrap();
        assert_eq!(
            src.clone().token().unwrap().unwrap().expose(),
            "second-token"
        );
        src.clone().invalidate();
        assert_eq!(src.token().unwrap().unwrap().expose(), "third-token");
    }

    #[test]
    fn errors_name_the_file_and_never_show_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing");
        let err = TokenSource::file(&path, Duration::from_secs(1))
            .token()
            .unwrap_err();
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );

        let empty = dir.path().join("empty");
        std::fs::write(&empty, " \n").unwrap();
        let err = TokenSource::file(&empty, Duration::from_secs(1))
            .token()
            .unwrap_err();
        assert!(matches!(err, TokenError::Empty { .. }));

        let bad = dir.path().join("bad");
        std::fs::write(&bad, "abc\ndef-SECRET").unwrap();
        let err = TokenSource::file(&bad, Duration::from_secs(1))
            .token()
            .unwrap_err();
        assert!(!err.to_string().contains("SECRET"), "{err}");

        let fixed = TokenSource::fixed(" s3cr3t-value ").unwrap();
        let t = fixed.token().unwrap().unwrap();
        assert_eq!(t.expose(), "s3cr3t-value");
        assert!(!format!("{t:?} {fixed:?}").contains("s3cr3t"));
        assert!(!fixed.can_refresh());
        assert!(TokenSource::none().token().unwrap().is_none());
    }
}
