//! The `opentelemetry` output against an in-process OTLP/HTTP receiver (hyper, plain and TLS
//! with rcgen-made certificates) that decodes every request with the official OTLP protobuf
//! definitions (the `opentelemetry-proto` types): resource, scope, severity, timestamps and
//! attributes on the wire, gzip, authentication headers, client certificates, the status
//! judgement (400 rejects, 503 with Retry-After retries, partial success is success), and the
//! whole pipeline from the Kubernetes API emulator to the receiver.

mod common;

use std::collections::VecDeque;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use kubetrail::outputs::opentelemetry::OpenTelemetryOutput;
use kubetrail::pipeline::{DeliveryError, Output};
use kubetrail_core::config::{Section, SectionKind};
use kubetrail_core::{Record, Timestamp};
use kubetrail_state::QueueItem;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, SeverityNumber};
use prost::Message;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::value::RawValue;
use tokio::net::TcpListener;

// ---------------------------------------------------------------- certificates

struct Ca {
    pem: String,
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            cert,
            key,
        }
    }

    fn leaf(&self, names: &[&str], purpose: ExtendedKeyUsagePurpose) -> (String, String) {
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("client"),
        );
        p.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

// ---------------------------------------------------------------- the receiver

/// One request as the receiver saw it, body already gunzipped when it was compressed.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    headers: http::HeaderMap,
    body: Vec<u8>,
    wire_len: usize,
    client_cert: bool,
    /// The status the receiver answered with.
    status: u16,
}

impl Seen {
    fn request(&self) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest::decode(self.body.as_slice())
            .expect("body is an ExportLogsServiceRequest")
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// An answer the receiver gives to the next request.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn ok_partial(rejected: i64) -> Reply {
        let body = ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess {
                rejected_log_records: rejected,
                error_message: "too old".into(),
            }),
        }
        .encode_to_vec();
        Reply {
            status: 200,
            headers: vec![("content-type", "application/x-protobuf".into())],
            body,
        }
    }
}

#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<Seen>>>,
    replies: Arc<Mutex<VecDeque<Reply>>>,
}

impl Receiver {
    fn push(&self, r: Reply) {
        self.replies.lock().unwrap().push_back(r);
    }
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    /// Every log record accepted (answered with 2xx), in order.
    fn records(&self) -> Vec<(Vec<KeyValue>, LogRecord)> {
        let mut out = Vec::new();
        for s in self
            .seen()
            .iter()
            .filter(|s| s.method == "POST" && (200..300).contains(&s.status))
        {
            for rl in s.request().resource_logs {
                let res = rl.resource.map(|r| r.attributes).unwrap_or_default();
                for sl in rl.scope_logs {
                    for lr in sl.log_records {
                        out.push((res.clone(), lr));
                    }
                }
            }
        }
        out
    }

    async fn handle(
        self,
        req: Request<Incoming>,
        client_cert: bool,
    ) -> Result<Response<Full<Bytes>>, hyper::Error> {
        let (parts, body) = req.into_parts();
        let wire = body.collect().await?.to_bytes().to_vec();
        let body = if parts
            .headers
            .get("content-encoding")
            .is_some_and(|v| v == "gzip")
        {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(wire.as_slice())
                .read_to_end(&mut out)
                .expect("valid gzip");
            out
        } else {
            wire.clone()
        };
        let reply = self.replies.lock().unwrap().pop_front().unwrap_or(Reply {
            status: 200,
            headers: vec![("content-type", "application/x-protobuf".into())],
            body: ExportLogsServiceResponse::default().encode_to_vec(),
        });
        self.seen.lock().unwrap().push(Seen {
            method: parts.method.to_string(),
            path: parts
                .uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            headers: parts.headers,
            body,
            wire_len: wire.len(),
            client_cert,
            status: reply.status,
        });
        let mut resp = Response::builder().status(reply.status);
        for (k, v) in reply.headers {
            resp = resp.header(k, v);
        }
        Ok(resp.body(Full::new(Bytes::from(reply.body))).unwrap())
    }
}

