//! `kubetrail demo` stores what it captures: after a short demo, `kubetrail who` and
//! `kubetrail activity` answer from its activity store, with the actors its audit log names
//! (what the README shows).

use std::process::Command;

use serde_json::Value;

fn kubetrail(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kubetrail"))
        .args(args)
        .output()
        .expect("run kubetrail");
    assert!(
        out.status.success(),
        "kubetrail {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn the_demos_store_answers_who_did_what() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let data = data.to_str().unwrap();
    kubetrail(&[
        "demo",
        "--duration",
        "12s",
        "--data-dir",
        data,
        "--log-level",
        "warn",
    ]);
    let store = format!("{data}/activity.db");
    let story: Value = serde_json::from_str(&kubetrail(&[
        "who",
        "deploy/checkout",
        "-n",
        "prod",
        "-o",
        "json",
        "--store",
        &store,
    ]))
    .unwrap();
    let changes = story["changes"].as_array().unwrap();
    let created = changes
        .iter()
        .find(|c| c["what"] == "created")
        .expect("created");
    assert_eq!(created["actor"]["user"], "alice");
    let scaled = changes
        .iter()
        .find(|c| c["what"] == "scaled")
        .expect("scaled");
    assert_eq!(scaled["actor"]["user"], "bob");
    // What it made, and why: every pod's creation leads back to a person.
    let sets = story["children"].as_array().unwrap();
    assert!(!sets.is_empty());
    let pod = sets[0]["children"][0]["object"]["name"]
        .as_str()
        .expect("a pod");
    let p: Value = serde_json::from_str(&kubetrail(&[
        "who",
        &format!("pod/{pod}"),
        "-n",
        "prod",
        "-o",
        "json",
        "--store",
        &store,
    ]))
    .unwrap();
    let c = p["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["what"] == "created")
        .unwrap();
    assert_eq!(
        c["actor"]["user"],
        "system:serviceaccount:kube-system:replicaset-controller"
    );
    let root = c["causes"].as_array().unwrap().last().expect("causes");
    assert!(
        ["alice", "bob"].contains(&root["actor"]["user"].as_str().unwrap()),
        "{root}"
    );
    // The text form for people.
    let text = kubetrail(&["who", "deploy/checkout", "-n", "prod", "--store", &store]);
    assert!(
        text.contains("created (replicas 3; image registry.example/checkout:")
            && text.contains("by alice (kubectl/v1.28.7, 10.0.0.7)"),
        "{text}"
    );
    // carol's drain: the cordon and her evictions. The node is node-1 unless no pod ran
    // there when the drain came (the emulator then drains the first node that has one).
    let carol = kubetrail(&["activity", "--user", "carol", "--store", &store]);
    assert!(
        carol.contains("carol patch nodes/node-") && carol.contains("/eviction in prod → 201"),
        "{carol}"
    );
}
