//! A small NATS client over tokio, enough for publishing to JetStream: connect (plain or TLS,
//! user/password or token), subscribe to a private reply inbox, make JetStream API requests,
//! and publish a batch with one acknowledgement per message, many in flight at once.
//!
//! Everything runs in the caller's task: the output calls it one batch at a time, so there is
//! no background reader. Between batches the server's `PING`s wait in the socket; the next
//! batch first answers whatever is pending (and notices a connection the server closed).

use std::borrow::Cow;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::proto::{self, Limits, ServerInfo, ServerOp};

/// A byte stream to the server, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// What failed in talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("TLS handshake with {addr}: {source}")]
    TlsHandshake {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("TLS settings: {0}")]
    TlsConfig(#[source] kubetrail_net::NetError),
    #[error("'{0}' is not a valid TLS server name (set tls.vhost)")]
    ServerName(String),
    #[error("{addr} requires TLS: set `tls: on`")]
    TlsRequired { addr: String },
    #[error("{addr} does not support message headers (NATS server 2.2 or later is needed)")]
    NoHeaders { addr: String },
    #[error("reading {what} {path}: {source}")]
    SecretFile {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the server said: {0}")]
    Server(String),
    #[error("NATS protocol: {0}")]
    Proto(#[from] proto::ProtoError),
    #[error("the server closed the connection")]
    Closed,
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    #[error("{what} timed out after {after:?}")]
    Timeout { what: &'static str, after: Duration },
    #[error("JetStream: {0}")]
    JetStream(String),
}

/// One server address from `url`.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// `tls://` scheme.
    pub tls: bool,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials from the URL are never shown.
        write!(
            f,
            "{}:{}{}",
            self.host,
            self.port,
            if self.tls { " (tls)" } else { "" }
        )
    }
}

impl Endpoint {
    /// Parses `nats://[user:password@|token@]host[:port]` (also `tls://`, or no scheme), several
    /// separated by commas. The default port is 4222.
    pub fn parse_list(s: &str) -> Result<Vec<Endpoint>, String> {
        let list: Vec<Endpoint> = s
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(Endpoint::parse)
            .collect::<Result<_, _>>()?;
        if list.is_empty() {
            return Err("no server address given".into());
        }
        Ok(list)
    }

    fn parse(u: &str) -> Result<Endpoint, String> {
        let (tls, rest) = match u.split_once("://") {
            Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
                "nats" => (false, rest),
                "tls" => (true, rest),
                other => {
                    return Err(format!(
                        "unsupported scheme '{other}' (use nats:// or tls://)"
                    ));
                }
            },
            None => (false, u),
        };
        let rest = rest.trim_end_matches('/');
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((ui, hp)) => (Some(ui), hp),
            None => (None, rest),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or("an IPv6 address is missing its ']'")?;
            (h, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() || host.contains(['/', '?', '#', ' ']) {
            return Err(format!("'{hostport}' has no valid host"));
        }
        let port = match port {
            None => 4222,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("'{p}' is not a port"))?,
        };
        let (user, password, token) = match userinfo {
            None => (None, None, None),
            Some(ui) => match ui.split_once(':') {
                Some((u, p)) => (Some(percent_decode(u)), Some(percent_decode(p)), None),
                None => (None, None, Some(percent_decode(ui))),
            },
        };
        Ok(Endpoint {
            host: host.to_string(),
            port,
            tls,
            user,
            password,
            token,
        })
    }

    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Credentials for `CONNECT`. Never logged.
#[derive(Clone, Default)]
pub struct Auth {
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
}

/// TLS for the connection.
#[derive(Clone)]
pub struct Tls {
    pub config: Arc<ClientConfig>,
    pub vhost: Option<String>,
}

/// What the server answered to one request or publish.
#[derive(Debug)]
pub struct Reply {
    pub status: Option<u16>,
    pub payload: Vec<u8>,
}

/// One message to publish.
pub struct Outgoing<'a> {
    pub subject: String,
    pub id: Cow<'a, str>,
    pub payload: &'a [u8],
}

/// A publish acknowledgement (`{"stream":..,"seq":..,"duplicate":true}`) or an API error.
#[derive(Debug, Deserialize)]
pub struct PubAck {
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(default)]
    pub duplicate: bool,
    #[serde(default)]
    pub error: Option<ApiError>,
}

/// A JetStream API error.
#[derive(Debug, Clone, Deserialize)]
pub struct ApiError {
    #[serde(default)]
    pub code: u16,
    #[serde(default)]
    pub err_code: Option<u32>,
    #[serde(default)]
    pub description: Option<String>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (code {}",
            self.description.as_deref().unwrap_or("error"),
            self.code
        )?;
        if let Some(e) = self.err_code {
            write!(f, ", err_code {e}")?;
        }
        write!(f, ")")
    }
}

