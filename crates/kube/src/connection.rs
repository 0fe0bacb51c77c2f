//! Connection settings for the Kubernetes API with Fluent Bit's option names, and how they
//! resolve to a URL, TLS settings and credentials: explicit options, a kubeconfig, or the
//! in-cluster service account. Environment and filesystem lookups go through [`Environment`]
//! so that tests can fake them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kubetrail_core::config::{ConfigError, Section, TlsOptions};
use kubetrail_net::TlsClientSettings;

use crate::kubeconfig::{self, KubeconfigError};
use crate::token::{TokenError, TokenSource};

/// Where in-cluster credentials are mounted.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The API address used in a cluster when `KUBERNETES_SERVICE_HOST` is not set.
pub const DEFAULT_KUBE_URL: &str = "https://kubernetes.default.svc";
/// Default `kube_token_ttl`.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(600);

/// The process environment as the connection resolution sees it.
#[derive(Debug, Clone)]
pub struct Environment {
    /// Environment variables (`KUBERNETES_SERVICE_HOST`, `KUBERNETES_SERVICE_PORT`, `KUBECONFIG`).
    pub vars: BTreeMap<String, String>,
    /// The home directory (for `~/.kube/config`).
    pub home: Option<PathBuf>,
    /// Where the service account token, CA and namespace are mounted.
    pub service_account_dir: PathBuf,
}

impl Environment {
    /// The real environment of this process.
    pub fn from_process() -> Self {
        let vars: BTreeMap<String, String> = std::env::vars().collect();
        let home = vars
            .get("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from);
        Environment {
            vars,
            home,
            service_account_dir: PathBuf::from(SERVICE_ACCOUNT_DIR),
        }
    }

    /// An environment with no variables, no home and the given service account directory.
    pub fn isolated(service_account_dir: impl Into<PathBuf>) -> Self {
        Environment {
            vars: BTreeMap::new(),
            home: None,
            service_account_dir: service_account_dir.into(),
        }
    }

    /// A variable, if set and not empty.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Whether this process runs in a pod: `KUBERNETES_SERVICE_HOST` is set or a service
    /// account token is mounted.
    pub fn in_cluster(&self) -> bool {
        self.var("KUBERNETES_SERVICE_HOST").is_some()
            || self.service_account_dir.join("token").is_file()
    }

    /// The kubeconfig files to look at: `$KUBECONFIG` (colon-separated) or `~/.kube/config`.
    pub fn kubeconfig_paths(&self) -> Vec<PathBuf> {
        match self.var("KUBECONFIG") {
            Some(list) => list
                .split(':')
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect(),
            None => self
                .home
                .iter()
                .map(|h| h.join(".kube").join("config"))
                .collect(),
        }
    }

    /// The in-cluster API URL: `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`,
    /// else `https://kubernetes.default.svc`.
    pub fn in_cluster_url(&self) -> String {
        match self.var("KUBERNETES_SERVICE_HOST") {
            Some(host) => {
                let port = self.var("KUBERNETES_SERVICE_PORT").unwrap_or("443");
                if host.contains(':') && !host.starts_with('[') {
                    format!("https://[{host}]:{port}")
                } else {
                    format!("https://{host}:{port}")
                }
            }
            None => DEFAULT_KUBE_URL.to_string(),
        }
    }
}

/// `kube_token_file` as written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TokenFileOption {
    /// Not set: the default (the service account token, or what the kubeconfig says).
    #[default]
    Default,
    /// Set to an empty value: send no bearer token (e.g. behind `kubectl proxy`).
    Disabled,
    /// Set to a file.
    File(PathBuf),
}

