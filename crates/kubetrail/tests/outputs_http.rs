//! Integration tests of the HTTP outputs (`http`, `loki`, `elasticsearch`) against in-process
//! servers that check what goes over the wire: bodies (JSON lines, JSON arrays, Loki push
//! JSON, Elasticsearch bulk NDJSON), headers, authentication, gzip, TLS with a client
//! certificate, the mapping of answers to retry or dead letter, Elasticsearch's per-item
//! retries; and one run of the whole pipeline from the Kubernetes emulator into all three.

mod common;
mod outputs_http_common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use kubetrail::outputs::elasticsearch::ElasticsearchOutput;
use kubetrail::outputs::http::HttpOutput;
use kubetrail::outputs::http_common::DeadLetterWriter;
use kubetrail::outputs::loki::LokiOutput;
use kubetrail::pipeline::{DeliveryError, Output};
use kubetrail_core::Timestamp;
use kubetrail_core::config::{ConfigError, Section, SectionKind};
use outputs_http_common::*;
use serde_json::{Value, json};

fn section(name: &str, pairs: &[(&str, &str)]) -> Section {
    Section::from_pairs(SectionKind::Output, name, pairs)
}

fn build<T>(
    name: &str,
    pairs: &[(&str, &str)],
    f: impl Fn(&mut Section) -> Result<T, ConfigError>,
) -> T {
    let mut s = section(name, pairs);
    let o = f(&mut s).unwrap_or_else(|e| panic!("{name} builds: {e}"));
    s.finish().unwrap();
    o
}

fn http(pairs: &[(&str, &str)]) -> HttpOutput {
    build("http", pairs, HttpOutput::from_section)
}

fn loki(pairs: &[(&str, &str)]) -> LokiOutput {
    build("loki", pairs, LokiOutput::from_section)
}

fn es(pairs: &[(&str, &str)]) -> ElasticsearchOutput {
    build("elasticsearch", pairs, ElasticsearchOutput::from_section)
}

fn retryable(r: Result<Option<String>, DeliveryError>) -> (String, Option<Duration>) {
    match r {
        Err(DeliveryError::Retryable {
            message,
            retry_after,
        }) => (message, retry_after),
        other => panic!("expected Retryable, got {other:?}"),
    }
}

fn rejected(r: Result<Option<String>, DeliveryError>) -> String {
    match r {
        Err(DeliveryError::Rejected { message }) => message,
        other => panic!("expected Rejected, got {other:?}"),
    }
}

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

// ---------------------------------------------------------------------------------------- http

#[tokio::test]
async fn http_json_lines_with_headers_and_basic_auth() {
    let server = TestServer::always(Reply::status(200).with_body("ok")).await;
    let url = format!("{}/ingest?src=k8s", server.url());
    let mut o = http(&[
        ("url", &url),
        ("header", "X-Team sre, platform"),
        ("http_user", "kube"),
        ("http_passwd", "pa ss:word"),
    ]);
    let batch = records(1, 3);
    o.deliver(&batch).await.unwrap();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(
        (r.method.as_str(), r.target.as_str()),
        ("POST", "/ingest?src=k8s")
    );
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(r.header("x-team"), Some("sre, platform"));
    assert_eq!(
        r.header("authorization"),
        Some(basic("kube", "pa ss:word").as_str())
    );
    assert_eq!(r.header("content-encoding"), None);
    let expected: String = batch
        .iter()
        .map(|i| format!("{}\n", String::from_utf8_lossy(&i.data)))
        .collect();
    assert_eq!(r.text(), expected);
}

