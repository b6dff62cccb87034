//! The HTTP/1.1 server of one `HttpTask` instance (hyper, keep-alive): reads each request in full,
//! calls `handle`, answers 500 if the handler panics, and stamps the response with `X-Lathe-Task`
//! and `X-Lathe-Version` unless it already names its producer (a forwarded response keeps the
//! target's). At most `max_connections` connections are open at once per instance: past it a
//! connection is answered 503 and closed (`lathe_task_http_refused_total`). Stopping stops
//! accepting and lets open connections finish within a deadline.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use http::HeaderValue;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use lathe::http::{json, text, HttpTask, Response, TASK_HEADER, VERSION_HEADER};
use lathe::TaskContext;
use prometheus::{Histogram, IntCounter, IntGauge};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;

use super::local::LocalRegistration;
use super::metrics::TaskMetrics;
use crate::http::idle::Unproven;

/// Default of the largest request body an instance reads (`--task-max-body-bytes`).
pub const DEFAULT_TASK_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Default of `--task-http-header-timeout`.
pub const DEFAULT_TASK_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of `--task-http-max-connections`: connections open at once to one instance.
pub const DEFAULT_TASK_MAX_CONNECTIONS: usize = 1024;
/// How long a refused connection may take to receive its 503 and close.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);

/// What every HTTP instance's server lets a client do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskHttpLimits {
    /// A connection that has not sent a complete request head this long after it opened or
    /// after its last answer is closed (slowloris, idle keep-alive).
    pub header_timeout: Duration,
    /// The largest request body read (413 above).
    pub max_body_bytes: usize,
    /// The most connections open at once to one instance (503 past it).
    pub max_connections: usize,
}

impl Default for TaskHttpLimits {
    fn default() -> Self {
        TaskHttpLimits {
            header_timeout: DEFAULT_TASK_HEADER_TIMEOUT,
            max_body_bytes: DEFAULT_TASK_MAX_BODY_BYTES,
            max_connections: DEFAULT_TASK_MAX_CONNECTIONS,
        }
    }
}
/// How long to wait before accepting again after an accept error (out of file descriptors).
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// One instance's request path: its task, context, stamp and metrics.
pub(crate) struct HttpInstance {
    task: Arc<dyn HttpTask>,
    ctx: TaskContext,
    task_header: Option<HeaderValue>,
    version_header: Option<HeaderValue>,
    metrics: TaskMetrics,
    duration: Histogram,
    panics: IntCounter,
    /// `lathe_http_requests_total{group, code="200"}`, the common case, looked up once.
    answered_ok: IntCounter,
    max_body_bytes: usize,
    /// `lathe_task_http_connections{group}` and `lathe_task_http_refused_total{group}`.
    connections: IntGauge,
    refused: IntCounter,
}

impl HttpInstance {
    pub(crate) fn new(
        task: Arc<dyn HttpTask>,
        ctx: TaskContext,
        metrics: TaskMetrics,
        max_body_bytes: usize,
    ) -> Self {
        let identity = ctx.identity();
        let group = identity.group.as_str();
        HttpInstance {
            task_header: HeaderValue::from_str(&format!("{group}/{}", identity.index)).ok(),
            version_header: HeaderValue::from_str(&identity.task_type.version).ok(),
            duration: metrics.http_duration.with_label_values(&[group]),
            panics: metrics.handler_panics.with_label_values(&[group]),
            answered_ok: metrics.http_requests.with_label_values(&[group, "200"]),
            connections: metrics.http_connections.with_label_values(&[group]),
            refused: metrics.http_refused.with_label_values(&[group]),
            max_body_bytes,
            metrics,
            task,
            ctx,
        }
    }

    async fn answer(&self, request: hyper::Request<Incoming>) -> Response {
        let started = Instant::now();
        let response = match read_in_full(request, self.max_body_bytes).await {
            Ok(request) => self.call(request).await,
            Err(response) => response,
        };
        self.finish(response, started)
    }

    /// Answers a request forwarded from another task of this process: the same handling as a
    /// request over the network (stamp, metrics, panic → 500), without the socket.
    pub(crate) async fn answer_local(&self, request: lathe::Request) -> Response {
        let started = Instant::now();
        let response = self.call(request).await;
        self.finish(response, started)
    }

    /// Stamps the response with this instance's name and version unless it names its producer
    /// already (a forwarded response keeps the target's), and counts it.
    fn finish(&self, mut response: Response, started: Instant) -> Response {
        let headers = response.headers_mut();
        for (name, value) in [
            (TASK_HEADER, &self.task_header),
            (VERSION_HEADER, &self.version_header),
        ] {
            if let (false, Some(value)) = (headers.contains_key(name), value) {
                headers.insert(name, value.clone());
            }
        }
        self.duration.observe(started.elapsed().as_secs_f64());
        match response.status().as_u16() {
            200 => self.answered_ok.inc(),
            _ => self
                .metrics
                .http_requests
                .with_label_values(&[
                    self.ctx.identity().group.as_str(),
                    response.status().as_str(),
                ])
                .inc(),
        }
        response
    }

