//! `deploy/`, the installation: every overlay renders with `kubectl kustomize`, every object
//! validates against the OpenAPI schemas of a real kube-apiserver v1.28
//! (`$KUBETRAIL_FIXTURES/kube-openapi`: types, required fields, enums, no unknown field), the
//! pod templates meet Pod Security "restricted", the shipped configurations build and agree
//! with the manifests (paths, ports, names, RBAC), the Dockerfile builds the binary the
//! manifests run as the user they expect, and `deploy/apiserver/make-certs.sh` makes
//! certificates with which the shipped audit configuration accepts the apiserver's client
//! certificate.
//!
//! `kubectl` and `openssl` are required: without them these tests fail and say so.

#[path = "deploy/openapi.rs"]
mod openapi;
#[path = "deploy/pod_security.rs"]
mod pod_security;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use yaml_rust2::{Yaml, YamlLoader};

const OVERLAYS: [&str; 3] = ["events-only", "audit-only", "all"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn tool(name: &str) -> Command {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{name} is required by the deploy/ tests and is not installed (the CI machines have it)"
    );
    Command::new(name)
}

/// `kubectl kustomize deploy/overlays/<overlay>`, as JSON objects.
fn render(overlay: &str) -> Vec<Value> {
    let out = tool("kubectl")
        .arg("kustomize")
        .arg(repo().join("deploy/overlays").join(overlay))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize {overlay}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_docs(&String::from_utf8(out.stdout).unwrap())
}

