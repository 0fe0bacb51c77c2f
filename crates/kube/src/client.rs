//! The Kubernetes API client: requests with the bearer token or client certificate (GET for
//! lists and watches, PUT/POST of JSON bodies for Leases), one retry with a freshly read token
//! after a 401, and error answers decoded into [`ApiError`].

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response};
use kubetrail_net::{Full, HttpClient, HttpClientOptions, NetError, ResponseBody};
use serde::de::DeserializeOwned;

use crate::connection::ResolvedConnection;
use crate::status::{ApiError, parse_retry_after};
use crate::token::{TokenError, TokenSource};

/// How much of an error body is read to decode its Status.
const ERROR_BODY_LIMIT: usize = 64 << 10;

/// What can go wrong with one API request.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// Network, TLS or HTTP failure.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The API server answered with an error status.
    #[error("{method} {url} failed: {error}")]
    Api {
        method: Method,
        url: String,
        #[source]
        error: Box<ApiError>,
    },
    /// The bearer token could not be read.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// A 2xx answer could not be decoded.
    #[error("cannot decode the answer of {url}: {reason}")]
    Decode { url: String, reason: String },
}

impl KubeError {
    /// The API error, if the server answered with one.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            KubeError::Api { error, .. } => Some(error),
            _ => None,
        }
    }

    /// The `Retry-After` the server asked for, if any.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        self.api_error().and_then(|e| e.retry_after)
    }
}

/// A client for one Kubernetes API server. Cheap to clone.
#[derive(Debug, Clone)]
pub struct KubeClient {
    http: HttpClient,
    tokens: TokenSource,
}

impl KubeClient {
    /// Builds the client from resolved settings: reads the CA and client certificate files now
    /// (so errors show at start-up); the token file is read at the first request.
    pub fn new(conn: &ResolvedConnection) -> Result<Self, KubeError> {
        Self::with_options(conn, HttpClientOptions::default())
    }

    /// The same with explicit HTTP timeouts.
    pub fn with_options(
        conn: &ResolvedConnection,
        options: HttpClientOptions,
    ) -> Result<Self, KubeError> {
        let http = HttpClient::with_options(&conn.url, &conn.tls, options)?;
        Ok(KubeClient {
            http,
            tokens: conn.auth.token_source(),
        })
    }

    /// A client from its parts.
    pub fn from_parts(http: HttpClient, tokens: TokenSource) -> Self {
        KubeClient { http, tokens }
    }

    /// The token source (to invalidate it after a 401 seen in a watch stream).
    pub fn tokens(&self) -> &TokenSource {
        &self.tokens
    }

    /// `scheme://host:port` of the API server.
    pub fn base_url(&self) -> &str {
        self.http.base_url()
    }

    /// The full URL of a path, for messages.
    pub fn url_for(&self, path_and_query: &str) -> String {
        self.http.url_for(path_and_query)
    }

    /// GETs `path_and_query`; a 2xx response is returned with its body still streaming. A 401
    /// makes the token be read again and the request be retried once; other error answers
    /// become [`KubeError::Api`].
    pub async fn get(&self, path_and_query: &str) -> Result<Response<ResponseBody>, KubeError> {
        self.request(Method::GET, path_and_query, None).await
    }

