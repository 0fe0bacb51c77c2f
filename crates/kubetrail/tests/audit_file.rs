//! End-to-end tests of the `audit_file` input, in process, with the real pipeline (state
//! database, durable queue, `file` output): the recorded audit log lines (read from
//! `KUBETRAIL_FIXTURES`) through a rename rotation in the middle of a line, gzip of the
//! rotated file (also while stopped), copytruncate, a 5 MiB line and a line over the limit,
//! and a small output queue. Every event must come out exactly once.

mod common;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{read_records, wait_until};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(std::env::var("KUBETRAIL_FIXTURES").expect(
        "KUBETRAIL_FIXTURES must point at the shared fixtures directory (e.g. ../shared/fixtures)",
    ))
}

/// The 500 recorded audit log lines (without newlines).
fn fixture_lines() -> Vec<String> {
    let mut out = Vec::new();
    for f in [
        "audit/kube-apiserver-1.28/audit-sample-200.jsonl",
        "kube-api/audit-log-excerpt-300.jsonl",
    ] {
        let text =
            std::fs::read_to_string(fixtures().join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        out.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string),
        );
    }
    assert_eq!(out.len(), 500);
    out
}

/// `auditID/stage` of a line: the record id.
fn key(line: &str) -> String {
    let v: Value = serde_json::from_str(line).unwrap();
    format!(
        "{}/{}",
        v["auditID"].as_str().unwrap(),
        v["stage"].as_str().unwrap()
    )
}

fn keys(lines: &[String]) -> Vec<String> {
    lines.iter().map(|l| key(l)).collect()
}

