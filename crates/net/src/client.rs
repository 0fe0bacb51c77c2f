//! A small HTTP/1.1 client over hyper's connection API and tokio-rustls: one base URL, a
//! connect timeout, a small bounded pool of keep-alive connections, streaming response bodies
//! and TLS errors that say which URL and which CA were involved.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, HeaderValue, USER_AGENT};
use http::{Method, Request, Response, Uri};
use http_body_util::Full;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::CertificateError;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_rustls::TlsConnector;

use crate::{NetError, ResponseBody, TlsClientSettings};

/// Timeouts and pool size of an [`HttpClient`].
#[derive(Clone, Debug)]
pub struct HttpClientOptions {
    /// Limit for the TCP connect plus the TLS handshake.
    pub connect_timeout: Duration,
    /// Limit for the response head after the request was sent; `None` waits forever.
    pub response_timeout: Option<Duration>,
    /// How many idle keep-alive connections are kept.
    pub pool_max_idle: usize,
    /// Idle connections older than this are closed instead of reused.
    pub pool_idle_timeout: Duration,
    /// `User-Agent` sent when the request has none.
    pub user_agent: String,
}

impl Default for HttpClientOptions {
    fn default() -> Self {
        HttpClientOptions {
            connect_timeout: Duration::from_secs(10),
            response_timeout: Some(Duration::from_secs(60)),
            pool_max_idle: 4,
            pool_idle_timeout: Duration::from_secs(60),
            user_agent: concat!("kubetrail/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

/// An HTTP/1.1 client for one server (`http://` or `https://`, optionally with a path prefix).
/// Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct HttpClient {
    inner: Arc<ClientInner>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("base_url", &self.inner.target.url)
            .finish()
    }
}

struct ClientInner {
    target: Target,
    tls: Option<TlsTarget>,
    options: HttpClientOptions,
    pool: Arc<Pool>,
}

struct Target {
    /// Host without IPv6 brackets, for connecting.
    host: String,
    port: u16,
    /// `host[:port]` as written, for the Host header.
    authority: String,
    /// Path prefix of the base URL without a trailing slash (often empty).
    base_path: String,
    /// `scheme://authority` for messages.
    url: String,
}

struct TlsTarget {
    connector: TlsConnector,
    server_name: ServerName<'static>,
    ca_description: String,
    debug: u8,
}

impl HttpClient {
    /// A client for `base_url` with default options. For `https://` the TLS settings are built
    /// now, so a missing CA file is reported here; for `http://` they are ignored.
    pub fn new(base_url: &str, tls: &TlsClientSettings) -> Result<Self, NetError> {
        Self::with_options(base_url, tls, HttpClientOptions::default())
    }

    /// A client with explicit timeouts and pool size.
    pub fn with_options(
        base_url: &str,
        tls: &TlsClientSettings,
        options: HttpClientOptions,
    ) -> Result<Self, NetError> {
        let bad = |reason: &str| NetError::InvalidUrl {
            url: base_url.to_string(),
            reason: reason.to_string(),
        };
        let uri: Uri = base_url
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            Some(other) => return Err(bad(&format!("unsupported scheme {other:?}"))),
            None => return Err(bad("missing scheme (http:// or https://)")),
        };
        let authority = uri.authority().ok_or_else(|| bad("missing host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        if authority.as_str().contains('@') {
            return Err(bad("user info in the URL is not supported"));
        }
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        if uri.query().is_some() {
            return Err(bad("a base URL cannot have a query"));
        }
        let base_path = uri.path().trim_end_matches('/').to_string();
        let url = format!("{}://{}", if https { "https" } else { "http" }, authority);
        let tls = if https {
            let config = tls.build()?;
            Some(TlsTarget {
                connector: TlsConnector::from(config),
                server_name: tls.server_name(&host)?,
                ca_description: tls.ca_description(),
                debug: tls.debug,
            })
        } else {
            None
        };
        Ok(HttpClient {
            inner: Arc::new(ClientInner {
                target: Target {
                    host,
                    port,
                    authority: authority.as_str().to_string(),
                    base_path,
                    url,
                },
                tls,
                pool: Arc::new(Pool {
                    idle: Mutex::new(Vec::new()),
                    max_idle: options.pool_max_idle,
                    idle_timeout: options.pool_idle_timeout,
                }),
                options,
            }),
        })
    }

    /// `scheme://host[:port]` of the server.
    pub fn base_url(&self) -> &str {
        &self.inner.target.url
    }

    /// The full URL of a request target (`/api/v1/events?...`), for messages.
    pub fn url_for(&self, path_and_query: &str) -> String {
        format!(
            "{}{}{}",
            self.inner.target.url, self.inner.target.base_path, path_and_query
        )
    }

    /// Number of idle pooled connections (for tests and diagnostics).
    pub fn idle_connections(&self) -> usize {
        self.inner.pool.len()
    }

    /// Sends a request whose URI is a path and query (`/api/v1/events?limit=5`), relative to the
    /// base URL. The response body streams; see [`ResponseBody`].
    ///
    /// A request that fails on a reused keep-alive connection before any answer (the server
    /// closed it while idle) is retried once on a new connection when it is idempotent.
    pub async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<ResponseBody>, NetError> {
        let (parts, body) = req.into_parts();
        let pq = parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/");
        if !pq.starts_with('/') {
            return Err(NetError::InvalidRequest {
                url: self.base_url().to_string(),
                reason: format!("request target {pq:?} must start with '/'"),
            });
        }
        let target = format!("{}{}", self.inner.target.base_path, pq);
        let url: Arc<str> = Arc::from(format!("{}{}", self.inner.target.url, target));
        let uri: Uri =
            target
                .parse()
                .map_err(|e: http::uri::InvalidUri| NetError::InvalidRequest {
                    url: url.to_string(),
                    reason: e.to_string(),
                })?;
        let mut headers = parts.headers;
        if !headers.contains_key(HOST) {
            let host = HeaderValue::from_str(&self.inner.target.authority).map_err(|e| {
                NetError::InvalidRequest {
                    url: url.to_string(),
                    reason: e.to_string(),
                }
            })?;
            headers.insert(HOST, host);
        }
        if !headers.contains_key(USER_AGENT)
            && let Ok(ua) = HeaderValue::from_str(&self.inner.options.user_agent)
        {
            headers.insert(USER_AGENT, ua);
        }
        let idempotent = matches!(
            parts.method,
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
        );

        let mut attempt = 0;
        loop {
            attempt += 1;
            let (mut sender, reused) = match self.inner.pool.checkout().await {
                Some(s) => (s, true),
                None => (self.connect().await?, false),
            };
            let mut req = Request::new(body.clone());
            *req.method_mut() = parts.method.clone();
            *req.uri_mut() = uri.clone();
            *req.version_mut() = http::Version::HTTP_11;
            *req.headers_mut() = headers.clone();

            let result = match self.inner.options.response_timeout {
                Some(limit) => match timeout(limit, sender.send_request(req)).await {
                    Ok(r) => r,
                    Err(_) => {
                        return Err(NetError::ResponseTimeout {
                            url: url.to_string(),
                            after: limit,
                        });
                    }
                },
                None => sender.send_request(req).await,
            };
            match result {
                Ok(resp) => {
                    let recycle = Some(Recycle {
                        sender,
                        pool: self.inner.pool.clone(),
                    });
                    return Ok(resp.map(|b| ResponseBody::new(b, url.clone(), recycle)));
                }
                Err(e) => {
                    let stale = e.is_canceled()
                        || (idempotent && (e.is_closed() || e.is_incomplete_message()));
                    if reused && stale && attempt == 1 {
                        tracing::debug!(url = %url, error = %e, "pooled connection was stale; retrying on a new one");
                        continue;
                    }
                    return Err(NetError::Request {
                        url: url.to_string(),
                        source: e,
                    });
                }
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, NetError> {
        let limit = self.inner.options.connect_timeout;
        match timeout(limit, self.connect_inner()).await {
            Ok(r) => r,
            Err(_) => Err(NetError::ConnectTimeout {
                url: self.inner.target.url.clone(),
                after: limit,
            }),
        }
    }

    async fn connect_inner(&self) -> Result<SendRequest<Full<Bytes>>, NetError> {
        let t = &self.inner.target;
        let tcp = TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map_err(|source| NetError::Connect {
                url: t.url.clone(),
                source,
            })?;
        // Small request heads and watch frames: latency matters more than packet count.
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.inner.tls else {
            return self.http_handshake(TokioIo::new(tcp)).await;
        };
        let stream = tls
            .connector
            .connect(tls.server_name.clone(), tcp)
            .await
            .map_err(|e| self.handshake_error(tls, e))?;
        if tls.debug > 0 {
            let (_, conn) = stream.get_ref();
            let chain = conn.peer_certificates().unwrap_or(&[]);
            tracing::info!(
                url = %t.url,
                server_name = ?tls.server_name,
                protocol = ?conn.protocol_version(),
                cipher_suite = ?conn.negotiated_cipher_suite().map(|s| s.suite()),
                alpn = ?conn.alpn_protocol().map(String::from_utf8_lossy),
                peer_certificates = chain.len(),
                trust = %tls.ca_description,
                "TLS handshake completed"
            );
            if tls.debug > 1 {
                for (i, cert) in chain.iter().enumerate() {
                    tracing::info!(url = %t.url, index = i, der_bytes = cert.len(), "TLS peer certificate");
                }
            }
        }
        self.http_handshake(TokioIo::new(stream)).await
    }

    async fn http_handshake<T>(&self, io: T) -> Result<SendRequest<Full<Bytes>>, NetError>
    where
        T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (sender, conn) = http1::handshake(io)
            .await
            .map_err(|source| NetError::Request {
                url: self.inner.target.url.clone(),
                source,
            })?;
        let url = self.inner.target.url.clone();
        // The connection task ends when both the sender and the last response body are dropped.
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(url = %url, %error, "HTTP connection closed with an error");
            }
        });
        Ok(sender)
    }

    fn handshake_error(&self, tls: &TlsTarget, e: std::io::Error) -> NetError {
        let url = self.inner.target.url.clone();
        let rustls_error = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .cloned();
        if tls.debug > 0 {
            tracing::info!(url = %url, error = %e, trust = %tls.ca_description, "TLS handshake failed");
        }
        match rustls_error {
            Some(
                source @ rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                ),
            ) => NetError::TlsNameMismatch {
                url,
                name: server_name_text(&tls.server_name),
                ca: tls.ca_description.clone(),
                source: Box::new(source),
            },
            Some(source @ rustls::Error::InvalidCertificate(_)) => NetError::TlsCertificate {
                url,
                ca: tls.ca_description.clone(),
                source: Box::new(source),
            },
            _ => NetError::TlsHandshake { url, source: e },
        }
    }
}

