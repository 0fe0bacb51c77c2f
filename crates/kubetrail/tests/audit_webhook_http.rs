//! The `audit_webhook` input over real sockets (TLS with rcgen-made certificates, raw HTTP/1.1
//! requests, and hyper's HTTP/1.1 client, which like the apiserver's reads the answer while
//! it is still sending), with a fake commit step in place of the pipeline: authentication
//! (client certificates, tokens, `auth: none`), the 4xx answers and that the body is not read
//! before the caller is known, a readable 413 for bodies over the limit, error records of
//! items nested too deeply kept as strings, 503 when the pipeline cannot take a batch, gzip,
//! and graceful shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kubetrail::pipeline::{PipelineError, Submission, SubmitOutcome};
use kubetrail::shutdown::{self, ShutdownTrigger};
use kubetrail::sources::audit_webhook::{AuditWebhook, Commit, ServeEnv};
use kubetrail::telemetry::{ComponentMetrics, Metrics};
use kubetrail_core::config::{Section, SectionKind};
use kubetrail_core::{Original, RecordKind};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;

const TOKEN: &str = "webhook-token-0123456789";

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

    fn leaf(&self, names: &[&str], cn: &str, purpose: ExtendedKeyUsagePurpose) -> (String, String) {
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn client_config(ca_pem: &str, client: Option<&(String, String)>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(kubetrail_net::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let cfg = match client {
        None => b.with_no_client_auth(),
        Some((crt, key)) => {
            let chain = CertificateDer::pem_slice_iter(crt.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            b.with_client_auth_cert(
                chain,
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap()
        }
    };
    Arc::new(cfg)
}

// ---------------------------------------------------------------- the fake pipeline

/// What the fake commit step does with the next submissions.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Accept,
    QueueFull,
    Storage,
    ShuttingDown,
    /// Accept, but only after `release` is notified.
    Hold,
}

struct FakeCommit {
    mode: Mutex<Mode>,
    submissions: Mutex<Vec<Submission>>,
    calls: Mutex<usize>,
    entered: Semaphore,
    release: Notify,
}

impl FakeCommit {
    fn new() -> Arc<FakeCommit> {
        Arc::new(FakeCommit {
            mode: Mutex::new(Mode::Accept),
            submissions: Mutex::new(Vec::new()),
            calls: Mutex::new(0),
            entered: Semaphore::new(0),
            release: Notify::new(),
        })
    }
    fn set(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }
    fn calls(&self) -> usize {
        *self.calls.lock().unwrap()
    }
    fn records(&self) -> Vec<kubetrail_core::Record> {
        self.submissions
            .lock()
            .unwrap()
            .iter()
            .flat_map(|s| s.records.clone())
            .collect()
    }
}

#[async_trait::async_trait]
impl Commit for FakeCommit {
    async fn commit(&self, sub: Submission) -> Result<SubmitOutcome, PipelineError> {
        *self.calls.lock().unwrap() += 1;
        let mode = *self.mode.lock().unwrap();
        match mode {
            Mode::QueueFull => {
                return Err(PipelineError::QueueFull {
                    output: "es".into(),
                });
            }
            Mode::Storage => return Err(PipelineError::Storage("disk full".into())),
            Mode::ShuttingDown => return Err(PipelineError::ShuttingDown),
            Mode::Hold => {
                self.entered.add_permits(1);
                self.release.notified().await;
            }
            Mode::Accept => {}
        }
        let n = sub.records.len();
        self.submissions.lock().unwrap().push(sub);
        Ok(SubmitOutcome {
            accepted: n,
            ..Default::default()
        })
    }
}

// ---------------------------------------------------------------- the server under test

struct Server {
    addr: SocketAddr,
    fake: Arc<FakeCommit>,
    registry: Arc<Metrics>,
    trigger: ShutdownTrigger,
    task: JoinHandle<()>,
    ca: Ca,
    _dir: tempfile::TempDir,
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p.display().to_string()
}

impl Server {
    /// A TLS webhook with client CA and token file, plus `extra` options.
    async fn start(extra: &[(&str, &str)]) -> Server {
        Server::start_with(true, extra).await
    }

    async fn start_with(tls: bool, extra: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("test CA");
        let (crt, key) = ca.leaf(
            &["localhost"],
            "webhook",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let crt_file = write(dir.path(), "tls.crt", &crt);
        let key_file = write(dir.path(), "tls.key", &key);
        let ca_file = write(dir.path(), "ca.crt", &ca.pem);
        let token_file = write(
            dir.path(),
            "tokens",
            &format!("# webhook tokens\n{TOKEN}\n"),
        );
        let mut pairs: Vec<(&str, &str)> = if tls {
            vec![
                ("tls.crt_file", &crt_file),
                ("tls.key_file", &key_file),
                ("tls.client_ca_file", &ca_file),
                ("token_file", &token_file),
            ]
        } else {
            vec![("tls", "off")]
        };
        pairs.extend_from_slice(extra);
        let mut section = Section::from_pairs(SectionKind::Input, "audit_webhook", &pairs);
        let webhook = AuditWebhook::from_section(&mut section).unwrap();
        section.finish().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = FakeCommit::new();
        let registry = Metrics::new();
        let (trigger, shutdown) = shutdown::channel();
        let env = ServeEnv {
            name: Arc::from("audit_webhook.0"),
            tag: Arc::from("k8s.audit"),
            shutdown,
            metrics: ComponentMetrics::register(&registry, "audit_webhook.0"),
            registry: registry.clone(),
        };
        let commit: Arc<dyn Commit> = fake.clone();
        let task = tokio::spawn(async move { webhook.serve(listener, commit, env).await.unwrap() });
        Server {
            addr,
            fake,
            registry,
            trigger,
            task,
            ca,
            _dir: dir,
        }
    }

    fn count(&self, code: &str) -> i64 {
        self.registry
            .value(
                "kubetrail_webhook_requests_total",
                &[("component", "audit_webhook.0"), ("code", code)],
            )
            .unwrap_or(0)
    }

    fn client_cert(&self) -> (String, String) {
        self.ca
            .leaf(&[], "kube-apiserver", ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// Sends raw bytes over TLS (optionally with a client certificate) and reads the answer.
    async fn send_tls(
        &self,
        client: Option<&(String, String)>,
        request: &[u8],
    ) -> std::io::Result<Answer> {
        let cfg = client_config(&self.ca.pem, client);
        let tcp = TcpStream::connect(self.addr).await?;
        let tls = tokio_rustls::TlsConnector::from(cfg)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await?;
        exchange(tls, request).await
    }

    /// POSTs `body` over TLS with the valid bearer token.
    async fn post_with_token(&self, body: &str) -> Answer {
        self.send_tls(
            None,
            &post(body.as_bytes(), &[("Authorization", &bearer())]),
        )
        .await
        .unwrap()
    }

    /// Sends `requests` one after the other on one connection with hyper's client (over TLS,
    /// with the token): each answer's status, `Connection` header and body.
    async fn hyper_posts(
        &self,
        requests: Vec<HyperBody>,
    ) -> Result<Vec<(u16, Option<String>, String)>, hyper::Error> {
        use http_body_util::BodyExt;
        let cfg = client_config(&self.ca.pem, None);
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(cfg)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
        let driver = tokio::spawn(conn);
        let mut answers = Vec::new();
        for body in requests {
            let req = http::Request::post("/audit?timeout=30s")
                .header("Host", "localhost")
                .header("Content-Type", "application/json")
                .header("Authorization", bearer())
                .body(body)
                .unwrap();
            // The previous request's body may still be going out.
            sender.ready().await?;
            let resp = sender.send_request(req).await?;
            let status = resp.status().as_u16();
            let connection = resp
                .headers()
                .get("connection")
                .map(|v| v.to_str().unwrap().to_string());
            let body = resp.into_body().collect().await?.to_bytes();
            answers.push((
                status,
                connection,
                String::from_utf8_lossy(&body).into_owned(),
            ));
        }
        drop(sender);
        let _ = driver.await;
        Ok(answers)
    }

    async fn send_plain(&self, request: &[u8]) -> std::io::Result<Answer> {
        exchange(TcpStream::connect(self.addr).await?, request).await
    }

    async fn stop(self) {
        self.trigger.fire();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

/// A request body for hyper's client: whole (with a Content-Length) or in chunks.
type HyperBody = http_body_util::combinators::BoxBody<bytes::Bytes, std::convert::Infallible>;

fn whole(data: Vec<u8>) -> HyperBody {
    use http_body_util::BodyExt;
    http_body_util::Full::new(bytes::Bytes::from(data)).boxed()
}

fn chunked(data: Vec<u8>, chunk: usize) -> HyperBody {
    use http_body_util::BodyExt;
    let data = bytes::Bytes::from(data);
    let frames: Vec<Result<hyper::body::Frame<bytes::Bytes>, std::convert::Infallible>> = (0..data
        .len())
        .step_by(chunk)
        .map(|at| {
            Ok(hyper::body::Frame::data(
                data.slice(at..(at + chunk).min(data.len())),
            ))
        })
        .collect();
    http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed()
}

#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// Writes the request, then reads until the server closes (every request says
/// `Connection: close`, and every refusal closes anyway).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    request: &[u8],
) -> std::io::Result<Answer> {
    s.write_all(request).await?;
    s.flush().await?;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    match read {
        Err(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no answer in 10 s",
            ));
        }
        // A reset after a complete answer still counts as that answer.
        Ok(Err(e)) if buf.is_empty() => return Err(e),
        Ok(_) => {}
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok(Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    })
}

fn request(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:9443\r\nUser-Agent: Go-http-client/1.1\r\nConnection: close\r\n"
    );
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    if !headers.iter().any(|(k, _)| {
        k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding")
    }) {
        r.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    r.push_str("\r\n");
    let mut out = r.into_bytes();
    out.extend_from_slice(body);
    out
}

fn post(body: &[u8], extra: &[(&str, &str)]) -> Vec<u8> {
    let mut h = vec![
        ("Content-Type", "application/json"),
        ("Accept", "application/json, */*"),
    ];
    h.extend_from_slice(extra);
    request("POST", "/audit?timeout=30s", &h, body)
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

fn event(id: &str, stage: &str) -> String {
    format!(
        r#"{{"level":"Metadata","auditID":"{id}","stage":"{stage}","requestURI":"/api/v1/namespaces/fx/pods","verb":"list","user":{{"username":"admin","groups":["system:masters"]}},"sourceIPs":["10.1.2.3"],"objectRef":{{"resource":"pods","namespace":"fx","apiVersion":"v1"}},"responseStatus":{{"metadata":{{}},"code":200}},"requestReceivedTimestamp":"2026-11-27T00:32:55.740518Z","stageTimestamp":"2026-11-27T00:32:55.741518Z"}}"#
    )
}

fn event_list(items: &[String]) -> String {
    format!(
        r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{{}},"items":[{}]}}"#,
        items.join(",")
    )
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn an_event_list_is_answered_200_once_its_records_are_committed() {
    let s = Server::start(&[("dedup_retention", "2h")]).await;
    let items = [
        event("a1", "RequestReceived"),
        event("a1", "ResponseComplete"),
        event("b2", "ResponseComplete"),
    ];
    let body = event_list(&items);
    let a = s.post_with_token(&body).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(s.fake.calls(), 1);
    {
        let subs = s.fake.submissions.lock().unwrap();
        assert_eq!(subs[0].dedup_retention, Duration::from_secs(7200));
        assert!(subs[0].checkpoints.is_empty());
        let r = &subs[0].records;
        let ids: Vec<&str> = r.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "a1/RequestReceived",
                "a1/ResponseComplete",
                "b2/ResponseComplete"
            ]
        );
        assert!(r.iter().all(|r| r.kind == RecordKind::K8sAudit
            && &*r.source == "audit_webhook.0"
            && &*r.tag == "k8s.audit"));
        match &r[2].original {
            Some(Original::Raw(raw)) => assert_eq!(raw.get(), items[2]),
            o => panic!("{o:?}"),
        }
        assert_eq!(r[0].fields["api_version"], "audit.k8s.io/v1");
    }
    assert_eq!(s.count("200"), 1);
    s.stop().await;
}

#[tokio::test]
async fn a_client_certificate_from_the_ca_is_enough_and_the_recorded_apiserver_posts_are_accepted()
{
    let s = Server::start(&[]).await;
    let cert = s.client_cert();
    let fixtures = fixture_dir().join("kube-api");
    let mut expected = 0;
    for n in 1..=3 {
        let recorded = std::fs::read(fixtures.join(format!("audit-webhook-post-{n}.txt"))).unwrap();
        // Sent exactly as the apiserver sent it, plus `Connection: close` for the test client.
        let split = recorded.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let mut req = recorded[..split].to_vec();
        req.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        let body = &recorded[split + 4..];
        req.extend_from_slice(body);
        expected += serde_json::from_slice::<Value>(body).unwrap()["items"]
            .as_array()
            .unwrap()
            .len();
        let a = s.send_tls(Some(&cert), &req).await.unwrap();
        assert_eq!(a.status, 200, "post-{n}: {a:?}");
    }
    let records = s.fake.records();
    assert_eq!(records.len(), expected);
    assert!(records.iter().all(|r| r.kind == RecordKind::K8sAudit));
    s.stop().await;
}

#[tokio::test]
async fn no_credentials_is_401_without_reading_the_body() {
    let s = Server::start(&[]).await;
    // Announces 5 MB but sends none of it: an answer proves the body was not awaited.
    let req = post(b"", &[("Content-Length", "5000000")]);
    let a = s.send_tls(None, &req).await.unwrap();
    assert_eq!(a.status, 401, "{a:?}");
    assert_eq!(a.header("www-authenticate").as_deref(), Some("Bearer"));
    assert_eq!(a.header("connection").as_deref(), Some("close"));
    assert_eq!(s.fake.calls(), 0);
    assert_eq!(s.count("401"), 1);
    s.stop().await;
}

#[tokio::test]
async fn a_wrong_or_malformed_token_is_401() {
    let s = Server::start(&[]).await;
    let body = event_list(&[event("x", "RequestReceived")]);
    for auth in [
        "Bearer wrong-token",
        &format!("Bearer {TOKEN}x"),
        &format!("Basic {TOKEN}"),
        TOKEN,
    ] {
        let a = s
            .send_tls(None, &post(body.as_bytes(), &[("Authorization", auth)]))
            .await
            .unwrap();
        assert_eq!(a.status, 401, "{auth}: {a:?}");
    }
    assert_eq!(s.fake.calls(), 0);
    assert_eq!(s.count("401"), 4);
    s.stop().await;
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_fails_the_handshake() {
    let s = Server::start(&[]).await;
    let other = Ca::new("other CA").leaf(&[], "intruder", ExtendedKeyUsagePurpose::ClientAuth);
    let body = event_list(&[event("x", "RequestReceived")]);
    let res = s.send_tls(Some(&other), &post(body.as_bytes(), &[])).await;
    // With TLS 1.3 the client learns of the refusal on its first read.
    match res {
        Err(_) => {}
        Ok(a) => assert_eq!(a.status, 0, "no HTTP answer expected: {a:?}"),
    }
    assert_eq!(s.fake.calls(), 0);
    s.stop().await;
}

#[tokio::test]
async fn refusals_405_404_415_413_do_not_read_the_body() {
    let s = Server::start(&[("max_body_size", "1k")]).await;
    let auth = bearer();
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (
            request("GET", "/audit", &[("Authorization", &auth)], b""),
            405,
        ),
        (
            request(
                "PUT",
                "/audit",
                &[
                    ("Authorization", &auth),
                    ("Content-Type", "application/json"),
                    ("Content-Length", "100"),
                ],
                b"",
            ),
            405,
        ),
        (
            request(
                "POST",
                "/other",
                &[
                    ("Authorization", &auth),
                    ("Content-Type", "application/json"),
                    ("Content-Length", "100"),
                ],
                b"",
            ),
            404,
        ),
        (
            request(
                "POST",
                "/audit",
                &[
                    ("Authorization", &auth),
                    ("Content-Type", "text/plain"),
                    ("Content-Length", "100"),
                ],
                b"",
            ),
            415,
        ),
        (
            post(
                b"",
                &[
                    ("Authorization", &auth),
                    ("Content-Type", "text/plain"),
                    ("Content-Length", "100"),
                ],
            ),
            415,
        ),
        (
            request(
                "POST",
                "/audit",
                &[("Authorization", &auth), ("Content-Length", "100")],
                b"",
            ),
            415,
        ),
        (
            post(
                b"",
                &[
                    ("Authorization", &auth),
                    ("Content-Encoding", "br"),
                    ("Content-Length", "100"),
                ],
            ),
            415,
        ),
        // Asked first (Expect: 100-continue), an answer needs no body.
        (
            post(
                b"",
                &[
                    ("Authorization", &auth),
                    ("Content-Length", "1025"),
                    ("Expect", "100-continue"),
                ],
            ),
            413,
        ),
    ];
    for (req, want) in &cases {
        let a = s
            .send_tls(None, req)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(req)));
        assert_eq!(a.status, *want, "{}: {a:?}", String::from_utf8_lossy(req));
    }
    let a = s
        .send_tls(
            None,
            &request("GET", "/audit", &[("Authorization", &auth)], b""),
        )
        .await
        .unwrap();
    assert_eq!(a.header("allow").as_deref(), Some("POST"));
    for code in ["405", "404", "415", "413"] {
        assert!(s.count(code) > 0, "{code}");
    }
    assert_eq!(s.fake.calls(), 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_max_body_size_gets_a_413_the_client_reads() {
    let s = Server::start(&[("max_body_size", "1M")]).await;
    // 16 MiB of events: the client is still sending when the server knows the answer.
    let one = event("big", "ResponseComplete");
    let n = (16 << 20) / one.len();
    let big = event_list(&vec![one; n]).into_bytes();
    let small = event_list(&[event("small", "ResponseComplete")]).into_bytes();
    for (what, body) in [
        ("with a Content-Length", whole(big.clone())),
        ("chunked", chunked(big.clone(), 64 << 10)),
    ] {
        let answers = s
            .hyper_posts(vec![body])
            .await
            .unwrap_or_else(|e| panic!("{what}: the client reads the answer: {e:?}"));
        assert_eq!(answers[0].0, 413, "{what}: {answers:?}");
        assert!(answers[0].2.contains("max_body_size"), "{answers:?}");
    }
    // Read to its end, the refused body leaves the connection usable for the next request.
    let answers = s
        .hyper_posts(vec![whole(big.clone()), whole(small)])
        .await
        .expect("two requests on one connection");
    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    assert_eq!(statuses, [413, 200], "{answers:?}");
    assert_eq!(answers[0].1, None, "no Connection: close");
    assert_eq!(s.fake.records().len(), 1);
    assert_eq!(s.count("413"), 3);

    // A client that asks before sending is answered at once, and sends nothing.
    let headers = format!(
        "POST /audit HTTP/1.1\r\nHost: localhost\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        bearer(),
        big.len()
    );
    let a = s.send_tls(None, headers.as_bytes()).await.unwrap();
    assert_eq!(a.status, 413, "{a:?}");
    assert_eq!(a.header("connection").as_deref(), Some("close"));
    // Past the bound nothing is read: the answer comes at once (the client may see a reset
    // if it keeps sending).
    let headers = format!(
        "POST /audit HTTP/1.1\r\nHost: localhost\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        bearer(),
        (1 << 20) + (64 << 20) + 1
    );
    let a = s.send_tls(None, headers.as_bytes()).await.unwrap();
    assert_eq!(a.status, 413, "{a:?}");
    assert_eq!(a.header("connection").as_deref(), Some("close"));
    assert_eq!(s.fake.records().len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn an_item_nested_100000_deep_is_kept_as_a_string_any_json_reader_takes() {
    let s = Server::start(&[]).await;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let body = format!("[{},{deep}]", event("ok", "ResponseComplete"));
    let a = s.post_with_token(&body).await;
    assert_eq!(a.status, 200, "{a:?}");
    let r = s.fake.records();
    assert_eq!(r.len(), 2);
    assert_eq!(r[1].kind, RecordKind::Error);
    let error = r[1].fields["error"].as_str().unwrap().to_string();
    assert!(error.contains("kept as a JSON string"), "{error}");
    for record in &r {
        // serde_json's default depth limit (128) is stricter than Python's json (about
        // 1,000) and Elasticsearch's parser (1,000): what it reads, they read.
        let line = record.encode();
        let v: Value = serde_json::from_slice(&line).expect("the record reads as JSON");
        if record.kind == RecordKind::Error {
            assert_eq!(v["object"].as_str(), Some(deep.as_str()));
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn json_content_types_with_charset_and_suffix_are_accepted() {
    let s = Server::start(&[]).await;
    let body = event_list(&[event("ct", "RequestReceived")]);
    for ct in [
        "application/json; charset=utf-8",
        "application/vnd.k8s+json",
        "APPLICATION/JSON",
    ] {
        let req = request(
            "POST",
            "/audit",
            &[("Authorization", &bearer()), ("Content-Type", ct)],
            body.as_bytes(),
        );
        let a = s.send_tls(None, &req).await.unwrap();
        assert_eq!(a.status, 200, "{ct}: {a:?}");
    }
    s.stop().await;
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_413() {
    let s = Server::start(&[("max_body_size", "1k")]).await;
    let big = format!("[{}]", vec![event("big", "RequestReceived"); 10].join(","));
    assert!(big.len() > 1024);
    let mut chunked = Vec::new();
    for part in big.as_bytes().chunks(300) {
        chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        chunked.extend_from_slice(part);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let a = s
        .send_tls(
            None,
            &post(
                &chunked,
                &[
                    ("Authorization", &bearer()),
                    ("Transfer-Encoding", "chunked"),
                ],
            ),
        )
        .await
        .unwrap();
    assert_eq!(a.status, 413, "{a:?}");
    assert_eq!(s.fake.calls(), 0);
    s.stop().await;
}

#[tokio::test]
async fn gzip_bodies_are_accepted_and_bounded_once_decompressed() {
    let s = Server::start(&[("max_body_size", "8k")]).await;
    let body = event_list(&[
        event("gz", "RequestReceived"),
        event("gz", "ResponseComplete"),
    ]);
    let a = s
        .send_tls(
            None,
            &post(
                &gzip(body.as_bytes()),
                &[("Authorization", &bearer()), ("Content-Encoding", "gzip")],
            ),
        )
        .await
        .unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(s.fake.records().len(), 2);
    // A small compressed body that inflates past the limit.
    let bomb = gzip(&vec![b' '; 100_000]);
    assert!(bomb.len() < 8 * 1024);
    let a = s
        .send_tls(
            None,
            &post(
                &bomb,
                &[("Authorization", &bearer()), ("Content-Encoding", "gzip")],
            ),
        )
        .await
        .unwrap();
    assert_eq!(a.status, 413, "{a:?}");
    let a = s
        .send_tls(
            None,
            &post(
                b"not gzip at all",
                &[("Authorization", &bearer()), ("Content-Encoding", "gzip")],
            ),
        )
        .await
        .unwrap();
    assert_eq!(a.status, 400, "{a:?}");
    assert_eq!(s.fake.calls(), 1);
    s.stop().await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_400_with_the_reason() {
    let s = Server::start(&[]).await;
    for body in [
        &b"{\"kind\":\"EventList\",\"items\":[{\"auditID\""[..],
        b"hello",
        b"",
    ] {
        let a = s
            .send_tls(None, &post(body, &[("Authorization", &bearer())]))
            .await
            .unwrap();
        assert_eq!(a.status, 400, "{a:?}");
        assert!(a.body.contains("not valid JSON"), "{a:?}");
    }
    assert_eq!(s.fake.calls(), 0);
    s.stop().await;
}

/// Three bytes of body (`{},`) make a record of hundreds: a body may hold at most
/// `MAX_BODY_ITEMS` items, so that what one request can make the process hold is bounded.
#[tokio::test]
async fn a_body_with_too_many_items_is_413_and_nothing_is_committed() {
    let s = Server::start(&[]).await;
    let max = kubetrail::sources::audit::MAX_BODY_ITEMS;
    let body = format!("[{}]", vec!["{}"; max + 1].join(","));
    let a = s.post_with_token(&body).await;
    assert_eq!(a.status, 413, "{a:?}");
    assert!(a.body.contains("--audit-webhook-batch-max-size"), "{a:?}");
    assert_eq!(s.fake.calls(), 0);
    s.stop().await;
}

#[tokio::test]
async fn items_that_are_not_audit_events_become_error_records_beside_the_good_ones() {
    let s = Server::start(&[]).await;
    let body = event_list(&[
        event("ok", "RequestReceived"),
        r#"{"kind": 0}"#.to_string(),
        r#"{"auditID":"no-stage"}"#.to_string(),
    ]);
    let a = s.post_with_token(&body).await;
    assert_eq!(a.status, 200, "{a:?}");
    let r = s.fake.records();
    let kinds: Vec<RecordKind> = r.iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        [RecordKind::K8sAudit, RecordKind::Error, RecordKind::Error]
    );
    assert_eq!(r[1].fields["source_kind"], "audit");
    assert_eq!(r[2].fields["error"], "no stage");
    assert_eq!(
        s.registry.value(
            "kubetrail_component_errors_total",
            &[("component", "audit_webhook.0")]
        ),
        Some(2)
    );
    s.stop().await;
}

#[tokio::test]
async fn a_pipeline_that_cannot_take_the_batch_gets_503_and_the_retry_succeeds() {
    let s = Server::start(&[]).await;
    let body = event_list(&[event("r", "RequestReceived")]);
    let req = post(body.as_bytes(), &[("Authorization", &bearer())]);
    for mode in [Mode::QueueFull, Mode::Storage, Mode::ShuttingDown] {
        s.fake.set(mode);
        let a = s.send_tls(None, &req).await.unwrap();
        assert_eq!(a.status, 503, "{mode:?}: {a:?}");
        assert_eq!(a.header("retry-after").as_deref(), Some("5"));
    }
    assert!(s.fake.records().is_empty());
    s.fake.set(Mode::Accept);
    let a = s.send_tls(None, &req).await.unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(s.fake.records().len(), 1);
    assert_eq!((s.count("503"), s.count("200")), (3, 1));
    s.stop().await;
}

#[tokio::test]
async fn plain_http_with_tls_off_and_auth_none_and_format_raw() {
    let s = Server::start_with(
        false,
        &[("auth", "none"), ("format", "raw"), ("path", "/hook")],
    )
    .await;
    let item = event("p", "ResponseComplete");
    let a = s
        .send_plain(&request(
            "POST",
            "/hook",
            &[("Content-Type", "application/json")],
            format!("[{item}]").as_bytes(),
        ))
        .await
        .unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    let r = s.fake.records();
    assert!(r[0].raw_format);
    assert_eq!(r[0].encode(), item.as_bytes());
    s.stop().await;
}

#[tokio::test]
async fn shutdown_finishes_the_request_in_flight_then_stops_accepting() {
    let s = Server::start(&[]).await;
    s.fake.set(Mode::Hold);
    let body = event_list(&[event("inflight", "RequestReceived")]);
    let req = post(body.as_bytes(), &[("Authorization", &bearer())]);
    let addr = s.addr;
    let (ca_pem, client) = (s.ca.pem.clone(), None::<(String, String)>);
    let in_flight = tokio::spawn(async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(client_config(&ca_pem, client.as_ref()))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        exchange(tls, &req).await.unwrap()
    });
    // Wait until the commit step holds the batch, then ask the server to stop.
    let permit = tokio::time::timeout(Duration::from_secs(10), s.fake.entered.acquire())
        .await
        .unwrap()
        .unwrap();
    permit.forget();
    s.trigger.fire();
    // The test runtime has one thread: yielding lets the server see the signal and drop its
    // listener, while the held commit keeps the request (and so the server) in flight.
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(TcpStream::connect(addr).await.is_err(), "stopped accepting");
    assert!(!s.task.is_finished(), "must wait for the request in flight");
    s.fake.release.notify_one();
    let a = in_flight.await.unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    tokio::time::timeout(Duration::from_secs(15), s.task)
        .await
        .unwrap()
        .unwrap();
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(std::env::var("KUBETRAIL_FIXTURES").expect(
        "KUBETRAIL_FIXTURES must point at the shared fixtures directory (e.g. ../shared/fixtures)",
    ))
}