/// The outcome of a published batch: which messages were not stored, and how many the
/// stream already had (deduplicated by `Nats-Msg-Id`).
#[derive(Debug, Default)]
pub struct BatchOutcome {
    pub failed: Vec<(usize, String)>,
    pub duplicates: usize,
    /// The highest stream sequence acknowledged.
    pub last_seq: u64,
}

/// What one ack says: the message's stream sequence and whether it was a duplicate.
pub fn ack_result(reply: &Reply) -> Result<(u64, bool), String> {
    match reply.status {
        Some(503) => return Err("no JetStream stream takes this subject (no responders)".into()),
        Some(s) if s >= 300 => return Err(format!("status {s}")),
        _ => {}
    }
    match serde_json::from_slice::<PubAck>(&reply.payload) {
        Ok(PubAck { error: Some(e), .. }) => Err(format!("JetStream refused the message: {e}")),
        Ok(PubAck {
            seq: Some(seq),
            duplicate,
            ..
        }) => Ok((seq, duplicate)),
        Ok(_) | Err(_) => Err(format!(
            "unreadable acknowledgement: {}",
            String::from_utf8_lossy(&reply.payload[..reply.payload.len().min(200)])
        )),
    }
}

enum Event {
    Ping,
    Pong,
    Info(Box<ServerInfo>),
    Reply(u64, Reply),
    Ignored,
}

/// An open connection.
pub struct Connection {
    io: Box<dyn Io>,
    addr: String,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    pub info: ServerInfo,
    /// `_INBOX.<random>.`; replies come to `<inbox><token>`.
    inbox: String,
    next_token: u64,
    limits: Limits,
}

const READ_CHUNK: usize = 64 * 1024;
/// Publishes are written in pieces of about this size (the window may allow more messages
/// than that, when they are large).
const MAX_WRITE: usize = 4 << 20;

impl Connection {
    /// Connects, upgrades to TLS if asked, authenticates, and subscribes to the reply inbox.
    pub async fn connect(
        ep: &Endpoint,
        auth: &Auth,
        tls: Option<&Tls>,
        timeout: Duration,
    ) -> Result<Connection, NatsError> {
        match tokio::time::timeout(timeout, Connection::connect_inner(ep, auth, tls)).await {
            Ok(r) => r,
            Err(_) => Err(NatsError::Timeout {
                what: "connecting to NATS",
                after: timeout,
            }),
        }
    }

