//! The `audit_webhook` input end to end, through the `kubetrail` binary into the `file`
//! output: a 200 means durable (kill -9 right after it, restart: the whole batch is there), an
//! apiserver retry of the same batch is stored once, and a full queue answers 503 until it
//! drains, then 200 again.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use common::{read_records, signal, spawn_kubetrail, wait_until};
use http_body_util::Full;
use kubetrail_net::{HttpClient, TlsClientSettings};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

const TOKEN: &str = "apiserver-webhook-token";

struct Setup {
    dir: tempfile::TempDir,
    ca_pem: String,
    port: u16,
    out: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca, &ca_key)
            .unwrap();
        std::fs::write(dir.path().join("tls.crt"), leaf.pem()).unwrap();
        std::fs::write(dir.path().join("tls.key"), leaf_key.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("tokens"), format!("{TOKEN}\n")).unwrap();
        let out = dir.path().join("out");
        Setup {
            ca_pem: ca.pem(),
            port: free_port(),
            out,
            dir,
        }
    }

    fn config(&self, output_extra: &str) -> PathBuf {
        self.config_with(output_extra, "")
    }

    fn config_with(&self, output_extra: &str, more_inputs: &str) -> PathBuf {
        let d = self.dir.path().display();
        let yaml = format!(
            r#"service:
  data_dir: {d}/data
  grace: 5s
pipeline:
  inputs:
    - name: audit_webhook
      tag: k8s.audit
      listen: 127.0.0.1:{port}
      tls.crt_file: {d}/tls.crt
      tls.key_file: {d}/tls.key
      token_file: {d}/tokens
{more_inputs}
  outputs:
    - name: file
      match: '*'
      path: {out}
      file: audit.jsonl
{output_extra}
"#,
            port = self.port,
            out = self.out.display(),
        );
        let p = self.dir.path().join("kubetrail.yaml");
        std::fs::write(&p, yaml).unwrap();
        p
    }

    fn client(&self) -> HttpClient {
        let tls = TlsClientSettings {
            ca_pem: Some(self.ca_pem.as_bytes().to_vec()),
            ..Default::default()
        };
        HttpClient::new(&format!("https://127.0.0.1:{}", self.port), &tls).unwrap()
    }

    fn records(&self) -> Vec<serde_json::Value> {
        read_records(&self.out.join("audit.jsonl"))
    }
}

fn event(id: &str, stage: &str) -> String {
    format!(
        r#"{{"level":"Metadata","auditID":"{id}","stage":"{stage}","requestURI":"/api/v1/namespaces/shop/pods?limit=500","verb":"list","user":{{"username":"system:serviceaccount:shop:ci","groups":["system:serviceaccounts","system:authenticated"]}},"sourceIPs":["10.1.2.3"],"userAgent":"kubectl/v1.28.7","objectRef":{{"resource":"pods","namespace":"shop","apiVersion":"v1"}},"responseStatus":{{"metadata":{{}},"code":200}},"requestReceivedTimestamp":"2026-11-27T00:31:51.810715Z","stageTimestamp":"2026-11-27T00:31:51.812000Z","annotations":{{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":""}}}}"#
    )
}

fn batch(tag: &str, n: usize) -> (String, Vec<String>) {
    let ids: Vec<String> = (0..n)
        .map(|i| format!("{tag}-{i:05}-7d1c9a3e-0b6f-4f0e-9a51"))
        .collect();
    let items: Vec<String> = ids.iter().map(|id| event(id, "ResponseComplete")).collect();
    (
        format!(
            r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{{}},"items":[{}]}}"#,
            items.join(",")
        ),
        ids,
    )
}