/// Kubernetes API connection options, named as in Fluent Bit's `kubernetes_events` input.
///
/// Resolution ([`KubeConnectionOptions::resolve`]): options given explicitly always win; if
/// `kubeconfig` or `kube_context` is set, the kubeconfig supplies the rest; if the process is
/// not in a cluster (no `KUBERNETES_SERVICE_HOST`, no service account token) and `kube_url` is
/// not set, `$KUBECONFIG` or `~/.kube/config` supplies it; otherwise the in-cluster service
/// account does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeConnectionOptions {
    /// `kube_url`: the API server URL. Default in a cluster:
    /// `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT` when set, else
    /// `https://kubernetes.default.svc`. `http://` is allowed (e.g. `kubectl proxy`).
    pub kube_url: Option<String>,
    /// `kube_ca_file`: PEM CA bundle that signs the API server certificate. Default in a
    /// cluster: `/var/run/secrets/kubernetes.io/serviceaccount/ca.crt`. `tls.ca_file` is an
    /// alias.
    pub kube_ca_file: Option<PathBuf>,
    /// `kube_ca_path`: a directory of PEM CA certificates (instead of, or with, `kube_ca_file`).
    /// `tls.ca_path` is an alias.
    pub kube_ca_path: Option<PathBuf>,
    /// `kube_token_file`: bearer token file, re-read after `kube_token_ttl` and after every 401.
    /// Default in a cluster: `/var/run/secrets/kubernetes.io/serviceaccount/token`. An empty
    /// value sends no token (e.g. behind `kubectl proxy`, or with a client certificate).
    pub kube_token_file: TokenFileOption,
    /// `kube_token_ttl` (default `10m`): how long the token file's content is trusted before
    /// it is read again.
    pub kube_token_ttl: Duration,
    /// `tls.verify`, `tls.debug`, `tls.vhost`, `tls.ca_file`, `tls.ca_path`, `tls.crt_file`,
    /// `tls.key_file` (a client certificate, overriding the kubeconfig's).
    pub tls: TlsOptions,
    /// Whether `tls.verify` was written (so that a kubeconfig's `insecure-skip-tls-verify`
    /// applies only when the configuration says nothing).
    pub tls_verify_explicit: bool,
    /// `kubeconfig`: a kubeconfig file to take the server and credentials from (outside a
    /// cluster). Default: none; outside a cluster without `kube_url`, `$KUBECONFIG`
    /// (colon-separated, the first file with the context wins) or `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// `kube_context`: the kubeconfig context (default: its `current-context`). Setting it
    /// alone means "use `$KUBECONFIG` / `~/.kube/config`".
    pub kube_context: Option<String>,
}

impl Default for KubeConnectionOptions {
    fn default() -> Self {
        KubeConnectionOptions {
            kube_url: None,
            kube_ca_file: None,
            kube_ca_path: None,
            kube_token_file: TokenFileOption::Default,
            kube_token_ttl: DEFAULT_TOKEN_TTL,
            tls: TlsOptions::default(),
            tls_verify_explicit: false,
            kubeconfig: None,
            kube_context: None,
        }
    }
}

/// Why the connection settings could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The kubeconfig could not be used.
    #[error(transparent)]
    Kubeconfig(#[from] KubeconfigError),
    /// Outside a cluster with nothing that says where the API server is.
    #[error(
        "not running in a cluster (KUBERNETES_SERVICE_HOST is not set and there is no token at {token}) and no kubeconfig was found ({looked_at}); set kube_url or kubeconfig"
    )]
    NoClusterFound { token: PathBuf, looked_at: String },
    /// The kubeconfig token is unusable.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The resolved URL is not http(s).
    #[error("the Kubernetes API URL {url:?} must start with https:// or http://")]
    BadUrl { url: String },
}

/// Where the bearer token comes from, after resolution.
#[derive(Debug, Clone)]
pub enum Auth {
    /// No bearer token.
    None,
    /// A token file with its TTL.
    TokenFile { path: PathBuf, ttl: Duration },
    /// A fixed token (from a kubeconfig).
    Token(TokenSource),
}

impl Auth {
    /// The token source for this auth.
    pub fn token_source(&self) -> TokenSource {
        match self {
            Auth::None => TokenSource::none(),
            Auth::TokenFile { path, ttl } => TokenSource::file(path, *ttl),
            Auth::Token(t) => t.clone(),
        }
    }
}

/// Where the connection settings came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionOrigin {
    /// The in-cluster service account (and explicit options).
    InCluster,
    /// A kubeconfig context (and explicit options).
    Kubeconfig { file: PathBuf, context: String },
}

