//! Tests of the TLS settings and the HTTP client against an in-test rustls + hyper server with
//! rcgen-made certificates: trust, name checks, client certificates, streaming, keep-alive.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::mpsc;

use crate::{HttpClient, NetError, TlsClientSettings};

struct Pki {
    ca_pem: String,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new(name: &str) -> Pki {
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

    fn server_cert(&self, names: &[&str]) -> (String, String) {
        self.leaf(names, "test server", ExtendedKeyUsagePurpose::ServerAuth)
    }

    fn client_cert(&self, cn: &str) -> (String, String) {
        self.leaf(&[], cn, ExtendedKeyUsagePurpose::ClientAuth)
    }
}

fn server_config(cert_pem: &str, key_pem: &str, client_ca_pem: Option<&str>) -> Arc<ServerConfig> {
    let provider = crate::crypto_provider();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca_pem {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
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

/// A response body either complete or fed chunk by chunk through a channel.
enum TestBody {
    Full(Option<Bytes>),
    Channel(mpsc::Receiver<Bytes>),
}

impl Body for TestBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            TestBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            TestBody::Channel(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }
}

type Handler = Arc<dyn Fn(Request<Incoming>) -> Response<TestBody> + Send + Sync>;

struct TestServer {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    /// Subject-less proof of client auth: the DER of each presented client leaf certificate.
    client_leafs: Arc<Mutex<Vec<Vec<u8>>>>,
}

async fn start(tls: Option<Arc<ServerConfig>>, handler: Handler) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let client_leafs = Arc::new(Mutex::new(Vec::new()));
    let (acc, leafs) = (accepted.clone(), client_leafs.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            acc.fetch_add(1, Ordering::SeqCst);
            let handler = handler.clone();
            let tls = tls.clone();
            let leafs = leafs.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let h = handler.clone();
                    async move { Ok::<_, Infallible>(h(req)) }
                });
                match tls {
                    Some(cfg) => {
                        let Ok(stream) = tokio_rustls::TlsAcceptor::from(cfg).accept(tcp).await
                        else {
                            return;
                        };
                        if let Some(c) = stream.get_ref().1.peer_certificates() {
                            leafs.lock().unwrap().push(c[0].to_vec());
                        }
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    }
                    None => {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tcp), svc)
                            .await;
                    }
                }
            });
        }
    });
    TestServer {
        addr,
        accepted,
        client_leafs,
    }
}

fn hello() -> Handler {
    Arc::new(|req: Request<Incoming>| {
        let text = format!("hello {}", req.uri());
        Response::new(TestBody::Full(Some(Bytes::from(text))))
    })
}

fn write(dir: &Path, name: &str, data: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

async fn get_text(client: &HttpClient, path: &str) -> Result<String, NetError> {
    let resp = client
        .send(Request::get(path).body(Full::new(Bytes::new())).unwrap())
        .await?;
    let body = resp.into_body().read_to_end(1 << 20).await?;
    Ok(String::from_utf8(body.to_vec()).unwrap())
}

fn settings_with_ca(ca_file: &Path) -> TlsClientSettings {
    TlsClientSettings {
        ca_file: Some(ca_file.to_path_buf()),
        ..Default::default()
    }
}

#[tokio::test]
async fn good_ca_and_ip_san_is_accepted() {
    let pki = Pki::new("good CA");
    let (cert, key) = pki.server_cert(&["localhost", "127.0.0.1"]);
    let server = start(Some(server_config(&cert, &key, None)), hello()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.crt", &pki.ca_pem);

    let client =
        HttpClient::new(&format!("https://{}", server.addr), &settings_with_ca(&ca)).unwrap();
    assert_eq!(get_text(&client, "/x?y=1").await.unwrap(), "hello /x?y=1");

    let by_name = HttpClient::new(
        &format!("https://localhost:{}/prefix/", server.addr.port()),
        &settings_with_ca(&ca),
    )
    .unwrap();
    assert_eq!(
        get_text(&by_name, "/api").await.unwrap(),
        "hello /prefix/api"
    );
}

#[tokio::test]
async fn wrong_ca_names_url_and_ca_file() {
    let pki = Pki::new("server CA");
    let other = Pki::new("unrelated CA");
    let (cert, key) = pki.server_cert(&["127.0.0.1"]);
    let server = start(Some(server_config(&cert, &key, None)), hello()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.crt", &other.ca_pem);

    let url = format!("https://{}", server.addr);
    let client = HttpClient::new(&url, &settings_with_ca(&ca)).unwrap();
    let err = get_text(&client, "/").await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, NetError::TlsCertificate { .. }), "{err:?}");
    assert_eq!(
        text,
        format!(
            "TLS handshake with {url} failed: invalid peer certificate: UnknownIssuer (CA file: {})",
            ca.display()
        )
    );
}

#[tokio::test]
async fn hostname_mismatch_is_rejected_and_vhost_fixes_it() {
    let pki = Pki::new("CA");
    let (cert, key) = pki.server_cert(&["kube.example"]);
    let server = start(Some(server_config(&cert, &key, None)), hello()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.crt", &pki.ca_pem);
    let url = format!("https://{}", server.addr);

    let err = get_text(&HttpClient::new(&url, &settings_with_ca(&ca)).unwrap(), "/")
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::TlsNameMismatch { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&url), "{text}");
    assert!(text.contains("\"127.0.0.1\""), "{text}");
    assert!(text.contains("kube.example"), "{text}");
    assert!(text.contains("tls.vhost"), "{text}");

    let mut good = settings_with_ca(&ca);
    good.vhost = Some("kube.example".into());
    assert_eq!(
        get_text(&HttpClient::new(&url, &good).unwrap(), "/")
            .await
            .unwrap(),
        "hello /"
    );

    let mut bad = settings_with_ca(&ca);
    bad.vhost = Some("other.example".into());
    let err = get_text(&HttpClient::new(&url, &bad).unwrap(), "/")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("other.example"), "{err}");
}

