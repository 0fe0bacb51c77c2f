//! The activity page against the recorded "shop" scenario, fed through the real inputs: the
//! emulator replays the Events exactly as they were watched to the `kubernetes_events` input,
//! `audit_file` tails the audit log, both go into the `store` output, and `kubetrail run`
//! serves the page over HTTPS with a token file.
//!
//! - `page_answers_like_the_command_line` (plain `cargo test`): unauthenticated requests get
//!   401 and no data; the JSON behind a page is what `kubetrail who -o json` prints for the
//!   same object; a Secret's content is never in a page or a raw record.
//! - `browser` (`--ignored`: needs Chromium and `npm ci` in `crates/ui/browser-tests`, which
//!   `scripts/test` provides): the page in headless Chromium, checked from the DOM against
//!   `GROUND-TRUTH.md` (see `crates/ui/browser-tests/test.mjs`). `KUBETRAIL_UI_HOLD=SECONDS`
//!   keeps the page up that long first, with its address and token printed, to look at it.
//! - `browser_demo_picture` (`--ignored`, the same needs): the README's picture, taken from
//!   `kubetrail demo`'s data served by `kubetrail ui`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use bytes::Bytes;
use common::{Env, signal, spawn_kubetrail, store_records, wait_until};
use http_body_util::{BodyExt, Full};
use kubetrail_net::{HttpClient, TlsClientSettings};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

/// Records the scenario holds: every audit log line (none is a RequestReceived stage), and
/// every ADDED or MODIFIED frame of the recorded watch.
const AUDIT_LINES: usize = 1026;
const EVENT_FRAMES: usize = 76;