/// The documents of a YAML stream as JSON values (YAML 1.2: `on` is a string).
fn yaml_docs(text: &str) -> Vec<Value> {
    fn json(y: &Yaml) -> Value {
        match y {
            Yaml::Null | Yaml::BadValue => Value::Null,
            Yaml::Boolean(b) => Value::Bool(*b),
            Yaml::Integer(i) => json!(i),
            Yaml::Real(r) => r.parse::<f64>().map(|f| json!(f)).unwrap_or(Value::Null),
            Yaml::String(s) => Value::String(s.clone()),
            Yaml::Array(a) => Value::Array(a.iter().map(json).collect()),
            Yaml::Hash(h) => Value::Object(
                h.iter()
                    .map(|(k, v)| match k {
                        Yaml::String(k) => (k.clone(), json(v)),
                        other => (format!("{other:?}"), json(v)),
                    })
                    .collect(),
            ),
            Yaml::Alias(_) => panic!("aliases are not used here"),
        }
    }
    YamlLoader::load_from_str(text)
        .unwrap_or_else(|e| panic!("not YAML: {e}"))
        .iter()
        .map(json)
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml(text: &str) -> Value {
    yaml_docs(text).into_iter().next().expect("a YAML document")
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn schemas() -> openapi::Schemas {
    let dir = std::env::var("KUBETRAIL_FIXTURES")
        .expect("set KUBETRAIL_FIXTURES to the shared fixtures directory");
    openapi::Schemas::load(&Path::new(&dir).join("kube-openapi"))
}

#[test]
fn every_overlay_renders_and_validates_against_the_apiserver_schemas() {
    let schemas = schemas();
    let mut seen = BTreeMap::new();
    for overlay in OVERLAYS {
        let objects = render(overlay);
        let mut names = BTreeSet::new();
        for o in &objects {
            let id = format!(
                "{} {}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            );
            let problems = schemas.validate(o);
            assert!(problems.is_empty(), "{overlay}: {id}: {problems:#?}");
            if o["kind"] != "Namespace" && !o["kind"].as_str().unwrap().starts_with("Cluster") {
                assert_eq!(o["metadata"]["namespace"], "kubetrail", "{overlay}: {id}");
            }
            names.insert(id);
        }
        seen.insert(overlay, names);
    }
    let events: BTreeSet<String> = [
        "Namespace kubetrail",
        "ServiceAccount kubetrail-events",
        "ClusterRole kubetrail-events",
        "ClusterRoleBinding kubetrail-events",
        "Role kubetrail-events-lease",
        "RoleBinding kubetrail-events-lease",
        "ConfigMap kubetrail-events",
        "Service kubetrail-events",
        "StatefulSet kubetrail-events",
        "PodDisruptionBudget kubetrail-events",
    ]
    .map(String::from)
    .into();
    let audit: BTreeSet<String> = [
        "Namespace kubetrail",
        "ServiceAccount kubetrail-audit",
        "ConfigMap kubetrail-audit",
        "Service kubetrail-audit",
        "Service kubetrail-audit-pods",
        "StatefulSet kubetrail-audit",
        "PodDisruptionBudget kubetrail-audit",
    ]
    .map(String::from)
    .into();
    assert_eq!(seen["events-only"], events);
    assert_eq!(seen["audit-only"], audit);
    assert_eq!(seen["all"], events.union(&audit).cloned().collect());
}

/// The validator finds what it is there to find (else the test above proves nothing).
#[test]
fn the_schema_validator_rejects_what_the_apiserver_rejects() {
    let schemas = schemas();
    let objects = render("events-only");
    let mut sts = find(&objects, "StatefulSet", "kubetrail-events").clone();
    assert!(schemas.validate(&sts).is_empty());
    sts["spec"]["replica"] = json!(2);
    sts["spec"]["replicas"] = json!("two");
    sts["spec"].as_object_mut().unwrap().remove("serviceName");
    sts["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = json!("Sometimes");
    sts["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] =
        json!(5_000_000_000i64);
    let problems = schemas.validate(&sts).join("\n");
    for want in [
        "spec.replica: unknown field",
        "spec.replicas: \"two\" is not an integer",
        "the required field 'serviceName' is missing",
        "imagePullPolicy: \"Sometimes\" is not one of",
        "containerPort: 5000000000 is out of the int32 range",
    ] {
        assert!(problems.contains(want), "{want} not in:\n{problems}");
    }
    let mut cm = find(&objects, "ConfigMap", "kubetrail-events").clone();
    cm["data"]["n"] = json!(1);
    assert!(schemas.validate(&cm)[0].contains("data.n: 1 is not a string"));
    let unknown = json!({"apiVersion": "example.com/v1", "kind": "Widget"});
    assert!(schemas.validate(&unknown)[0].contains("no schema"));
}

/// Every pod template of every overlay meets Pod Security "restricted", with a read-only root
/// filesystem and no automounted service-account token; the namespace enforces the profile.
#[test]
fn pod_templates_meet_pod_security_restricted() {
    let mut templates = 0;
    for overlay in OVERLAYS {
        let objects = render(overlay);
        let ns = find(&objects, "Namespace", "kubetrail");
        for mode in ["enforce", "audit", "warn"] {
            assert_eq!(
                ns["metadata"]["labels"][format!("pod-security.kubernetes.io/{mode}")],
                "restricted"
            );
        }
        for o in objects.iter().filter(|o| o["kind"] == "StatefulSet") {
            let t = &o["spec"]["template"];
            let spec = &t["spec"];
            let v = pod_security::restricted_violations(spec, &t["metadata"]["annotations"]);
            assert!(v.is_empty(), "{overlay}: {}: {v:#?}", o["metadata"]["name"]);
            assert_eq!(spec["automountServiceAccountToken"], false);
            for c in spec["containers"].as_array().unwrap() {
                assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
                assert!(c["resources"]["requests"]["cpu"].is_string());
                assert!(c["resources"]["requests"]["memory"].is_string());
                assert!(c["resources"]["limits"]["memory"].is_string());
                assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
                assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
            }
            templates += 1;
        }
    }
    assert_eq!(templates, 4);
}

/// The checker finds what it is there to find.
#[test]
fn the_pod_security_check_rejects_what_restricted_rejects() {
    let objects = render("events-only");
    let good = &find(&objects, "StatefulSet", "kubetrail-events")["spec"]["template"];
    let mut spec = good["spec"].clone();
    spec["hostNetwork"] = json!(true);
    spec["volumes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "host", "hostPath": {"path": "/var/log"}}));
    let c = &mut spec["containers"][0]["securityContext"];
    c["allowPrivilegeEscalation"] = json!(true);
    c["privileged"] = json!(true);
    c["capabilities"] = json!({"add": ["SYS_ADMIN"]});
    c["runAsNonRoot"] = json!(false);
    c["seccompProfile"] = json!({"type": "Unconfined"});
    spec["securityContext"]["sysctls"] = json!([{"name": "kernel.msgmax", "value": "1"}]);
    let annotations =
        json!({"container.apparmor.security.beta.kubernetes.io/kubetrail": "unconfined"});
    let v = pod_security::restricted_violations(&spec, &annotations).join("\n");
    for want in [
        "Host Namespaces: hostNetwork",
        "HostPath Volumes",
        "Volume Types: \"host\" is a hostPath volume",
        "Privilege Escalation",
        "Privileged Containers",
        "Capabilities (baseline): containers[kubetrail] adds SYS_ADMIN",
        "Capabilities: containers[kubetrail] must drop ALL",
        "Running as Non-root: containers[kubetrail]",
        "Seccomp: containers[kubetrail]",
        "Sysctls: kernel.msgmax",
        "AppArmor",
    ] {
        assert!(v.contains(want), "{want} not in:\n{v}");
    }
}

fn config_of(objects: &[Value], name: &str) -> (String, Value) {
    let text = find(objects, "ConfigMap", name)["data"]["kubetrail.yaml"]
        .as_str()
        .unwrap()
        .to_string();
    let v = yaml(&text);
    (text, v)
}

fn container(sts: &Value) -> &Value {
    &sts["spec"]["template"]["spec"]["containers"][0]
}

fn mount_path<'a>(sts: &'a Value, volume: &str) -> &'a str {
    container(sts)["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume)
        .unwrap_or_else(|| panic!("no mount of {volume}"))["mountPath"]
        .as_str()
        .unwrap()
}

fn port(sts: &Value, name: &str) -> i64 {
    container(sts)["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no port {name}"))["containerPort"]
        .as_i64()
        .unwrap()
}

fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .unwrap()
        .iter()
        .all(|(k, v)| &labels[k] == v)
}

/// The shipped configurations build into a pipeline, and every name, path and port they use
/// is the one the manifests give them.
#[test]
fn the_configurations_build_and_agree_with_the_manifests() {
    let objects = render("all");
    for name in ["kubetrail-events", "kubetrail-audit"] {
        let (text, config) = config_of(&objects, name);
        let parsed = kubetrail_core::config::Config::parse(&text, Path::new("kubetrail.yaml"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        kubetrail::topology::Plan::from_config(parsed).unwrap_or_else(|e| panic!("{name}: {e}"));
        let sts = find(&objects, "StatefulSet", name);
        let c = container(sts);
        // The configuration is where the arguments say, the state where the volume is.
        assert_eq!(
            c["args"],
            json!([
                "run",
                "-c",
                format!("{}/kubetrail.yaml", mount_path(sts, "config"))
            ])
        );
        assert_eq!(config["service"]["data_dir"], mount_path(sts, "state"));
        assert_eq!(
            sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
            "state"
        );
        let listen = config["service"]["http_listen"].as_str().unwrap();
        assert_eq!(listen, format!("0.0.0.0:{}", port(sts, "http")));
        for probe in ["livenessProbe", "readinessProbe"] {
            assert_eq!(c[probe]["httpGet"]["port"], "http");
        }
        let labels = &sts["spec"]["template"]["metadata"]["labels"];
        assert!(selects(&sts["spec"]["selector"]["matchLabels"], labels));
        let governing = find(
            &objects,
            "Service",
            sts["spec"]["serviceName"].as_str().unwrap(),
        );
        assert_eq!(governing["spec"]["clusterIP"], "None");
        assert!(selects(&governing["spec"]["selector"], labels));
        let pdb = find(&objects, "PodDisruptionBudget", name);
        assert!(selects(&pdb["spec"]["selector"]["matchLabels"], labels));
        // Every container runs as the user the image has (Dockerfile).
        assert_eq!(
            sts["spec"]["template"]["spec"]["securityContext"]["runAsUser"],
            65532
        );
    }

    // Events: leader election on, the Lease the Role allows, the identity from the pod name,
    // the service-account files where kubetrail reads them in a cluster.
    let (_, events) = config_of(&objects, "kubetrail-events");
    let input = &events["pipeline"]["inputs"][0];
    assert_eq!(input["name"], "kubernetes_events");
    assert_eq!(input["leader_election"], "on");
    let lease = input["leader_election.lease_name"].as_str().unwrap();
    let sts = find(&objects, "StatefulSet", "kubetrail-events");
    assert_eq!(sts["spec"]["replicas"], 2);
    assert_eq!(
        container(sts)["env"],
        json!([{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}])
    );
    assert_eq!(
        mount_path(sts, "kube-api-access"),
        kubetrail_kube::connection::SERVICE_ACCOUNT_DIR
    );
    let projected: Vec<String> = sts["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "kube-api-access")
        .unwrap()["projected"]["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s["serviceAccountToken"]["path"]
                .as_str()
                .or(s["configMap"]["items"][0]["path"].as_str())
                .or(s["downwardAPI"]["items"][0]["path"].as_str())
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(projected, ["token", "ca.crt", "namespace"]);
    assert_eq!(
        sts["spec"]["template"]["spec"]["serviceAccountName"],
        "kubetrail-events"
    );

    // RBAC: Events read-only in both groups; its own Lease only; nothing else, no wildcard.
    let cr = find(&objects, "ClusterRole", "kubetrail-events");
    assert_eq!(
        cr["rules"],
        json!([{"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["get", "list", "watch"]}])
    );
    let role = find(&objects, "Role", "kubetrail-events-lease");
    assert_eq!(
        role["rules"],
        json!([
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": [lease], "verbs": ["get", "update"]}
        ])
    );
    for (kind, name) in [
        ("ClusterRoleBinding", "kubetrail-events"),
        ("RoleBinding", "kubetrail-events-lease"),
    ] {
        let b = find(&objects, kind, name);
        assert_eq!(
            b["subjects"],
            json!([{"kind": "ServiceAccount", "name": "kubetrail-events", "namespace": "kubetrail"}])
        );
    }
    let rbac_text = objects
        .iter()
        .filter(|o| o["apiVersion"] == "rbac.authorization.k8s.io/v1")
        .map(Value::to_string)
        .collect::<String>();
    assert!(!rbac_text.contains('*'), "no wildcard in RBAC");
    assert_eq!(
        objects
            .iter()
            .filter(|o| o["apiVersion"] == "rbac.authorization.k8s.io/v1")
            .count(),
        4,
        "the audit receivers get no role"
    );

    // Audit: the webhook listens on the container port the Service targets, with the files of
    // the Secret the certificate script makes, where the Secret is mounted; the apiserver's
    // kubeconfig names that Service, port and path.
    let (_, audit) = config_of(&objects, "kubetrail-audit");
    let input = &audit["pipeline"]["inputs"][0];
    assert_eq!(input["name"], "audit_webhook");
    let sts = find(&objects, "StatefulSet", "kubetrail-audit");
    let webhook_port = port(sts, "webhook");
    assert_eq!(input["listen"], format!("0.0.0.0:{webhook_port}"));
    let svc = find(&objects, "Service", "kubetrail-audit");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "webhook");
    assert!(selects(
        &svc["spec"]["selector"],
        &sts["spec"]["template"]["metadata"]["labels"]
    ));
    let tls_dir = mount_path(sts, "tls");
    for (key, file) in [
        ("tls.crt_file", "tls.crt"),
        ("tls.key_file", "tls.key"),
        ("tls.client_ca_file", "client-ca.crt"),
    ] {
        assert_eq!(input[key], format!("{tls_dir}/{file}"));
    }
    let secret_volume = sts["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "tls")
        .unwrap();
    assert_eq!(secret_volume["secret"]["secretName"], "kubetrail-audit-tls");
    let kubeconfig = yaml(
        &std::fs::read_to_string(repo().join("deploy/apiserver/audit-webhook.kubeconfig")).unwrap(),
    );
    assert_eq!(
        kubeconfig["clusters"][0]["cluster"]["server"],
        format!(
            "https://{}.{}.svc:{}{}",
            svc["metadata"]["name"].as_str().unwrap(),
            svc["metadata"]["namespace"].as_str().unwrap(),
            svc["spec"]["ports"][0]["port"],
            input["path"].as_str().unwrap()
        )
    );
    let policy =
        yaml(&std::fs::read_to_string(repo().join("deploy/apiserver/audit-policy.yaml")).unwrap());
    assert_eq!(policy["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(policy["kind"], "Policy");
    assert!(policy["rules"].as_array().unwrap().len() >= 5);
}

/// A `.dockerignore` pattern list, applied as Docker does: a path is excluded when it or one of
/// its parent directories matches a pattern (`*` within a path element, `**` across).
fn docker_ignored(patterns: &[String], path: &str) -> bool {
    let opts = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    let parts: Vec<&str> = path.split('/').collect();
    (1..=parts.len()).any(|n| {
        let prefix = parts[..n].join("/");
        patterns.iter().any(|p| {
            let p = p.trim_end_matches('/');
            glob::Pattern::new(p).is_ok_and(|g| g.matches_with(&prefix, opts))
                || p.strip_prefix("**/").is_some_and(|rest| {
                    (0..n).any(|s| {
                        glob::Pattern::new(rest)
                            .is_ok_and(|g| g.matches_with(&parts[s..n].join("/"), opts))
                    })
                })
        })
    })
}

/// The image build: the Dockerfile builds and ships the binary `cargo build --release` makes
/// for the `kubetrail` target, runs it as the user the manifests expect with the configuration
/// path they mount, and the build context keeps everything the workspace builds from.
#[test]
fn the_dockerfile_builds_what_the_manifests_run() {
    let root = repo();
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let lines: Vec<String> = dockerfile
        .replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    let from: Vec<&String> = lines.iter().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(from.len(), 2, "a build stage and a runtime stage");
    assert!(
        from[1].contains("distroless") && from[1].contains("nonroot"),
        "{}",
        from[1]
    );
    let build = lines
        .iter()
        .find(|l| l.contains("cargo build"))
        .expect("a cargo build");
    assert!(
        build.contains("cargo build --release --locked -p kubetrail --bin kubetrail"),
        "{build}"
    );
    assert!(build.contains("target/release/kubetrail"), "{build}");
    // The binary target is the kubetrail crate's `kubetrail`.
    let manifest: toml_lite::Doc = toml_lite::parse(
        &std::fs::read_to_string(root.join("crates/kubetrail/Cargo.toml")).unwrap(),
    );
    assert!(
        manifest.bins.iter().any(|b| b == "kubetrail"),
        "{:?}",
        manifest.bins
    );
    assert_eq!(
        env!("CARGO_BIN_EXE_kubetrail").rsplit('/').next(),
        Some("kubetrail")
    );
    let workspace = toml_lite::parse(&std::fs::read_to_string(root.join("Cargo.toml")).unwrap());
    let rust_arg = lines
        .iter()
        .find_map(|l| l.strip_prefix("ARG RUST_VERSION="))
        .expect("ARG RUST_VERSION");
    assert_eq!(Some(rust_arg.to_string()), workspace.rust_version);
    assert!(lines.iter().any(|l| l == "USER 65532:65532"));
    let copy = lines
        .iter()
        .find(|l| l.starts_with("COPY --from=build"))
        .unwrap();
    let shipped = copy.split_whitespace().last().unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l == &format!("ENTRYPOINT [\"{shipped}\"]")),
        "the entrypoint is the copied binary"
    );
    let objects = render("all");
    for o in objects.iter().filter(|o| o["kind"] == "StatefulSet") {
        let spec = &o["spec"]["template"]["spec"];
        assert_eq!(spec["securityContext"]["runAsUser"], 65532);
        assert_eq!(spec["securityContext"]["runAsGroup"], 65532);
        assert_eq!(spec["securityContext"]["fsGroup"], 65532);
        let c = &spec["containers"][0];
        assert!(c.get("command").is_none(), "the image's entrypoint is used");
        assert!(c["image"].as_str().unwrap().starts_with("kubetrail:"));
        let cmd = lines.iter().find(|l| l.starts_with("CMD ")).unwrap();
        let cmd: Value = serde_json::from_str(cmd.strip_prefix("CMD ").unwrap()).unwrap();
        assert_eq!(
            c["args"], cmd,
            "the manifests pass the image's default arguments"
        );
    }

    let patterns: Vec<String> = std::fs::read_to_string(root.join(".dockerignore"))
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    for ignored in [
        "target",
        "target/release/kubetrail",
        ".git/HEAD",
        "crates/kubetrail/target/x",
        "kubetrail-audit-certs/tls.key",
        "x.db-wal",
    ] {
        assert!(
            docker_ignored(&patterns, ignored),
            "{ignored} is sent to the build"
        );
    }
    let mut needed = vec![
        "Cargo.toml".to_string(),
        "Cargo.lock".to_string(),
        ".cargo/config.toml".to_string(),
    ];
    for member in &workspace.members {
        for f in walk(&root.join(member)) {
            needed.push(
                f.strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    assert!(needed.len() > 50);
    for f in &needed {
        assert!(
            !docker_ignored(&patterns, f),
            "{f} is needed by the build but .dockerignore leaves it out"
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == "target") {
            continue;
        }
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Just enough of a Cargo.toml: `members`, `rust-version`, `[[bin]]` names.
mod toml_lite {
    pub struct Doc {
        pub members: Vec<String>,
        pub rust_version: Option<String>,
        pub bins: Vec<String>,
    }

    pub fn parse(text: &str) -> Doc {
        let mut doc = Doc {
            members: Vec::new(),
            rust_version: None,
            bins: Vec::new(),
        };
        let mut section = String::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line.to_string();
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let (k, v) = (k.trim(), v.trim());
            let unquote = |s: &str| s.trim_matches('"').to_string();
            match (section.as_str(), k) {
                ("[workspace]", "members") => {
                    doc.members = v
                        .trim_matches(['[', ']'])
                        .split(',')
                        .map(|m| unquote(m.trim()))
                        .filter(|m| !m.is_empty())
                        .collect()
                }
                ("[workspace.package]", "rust-version") => doc.rust_version = Some(unquote(v)),
                ("[[bin]]", "name") => doc.bins.push(unquote(v)),
                _ => {}
            }
        }
        doc
    }
}

/// The certificate script's output, mounted the way the Secret it writes would be, is what the
/// shipped audit configuration needs: the apiserver's client certificate is accepted (200, the
/// event recorded), a client without it is refused, and the server certificate verifies for
/// the Service's name against the CA the apiserver's kubeconfig names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_certs_makes_what_the_webhook_and_the_apiserver_need() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let status = tool("bash")
        .arg(repo().join("deploy/apiserver/make-certs.sh"))
        .args(["--out"])
        .arg(&certs)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(
        tool("openssl")
            .arg("version")
            .output()
            .unwrap()
            .status
            .success()
    );
    assert!(status.success(), "make-certs.sh failed");
    // The kubeconfig names the files the script makes.
    let kubeconfig =
        std::fs::read_to_string(repo().join("deploy/apiserver/audit-webhook.kubeconfig")).unwrap();
    for f in [
        "kubetrail-ca.crt",
        "apiserver-audit-client.crt",
        "apiserver-audit-client.key",
    ] {
        assert!(certs.join(f).exists(), "{f}");
        assert!(
            kubeconfig.contains(&format!("/{f}")),
            "{f} in the kubeconfig"
        );
    }
    // The Secret, as a mounted volume: one file per key.
    let secret = yaml(&std::fs::read_to_string(certs.join("secret.yaml")).unwrap());
    assert_eq!(secret["metadata"]["name"], "kubetrail-audit-tls");
    let problems = schemas().validate(&secret);
    assert!(problems.is_empty(), "{problems:?}");
    let mounted = dir.path().join("tls");
    std::fs::create_dir(&mounted).unwrap();
    for (k, v) in secret["data"].as_object().unwrap() {
        let pem = base64_decode(v.as_str().unwrap());
        std::fs::write(mounted.join(k), pem).unwrap();
    }

    // The shipped configuration, with the container paths and addresses made local.
    let objects = render("audit-only");
    let (text, _) = config_of(&objects, "kubetrail-audit");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let yaml = text
        .replace("/etc/kubetrail/tls", &mounted.display().to_string())
        .replace(
            "/var/lib/kubetrail",
            &dir.path().join("data").display().to_string(),
        )
        .replace("0.0.0.0:9443", &format!("127.0.0.1:{port}"))
        .replace("0.0.0.0:2020", "127.0.0.1:0");
    let config = dir.path().join("kubetrail.yaml");
    std::fs::write(&config, yaml).unwrap();
    let stdout = dir.path().join("stdout");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubetrail"))
        .args(["run", "-c"])
        .arg(&config)
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();

    let client = |with_cert: bool| {
        let tls = kubetrail_net::TlsClientSettings {
            ca_file: Some(certs.join("kubetrail-ca.crt")),
            client_cert_file: with_cert.then(|| certs.join("apiserver-audit-client.crt")),
            client_key_file: with_cert.then(|| certs.join("apiserver-audit-client.key")),
            vhost: Some("kubetrail-audit.kubetrail.svc".into()),
            ..Default::default()
        };
        kubetrail_net::HttpClient::new(&format!("https://127.0.0.1:{port}"), &tls).unwrap()
    };
    let body = r#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":[{"level":"Metadata","auditID":"5b3c1e8a-0c1f-4f57-9d8e-1a2b3c4d5e6f","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/shop/pods/web-0","verb":"delete","user":{"username":"alice","groups":["system:authenticated"]},"sourceIPs":["10.0.0.7"],"objectRef":{"resource":"pods","namespace":"shop","name":"web-0","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2026-11-27T00:31:51.810715Z","stageTimestamp":"2026-11-27T00:31:51.820715Z"}]}"#;
    let post = |c: kubetrail_net::HttpClient| async move {
        let req = http::Request::post("/audit?timeout=30s")
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap();
        c.send(req).await.map(|r| r.status().as_u16())
    };
    let start = Instant::now();
    let mut answer = post(client(true)).await;
    while answer.is_err() && start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        answer = post(client(true)).await;
    }
    let refused = post(client(false)).await;
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let exit = child.wait().unwrap();
    let log = std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
    assert_eq!(answer.as_ref().ok(), Some(&200), "{answer:?}\n{log}");
    assert!(
        !matches!(refused, Ok(200)),
        "a client without the apiserver's certificate was accepted"
    );
    assert!(exit.success(), "{log}");
    let out = std::fs::read_to_string(&stdout).unwrap();
    assert!(
        out.contains("\"id\":\"5b3c1e8a-0c1f-4f57-9d8e-1a2b3c4d5e6f/ResponseComplete\""),
        "{out}"
    );
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}
