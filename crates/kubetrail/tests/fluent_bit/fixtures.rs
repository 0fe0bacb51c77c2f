//! Every Fluent Bit configuration in `$KUBETRAIL_FIXTURES/fluent-bit-configs/` (listings of
//! Fluent Bit's documentation, files of its repository, rendered Helm charts; see SOURCES.md
//! there) read by `run`/`check`'s loader, with the exact outcome each must have: the dialect,
//! accepted or refused, every error, warning and note, the plan kubetrail builds, and for
//! accepted files `kubetrail migrate`'s output, which must build the same plan. The expected
//! outcomes are in `tests/fluent_bit/expected/` (`KUBETRAIL_UPDATE_EXPECTED=1` rewrites them;
//! review the diff). The files that use only plugins kubetrail has also run against the
//! emulator, end to end, through the `kubetrail` binary.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;
use kubetrail::topology::Plan;
use kubetrail_core::config::Config;
use kubetrail_emulator::EventSpec;
use kubetrail_fluentbit::{Disk, LoadError, load_with};

fn fixtures() -> PathBuf {
    PathBuf::from(std::env::var("KUBETRAIL_FIXTURES").expect("KUBETRAIL_FIXTURES is set"))
        .join("fluent-bit-configs")
}

/// Every configuration file of the fixture directory, sorted.
fn configs(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("fixture directory") {
        let p = entry.expect("entry").path();
        if p.is_dir() {
            out.extend(configs(&p));
        } else if p
            .extension()
            .is_some_and(|e| e == "conf" || e == "yaml" || e == "yml")
        {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Values for the environment variables the fixtures use (their test harnesses set them), so
/// that the files are checked past their variables. `unset_variables_are_errors` checks them
/// unset.
fn variables() -> BTreeMap<String, String> {
    [
        ("FLUENT_BIT_HTTP_MONITORING_PORT", "2020"),
        ("FLUENT_BIT_TEST_LISTENER_PORT", "9880"),
        ("CERTIFICATE_TEST", "/etc/tls/tls.crt"),
        ("PRIVATE_KEY_TEST", "/etc/tls/tls.key"),
        ("TEST_SUITE_HTTP_PORT", "8080"),
        ("TAIL_TEST_PATH", "/var/log/test/*.log"),
        ("TAIL_TEST_DB", "/var/lib/test/tail.db"),
        ("TEST_DIR", "/tmp/test"),
        ("MY_OUTPUT", "stdout"),
        ("SIGNAL_FILE_PATH", "/tmp/test/signal"),
        ("FLB_ROOT", "/fluent-bit"),
        ("FLB_RUNTIME_SHELL_PATH", "/fluent-bit/tests/runtime_shell"),
        ("LISTENER_HOST", "127.0.0.1"),
        ("LISTENER_PORT", "9443"),
        ("LISTENER_VHOST", "localhost"),
        ("K8S_NODE_NAME", "node-1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// What loading `path` gives, as text: the outcome, every diagnostic, the plan, and for an
/// accepted file the `migrate` output (after checking that it builds the same plan).
fn report(path: &Path, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    match load_with(&Disk, path, vars) {
        Ok(loaded) => {
            out.push_str(&format!("read as: {}\n", loaded.dialect.describe()));
            for d in &loaded.diagnostics {
                out.push_str(&format!("{}: {d}\n", d.severity.word()));
            }
            match Plan::from_config(loaded.config) {
                Ok(plan) => {
                    out.push_str("outcome: accepted\n--- plan ---\n");
                    out.push_str(&plan.describe());
                    let (_, migration) =
                        kubetrail_fluentbit::migration(&Disk, path, vars).expect("migration");
                    let yaml = migration.to_yaml();
                    // What migrate prints runs as the same pipeline. (The test's variables
                    // stand for the process environment: they go into the env: section.)
                    let with_vars = with_env(&yaml, vars);
                    let config = Config::parse(&with_vars, Path::new("migrated.yaml"))
                        .unwrap_or_else(|e| {
                            panic!("{}: migrate output: {e}\n{yaml}", path.display())
                        });
                    let again = Plan::from_config(config).unwrap_or_else(|e| {
                        panic!("{}: migrate output: {e}\n{yaml}", path.display())
                    });
                    assert_eq!(
                        again.describe(),
                        plan.describe(),
                        "{}: migrate output builds another plan:\n{yaml}",
                        path.display()
                    );
                    out.push_str("--- kubetrail migrate ---\n");
                    out.push_str(&yaml);
                }
                Err(e) => out.push_str(&format!("outcome: refused by kubetrail\nerror: {e}\n")),
            }
        }
        Err(LoadError::FluentBit(all)) => {
            out.push_str("outcome: refused\n");
            for d in &all {
                out.push_str(&format!("{}: {d}\n", d.severity.word()));
            }
        }
        Err(e) => out.push_str(&format!("outcome: refused\nerror: {e}\n")),
    }
    // Included files are named by the main file's real directory (as Fluent Bit resolves
    // them), so a fixture directory reached through a symbolic link shows up both ways.
    let dir = fixtures();
    let real = std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
    let mut names = [dir.display().to_string(), real.display().to_string()];
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    names
        .iter()
        .fold(out, |out, name| out.replace(name.as_str(), "$FIXTURES"))
}

/// `yaml` with `vars` added to its `env:` section (made if missing).
fn with_env(yaml: &str, vars: &BTreeMap<String, String>) -> String {
    let lines: String = vars
        .iter()
        .map(|(k, v)| format!("  {k}: '{v}'\n"))
        .collect();
    if let Some(i) = yaml.find("\nenv:\n") {
        let at = i + "\nenv:\n".len();
        format!("{}{lines}{}", &yaml[..at], &yaml[at..])
    } else {
        let i = yaml.find("\nservice:").expect("a service section") + 1;
        format!("{}env:\n{lines}{}", &yaml[..i], &yaml[i..])
    }
}

fn expected_path(rel: &Path) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fluent_bit/expected")
        .join(format!("{}.txt", rel.display()))
}

#[test]
fn every_fixture_reads_as_expected() {
    let dir = fixtures();
    let update = std::env::var_os("KUBETRAIL_UPDATE_EXPECTED").is_some();
    let mut mismatches = Vec::new();
    let mut seen = HashSet::new();
    let files = configs(&dir);
    assert!(files.len() >= 35, "{} configuration files", files.len());
    for path in files {
        let rel = path.strip_prefix(&dir).expect("below").to_path_buf();
        let got = report(&path, &variables());
        let exp = expected_path(&rel);
        seen.insert(exp.clone());
        if update {
            std::fs::create_dir_all(exp.parent().expect("parent")).expect("mkdir");
            std::fs::write(&exp, &got).expect("write expected");
            continue;
        }
        let want = std::fs::read_to_string(&exp).unwrap_or_else(|_| {
            panic!(
                "no expected outcome for {}: {}",
                rel.display(),
                exp.display()
            )
        });
        if got != want {
            mismatches.push(format!(
                "{}:\n--- expected\n{want}\n--- got\n{got}",
                rel.display()
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    // No expected outcome without its fixture.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fluent_bit/expected");
    let mut stack = vec![root];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("expected dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                assert!(seen.contains(&p), "{} has no fixture", p.display());
            }
        }
    }
}

#[test]
fn unset_variables_are_errors() {
    let path = fixtures().join("fluent-bit-it-kubernetes-events-watch-timeout.conf");
    let got = report(&path, &BTreeMap::new());
    assert!(
        got.starts_with("outcome: refused\nerror: $FIXTURES/fluent-bit-it-kubernetes-events-watch-timeout.conf:6: [SERVICE]: key 'HTTP_Port': environment variable 'FLUENT_BIT_HTTP_MONITORING_PORT' is not set\n"),
        "{got}"
    );
    let path = fixtures().join("docs-variables-env-output-name.conf");
    let got = report(&path, &BTreeMap::new());
    assert!(
        got.contains("error: $FIXTURES/docs-variables-env-output-name.conf:11: [OUTPUT]: key 'Name': environment variable 'MY_OUTPUT' is not set\n"),
        "{got}"
    );
}

/// A fixture's text with its cluster connection (URL, CA, token), its state directory and
/// its HTTP port pointed at this test's emulator and temporary directory; every other line as
/// written. Keys are matched case-insensitively, as Fluent Bit does; a connection key the
/// fixture does not write is added after its `Kube_URL` line.
fn point_at_emulator(text: &str, yaml: bool, env: &Env, http_port: u16) -> String {
    let ca_dir = env.dir.path().join("ca-dir");
    std::fs::create_dir_all(&ca_dir).expect("ca dir");
    std::fs::copy(&env.ca_file, ca_dir.join("ca.crt")).expect("copy ca");
    let state = env.dir.path().join("fluent-bit-state");
    let replacements: Vec<(&str, String)> = vec![
        ("kube_url", env.emu.url()),
        ("kube_ca_file", env.ca_file.display().to_string()),
        ("kube_ca_path", ca_dir.display().to_string()),
        ("kube_token_file", env.token_file.display().to_string()),
        ("db", state.join("events.db").display().to_string()),
        ("http_listen", "127.0.0.1".into()),
        ("http_port", http_port.to_string()),
    ];
    let mut out = Vec::new();
    let mut has_db = false;
    for line in text.lines() {
        let indent_len = line.len() - line.trim_start().len();
        let (indent, body) = line.split_at(indent_len);
        let sep = if yaml { ':' } else { ' ' };
        let key = body.split(sep).next().unwrap_or("").trim();
        let key = key.strip_prefix("- ").unwrap_or(key);
        match replacements
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
        {
            Some((k, v)) => {
                has_db |= *k == "db";
                let written = &body[..body.find(key).unwrap_or(0) + key.len()];
                if yaml {
                    out.push(format!("{indent}{written}: {v}"));
                } else {
                    out.push(format!("{indent}{written} {v}"));
                }
                if k.eq_ignore_ascii_case("kube_url") {
                    for extra in ["kube_ca_file", "kube_token_file"] {
                        if !text.to_ascii_lowercase().contains(extra) {
                            let v = &replacements.iter().find(|(k, _)| *k == extra).unwrap().1;
                            let pad = " ".repeat(indent.len());
                            out.push(if yaml {
                                format!("{pad}{extra}: {v}")
                            } else {
                                format!("{pad}{extra} {v}")
                            });
                        }
                    }
                }
            }
            None => out.push(line.to_string()),
        }
    }
    if !has_db {
        // No `DB` to take the state directory from: Fluent Bit's storage.path gives it.
        let at = out
            .iter()
            .position(|l| {
                let t = l.trim().to_ascii_lowercase();
                t == "[service]" || t == "service:"
            })
            .expect("a service section");
        let indent = out[at + 1].len() - out[at + 1].trim_start().len();
        let pad = " ".repeat(indent);
        let v = state.display();
        out.insert(
            at + 1,
            if yaml {
                format!("{pad}storage.path: {v}")
            } else {
                format!("{pad}storage.path {v}")
            },
        );
    }
    out.join("\n") + "\n"
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Records printed on stdout by run `run`.
fn stdout_records(env: &Env, run: u32) -> Vec<serde_json::Value> {
    let text =
        std::fs::read_to_string(env.dir.path().join(format!("stdout.{run}"))).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    complete
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:.200}")))
        .collect()
}

/// Runs a fixture (pointed at the emulator) through the `kubetrail` binary: Events created
/// before and while it runs, repeats bumping them, in two namespaces, Normal and Warning.
/// Returns the (uid, resourceVersion) pairs of the Events for which `wanted` holds, and the
/// records printed.
async fn run_fixture(
    name: &str,
    wanted: impl Fn(&str, &str) -> bool,
) -> (HashSet<(String, String)>, Vec<serde_json::Value>) {
    let env = Env::new().await;
    let path = fixtures().join(name);
    let text = std::fs::read_to_string(&path).expect("fixture");
    let yaml = name.ends_with(".yaml");
    let config = env.dir.path().join(path.file_name().expect("a file name"));
    std::fs::write(&config, point_at_emulator(&text, yaml, &env, free_port())).expect("write");
    let mut expected = HashSet::new();
    let create = |i: usize, expected: &mut HashSet<(String, String)>| {
        let ns = ["shop", "other"][i % 2];
        let mut spec =
            EventSpec::simple(ns, "Pod", format!("web-{i}"), "BackOff", format!("m {i}"));
        spec.type_ = ["Warning", "Normal", "Normal", "Warning"][i % 4].to_string();
        let e = env.emu.create_event(spec.clone());
        if wanted(ns, &spec.type_) {
            expected.insert((e.uid.clone(), e.resource_version.clone()));
        }
        (e, spec)
    };
    let mut made = Vec::new();
    for i in 0..40 {
        made.push(create(i, &mut expected));
    }
    let mut child = spawn_kubetrail(&config, env.dir.path(), 0);
    let first = expected.len();
    assert!(
        wait_until(Duration::from_secs(30), || stdout_records(&env, 0).len()
            >= first)
        .await,
        "{name}: listed Events printed: {} of {first}\n{}",
        stdout_records(&env, 0).len(),
        std::fs::read_to_string(env.dir.path().join("stderr.0")).unwrap_or_default()
    );
    for i in 40..60 {
        made.push(create(i, &mut expected));
    }
    // Repeats: a new resourceVersion of the same Event (count + 1).
    for (e, spec) in made.iter().take(10) {
        if let Some(b) = env.emu.bump_event(&e.namespace, &e.name)
            && wanted(&e.namespace, &spec.type_)
        {
            expected.insert((b.uid, b.resource_version));
        }
    }
    let all = expected.len();
    assert!(
        wait_until(Duration::from_secs(30), || stdout_records(&env, 0).len()
            >= all)
        .await,
        "{name}: watched Events printed: {} of {all}\n{}",
        stdout_records(&env, 0).len(),
        std::fs::read_to_string(env.dir.path().join("stderr.0")).unwrap_or_default()
    );
    // A moment for anything unwanted to show up too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&child, "TERM");
    let status = child.wait().expect("wait");
    assert!(status.success(), "{name}: {status}");
    (expected, stdout_records(&env, 0))
}

fn occurrences_of(records: &[serde_json::Value]) -> Vec<(String, String)> {
    records
        .iter()
        .filter(|r| r["kind"] == "k8s_event")
        .map(|r| {
            (
                r["uid"].as_str().unwrap_or_default().to_string(),
                r["resource_version"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

/// Every Event occurrence exactly once, read through the core/v1 API as Fluent Bit does.
fn assert_exactly(name: &str, expected: &HashSet<(String, String)>, records: &[serde_json::Value]) {
    let got = occurrences_of(records);
    let unique: HashSet<_> = got.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        got.len(),
        "{name}: a record was printed twice"
    );
    assert_eq!(&unique, expected, "{name}: not the expected Events");
    for r in records.iter().filter(|r| r["kind"] == "k8s_event") {
        assert_eq!(r["api"], "core/v1", "{name}: read through core/v1: {r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_events_documentation_example_runs_against_the_emulator() {
    for name in [
        "docs-kubernetes-events-classic.conf",
        "docs-kubernetes-events.yaml",
    ] {
        let (expected, records) = run_fixture(name, |_, _| true).await;
        assert_eq!(expected.len(), 70, "{name}");
        assert_exactly(name, &expected, &records);
        assert!(records.iter().all(|r| r["tag"] == "k8s_events"), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kubernetes_events_option_runs_against_the_emulator() {
    // Kube_Namespace shop, and a grep filter that drops Normal Events ($type Normal).
    let name = "kubetrail-written-kubernetes-events-all-options.conf";
    let (expected, records) = run_fixture(name, |ns, t| ns == "shop" && t == "Warning").await;
    assert!(expected.len() >= 15, "{}", expected.len());
    assert_exactly(name, &expected, &records);
    assert!(
        records
            .iter()
            .all(|r| r["namespace"] == "shop" && r["type"] == "Warning")
    );
}

fn kubetrail(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubetrail"))
        .args(args)
        .output()
        .expect("run kubetrail");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn migrate_and_check_on_the_command_line() {
    let dir = fixtures();
    let ok = dir.join("docs-kubernetes-events-classic.conf");
    let (code, stdout, stderr) = kubetrail(&["migrate", &ok.display().to_string()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("# kubetrail configuration translated by `kubetrail migrate`"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\n    - name: kubernetes_events\n      tag: k8s_events\n"),
        "{stdout}"
    );
    assert_eq!(
        stderr,
        format!(
            "warning: {}:2: [SERVICE]: key 'Flush': no effect: kubetrail delivers each batch as \
             soon as it is durable (outputs' batch.records and batch.bytes bound a delivery)\n",
            ok.display()
        )
    );
    let refused = dir.join("docs-out-forward-tls.conf");
    let (code, stdout, stderr) = kubetrail(&["migrate", &refused.display().to_string()]);
    assert_eq!((code, stdout.as_str()), (2, ""), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(
        lines[0].starts_with(&format!(
            "error: {}:7: [INPUT] cpu: key 'Name': Fluent Bit's 'cpu' input is not supported",
            refused.display()
        )),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "error: {}:11: [OUTPUT] forward",
            refused.display()
        )),
        "{stderr}"
    );
    assert!(lines[2].starts_with("warning: "), "{stderr}");
    let (code, _, stderr2) = kubetrail(&["check", "-c", &refused.display().to_string()]);
    assert_eq!((code, stderr2), (2, stderr));
    // kubetrail's own YAML is not migrated.
    let own = tempfile::tempdir().unwrap();
    let p = own.path().join("k.yaml");
    std::fs::write(&p, "pipeline:\n  inputs:\n    - name: kubernetes_events\n").unwrap();
    let (code, _, stderr) = kubetrail(&["migrate", &p.display().to_string()]);
    assert_eq!(code, 2);
    assert_eq!(
        stderr,
        format!("error: {} is already in kubetrail's format\n", p.display())
    );
}
