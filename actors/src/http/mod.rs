//! The REST API every node serves (warp): `/v1/kv`, `/v1/watch`, `/v1/members`, `/v1/health`,
//! `/v1/topology`, `/v1/tasks`, `/v1/services`, `/v1/rollouts` and `/v1/shifts` (slow
//! roll-outs: new versions in place, and traffic moved between version groups), `/v1/tree`,
//! `/v1/actors/kill` (failure drills), `/metrics`, `/v1/prometheus/targets` (Prometheus service
//! discovery) with `/v1/agents` (where agents register their status address), and `/ui`, the live
//! dashboard over them (`ui.rs`, `ui.html`). Routes are matched by hand in `route` so that every
//! unknown path, wrong method, bad path, bad body or oversized value gets one clear `{"error":
//! "..."}` answer. Every answer is counted in `lathe_api_requests_total{route,code}`
//! (`requests.rs`); a handler that panics answers 500 with a JSON error and is counted in
//! `lathe_api_panics_total`.
//!
//! `/v1/acl` (tokens and policies) and `guard.rs` add access control with `--acl`, and refuse
//! cross-origin state changes from browsers always.
//!
//! [`serve`] takes an already-bound listener and a shutdown future (tests bind port 0).

mod acl;
mod agents;
mod chaos;
mod discovery;
mod error;
#[cfg(test)]
mod fuzz;
mod guard;
pub(crate) mod idle;
mod kv;
mod limits;
mod query;
mod requests;
mod rollout;
mod server;
mod shift;
mod state_metrics;
#[cfg(test)]
mod tests;
mod tls;
mod topology;
mod tree;
mod ui;
mod watch;

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use warp::http::{Method, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

pub use error::ApiError;
pub use limits::{
    ApiLimits, DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_BLOCKING_QUERIES, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_KEYS, DEFAULT_MAX_REGISTRY_BYTES, DEFAULT_MAX_WATCHERS,
};
pub use tls::RestTls;

use crate::acl::{writer, Acl};
use crate::registry::RegistryHandle;
use crate::tree::ActorTree;

/// Where `/v1/members` comes from; implemented by the node over its membership actor.
#[async_trait::async_trait]
pub trait MemberDirectory: Send + Sync + 'static {
    /// The JSON document `GET /v1/members` answers with.
    async fn members_json(&self) -> serde_json::Value;
}

/// Everything the REST handlers need.
#[derive(Clone)]
pub struct ApiContext {
    pub node_name: String,
    pub registry: RegistryHandle,
    pub members: Arc<dyn MemberDirectory>,
    pub metrics: prometheus::Registry,
    /// The largest value a PUT accepts, in bytes (413 above).
    pub max_value_bytes: usize,
    /// This node's supervision tree (`GET /v1/tree`, failure drills).
    pub tree: ActorTree,
    /// Whether `POST /v1/actors/kill` is accepted (`--enable-chaos`).
    pub enable_chaos: bool,
    /// Timeouts and caps of the port (`limits.rs`).
    pub limits: ApiLimits,
    /// Access control (`--acl`); `Acl::disabled()` serves everyone as before.
    pub acl: Acl,
}

/// Serves the API on `listener` until `shutdown` resolves, then drains open requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    context: ApiContext,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    serve_tls(listener, context, None, shutdown).await
}

