//! End-to-end tests of the `kubernetes_events` input against the emulator: list + watch into
//! the `file` output, exactly once across kill -9, compaction with one gap record, token
//! rotation, malformed frames, TLS errors and a clean shutdown.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use kubetrail_emulator::{EventSpec, Faults};

fn spec(ns: &str, i: usize) -> EventSpec {
    let kinds = ["Pod", "Deployment", "ReplicaSet", "Node"];
    let reasons = [
        "BackOff",
        "Pulling",
        "FailedScheduling",
        "ScalingReplicaSet",
    ];
    EventSpec::simple(
        ns,
        kinds[i % 4],
        format!("obj-{i}"),
        reasons[i % 4],
        format!("message {i}"),
    )
}

/// Runs the pipeline in-process until `stop` is notified.
fn run_in_process(
    yaml: String,
    path: std::path::PathBuf,
) -> (
    tokio::task::JoinHandle<Result<(), kubetrail::topology::RunError>>,
    tokio::sync::oneshot::Sender<()>,
    std::sync::Arc<kubetrail::telemetry::Metrics>,
) {
    let config = kubetrail_core::config::Config::parse(&yaml, &path).expect("config parses");
    let plan = kubetrail::topology::Plan::from_config(config).expect("plan builds");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let metrics = kubetrail::telemetry::Metrics::new();
    let m = metrics.clone();
    let h = tokio::spawn(async move {
        plan.run_with(
            async move {
                let _ = rx.await;
            },
            m,
        )
        .await
    });
    (h, tx, metrics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_in_pages_then_watches_every_occurrence_once() {
    let env = Env::new().await;
    let mut expected = HashSet::new();
    for i in 0..1234 {
        let e = env.emu.create_event(spec(["a", "b", "c"][i % 3], i));
        expected.insert((e.uid, e.resource_version));
    }
    let yaml = env.config("      kube_request_limit: 100");
    let (h, stop, metrics) = run_in_process(yaml, env.dir.path().join("c.yaml"));
    assert!(
        wait_until(Duration::from_secs(30), || env.records().len() >= 1234).await,
        "list delivered"
    );
    // Watch: new events and repeats (MODIFIED with new resourceVersions).
    for i in 0..300 {
        let e = env.emu.create_event(spec("a", 10_000 + i));
        expected.insert((e.uid, e.resource_version));
        if let Some(b) = env.emu.bump_event(&e.namespace, &e.name) {
            expected.insert((b.uid, b.resource_version));
        }
    }
    assert!(
        wait_until(Duration::from_secs(30), || env.records().len()
            >= expected.len())
        .await,
        "watch delivered: {} of {}",
        env.records().len(),
        expected.len()
    );
    let _ = stop.send(());
    h.await.unwrap().unwrap();
    let occ = occurrences(&env.records());
    let seen: HashSet<_> = occ.keys().cloned().collect();
    assert_eq!(seen, expected);
    assert!(occ.values().all(|n| *n == 1), "a record was written twice");
    // Paging happened: 1234 events at 100 per page is at least 13 list requests.
    assert!(
        env.emu.stats().lists >= 13,
        "lists: {}",
        env.emu.stats().lists
    );
    assert_eq!(
        metrics.value(
            "kubetrail_component_records_out_total",
            &[("component", "file.0")]
        ),
        Some(expected.len() as i64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_during_downtime_gives_one_gap_and_no_duplicates() {
    let env = Env::new().await;
    let mut current = std::collections::HashMap::new();
    for i in 0..50 {
        let e = env.emu.create_event(spec("a", i));
        current.insert(e.uid.clone(), e.clone());
    }
    let yaml = env.config("");
    let path = env.dir.path().join("c.yaml");
    let (h, stop, _) = run_in_process(yaml.clone(), path.clone());
    assert!(wait_until(Duration::from_secs(20), || env.records().len() >= 50).await);
    let _ = stop.send(());
    h.await.unwrap().unwrap();

    // Downtime: some events repeat, new ones appear, then etcd is compacted.
    for i in 0..20 {
        let e = current[&current.keys().nth(i).unwrap().clone()].clone();
        let b = env.emu.bump_event(&e.namespace, &e.name).unwrap();
        current.insert(b.uid.clone(), b);
    }
    for i in 50..70 {
        let e = env.emu.create_event(spec("b", i));
        current.insert(e.uid.clone(), e);
    }
    env.emu.compact();

    let (h, stop, metrics) = run_in_process(yaml, path);
    let want = 50 + 20 + 20 + 1; // first run, repeats, new ones, one gap
    assert!(
        wait_until(Duration::from_secs(30), || env.records().len() >= want).await,
        "{}",
        env.records().len()
    );
    // Let it settle: no duplicates arrive later either.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = stop.send(());
    h.await.unwrap().unwrap();
    let records = env.records();
    let gaps: Vec<_> = records.iter().filter(|r| r["kind"] == "gap").collect();
    assert_eq!(gaps.len(), 1, "exactly one gap record: {gaps:?}");
    let occ = occurrences(&records);
    assert!(occ.values().all(|n| *n == 1), "duplicates after relist");
    for e in current.values() {
        assert!(
            occ.contains_key(&(e.uid.clone(), e.resource_version.clone())),
            "missing {e:?}"
        );
    }
    assert_eq!(records.len(), want);
    assert!(
        metrics
            .value(
                "kubetrail_events_relists_total",
                &[("component", "kubernetes_events.0")]
            )
            .unwrap_or(0)
            >= 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_rotated_and_old_one_revoked_mid_watch_loses_nothing() {
    let env = Env::new().await;
    let yaml = env.config("      kube_token_ttl: 1h");
    let (h, stop, _) = run_in_process(yaml, env.dir.path().join("c.yaml"));
    let mut expected = HashSet::new();
    for i in 0..20 {
        let e = env.emu.create_event(spec("a", i));
        expected.insert((e.uid, e.resource_version));
    }
    assert!(wait_until(Duration::from_secs(20), || env.records().len() >= 20).await);
    // Rotate: the new token is written, the old one revoked (which cuts the open watch).
    env.emu.add_token("test-token-2", "kubetrail");
    std::fs::write(&env.token_file, "test-token-2\n").unwrap();
    env.emu.revoke_token(TOKEN);
    for i in 20..60 {
        let e = env.emu.create_event(spec("a", i));
        expected.insert((e.uid, e.resource_version));
    }
    assert!(
        wait_until(Duration::from_secs(30), || env.records().len() >= 60).await,
        "{} of 60 after rotation",
        env.records().len()
    );
    let _ = stop.send(());
    h.await.unwrap().unwrap();
    let occ = occurrences(&env.records());
    assert_eq!(occ.keys().cloned().collect::<HashSet<_>>(), expected);
    assert!(occ.values().all(|n| *n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_and_cut_streams_are_counted_and_collection_continues() {
    let env = Env::new().await;
    let yaml = env.config("");
    let (h, stop, metrics) = run_in_process(yaml, env.dir.path().join("c.yaml"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    env.emu.set_faults(Faults {
        garbage_frames: true,
        cut_watch_after_frames: Some(7),
        ..Default::default()
    });
    // Faults apply to new streams: cut the current watch so the next one has them.
    env.emu.cut_watches();
    let mut expected = HashSet::new();
    for i in 0..100 {
        let e = env.emu.create_event(spec("a", i));
        expected.insert((e.uid, e.resource_version));
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(
        wait_until(Duration::from_secs(40), || env.records().len() >= 100).await,
        "{} of 100 with faults",
        env.records().len()
    );
    env.emu.set_faults(Faults::default());
    let _ = stop.send(());
    h.await.unwrap().unwrap();
    let occ = occurrences(&env.records());
    assert_eq!(occ.keys().cloned().collect::<HashSet<_>>(), expected);
    assert!(occ.values().all(|n| *n == 1));
    let errors = metrics
        .value(
            "kubetrail_component_errors_total",
            &[("component", "kubernetes_events.0")],
        )
        .unwrap_or(0);
    assert!(errors > 0, "malformed frames were counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_keeps_every_occurrence_exactly_once() {
    let env = Env::new().await;
    let config = env.write_config(&env.config("      kube_request_limit: 250"));
    // Some history before the first start, so the first runs are killed mid-list too.
    let mut expected = HashSet::new();
    for i in 0..1500 {
        let e = env.emu.create_event(spec(["a", "b"][i % 2], i));
        expected.insert((e.uid, e.resource_version));
    }
    // A writer: new Events and repeats of old ones, 10,000 occurrences in all. It starts once
    // kubetrail has committed the first page of its first list: versions superseded before
    // any list was taken cannot be seen by anyone (a list shows the latest version only).
    let emu = env.emu.clone();
    let out = env.out_dir.join("events.jsonl");
    let writer = tokio::spawn(async move {
        while std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut made = Vec::new();
        let mut refs = Vec::new();
        let mut i = 100_000;
        while made.len() < 8500 {
            for _ in 0..25 {
                let e = if refs.is_empty() || fastrand::u8(..) < 120 {
                    i += 1;
                    let e = emu.create_event(spec(["a", "b", "c"][i % 3], i));
                    refs.push((e.namespace.clone(), e.name.clone()));
                    e
                } else {
                    let (ns, name) = refs[fastrand::usize(..refs.len())].clone();
                    emu.bump_event(&ns, &name).expect("bump")
                };
                made.push((e.uid, e.resource_version));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        made
    });
    let mut run = 0;
    for _ in 0..20 {
        let child = spawn_kubetrail(&config, env.dir.path(), run);
        run += 1;
        tokio::time::sleep(Duration::from_millis(150 + fastrand::u64(..600))).await;
        let mut child = child;
        signal(&child, "KILL");
        let _ = child.wait();
    }
    let made = writer.await.unwrap();
    expected.extend(made);
    assert!(expected.len() >= 10_000);
    // A last, clean run collects the rest.
    let mut child = spawn_kubetrail(&config, env.dir.path(), run);
    let complete = wait_until(Duration::from_secs(120), || {
        env.records().len() >= expected.len()
    })
    .await;
    signal(&child, "TERM");
    let status = child.wait().unwrap();
    let occ = occurrences(&env.records());
    let dups: Vec<_> = occ.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        dups.is_empty(),
        "{} duplicated, e.g. {:?}",
        dups.len(),
        dups.first()
    );
    let seen: HashSet<_> = occ.keys().cloned().collect();
    let missing: Vec<_> = expected.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "{} missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(seen.len(), expected.len());
    assert!(complete);
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_is_a_clear_error_naming_url_and_ca_file() {
    let env = Env::new().await;
    let wrong = env.dir.path().join("wrong-ca.crt");
    std::fs::write(
        &wrong,
        kubetrail_emulator::Emulator::generate_unrelated_ca_pem(),
    )
    .unwrap();
    let yaml = env.config("").replace(
        &env.ca_file.display().to_string(),
        &wrong.display().to_string(),
    );
    let config = env.write_config(&yaml);
    let mut child = spawn_kubetrail(&config, env.dir.path(), 0);
    let stderr_path = env.dir.path().join("stderr.0");
    let url = env.emu.url();
    let found = wait_until(Duration::from_secs(15), || {
        let s = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        s.contains(&url) && s.contains(&wrong.display().to_string())
    })
    .await;
    signal(&child, "TERM");
    let status = child.wait().unwrap();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(found, "stderr names the URL and the CA file:\n{stderr}");
    assert!(
        stderr.to_lowercase().contains("certificate") || stderr.contains("UnknownIssuer"),
        "{stderr}"
    );
    assert!(status.success());
    assert!(env.records().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_and_a_second_process_is_refused() {
    let env = Env::new().await;
    for i in 0..10 {
        env.emu.create_event(spec("a", i));
    }
    let config = env.write_config(&env.config(""));
    let mut first = spawn_kubetrail(&config, env.dir.path(), 0);
    assert!(wait_until(Duration::from_secs(20), || env.records().len() >= 10).await);
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_kubetrail"))
        .args(["run", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!second.status.success());
    let msg = String::from_utf8_lossy(&second.stderr);
    assert!(msg.contains("in use by another kubetrail process"), "{msg}");
    let t = std::time::Instant::now();
    signal(&first, "TERM");
    let status = first.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(t.elapsed() < Duration::from_secs(10));
}
