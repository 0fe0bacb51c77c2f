//! Reading kubeconfig files (outside a cluster): the context, its cluster (server, CA,
//! insecure-skip-tls-verify, tls-server-name) and its user (client certificate, token,
//! tokenFile). Several files merge as kubectl does: the first file that sets a name wins.

use std::path::{Path, PathBuf};

use base64::Engine;
use kubetrail_core::config::yaml::{self, Node, NodeValue};

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
    #[error("cannot parse kubeconfig {path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
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

#[derive(Default)]
struct File {
    current_context: Option<String>,
    clusters: Option<Vec<Named<Cluster>>>,
    users: Option<Vec<Named<User>>>,
    contexts: Option<Vec<Named<Context>>>,
}

struct Named<T> {
    name: String,
    value: Option<T>,
}

#[derive(Default, Clone)]
struct Cluster {
    server: Option<String>,
    certificate_authority: Option<String>,
    certificate_authority_data: Option<String>,
    insecure_skip_tls_verify: Option<bool>,
    tls_server_name: Option<String>,
    proxy_url: Option<String>,
}

#[derive(Default, Clone)]
struct User {
    client_certificate: Option<String>,
    client_certificate_data: Option<String>,
    client_key: Option<String>,
    client_key_data: Option<String>,
    token: Option<String>,
    token_file: Option<String>,
    /// Set when the user has an `exec` entry (not supported).
    exec: bool,
    /// Set when the user has an `auth-provider` entry (not supported).
    auth_provider: bool,
    username: Option<String>,
}

#[derive(Default, Clone)]
struct Context {
    cluster: Option<String>,
    user: Option<String>,
    namespace: Option<String>,
}

/// Why a kubeconfig document does not have the expected shape, and where.
struct ShapeError {
    line: usize,
    message: String,
}

fn shape(line: usize, message: impl Into<String>) -> ShapeError {
    ShapeError {
        line,
        message: message.into(),
    }
}

/// The entries of a mapping node (`None` for null), or a shape error naming `what`.
fn entries<'a>(node: &'a Node, what: &str) -> Result<&'a [(String, usize, Node)], ShapeError> {
    match &node.value {
        NodeValue::Map(m) => Ok(m),
        NodeValue::Scalar(None) => Ok(&[]),
        _ => Err(shape(node.line, format!("{what} must be a mapping"))),
    }
}

/// A string field: a scalar or null. Numbers and booleans are kept as written.
fn string(node: &Node, key: &str) -> Result<Option<String>, ShapeError> {
    match &node.value {
        NodeValue::Scalar(s) => Ok(s.clone()),
        _ => Err(shape(node.line, format!("{key} must be a single value"))),
    }
}

/// A boolean field in YAML 1.2's core schema (what kubectl's reader accepts).
fn boolean(node: &Node, key: &str) -> Result<Option<bool>, ShapeError> {
    match string(node, key)?.as_deref() {
        None => Ok(None),
        Some("true" | "True" | "TRUE") => Ok(Some(true)),
        Some("false" | "False" | "FALSE") => Ok(Some(false)),
        Some(other) => Err(shape(
            node.line,
            format!("{key} must be true or false, not '{other}'"),
        )),
    }
}

/// A list of `{name: ..., <inner>: {...}}` entries.
fn named_list<T>(
    node: &Node,
    list: &str,
    inner: &str,
    read: impl Fn(&Node) -> Result<T, ShapeError>,
) -> Result<Option<Vec<Named<T>>>, ShapeError> {
    let items = match &node.value {
        NodeValue::Seq(items) => items,
        NodeValue::Scalar(None) => return Ok(None),
        _ => return Err(shape(node.line, format!("{list} must be a list"))),
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let mut name = None;
        let mut value = None;
        for (k, _, v) in entries(item, &format!("an entry of {list}"))? {
            if k == "name" {
                name = string(v, "name")?;
            } else if k == inner {
                value = match &v.value {
                    NodeValue::Scalar(None) => None,
                    _ => Some(read(v)?),
                };
            }
        }
        let name =
            name.ok_or_else(|| shape(item.line, format!("an entry of {list} has no name")))?;
        out.push(Named { name, value });
    }
    Ok(Some(out))
}

