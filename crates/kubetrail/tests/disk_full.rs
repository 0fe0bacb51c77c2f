//! A full disk under load, through the `kubetrail` binary: the data directory on a 48 MiB
//! tmpfs, the three inputs running (the audit webhook under load, the Events watch against the
//! emulator, the audit log tailer), the `http` output's receiver failing so that its queue
//! grows until the file system is full. Then: the webhook answers 503 with `Retry-After`, the
//! watch and the tailer pause, `/readyz` says why. The receiver comes back: acknowledgements
//! commit, the delivered segments are deleted, space returns, the 503s stop, the inputs
//! resume, and in the end every record is delivered exactly once, without a `gap` record.
//! SIGTERM stops the agent within `grace`, on the full disk too, and a new process opens the
//! full store and recovers.
//!
//! Mounting needs root (CI runs as root): without it the test fails and says why; it never
//! passes without having filled a disk.

mod common;
#[path = "outputs_http_common/mod.rs"]
mod http_common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Env, occurrences, signal, spawn_kubetrail, wait_until};
use http_common::{Recorded, Reply, TestServer};
use kubetrail_emulator::EventSpec;

/// A tmpfs mounted on a directory, unmounted when dropped.
struct Tmpfs {
    path: std::path::PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).expect("mount point");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .output();
        match out {
            Ok(o) if o.status.success() => Tmpfs {
                path: path.to_path_buf(),
            },
            Ok(o) => panic!(
                "cannot mount a tmpfs for the disk-full test (it needs root, as in CI): {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => panic!("cannot run mount for the disk-full test: {e}"),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Text that does not compress, so that the queue grows as fast as records come.
fn noise(seed: u64, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x >> 58) as usize] as char
        })
        .collect()
}

/// An audit event with `pad` bytes of incompressible request data.
fn audit_event(id: &str, pad: usize, seed: u64) -> String {
    format!(
        concat!(
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Request","auditID":"{}","#,
            r#""stage":"ResponseComplete","requestURI":"/api/v1/namespaces/shop/secrets","verb":"create","#,
            r#""user":{{"username":"system:serviceaccount:shop:ci","groups":["system:authenticated"]}},"#,
            r#""sourceIPs":["10.1.2.3"],"userAgent":"kubectl/v1.28.7","#,
            r#""objectRef":{{"resource":"configmaps","namespace":"shop","apiVersion":"v1"}},"#,
            r#""responseStatus":{{"metadata":{{}},"code":201}},"requestObject":{{"data":{{"k":"{}"}}}},"#,
            r#""requestReceivedTimestamp":"2026-11-27T00:31:51.810715Z","stageTimestamp":"2026-11-27T00:31:51.812000Z"}}"#
        ),
        id,
        noise(seed, pad)
    )
}

/// Posts a webhook batch over plain HTTP; returns the status and the `Retry-After` header.
fn post(port: u16, body: &str) -> std::io::Result<(u16, Option<String>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "POST /audit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body.as_bytes())?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let retry_after = text.lines().take_while(|l| !l.is_empty()).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("retry-after")
            .then(|| v.trim().to_string())
    });
    Ok((status, retry_after))
}

/// A GET over plain HTTP: the status line and the body.
fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text)
}