    async fn connect_inner(
        ep: &Endpoint,
        auth: &Auth,
        tls: Option<&Tls>,
    ) -> Result<Connection, NatsError> {
        let addr = ep.addr();
        let mut tcp = TcpStream::connect((ep.host.as_str(), ep.port))
            .await
            .map_err(|source| NatsError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        // The server speaks first, in plain text: INFO, then (if TLS) the handshake.
        let limits = Limits::default();
        let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
        let info = loop {
            if let Some((op, used)) = proto::parse(&rbuf, &limits)? {
                let info = match op {
                    ServerOp::Info(json) => serde_json::from_slice::<ServerInfo>(json)
                        .map_err(|e| NatsError::Server(format!("unreadable INFO: {e}")))?,
                    other => {
                        return Err(NatsError::Server(format!("expected INFO, got {other:?}")));
                    }
                };
                rbuf.advance(used);
                break info;
            }
            if tcp.read_buf(&mut rbuf).await? == 0 {
                return Err(NatsError::Closed);
            }
        };
        if !info.headers {
            return Err(NatsError::NoHeaders { addr });
        }
        let io: Box<dyn Io> = match tls {
            Some(t) => {
                let name = t.vhost.as_deref().unwrap_or(&ep.host).to_string();
                let name =
                    ServerName::try_from(name.clone()).map_err(|_| NatsError::ServerName(name))?;
                let s = tokio_rustls::TlsConnector::from(t.config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|source| NatsError::TlsHandshake {
                        addr: addr.clone(),
                        source,
                    })?;
                Box::new(s)
            }
            None if info.tls_required => return Err(NatsError::TlsRequired { addr }),
            None => Box::new(tcp),
        };
        let mut conn = Connection {
            io,
            addr,
            rbuf,
            wbuf: Vec::with_capacity(READ_CHUNK),
            limits: Limits {
                max_payload: info.max_payload.max(1 << 20),
                ..limits
            },
            info,
            inbox: format!(
                "_INBOX.{:016x}{:016x}.",
                fastrand::u64(..),
                fastrand::u64(..)
            ),
            next_token: 1,
        };
        let version = env!("CARGO_PKG_VERSION");
        let c = proto::Connect {
            verbose: false,
            pedantic: false,
            tls_required: tls.is_some(),
            name: "kubetrail",
            lang: "rust",
            version,
            protocol: 1,
            headers: true,
            no_responders: true,
            user: auth.user.as_deref(),
            pass: auth.password.as_deref(),
            auth_token: auth.token.as_deref(),
        };
        proto::connect(&mut conn.wbuf, &c);
        conn.wbuf.extend_from_slice(b"PING\r\n");
        conn.flush().await?;
        // The PONG says CONNECT was accepted (a refusal comes as -ERR first).
        loop {
            match conn.next_event()? {
                Some(Event::Pong) => break,
                Some(_) => {}
                None => conn.fill().await?,
            }
        }
        let inbox_all = format!("{}*", conn.inbox);
        proto::sub(&mut conn.wbuf, &inbox_all, "1");
        conn.flush().await?;
        Ok(conn)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    async fn flush(&mut self) -> Result<(), NatsError> {
        if !self.wbuf.is_empty() {
            self.io.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        self.io.flush().await?;
        Ok(())
    }

    async fn fill(&mut self) -> Result<(), NatsError> {
        self.rbuf.reserve(READ_CHUNK);
        if self.io.read_buf(&mut self.rbuf).await? == 0 {
            return Err(NatsError::Closed);
        }
        Ok(())
    }

    /// The next complete event in the read buffer, answering `PING`s on the way.
    fn next_event(&mut self) -> Result<Option<Event>, NatsError> {
        let Some((op, used)) = proto::parse(&self.rbuf, &self.limits)? else {
            return Ok(None);
        };
        let event = match op {
            ServerOp::Ping => Event::Ping,
            ServerOp::Pong => Event::Pong,
            ServerOp::Ok => Event::Ignored,
            ServerOp::Err(e) => return Err(NatsError::Server(e.to_string())),
            ServerOp::Info(json) => match serde_json::from_slice::<ServerInfo>(json) {
                Ok(i) => Event::Info(Box::new(i)),
                Err(_) => Event::Ignored,
            },
            ServerOp::Msg(m) => match m
                .subject
                .strip_prefix(self.inbox.as_str())
                .and_then(|t| t.parse::<u64>().ok())
            {
                Some(token) => Event::Reply(
                    token,
                    Reply {
                        status: m.headers.and_then(proto::status),
                        payload: m.payload.to_vec(),
                    },
                ),
                None => Event::Ignored,
            },
        };
        self.rbuf.advance(used);
        match &event {
            Event::Ping => self.wbuf.extend_from_slice(b"PONG\r\n"),
            Event::Info(i) if i.max_payload > 0 => self.info.max_payload = i.max_payload,
            _ => {}
        }
        Ok(Some(event))
    }

    /// Handles what arrived since the last batch (server `PING`s mostly) without waiting.
    /// An error means the connection is gone.
    pub async fn drain_pending(&mut self) -> Result<(), NatsError> {
        loop {
            while self.next_event()?.is_some() {}
            // `timeout` polls the read once before looking at the (zero) deadline.
            match tokio::time::timeout(Duration::ZERO, self.fill()).await {
                Ok(r) => r?,
                Err(_) => break,
            }
        }
        self.flush().await
    }

    /// A request-reply (a JetStream API call).
    pub async fn request(
        &mut self,
        subject: &str,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Reply, NatsError> {
        let token = self.next_token;
        self.next_token += 1;
        let reply_to = format!("{}{token}", self.inbox);
        proto::publish(&mut self.wbuf, subject, &reply_to, payload);
        let deadline = Instant::now() + timeout;
        let timed_out = || NatsError::Timeout {
            what: "a JetStream API request",
            after: timeout,
        };
        tokio::time::timeout_at(deadline, self.flush())
            .await
            .map_err(|_| timed_out())??;
        loop {
            while let Some(ev) = self.next_event()? {
                if let Event::Reply(t, r) = ev
                    && t == token
                {
                    return Ok(r);
                }
            }
            if !self.wbuf.is_empty() {
                tokio::time::timeout_at(deadline, self.flush())
                    .await
                    .map_err(|_| timed_out())??;
            }
            tokio::time::timeout_at(deadline, self.fill())
                .await
                .map_err(|_| timed_out())??;
        }
    }

    /// Publishes every message with its `Nats-Msg-Id` (and `Nats-Expected-Stream` when
    /// `stream` is given), at most `window` unacknowledged at a time, and waits for every
    /// acknowledgement. Fails when no acknowledgement arrived for `ack_timeout`.
    pub async fn publish_batch(
        &mut self,
        msgs: &[Outgoing<'_>],
        stream: Option<&str>,
        window: usize,
        ack_timeout: Duration,
    ) -> Result<BatchOutcome, NatsError> {
        let n = msgs.len();
        let base = self.next_token;
        self.next_token += n as u64;
        let mut done = vec![false; n];
        let mut ndone = 0usize;
        let mut next = 0usize;
        let mut outcome = BatchOutcome::default();
        let mut deadline = Instant::now() + ack_timeout;
        let timed_out = || NatsError::Timeout {
            what: "waiting for JetStream acknowledgements",
            after: ack_timeout,
        };
        let mut reply_to = String::with_capacity(self.inbox.len() + 20);
        while ndone < n {
            while next < n && next - ndone < window.max(1) && self.wbuf.len() < MAX_WRITE {
                let m = &msgs[next];
                reply_to.clear();
                reply_to.push_str(&self.inbox);
                reply_to.push_str(&(base + next as u64).to_string());
                match stream {
                    Some(s) => proto::hpub(
                        &mut self.wbuf,
                        &m.subject,
                        &reply_to,
                        &[("Nats-Msg-Id", &m.id), ("Nats-Expected-Stream", s)],
                        m.payload,
                    ),
                    None => proto::hpub(
                        &mut self.wbuf,
                        &m.subject,
                        &reply_to,
                        &[("Nats-Msg-Id", &m.id)],
                        m.payload,
                    ),
                }
                next += 1;
            }
            if !self.wbuf.is_empty() {
                tokio::time::timeout_at(deadline, self.flush())
                    .await
                    .map_err(|_| timed_out())??;
            }
            tokio::time::timeout_at(deadline, self.fill())
                .await
                .map_err(|_| timed_out())??;
            while let Some(ev) = self.next_event()? {
                let Event::Reply(token, reply) = ev else {
                    continue;
                };
                // Replies to an earlier, abandoned batch have tokens below `base`.
                let Some(i) = token
                    .checked_sub(base)
                    .map(|i| i as usize)
                    .filter(|i| *i < n)
                else {
                    continue;
                };
                if done[i] {
                    continue;
                }
                done[i] = true;
                ndone += 1;
                deadline = Instant::now() + ack_timeout;
                match ack_result(&reply) {
                    Ok((seq, duplicate)) => {
                        outcome.last_seq = outcome.last_seq.max(seq);
                        outcome.duplicates += usize::from(duplicate);
                    }
                    Err(e) => outcome.failed.push((i, e)),
                }
            }
        }
        // Answer any PING that came with the last acknowledgements.
        if !self.wbuf.is_empty() {
            tokio::time::timeout_at(deadline, self.flush())
                .await
                .map_err(|_| timed_out())??;
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let l = Endpoint::parse_list(
            "nats://127.0.0.1:4223, tls://u%40x:p%3Aw@nats.example, tok@[::1]:5000,host",
        )
        .unwrap();
        assert_eq!(l.len(), 4);
        assert_eq!(
            (l[0].host.as_str(), l[0].port, l[0].tls),
            ("127.0.0.1", 4223, false)
        );
        assert_eq!(
            (l[1].host.as_str(), l[1].port, l[1].tls),
            ("nats.example", 4222, true)
        );
        assert_eq!(
            (l[1].user.as_deref(), l[1].password.as_deref()),
            (Some("u@x"), Some("p:w"))
        );
        assert_eq!(
            (l[2].host.as_str(), l[2].token.as_deref(), l[2].addr()),
            ("::1", Some("tok"), "[::1]:5000".to_string())
        );
        assert_eq!(l[3].port, 4222);
        assert!(!format!("{:?}", l[1]).contains("p:w"));
        for bad in [
            "",
            "http://x",
            "nats://:4222",
            "nats://h:0",
            "nats://h:x",
            "nats://[::1",
        ] {
            assert!(Endpoint::parse_list(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn acks() {
        let r = |status, p: &str| Reply {
            status,
            payload: p.as_bytes().to_vec(),
        };
        assert_eq!(
            ack_result(&r(None, r#"{"stream":"S","seq":4}"#)),
            Ok((4, false))
        );
        assert_eq!(
            ack_result(&r(None, r#"{"stream":"S","seq":4,"duplicate":true}"#)),
            Ok((4, true))
        );
        let e = ack_result(&r(
            None,
            r#"{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}"#,
        ))
        .unwrap_err();
        assert!(
            e.contains("maximum messages exceeded") && e.contains("10077"),
            "{e}"
        );
        assert!(
            ack_result(&r(Some(503), ""))
                .unwrap_err()
                .contains("no responders")
        );
        assert!(ack_result(&r(None, "garbage")).is_err());
    }
}
