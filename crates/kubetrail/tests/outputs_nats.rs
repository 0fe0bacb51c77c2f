//! The `nats` output against a real nats-server with JetStream (started by `scripts/services`,
//! which `./scripts/test` runs): the stream made with the template's subjects, every message
//! acknowledged and stored once even when batches are published again, records too large
//! refused, a stopped server retried; and through the whole pipeline (the `kubetrail` binary,
//! Events from the emulator): `kill -9` a dozen times in the middle of delivery with no
//! message missing or repeated, and the server stopped for 60 seconds with everything
//! arriving after it returns while kubetrail's memory stays bounded.
//!
//! The tests need `KUBETRAIL_TEST_NATS_URL` (and `KUBETRAIL_TEST_SERVICES[_DIR]` to stop and
//! start the server); without them they fail, telling to run `./scripts/test`.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use kubetrail::outputs::nats::NatsOutput;
use kubetrail::outputs::nats::client::{Auth, Connection, Endpoint};
use kubetrail::pipeline::{DeliveryError, Output};
use kubetrail_core::config::{Section, SectionKind};
use kubetrail_emulator::EventSpec;
use kubetrail_state::QueueItem;

/// The tests share one server, and some of them stop it: they take turns.
static SERVER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn env_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with ./scripts/test, which starts PostgreSQL and NATS (scripts/services)")
    })
}

fn nats_url() -> String {
    env_var("KUBETRAIL_TEST_NATS_URL")
}

/// `nats-stop` or `nats-start` through scripts/services.
fn services(cmd: &str) {
    let status = std::process::Command::new(env_var("KUBETRAIL_TEST_SERVICES"))
        .arg(cmd)
        .arg(env_var("KUBETRAIL_TEST_SERVICES_DIR"))
        .status()
        .expect("run scripts/services");
    assert!(status.success(), "scripts/services {cmd} failed");
}

/// A stream name and subject prefix no other test uses (streams may not share subjects).
fn unique() -> (String, String) {
    let t = format!("{:016x}", fastrand::u64(..));
    (format!("T{t}"), format!("t{t}"))
}

fn output(stream: &str, prefix: &str, extra: &[(&str, &str)]) -> NatsOutput {
    let url = nats_url();
    let subject = format!("{prefix}.{{kind}}.{{namespace|object_ref.namespace}}");
    let mut pairs = vec![("url", url.as_str()), ("stream", stream), ("subject", subject.as_str())];
    pairs.extend_from_slice(extra);
    let mut s = Section::from_pairs(SectionKind::Output, "nats", &pairs);
    let o = NatsOutput::from_section(&mut s).expect("valid options");
    s.finish().expect("no unknown keys");
    o
}

async fn connection() -> Connection {
    let ep = Endpoint::parse_list(&nats_url()).unwrap().remove(0);
    Connection::connect(&ep, &Auth::default(), None, Duration::from_secs(10)).await.expect("connect to the test server")
}

async fn api(conn: &mut Connection, subject: &str, body: &str) -> serde_json::Value {
    let r = conn.request(subject, body.as_bytes(), Duration::from_secs(10)).await.expect("API request");
    serde_json::from_slice(&r.payload).unwrap_or(serde_json::Value::Null)
}

/// The stream's configuration and message count (None if it does not exist).
async fn stream_info(stream: &str) -> Option<serde_json::Value> {
    let v = api(&mut connection().await, &format!("$JS.API.STREAM.INFO.{stream}"), "").await;
    v.get("config").is_some().then_some(v)
}

async fn message_count(stream: &str) -> u64 {
    stream_info(stream).await.and_then(|v| v["state"]["messages"].as_u64()).unwrap_or(0)
}

/// One stored message: subject, `Nats-Msg-Id`, body.
struct Stored {
    subject: String,
    msg_id: String,
    body: serde_json::Value,
}