fn fixtures() -> PathBuf {
    PathBuf::from(std::env::var("KUBETRAIL_FIXTURES").expect("KUBETRAIL_FIXTURES is set"))
        .join("scenarios/shop")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// kubetrail fed with the scenario, serving the page.
struct Shop {
    env: Env,
    child: Child,
    config: PathBuf,
    url: String,
    token: String,
    ca_pem: String,
    audit_file: PathBuf,
}

impl Shop {
    async fn start() -> Shop {
        let env = Env::new().await;
        let dir = env.dir.path().to_path_buf();
        let audit_dir = dir.join("audit");
        std::fs::create_dir_all(&audit_dir).unwrap();
        let audit_file = audit_dir.join("audit.log");
        std::fs::copy(fixtures().join("audit.log"), &audit_file).unwrap();
        let (ca_pem, crt, key) = certificates(&dir);
        let token = format!("ui-{:032x}", fastrand::u128(..));
        std::fs::write(
            dir.join("ui-tokens"),
            format!("# the page's tokens\n{token}\n"),
        )
        .unwrap();
        let port = free_port();
        let yaml = format!(
            r#"service:
  data_dir: {data}
  log_level: info
  grace: 5s
  ui.listen: 127.0.0.1:{port}
  ui.token_file: {dir}/ui-tokens
  ui.tls.crt_file: {crt}
  ui.tls.key_file: {key}
pipeline:
  inputs:
    - name: kubernetes_events
      tag: k8s.events
      kube_url: {url}
      kube_ca_file: {ca}
      kube_token_file: {kube_token}
      interval_nsec: 100000000
    - name: audit_file
      tag: k8s.audit
      path: {audit}
      poll_interval: 100ms
      refresh_interval: 200ms
  outputs:
    - name: store
      match: '*'
"#,
            data = env.data_dir.display(),
            dir = dir.display(),
            crt = crt.display(),
            key = key.display(),
            url = env.emu.url(),
            ca = env.ca_file.display(),
            kube_token = env.token_file.display(),
            audit = audit_file.display(),
        );
        let config = env.write_config(&yaml);
        let child = spawn_kubetrail(&config, &dir, 0);
        // The Events are replayed once the watch is open, so kubetrail sees every frame the
        // recorder saw, not only the last version of each Event that a list would show.
        assert!(
            wait_until(Duration::from_secs(60), || env.emu.stats().open_watches
                >= 1)
            .await,
            "the Events watch never opened: {}",
            stderr(&dir)
        );
        env.emu
            .replay_watch_file(&fixtures().join("events-watch.jsonl"))
            .expect("replay the recorded watch");
        let shop = Shop {
            url: format!("https://127.0.0.1:{port}"),
            env,
            child,
            config,
            token,
            ca_pem,
            audit_file,
        };
        shop.wait_for_records(AUDIT_LINES + EVENT_FRAMES).await;
        shop
    }

    fn client(&self) -> HttpClient {
        let tls = TlsClientSettings {
            ca_pem: Some(self.ca_pem.clone().into_bytes()),
            ..TlsClientSettings::default()
        };
        HttpClient::new(&self.url, &tls).unwrap()
    }

    /// GET with or without the bearer token: status, content type, body.
    async fn get(&self, path: &str, auth: bool) -> (u16, String, String) {
        let mut req = http::Request::get(self.client().url_for(path));
        if auth {
            req = req.header("authorization", format!("Bearer {}", self.token));
        }
        let resp = self
            .client()
            .send(req.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, ct, String::from_utf8_lossy(&body).into_owned())
    }

    async fn json(&self, path: &str) -> serde_json::Value {
        let (status, _, body) = self.get(path, true).await;
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Waits until the activity store holds `n` records. Counted in the store itself, not
    /// through the timeline: a page leaves out a request's earlier stage (ResponseStarted)
    /// when its later one is beside it, so how many entries the pages show depends on where
    /// they break.
    async fn wait_for_records(&self, n: usize) {
        let db = self.env.data_dir.join("activity.db");
        let count = || store_records(&db);
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let mut seen = 0;
        while std::time::Instant::now() < deadline {
            seen = count();
            if seen >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!(
            "the store holds {seen} records, not {n}: {}",
            stderr(self.env.dir.path())
        );
    }

    fn stop(mut self) {
        signal(&self.child, "TERM");
        let _ = self.child.wait();
    }
}

impl Drop for Shop {
    /// A failed test still stops its kubetrail.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn stderr(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("stderr.0")).unwrap_or_default()
}

/// A CA and a certificate for 127.0.0.1 signed by it: (CA PEM, certificate file, key file).
fn certificates(dir: &Path) -> (String, PathBuf, PathBuf) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let (crt, key) = (dir.join("ui.crt"), dir.join("ui.key"));
    std::fs::write(&crt, leaf.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    (ca.pem(), crt, key)
}

/// A URL query value, percent-encoded.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An audit event that arrives while the page is open: dave deletes ConfigMap web-config.
fn live_audit_line() -> String {
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let id = format!(
        "{:08x}-live-4000-8000-{:012x}",
        fastrand::u32(..),
        fastrand::u64(..1 << 48)
    );
    serde_json::json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
        "auditID": id, "stage": "ResponseComplete",
        "requestURI": "/api/v1/namespaces/shop/configmaps/web-config", "verb": "delete",
        "user": {"username": "dave", "groups": ["ops", "system:authenticated"]},
        "sourceIPs": ["10.0.0.42"], "userAgent": "kubectl/v1.28.7 (linux/amd64) kubernetes/c8dcb00",
        "objectRef": {"resource": "configmaps", "namespace": "shop", "name": "web-config", "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "status": "Success", "code": 200},
        "requestReceivedTimestamp": now, "stageTimestamp": now,
        "annotations": {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": "RBAC"}
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_answers_like_the_command_line() {
    let shop = Shop::start().await;

    // No credentials: 401, and nothing of the store in the answer.
    for path in [
        "/timeline",
        "/timeline.json",
        "/who?object=pod/web-7d8bcd4698-8sr6z&namespace=shop",
        "/who.json?object=pod/web-7d8bcd4698-8sr6z&namespace=shop",
        "/record.json?id=x",
        "/timeline/live?after=0",
        "/",
    ] {
        let (status, _, body) = shop.get(path, false).await;
        assert_eq!(status, 401, "{path}");
        // Words from the records (the login form repeats the address asked for, no more).
        for data in ["6799f25a", "carol", "alice", "node-1", "kubectl"] {
            assert!(
                !body.contains(data),
                "{path} without credentials shows {data}"
            );
        }
    }
    let (status, ct, body) = shop.get("/timeline", false).await;
    assert_eq!(status, 401);
    assert!(
        ct.starts_with("text/html") && body.contains("name=\"token\""),
        "{body}"
    );
    // A wrong token is no better.
    let mut wrong = http::Request::get(shop.client().url_for("/timeline.json"));
    wrong = wrong.header("authorization", "Bearer not-the-token");
    let resp = shop
        .client()
        .send(wrong.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // The JSON behind the object page is what `kubetrail who -o json` prints.
    for (object, ns) in [
        ("pod/web-7d8bcd4698-8sr6z", "shop"),
        ("pod/web-7d8bcd4698-t9626", "shop"),
        ("deploy/web", "shop"),
    ] {
        let page = shop
            .json(&format!("/who.json?object={object}&namespace={ns}"))
            .await;
        let out = Command::new(env!("CARGO_BIN_EXE_kubetrail"))
            .args(["who", object, "-n", ns, "-o", "json", "-c"])
            .arg(&shop.config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cli: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(page, cli, "{object}: the page and `kubetrail who` differ");
        // And the HTML page shows that story.
        let (status, _, html) = shop
            .get(&format!("/who?object={object}&namespace={ns}"), true)
            .await;
        assert_eq!(status, 200);
        assert!(html.contains(cli["object"]["name"].as_str().unwrap()));
    }

    // Ground truth 29: bob created Secret db-pass; its content is in no page and no record.
    let story = shop
        .json("/who.json?object=secret/db-pass&namespace=shop")
        .await;
    let created = story["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["what"] == "created")
        .expect("the Secret's creation");
    assert_eq!(created["actor"]["user"], "bob");
    let (_, _, html) = shop
        .get("/who?object=secret/db-pass&namespace=shop", true)
        .await;
    let mut pages = vec![html, story.to_string()];
    for id in created["record_ids"].as_array().unwrap() {
        let id = id.as_str().unwrap();
        let q = format!("id={}", encode(id));
        pages.push(shop.get(&format!("/record?{q}"), true).await.2);
        pages.push(shop.get(&format!("/record.json?{q}"), true).await.2);
    }
    for p in &pages {
        assert!(
            !p.contains("hunter2") && !p.contains("aHVudGVyMg"),
            "Secret content shown"
        );
    }

    // Filters narrow: failed requests only is a strict part of the whole.
    let all = shop.json("/timeline.json?limit=1000&namespace=shop").await;
    let failed = shop
        .json("/timeline.json?limit=1000&namespace=shop&failed=true")
        .await;
    let failed = failed["entries"].as_array().unwrap();
    assert!(!failed.is_empty() && failed.len() < all["entries"].as_array().unwrap().len());
    assert!(failed.iter().all(|e| e["code"].as_i64().unwrap() >= 400));
    assert!(
        failed
            .iter()
            .any(|e| e["actor"]["user"] == "viewer" && e["code"] == 403),
        "ground truth 30: viewer's refused delete"
    );
    shop.stop();
}

/// The browser tests' directory, its npm packages installed.
fn browser_tests() -> PathBuf {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui/browser-tests");
    assert!(
        tests.join("node_modules/playwright-core").is_dir(),
        "run `npm ci` in {} first",
        tests.display()
    );
    tests
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and `npm ci` in crates/ui/browser-tests (scripts/test installs both)"]
async fn browser() {
    let tests = browser_tests();
    let shop = Shop::start().await;
    let artifacts = tempfile::Builder::new()
        .prefix("kubetrail-ui-browser-")
        .tempdir()
        .unwrap()
        .keep();
    if let Some(secs) = std::env::var("KUBETRAIL_UI_HOLD")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        // For a person: the page with the scenario's data, for a while.
        eprintln!(
            "activity page: {} token: {} CA: {}",
            shop.url, shop.token, shop.ca_pem
        );
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
    let live_line = artifacts.join("live-audit-line.json");
    std::fs::write(&live_line, live_audit_line()).unwrap();
    let status = Command::new("node")
        .arg(tests.join("test.mjs"))
        .env("KT_URL", &shop.url)
        .env("KT_TOKEN", &shop.token)
        .env("KT_AUDIT_FILE", &shop.audit_file)
        .env("KT_LIVE_LINE", &live_line)
        .env("KT_ARTIFACTS", &artifacts)
        .status()
        .expect("run node");
    eprintln!("browser test screenshots: {}", artifacts.display());
    let logs = stderr(shop.env.dir.path());
    shop.stop();
    assert!(
        status.success(),
        "the browser checks failed (screenshots in {}); kubetrail's log:\n{logs}",
        artifacts.display()
    );
}

/// The README's picture, from `kubetrail demo`'s data: a short demo, its store served by
/// `kubetrail ui`, the page of a pod carol evicted (`crates/ui/browser-tests/demo-picture.mjs`
/// finds it on the timeline as a person would, checks its page tells the eviction, and takes
/// the picture; run.sh has it written to docs/activity-page.png).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and `npm ci` in crates/ui/browser-tests (scripts/test installs both)"]
async fn browser_demo_picture() {
    let tests = browser_tests();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let demo = Command::new(env!("CARGO_BIN_EXE_kubetrail"))
        .args([
            "demo",
            "--duration",
            "12s",
            "--log-level",
            "warn",
            "--data-dir",
        ])
        .arg(&data)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run the demo");
    assert!(demo.success(), "the demo failed");
    let token = format!("ui-{:032x}", fastrand::u128(..));
    let tokens = dir.path().join("ui-tokens");
    std::fs::write(&tokens, format!("{token}\n")).unwrap();
    let port = free_port();
    let mut ui = Command::new(env!("CARGO_BIN_EXE_kubetrail"))
        .args(["ui", "--no-tls", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--token-file")
        .arg(&tokens)
        .arg("--store")
        .arg(data.join("activity.db"))
        .stderr(std::fs::File::create(dir.path().join("ui.log")).unwrap())
        .spawn()
        .expect("start kubetrail ui");
    let up = wait_until(Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    let artifacts = tempfile::Builder::new()
        .prefix("kubetrail-ui-demo-")
        .tempdir()
        .unwrap()
        .keep();
    let status = up.then(|| {
        Command::new("node")
            .arg(tests.join("demo-picture.mjs"))
            .env("KT_URL", format!("http://127.0.0.1:{port}"))
            .env("KT_TOKEN", &token)
            .env("KT_ARTIFACTS", &artifacts)
            .status()
            .expect("run node")
    });
    let _ = ui.kill();
    let _ = ui.wait();
    let log = std::fs::read_to_string(dir.path().join("ui.log")).unwrap_or_default();
    assert!(up, "kubetrail ui did not listen on {port}:\n{log}");
    assert!(
        status.is_some_and(|s| s.success()),
        "the demo picture failed (screenshots in {}); kubetrail ui's log:\n{log}",
        artifacts.display()
    );
}
