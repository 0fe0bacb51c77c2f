//! How the `nats` output proves who it is: a user and password, a token, an NKey seed
//! (`nkey_seed`, `nkey_seed_file`: the server knows the public key and checks the signature
//! of its nonce), or a credentials file (`credentials_file`: a user JWT and its NKey seed, as
//! `nsc` writes them, for servers in operator mode). At most one method; credentials written
//! in `url` (`user:password@`, `token@`) are used when none is configured.
//!
//! Files are read at each connection, so a rotated Secret is picked up by the next one.
//! Their contents are never logged, nor are they echoed in error messages.

use std::path::{Path, PathBuf};

use async_nats::ConnectOptions;

use super::NatsError;
use super::endpoint::Endpoint;

/// One of the ways to authenticate, as configured.
#[derive(Clone, PartialEq)]
pub enum AuthMethod {
    /// Nothing configured: the URL's credentials, if any.
    FromUrl,
    UserPassword {
        user: String,
        password: Option<Secret>,
    },
    Token(Secret),
    NkeySeed(Secret),
    CredentialsFile(PathBuf),
}

/// A secret written in the configuration or read from a file.
#[derive(Clone, PartialEq)]
pub enum Secret {
    Inline(String),
    File(PathBuf),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Inline(_) => f.write_str("(inline)"),
            Secret::File(p) => write!(f, "file {}", p.display()),
        }
    }
}

impl std::fmt::Debug for AuthMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthMethod::FromUrl => f.write_str("FromUrl"),
            AuthMethod::UserPassword { user, password } => {
                write!(f, "UserPassword({user}, {password:?})")
            }
            AuthMethod::Token(s) => write!(f, "Token({s:?})"),
            AuthMethod::NkeySeed(s) => write!(f, "NkeySeed({s:?})"),
            AuthMethod::CredentialsFile(p) => write!(f, "CredentialsFile({})", p.display()),
        }
    }
}

fn read_secret(what: &'static str, path: &Path) -> Result<String, NatsError> {
    std::fs::read_to_string(path)
        .map(|t| t.trim_end_matches(['\r', '\n']).to_string())
        .map_err(|source| NatsError::SecretFile {
            what,
            path: path.to_path_buf(),
            source,
        })
}

impl Secret {
    fn value(&self, what: &'static str) -> Result<String, NatsError> {
        match self {
            Secret::Inline(v) => Ok(v.clone()),
            Secret::File(p) => read_secret(what, p),
        }
    }
}

/// An NKey seed, checked: a seed that does not decode is refused here with the file it came
/// from, rather than as an authentication failure from the server.
fn seed(secret: &Secret) -> Result<String, NatsError> {
    let seed = secret.value("nkey_seed_file")?.trim().to_string();
    let origin = match secret {
        Secret::Inline(_) => "nkey_seed".to_string(),
        Secret::File(p) => format!("nkey_seed_file {}", p.display()),
    };
    match nkeys::KeyPair::from_seed(&seed) {
        // The error says what is wrong (prefix, checksum, length), never the seed itself.
        Err(e) => Err(NatsError::Credentials {
            origin,
            message: format!("not an NKey seed: {e}"),
        }),
        Ok(kp) if kp.key_pair_type() != nkeys::KeyPairType::User => Err(NatsError::Credentials {
            origin,
            message: format!(
                "the seed is an {:?} key, not a user key (its seed starts with SU)",
                kp.key_pair_type()
            ),
        }),
        Ok(_) => Ok(seed),
    }
}

/// A credentials file's text, checked to hold a user JWT and a seed.
fn credentials(path: &Path) -> Result<String, NatsError> {
    // Read whole: the decoration lines' line ends are part of the format.
    let text = std::fs::read_to_string(path).map_err(|source| NatsError::SecretFile {
        what: "credentials_file",
        path: path.to_path_buf(),
        source,
    })?;
    // Parsing here (as the client will) reports a broken file with its path.
    ConnectOptions::new()
        .credentials(&text)
        .map_err(|e| NatsError::Credentials {
            origin: format!("credentials_file {}", path.display()),
            message: e.to_string(),
        })?;
    Ok(text)
}