fn server_name_text(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(d) => d.as_ref().to_string(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

/// A bounded set of idle keep-alive connections.
pub(crate) struct Pool {
    idle: Mutex<Vec<IdleConn>>,
    max_idle: usize,
    idle_timeout: Duration,
}

struct IdleConn {
    sender: SendRequest<Full<Bytes>>,
    since: Instant,
}

impl Pool {
    fn len(&self) -> usize {
        self.idle.lock().map(|v| v.len()).unwrap_or(0)
    }

    fn put(&self, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.max_idle
        {
            idle.push(IdleConn {
                sender,
                since: Instant::now(),
            });
        }
    }

    async fn checkout(&self) -> Option<SendRequest<Full<Bytes>>> {
        loop {
            let conn = self.idle.lock().ok()?.pop()?;
            if conn.sender.is_closed() || conn.since.elapsed() > self.idle_timeout {
                continue;
            }
            let mut sender = conn.sender;
            // The body was read to its end, so the connection is ready at once unless it closed.
            match timeout(Duration::from_secs(1), sender.ready()).await {
                Ok(Ok(())) => return Some(sender),
                _ => continue,
            }
        }
    }
}

/// A connection travelling with a response body, returned to the pool when the body ends.
pub(crate) struct Recycle {
    sender: SendRequest<Full<Bytes>>,
    pool: Arc<Pool>,
}

impl Recycle {
    pub(crate) fn give_back(self) {
        self.pool.put(self.sender);
    }
}
