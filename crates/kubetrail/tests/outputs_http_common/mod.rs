//! Test servers for the HTTP outputs' integration tests: a recording HTTP(S) server (rustls,
//! optional client certificates, rcgen-made PKI) that answers from a closure, and a fake
//! Elasticsearch bulk endpoint that checks the NDJSON, keeps documents by `_index`/`_id`
//! (409 on a second `create`) and can be told how to answer each document.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};

/// A certificate authority and leaf certificates signed by it.
pub struct Pki {
    pub ca_pem: String,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let ca_key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        Pki {
            ca_pem: ca.pem(),
            ca,
            ca_key,
        }
    }

    fn leaf(&self, names: &[&str], cn: &str, purpose: ExtendedKeyUsagePurpose) -> (String, String) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A server certificate for 127.0.0.1: (cert PEM, key PEM).
    pub fn server_cert(&self) -> (String, String) {
        self.leaf(
            &["127.0.0.1", "localhost"],
            "test server",
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    pub fn client_cert(&self, cn: &str) -> (String, String) {
        self.leaf(&[], cn, ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// A rustls server configuration; with `client_ca`, client certificates signed by it are
/// required.
pub fn server_tls(cert_pem: &str, key_pem: &str, client_ca: Option<&str>) -> Arc<ServerConfig> {
    let provider = kubetrail_net::crypto_provider();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub target: String,
    pub headers: HeaderMap,
    /// The body as sent.
    pub raw: Vec<u8>,
    /// The body after undoing `Content-Encoding: gzip`.
    pub body: Vec<u8>,
    /// The DER of the client certificate, when one was presented.
    pub client_cert: Option<Vec<u8>>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What the server answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    pub fn with_body(mut self, body: impl Into<String>) -> Reply {
        self.body = body.into();
        self
    }

    pub fn with_header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }
}

pub type Responder = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

/// A recording server on 127.0.0.1.
pub struct TestServer {
    pub addr: SocketAddr,
    pub tls: bool,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl TestServer {
    pub async fn start(tls: Option<Arc<ServerConfig>>, responder: Responder) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let is_tls = tls.is_some();
        let reqs = requests.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (tls, reqs, responder) = (tls.clone(), reqs.clone(), responder.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(cfg) => {
                            let Ok(stream) = tokio_rustls::TlsAcceptor::from(cfg).accept(tcp).await
                            else {
                                return;
                            };
                            let cert = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .map(|c| c[0].to_vec());
                            serve(TokioIo::new(stream), cert, reqs, responder).await;
                        }
                        None => serve(TokioIo::new(tcp), None, reqs, responder).await,
                    }
                });
            }
        });
        TestServer {
            addr,
            tls: is_tls,
            requests,
        }
    }

    /// A plain server answering every request with `reply`.
    pub async fn always(reply: Reply) -> TestServer {
        TestServer::start(None, Arc::new(move |_| reply.clone())).await
    }

    pub fn url(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.addr
        )
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

async fn serve<T>(
    io: T,
    cert: Option<Vec<u8>>,
    reqs: Arc<Mutex<Vec<Recorded>>>,
    responder: Responder,
) where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = service_fn(move |req: Request<Incoming>| {
        let (cert, reqs, responder) = (cert.clone(), reqs.clone(), responder.clone());
        async move {
            let (parts, body) = req.into_parts();
            let raw = body
                .collect()
                .await
                .map(|b| b.to_bytes().to_vec())
                .unwrap_or_default();
            let gz = parts
                .headers
                .get("content-encoding")
                .is_some_and(|v| v == "gzip");
            let body = if gz {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&raw[..])
                    .read_to_end(&mut out)
                    .expect("gzip body decodes");
                out
            } else {
                raw.clone()
            };
            let rec = Recorded {
                method: parts.method.to_string(),
                target: parts
                    .uri
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                headers: parts.headers,
                raw,
                body,
                client_cert: cert,
            };
            let reply = responder(&rec);
            reqs.lock().unwrap().push(rec);
            let mut resp = Response::new(Full::new(Bytes::from(reply.body)));
            *resp.status_mut() = StatusCode::from_u16(reply.status).unwrap();
            for (k, v) in reply.headers {
                resp.headers_mut().append(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    http::HeaderValue::from_str(&v).unwrap(),
                );
            }
            Ok::<_, Infallible>(resp)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, svc)
        .await;
}

/// How the fake Elasticsearch answers the next bulk request.
#[derive(Debug, Clone)]
pub enum EsScript {
    /// Per document, in order: `None` = behave normally (201, or 409 if it exists), `Some(s)`
    /// = answer `s` without indexing (a 2xx status indexes).
    Items(Vec<Option<u16>>),
    /// Index normally but answer the whole request with this status (the answer is "lost").
    IndexThenFail(u16),
    /// Answer the whole request with this reply, indexing nothing.
    Whole(Reply),
}

/// A fake Elasticsearch `_bulk` endpoint.
#[derive(Clone, Default)]
pub struct FakeEs {
    /// (index, id) → document.
    pub docs: Arc<Mutex<BTreeMap<(String, String), Value>>>,
    pub script: Arc<Mutex<VecDeque<EsScript>>>,
}