    /// Sends `method` to `path_and_query` with an optional JSON body; answers as
    /// [`KubeClient::get`] does (a 2xx response streams; a 401 is retried once with the token
    /// read again; other error answers become [`KubeError::Api`]).
    pub async fn request(
        &self,
        method: Method,
        path_and_query: &str,
        json_body: Option<Bytes>,
    ) -> Result<Response<ResponseBody>, KubeError> {
        let mut retried = false;
        loop {
            let token = self.tokens.token()?;
            let mut builder = Request::builder()
                .method(method.clone())
                .uri(path_and_query)
                .header(ACCEPT, HeaderValue::from_static("application/json"));
            if json_body.is_some() {
                builder =
                    builder.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
            let mut req = builder
                .body(Full::new(json_body.clone().unwrap_or_default()))
                .map_err(|e| {
                    KubeError::Net(NetError::InvalidRequest {
                        url: self.url_for(path_and_query),
                        reason: e.to_string(),
                    })
                })?;
            if let Some(token) = &token {
                // The token was checked to hold only visible ASCII when it was read.
                let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                    .map_err(|_| TokenError::Invalid {
                        origin: "for the Authorization header".to_string(),
                    })?;
                value.set_sensitive(true);
                req.headers_mut().insert(AUTHORIZATION, value);
            }
            let resp = self.http.send(req).await?;
            let status = resp.status();
            if status.is_success() {
                return Ok(resp);
            }
            let retry_after = parse_retry_after(resp.headers());
            let body = resp
                .into_body()
                .read_prefix(ERROR_BODY_LIMIT)
                .await
                .unwrap_or_default();
            let error = ApiError::from_response(status, retry_after, &body);
            if error.is_unauthorized() && self.tokens.can_refresh() && !retried {
                tracing::info!(
                    url = %self.url_for(path_and_query),
                    token_file = ?self.tokens.path(),
                    "401 Unauthorized: reading the token file again and retrying once"
                );
                self.tokens.invalidate();
                retried = true;
                continue;
            }
            return Err(KubeError::Api {
                method,
                url: self.url_for(path_and_query),
                error: Box::new(error),
            });
        }
    }

    /// GETs and decodes a JSON answer of at most `limit` bytes.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path_and_query: &str,
        limit: usize,
    ) -> Result<T, KubeError> {
        let body = self
            .get(path_and_query)
            .await?
            .into_body()
            .read_to_end(limit)
            .await?;
        serde_json::from_slice(&body).map_err(|e| KubeError::Decode {
            url: self.url_for(path_and_query),
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use kubetrail_net::TlsClientSettings;

    /// A plain-HTTP server that accepts one token at a time and records the tokens it saw.
    struct AuthServer {
        url: String,
        valid: Arc<Mutex<String>>,
        seen: Arc<Mutex<Vec<String>>>,
    }

    /// Status, headers and body of a canned answer.
    type Canned = (u16, Vec<(&'static str, &'static str)>, String);

    async fn auth_server(valid: &str, answer: fn(&str) -> Canned) -> AuthServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let valid = Arc::new(Mutex::new(valid.to_string()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (v, s) = (valid.clone(), seen.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (v, s) = (v.clone(), s.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (v, s) = (v.clone(), s.clone());
                        async move {
                            let auth = req
                                .headers()
                                .get("authorization")
                                .and_then(|h| h.to_str().ok())
                                .unwrap_or("")
                                .to_string();
                            s.lock().unwrap().push(auth.clone());
                            let (code, headers, body) = if auth
                                == format!("Bearer {}", v.lock().unwrap())
                            {
                                answer(req.uri().path())
                            } else {
                                (401, vec![], r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#.to_string())
                            };
                            let mut resp = http::Response::builder().status(code);
                            for (k, val) in headers {
                                resp = resp.header(k, val);
                            }
                            Ok::<_, Infallible>(resp.body(Full::new(Bytes::from(body))).unwrap())
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        AuthServer { url, valid, seen }
    }

    fn answers(path: &str) -> Canned {
        match path {
            "/ok" => (200, vec![], r#"{"kind":"EventList","items":[]}"#.to_string()),
            "/forbidden" => (403, vec![], r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"events is forbidden: User \"viewer\" cannot list resource \"events\"","reason":"Forbidden","code":403}"#.to_string()),
            "/busy" => (429, vec![("retry-after", "7")], "slow down".to_string()),
            _ => (502, vec![], "<html>proxy error</html>".to_string()),
        }
    }

    fn client(url: &str, tokens: TokenSource) -> KubeClient {
        KubeClient::from_parts(
            HttpClient::new(url, &TlsClientSettings::default()).unwrap(),
            tokens,
        )
    }

    #[tokio::test]
    async fn a_401_rereads_the_token_and_retries_once() {
        let server = auth_server("old", answers).await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "old\n").unwrap();
        let c = client(
            &server.url,
            TokenSource::file(&path, Duration::from_secs(3600)),
        );
        let v: serde_json::Value = c.get_json("/ok", 1024).await.unwrap();
        assert_eq!(v["kind"], "EventList");

        // The token rotates: the file changes and the server stops accepting the old one.
        std::fs::write(&path, "new").unwrap();
        *server.valid.lock().unwrap() = "new".into();
        c.get_json::<serde_json::Value>("/ok", 1024).await.unwrap();
        assert_eq!(
            *server.seen.lock().unwrap(),
            vec!["Bearer old", "Bearer old", "Bearer new"]
        );

        // Still refused after the re-read: one retry only, then a clear error.
        *server.valid.lock().unwrap() = "other".into();
        let err = c.get("/ok").await.unwrap_err();
        assert_eq!(err.api_error().map(|e| e.code), Some(401));
        assert_eq!(server.seen.lock().unwrap().len(), 5);
    }

    #[tokio::test]
    async fn error_answers_are_typed() {
        let server = auth_server("t", answers).await;
        let c = client(&server.url, TokenSource::fixed("t").unwrap());
        let err = c.get("/forbidden").await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("{}/forbidden", server.url)),
            "{text}"
        );
        assert!(
            text.contains("403 Forbidden: events is forbidden"),
            "{text}"
        );

        let err = c.get("/busy").await.unwrap_err();
        assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(err.api_error().unwrap().code, 429);

        let err = c.get("/proxy").await.unwrap_err();
        let e = err.api_error().unwrap();
        assert_eq!(
            (e.code, e.message.as_str()),
            (502, "<html>proxy error</html>")
        );

        // A fixed token cannot change: a 401 is not retried.
        let c = client(&server.url, TokenSource::fixed("wrong").unwrap());
        assert_eq!(
            c.get("/ok").await.unwrap_err().api_error().unwrap().code,
            401
        );
        let seen = server.seen.lock().unwrap();
        assert_eq!(seen.last().unwrap(), "Bearer wrong");
        assert_eq!(seen.iter().filter(|s| *s == "Bearer wrong").count(), 1);
    }

    #[tokio::test]
    async fn an_unreadable_token_file_is_named() {
        let server = auth_server("t", answers).await;
        let c = client(
            &server.url,
            TokenSource::file("/nonexistent/token", Duration::from_secs(1)),
        );
        let err = c.get("/ok").await.unwrap_err().to_string();
        assert!(err.contains("/nonexistent/token"), "{err}");
        assert!(server.seen.lock().unwrap().is_empty());
    }
}