fn joined(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn append(path: &Path, text: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn gzip_and_remove(plain: &Path) {
    let data = std::fs::read(plain).unwrap();
    let gz = PathBuf::from(format!("{}.gz", plain.display()));
    let mut enc =
        flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::default());
    enc.write_all(&data).unwrap();
    enc.finish().unwrap();
    std::fs::remove_file(plain).unwrap();
}

struct Setup {
    dir: tempfile::TempDir,
    logs: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        Setup { dir, logs }
    }

    fn log(&self) -> PathBuf {
        self.logs.join("audit.log")
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out").join("audit.jsonl")
    }

    /// The configuration; `input_extra` and `output_extra` lines are indented by 6 spaces.
    fn config(&self, input_extra: &str, output_extra: &str) -> String {
        format!(
            r#"service:
  data_dir: {data}
  log_level: info
  grace: 5s
pipeline:
  inputs:
    - name: audit_file
      tag: k8s.audit
      path: {logs}/audit*.log*
      refresh_interval: 100ms
      poll_interval: 50ms
      rotate_wait: 300ms
{input_extra}
  outputs:
    - name: file
      match: '*'
      path: {out}
      file: audit.jsonl
{output_extra}
"#,
            data = self.dir.path().join("data").display(),
            logs = self.logs.display(),
            out = self.dir.path().join("out").display(),
        )
    }

    fn records(&self) -> Vec<Value> {
        read_records(&self.out())
    }

    /// How many times each audit record id came out.
    fn audit_counts(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for r in self.records().iter().filter(|r| r["kind"] == "k8s_audit") {
            *m.entry(r["id"].as_str().unwrap().to_string()).or_default() += 1;
        }
        m
    }

    /// Waits until every key came out, then checks each came out exactly once and nothing else.
    async fn expect_exactly(&self, expected: &[String]) {
        let n = expected.len();
        let complete = wait_until(Duration::from_secs(60), || self.audit_counts().len() >= n).await;
        // Give a late duplicate the chance to show.
        tokio::time::sleep(Duration::from_millis(800)).await;
        let counts = self.audit_counts();
        let dups: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
        assert!(dups.is_empty(), "duplicated: {dups:?}");
        let missing: Vec<_> = expected
            .iter()
            .filter(|k| !counts.contains_key(*k))
            .collect();
        assert!(
            missing.is_empty(),
            "{} missing, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        assert_eq!(counts.len(), n, "unexpected records");
        assert!(complete);
    }
}

struct Running {
    handle: tokio::task::JoinHandle<Result<(), kubetrail::topology::RunError>>,
    stop: tokio::sync::oneshot::Sender<()>,
    metrics: Arc<kubetrail::telemetry::Metrics>,
}

/// The plan of a configuration.
fn plan(yaml: &str, path: &Path) -> kubetrail::topology::Plan {
    let config = kubetrail_core::config::Config::parse(yaml, path).expect("config parses");
    kubetrail::topology::Plan::from_config(config).expect("plan builds")
}

fn start(setup: &Setup, yaml: String) -> Running {
    let plan = plan(&yaml, &setup.dir.path().join("kubetrail.yaml"));
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let metrics = kubetrail::telemetry::Metrics::new();
    let m = metrics.clone();
    let handle = tokio::spawn(async move {
        plan.run_with(
            async move {
                let _ = rx.await;
            },
            m,
        )
        .await
    });
    Running {
        handle,
        stop,
        metrics,
    }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.handle.await.unwrap().expect("clean stop");
    }

    fn errors(&self) -> i64 {
        self.metrics
            .value(
                "kubetrail_component_errors_total",
                &[("component", "audit_file.0")],
            )
            .unwrap_or(-1)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fixture_events_come_out_once_each_in_order_with_their_bytes() {
    let setup = Setup::new();
    let lines = fixture_lines();
    append(&setup.log(), &joined(&lines));
    let run = start(&setup, setup.config("", ""));
    setup.expect_exactly(&keys(&lines)).await;
    // In file order, and each record's object is the line as written.
    let records: Vec<Value> = setup
        .records()
        .into_iter()
        .filter(|r| r["kind"] == "k8s_audit")
        .collect();
    for (r, line) in records.iter().zip(&lines) {
        assert_eq!(r["id"], key(line));
        assert_eq!(r["object"], serde_json::from_str::<Value>(line).unwrap());
        assert_eq!(r["source"], "audit_file.0");
        assert_eq!(r["tag"], "k8s.audit");
    }
    assert_eq!(run.errors(), 0);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_rotation_in_the_middle_of_a_line() {
    let setup = Setup::new();
    let lines = fixture_lines();
    let log = setup.log();
    let half = lines[100].len() / 2;
    append(&log, &(joined(&lines[..100]) + &lines[100][..half]));
    let run = start(&setup, setup.config("", ""));
    setup.expect_exactly(&keys(&lines[..100])).await;

    // As the apiserver does it: the file is renamed while its writer still holds it; the
    // rest of the line goes into the renamed file; then a new audit.log.
    let mut writer = OpenOptions::new().append(true).open(&log).unwrap();
    std::fs::rename(&log, setup.logs.join("audit-2026-11-27T00-31-00.000.log")).unwrap();
    writer
        .write_all(format!("{}\n{}", &lines[100][half..], joined(&lines[101..200])).as_bytes())
        .unwrap();
    drop(writer);
    append(&log, &joined(&lines[200..]));
    setup.expect_exactly(&keys(&lines)).await;
    let whole = setup
        .records()
        .into_iter()
        .find(|r| r["id"] == key(&lines[100]))
        .unwrap();
    assert_eq!(
        whole["object"],
        serde_json::from_str::<Value>(&lines[100]).unwrap()
    );
    assert_eq!(run.errors(), 0);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_of_the_rotated_file_while_running_and_while_stopped() {
    let setup = Setup::new();
    let lines = fixture_lines();
    let log = setup.log();
    append(&log, &joined(&lines[..100]));
    let run = start(&setup, setup.config("", ""));
    setup.expect_exactly(&keys(&lines[..100])).await;

    // Running: more lines, rotation, a new file, and the backup gzipped (plain one removed).
    append(&log, &joined(&lines[100..200]));
    let b1 = setup.logs.join("audit-2026-11-27T00-31-00.000.log");
    std::fs::rename(&log, &b1).unwrap();
    append(&log, &joined(&lines[200..300]));
    gzip_and_remove(&b1);
    setup.expect_exactly(&keys(&lines[..300])).await;
    run.stop().await;

    // Stopped: the active file gets more lines (the last without newline: a crashed writer),
    // is rotated and gzipped, and a new file starts. The backup is read on from its offset
    // in the uncompressed stream.
    append(&log, &(joined(&lines[300..399]) + &lines[399]));
    let b2 = setup.logs.join("audit-2026-11-27T00-32-00.000.log");
    std::fs::rename(&log, &b2).unwrap();
    gzip_and_remove(&b2);
    append(&log, &joined(&lines[400..]));
    let run = start(&setup, setup.config("", ""));
    setup.expect_exactly(&keys(&lines)).await;
    assert_eq!(run.errors(), 0);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copytruncate_loses_nothing_the_copy_still_has() {
    let setup = Setup::new();
    let lines = fixture_lines();
    let log = setup.log();
    append(&log, &joined(&lines[..100]));
    let run = start(&setup, setup.config("", ""));
    setup.expect_exactly(&keys(&lines[..100])).await;

    // logrotate's copytruncate, with lines written just before the copy: at once, so the
    // tailer cannot have read them from audit.log before it was cut.
    append(&log, &joined(&lines[100..150]));
    std::fs::copy(&log, setup.logs.join("audit.log.1")).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, &joined(&lines[150..300]));
    setup.expect_exactly(&keys(&lines[..300])).await;
    append(&log, &joined(&lines[300..]));
    setup.expect_exactly(&keys(&lines)).await;
    assert_eq!(run.errors(), 0);
    run.stop().await;
}

/// A realistic audit event whose request body is `pad` bytes of padding.
fn big_event(id: &str, pad: usize) -> String {
    format!(
        concat!(
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"RequestResponse","auditID":"{}","#,
            r#""stage":"ResponseComplete","requestURI":"/api/v1/namespaces/default/configmaps","verb":"create","#,
            r#""user":{{"username":"admin","groups":["system:masters"]}},"sourceIPs":["127.0.0.1"],"#,
            r#""objectRef":{{"resource":"configmaps","namespace":"default","name":"big","apiVersion":"v1"}},"#,
            r#""responseStatus":{{"metadata":{{}},"code":201}},"requestObject":{{"data":{{"blob":"{}"}}}},"#,
            r#""requestReceivedTimestamp":"2026-11-27T00:30:31.000000Z","stageTimestamp":"2026-11-27T00:30:31.500000Z"}}"#
        ),
        id,
        "b".repeat(pad)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5_mib_line_is_kept_and_a_line_over_the_limit_is_an_error_record() {
    let setup = Setup::new();
    let lines = fixture_lines();
    let big = big_event("big-5mib", 5 << 20);
    let too_big = big_event("too-big", 7 << 20);
    let log = setup.log();
    let before = joined(&lines[..10]) + &big + "\n";
    append(
        &log,
        &(before.clone() + &too_big + "\n" + &joined(&lines[10..20])),
    );
    let run = start(&setup, setup.config("      buffer_max_size: 6M", ""));
    let mut expected = keys(&lines[..20]);
    expected.push("big-5mib/ResponseComplete".into());
    setup.expect_exactly(&expected).await;

    let records = setup.records();
    let big_record = records
        .iter()
        .find(|r| r["id"] == "big-5mib/ResponseComplete")
        .unwrap();
    assert_eq!(
        big_record["object"]["requestObject"]["data"]["blob"]
            .as_str()
            .unwrap()
            .len(),
        5 << 20
    );
    let errors: Vec<&Value> = records.iter().filter(|r| r["kind"] == "error").collect();
    assert_eq!(
        errors.len(),
        1,
        "{:?}",
        errors.iter().map(|e| &e["error"]).collect::<Vec<_>>()
    );
    assert_eq!(errors[0]["file"], log.to_string_lossy().as_ref());
    assert_eq!(errors[0]["offset"], before.len() as u64);
    assert!(
        errors[0]["error"]
            .as_str()
            .unwrap()
            .contains("buffer_max_size")
    );
    assert_eq!(run.errors(), 1);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_output_queue_slows_reading_and_loses_nothing() {
    let setup = Setup::new();
    let lines = fixture_lines();
    for round in 0..4 {
        append(
            &setup.log(),
            &joined(&lines[round * 125..(round + 1) * 125]),
        );
    }
    let run = start(
        &setup,
        setup.config(
            "      batch.records: 20",
            "      storage.total_limit_size: 32k\n      batch.records: 7",
        ),
    );
    setup.expect_exactly(&keys(&lines)).await;
    run.stop().await;
}

/// Bytes of the queue segment files under `data_dir` (`kubetrail.db-queues/q*/*.seg`): the
/// current segment is kept once its records are delivered, so it still holds what was written.
fn segment_bytes(data: &Path) -> u64 {
    let mut total = 0;
    for q in std::fs::read_dir(data.join("kubetrail.db-queues")).unwrap() {
        let q = q.unwrap().path();
        if !q.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&q).unwrap() {
            let f = f.unwrap().path();
            if f.extension().is_some_and(|e| e == "seg") {
                total += f.metadata().unwrap().len();
            }
        }
    }
    total
}

/// `queue_compress: off` (service): the queue's blocks are written as they are, and the
/// records come out the same. The segment holds every record's bytes, where the default
/// compresses them to a fraction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_compress_off_stores_the_queue_as_it_is() {
    let lines = fixture_lines();
    let raw: u64 = lines.iter().map(|l| l.len() as u64).sum();
    let mut sizes = Vec::new();
    for compress in ["off", "lz4"] {
        let setup = Setup::new();
        append(&setup.log(), &joined(&lines));
        let yaml = setup.config("", "").replacen(
            "  grace: 5s\n",
            &format!("  grace: 5s\n  queue_compress: {compress}\n"),
            1,
        );
        let p = plan(&yaml, &setup.dir.path().join("kubetrail.yaml"));
        assert_eq!(p.service.queue_compress, compress == "lz4");
        let run = start(&setup, yaml);
        setup.expect_exactly(&keys(&lines)).await;
        assert_eq!(run.errors(), 0);
        run.stop().await;
        sizes.push(segment_bytes(&setup.dir.path().join("data")));
    }
    assert!(
        sizes[0] > raw,
        "stored: {} bytes of segments for {raw} of lines",
        sizes[0]
    );
    assert!(
        sizes[1] < raw / 4,
        "compressed: {} bytes of segments for {raw} of lines",
        sizes[1]
    );
}