#[tokio::test]
async fn verify_off_accepts_anything() {
    let pki = Pki::new("self");
    let (cert, key) = pki.server_cert(&["nowhere.example"]);
    let server = start(Some(server_config(&cert, &key, None)), hello()).await;
    let settings = TlsClientSettings {
        verify: false,
        ..Default::default()
    };
    let client = HttpClient::new(&format!("https://{}", server.addr), &settings).unwrap();
    assert_eq!(get_text(&client, "/ok").await.unwrap(), "hello /ok");
}

#[tokio::test]
async fn ca_directory_is_loaded() {
    let pki = Pki::new("dir CA");
    let other = Pki::new("other");
    let (cert, key) = pki.server_cert(&["127.0.0.1"]);
    let server = start(Some(server_config(&cert, &key, None)), hello()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "README", "not a certificate");
    write(dir.path(), "a-other.pem", &other.ca_pem);
    write(dir.path(), "b-mine.pem", &pki.ca_pem);
    std::fs::create_dir(dir.path().join("subdir")).unwrap();
    let settings = TlsClientSettings {
        ca_path: Some(dir.path().to_path_buf()),
        ..Default::default()
    };
    let client = HttpClient::new(&format!("https://{}", server.addr), &settings).unwrap();
    assert_eq!(get_text(&client, "/").await.unwrap(), "hello /");

    let empty = tempfile::tempdir().unwrap();
    write(empty.path(), "notes.txt", "nothing here");
    let settings = TlsClientSettings {
        ca_path: Some(empty.path().to_path_buf()),
        ..Default::default()
    };
    let err = settings.build().unwrap_err().to_string();
    assert!(err.contains(&empty.path().display().to_string()), "{err}");
}