/// [`serve`], over TLS when `tls` is given (`--tls-cert`).
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    context: ApiContext,
    tls: Option<RestTls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    // Accepted connections inherit TCP_NODELAY from the listener. Without it, an SSE event or a
    // blocking query's answer written while the previous segment awaits a (delayed) ACK is held
    // back by Nagle's algorithm for up to 40 ms.
    if let Err(error) = socket2::SockRef::from(&listener).set_tcp_nodelay(true) {
        tracing::warn!(%error, "cannot set TCP_NODELAY on the REST listener");
    }
    let requests = requests::ApiRequests::register(&context.metrics);
    let denials = guard::Denials::register(&context.metrics);
    let state_metrics = state_metrics::StateMetrics::register(&context.metrics);
    context.limits.register(&context.metrics);
    if let Some(tls) = &tls {
        tls.register(&context.metrics);
    }
    let limits = context.limits.clone();
    let context = Arc::new(context);
    let api = warp::method()
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream().map(BodyStream::new))
        .and(warp::any().map(move || context.clone()))
        .and(warp::any().map(move || requests.clone()))
        .and(warp::any().map(move || state_metrics.clone()))
        .and(warp::any().map(move || denials.clone()))
        .then(
            |method: Method,
             path: warp::path::FullPath,
             query: String,
             headers: warp::http::HeaderMap,
             body: BodyStream,
             context: Arc<ApiContext>,
             requests: requests::ApiRequests,
             state_metrics: state_metrics::StateMetrics,
             denials: guard::Denials| async move {
                let writer = match guard::admit(
                    &context.acl,
                    &denials,
                    &context.limits.allowed_hosts,
                    &method,
                    path.as_str(),
                    &headers,
                ) {
                    Ok(writer) => writer,
                    Err(denied) => {
                        let response = error_response(&method, denied);
                        requests.count(&method, path.as_str(), &query, response.status());
                        return response;
                    }
                };
                if path.as_str() == "/metrics" {
                    state_metrics.refresh(&context.registry).await;
                }
                let token = guard::presented_token(&headers).map(str::to_string);
                let routed = route(method.clone(), path.as_str(), &query, body, context);
                let routed = tree::CALLER_TOKEN.scope(token, writer::scope(writer, routed));
                let handled = crate::panics::caught(routed).await;
                let response = handled.unwrap_or_else(|panic| {
                    requests.panicked();
                    tracing::error!(%method, path = path.as_str(), %panic,
                        "REST handler panicked: answering 500");
                    handler_panicked(&method, path.as_str())
                });
                requests.count(&method, path.as_str(), &query, response.status());
                response
            },
        );
    server::run(listener, warp::service(api), limits, tls, shutdown).await;
}

/// A request body, read lazily so oversized values are refused without buffering them whole.
pub(crate) struct BodyStream(
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<Bytes, warp::Error>> + Send>>,
);

async fn route(
    method: Method,
    path: &str,
    query: &str,
    body: BodyStream,
    context: Arc<ApiContext>,
) -> Response {
    let result = match (path, &method) {
        ("/v1/health", &Method::GET) => Ok(health(&context)),
        ("/metrics", &Method::GET) => metrics(&context),
        ("/v1/members", &Method::GET) => {
            Ok(warp::reply::json(&context.members.members_json().await).into_response())
        }
        ("/v1/topology", _) => topology::topology(&context, &method, query, body).await,
        ("/v1/tasks", &Method::GET) => topology::tasks(&context, query).await,
        ("/v1/tree", &Method::GET) => tree::tree(&context, query).await,
        (discovery::TARGETS_PATH, &Method::GET) => discovery::targets(&context, query).await,
        ("/v1/actors/kill", &Method::POST) => chaos::kill(&context, query, body).await,
        _ if acl::is_acl_path(path) => acl::handle(&context, &method, path, query, body).await,
        _ if ui::is_ui_path(path) && method == Method::GET => Ok(ui::page()),
        _ if rollout::is_rollouts_path(path) => {
            rollout::handle(&context, &method, path, query).await
        }
        _ if agents::is_agents_path(path) => {
            agents::handle(&context, &method, path, query, body).await
        }
        _ if shift::is_shifts_path(path) => {
            shift::handle(&context, &method, path, query, body).await
        }
        _ if topology::is_services_path(path) && method == Method::GET => {
            topology::services(&context, path, query).await
        }
        _ if kv::is_kv_path(path) => kv::handle(&context, &method, path, query, body).await,
        _ if watch::is_watch_path(path) && method == Method::GET => {
            watch::handle(&context, path, query).await
        }
        _ if watch::is_watch_path(path) || known_path(path) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} is not allowed on {path}"),
        )),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no such route: {method} {path}"),
        )),
    };
    result.unwrap_or_else(|error| error_response(&method, error))
}