impl AuthMethod {
    /// Adds the credentials to the options of a connection to `ep`.
    pub fn apply(&self, opts: ConnectOptions, ep: &Endpoint) -> Result<ConnectOptions, NatsError> {
        Ok(match self {
            AuthMethod::FromUrl => match (&ep.user, &ep.password, &ep.token) {
                (Some(u), p, _) => opts.user_and_password(u.clone(), p.clone().unwrap_or_default()),
                (None, _, Some(t)) => opts.token(t.clone()),
                _ => opts,
            },
            AuthMethod::UserPassword { user, password } => {
                let password = match password {
                    Some(p) => p.value("password_file")?,
                    None => String::new(),
                };
                opts.user_and_password(user.clone(), password)
            }
            AuthMethod::Token(t) => opts.token(t.value("token_file")?),
            AuthMethod::NkeySeed(s) => opts.nkey(seed(s)?),
            AuthMethod::CredentialsFile(p) => {
                let text = credentials(p)?;
                opts.credentials(&text)
                    .map_err(|e| NatsError::Credentials {
                        origin: format!("credentials_file {}", p.display()),
                        message: e.to_string(),
                    })?
            }
        })
    }

    /// Reads and checks every file the method names (for `kubetrail check`).
    pub fn preflight(&self) -> Result<(), NatsError> {
        match self {
            AuthMethod::FromUrl => Ok(()),
            AuthMethod::UserPassword { password, .. } => match password {
                Some(p) => p.value("password_file").map(drop),
                None => Ok(()),
            },
            AuthMethod::Token(t) => t.value("token_file").map(drop),
            AuthMethod::NkeySeed(s) => seed(s).map(drop),
            AuthMethod::CredentialsFile(p) => credentials(p).map(drop),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep() -> Endpoint {
        Endpoint::parse_list("nats://127.0.0.1").unwrap().remove(0)
    }

    #[test]
    fn seeds_are_checked_without_showing_them() {
        let user = nkeys::KeyPair::new_user();
        let good = user.seed().unwrap();
        assert_eq!(seed(&Secret::Inline(format!(" {good}\n"))).unwrap(), good);

        let account = nkeys::KeyPair::new_account().seed().unwrap();
        let e = seed(&Secret::Inline(account.clone()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a user key") && !e.contains(&account), "{e}");

        let mut broken = good.clone();
        broken.replace_range(10..11, if &good[10..11] == "A" { "B" } else { "A" });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("user.nk");
        std::fs::write(&path, &broken).unwrap();
        let e = AuthMethod::NkeySeed(Secret::File(path.clone()))
            .preflight()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("user.nk") && e.contains("not an NKey seed") && !e.contains(&broken),
            "{e}"
        );
        let e = AuthMethod::NkeySeed(Secret::File(dir.path().join("missing")))
            .apply(ConnectOptions::new(), &ep())
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing"), "{e}");
    }

    #[test]
    fn credentials_files_need_a_jwt_and_a_seed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("user.creds");
        let seed = nkeys::KeyPair::new_user().seed().unwrap();
        std::fs::write(
            &path,
            format!("-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"),
        )
        .unwrap();
        let m = AuthMethod::CredentialsFile(path.clone());
        let e = m.preflight().unwrap_err().to_string();
        assert!(
            e.contains("user.creds") && e.contains("cannot parse") && !e.contains(&seed),
            "{e}"
        );
        std::fs::write(
            &path,
            format!(
                "-----BEGIN NATS USER JWT-----\neyJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.c2ln\n------END NATS USER JWT------\n\n\
                 -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
            ),
        )
        .unwrap();
        m.preflight().expect("a JWT and a seed");
        assert!(format!("{m:?}").contains("user.creds"));
    }

    #[test]
    fn debug_never_shows_secrets() {
        let m = AuthMethod::UserPassword {
            user: "u".into(),
            password: Some(Secret::Inline("hunter2".into())),
        };
        assert!(!format!("{m:?}").contains("hunter2"));
        let m = AuthMethod::NkeySeed(Secret::Inline("SUAXXXX".into()));
        assert!(!format!("{m:?}").contains("SUAXXXX"));
    }
}