/// Fully resolved connection settings, ready for [`crate::KubeClient::new`].
#[derive(Debug, Clone)]
pub struct ResolvedConnection {
    /// The API server URL.
    pub url: String,
    /// TLS settings (trust, client certificate, SNI name).
    pub tls: TlsClientSettings,
    /// Bearer token source.
    pub auth: Auth,
    /// Where these came from.
    pub origin: ConnectionOrigin,
    /// The default namespace (kubeconfig context, or the service account's namespace).
    pub namespace: Option<String>,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

impl KubeConnectionOptions {
    /// Reads the options from a component section (keys are case-insensitive).
    pub fn from_section(section: &mut Section) -> Result<Self, ConfigError> {
        let kube_url = non_empty(section.get_str("kube_url")?);
        if let Some(u) = &kube_url
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            return Err(section.error("kube_url", "must start with https:// or http://"));
        }
        if let Some(u) = &kube_url
            && let Err(e) = u.parse::<http::Uri>()
        {
            return Err(section.error("kube_url", format!("'{u}' is not a URL: {e}")));
        }
        let path = |s: Option<String>| non_empty(s).map(PathBuf::from);
        let kube_ca_file = path(section.get_str("kube_ca_file")?);
        let kube_ca_path = path(section.get_str("kube_ca_path")?);
        let kube_token_file = match section.get_str("kube_token_file")? {
            None => TokenFileOption::Default,
            Some(s) if s.trim().is_empty() => TokenFileOption::Disabled,
            Some(s) => TokenFileOption::File(PathBuf::from(s.trim())),
        };
        let kube_token_ttl = section
            .get_duration("kube_token_ttl")?
            .unwrap_or(DEFAULT_TOKEN_TTL);
        if kube_token_ttl.is_zero() {
            return Err(section.error("kube_token_ttl", "must be more than 0"));
        }
        let tls_verify_explicit = section.get_bool("tls.verify")?.is_some();
        let tls = TlsOptions::from_section(section)?;
        let kubeconfig = path(section.get_str("kubeconfig")?);
        let kube_context = non_empty(section.get_str("kube_context")?);
        Ok(KubeConnectionOptions {
            kube_url,
            kube_ca_file,
            kube_ca_path,
            kube_token_file,
            kube_token_ttl,
            tls,
            tls_verify_explicit,
            kubeconfig,
            kube_context,
        })
    }