/// The records of a `json` body.
fn records_of(request: &Recorded) -> Vec<serde_json::Value> {
    match request.json() {
        serde_json::Value::Array(items) => items,
        other => vec![other],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_pauses_every_input_and_everything_resumes_when_deliveries_free_space() {
    let env = Env::new().await;
    let fs = Tmpfs::mount(&env.data_dir, "48m");
    let logs = env.dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let webhook = free_port();
    let metrics = free_port();

    // The receiver fails (503) until `up`; it keeps the records of what it answered 200 to.
    let up = Arc::new(AtomicBool::new(false));
    let taken: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let (flag, keep) = (up.clone(), taken.clone());
    let receiver = TestServer::start(
        None,
        Arc::new(move |r| {
            if flag.load(Ordering::SeqCst) {
                keep.lock().unwrap().extend(records_of(r));
                Reply::status(200)
            } else {
                Reply::status(503)
            }
        }),
    )
    .await;
    let received = || taken.lock().unwrap().clone();

    let yaml = format!(
        r#"service:
  data_dir: {data}
  log_level: info
  grace: 2s
  http_listen: 127.0.0.1:{metrics}
pipeline:
  inputs:
    - name: kubernetes_events
      tag: k8s.events
      kube_url: {url}
      kube_ca_file: {ca}
      kube_token_file: {token}
    - name: audit_webhook
      tag: k8s.audit
      listen: 127.0.0.1:{webhook}
      tls: off
      auth: none
    - name: audit_file
      tag: k8s.audit.file
      path: {logs}/audit*.log
      refresh_interval: 200ms
  outputs:
    - name: http
      match: '*'
      host: 127.0.0.1
      port: {port}
      uri: /ingest
      format: json
      retry_base_backoff: 100ms
      retry_max_backoff: 300ms
"#,
        data = env.data_dir.display(),
        url = env.emu.url(),
        ca = env.ca_file.display(),
        token = env.token_file.display(),
        logs = logs.display(),
        port = receiver.addr.port(),
    );
    let config = env.write_config(&yaml);
    let mut child = spawn_kubetrail(&config, env.dir.path(), 0);

    // Events and audit log lines come all along, in a thread of their own.
    let stop = Arc::new(AtomicBool::new(false));
    let lines = Arc::new(AtomicUsize::new(0));
    let emu = env.emu.clone();
    let producer = {
        let (stop, lines, logs) = (stop.clone(), lines.clone(), logs.clone());
        std::thread::spawn(move || {
            let mut log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(logs.join("audit.log"))
                .unwrap();
            let mut events = 0usize;
            while !stop.load(Ordering::SeqCst) {
                emu.create_event(EventSpec::simple(
                    "shop",
                    "Pod",
                    format!("web-{events}"),
                    "BackOff",
                    format!("Back-off restarting failed container {events}"),
                ));
                events += 1;
                let n = lines.load(Ordering::SeqCst);
                let line = audit_event(&format!("file-{n:06}"), 512, 1 << 40 | n as u64);
                log.write_all(format!("{line}\n").as_bytes()).unwrap();
                lines.store(n + 1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(50));
            }
            events
        })
    };

    // Fill: webhook batches of incompressible events until the disk is full.
    let mut accepted: Vec<String> = Vec::new();
    let mut refused = None;
    let started = Instant::now();
    for round in 0..1000u64 {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the disk never filled"
        );
        let ids: Vec<String> = (0..40).map(|i| format!("hook-{round:04}-{i:02}")).collect();
        let items: Vec<String> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| audit_event(id, 8 << 10, round * 64 + i as u64))
            .collect();
        let body = format!(
            r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{}]}}"#,
            items.join(",")
        );
        let answer = tokio::task::spawn_blocking(move || post(webhook, &body))
            .await
            .unwrap();
        match answer {
            Ok((200, _)) => accepted.extend(ids),
            Ok((503, retry_after)) => {
                refused = Some(retry_after);
                break;
            }
            Ok(other) => panic!("unexpected answer {other:?}"),
            // Still starting.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let log = || {
        (0..2)
            .map(|run| {
                std::fs::read_to_string(env.dir.path().join(format!("stderr.{run}")))
                    .unwrap_or_default()
            })
            .collect::<String>()
    };
    let retry_after = refused.expect("the webhook refused a batch on the full disk");
    assert!(
        retry_after.is_some_and(|v| v.parse::<u64>().is_ok_and(|s| s > 0)),
        "503 with Retry-After"
    );
    assert!(
        log().contains("file system is full"),
        "the full disk is logged:\n{}",
        log()
    );
    let free = kubetrail_state::free_bytes(&env.data_dir).unwrap();
    assert!(free < 8 << 20, "the disk is full: {free} bytes free");
    let readyz = get(metrics, "/readyz").unwrap_or_default();
    assert!(
        readyz.starts_with("HTTP/1.0 503") || readyz.starts_with("HTTP/1.1 503"),
        "{readyz}"
    );
    assert!(readyz.contains("file system full"), "{readyz}");
    // The watch and the tailer are told to wait, not to drop anything.
    let paused = |source: &str| {
        log().lines().any(|l| {
            l.contains("pausing this input until there is room")
                && l.contains(&format!("component={source}"))
        })
    };
    assert!(
        wait_until(Duration::from_secs(10), || paused("kubernetes_events.0")
            && paused("audit_file.0"))
        .await,
        "both the watch and the tailer pause:\n{}",
        log()
    );

    // SIGTERM on the full disk: within grace, and a new process opens the full store (opening
    // writes nothing).
    let began = Instant::now();
    signal(&child, "TERM");
    let status = child.wait().unwrap();
    let full_stop_took = began.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        full_stop_took < Duration::from_secs(5),
        "SIGTERM on a full disk took {full_stop_took:?} (grace 2s)"
    );
    let mut child = spawn_kubetrail(&config, env.dir.path(), 1);
    assert!(
        wait_until(Duration::from_secs(20), || get(metrics, "/readyz")
            .is_some_and(|r| r.contains("file system full")))
        .await,
        "the new process finds the disk full:\n{}",
        log()
    );

    // The receiver comes back: deliveries free space, the webhook takes batches again.
    up.store(true, Ordering::SeqCst);
    let mut code = 0;
    let back = Instant::now();
    while back.elapsed() < Duration::from_secs(60) {
        let body = format!(
            r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{}]}}"#,
            audit_event("hook-after", 64, 7)
        );
        if let Ok((c, _)) = tokio::task::spawn_blocking(move || post(webhook, &body))
            .await
            .unwrap()
        {
            code = c;
            if code == 200 {
                accepted.push("hook-after".into());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(code, 200, "200 again once deliveries freed space");
    let recovered_in = back.elapsed();
    let readyz = get(metrics, "/readyz").unwrap_or_default();
    assert!(!readyz.contains("file system full"), "{readyz}");

    // A little more of everything, then all of it must arrive, once.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::SeqCst);
    let events = producer.join().unwrap();
    let lines = lines.load(Ordering::SeqCst);
    let counts = |records: &[serde_json::Value]| {
        let mut m: HashMap<String, usize> = HashMap::new();
        for r in records.iter().filter(|r| r["kind"] == "k8s_audit") {
            *m.entry(r["id"].as_str().unwrap_or_default().to_string())
                .or_default() += 1;
        }
        m
    };
    let want = accepted.len() + lines;
    let delivered = wait_until(Duration::from_secs(60), || {
        let records = received();
        counts(&records).len() >= want && occurrences(&records).len() >= events
    })
    .await;
    let began = Instant::now();
    signal(&child, "TERM");
    let status = child.wait().unwrap();
    let stop_took = began.elapsed();
    drop(fs);

    let records = received();
    let audit = counts(&records);
    assert!(
        delivered,
        "delivered {} of {want} audit records and {} of {events} Events",
        audit.len(),
        occurrences(&records).len()
    );
    for id in &accepted {
        assert_eq!(
            audit.get(&format!("{id}/ResponseComplete")),
            Some(&1),
            "{id}"
        );
    }
    for n in 0..lines {
        assert_eq!(
            audit.get(&format!("file-{n:06}/ResponseComplete")),
            Some(&1),
            "line {n}"
        );
    }
    assert_eq!(audit.len(), want, "nothing else");
    let events_seen = occurrences(&records);
    assert_eq!(events_seen.len(), events, "every Event");
    assert!(events_seen.values().all(|n| *n == 1), "no Event twice");
    assert!(
        records.iter().all(|r| r["kind"] != "gap"),
        "no gap record for a pause"
    );
    assert!(status.success(), "{status:?}");
    assert!(
        stop_took < Duration::from_secs(5),
        "SIGTERM took {stop_took:?} (grace 2s)"
    );
    eprintln!(
        "{} webhook records accepted before the disk filled, {lines} lines, {events} Events; SIGTERM on the full disk took {full_stop_took:?}; 200 again {recovered_in:?} after the receiver came back; stopped in {stop_took:?}",
        accepted.len()
    );
}