fn read_cluster(node: &Node) -> Result<Cluster, ShapeError> {
    let mut c = Cluster::default();
    for (k, _, v) in entries(node, "cluster")? {
        match k.as_str() {
            "server" => c.server = string(v, k)?,
            "certificate-authority" => c.certificate_authority = string(v, k)?,
            "certificate-authority-data" => c.certificate_authority_data = string(v, k)?,
            "insecure-skip-tls-verify" => c.insecure_skip_tls_verify = boolean(v, k)?,
            "tls-server-name" => c.tls_server_name = string(v, k)?,
            "proxy-url" => c.proxy_url = string(v, k)?,
            _ => {}
        }
    }
    Ok(c)
}

fn read_user(node: &Node) -> Result<User, ShapeError> {
    let mut u = User::default();
    for (k, _, v) in entries(node, "user")? {
        let set = !matches!(v.value, NodeValue::Scalar(None));
        match k.as_str() {
            "client-certificate" => u.client_certificate = string(v, k)?,
            "client-certificate-data" => u.client_certificate_data = string(v, k)?,
            "client-key" => u.client_key = string(v, k)?,
            "client-key-data" => u.client_key_data = string(v, k)?,
            "token" => u.token = string(v, k)?,
            "tokenFile" => u.token_file = string(v, k)?,
            "exec" => u.exec = set,
            "auth-provider" => u.auth_provider = set,
            "username" => u.username = string(v, k)?,
            _ => {}
        }
    }
    Ok(u)
}

fn read_context(node: &Node) -> Result<Context, ShapeError> {
    let mut c = Context::default();
    for (k, _, v) in entries(node, "context")? {
        match k.as_str() {
            "cluster" => c.cluster = string(v, k)?,
            "user" => c.user = string(v, k)?,
            "namespace" => c.namespace = string(v, k)?,
            _ => {}
        }
    }
    Ok(c)
}

/// Reads a kubeconfig document (fields kubetrail does not use are ignored, as kubectl does).
fn parse_file(text: &str) -> Result<File, ShapeError> {
    let root = yaml::parse_with_aliases(text).map_err(|e| shape(e.line, e.message))?;
    let mut file = File::default();
    for (k, _, v) in entries(&root, "a kubeconfig")? {
        match k.as_str() {
            "current-context" => file.current_context = string(v, k)?,
            "clusters" => file.clusters = named_list(v, k, "cluster", read_cluster)?,
            "users" => file.users = named_list(v, k, "user", read_user)?,
            "contexts" => file.contexts = named_list(v, k, "context", read_context)?,
            _ => {}
        }
    }
    Ok(file)
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
            parse_file(&text).map_err(|e| KubeconfigError::Parse {
                path: path.clone(),
                line: e.line,
                message: e.message,
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
    if user.exec {
        return Err(KubeconfigError::Unsupported {
            user: user_name,
            method: "exec credentials",
        });
    }
    if user.auth_provider {
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
        let bad = write(
            dir.path(),
            "bad-shape",
            "current-context: a\nclusters:\n- name: a\n  cluster:\n    insecure-skip-tls-verify: maybe\n",
        );
        let e = load(std::slice::from_ref(&bad), None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!(
                "cannot parse kubeconfig {}:5: insecure-skip-tls-verify must be true or false, not 'maybe'",
                bad.display()
            )
        );
        let bad = write(dir.path(), "bad-list", "users: {a: b}\n");
        let e = load(&[bad], None).unwrap_err().to_string();
        assert!(e.ends_with(":1: users must be a list"), "{e}");
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
    fn anchors_and_aliases_are_read_as_kubectl_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "config",
            "current-context: a\nclusters:\n- name: c\n  cluster: &c {server: 'https://h:6443'}\n- name: d\n  cluster: *c\ncontexts:\n- name: a\n  context: {cluster: d}\n",
        );
        let sel = load(&[path], None).unwrap();
        assert_eq!(sel.server, "https://h:6443");
        assert!(sel.token.is_none());
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