    /// Resolves the options against the environment (see the type's documentation for the
    /// order). Reads kubeconfig files but not CA or token files: those are read when the
    /// client is built and when a token is needed.
    pub fn resolve(&self, env: &Environment) -> Result<ResolvedConnection, ConnectionError> {
        let in_cluster = env.in_cluster();
        let use_kubeconfig = self.kubeconfig.is_some()
            || self.kube_context.is_some()
            || (!in_cluster && self.kube_url.is_none());

        let mut resolved = if use_kubeconfig {
            let paths = match &self.kubeconfig {
                Some(p) => vec![p.clone()],
                None => env.kubeconfig_paths(),
            };
            let explicit = self.kubeconfig.is_some() || self.kube_context.is_some();
            if !explicit && !paths.iter().any(|p| p.is_file()) {
                return Err(ConnectionError::NoClusterFound {
                    token: env.service_account_dir.join("token"),
                    looked_at: if paths.is_empty() {
                        "$KUBECONFIG and $HOME are not set".to_string()
                    } else {
                        paths
                            .iter()
                            .map(|p| p.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                });
            }
            from_kubeconfig(kubeconfig::load(&paths, self.kube_context.as_deref())?)?
        } else {
            in_cluster_defaults(env, self.kube_token_ttl)
        };

        // Explicit options win over whatever the base said.
        if let Some(url) = &self.kube_url {
            resolved.url = url.clone();
        }
        let ca_file = self.kube_ca_file.as_ref().or(self.tls.ca_file.as_ref());
        let ca_path = self.kube_ca_path.as_ref().or(self.tls.ca_path.as_ref());
        if ca_file.is_some() || ca_path.is_some() {
            resolved.tls.ca_file = ca_file.cloned();
            resolved.tls.ca_path = ca_path.cloned();
            resolved.tls.ca_pem = None;
        }
        match &self.kube_token_file {
            TokenFileOption::Default => {
                if let Auth::TokenFile { ttl, .. } = &mut resolved.auth {
                    *ttl = self.kube_token_ttl;
                }
            }
            TokenFileOption::Disabled => resolved.auth = Auth::None,
            TokenFileOption::File(p) => {
                resolved.auth = Auth::TokenFile {
                    path: p.clone(),
                    ttl: self.kube_token_ttl,
                }
            }
        }
        if self.tls_verify_explicit {
            resolved.tls.verify = self.tls.verify;
        }
        if let Some(vhost) = &self.tls.vhost {
            resolved.tls.vhost = Some(vhost.clone());
        }
        resolved.tls.debug = self.tls.debug;
        if let (Some(c), Some(k)) = (&self.tls.crt_file, &self.tls.key_file) {
            resolved.tls.client_cert_file = Some(c.clone());
            resolved.tls.client_key_file = Some(k.clone());
            resolved.tls.client_cert_pem = None;
            resolved.tls.client_key_pem = None;
        }
        if !(resolved.url.starts_with("https://") || resolved.url.starts_with("http://")) {
            return Err(ConnectionError::BadUrl { url: resolved.url });
        }
        Ok(resolved)
    }
}

fn in_cluster_defaults(env: &Environment, ttl: Duration) -> ResolvedConnection {
    let sa = &env.service_account_dir;
    ResolvedConnection {
        url: env.in_cluster_url(),
        tls: TlsClientSettings {
            ca_file: Some(sa.join("ca.crt")),
            ..TlsClientSettings::default()
        },
        auth: Auth::TokenFile {
            path: sa.join("token"),
            ttl,
        },
        origin: ConnectionOrigin::InCluster,
        namespace: read_namespace(&sa.join("namespace")),
    }
}

fn read_namespace(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn from_kubeconfig(
    sel: kubeconfig::KubeconfigSelection,
) -> Result<ResolvedConnection, ConnectionError> {
    let auth = match (&sel.token_file, &sel.token) {
        (Some(path), _) => Auth::TokenFile {
            path: path.clone(),
            ttl: DEFAULT_TOKEN_TTL,
        },
        (None, Some(token)) => Auth::Token(TokenSource::fixed(token)?),
        (None, None) => Auth::None,
    };
    Ok(ResolvedConnection {
        url: sel.server.clone(),
        tls: TlsClientSettings {
            verify: !sel.insecure_skip_tls_verify,
            ca_file: sel.ca_file.clone(),
            ca_pem: sel.ca_pem.clone(),
            client_cert_file: sel.client_cert_file.clone(),
            client_key_file: sel.client_key_file.clone(),
            client_cert_pem: sel.client_cert_pem.clone(),
            client_key_pem: sel.client_key_pem.clone(),
            vhost: sel.tls_server_name.clone(),
            ..TlsClientSettings::default()
        },
        auth,
        origin: ConnectionOrigin::Kubeconfig {
            file: sel.file.clone(),
            context: sel.context.clone(),
        },
        namespace: sel.namespace.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubetrail_core::config::SectionKind;

    fn section(pairs: &[(&str, &str)]) -> Section {
        Section::from_pairs(SectionKind::Input, "kubernetes_events", pairs)
    }

    fn options(pairs: &[(&str, &str)]) -> KubeConnectionOptions {
        KubeConnectionOptions::from_section(&mut section(pairs)).unwrap()
    }

    fn cluster_env(dir: &Path) -> Environment {
        let sa = dir.join("sa");
        std::fs::create_dir_all(&sa).unwrap();
        std::fs::write(sa.join("token"), "sa-token").unwrap();
        std::fs::write(sa.join("namespace"), "monitoring\n").unwrap();
        let mut env = Environment::isolated(sa);
        env.vars
            .insert("KUBERNETES_SERVICE_HOST".into(), "10.96.0.1".into());
        env.vars
            .insert("KUBERNETES_SERVICE_PORT".into(), "6443".into());
        env
    }

    const KUBECONFIG: &str = "current-context: c\nclusters:\n- name: k\n  cluster:\n    server: https://k.example:6443\n    certificate-authority-data: LS0t\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: kc-token\ncontexts:\n- name: c\n  context: {cluster: k, user: u, namespace: team}\n- name: other\n  context: {cluster: k}\n";

    #[test]
    fn defaults_and_option_names() {
        let o = options(&[]);
        assert_eq!(o, KubeConnectionOptions::default());
        let o = options(&[
            ("Kube_URL", "https://api:6443"),
            ("kube_ca_file", "/ca.crt"),
            ("kube_ca_path", "/cas"),
            ("kube_token_file", "/tok"),
            ("kube_token_ttl", "1h"),
            ("tls.verify", "off"),
            ("tls.debug", "2"),
            ("tls.vhost", "kubernetes"),
            ("kubeconfig", "/kc"),
            ("kube_context", "ctx"),
        ]);
        assert_eq!(o.kube_url.as_deref(), Some("https://api:6443"));
        assert_eq!(o.kube_token_file, TokenFileOption::File("/tok".into()));
        assert_eq!(o.kube_token_ttl, Duration::from_secs(3600));
        assert!(!o.tls.verify && o.tls_verify_explicit);
        assert_eq!(o.tls.debug, 2);
        assert_eq!(o.kubeconfig, Some(PathBuf::from("/kc")));
        assert_eq!(
            options(&[("kube_token_file", "")]).kube_token_file,
            TokenFileOption::Disabled
        );

        for bad in [
            ("kube_url", "api:6443"),
            ("kube_url", "http://127.0.0.1:{kube_api_port}"),
            ("kube_token_ttl", "0"),
            ("kube_token_ttl", "soon"),
            ("tls.verify", "maybe"),
        ] {
            let err = KubeConnectionOptions::from_section(&mut section(&[bad])).unwrap_err();
            assert!(err.to_string().contains(bad.0), "{err}");
        }
    }

    #[test]
    fn in_cluster_defaults_come_from_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let env = cluster_env(dir.path());
        let r = options(&[]).resolve(&env).unwrap();
        assert_eq!(r.url, "https://10.96.0.1:6443");
        assert_eq!(r.tls.ca_file, Some(env.service_account_dir.join("ca.crt")));
        assert!(r.tls.verify);
        assert!(matches!(&r.auth, Auth::TokenFile { path, ttl }
            if *path == env.service_account_dir.join("token") && *ttl == DEFAULT_TOKEN_TTL));
        assert_eq!(r.origin, ConnectionOrigin::InCluster);
        assert_eq!(r.namespace.as_deref(), Some("monitoring"));

        let mut v6 = env.clone();
        v6.vars
            .insert("KUBERNETES_SERVICE_HOST".into(), "fd00::1".into());
        assert_eq!(v6.in_cluster_url(), "https://[fd00::1]:6443");
        // A token file alone also means "in a cluster".
        let mut no_host = env.clone();
        no_host.vars.clear();
        let r = options(&[]).resolve(&no_host).unwrap();
        assert_eq!(r.url, DEFAULT_KUBE_URL);
    }

    #[test]
    fn explicit_options_win() {
        let dir = tempfile::tempdir().unwrap();
        let env = cluster_env(dir.path());
        let r = options(&[
            ("kube_url", "http://127.0.0.1:8001"),
            ("kube_token_file", ""),
        ])
        .resolve(&env)
        .unwrap();
        assert_eq!(r.url, "http://127.0.0.1:8001");
        assert!(matches!(r.auth, Auth::None));

        let r = options(&[
            ("kube_ca_path", "/etc/cas"),
            ("kube_token_file", "/my/token"),
            ("kube_token_ttl", "30s"),
            ("tls.vhost", "kubernetes.default.svc"),
            ("tls.crt_file", "/c.crt"),
            ("tls.key_file", "/c.key"),
        ])
        .resolve(&env)
        .unwrap();
        assert_eq!(
            r.tls.ca_file, None,
            "an explicit CA dir replaces the default CA file"
        );
        assert_eq!(r.tls.ca_path, Some(PathBuf::from("/etc/cas")));
        assert!(matches!(&r.auth, Auth::TokenFile { path, ttl }
            if *path == Path::new("/my/token") && *ttl == Duration::from_secs(30)));
        assert_eq!(r.tls.vhost.as_deref(), Some("kubernetes.default.svc"));
        assert_eq!(r.tls.client_cert_file, Some(PathBuf::from("/c.crt")));
    }

    #[test]
    fn kubeconfig_when_asked_or_outside_a_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let kc = dir.path().join("kc.yaml");
        std::fs::write(&kc, KUBECONFIG).unwrap();

        // Explicit kubeconfig, even inside a cluster.
        let env = cluster_env(dir.path());
        let r = options(&[("kubeconfig", kc.to_str().unwrap())])
            .resolve(&env)
            .unwrap();
        assert_eq!(r.url, "https://k.example:6443");
        assert!(
            !r.tls.verify,
            "insecure-skip-tls-verify applies when tls.verify is not written"
        );
        assert_eq!(r.tls.ca_pem.as_deref(), Some(&b"---"[..]));
        assert_eq!(r.namespace.as_deref(), Some("team"));
        assert!(
            matches!(&r.auth, Auth::Token(t) if t.token().unwrap().unwrap().expose() == "kc-token")
        );
        assert_eq!(
            r.origin,
            ConnectionOrigin::Kubeconfig {
                file: kc.clone(),
                context: "c".into()
            }
        );
        let r = options(&[
            ("kubeconfig", kc.to_str().unwrap()),
            ("tls.verify", "on"),
            ("kube_ca_file", "/x.crt"),
        ])
        .resolve(&env)
        .unwrap();
        assert!(r.tls.verify);
        assert_eq!(
            (r.tls.ca_file.as_deref(), r.tls.ca_pem.as_ref()),
            (Some(Path::new("/x.crt")), None)
        );

        // Outside a cluster: $KUBECONFIG (first file with the context), then ~/.kube/config.
        let mut outside = Environment::isolated(dir.path().join("no-sa"));
        outside.vars.insert(
            "KUBECONFIG".into(),
            format!("{}:{}", dir.path().join("absent").display(), kc.display()),
        );
        let r = options(&[]).resolve(&outside).unwrap();
        assert_eq!(r.url, "https://k.example:6443");
        let r = options(&[("kube_context", "other")])
            .resolve(&outside)
            .unwrap();
        assert!(matches!(r.auth, Auth::None));
        assert_eq!(
            r.origin,
            ConnectionOrigin::Kubeconfig {
                file: kc.clone(),
                context: "other".into()
            }
        );

        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join(".kube")).unwrap();
        std::fs::copy(&kc, home.join(".kube/config")).unwrap();
        let mut with_home = Environment::isolated(dir.path().join("no-sa"));
        with_home.home = Some(home.clone());
        let r = options(&[]).resolve(&with_home).unwrap();
        assert!(
            matches!(r.origin, ConnectionOrigin::Kubeconfig { ref file, .. } if *file == home.join(".kube/config"))
        );

        // Outside a cluster with kube_url: no kubeconfig needed.
        let r = options(&[
            ("kube_url", "http://localhost:8001"),
            ("kube_token_file", ""),
        ])
        .resolve(&Environment::isolated(dir.path().join("no-sa")))
        .unwrap();
        assert_eq!(r.origin, ConnectionOrigin::InCluster);
    }

    #[test]
    fn nothing_found_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = options(&[])
            .resolve(&Environment::isolated(dir.path().join("sa")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not running in a cluster") && err.contains("kube_url"),
            "{err}"
        );

        let err = options(&[("kubeconfig", dir.path().join("nope").to_str().unwrap())])
            .resolve(&Environment::isolated(dir.path().join("sa")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope"), "{err}");
    }
}