/// Every message in the stream, in order.
async fn read_all(stream: &str) -> Vec<Stored> {
    let mut conn = connection().await;
    let info = api(&mut conn, &format!("$JS.API.STREAM.INFO.{stream}"), "").await;
    let (first, last) = (info["state"]["first_seq"].as_u64().unwrap_or(1), info["state"]["last_seq"].as_u64().unwrap_or(0));
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    for seq in first..=last {
        let v = api(&mut conn, &format!("$JS.API.STREAM.MSG.GET.{stream}"), &format!(r#"{{"seq":{seq}}}"#)).await;
        let m = &v["message"];
        if m.is_null() {
            continue; // deleted (never, with these streams)
        }
        let hdrs = String::from_utf8(b64.decode(m["hdrs"].as_str().unwrap_or("")).unwrap_or_default()).unwrap_or_default();
        let msg_id = hdrs
            .lines()
            .find_map(|l| l.strip_prefix("Nats-Msg-Id:"))
            .map(|v| v.trim().to_string())
            .unwrap_or_default();
        let body = b64.decode(m["data"].as_str().unwrap_or("")).unwrap_or_default();
        out.push(Stored {
            subject: m["subject"].as_str().unwrap_or("").to_string(),
            msg_id,
            body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        });
    }
    out
}

fn event(i: usize) -> QueueItem {
    let id = format!("uid-{i}:{}", 1000 + i);
    let data = format!(
        r#"{{"id":"{id}","time":"2026-11-27T00:30:51Z","kind":"k8s_event","source":"kubernetes_events.0","tag":"k8s.events","namespace":"ns-{ns}","reason":"BackOff","involved_object":{{"kind":"Pod","name":"pod-{i}"}},"message":"{pad}","object":{{"kind":"Event"}}}}"#,
        ns = i % 3,
        pad = "x".repeat(i % 500),
    );
    QueueItem { seq: i as u64 + 1, id, data: data.into_bytes() }
}

fn audit(i: usize) -> QueueItem {
    let id = format!("audit-{i}:ResponseComplete");
    let data = format!(
        r#"{{"id":"{id}","time":"2026-11-27T00:31:00Z","kind":"k8s_audit","source":"audit_webhook.0","tag":"k8s.audit","verb":"get","object_ref":{{"resource":"pods","namespace":"kube system"}},"object":{{}}}}"#
    );
    QueueItem { seq: i as u64 + 1, id, data: data.into_bytes() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_is_acknowledged_and_stored_once() {
    let _turn = SERVER.lock().await;
    let (stream, prefix) = unique();
    let mut o = output(&stream, &prefix, &[("max_in_flight", "64")]);
    o.open(None).await.unwrap();
    let batch: Vec<QueueItem> = (0..900).map(event).chain((0..100).map(audit)).collect();
    o.deliver(&batch[..700]).await.unwrap();
    // Delivered again (a lost acknowledgement), then overlapping the rest.
    o.deliver(&batch[..700]).await.unwrap();
    o.deliver(&batch[500..]).await.unwrap();

    let info = stream_info(&stream).await.expect("the output made the stream");
    assert_eq!(info["config"]["subjects"], serde_json::json!([format!("{prefix}.*.*")]));
    assert_eq!(info["config"]["duplicate_window"].as_u64(), Some(120_000_000_000));
    assert_eq!(info["state"]["messages"].as_u64(), Some(1000));
    let stored = read_all(&stream).await;
    assert_eq!(stored.len(), 1000);
    let mut ids = HashMap::new();
    for m in &stored {
        *ids.entry(m.msg_id.clone()).or_insert(0) += 1;
        assert_eq!(m.body["id"].as_str(), Some(m.msg_id.as_str()), "Nats-Msg-Id is the record id");
    }
    assert_eq!(ids.len(), 1000, "no duplicate message");
    let by_id: HashMap<&str, &Stored> = stored.iter().map(|m| (m.msg_id.as_str(), m)).collect();
    assert_eq!(by_id["uid-4:1004"].subject, format!("{prefix}.k8s_event.ns-1"));
    assert_eq!(by_id["audit-3:ResponseComplete"].subject, format!("{prefix}.k8s_audit.kube_system"));
    assert_eq!(by_id["uid-4:1004"].body, serde_json::from_slice::<serde_json::Value>(&event(4).data).unwrap());
    o.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_over_max_payload_are_refused_the_others_published() {
    let _turn = SERVER.lock().await;
    let (stream, prefix) = unique();
    let mut o = output(&stream, &prefix, &[]);
    o.open(None).await.unwrap();
    let mut big = event(5);
    big.id = "big".into();
    big.data = format!(r#"{{"id":"big","kind":"k8s_audit","pad":"{}"}}"#, "y".repeat(2 << 20)).into_bytes();
    match o.deliver(&[event(1), big, event(2)]).await {
        Err(DeliveryError::Rejected { message }) => assert!(message.contains("big") && message.contains("max_payload"), "{message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(message_count(&stream).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_is_retried_and_reconnected() {
    let _turn = SERVER.lock().await;
    let (stream, prefix) = unique();
    let mut o = output(&stream, &prefix, &[("ack_timeout", "2s"), ("connect_timeout", "2s")]);
    o.open(None).await.unwrap();
    o.deliver(&[event(1)]).await.unwrap();
    services("nats-stop");
    let down = o.deliver(&[event(2)]).await;
    services("nats-start");
    assert!(matches!(down, Err(DeliveryError::Retryable { .. })), "{down:?}");
    let mut ok = false;
    for _ in 0..40 {
        if o.deliver(&[event(1), event(2), event(3)]).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(ok, "delivers after the server is back");
    assert_eq!(message_count(&stream).await, 3, "event 1 published again was deduplicated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_no_stream_takes_is_retried_with_a_clear_message() {
    let _turn = SERVER.lock().await;
    let (_, prefix) = unique();
    // No stream management: nothing takes these subjects.
    let mut o = output("", &prefix, &[("ack_timeout", "2s")]);
    match o.deliver(&[event(1)]).await {
        Err(DeliveryError::Retryable { message, .. }) => assert!(message.contains("no responders"), "{message}"),
        other => panic!("expected a retry, got {other:?}"),
    }
}

// ---- through the pipeline -----------------------------------------------------------------

fn spec(i: usize) -> EventSpec {
    let kinds = ["Pod", "Deployment", "ReplicaSet", "Node"];
    EventSpec::simple(["a", "b", "c"][i % 3], kinds[i % 4], format!("obj-{i}"), "BackOff", format!("message {i} {}", "m".repeat(i % 400)))
}

fn pipeline_config(env: &Env, stream: &str, prefix: &str, output_extra: &str) -> std::path::PathBuf {
    env.write_config(&format!(
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
      kube_request_limit: 250
  outputs:
    - name: nats
      match: '*'
      url: {nats}
      stream: {stream}
      subject: '{prefix}.{{kind}}.{{namespace}}'
      ack_timeout: 3s
      connect_timeout: 2s
      retry_max_backoff: 2s
      retry_base_backoff: 100ms
{output_extra}
"#,
        data = env.data_dir.display(),
        url = env.emu.url(),
        ca = env.ca_file.display(),
        token = env.token_file.display(),
        nats = nats_url(),
    ))
}

/// Every Event occurrence in the stream, and how many messages hold one.
async fn stored_events(stream: &str) -> (HashSet<(String, String)>, usize) {
    let all = read_all(stream).await;
    let events: Vec<_> = all.iter().filter(|m| m.body["kind"] == "k8s_event").collect();
    let set = events
        .iter()
        .map(|m| (m.body["uid"].as_str().unwrap_or("").to_string(), m.body["resource_version"].as_str().unwrap_or("").to_string()))
        .collect();
    (set, events.len())
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_delivery_loses_and_repeats_no_message() {
    let _turn = SERVER.lock().await;
    let env = Env::new().await;
    let (stream, prefix) = unique();
    let config = pipeline_config(&env, &stream, &prefix, "      batch.records: 100");
    let mut expected = HashSet::new();
    for i in 0..3000 {
        let e = env.emu.create_event(spec(i));
        expected.insert((e.uid, e.resource_version));
    }
    let emu = env.emu.clone();
    let writer = tokio::spawn(async move {
        let mut made = Vec::new();
        for i in 0..120 {
            for j in 0..25 {
                let e = emu.create_event(spec(10_000 + i * 25 + j));
                made.push((e.uid, e.resource_version));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        made
    });
    let mut kills_mid_delivery = 0;
    for run in 0..12 {
        let mut child = spawn_kubetrail(&config, env.dir.path(), run);
        let before = message_count(&stream).await;
        let t = Instant::now();
        while message_count(&stream).await == before && t.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(fastrand::u64(20..400))).await;
        let at_kill = message_count(&stream).await;
        signal(&child, "KILL");
        let _ = child.wait();
        if at_kill > before {
            kills_mid_delivery += 1;
        }
    }
    expected.extend(writer.await.unwrap());
    assert!(kills_mid_delivery >= 10, "only {kills_mid_delivery} kills while messages were being published");
    let mut child = spawn_kubetrail(&config, env.dir.path(), 99);
    let t = Instant::now();
    while (message_count(&stream).await as usize) < expected.len() && t.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
    let (seen, n) = stored_events(&stream).await;
    let missing: Vec<_> = expected.difference(&seen).collect();
    assert!(missing.is_empty(), "{} missing, e.g. {:?}", missing.len(), &missing[..missing.len().min(5)]);
    assert_eq!(n, seen.len(), "an Event occurrence is in two messages");
    assert_eq!(n, expected.len(), "messages that were never made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_for_60_seconds_then_everything_arrives_with_bounded_memory() {
    let _turn = SERVER.lock().await;
    let env = Env::new().await;
    let (stream, prefix) = unique();
    let config = pipeline_config(&env, &stream, &prefix, "");
    let mut expected = HashSet::new();
    for i in 0..500 {
        let e = env.emu.create_event(spec(i));
        expected.insert((e.uid, e.resource_version));
    }
    let mut child = spawn_kubetrail(&config, env.dir.path(), 0);
    let t = Instant::now();
    while message_count(&stream).await < 500 && t.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(message_count(&stream).await, 500, "first Events delivered");
    let rss_before = rss_kib(child.id()).unwrap_or(0);

    services("nats-stop");
    let mut peak = rss_before;
    let down = Instant::now();
    let mut i = 500;
    while down.elapsed() < Duration::from_secs(60) {
        for _ in 0..50 {
            let e = env.emu.create_event(spec(i));
            expected.insert((e.uid, e.resource_version));
            i += 1;
        }
        peak = peak.max(rss_kib(child.id()).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    services("nats-start");
    let t = Instant::now();
    while (message_count(&stream).await as usize) < expected.len() && t.elapsed() < Duration::from_secs(120) {
        peak = peak.max(rss_kib(child.id()).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    signal(&child, "TERM");
    let status = child.wait().unwrap();
    let (seen, n) = stored_events(&stream).await;
    let missing = expected.difference(&seen).count();
    assert_eq!(missing, 0, "{missing} of {} Events missing after the server came back", expected.len());
    assert_eq!(n, expected.len());
    assert!(status.success());
    eprintln!("kubetrail RSS: {} KiB before the outage, peak {} KiB", rss_before, peak);
    assert!(peak < 160 * 1024, "kubetrail's memory grew to {peak} KiB while the server was down");
}
