//! Test helpers: a real HTTP/1.1 client (hyper over tokio-rustls, trusting the emulator's CA),
//! a watch-stream reader, and fixture loading from `KUBETRAIL_FIXTURES`.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use kubetrail_emulator::Emulator;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A client for one emulator: a fresh connection per request (no idle keep-alive state).
#[derive(Clone)]
pub struct Client {
    addr: std::net::SocketAddr,
    tls: Option<TlsConnector>,
    token: Option<String>,
    user_agent: String,
}

/// A fully read answer.
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn connector(ca_pem: &str, client_cert: Option<(&str, &str)>) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .map(|c| c.unwrap())
                    .collect();
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl Client {
    /// Trusts the emulator's CA and uses the default admin token.
    pub fn new(emu: &Emulator) -> Client {
        let tls = emu
            .url()
            .starts_with("https")
            .then(|| connector(&emu.ca_pem(), None));
        Client {
            addr: emu.addr(),
            tls,
            token: Some("admin-token".to_string()),
            user_agent: "kubetrail-test/1.0".to_string(),
        }
    }

    pub fn token(mut self, token: Option<&str>) -> Client {
        self.token = token.map(str::to_string);
        self
    }

    pub fn user_agent(mut self, ua: &str) -> Client {
        self.user_agent = ua.to_string();
        self
    }

    /// Trusts `ca_pem` instead of the emulator's CA.
    pub fn trusting(mut self, ca_pem: &str) -> Client {
        self.tls = Some(connector(ca_pem, None));
        self
    }

    /// Presents a client certificate (and no token).
    pub fn client_cert(mut self, ca_pem: &str, cert: &str, key: &str) -> Client {
        self.tls = Some(connector(ca_pem, Some((cert, key))));
        self.token = None;
        self
    }

    async fn connect(&self) -> Result<Box<dyn Io>, String> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| e.to_string())?;
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some(c) => {
                let name = ServerName::try_from("localhost").unwrap();
                let tls = c.connect(name, tcp).await.map_err(|e| e.to_string())?;
                Ok(Box::new(tls))
            }
        }
    }

    /// Sends a GET and returns the response head with the streaming body.
    pub async fn send(&self, path: &str) -> Result<http::Response<Incoming>, String> {
        self.send_with("GET", path, None).await
    }

    /// Any method, with an optional JSON body; reads the whole answer.
    pub async fn request(&self, method: &str, path: &str, body: Option<&str>) -> Resp {
        let resp = self.send_with(method, path, body).await.unwrap();
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Resp {
            status: parts.status,
            headers: parts.headers,
            body: body.to_vec(),
        }
    }

    async fn send_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<http::Response<Incoming>, String> {
        let io = self.connect().await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("Host", "localhost")
            .header("User-Agent", &self.user_agent);
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let body = match body {
            Some(b) => {
                req = req.header("Content-Type", "application/json");
                Full::new(Bytes::from(b.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let req = req.body(body).unwrap();
        sender.send_request(req).await.map_err(|e| e.to_string())
    }

    /// GET and read the whole body.
    pub async fn get(&self, path: &str) -> Resp {
        self.try_get(path).await.unwrap()
    }

    pub async fn try_get(&self, path: &str) -> Result<Resp, String> {
        let resp = self.send(path).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Resp {
            status: parts.status,
            headers: parts.headers,
            body: body.to_vec(),
        })
    }

    /// Opens a watch (GET) and returns a frame reader.
    pub async fn watch(&self, path: &str) -> Watch {
        let resp = self.send(path).await.unwrap();
        let (parts, body) = resp.into_parts();
        Watch {
            status: parts.status,
            headers: parts.headers,
            body,
            buf: Vec::new(),
            chunks: Vec::new(),
        }
    }
}

/// How a watch read ended.
#[derive(Debug, PartialEq)]
pub enum Next {
    /// One newline-terminated line (without the newline).
    Line(Vec<u8>),
    /// The stream ended cleanly (terminating chunk); leftover bytes without a newline.
    End(Vec<u8>),
    /// The stream broke (no terminating chunk); leftover bytes without a newline.
    Broken(Vec<u8>),
    /// Nothing within the time limit.
    Timeout,
}

pub struct Watch {
    pub status: StatusCode,
    pub headers: HeaderMap,
    body: Incoming,
    buf: Vec<u8>,
    /// Sizes of the HTTP chunks seen so far.
    pub chunks: Vec<usize>,
}

impl Watch {
    pub async fn next(&mut self, limit: Duration) -> Next {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Next::Line(line[..line.len() - 1].to_vec());
            }
            match tokio::time::timeout(limit, self.body.frame()).await {
                Err(_) => return Next::Timeout,
                Ok(None) => return Next::End(std::mem::take(&mut self.buf)),
                Ok(Some(Err(_))) => return Next::Broken(std::mem::take(&mut self.buf)),
                Ok(Some(Ok(f))) => {
                    if let Ok(d) = f.into_data() {
                        self.chunks.push(d.len());
                        self.buf.extend_from_slice(&d);
                    }
                }
            }
        }
    }

    /// The next line parsed as JSON; panics on anything else.
    pub async fn frame(&mut self) -> Value {
        match self.next(Duration::from_secs(10)).await {
            Next::Line(l) => serde_json::from_slice(&l)
                .unwrap_or_else(|e| panic!("bad frame {e}: {}", String::from_utf8_lossy(&l))),
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// The next line as text; panics on anything else.
    pub async fn line(&mut self) -> String {
        match self.next(Duration::from_secs(10)).await {
            Next::Line(l) => String::from_utf8(l).unwrap(),
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// Reads frames until the stream ends; returns (frames, how it ended).
    pub async fn drain(&mut self, limit: Duration) -> (Vec<Vec<u8>>, Next) {
        let mut lines = Vec::new();
        loop {
            match self.next(limit).await {
                Next::Line(l) => lines.push(l),
                end => return (lines, end),
            }
        }
    }
}

/// The fixture directory from `KUBETRAIL_FIXTURES` (…/fixtures or …/fixtures/kube-api).
pub fn fixtures_dir() -> PathBuf {
    let dir = std::env::var("KUBETRAIL_FIXTURES").unwrap_or_else(|_| {
        panic!("KUBETRAIL_FIXTURES is not set: point it at the shared fixtures directory (e.g. ../shared/fixtures beside the repository)")
    });
    let p = PathBuf::from(dir);
    if p.join("kube-api").is_dir() {
        p.join("kube-api")
    } else {
        p
    }
}

/// A fixture: its header line (JSON) and its body bytes.
pub struct Fixture {
    pub header: Value,
    pub body: Vec<u8>,
}

impl Fixture {
    pub fn load(name: &str) -> Fixture {
        let path = fixtures_dir().join(name);
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let nl = data.iter().position(|&b| b == b'\n').unwrap();
        Fixture {
            header: serde_json::from_slice(&data[..nl]).unwrap(),
            body: data[nl + 1..].to_vec(),
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn request_target(&self) -> String {
        let r = self.header["request"].as_str().unwrap();
        r.split_once(' ').unwrap().1.to_string()
    }

    /// The exact text of each list item.
    pub fn raw_items(&self) -> Vec<String> {
        raw_items(&self.body)
    }

    pub fn names(&self) -> Vec<String> {
        names(&self.json())
    }
}

#[derive(serde::Deserialize)]
struct RawList {
    items: Vec<Box<RawValue>>,
}

pub fn raw_items(body: &[u8]) -> Vec<String> {
    let l: RawList = serde_json::from_slice(body).unwrap();
    l.items.into_iter().map(|r| r.get().to_string()).collect()
}

pub fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

/// Top-level key order of a JSON object (text), via a streaming read.
pub fn key_order(json: &str) -> Vec<String> {
    #[derive(Default)]
    struct Keys(Vec<String>);
    impl<'de> serde::Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Keys, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut m: A,
                ) -> Result<Keys, A::Error> {
                    let mut k = Vec::new();
                    while let Some((key, _)) = m.next_entry::<String, serde::de::IgnoredAny>()? {
                        k.push(key);
                    }
                    Ok(Keys(k))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_str::<Keys>(json).unwrap().0
}

/// Key order of a nested object addressed by `path` (e.g. `["metadata"]`).
pub fn nested_key_order(json: &str, path: &[&str]) -> Vec<String> {
    let mut cur: Box<RawValue> = serde_json::from_str(json).unwrap();
    for p in path {
        let m: std::collections::HashMap<String, Box<RawValue>> =
            serde_json::from_str(cur.get()).unwrap();
        cur = m.get(*p).unwrap_or_else(|| panic!("no {p}")).to_owned();
    }
    key_order(cur.get())
}

/// Replaces every `"resourceVersion":"<n>"` with a placeholder, so objects stored at other
/// revisions compare equal.
pub fn mask_rvs(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let pat = "\"resourceVersion\":\"";
    while let Some(i) = rest.find(pat) {
        out.push_str(&rest[..i + pat.len()]);
        rest = &rest[i + pat.len()..];
        let end = rest.find('"').unwrap();
        out.push('#');
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Loads every event of `core-v1-events-list-all.txt` into the emulator (in revision order,
/// so each keeps its recorded resourceVersion).
pub fn load_fixture_events(emu: &Emulator) -> usize {
    let f = Fixture::load("core-v1-events-list-all.txt");
    let mut items: Vec<(u64, String)> = f
        .raw_items()
        .into_iter()
        .map(|raw| {
            let v: Value = serde_json::from_str(&raw).unwrap();
            let rv: u64 = v["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            (rv, raw)
        })
        .collect();
    items.sort();
    for (_, raw) in &items {
        emu.import_core_event_json(raw).unwrap();
    }
    items.len()
}

/// Default options with fast-to-test settings.
pub fn opts() -> kubetrail_emulator::EmulatorOptions {
    kubetrail_emulator::EmulatorOptions::default()
}

pub async fn start() -> Emulator {
    Emulator::start(opts()).await.unwrap()
}
