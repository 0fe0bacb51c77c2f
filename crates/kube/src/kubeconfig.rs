//! Reading kubeconfig files (outside a cluster): the context, its cluster (server, CA,
//! insecure-skip-tls-verify, tls-server-name) and its user (client certificate, token,
//! tokenFile). Several files merge as kubectl does: the first file that sets a name wins.

use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;

/// Why a kubeconfig could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    /// A kubeconfig file could not be read.
    #[error("cannot read kubeconfig {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A kubeconfig file is not valid YAML of the expected shape.
    #[error("cannot parse kubeconfig {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    /// No kubeconfig file exists among those looked at.
    #[error("no kubeconfig file found (looked at: {looked_at})")]
    NotFound { looked_at: String },
    /// The asked-for context is in none of the files.
    #[error("context {context:?} not found in kubeconfig {files}")]
    NoSuchContext { context: String, files: String },
    /// No context was asked for and no file sets `current-context`.
    #[error("kubeconfig {files} sets no current-context; set kube_context")]
    NoCurrentContext { files: String },
    /// A context refers to a cluster or user that is not defined.
    #[error("kubeconfig context {context:?} refers to {what} {name:?}, which is not defined")]
    MissingReference {
        context: String,
        what: &'static str,
        name: String,
    },
    /// A field is missing or unusable.
    #[error("kubeconfig {path}: {what}")]
    Invalid { path: PathBuf, what: String },
    /// The user authenticates in a way kubetrail does not support.
    #[error(
        "kubeconfig user {user:?} uses {method}, which kubetrail does not support; use a token, tokenFile or client certificate"
    )]
    Unsupported { user: String, method: &'static str },
}

#[derive(Deserialize, Default)]
struct File {
    #[serde(default, rename = "current-context")]
    current_context: Option<String>,
    #[serde(default)]
    clusters: Option<Vec<Named<Cluster>>>,
    #[serde(default)]
    users: Option<Vec<Named<User>>>,
    #[serde(default)]
    contexts: Option<Vec<Named<Context>>>,
}

#[derive(Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "user", alias = "context")]
    #[serde(default = "Option::default")]
    value: Option<T>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "kebab-case")]
struct Cluster {
    #[serde(default)]
    server: Option<String>,
    #[serde(default)]
    certificate_authority: Option<String>,
    #[serde(default)]
    certificate_authority_data: Option<String>,
    #[serde(default)]
    insecure_skip_tls_verify: Option<bool>,
    #[serde(default)]
    tls_server_name: Option<String>,
    #[serde(default)]
    proxy_url: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "kebab-case")]
struct User {
    #[serde(default)]
    client_certificate: Option<String>,
    #[serde(default)]
    client_certificate_data: Option<String>,
    #[serde(default)]
    client_key: Option<String>,
    #[serde(default)]
    client_key_data: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default, rename = "tokenFile")]
    token_file: Option<String>,
    #[serde(default)]
    exec: Option<serde_yaml::Value>,
    #[serde(default, rename = "auth-provider")]
    auth_provider: Option<serde_yaml::Value>,
    #[serde(default)]
    username: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
struct Context {
    #[serde(default)]
    cluster: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
}

/// What a kubeconfig context says about reaching the API server. Paths are absolute (relative
/// paths in a file are taken relative to that file's directory).
#[derive(Clone, Default)]
pub struct KubeconfigSelection {
    /// The file the context came from.
    pub file: PathBuf,
    /// The context's name.
    pub context: String,
    /// `cluster.server`.
    pub server: String,
    /// `certificate-authority`.
    pub ca_file: Option<PathBuf>,
    /// `certificate-authority-data`, decoded.
    pub ca_pem: Option<Vec<u8>>,
    /// `insecure-skip-tls-verify`.
    pub insecure_skip_tls_verify: bool,
    /// `tls-server-name`.
    pub tls_server_name: Option<String>,
    /// `client-certificate`.
    pub client_cert_file: Option<PathBuf>,
    /// `client-certificate-data`, decoded.
    pub client_cert_pem: Option<Vec<u8>>,
    /// `client-key`.
    pub client_key_file: Option<PathBuf>,
    /// `client-key-data`, decoded. Never logged.
    pub client_key_pem: Option<Vec<u8>>,
    /// `token`. Never logged.
    pub token: Option<String>,
    /// `tokenFile`.
    pub token_file: Option<PathBuf>,
    /// `context.namespace`.
    pub namespace: Option<String>,
}

impl std::fmt::Debug for KubeconfigSelection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeconfigSelection")
            .field("file", &self.file)
            .field("context", &self.context)
            .field("server", &self.server)
            .field("ca_file", &self.ca_file)
            .field("ca_pem", &self.ca_pem.is_some())
            .field("insecure_skip_tls_verify", &self.insecure_skip_tls_verify)
            .field("tls_server_name", &self.tls_server_name)
            .field("client_cert_file", &self.client_cert_file)
            .field("client_cert_pem", &self.client_cert_pem.is_some())
            .field("client_key_file", &self.client_key_file)
            .field(
                "client_key_pem",
                &self.client_key_pem.as_ref().map(|_| "<redacted>"),
            )
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("namespace", &self.namespace)
            .finish()
    }
}

