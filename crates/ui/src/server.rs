//! The page's accept loop and connections: TCP, then TLS (with a handshake time limit), then
//! HTTP/1.1 through hyper, with a bounded number of connections. On shutdown it stops
//! accepting, live streams end, requests in progress finish, and stragglers are given up
//! after [`DRAIN_TIMEOUT`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::routes::{App, ConnInfo};

/// Limit for the TLS handshake of a new connection.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Limit for a request's headers to arrive (and for an idle keep-alive connection).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long requests in progress may take to finish once shutdown has begun.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Backoff after a failed `accept` (e.g. out of file descriptors).
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(50);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Resolves once `stop` says so (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Accepts connections until `stop` fires, then drains.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Arc<App>,
    max_connections: usize,
    stop: watch::Receiver<bool>,
) {
    let connections = Arc::new(Semaphore::new(max_connections));
    let mut tasks = JoinSet::new();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut stop_accept = stop.clone();
    loop {
        let accepted = tokio::select! {
            _ = stopped(&mut stop_accept) => break,
            a = listener.accept() => a,
        };
        while tasks.try_join_next().is_some() {}
        let (tcp, peer) = match accepted {
            Ok(a) => {
                backoff = ACCEPT_BACKOFF_MIN;
                a
            }
            Err(e) => {
                tracing::warn!(error = %e, "activity page: accept failed");
                let jitter = backoff.mul_f64(fastrand::f64() * 0.5);
                tokio::select! {
                    _ = stopped(&mut stop_accept) => break,
                    _ = tokio::time::sleep(backoff + jitter) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "activity page: too many connections; closing a new one");
            continue;
        };
        let (tls, app, stop) = (tls.clone(), app.clone(), stop.clone());
        tasks.spawn(async move {
            connection(tcp, peer, tls, app, stop).await;
            drop(permit);
        });
    }
    drop(listener);
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
        tracing::debug!("activity page: connections still open after the drain time; closing them");
        tasks.abort_all();
    }
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    app: Arc<App>,
    mut stop: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let Some(acceptor) = tls else {
        let info = ConnInfo {
            peer,
            cert_verified: false,
        };
        return http(tcp, info, app, stop).await;
    };
    let stream = tokio::select! {
        _ = stopped(&mut stop) => return,
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                // Includes client certificates that do not chain to ui.tls.client_ca_file.
                tracing::info!(%peer, error = %e, "activity page: TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "activity page: TLS handshake timed out");
                return;
            }
        },
    };
    // A certificate is only ever present here if the verifier accepted it.
    let cert_verified = stream
        .get_ref()
        .1
        .peer_certificates()
        .is_some_and(|c| !c.is_empty());
    let info = ConnInfo {
        peer,
        cert_verified,
    };
    http(stream, info, app, stop).await;
}

async fn http<S>(io: S, info: ConnInfo, app: Arc<App>, mut stop: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let app = app.clone();
        async move { Ok::<_, std::convert::Infallible>(app.handle(req, info).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stopped(&mut stop) => {
            // Finishes the response in progress (live streams end on the same signal), then
            // closes.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(peer = %info.peer, error = %e, "activity page: connection ended with an error");
    }
}
