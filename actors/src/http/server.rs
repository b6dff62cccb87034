//! The REST port's connections: HTTP/1.1 only (no h2c, where one connection would carry
//! hundreds of streams), with hyper's timer so that a connection that does not send a complete
//! request head within the header timeout — a new one (slowloris) or one idle between requests —
//! is closed, and at most `--http-max-connections` open at once. At the cap, the oldest connection
//! that has not sent a request yet is closed to make room (`idle.rs`), so connections held open
//! without requests cannot lock clients out; when every open connection has sent one, a new
//! connection is answered 503 with `Retry-After` and closed. With TLS (`tls.rs`) each connection
//! first does its handshake in its own task, within its deadline (until it sent a request it can
//! be evicted like any other). Shutdown stops accepting and lets open requests finish.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use warp::reply::Response;

use super::idle::{Marking, Unproven};
use super::limits::{refusal, ApiLimits};
use super::tls::RestTls;

/// How long to wait before accepting again after an accept error (out of file descriptors).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// How long a refused connection may take to receive its 503 and close.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);

/// Serves `service` on `listener` within `limits` (over TLS when `tls` is given) until
/// `shutdown` resolves, then drains.
pub(super) async fn run<S>(
    listener: TcpListener,
    service: S,
    limits: ApiLimits,
    tls: Option<RestTls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    S: tower_service::Service<
            http::Request<hyper::body::Incoming>,
            Response = Response,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let unproven = std::sync::Arc::new(Unproven::default());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "the REST port cannot accept: pausing");
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                    continue;
                }
            },
        };
        let permit = match limits.connection() {
            Some(permit) => permit,
            None => match limits.connection_after_eviction(&unproven).await {
                Some(permit) => permit,
                None => {
                    tokio::spawn(refuse(stream, limits.max_connections()));
                    continue;
                }
            },
        };
        let (mark, evicted) = unproven.admit();
        let service = TowerToHyperService::new(Marking {
            inner: service.clone(),
            mark: mark.clone(),
        });
        let watcher = graceful.watcher();
        let header_timeout = limits.header_timeout;
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let serving = async move {
                match tls {
                    None => serve_connection(stream, service, header_timeout, watcher).await,
                    Some(tls) => {
                        if let Some(stream) = tls.accept(stream).await {
                            serve_connection(stream, service, header_timeout, watcher).await;
                        }
                    }
                }
            };
            tokio::select! {
                () = serving => {}
                _ = evicted.notified() => {
                    tracing::debug!("REST connection without a request closed to make room");
                }
            }
            mark.gone();
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Serves HTTP/1.1 on one connection (plain or TLS) until it closes or the server drains.
async fn serve_connection<I, S>(
    io: I,
    service: TowerToHyperService<S>,
    header_timeout: Duration,
    watcher: Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower_service::Service<
            http::Request<hyper::body::Incoming>,
            Response = Response,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    if let Err(error) = watcher.watch(connection).await {
        tracing::debug!(%error, "REST connection ended with an error");
    }
}

/// Answers a connection past the cap with a 503 and closes it, without reading its request.
async fn refuse(mut stream: TcpStream, limit: usize) {
    let error = refusal("connections", limit);
    let body = serde_json::json!({ "error": error.message }).to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: {}\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        error.retry_after.unwrap_or(1),
        body.len()
    );
    // Write, then read what the client sent until it closes (a lingering close): closing a
    // socket with unread data resets the connection, and the client would lose the answer.
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        let mut discard = [0u8; 1024];
        while stream.read(&mut discard).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}