async fn post(client: &HttpClient, body: &str) -> Result<u16, String> {
    let req = http::Request::post("/audit?timeout=30s")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let resp = client.send(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let _ = resp.into_body().read_to_end(1 << 20).await;
    Ok(status)
}

/// Posts until the server answers (it may still be starting).
async fn post_when_up(client: &HttpClient, body: &str) -> u16 {
    for _ in 0..400 {
        if let Ok(code) = post(client, body).await {
            return code;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the webhook never answered");
}

fn audit_counts(records: &[serde_json::Value]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in records.iter().filter(|r| r["kind"] == "k8s_audit") {
        *m.entry(r["id"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_right_after_200_loses_nothing_of_the_batch() {
    let s = Setup::new();
    let config = s.config("");
    let client = s.client();
    let mut expected = Vec::new();
    for round in 0..10u32 {
        let mut child = spawn_kubetrail(&config, s.dir.path(), round);
        let (body, ids) = batch(&format!("r{round}"), 200);
        assert_eq!(post_when_up(&client, &body).await, 200);
        // The 200 has been received: kill at once, before anything else can happen.
        signal(&child, "KILL");
        let _ = child.wait();
        expected.extend(ids);
    }
    // A clean run delivers whatever was durable in the queue but not yet written.
    let mut child = spawn_kubetrail(&config, s.dir.path(), 99);
    let done = wait_until(Duration::from_secs(60), || {
        audit_counts(&s.records()).len() >= expected.len()
    })
    .await;
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
    let counts = audit_counts(&s.records());
    let missing: Vec<_> = expected
        .iter()
        .filter(|id| !counts.contains_key(&format!("{id}/ResponseComplete")))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events missing, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    assert!(counts.values().all(|n| *n == 1), "duplicates in the output");
    assert!(done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apiserver_retry_of_the_same_batch_is_stored_once() {
    let s = Setup::new();
    let config = s.config("");
    let client = s.client();
    let mut child = spawn_kubetrail(&config, s.dir.path(), 0);
    let (body, ids) = batch("retry", 50);
    assert_eq!(post_when_up(&client, &body).await, 200);
    assert_eq!(
        post(&client, &body).await.unwrap(),
        200,
        "a retry is answered 200 too"
    );
    // The recorded apiserver batch, twice.
    let fixtures = std::env::var("KUBETRAIL_FIXTURES")
        .expect("KUBETRAIL_FIXTURES must point at ../shared/fixtures");
    let raw =
        std::fs::read_to_string(Path::new(&fixtures).join("kube-api/audit-webhook-post-1.txt"))
            .unwrap();
    let recorded = raw
        .split("\r\n\r\n")
        .nth(1)
        .expect("a body after the headers")
        .to_string();
    assert_eq!(post(&client, &recorded).await.unwrap(), 200);
    assert_eq!(post(&client, &recorded).await.unwrap(), 200);
    let want = ids.len() + 22;
    let done = wait_until(Duration::from_secs(20), || s.records().len() >= want).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
    let counts = audit_counts(&s.records());
    assert!(done, "{} records", s.records().len());
    assert_eq!(counts.len(), want);
    assert!(
        counts.values().all(|n| *n == 1),
        "a retried batch was stored twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_until_it_drains_then_200() {
    let s = Setup::new();
    // The output directory is a plain file at first: the output cannot write, the queue fills.
    std::fs::write(&s.out, "not a directory").unwrap();
    let config = s.config("      storage.total_limit_size: 64k\n      retry_base_backoff: 100ms\n      retry_max_backoff: 200ms");
    let client = s.client();
    let mut child = spawn_kubetrail(&config, s.dir.path(), 0);
    let mut accepted = Vec::new();
    let mut saw_503 = false;
    for i in 0..40 {
        let (body, ids) = batch(&format!("fill{i}"), 40);
        match post_when_up(&client, &body).await {
            200 => accepted.extend(ids),
            503 => {
                saw_503 = true;
                break;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        saw_503,
        "the webhook answered 503 once the queue was at its limit"
    );
    // The destination comes back: the queue drains and the webhook takes batches again.
    std::fs::remove_file(&s.out).unwrap();
    let (body, ids) = batch("after", 10);
    let mut code = 0;
    for _ in 0..100 {
        code = post(&client, &body).await.unwrap();
        if code == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(code, 200, "200 again once the queue drained");
    accepted.extend(ids);
    let done = wait_until(Duration::from_secs(30), || {
        audit_counts(&s.records()).len() >= accepted.len()
    })
    .await;
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
    let counts = audit_counts(&s.records());
    assert!(done, "{} of {}", counts.len(), accepted.len());
    assert_eq!(
        counts.len(),
        accepted.len(),
        "only what was answered 200 is stored, all of it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_events_by_file_and_by_webhook_are_stored_once() {
    let s = Setup::new();
    let logs = s.dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let more = format!(
        "    - name: audit_file\n      tag: k8s.audit.file\n      path: {}/audit*.log\n      refresh_interval: 200ms",
        logs.display()
    );
    let config = s.config_with("", &more);
    let client = s.client();
    let mut child = spawn_kubetrail(&config, s.dir.path(), 0);
    let (body, ids) = batch("both", 60);
    // The apiserver writes the log and posts the webhook: the same 60 events, twice over.
    let lines: String = ids
        .iter()
        .map(|id| event(id, "ResponseComplete") + "\n")
        .collect();
    std::fs::write(logs.join("audit.log"), lines).unwrap();
    assert_eq!(post_when_up(&client, &body).await, 200);
    let done = wait_until(Duration::from_secs(20), || {
        audit_counts(&s.records()).len() >= ids.len()
    })
    .await;
    // Give the slower path time to deliver its copy too (it must be recognized as a duplicate).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
    let counts = audit_counts(&s.records());
    assert!(done);
    assert_eq!(counts.len(), ids.len());
    assert!(
        counts.values().all(|n| *n == 1),
        "an event arriving by file and by webhook was stored twice"
    );
    assert_eq!(s.records().len(), ids.len(), "nothing else was written");
}
