//! The command line: `check` prints the resolved pipeline, configuration errors exit with
//! status 2 and a message naming the file, the component, the key and the line.

use std::process::Command;

fn kubetrail(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kubetrail"))
        .args(args)
        .output()
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &tempfile::TempDir, text: &str) -> String {
    let p = dir.path().join("k.yaml");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

const GOOD: &str = "service:\n  data_dir: /tmp/kt-check\npipeline:\n  inputs:\n    - name: kubernetes_events\n      tag: k8s.events\n      kube_url: https://127.0.0.1:6443\n      kube_token_file: ''\n      kube_ca_file: /nonexistent/ca.crt\n  outputs:\n    - name: stdout\n      match: 'k8s.*'\n";

#[test]
fn check_prints_the_resolved_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, self_signed().0).unwrap();
    let text = GOOD.replace("/nonexistent/ca.crt", &ca.display().to_string());
    let (code, out, err) = kubetrail(&["check", "-c", &write(&dir, &text)]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("kubernetes_events.0 (kubernetes_events) tag=k8s.events"),
        "{out}"
    );
    assert!(
        out.contains("kubernetes_events.0 -> [builtin.redact_secrets] -> [stdout.0]"),
        "{out}"
    );
}

/// A certificate and its key, PEM.
fn self_signed() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

/// `check` reads what the components will read when they start: a missing or broken file is
/// reported (every one, with its component), not discovered in production.
#[test]
fn check_reads_the_files_components_need() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = kubetrail(&["check", "-c", &write(&dir, GOOD)]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("error: input kubernetes_events.0:") && err.contains("/nonexistent/ca.crt"),
        "{err}"
    );

    let (cert, key) = self_signed();
    let crt_file = dir.path().join("tls.crt");
    let key_file = dir.path().join("tls.key");
    let tokens = dir.path().join("tokens");
    std::fs::write(&crt_file, &cert).unwrap();
    std::fs::write(&key_file, &key).unwrap();
    std::fs::write(&tokens, "a-token\n").unwrap();
    let webhook = |crt: &str, tok: &str, pg_ca: &str| {
        format!(
            "service:\n  data_dir: /tmp/kt-check\npipeline:\n  inputs:\n    - name: audit_webhook\n      tls.crt_file: {crt}\n      tls.key_file: {}\n      token_file: {tok}\n  outputs:\n    - name: postgresql\n      match: '*'\n      host: db\n      user: u\n      database: d\n      tls: on\n      tls.ca_file: {pg_ca}\n",
            key_file.display()
        )
    };
    let (crt, tok) = (crt_file.display().to_string(), tokens.display().to_string());
    let (code, out, err) = kubetrail(&["check", "-c", &write(&dir, &webhook(&crt, &tok, &crt))]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("configuration OK"), "{out}");

    let (code, _, err) = kubetrail(&[
        "check",
        "-c",
        &write(
            &dir,
            &webhook("/nonexistent/tls.crt", &tok, "/nonexistent/pg-ca.crt"),
        ),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("error: input audit_webhook.0:") && err.contains("/nonexistent/tls.crt"),
        "{err}"
    );
    assert!(
        err.contains("error: output postgresql.0:") && err.contains("/nonexistent/pg-ca.crt"),
        "{err}"
    );

    let (code, _, err) = kubetrail(&[
        "check",
        "-c",
        &write(&dir, &webhook(&crt, "/nonexistent/tokens", &crt)),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent/tokens"), "{err}");
}

/// An output connects only when its first batch is due, retrying failures; a TLS file that is
/// missing is not worth retrying for ever: `run` refuses to start.
#[test]
fn run_refuses_to_start_an_output_whose_tls_files_are_missing() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "service:\n  data_dir: {}\npipeline:\n  inputs:\n    - name: audit_file\n      path: {}/*.log\n  outputs:\n    - name: postgresql\n      match: '*'\n      host: db\n      user: u\n      database: d\n      tls: on\n      tls.ca_file: /nonexistent/pg-ca.crt\n",
        dir.path().join("data").display(),
        dir.path().display()
    );
    let (code, _, err) = kubetrail(&["run", "-c", &write(&dir, &text)]);
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("output postgresql.0 cannot start") && err.contains("/nonexistent/pg-ca.crt"),
        "{err}"
    );
}

#[test]
fn unknown_key_exits_2_with_file_component_key_line_and_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let text = GOOD.replace("kube_url:", "kube_urll:");
    let path = write(&dir, &text);
    let (code, _, err) = kubetrail(&["check", "-c", &path]);
    assert_eq!(code, 2);
    assert!(err.contains(&format!("{path}:7: inputs[0] (kubernetes_events): key 'kube_urll': unknown key (did you mean 'kube_url'?)")), "{err}");
    let (code, _, err2) = kubetrail(&["run", "-c", &path]);
    assert_eq!(code, 2);
    assert_eq!(err, err2);
}

#[test]
fn bad_duration_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let text = GOOD.replace(
        "tag: k8s.events",
        "tag: k8s.events\n      kube_watch_timeout: ten minutes",
    );
    let (code, _, err) = kubetrail(&["check", "-c", &write(&dir, &text)]);
    assert_eq!(code, 2);
    assert!(
        err.contains("kube_watch_timeout") && err.contains("'ten minutes' is not a duration"),
        "{err}"
    );
}

#[test]
fn unreadable_file_exits_2() {
    let (code, _, err) = kubetrail(&["check", "-c", "/nonexistent/kubetrail.yaml"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot read configuration file /nonexistent/kubetrail.yaml"),
        "{err}"
    );
}

#[test]
fn unknown_component_suggests() {
    let dir = tempfile::tempdir().unwrap();
    let text = GOOD.replace("name: stdout", "name: stdot");
    let (code, _, err) = kubetrail(&["check", "-c", &write(&dir, &text)]);
    assert_eq!(code, 2);
    assert!(
        err.contains("unknown component 'stdot'") && err.contains("did you mean 'stdout'"),
        "{err}"
    );
}

#[test]
fn version_and_help() {
    let (code, out, _) = kubetrail(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("kubetrail "), "{out}");
    let (code, out, _) = kubetrail(&["--help"]);
    assert_eq!(code, 0);
    for cmd in ["run", "check", "demo"] {
        assert!(out.contains(cmd), "{out}");
    }
}
