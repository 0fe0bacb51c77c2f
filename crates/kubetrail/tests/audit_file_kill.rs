//! The `audit_file` input under `kill -9`: a writer thread writes an audit log the way the
//! apiserver does (bursts of lines, some written in two parts, rotation by rename, sometimes
//! in the middle of a line, and gzip of every other backup) while the `kubetrail` binary is
//! killed with SIGKILL at random moments 20 times and started again. After a last clean run,
//! every event is in each of three `file` outputs exactly once, and nothing else is: one
//! plain, one `compress: zstd` rotating every few batches, one `compress: gzip` (members
//! written but not acknowledged, or cut short by the kill, past the committed length must
//! be cut at the next start).

mod common;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{read_records, signal, spawn_kubetrail, wait_until};

/// A realistic audit line; `n` makes its `auditID` unique.
fn event(n: usize) -> String {
    let stage = ["RequestReceived", "ResponseComplete"][n % 2];
    format!(
        concat!(
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"RequestResponse","auditID":"kill-{:08}","#,
            r#""stage":"{}","requestURI":"/api/v1/namespaces/ns-{}/configmaps/cm-{}","verb":"update","#,
            r#""user":{{"username":"system:serviceaccount:kube-system:replicaset-controller","groups":["system:serviceaccounts","system:authenticated"]}},"#,
            r#""sourceIPs":["10.0.0.{}"],"userAgent":"kube-controller-manager/v1.28.7","#,
            r#""objectRef":{{"resource":"configmaps","namespace":"ns-{}","name":"cm-{}","apiVersion":"v1"}},"#,
            r#""responseStatus":{{"metadata":{{}},"code":200}},"requestObject":{{"data":{{"k":"{}"}}}},"#,
            r#""requestReceivedTimestamp":"2026-11-27T00:30:31.000000Z","stageTimestamp":"2026-11-27T00:30:31.002000Z"}}"#
        ),
        n / 2,
        stage,
        n % 7,
        n,
        n % 250,
        n % 7,
        n,
        "v".repeat(n * 37 % 600)
    )
}

fn key(n: usize) -> String {
    format!(
        "kill-{:08}/{}",
        n / 2,
        ["RequestReceived", "ResponseComplete"][n % 2]
    )
}

fn open_log(logs: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(logs.join("audit.log"))
        .unwrap()
}

fn gzip_and_remove(plain: &Path) {
    let data = std::fs::read(plain).unwrap();
    let gz = PathBuf::from(format!("{}.gz", plain.display()));
    let mut enc =
        flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::fast());
    enc.write_all(&data).unwrap();
    enc.finish().unwrap();
    std::fs::remove_file(plain).unwrap();
}

/// Writes lines until `stop` (and at least `min` lines); returns how many.
fn write_log(logs: PathBuf, stop: Arc<AtomicBool>, min: usize) -> usize {
    let mut file = open_log(&logs);
    let mut n = 0;
    let mut in_file = 0;
    let mut rotations = 0u32;
    let mut rotate = |file: &mut File, rest: Option<&str>, in_file: &mut usize| {
        rotations += 1;
        let backup = logs.join(format!(
            "audit-2026-11-27T00-{:02}-{:02}.{:03}.log",
            rotations / 60,
            rotations % 60,
            rotations
        ));
        std::fs::rename(logs.join("audit.log"), &backup).unwrap();
        // The writer finishes its line into the renamed file, then opens a new one.
        if let Some(rest) = rest {
            file.write_all(rest.as_bytes()).unwrap();
        }
        *file = open_log(&logs);
        *in_file = 0;
        if rotations.is_multiple_of(2) {
            gzip_and_remove(&backup);
        }
    };
    while !stop.load(Ordering::Relaxed) || n < min {
        for _ in 0..fastrand::usize(1..40) {
            let line = event(n) + "\n";
            n += 1;
            in_file += 1;
            if fastrand::u8(..) < 16 {
                // Written in two parts, sometimes with a rotation in between.
                let cut = fastrand::usize(1..line.len() - 1);
                file.write_all(&line.as_bytes()[..cut]).unwrap();
                std::thread::sleep(Duration::from_millis(fastrand::u64(1..4)));
                if in_file > 300 && fastrand::u8(..) < 40 {
                    rotate(&mut file, Some(&line[cut..]), &mut in_file);
                } else {
                    file.write_all(&line.as_bytes()[cut..]).unwrap();
                }
            } else {
                file.write_all(line.as_bytes()).unwrap();
            }
        }
        if in_file > 1200 {
            rotate(&mut file, None, &mut in_file);
        }
        std::thread::sleep(Duration::from_millis(fastrand::u64(4..12)));
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_while_the_log_is_written_and_rotated() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let out = dir.path().join("out");
    let config = dir.path().join("kubetrail.yaml");
    std::fs::write(
        &config,
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
      rotate_wait: 500ms
  outputs:
    - name: file
      match: '*'
      path: {out}
      file: audit.jsonl
    - name: file
      match: '*'
      path: {out}
      file: audit-z.jsonl
      compress: zstd
      max_size: 48k
      max_files: 10000
    - name: file
      match: '*'
      path: {out}
      file: audit-g.jsonl
      compress: gzip
"#,
            data = dir.path().join("data").display(),
            logs = logs.display(),
            out = out.display(),
        ),
    )
    .unwrap();

    // The binary must know the input (a clear failure rather than 20 silent exits).
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_kubetrail"))
        .arg("check")
        .arg("-c")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "kubetrail check refuses the configuration: {}",
        String::from_utf8_lossy(&check.stderr)
    );

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (logs, stop) = (logs.clone(), stop.clone());
        std::thread::spawn(move || write_log(logs, stop, 10_000))
    };
    let mut run = 0;
    for _ in 0..20 {
        let mut child = spawn_kubetrail(&config, dir.path(), run);
        run += 1;
        tokio::time::sleep(Duration::from_millis(200 + fastrand::u64(..700))).await;
        signal(&child, "KILL");
        let _ = child.wait();
    }
    stop.store(true, Ordering::Relaxed);
    let written = tokio::task::spawn_blocking(move || writer.join().unwrap())
        .await
        .unwrap();
    assert!(written >= 10_000);

    // A last, clean run collects the rest.
    let mut child = spawn_kubetrail(&config, dir.path(), run);
    let output = out.join("audit.jsonl");
    let complete = wait_until(Duration::from_secs(240), || {
        counts(read_records(&output)).0.len() >= written
            && [Codec::Zstd, Codec::Gzip]
                .iter()
                .all(|c| counts(read_compressed(&out, *c, false)).0.len() >= written)
    })
    .await;
    // Let a late duplicate show before judging.
    tokio::time::sleep(Duration::from_secs(1)).await;
    signal(&child, "TERM");
    let status = child.wait().unwrap();
    exactly_once(counts(read_records(&output)), written, "plain");
    for codec in [Codec::Zstd, Codec::Gzip] {
        exactly_once(
            counts(read_compressed(&out, codec, true)),
            written,
            &format!("{codec:?}"),
        );
    }
    let rotated = std::fs::read_dir(&out)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy().to_string();
            name.starts_with("audit-z.jsonl.") && name != "audit-z.jsonl.zst"
        })
        .count();
    assert!(rotated >= 2, "the zstd output rotated {rotated} times");
    assert!(complete);
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");
}