#[tokio::test]
async fn http_json_array_gzip_and_bearer_token() {
    let server = TestServer::always(Reply::status(204)).await;
    let text = format!(
        "pipeline:\n  outputs:\n    - name: http\n      host: 127.0.0.1\n      port: {}\n      uri: /v1/logs\n      format: json\n      compress: gzip\n      bearer_token: s3cret\n      headers:\n        X-Source: kubetrail\n        Content-Type: application/vnd.custom+json\n",
        server.addr.port()
    );
    let mut c =
        kubetrail_core::config::Config::parse(&text, std::path::Path::new("t.yaml")).unwrap();
    let mut o = HttpOutput::from_section(&mut c.outputs[0]).unwrap();
    c.outputs[0].finish().unwrap();
    let batch = records(1, 4);
    o.deliver(&batch).await.unwrap();
    let r = &server.requests()[0];
    assert_eq!(r.target, "/v1/logs");
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_ne!(r.raw, r.body, "the body on the wire is compressed");
    assert_eq!(r.header("authorization"), Some("Bearer s3cret"));
    assert_eq!(r.header("x-source"), Some("kubetrail"));
    // A custom Content-Type replaces the default one.
    assert_eq!(r.headers.get_all("content-type").iter().count(), 1);
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.custom+json")
    );
    let want: Vec<Value> = batch
        .iter()
        .map(|i| serde_json::from_slice(&i.data).unwrap())
        .collect();
    assert_eq!(r.json(), Value::Array(want));
}

#[tokio::test]
async fn http_bearer_token_file_is_read_again_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let token = write(dir.path(), "token", "first\n");
    let server = TestServer::always(Reply::status(200)).await;
    let mut o = http(&[
        ("url", &server.url()),
        ("bearer_token_file", token.to_str().unwrap()),
    ]);
    o.deliver(&records(1, 1)).await.unwrap();
    let tmp = write(dir.path(), "token.new", "second-token");
    std::fs::rename(tmp, &token).unwrap();
    o.deliver(&records(2, 1)).await.unwrap();
    let auths: Vec<String> = server
        .requests()
        .iter()
        .map(|r| r.header("authorization").unwrap().to_string())
        .collect();
    assert_eq!(auths, vec!["Bearer first", "Bearer second-token"]);
    // A missing token file is a retryable failure that names the file and not the token.
    std::fs::remove_file(&token).unwrap();
    let (m, _) = retryable(o.deliver(&records(3, 1)).await);
    assert!(m.contains("token") && !m.contains("second-token"), "{m}");
}

#[tokio::test]
async fn http_answers_map_to_retry_or_dead_letter() {
    let s400 =
        TestServer::always(Reply::status(400).with_body("{\"error\":\"bad payload\"}")).await;
    let m = rejected(http(&[("url", &s400.url())]).deliver(&records(1, 2)).await);
    assert!(m.contains("400") && m.contains("bad payload"), "{m}");
    let s403 = TestServer::always(Reply::status(403)).await;
    rejected(http(&[("url", &s403.url())]).deliver(&records(1, 2)).await);

    let s429 = TestServer::always(Reply::status(429).with_header("Retry-After", "7")).await;
    let (m, after) = retryable(http(&[("url", &s429.url())]).deliver(&records(1, 2)).await);
    assert_eq!(after, Some(Duration::from_secs(7)), "{m}");

    let when = time::OffsetDateTime::from(SystemTime::now() + Duration::from_secs(30));
    let date = format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        &when.weekday().to_string()[..3],
        when.day(),
        &when.month().to_string()[..3],
        when.year(),
        when.hour(),
        when.minute(),
        when.second()
    );
    let s503 = TestServer::always(Reply::status(503).with_header("Retry-After", &date)).await;
    let (_, after) = retryable(http(&[("url", &s503.url())]).deliver(&records(1, 2)).await);
    let after = after.expect("an HTTP-date Retry-After is honoured");
    assert!(
        after > Duration::from_secs(25) && after <= Duration::from_secs(30),
        "{after:?} from {date}"
    );

    for status in [408, 500, 502] {
        let s = TestServer::always(Reply::status(status)).await;
        let (_, after) = retryable(http(&[("url", &s.url())]).deliver(&records(1, 1)).await);
        assert_eq!(after, None);
    }

    // Nobody listening: retryable.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (m, _) = retryable(
        http(&[("port", &port.to_string())])
            .deliver(&records(1, 1))
            .await,
    );
    assert!(m.contains(&port.to_string()), "{m}");
}