struct Loaded {
    path: PathBuf,
    file: File,
}

/// Loads the kubeconfig `paths` (files that do not exist are skipped, as kubectl does) and
/// resolves `context`, or the first `current-context` set.
pub fn load(
    paths: &[PathBuf],
    context: Option<&str>,
) -> Result<KubeconfigSelection, KubeconfigError> {
    let mut loaded = Vec::new();
    for path in paths {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && paths.len() > 1 => continue,
            Err(source) => {
                return Err(KubeconfigError::Read {
                    path: path.clone(),
                    source,
                });
            }
        };
        let file: File = if text.trim().is_empty() {
            File::default()
        } else {
            serde_yaml::from_str(&text).map_err(|source| KubeconfigError::Parse {
                path: path.clone(),
                source,
            })?
        };
        loaded.push(Loaded {
            path: path.clone(),
            file,
        });
    }
    let files = paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    if loaded.is_empty() {
        return Err(KubeconfigError::NotFound { looked_at: files });
    }
    let context_name = match context {
        Some(c) => c.to_string(),
        None => loaded
            .iter()
            .find_map(|l| l.file.current_context.clone().filter(|c| !c.is_empty()))
            .ok_or_else(|| KubeconfigError::NoCurrentContext {
                files: files.clone(),
            })?,
    };
    let (ctx_file, ctx) = find(&loaded, |f| &f.contexts, &context_name).ok_or_else(|| {
        KubeconfigError::NoSuchContext {
            context: context_name.clone(),
            files: files.clone(),
        }
    })?;
    let cluster_name = ctx.cluster.clone().unwrap_or_default();
    let (cluster_file, cluster) =
        find(&loaded, |f| &f.clusters, &cluster_name).ok_or_else(|| {
            KubeconfigError::MissingReference {
                context: context_name.clone(),
                what: "cluster",
                name: cluster_name.clone(),
            }
        })?;
    let user_name = ctx.user.clone().unwrap_or_default();
    let (user_file, user) = if user_name.is_empty() {
        (cluster_file, User::default())
    } else {
        find(&loaded, |f| &f.users, &user_name).ok_or_else(|| {
            KubeconfigError::MissingReference {
                context: context_name.clone(),
                what: "user",
                name: user_name.clone(),
            }
        })?
    };
    if user.exec.is_some() {
        return Err(KubeconfigError::Unsupported {
            user: user_name,
            method: "exec credentials",
        });
    }
    if user.auth_provider.is_some() {
        return Err(KubeconfigError::Unsupported {
            user: user_name,
            method: "an auth-provider",
        });
    }
    if user.username.is_some() && user.token.is_none() && user.token_file.is_none() {
        return Err(KubeconfigError::Unsupported {
            user: user_name,
            method: "basic authentication",
        });
    }
    if let Some(proxy) = cluster.proxy_url.as_deref().filter(|p| !p.is_empty()) {
        tracing::warn!(
            proxy,
            "kubeconfig proxy-url is not supported and is ignored"
        );
    }
    let server = cluster
        .server
        .clone()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| KubeconfigError::Invalid {
            path: cluster_file.to_path_buf(),
            what: format!("cluster {cluster_name:?} has no server"),
        })?;
    let rel = |base: &Path, p: &Option<String>| {
        p.as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| resolve_path(base, s))
    };
    let data = |base: &Path,
                field: &'static str,
                v: &Option<String>|
     -> Result<Option<Vec<u8>>, KubeconfigError> {
        match v.as_deref().filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(s) => decode_base64(s)
                .map(Some)
                .ok_or_else(|| KubeconfigError::Invalid {
                    path: base.to_path_buf(),
                    what: format!("{field} is not valid base64"),
                }),
        }
    };
    Ok(KubeconfigSelection {
        file: ctx_file.to_path_buf(),
        context: context_name,
        server,
        ca_file: rel(cluster_file, &cluster.certificate_authority),
        ca_pem: data(
            cluster_file,
            "certificate-authority-data",
            &cluster.certificate_authority_data,
        )?,
        insecure_skip_tls_verify: cluster.insecure_skip_tls_verify.unwrap_or(false),
        tls_server_name: cluster.tls_server_name.clone().filter(|s| !s.is_empty()),
        client_cert_file: rel(user_file, &user.client_certificate),
        client_cert_pem: data(
            user_file,
            "client-certificate-data",
            &user.client_certificate_data,
        )?,
        client_key_file: rel(user_file, &user.client_key),
        client_key_pem: data(user_file, "client-key-data", &user.client_key_data)?,
        token: user.token.clone().filter(|s| !s.is_empty()),
        token_file: rel(user_file, &user.token_file),
        namespace: ctx.namespace.clone().filter(|s| !s.is_empty()),
    })
}