/// Audit records by id, and how many other records there are.
fn counts(records: Vec<serde_json::Value>) -> (HashMap<String, usize>, usize) {
    let mut m: HashMap<String, usize> = HashMap::new();
    let mut other = 0;
    for r in records {
        if r["kind"] == "k8s_audit" {
            *m.entry(r["id"].as_str().unwrap_or_default().to_string())
                .or_default() += 1;
        } else {
            other += 1;
        }
    }
    (m, other)
}

/// Every event written exactly once, and nothing else.
fn exactly_once((seen, other): (HashMap<String, usize>, usize), written: usize, output: &str) {
    let dups: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        dups.is_empty(),
        "{output}: {} duplicated, e.g. {:?}",
        dups.len(),
        dups.first()
    );
    let missing: Vec<String> = (0..written)
        .map(key)
        .filter(|k| !seen.contains_key(k))
        .collect();
    assert!(
        missing.is_empty(),
        "{output}: {} of {written} missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(
        seen.len(),
        written,
        "{output}: records that were never written"
    );
    assert_eq!(other, 0, "{output}: error records: no line was torn");
}

#[derive(Debug, Clone, Copy)]
enum Codec {
    Zstd,
    Gzip,
}

/// The records of a compressed output: every file of it (the current one and the rotated
/// ones, in any order), decompressed as tools do. While kubetrail runs, the current file may
/// end in half a member: `strict: false` takes the complete lines before it; after a clean
/// exit every file must decompress whole.
fn read_compressed(dir: &Path, codec: Codec, strict: bool) -> Vec<serde_json::Value> {
    let (prefix, ext) = match codec {
        Codec::Zstd => ("audit-z.jsonl", ".zst"),
        Codec::Gzip => ("audit-g.jsonl", ".gz"),
    };
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.starts_with(prefix) || !name.ends_with(ext) {
            continue;
        }
        let Ok(raw) = std::fs::read(&path) else {
            continue;
        };
        let mut text = Vec::new();
        // On an error, what was decompressed before it is in `text`.
        let read = match codec {
            Codec::Zstd => zstd::stream::read::Decoder::new(&raw[..])
                .and_then(|mut d| d.read_to_end(&mut text)),
            Codec::Gzip => flate2::read::MultiGzDecoder::new(&raw[..]).read_to_end(&mut text),
        };
        if let Err(e) = read {
            assert!(
                !strict,
                "{name} does not decompress after a clean exit: {e}"
            );
        }
        let text = String::from_utf8_lossy(&text);
        let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        for line in complete.lines() {
            match serde_json::from_str(line) {
                Ok(v) => out.push(v),
                Err(e) => assert!(!strict, "{name}: not JSON ({e}): {line:.200}"),
            }
        }
    }
    out
}
