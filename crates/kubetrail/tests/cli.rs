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
    let (code, out, err) = kubetrail(&["check", "-c", &write(&dir, GOOD)]);
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
