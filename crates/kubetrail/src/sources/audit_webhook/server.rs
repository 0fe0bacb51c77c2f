//! The webhook's accept loop and connections: TCP, then TLS (with a handshake time limit),
//! then HTTP/1.1 through hyper, with a bounded number of connections. On shutdown it stops
//! accepting, lets in-flight requests finish (idle keep-alive connections close at once), and
//! gives up on stragglers after [`DRAIN_TIMEOUT`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::handler::{ConnInfo, Shared, handle};
use crate::shutdown::Shutdown;

/// Limit for the TLS handshake of a new connection.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Limit for a request's headers to arrive (and for an idle keep-alive connection).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long in-flight requests may take to finish once shutdown has begun.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Backoff after a failed `accept` (e.g. out of file descriptors).
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(50);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Accepts connections until `shutdown` fires, then drains.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    shutdown: Shutdown,
) {
    let connections = Arc::new(Semaphore::new(shared.options.max_connections));
    let mut tasks = JoinSet::new();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.fired() => break,
            a = listener.accept() => a,
        };
        while tasks.try_join_next().is_some() {}
        let (tcp, peer) = match accepted {
            Ok(a) => {
                backoff = ACCEPT_BACKOFF_MIN;
                a
            }
            Err(e) => {
                tracing::warn!(component = %shared.name, error = %e, "audit webhook accept failed");
                let jitter = backoff.mul_f64(fastrand::f64() * 0.5);
                tokio::select! {
                    _ = shutdown.fired() => break,
                    _ = tokio::time::sleep(backoff + jitter) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(component = %shared.name, %peer, max = shared.options.max_connections,
                "audit webhook connection refused: max_connections reached");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (tls, shared, shutdown) = (tls.clone(), shared.clone(), shutdown.clone());
        tasks.spawn(async move {
            connection(tcp, peer, tls, shared, shutdown).await;
            drop(permit);
        });
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(component = %shared.name, remaining = tasks.len(), "audit webhook connections still open after the drain time; closing them");
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    shutdown: Shutdown,
) {
    let Some(acceptor) = tls else {
        let info = ConnInfo {
            peer,
            cert_verified: false,
        };
        return http(tcp, info, shared, shutdown).await;
    };
    let stream = tokio::select! {
        _ = shutdown.fired() => return,
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                // Includes client certificates that do not chain to tls.client_ca_file.
                tracing::warn!(component = %shared.name, %peer, error = %e, "audit webhook TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(component = %shared.name, %peer, "audit webhook TLS handshake timed out");
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
    http(
        stream,
        ConnInfo {
            peer,
            cert_verified,
        },
        shared,
        shutdown,
    )
    .await;
}

async fn http<S>(io: S, info: ConnInfo, shared: Arc<Shared>, shutdown: Shutdown)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let name = shared.name.clone();
    let service = service_fn(move |req| handle(req, info, shared.clone()));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.fired() => {
            // Finishes the request in progress, if any, then closes.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(component = %name, peer = %info.peer, error = %e, "audit webhook connection ended with an error");
    }
}