/// Serves until the test ends. With `tls`, presents `(cert, key)` and, with `client_ca`,
/// requires a client certificate from that CA.
async fn serve(tls: Option<(&(String, String), Option<&str>)>) -> (Receiver, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let receiver = Receiver::default();
    let acceptor = tls.map(|((crt, key), client_ca)| {
        let chain = CertificateDer::pem_slice_iter(crt.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let b = rustls::ServerConfig::builder_with_provider(kubetrail_net::crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap();
        let b = match client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                    roots.add(c.unwrap()).unwrap();
                }
                let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    kubetrail_net::crypto_provider(),
                )
                .build()
                .unwrap();
                b.with_client_cert_verifier(v)
            }
            None => b.with_no_client_auth(),
        };
        let mut cfg = b.with_single_cert(chain, key).unwrap();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
    });
    let r = receiver.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let r = r.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let builder = hyper::server::conn::http1::Builder::new();
                match acceptor {
                    None => {
                        let svc = service_fn(move |req| r.clone().handle(req, false));
                        let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
                    }
                    Some(a) => {
                        // A failed handshake (wrong CA, no client certificate) just closes.
                        let Ok(tls) = a.accept(tcp).await else { return };
                        let has_cert = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .is_some_and(|c| !c.is_empty());
                        let svc = service_fn(move |req| r.clone().handle(req, has_cert));
                        let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
                    }
                }
            });
        }
    });
    (receiver, addr)
}

// ---------------------------------------------------------------- records

const POD_EVENT: &str = r#"{"kind":"Event","apiVersion":"v1","metadata":{"name":"web-0.18ebbf","namespace":"shop","uid":"ev-1","resourceVersion":"305"},"involvedObject":{"kind":"Pod","namespace":"shop","name":"web-0","uid":"pod-uid-1","apiVersion":"v1"},"reason":"BackOff","message":"Back-off pulling image \"nginx:nope\"","source":{"component":"kubelet","host":"node-1"},"firstTimestamp":"2026-11-27T00:29:51Z","lastTimestamp":"2026-11-27T00:30:51Z","count":3,"type":"Warning"}"#;
const AUDIT_500: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a-1","stage":"ResponseComplete","requestURI":"/apis/apps/v1/namespaces/shop/deployments/web","verb":"patch","user":{"username":"ci-bot","groups":["system:authenticated"]},"sourceIPs":["192.0.2.10"],"userAgent":"argocd","objectRef":{"resource":"deployments","namespace":"shop","name":"web","apiGroup":"apps","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":500},"requestReceivedTimestamp":"2026-11-27T00:16:44.307833Z","stageTimestamp":"2026-11-27T00:16:44.308590Z"}"#;

fn batch() -> Vec<QueueItem> {
    let src: Arc<str> = Arc::from("kubernetes_events.0");
    let cx = kubetrail::sources::kubernetes_events::normalize::NormalizeContext {
        api: kubetrail::sources::kubernetes_events::normalize::EventsApi::CoreV1,
        source: &src,
        tag: &src,
        dedup_scope: &src,
        raw_format: false,
        updates: kubetrail::sources::kubernetes_events::normalize::Updates::All,
    };
    let ev = kubetrail::sources::kubernetes_events::normalize::normalize(
        RawValue::from_string(POD_EVENT.to_string()).unwrap(),
        kubetrail::sources::kubernetes_events::normalize::Observed::Added,
        &cx,
    )
    .unwrap();
    let asrc: Arc<str> = Arc::from("audit_webhook.0");
    let audit = kubetrail::sources::audit::normalize(
        kubetrail::sources::audit::parse_line(AUDIT_500.as_bytes()).unwrap(),
        &asrc,
        &asrc,
        false,
    );
    let records: Vec<Record> = vec![ev, audit];
    records
        .iter()
        .enumerate()
        .map(|(i, r)| QueueItem {
            seq: i as u64 + 1,
            id: r.id.clone(),
            data: r.encode().into(),
        })
        .collect()
}