impl FakeEs {
    pub async fn start(tls: Option<Arc<ServerConfig>>) -> (FakeEs, TestServer) {
        let es = FakeEs::default();
        let e = es.clone();
        let server = TestServer::start(tls, Arc::new(move |r| e.answer(r))).await;
        (es, server)
    }

    pub fn push(&self, s: EsScript) {
        self.script.lock().unwrap().push_back(s);
    }

    pub fn ids(&self) -> Vec<String> {
        self.docs
            .lock()
            .unwrap()
            .keys()
            .map(|(_, id)| id.clone())
            .collect()
    }

    fn answer(&self, r: &Recorded) -> Reply {
        if !r.target.split('?').next().unwrap_or("").ends_with("/_bulk") || r.method != "POST" {
            return Reply::status(404).with_body("not a bulk request");
        }
        let docs = match parse_bulk(&r.body) {
            Ok(d) => d,
            Err(e) => {
                return Reply::status(400).with_body(
                    json!({"error": {"type": "parse_exception", "reason": e}}).to_string(),
                );
            }
        };
        let script = self.script.lock().unwrap().pop_front();
        let (per_item, fail_after) = match script {
            Some(EsScript::Whole(reply)) => return reply,
            Some(EsScript::Items(s)) => (s, None),
            Some(EsScript::IndexThenFail(st)) => (Vec::new(), Some(st)),
            None => (Vec::new(), None),
        };
        let mut items = Vec::new();
        let mut errors = false;
        let mut store = self.docs.lock().unwrap();
        for (i, (index, id, doc)) in docs.into_iter().enumerate() {
            let key = (index.clone(), id.clone());
            let status = match per_item.get(i).copied().flatten() {
                Some(s) => s,
                None if store.contains_key(&key) => 409,
                None => 201,
            };
            if (200..300).contains(&status) {
                store.insert(key, doc);
            }
            let mut item = json!({"_index": index, "_id": id, "status": status});
            if status >= 300 {
                errors = true;
                let kind = match status {
                    409 => "version_conflict_engine_exception",
                    429 => "es_rejected_execution_exception",
                    400 => "mapper_parsing_exception",
                    _ => "some_exception",
                };
                item["error"] = json!({"type": kind, "reason": format!("test reason {status}")});
            }
            items.push(json!({"create": item}));
        }
        if let Some(st) = fail_after {
            return Reply::status(st).with_body("answer lost");
        }
        Reply::status(200)
            .with_body(json!({"took": 1, "errors": errors, "items": items}).to_string())
    }
}

/// Parses a bulk body strictly: `create` action lines with `_index` and `_id`, each followed
/// by a JSON object; the body ends with a newline.
pub fn parse_bulk(body: &[u8]) -> Result<Vec<(String, String, Value)>, String> {
    let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
    if !text.ends_with('\n') {
        return Err("the body does not end with a newline".into());
    }
    let lines: Vec<&str> = text.trim_end_matches('\n').split('\n').collect();
    if !lines.len().is_multiple_of(2) {
        return Err(format!("{} lines: not action/document pairs", lines.len()));
    }
    let mut out = Vec::new();
    for pair in lines.chunks(2) {
        let action: Value =
            serde_json::from_str(pair[0]).map_err(|e| format!("action line: {e}"))?;
        let obj = action.as_object().ok_or("action is not an object")?;
        if obj.len() != 1 {
            return Err(format!("action line has {} keys", obj.len()));
        }
        let create = obj
            .get("create")
            .ok_or_else(|| format!("not a create action: {action}"))?;
        let index = create["_index"].as_str().ok_or("no _index")?.to_string();
        let id = create["_id"].as_str().ok_or("no _id")?.to_string();
        if create.get("_type").is_some() {
            return Err("_type present".into());
        }
        let doc: Value =
            serde_json::from_str(pair[1]).map_err(|e| format!("document line: {e}"))?;
        if !doc.is_object() {
            return Err("document is not an object".into());
        }
        out.push((index, id, doc));
    }
    Ok(out)
}

/// Writes a file in `dir`.
pub fn write(dir: &Path, name: &str, data: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// Queue items with encoded Event-like records: ids `r<n>`, one second apart.
pub fn records(from: u64, n: u64) -> Vec<kubetrail_state::QueueItem> {
    (from..from + n)
        .map(|i| {
            let rec = json!({
                "id": format!("r{i}"),
                "time": format!("2026-11-27T00:{:02}:{:02}Z", (i / 60) % 60, i % 60),
                "kind": "k8s_event", "source": "kubernetes_events.0", "tag": "k8s.events",
                "namespace": if i % 2 == 0 { "even" } else { "odd" },
                "name": format!("pod-{i}"), "message": format!("message {i}"),
            });
            kubetrail_state::QueueItem {
                seq: i,
                id: format!("r{i}"),
                data: serde_json::to_vec(&rec).unwrap().into(),
            }
        })
        .collect()
}