    async fn call(&self, request: lathe::Request) -> Response {
        match AssertUnwindSafe(self.task.handle(&self.ctx, request))
            .catch_unwind()
            .await
        {
            Ok(response) => response,
            Err(panic) => {
                self.panics.inc();
                let identity = self.ctx.identity();
                tracing::error!(group = %identity.group, index = identity.index,
                    panic = %panic_message(&*panic), "request handler panicked: answering 500");
                text(500, "the task panicked while handling the request")
            }
        }
    }
}

async fn read_in_full(
    request: hyper::Request<Incoming>,
    max_body_bytes: usize,
) -> Result<lathe::Request, Response> {
    let (head, body) = request.into_parts();
    match Limited::new(body, max_body_bytes).collect().await {
        Ok(body) => Ok(http::Request::from_parts(head, body.to_bytes())),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(json(
            413,
            &serde_json::json!({"error": format!("request body over {max_body_bytes} bytes")}),
        )),
        Err(error) => Err(json(
            400,
            &serde_json::json!({"error": format!("cannot read the request body: {error}")}),
        )),
    }
}

/// A panic payload as text.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = panic.downcast_ref::<&str>() {
        (*message).to_string()
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message.clone()
    } else {
        "a non-string panic payload".to_string()
    }
}

/// A serving instance. Dropping it stops the server at once (open connections are asked to close
/// after their current request); [`HttpServer::drain`] does it gracefully.
pub(crate) struct HttpServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<Duration>>,
    serving: JoinHandle<()>,
    /// Lists the instance for in-process forwarding while it takes requests.
    local: Option<LocalRegistration>,
}

impl HttpServer {
    /// Serves `instance` on `listener` until stopped; `local` keeps it listed for in-process
    /// forwarding meanwhile.
    pub(crate) fn start(
        listener: TcpListener,
        instance: Arc<HttpInstance>,
        local: Option<LocalRegistration>,
        limits: TaskHttpLimits,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel();
        let serving = tokio::spawn(accept_loop(listener, instance, limits, stopped));
        Ok(HttpServer {
            addr,
            stop: Some(stop),
            serving,
            local,
        })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, then waits up to `deadline` for open requests to finish.
    pub(crate) async fn drain(mut self, deadline: Duration) {
        self.local = None;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(deadline);
        }
        let _ = (&mut self.serving).await;
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.serving.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    instance: Arc<HttpInstance>,
    limits: TaskHttpLimits,
    mut stopped: oneshot::Receiver<Duration>,
) {
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let unproven = Arc::new(Unproven::default());
    let deadline = loop {
        let (stream, _) = tokio::select! {
            deadline = &mut stopped => break deadline.unwrap_or(Duration::ZERO),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "task http server cannot accept: pausing");
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            // At the cap: the oldest connection without a request makes room (see http/idle.rs).
            Err(_) => match unproven.make_room(&permits).await {
                Some(permit) => permit,
                None => {
                    instance.refused.inc();
                    tokio::spawn(refuse(stream, limits.max_connections));
                    continue;
                }
            },
        };
        let (mark, evicted) = unproven.admit();
        let open = instance.connections.clone();
        open.inc();
        let instance = instance.clone();
        let proven = mark.clone();
        let service = service_fn(move |request| {
            proven.proven();
            let instance = instance.clone();
            async move {
                let response = instance.answer(request).await;
                Ok::<_, Infallible>(response.map(Full::<Bytes>::new))
            }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _permit = permit;
            tokio::select! {
                result = connection => if let Err(error) = result {
                    tracing::debug!(%error, "task http connection ended with an error");
                },
                _ = evicted.notified() => {
                    tracing::debug!("task http connection without a request closed to make room");
                }
            }
            open.dec();
            mark.gone();
        });
    };
    drop(listener);
    if tokio::time::timeout(deadline, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?deadline,
            "task http server: connections still open after the drain deadline"
        );
    }
}

/// Answers a connection past the cap with a 503 and closes it, without reading its request.
async fn refuse(mut stream: TcpStream, limit: usize) {
    let body = format!(
        "{{\"error\":\"too many connections open to this instance (limit {limit}): retry later\"}}"
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    // Write, then read until the client closes (a lingering close), so that it gets the answer
    // rather than a reset.
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        let mut discard = [0u8; 1024];
        while stream.read(&mut discard).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}