#[tokio::test]
async fn inline_ca_and_client_certificate_are_presented() {
    let pki = Pki::new("CA");
    let (cert, key) = pki.server_cert(&["127.0.0.1"]);
    let (client_cert, client_key) = pki.client_cert("system:kubetrail");
    let server = start(Some(server_config(&cert, &key, Some(&pki.ca_pem))), hello()).await;
    let settings = TlsClientSettings {
        ca_pem: Some(pki.ca_pem.clone().into_bytes()),
        client_cert_pem: Some(client_cert.clone().into_bytes()),
        client_key_pem: Some(client_key.into_bytes()),
        ..Default::default()
    };
    let client = HttpClient::new(&format!("https://{}", server.addr), &settings).unwrap();
    get_text(&client, "/").await.unwrap();
    let expected = CertificateDer::from_pem_slice(client_cert.as_bytes()).unwrap();
    assert_eq!(
        *server.client_leafs.lock().unwrap(),
        vec![expected.to_vec()]
    );

    // Files work the same; without a client certificate none is presented.
    let dir = tempfile::tempdir().unwrap();
    let (c2, k2) = pki.client_cert("second");
    let settings = TlsClientSettings {
        ca_file: Some(write(dir.path(), "ca.crt", &pki.ca_pem)),
        client_cert_file: Some(write(dir.path(), "c.crt", &c2)),
        client_key_file: Some(write(dir.path(), "c.key", &k2)),
        ..Default::default()
    };
    let client = HttpClient::new(&format!("https://{}", server.addr), &settings).unwrap();
    get_text(&client, "/").await.unwrap();
    let anonymous = HttpClient::new(
        &format!("https://{}", server.addr),
        &settings_with_ca(&dir.path().join("ca.crt")),
    )
    .unwrap();
    get_text(&anonymous, "/").await.unwrap();
    assert_eq!(server.client_leafs.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn unreadable_or_bad_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.crt");
    let err = settings_with_ca(&missing).build().unwrap_err().to_string();
    assert!(
        err.contains("CA file") && err.contains(&missing.display().to_string()),
        "{err}"
    );

    let garbage = write(
        dir.path(),
        "garbage.crt",
        "-----BEGIN CERTIFICATE-----\n!!!\n",
    );
    let err = settings_with_ca(&garbage).build().unwrap_err().to_string();
    assert!(err.contains(&garbage.display().to_string()), "{err}");

    let empty = write(dir.path(), "empty.crt", "");
    let err = settings_with_ca(&empty).build().unwrap_err().to_string();
    assert!(err.contains("no usable CA"), "{err}");

    let pki = Pki::new("CA");
    let bad_key = write(dir.path(), "bad.key", "not a key");
    let (c, _) = pki.client_cert("x");
    let settings = TlsClientSettings {
        ca_pem: Some(pki.ca_pem.into_bytes()),
        client_cert_file: Some(write(dir.path(), "c.crt", &c)),
        client_key_file: Some(bad_key.clone()),
        ..Default::default()
    };
    let err = settings.build().unwrap_err().to_string();
    assert!(err.contains(&bad_key.display().to_string()), "{err}");

    let err = TlsClientSettings::default().build().unwrap_err();
    assert!(matches!(err, NetError::NoTrustAnchors));
    TlsClientSettings {
        use_webpki_roots: true,
        ..Default::default()
    }
    .build()
    .unwrap();
}

#[test]
fn debug_output_redacts_the_key() {
    let s = TlsClientSettings {
        client_key_pem: Some(b"-----BEGIN PRIVATE KEY-----SECRET".to_vec()),
        ..Default::default()
    };
    let text = format!("{s:?}");
    assert!(!text.contains("SECRET"), "{text}");
    assert!(text.contains("redacted"));
}

#[tokio::test]
async fn streaming_body_chunks_arrive_incrementally() {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let rx = Arc::new(Mutex::new(Some(rx)));
    let handler: Handler = Arc::new(move |_req| {
        let rx = rx.lock().unwrap().take().expect("one streaming request");
        Response::new(TestBody::Channel(rx))
    });
    let server = start(None, handler).await;
    let client = HttpClient::new(
        &format!("http://{}", server.addr),
        &TlsClientSettings::default(),
    )
    .unwrap();
    let resp = client
        .send(
            Request::get("/watch")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = resp.into_body();
    for i in 0..3 {
        let frame = Bytes::from(format!("{{\"n\":{i}}}\n"));
        tx.send(frame.clone()).await.unwrap();
        // The next chunk is only sent after this one was received: the body cannot be buffered.
        let got = tokio::time::timeout(Duration::from_secs(10), body.next_chunk())
            .await
            .expect("chunk arrives while the response is still open")
            .unwrap()
            .unwrap();
        assert_eq!(got, frame);
    }
    drop(tx);
    assert!(body.next_chunk().await.is_none());
}

#[tokio::test]
async fn keep_alive_connections_are_reused_after_the_body_ends() {
    let server = start(None, hello()).await;
    let client = HttpClient::new(
        &format!("http://{}", server.addr),
        &TlsClientSettings::default(),
    )
    .unwrap();
    for i in 0..5 {
        assert_eq!(
            get_text(&client, &format!("/{i}")).await.unwrap(),
            format!("hello /{i}")
        );
    }
    assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(client.idle_connections(), 1);

    // A body dropped before its end closes its connection instead of returning it.
    let resp = client
        .send(Request::get("/a").body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    drop(resp);
    get_text(&client, "/b").await.unwrap();
    assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn body_limit_and_connection_errors_are_reported() {
    let server = start(None, hello()).await;
    let client = HttpClient::new(
        &format!("http://{}", server.addr),
        &TlsClientSettings::default(),
    )
    .unwrap();
    let resp = client
        .send(
            Request::get("/long-path")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let err = resp.into_body().read_to_end(4).await.unwrap_err();
    assert!(
        matches!(err, NetError::BodyTooLarge { limit: 4, .. }),
        "{err:?}"
    );

    // A port nobody listens on: bind, learn the port, close.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let client = HttpClient::new(&url, &TlsClientSettings::default()).unwrap();
    let err = get_text(&client, "/").await.unwrap_err();
    assert!(matches!(err, NetError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains(&url));
    assert!(err.is_transient());

    for bad in ["ftp://x", "no-scheme", "https://", "http://h/?q=1"] {
        assert!(
            HttpClient::new(bad, &TlsClientSettings::default()).is_err(),
            "{bad}"
        );
    }
}