fn error_response(method: &Method, error: ApiError) -> Response {
    let mut response = error.into_response();
    if !matches!(*method, Method::GET | Method::HEAD) {
        // The body may be unread (refused as too large, or before looking at it): say the
        // connection closes, so a keep-alive client does not send its next request into it.
        response.headers_mut().insert(
            warp::http::header::CONNECTION,
            warp::http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// The answer to a request whose handler panicked: a 500 that says so (the panic is logged and
/// counted in `lathe_api_panics_total`), on a connection that then closes.
fn handler_panicked(method: &Method, path: &str) -> Response {
    let mut response = ApiError::internal(format!(
        "internal error: the handler of {method} {path} failed (see the node's log)"
    ))
    .into_response();
    response.headers_mut().insert(
        warp::http::header::CONNECTION,
        warp::http::HeaderValue::from_static("close"),
    );
    response
}

/// `<target>/pause|resume|undo` of a roll-out or a shift: the target and the command, or a 400
/// saying what the path should look like (`what` names the target: group, key).
pub(crate) fn steering_command<'a>(
    path: &str,
    rest: &'a str,
    what: &str,
) -> Result<(&'a str, &'a str), ApiError> {
    rest.rsplit_once('/')
        .filter(|(_, command)| matches!(*command, "pause" | "resume" | "undo"))
        .ok_or_else(|| {
            let route = path
                .strip_suffix(rest)
                .unwrap_or(path)
                .trim_end_matches('/');
            ApiError::bad_request(format!(
                "POST {path}: say what to do, {route}/{{{what}}}/pause, /resume or /undo"
            ))
        })
}

fn known_path(path: &str) -> bool {
    matches!(
        path,
        "/v1/health"
            | "/metrics"
            | "/v1/members"
            | "/v1/tasks"
            | "/v1/tree"
            | "/v1/actors/kill"
            | discovery::TARGETS_PATH
    ) || topology::is_services_path(path)
        || ui::is_ui_path(path)
}

fn health(context: &ApiContext) -> Response {
    let body = serde_json::json!({
        "status": "ok",
        "node": context.node_name,
        "index": context.registry.index(),
        "store": context.registry.store_kind(),
    });
    warp::reply::json(&body).into_response()
}

fn metrics(context: &ApiContext) -> Result<Response, ApiError> {
    use prometheus::Encoder;
    let encoder = prometheus::TextEncoder::new();
    let mut buffer = Vec::new();
    encoder
        .encode(&context.metrics.gather(), &mut buffer)
        .map_err(|e| ApiError::internal(format!("cannot encode metrics: {e}")))?;
    let mut response = Response::new(buffer.into());
    response.headers_mut().insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    Ok(response)
}

impl BodyStream {
    fn new<B: bytes::Buf + Send + 'static>(
        stream: impl futures::Stream<Item = Result<B, warp::Error>> + Send + 'static,
    ) -> Self {
        BodyStream(Box::pin(stream.map(|chunk| {
            chunk.map(|mut buf| {
                let n = buf.remaining();
                buf.copy_to_bytes(n)
            })
        })))
    }

    /// Reads the whole body, refusing it with 413 as soon as it passes `limit` bytes.
    pub(crate) async fn read_limited(mut self, limit: usize) -> Result<Bytes, ApiError> {
        let mut collected = Vec::new();
        while let Some(chunk) = self.0.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::bad_request(format!("cannot read body: {e}")))?;
            if collected.len() + chunk.len() > limit {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("value is over the limit of {limit} bytes"),
                ));
            }
            collected.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(collected))
    }
}
