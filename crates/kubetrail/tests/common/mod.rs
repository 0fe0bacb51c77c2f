//! Shared helpers of kubetrail's integration tests: an emulator with its CA and token files,
//! configurations pointing at it, the `kubetrail` binary, and readers of the file output.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kubetrail_emulator::{Emulator, EmulatorOptions};

pub const TOKEN: &str = "test-token-1";

/// A test environment: a temp dir, an emulator, and the files a config needs.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub emu: Emulator,
    pub ca_file: PathBuf,
    pub token_file: PathBuf,
    pub data_dir: PathBuf,
    pub out_dir: PathBuf,
}

impl Env {
    pub async fn new() -> Env {
        Env::with_options(EmulatorOptions {
            tokens: vec![(TOKEN.into(), "kubetrail".into())],
            ..Default::default()
        })
        .await
    }

    pub async fn with_options(opts: EmulatorOptions) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let emu = Emulator::start(opts).await.expect("emulator starts");
        let ca_file = dir.path().join("ca.crt");
        emu.write_ca_file(&ca_file).expect("write ca");
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, TOKEN).expect("write token");
        let data_dir = dir.path().join("data");
        let out_dir = dir.path().join("out");
        Env {
            dir,
            emu,
            ca_file,
            token_file,
            data_dir,
            out_dir,
        }
    }

    /// A configuration: one kubernetes_events input (with `input_extra` lines, each already
    /// indented by 6 spaces) into a `file` output.
    pub fn config(&self, input_extra: &str) -> String {
        format!(
            r#"service:
  data_dir: {data}
  log_level: info
  grace: 5s
pipeline:
  inputs:
    - name: kubernetes_events
      tag: k8s.events
      kube_url: {url}
      kube_ca_file: {ca}
      kube_token_file: {token}
      interval_nsec: 100000000
{input_extra}
  outputs:
    - name: file
      match: '*'
      path: {out}
      file: events.jsonl
"#,
            data = self.data_dir.display(),
            url = self.emu.url(),
            ca = self.ca_file.display(),
            token = self.token_file.display(),
            out = self.out_dir.display(),
        )
    }

    pub fn write_config(&self, yaml: &str) -> PathBuf {
        let p = self.dir.path().join("kubetrail.yaml");
        std::fs::write(&p, yaml).expect("write config");
        p
    }

    /// Every record in the file output, oldest first.
    pub fn records(&self) -> Vec<serde_json::Value> {
        read_records(&self.out_dir.join("events.jsonl"))
    }
}

/// Reads a JSON-lines output file and its rotated siblings (`.N` oldest first). Panics on a
/// complete line that is not JSON: the file output must never hold a torn line.
/// How many records the activity store named by `path` holds, in all its files (0 while it
/// cannot be read).
pub fn store_records(path: &Path) -> usize {
    kubetrail_activity::shard_files(path)
        .unwrap_or_default()
        .iter()
        .filter_map(|f| kubetrail_activity::open_reader(f).ok())
        .filter_map(|c| {
            c.query_row("SELECT count(*) FROM records", [], |r| r.get::<_, i64>(0))
                .ok()
        })
        .map(|n| usize::try_from(n).unwrap_or(0))
        .sum()
}

pub fn read_records(path: &Path) -> Vec<serde_json::Value> {
    let mut files = Vec::new();
    for n in (1..100).rev() {
        let p = PathBuf::from(format!("{}.{n}", path.display()));
        if p.exists() {
            files.push(p);
        }
    }
    files.push(path.to_path_buf());
    let mut out = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        // A last line without its newline is being written right now (the output writes a
        // batch, then fsyncs): it is not there yet. Every complete line must be JSON.
        let complete = match text.rfind('\n') {
            Some(end) => &text[..=end],
            None => "",
        };
        for (i, line) in complete.lines().enumerate() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!("{}:{}: not JSON ({e}): {line:.200}", f.display(), i + 1)
            });
            out.push(v);
        }
    }
    out
}

/// Counts Event records by (uid, resourceVersion).
pub fn occurrences(records: &[serde_json::Value]) -> HashMap<(String, String), usize> {
    let mut m = HashMap::new();
    for r in records.iter().filter(|r| r["kind"] == "k8s_event") {
        let uid = r["uid"].as_str().unwrap_or_default().to_string();
        let rv = r["resource_version"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        *m.entry((uid, rv)).or_default() += 1;
    }
    m
}

/// The `kubetrail` binary with a configuration, stdout/stderr to files in `dir`.
pub fn spawn_kubetrail(config: &Path, dir: &Path, run: u32) -> Child {
    let stdout = std::fs::File::create(dir.join(format!("stdout.{run}"))).expect("stdout file");
    let stderr = std::fs::File::create(dir.join(format!("stderr.{run}"))).expect("stderr file");
    Command::new(env!("CARGO_BIN_EXE_kubetrail"))
        .arg("run")
        .arg("-c")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("spawn kubetrail")
}

/// Sends a signal to a child.
pub fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status();
    assert!(
        status.map(|s| s.success()).unwrap_or(false),
        "kill -{sig} failed"
    );
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes.
pub async fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

/// What to look at when a pipeline test fails: kubetrail's warnings and errors, and what
/// went to the dead-letter files.
pub fn diagnostics(env: &Env) -> String {
    let mut out = String::new();
    let mut logs: Vec<_> = std::fs::read_dir(env.dir.path())
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("stderr"))
                })
                .collect()
        })
        .unwrap_or_default();
    logs.sort();
    for p in logs {
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        let bad: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        for l in &bad[bad.len().saturating_sub(5)..] {
            out.push_str(&format!("{}: {l:.300}\n", p.display()));
        }
    }
    for p in std::fs::read_dir(env.data_dir.join("dead-letter"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let text = std::fs::read_to_string(p.path()).unwrap_or_default();
        out.push_str(&format!(
            "dead letters {}: {} lines, first: {:.500}\n",
            p.path().display(),
            text.lines().count(),
            text.lines().next().unwrap_or("")
        ));
    }
    out
}

/// The resident set size of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