/// Finds the first entry named `name` across the files, with the file it came from.
fn find<'a, T: Clone + Default>(
    loaded: &'a [Loaded],
    list: impl Fn(&File) -> &Option<Vec<Named<T>>>,
    name: &str,
) -> Option<(&'a Path, T)> {
    loaded.iter().find_map(|l| {
        list(&l.file)
            .as_ref()?
            .iter()
            .find(|n| n.name == name)
            .map(|n| (l.path.as_path(), n.value.clone().unwrap_or_default()))
    })
}

fn resolve_path(kubeconfig: &Path, p: &str) -> PathBuf {
    let p = PathBuf::from(p);
    if p.is_absolute() {
        p
    } else {
        kubeconfig.parent().unwrap_or(Path::new(".")).join(p)
    }
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let clean: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(&clean)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(&clean))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
apiVersion: v1
kind: Config
current-context: dev
clusters:
- name: dev-cluster
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t
    tls-server-name: kubernetes
- name: prod-cluster
  cluster:
    server: https://prod.example:443
    certificate-authority: certs/ca.crt
    insecure-skip-tls-verify: true
users:
- name: dev-user
  user:
    client-certificate: /abs/client.crt
    client-key: rel/client.key
- name: prod-user
  user:
    token: s3cr3t
- name: exec-user
  user:
    exec:
      command: aws
contexts:
- name: dev
  context: {cluster: dev-cluster, user: dev-user, namespace: fx}
- name: prod
  context: {cluster: prod-cluster, user: prod-user}
- name: uses-exec
  context: {cluster: dev-cluster, user: exec-user}
- name: dangling
  context: {cluster: nowhere, user: dev-user}
"#;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn current_context_and_named_context() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "config", CONFIG);
        let dev = load(std::slice::from_ref(&path), None).unwrap();
        assert_eq!(dev.context, "dev");
        assert_eq!(dev.server, "https://127.0.0.1:6443");
        assert_eq!(
            dev.ca_pem.as_deref(),
            Some(&b"-----BEGIN CERTIFICATE-----"[..])
        );
        assert_eq!(dev.tls_server_name.as_deref(), Some("kubernetes"));
        assert_eq!(dev.client_cert_file, Some(PathBuf::from("/abs/client.crt")));
        assert_eq!(dev.client_key_file, Some(dir.path().join("rel/client.key")));
        assert_eq!(dev.namespace.as_deref(), Some("fx"));

        let prod = load(std::slice::from_ref(&path), Some("prod")).unwrap();
        assert_eq!(prod.ca_file, Some(dir.path().join("certs/ca.crt")));
        assert!(prod.insecure_skip_tls_verify);
        assert_eq!(prod.token.as_deref(), Some("s3cr3t"));
        assert!(!format!("{prod:?}").contains("s3cr3t"));
    }

    #[test]
    fn errors_are_specific() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "config", CONFIG);
        let p = std::slice::from_ref(&path);
        let e = load(p, Some("nope")).unwrap_err().to_string();
        assert!(
            e.contains("\"nope\"") && e.contains(&path.display().to_string()),
            "{e}"
        );
        let e = load(p, Some("uses-exec")).unwrap_err().to_string();
        assert!(e.contains("exec"), "{e}");
        let e = load(p, Some("dangling")).unwrap_err().to_string();
        assert!(e.contains("nowhere"), "{e}");
        let bad = write(dir.path(), "bad", "clusters: [unclosed");
        assert!(matches!(
            load(&[bad], None),
            Err(KubeconfigError::Parse { .. })
        ));
        let missing = dir.path().join("missing");
        assert!(matches!(
            load(std::slice::from_ref(&missing), None),
            Err(KubeconfigError::Read { .. })
        ));
        let no_current = write(dir.path(), "nocur", "clusters: []\n");
        assert!(matches!(
            load(&[no_current], None),
            Err(KubeconfigError::NoCurrentContext { .. })
        ));
    }

    #[test]
    fn several_files_merge_first_wins_and_missing_files_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(
            dir.path(),
            "a",
            "current-context: other\ncontexts:\n- name: other\n  context: {cluster: dev-cluster, user: prod-user}\n",
        );
        let b = write(dir.path(), "b", CONFIG);
        let paths = vec![dir.path().join("missing"), a, b];
        let sel = load(&paths, None).unwrap();
        assert_eq!(sel.context, "other");
        assert_eq!(sel.server, "https://127.0.0.1:6443");
        assert_eq!(sel.token.as_deref(), Some("s3cr3t"));
        let sel = load(&paths, Some("prod")).unwrap();
        assert_eq!(sel.server, "https://prod.example:443");
        let e = load(&[dir.path().join("x"), dir.path().join("y")], None).unwrap_err();
        assert!(matches!(e, KubeconfigError::NotFound { .. }));
    }
}