fn output(addr: SocketAddr, extra: &[(&str, &str)]) -> OpenTelemetryOutput {
    let port = addr.port().to_string();
    let mut pairs = vec![("host", "127.0.0.1"), ("port", port.as_str())];
    pairs.extend_from_slice(extra);
    let mut s = Section::from_pairs(SectionKind::Output, "opentelemetry", &pairs);
    let o = OpenTelemetryOutput::from_section(&mut s).expect("options are valid");
    s.finish().expect("no unknown keys");
    o
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Any> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn s(attrs: &[KeyValue], key: &str) -> Option<String> {
    match attr(attrs, key) {
        Some(Any::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

fn body(r: &LogRecord) -> String {
    match r.body.as_ref().and_then(|b| b.value.as_ref()) {
        Some(Any::StringValue(s)) => s.clone(),
        other => panic!("body is not a string: {other:?}"),
    }
}

fn nanos(rfc3339: &str) -> u64 {
    Timestamp::parse_rfc3339(rfc3339).unwrap().unix_nanos() as u64
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn plain_http_sends_decodable_otlp_logs_with_k8s_attributes() {
    let (rx, addr) = serve(None).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "token-1\n").unwrap();
    let tf = token_file.display().to_string();
    let mut out = output(
        addr,
        &[
            ("bearer_token_file", &tf),
            ("header", "X-Scope-OrgID tenant-a"),
            ("cluster_name", "prod-eu"),
        ],
    );
    out.open(None).await.unwrap();
    let before = Timestamp::now().unix_nanos() as u64;
    assert_eq!(out.deliver(&batch()).await.unwrap(), None);

    let seen = rx.seen();
    assert_eq!(seen.len(), 1);
    let s0 = &seen[0];
    assert_eq!((s0.method.as_str(), s0.path.as_str()), ("POST", "/v1/logs"));
    assert_eq!(s0.header("content-type"), Some("application/x-protobuf"));
    assert_eq!(s0.header("authorization"), Some("Bearer token-1"));
    assert_eq!(s0.header("x-scope-orgid"), Some("tenant-a"));
    assert!(s0.header("content-encoding").is_none());

    let req = s0.request();
    // One ResourceLogs per object: the pod and the deployment.
    assert_eq!(req.resource_logs.len(), 2);
    for rl in &req.resource_logs {
        let res = &rl.resource.as_ref().unwrap().attributes;
        assert_eq!(s(res, "service.name").as_deref(), Some("kubetrail"));
        assert_eq!(s(res, "k8s.cluster.name").as_deref(), Some("prod-eu"));
        assert_eq!(s(res, "k8s.namespace.name").as_deref(), Some("shop"));
        assert_eq!(rl.scope_logs.len(), 1);
        assert_eq!(rl.scope_logs[0].scope.as_ref().unwrap().name, "kubetrail");
    }
    let pod = &req.resource_logs[0];
    let res = &pod.resource.as_ref().unwrap().attributes;
    assert_eq!(s(res, "k8s.pod.name").as_deref(), Some("web-0"));
    assert_eq!(s(res, "k8s.pod.uid").as_deref(), Some("pod-uid-1"));
    let ev = &pod.scope_logs[0].log_records[0];
    assert_eq!(ev.severity_number, SeverityNumber::Warn as i32);
    assert_eq!(ev.severity_text, "Warning");
    assert_eq!(ev.time_unix_nano, nanos("2026-11-27T00:30:51Z"));
    assert!(
        ev.observed_time_unix_nano >= before,
        "observed time is the send time"
    );
    assert_eq!(body(ev), "Back-off pulling image \"nginx:nope\"");
    assert_eq!(
        s(&ev.attributes, "log.record.uid").as_deref(),
        Some("ev-1:305")
    );
    assert_eq!(
        s(&ev.attributes, "k8s.event.reason").as_deref(),
        Some("BackOff")
    );
    assert_eq!(
        attr(&ev.attributes, "k8s.event.count"),
        Some(&Any::IntValue(3))
    );

    let dep = &req.resource_logs[1];
    assert_eq!(
        s(
            &dep.resource.as_ref().unwrap().attributes,
            "k8s.deployment.name"
        )
        .as_deref(),
        Some("web")
    );
    let au = &dep.scope_logs[0].log_records[0];
    assert_eq!(au.severity_number, SeverityNumber::Error as i32);
    assert_eq!(au.severity_text, "ERROR");
    assert_eq!(au.time_unix_nano, nanos("2026-11-27T00:16:44.308590Z"));
    assert_eq!(body(au), "patch deployments/web in shop by ci-bot → 500");
    assert_eq!(s(&au.attributes, "user.name").as_deref(), Some("ci-bot"));
    assert_eq!(
        s(&au.attributes, "client.address").as_deref(),
        Some("192.0.2.10")
    );
    assert_eq!(
        attr(&au.attributes, "http.response.status_code"),
        Some(&Any::IntValue(500))
    );

    // The token file is read for every request: a rotated token is used at once.
    std::fs::write(&token_file, "token-2").unwrap();
    out.deliver(&batch()).await.unwrap();
    assert_eq!(rx.seen()[1].header("authorization"), Some("Bearer token-2"));
}

#[tokio::test]
async fn gzip_and_basic_auth() {
    let (rx, addr) = serve(None).await;
    let mut out = output(
        addr,
        &[
            ("compress", "gzip"),
            ("http_user", "otel"),
            ("http_passwd", "s3cret"),
            ("logs_uri", "/otlp/v1/logs"),
        ],
    );
    let items = batch();
    out.deliver(&items).await.unwrap();
    let seen = rx.seen();
    assert_eq!(seen[0].path, "/otlp/v1/logs");
    assert_eq!(seen[0].header("content-encoding"), Some("gzip"));
    assert_eq!(
        seen[0].header("authorization"),
        Some("Basic b3RlbDpzM2NyZXQ=")
    );
    assert_ne!(
        seen[0].wire_len,
        seen[0].body.len(),
        "the wire bytes were compressed"
    );
    let uids: Vec<_> = rx
        .records()
        .iter()
        .map(|(_, r)| s(&r.attributes, "log.record.uid").unwrap())
        .collect();
    assert_eq!(uids, items.iter().map(|i| i.id.clone()).collect::<Vec<_>>());
}

#[tokio::test]
async fn record_body_format_and_object_resource_off() {
    let (rx, addr) = serve(None).await;
    let mut out = output(
        addr,
        &[("body_format", "record"), ("object_resource", "off")],
    );
    out.deliver(&batch()).await.unwrap();
    let req = rx.seen()[0].request();
    assert_eq!(req.resource_logs.len(), 1);
    let recs = &req.resource_logs[0].scope_logs[0].log_records;
    assert_eq!(recs.len(), 2);
    let v: serde_json::Value = serde_json::from_str(&body(&recs[0])).unwrap();
    assert_eq!(v["object"]["involvedObject"]["name"], "web-0");
    assert_eq!(
        s(&recs[0].attributes, "k8s.pod.name").as_deref(),
        Some("web-0")
    );
}

#[tokio::test]
async fn bad_request_rejects_the_batch_with_the_server_message() {
    let (rx, addr) = serve(None).await;
    #[derive(Clone, PartialEq, prost::Message)]
    struct Status {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(string, tag = "2")]
        message: String,
    }
    rx.push(Reply {
        status: 400,
        headers: vec![("content-type", "application/x-protobuf".into())],
        body: Status {
            code: 3,
            message: "invalid log record".into(),
        }
        .encode_to_vec(),
    });
    let mut out = output(addr, &[]);
    match out.deliver(&batch()).await {
        Err(DeliveryError::Rejected { message }) => {
            assert!(
                message.contains("400") && message.contains("invalid log record"),
                "{message}"
            )
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
}

#[tokio::test]
async fn unavailable_with_retry_after_is_retryable_then_succeeds() {
    let (rx, addr) = serve(None).await;
    rx.push(Reply {
        status: 503,
        headers: vec![("retry-after", "7".into())],
        body: b"overloaded".to_vec(),
    });
    rx.push(Reply {
        status: 429,
        headers: vec![],
        body: vec![],
    });
    let mut out = output(addr, &[]);
    match out.deliver(&batch()).await {
        Err(DeliveryError::Retryable {
            retry_after,
            message,
        }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(7)));
            assert!(
                message.contains("503") && message.contains("overloaded"),
                "{message}"
            );
        }
        other => panic!("expected Retryable, got {other:?}"),
    }
    assert!(matches!(
        out.deliver(&batch()).await,
        Err(DeliveryError::Retryable {
            retry_after: None,
            ..
        })
    ));
    // Partial success is success: OTLP says the rejected records must not be sent again.
    rx.push(Reply::ok_partial(1));
    out.deliver(&batch()).await.unwrap();
    assert_eq!(rx.seen().len(), 3);
}

#[tokio::test]
async fn nothing_listening_is_retryable() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut out = output(addr, &[]);
    match out.deliver(&batch()).await {
        Err(DeliveryError::Retryable { message, .. }) => {
            assert!(message.contains("connect"), "{message}")
        }
        other => panic!("expected Retryable, got {other:?}"),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[tokio::test]
async fn tls_with_ca_and_client_certificate() {
    let ca = Ca::new("otel-ca");
    let server = ca.leaf(&["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
    let client = ca.leaf(&["kubetrail"], ExtendedKeyUsagePurpose::ClientAuth);
    let (rx, addr) = serve(Some((&server, Some(ca.pem.as_str())))).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let crt = write(dir.path(), "client.crt", &client.0);
    let key = write(dir.path(), "client.key", &client.1);
    let port = addr.port().to_string();
    let pairs = [
        ("host", "localhost"),
        ("port", port.as_str()),
        ("tls", "on"),
        ("tls.ca_file", ca_file.as_str()),
        ("tls.crt_file", crt.as_str()),
        ("tls.key_file", key.as_str()),
        ("compress", "gzip"),
    ];
    let mut sec = Section::from_pairs(SectionKind::Output, "opentelemetry", &pairs);
    let mut out = OpenTelemetryOutput::from_section(&mut sec).unwrap();
    sec.finish().unwrap();
    assert!(out.url().starts_with("https://localhost:"), "{}", out.url());
    out.deliver(&batch()).await.unwrap();
    let seen = rx.seen();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].client_cert, "the client certificate was presented");
    assert_eq!(rx.records().len(), 2);

    // Without the client certificate the server refuses the handshake: retryable.
    let pairs_no_cert = [
        ("host", "localhost"),
        ("port", port.as_str()),
        ("tls", "on"),
        ("tls.ca_file", ca_file.as_str()),
    ];
    let mut sec = Section::from_pairs(SectionKind::Output, "opentelemetry", &pairs_no_cert);
    let mut out = OpenTelemetryOutput::from_section(&mut sec).unwrap();
    assert!(matches!(
        out.deliver(&batch()).await,
        Err(DeliveryError::Retryable { .. })
    ));
    assert_eq!(rx.seen().len(), 1);
}

#[tokio::test]
async fn tls_verification_fails_with_another_ca_and_can_be_turned_off() {
    let ca = Ca::new("otel-ca");
    let other = Ca::new("other-ca");
    let server = ca.leaf(&["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
    let (rx, addr) = serve(Some((&server, None))).await;
    let dir = tempfile::tempdir().unwrap();
    let other_file = write(dir.path(), "other.pem", &other.pem);
    let port = addr.port().to_string();
    let mut sec = Section::from_pairs(
        SectionKind::Output,
        "opentelemetry",
        &[
            ("host", "localhost"),
            ("port", &port),
            ("tls", "on"),
            ("tls.ca_file", &other_file),
        ],
    );
    let mut out = OpenTelemetryOutput::from_section(&mut sec).unwrap();
    match out.deliver(&batch()).await {
        Err(DeliveryError::Retryable { message, .. }) => {
            assert!(message.contains("TLS"), "{message}")
        }
        other => panic!("expected a TLS failure, got {other:?}"),
    }
    assert!(rx.seen().is_empty());

    let mut sec = Section::from_pairs(
        SectionKind::Output,
        "opentelemetry",
        &[
            ("host", "localhost"),
            ("port", &port),
            ("tls", "on"),
            ("tls.verify", "off"),
        ],
    );
    let mut out = OpenTelemetryOutput::from_section(&mut sec).unwrap();
    out.deliver(&batch()).await.unwrap();
    assert_eq!(rx.records().len(), 2);
}

#[test]
fn a_missing_ca_file_is_a_configuration_error() {
    let mut sec = Section::from_pairs(
        SectionKind::Output,
        "opentelemetry",
        &[("tls", "on"), ("tls.ca_file", "/nonexistent/ca.pem")],
    );
    let err = OpenTelemetryOutput::from_section(&mut sec)
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
}

// ---------------------------------------------------------------- the whole pipeline

/// Runs the pipeline in-process until `stop` is sent.
fn run_in_process(
    yaml: String,
    path: std::path::PathBuf,
) -> (
    tokio::task::JoinHandle<Result<(), kubetrail::topology::RunError>>,
    tokio::sync::oneshot::Sender<()>,
) {
    let config = kubetrail_core::config::Config::parse(&yaml, &path).expect("config parses");
    let plan = kubetrail::topology::Plan::from_config(config).expect("plan builds");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let h = tokio::spawn(async move {
        plan.run(async move {
            let _ = rx.await;
        })
        .await
    });
    (h, tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_from_the_api_reach_the_receiver_once_each_through_a_503() {
    let env = Env::new().await;
    let (rx, addr) = serve(None).await;
    // The first delivery is refused for now: the runner must retry it, not drop it.
    rx.push(Reply {
        status: 503,
        headers: vec![("retry-after", "1".into())],
        body: vec![],
    });
    let mut expected = std::collections::HashSet::new();
    for i in 0..40 {
        let kind = ["Pod", "Deployment", "Node"][i % 3];
        let mut spec = kubetrail_emulator::EventSpec::simple(
            "shop",
            kind,
            format!("obj-{i}"),
            "Tested",
            format!("message {i}"),
        );
        if i.is_multiple_of(2) {
            spec.type_ = "Warning".into();
        }
        let e = env.emu.create_event(spec);
        expected.insert(format!("{}:{}", e.uid, e.resource_version));
    }
    let yaml = format!(
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
  outputs:
    - name: opentelemetry
      match: '*'
      host: 127.0.0.1
      port: {port}
      compress: gzip
      cluster_name: emulated
"#,
        data = env.data_dir.display(),
        url = env.emu.url(),
        ca = env.ca_file.display(),
        token = env.token_file.display(),
        port = addr.port(),
    );
    let (h, stop) = run_in_process(yaml, env.dir.path().join("c.yaml"));
    assert!(
        wait_until(Duration::from_secs(30), || rx.records().len()
            >= expected.len())
        .await,
        "{} of {} records",
        rx.records().len(),
        expected.len()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop.send(());
    h.await.unwrap().unwrap();

    let records = rx.records();
    let uids: Vec<String> = records
        .iter()
        .filter_map(|(_, r)| s(&r.attributes, "log.record.uid"))
        .collect();
    let unique: std::collections::HashSet<String> = uids.iter().cloned().collect();
    assert_eq!(unique, expected);
    assert_eq!(uids.len(), expected.len(), "a record was delivered twice");
    assert!(rx.seen()[0].header("content-encoding") == Some("gzip"));
    // The refused batch was sent again, whole.
    let seen = rx.seen();
    assert_eq!(seen[0].status, 503);
    let uids_of = |req: &Seen| -> Vec<String> {
        req.request()
            .resource_logs
            .iter()
            .flat_map(|rl| &rl.scope_logs)
            .flat_map(|sl| &sl.log_records)
            .filter_map(|r| s(&r.attributes, "log.record.uid"))
            .collect()
    };
    assert_eq!(seen[1].status, 200);
    assert_eq!(
        uids_of(&seen[0]),
        uids_of(&seen[1]),
        "the retry is the same batch"
    );
    for (res, r) in &records {
        assert_eq!(s(res, "k8s.cluster.name").as_deref(), Some("emulated"));
        let kind = s(res, "k8s.object.kind").expect("object kind on the resource");
        let name = s(res, "k8s.object.name").unwrap();
        let key = match kind.as_str() {
            "Pod" => "k8s.pod.name",
            "Deployment" => "k8s.deployment.name",
            "Node" => "k8s.node.name",
            other => panic!("unexpected kind {other}"),
        };
        assert_eq!(s(res, key).as_deref(), Some(name.as_str()));
        let n: usize = name.trim_start_matches("obj-").parse().unwrap();
        let want = if n.is_multiple_of(2) {
            SeverityNumber::Warn
        } else {
            SeverityNumber::Info
        };
        assert_eq!(r.severity_number, want as i32, "{name}");
        assert_eq!(body(r), format!("message {n}"));
        assert!(r.time_unix_nano > 0 && r.observed_time_unix_nano >= r.time_unix_nano);
    }
}