#[tokio::test]
async fn http_over_tls_with_a_ca_and_a_client_certificate() {
    let pki = Pki::new("test CA");
    let (cert, key) = pki.server_cert();
    let server = TestServer::start(
        Some(server_tls(&cert, &key, Some(&pki.ca_pem))),
        Arc::new(|_| Reply::status(200)),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.pem", &pki.ca_pem);
    let (ccert, ckey) = pki.client_cert("kubetrail");
    let crt = write(dir.path(), "client.crt", &ccert);
    let key_file = write(dir.path(), "client.key", &ckey);
    let port = server.addr.port().to_string();
    let mut o = http(&[
        ("host", "127.0.0.1"),
        ("port", &port),
        ("tls", "on"),
        ("tls.ca_file", ca.to_str().unwrap()),
        ("tls.crt_file", crt.to_str().unwrap()),
        ("tls.key_file", key_file.to_str().unwrap()),
    ]);
    o.deliver(&records(1, 2)).await.unwrap();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    let presented = reqs[0]
        .client_cert
        .clone()
        .expect("a client certificate was presented");
    use rustls_pki_types::pem::PemObject;
    let want = rustls_pki_types::CertificateDer::from_pem_slice(ccert.as_bytes()).unwrap();
    assert_eq!(presented, want.to_vec());

    // Without the client certificate the server refuses the handshake: retryable.
    let mut anon = http(&[
        ("url", &server.url()),
        ("tls.ca_file", ca.to_str().unwrap()),
    ]);
    retryable(anon.deliver(&records(1, 1)).await);
    // Another CA: the certificate is not trusted; the message names the CA file.
    let other = write(dir.path(), "other.pem", &Pki::new("other").ca_pem);
    let mut wrong = http(&[
        ("url", &server.url()),
        ("tls.ca_file", other.to_str().unwrap()),
        ("tls.crt_file", crt.to_str().unwrap()),
        ("tls.key_file", key_file.to_str().unwrap()),
    ]);
    let (m, _) = retryable(wrong.deliver(&records(1, 1)).await);
    assert!(m.contains("other.pem"), "{m}");
    assert_eq!(server.requests().len(), 1);
}

// ---------------------------------------------------------------------------------------- loki

#[tokio::test]
async fn loki_push_json_labels_order_tenant_and_gzip() {
    let server = TestServer::always(Reply::status(204)).await;
    let mut o = loki(&[
        ("url", &server.url()),
        ("tenant_id", "team-a"),
        ("compress", "gzip"),
        ("structured_metadata", "record_id=$id, pod=$name"),
    ]);
    // Out of time order on purpose: r4 (00:00:04) before r1 .. r3.
    let mut batch = records(4, 1);
    batch.extend(records(1, 3));
    o.deliver(&batch).await.unwrap();
    let r = &server.requests()[0];
    assert_eq!(
        (r.method.as_str(), r.target.as_str()),
        ("POST", "/loki/api/v1/push")
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-scope-orgid"), Some("team-a"));
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    let body = r.json();
    let streams = body["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 2, "{body}");
    let by_ns: HashMap<&str, &Value> = streams
        .iter()
        .map(|s| (s["stream"]["namespace"].as_str().unwrap(), s))
        .collect();
    assert_eq!(
        by_ns["even"]["stream"],
        json!({"job": "kubetrail", "kind": "k8s_event", "namespace": "even", "source": "kubernetes_events.0"})
    );
    let originals: HashMap<String, Value> = batch
        .iter()
        .map(|i| (i.id.clone(), serde_json::from_slice(&i.data).unwrap()))
        .collect();
    let mut seen = Vec::new();
    for s in streams {
        let values = s["values"].as_array().unwrap();
        let mut last = 0i128;
        for v in values {
            let v = v.as_array().unwrap();
            assert_eq!(v.len(), 3, "[ts, line, metadata]");
            let ns: i128 = v[0]
                .as_str()
                .expect("the timestamp is a string")
                .parse()
                .unwrap();
            assert!(ns >= last, "values are in time order");
            last = ns;
            let line: Value = serde_json::from_str(v[1].as_str().unwrap()).unwrap();
            let id = line["id"].as_str().unwrap().to_string();
            assert_eq!(line, originals[&id], "the line is the record");
            let t = Timestamp::parse_rfc3339(line["time"].as_str().unwrap()).unwrap();
            assert_eq!(ns, t.unix_nanos() as i128);
            assert_eq!(v[2], json!({"record_id": id, "pod": line["name"]}));
            seen.push(id);
        }
    }
    seen.sort();
    assert_eq!(seen, vec!["r1", "r2", "r3", "r4"]);
}

#[tokio::test]
async fn loki_refusals_and_rate_limits() {
    let s =
        TestServer::always(Reply::status(400).with_body("entry for stream has timestamp too old"))
            .await;
    let m = rejected(loki(&[("url", &s.url())]).deliver(&records(1, 1)).await);
    assert!(m.contains("too old"), "{m}");
    let s = TestServer::always(
        Reply::status(429)
            .with_header("retry-after", "2")
            .with_body("rate limited"),
    )
    .await;
    let (_, after) = retryable(loki(&[("url", &s.url())]).deliver(&records(1, 1)).await);
    assert_eq!(after, Some(Duration::from_secs(2)));
}

// ------------------------------------------------------------------------------- elasticsearch

#[tokio::test]
async fn elasticsearch_bulk_ndjson_with_ids_dated_indices_and_auth() {
    let (fake, server) = FakeEs::start(None).await;
    let mut o = es(&[
        ("url", &server.url()),
        ("http_user", "elastic"),
        ("http_passwd", "changeme"),
        ("compress", "gzip"),
    ]);
    let mut batch = records(1, 3);
    // One record from another day goes to that day's index.
    batch[2].data = serde_json::to_vec(
        &json!({"id": "r3", "time": "2026-11-26T23:59:59Z", "kind": "k8s_event"}),
    )
    .unwrap()
    .into();
    o.deliver(&batch).await.unwrap();
    let r = &server.requests()[0];
    assert!(r.target.starts_with("/_bulk?filter_path="), "{}", r.target);
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(
        r.header("authorization"),
        Some(basic("elastic", "changeme").as_str())
    );
    let parsed = parse_bulk(&r.body).unwrap();
    let got: Vec<(String, String)> = parsed
        .iter()
        .map(|(i, id, _)| (i.clone(), id.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("kubetrail-2026.11.27".to_string(), "r1".to_string()),
            ("kubetrail-2026.11.27".to_string(), "r2".to_string()),
            ("kubetrail-2026.11.26".to_string(), "r3".to_string()),
        ]
    );
    let (_, _, doc) = &parsed[0];
    let original: Value = serde_json::from_slice(&batch[0].data).unwrap();
    assert_eq!(doc["@timestamp"], original["time"]);
    assert_eq!(doc["message"], original["message"]);
    assert_eq!(fake.ids(), vec!["r3", "r1", "r2"]); // ordered by (index, id)
}

#[tokio::test]
async fn elasticsearch_per_item_failures_resend_only_those_and_dead_letter_the_refused() {
    let (fake, server) = FakeEs::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let mut o = es(&[("url", &server.url())]);
    let dl = DeadLetterWriter::new(dir.path().join("dead-letter"), "es.0");
    o.set_dead_letters(dl.clone());
    let batch = records(1, 5);
    fake.push(EsScript::Items(vec![
        None,
        Some(429),
        Some(400),
        Some(429),
        None,
    ]));
    let (m, _) = retryable(o.deliver(&batch).await);
    assert!(m.contains("2 of 5"), "{m}");
    // The refused one is in the dead-letter file at once, with its reason.
    let text = std::fs::read_to_string(dl.path()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["id"], "r3");
    assert_eq!(lines[0]["output"], "es.0");
    assert!(
        lines[0]["reason"]
            .as_str()
            .unwrap()
            .contains("mapper_parsing_exception"),
        "{}",
        lines[0]
    );
    assert_eq!(
        lines[0]["record"],
        serde_json::from_slice::<Value>(&batch[2].data).unwrap()
    );

    // The runner delivers the same batch again: only the two 429s are sent.
    o.deliver(&batch).await.unwrap();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    let resent: Vec<String> = parse_bulk(&reqs[1].body)
        .unwrap()
        .into_iter()
        .map(|(_, id, _)| id)
        .collect();
    assert_eq!(resent, vec!["r2", "r4"]);
    let mut ids = fake.ids();
    ids.sort();
    assert_eq!(ids, vec!["r1", "r2", "r4", "r5"]);
    assert_eq!(
        std::fs::read_to_string(dl.path()).unwrap().lines().count(),
        1,
        "dead-lettered once"
    );

    // A new batch starts afresh.
    o.deliver(&records(6, 2)).await.unwrap();
    let sent: Vec<String> = parse_bulk(&server.requests()[2].body)
        .unwrap()
        .into_iter()
        .map(|(_, id, _)| id)
        .collect();
    assert_eq!(sent, vec!["r6", "r7"]);
}

#[tokio::test]
async fn elasticsearch_refused_documents_stay_pending_until_the_dead_letter_is_written() {
    let (fake, server) = FakeEs::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let blocker = write(dir.path(), "not-a-dir", "");
    let mut o = es(&[("url", &server.url())]);
    o.set_dead_letters(DeadLetterWriter::new(&blocker, "es.0"));
    let batch = records(1, 2);
    fake.push(EsScript::Items(vec![Some(400), None]));
    let (m, _) = retryable(o.deliver(&batch).await);
    assert!(m.contains("dead-letter"), "{m}");
    // The disk is fixed: the refused document is written, nothing is sent again.
    let good = DeadLetterWriter::new(dir.path().join("dl"), "es.0");
    o.set_dead_letters(good.clone());
    o.deliver(&batch).await.unwrap();
    assert_eq!(server.requests().len(), 1);
    let text = std::fs::read_to_string(good.path()).unwrap();
    assert_eq!(text.lines().count(), 1);
    assert!(text.contains("\"id\":\"r1\""), "{text}");
    assert_eq!(fake.ids(), vec!["r2"]);
}

#[tokio::test]
async fn elasticsearch_retry_after_a_lost_answer_meets_409_and_never_duplicates() {
    let (fake, server) = FakeEs::start(None).await;
    let mut o = es(&[("url", &server.url())]);
    let batch = records(1, 3);
    fake.push(EsScript::IndexThenFail(502));
    retryable(o.deliver(&batch).await);
    // Indexed, but we could not know: everything is sent again and meets 409 = delivered.
    o.deliver(&batch).await.unwrap();
    assert_eq!(server.requests().len(), 2);
    assert_eq!(parse_bulk(&server.requests()[1].body).unwrap().len(), 3);
    assert_eq!(fake.docs.lock().unwrap().len(), 3);
    // A batch delivered again after a crash before its acknowledgement: all 409, all fine.
    o.deliver(&batch).await.unwrap();
    assert_eq!(fake.docs.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn elasticsearch_without_a_dead_letter_writer_rejects_the_batch_naming_the_refused() {
    let (fake, server) = FakeEs::start(None).await;
    let mut o = es(&[("url", &server.url())]);
    let batch = records(1, 3);
    fake.push(EsScript::Items(vec![None, Some(400), Some(503)]));
    retryable(o.deliver(&batch).await);
    let m = rejected(o.deliver(&batch).await);
    assert!(
        m.contains("1 of 3") && m.contains("r2") && m.contains("mapper_parsing_exception"),
        "{m}"
    );
    assert_eq!(parse_bulk(&server.requests()[1].body).unwrap().len(), 1);
    let mut ids = fake.ids();
    ids.sort();
    assert_eq!(ids, vec!["r1", "r3"]);
}

#[tokio::test]
async fn elasticsearch_whole_answers() {
    let (fake, server) = FakeEs::start(None).await;
    let mut o = es(&[
        ("url", &server.url()),
        ("index", "audit"),
        ("pipeline", "k8s"),
    ]);
    fake.push(EsScript::Whole(
        Reply::status(429).with_header("Retry-After", "3"),
    ));
    fake.push(EsScript::Whole(
        Reply::status(200).with_body("<html>proxy</html>"),
    ));
    fake.push(EsScript::Whole(
        Reply::status(401).with_body("{\"error\":\"security_exception\"}"),
    ));
    let batch = records(1, 2);
    assert_eq!(
        retryable(o.deliver(&batch).await).1,
        Some(Duration::from_secs(3))
    );
    let (m, _) = retryable(o.deliver(&batch).await);
    assert!(m.contains("unreadable bulk answer"), "{m}");
    let m = rejected(o.deliver(&batch).await);
    assert!(m.contains("401") && m.contains("security_exception"), "{m}");
    // After a rejection the next delivery is a fresh batch: both documents are sent.
    o.deliver(&batch).await.unwrap();
    let reqs = server.requests();
    assert!(
        reqs[3].target.ends_with("&pipeline=k8s"),
        "{}",
        reqs[3].target
    );
    let sent = parse_bulk(&reqs[3].body).unwrap();
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|(i, _, _)| i == "audit"));
}

#[tokio::test]
async fn elasticsearch_over_tls() {
    let pki = Pki::new("es CA");
    let (cert, key) = pki.server_cert();
    let (fake, server) = FakeEs::start(Some(server_tls(&cert, &key, None))).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.pem", &pki.ca_pem);
    let mut o = es(&[
        ("url", &server.url()),
        ("tls.ca_file", ca.to_str().unwrap()),
    ]);
    o.deliver(&records(1, 2)).await.unwrap();
    assert_eq!(fake.ids().len(), 2);
    // tls.verify off accepts the unknown CA.
    let mut o = es(&[("url", &server.url()), ("tls.verify", "off")]);
    o.deliver(&records(3, 1)).await.unwrap();
    assert_eq!(fake.ids().len(), 3);
}

// ---------------------------------------------------------------------------------- end to end

fn spec(i: usize) -> kubetrail_emulator::EventSpec {
    kubetrail_emulator::EventSpec::simple(
        ["a", "b"][i % 2],
        "Pod",
        format!("p-{i}"),
        "BackOff",
        format!("m {i}"),
    )
}

/// Events from the emulator through the real pipeline into the three outputs, with
/// Elasticsearch failing some requests along the way: every Event arrives in each, and
/// Elasticsearch holds each exactly once.
///
/// With `by_name`, the outputs are configured by their names in the YAML (needs them wired
/// in topology/build.rs); otherwise the plan is built with `stdout` placeholders that are
/// swapped for the real outputs, which runs the same pipeline without that wiring.
async fn end_to_end(by_name: bool) {
    let env = common::Env::new().await;
    let (fake, es_server) = FakeEs::start(None).await;
    let loki_server = TestServer::always(Reply::status(204)).await;
    let http_server = TestServer::always(Reply::status(200)).await;
    fake.push(EsScript::Whole(
        Reply::status(503).with_header("Retry-After", "0"),
    ));
    fake.push(EsScript::IndexThenFail(500));
    let mut expected = HashSet::new();
    for i in 0..40 {
        let e = env.emu.create_event(spec(i));
        expected.insert(format!("{}:{}", e.uid, e.resource_version));
    }
    let (es_name, loki_name, http_name) = if by_name {
        (
            format!("elasticsearch\n      url: {}", es_server.url()),
            format!("loki\n      url: {}", loki_server.url()),
            format!("http\n      url: {}", http_server.url()),
        )
    } else {
        (
            "stdout".to_string(),
            "stdout".to_string(),
            "stdout".to_string(),
        )
    };
    let yaml = format!(
        r#"service:
  data_dir: {data}
  grace: 5s
pipeline:
  inputs:
    - name: kubernetes_events
      tag: k8s.events
      kube_url: {url}
      kube_ca_file: {ca}
      kube_token_file: {token}
      interval_nsec: 100000000
  outputs:
    - name: {es_name}
      alias: es
      match: '*'
      retry_base_backoff: 50ms
      retry_max_backoff: 200ms
      batch.records: 16
    - name: {loki_name}
      alias: loki
      match: '*'
    - name: {http_name}
      alias: http
      match: '*'
"#,
        data = env.data_dir.display(),
        url = env.emu.url(),
        ca = env.ca_file.display(),
        token = env.token_file.display(),
    );
    let config =
        kubetrail_core::config::Config::parse(&yaml, &env.dir.path().join("c.yaml")).unwrap();
    let mut plan = kubetrail::topology::Plan::from_config(config).unwrap();
    if !by_name {
        let mut es_out = es(&[("url", &es_server.url())]);
        es_out.set_dead_letters(DeadLetterWriter::new(
            env.data_dir.join("dead-letter"),
            "es",
        ));
        plan.outputs[0].output = Box::new(es_out);
        plan.outputs[1].output = Box::new(loki(&[("url", &loki_server.url())]));
        plan.outputs[2].output = Box::new(http(&[("url", &http_server.url())]));
    }

    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(plan.run(async move {
        let _ = rx.await;
    }));
    let loki_ids = || -> Vec<String> {
        let mut ids = Vec::new();
        for r in loki_server.requests() {
            for s in r.json()["streams"].as_array().unwrap() {
                for v in s["values"].as_array().unwrap() {
                    let line: Value = serde_json::from_str(v[1].as_str().unwrap()).unwrap();
                    ids.push(line["id"].as_str().unwrap().to_string());
                }
            }
        }
        ids
    };
    let http_ids = || -> Vec<String> {
        let mut ids = Vec::new();
        for r in http_server.requests() {
            for l in r.text().lines() {
                ids.push(
                    serde_json::from_str::<Value>(l).unwrap()["id"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                );
            }
        }
        ids
    };
    let n = expected.len();
    let done = common::wait_until(Duration::from_secs(30), || {
        fake.ids().len() >= n && loki_ids().len() >= n && http_ids().len() >= n
    })
    .await;
    let _ = tx.send(());
    run.await.unwrap().unwrap();
    assert!(
        done,
        "es {} loki {} http {} of {n}",
        fake.ids().len(),
        loki_ids().len(),
        http_ids().len()
    );
    let es_ids: HashSet<String> = fake.ids().into_iter().collect();
    assert_eq!(es_ids, expected, "Elasticsearch holds every Event");
    assert_eq!(fake.docs.lock().unwrap().len(), n, "and each once");
    assert_eq!(loki_ids().into_iter().collect::<HashSet<_>>(), expected);
    assert_eq!(http_ids().into_iter().collect::<HashSet<_>>(), expected);
    // One refused request, one whose answer was lost, then the rest (batches of 16 at most).
    assert!(
        es_server.requests().len() >= 2 + n.div_ceil(16),
        "{} requests",
        es_server.requests().len()
    );
    assert!(
        !env.data_dir.join("dead-letter").exists(),
        "nothing was dead-lettered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_events_into_elasticsearch_loki_and_http() {
    end_to_end(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_configured_by_name() {
    end_to_end(true).await;
}

#[tokio::test(start_paused = true)]
async fn a_server_that_never_answers_times_out_as_retryable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accepts and holds connections, never answering.
    let hold = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = listener.accept().await {
            conns.push(c);
        }
    });
    let mut o = http(&[("url", &format!("http://{addr}")), ("timeout", "5s")]);
    let started = tokio::time::Instant::now();
    let (m, _) = retryable(o.deliver(&records(1, 1)).await);
    assert!(m.contains("within 5s"), "{m}");
    assert!(started.elapsed() >= Duration::from_secs(5));
    hold.abort();
}
