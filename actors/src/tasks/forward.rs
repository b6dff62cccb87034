//! `ctx.forward(request, target)`: one pooled keep-alive HTTP/1.1 client per node.
//!
//! Instances of the target are taken round-robin; a connect error moves on to the next instance
//! once; if none answers the caller gets a 502 `{"error": ...}` (504 past the deadline). The
//! response comes back as the instance sent it — its `X-Lathe-*` headers included — minus the
//! hop-by-hop headers, which belong to one connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use lathe::http::{json, Request, Response};
use lathe::{Endpoint, TaskRef};

/// How long one forwarded request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The node's forwarding client, shared by its instances.
pub struct Forwarder {
    client: Client<HttpConnector, Full<Bytes>>,
    next: AtomicUsize,
}

impl Default for Forwarder {
    fn default() -> Self {
        Self::new()
    }
}

enum Failure {
    Connect(String),
    Other(u16, String),
}

impl Forwarder {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        Forwarder {
            client,
            next: AtomicUsize::new(0),
        }
    }

    /// Sends `request` to one live instance of `target` and returns its response.
    pub async fn forward(&self, request: Request, target: &TaskRef) -> Response {
        let candidates: Vec<&Endpoint> = target
            .instances
            .iter()
            .filter(|endpoint| endpoint.http.is_some())
            .collect();
        if candidates.is_empty() {
            return bad_gateway(format!("group {} has no live HTTP instance", target.group));
        }
        let first = self.next.fetch_add(1, Ordering::Relaxed) % candidates.len();
        let attempts = candidates.len().min(2);
        let (head, body) = request.into_parts();
        let mut last_error = String::new();
        for attempt in 0..attempts {
            let endpoint = candidates[(first + attempt) % candidates.len()];
            match self.send(&head, body.clone(), endpoint).await {
                Ok(response) => return response,
                Err(Failure::Connect(error)) => {
                    tracing::debug!(group = %endpoint.group, index = endpoint.index, %error, "forward: cannot connect, trying another instance");
                    last_error = error;
                }
                Err(Failure::Other(status, error)) => {
                    tracing::debug!(group = %endpoint.group, index = endpoint.index, %error, "forward failed");
                    return error_response(status, error);
                }
            }
        }
        bad_gateway(format!(
            "no instance of group {} answered: {last_error}",
            target.group
        ))
    }

    async fn send(
        &self,
        head: &http::request::Parts,
        body: Bytes,
        endpoint: &Endpoint,
    ) -> Result<Response, Failure> {
        let addr = endpoint.http.as_deref().unwrap_or_default();
        let instance = format!("{}/{}", endpoint.group, endpoint.index);
        let path = head.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut outgoing = http::Request::builder()
            .method(head.method.clone())
            .uri(format!("http://{addr}{path}"))
            .body(Full::new(body))
            .map_err(|e| Failure::Other(502, format!("cannot address instance {instance}: {e}")))?;
        copy_end_to_end(&head.headers, outgoing.headers_mut());
        let exchange = async {
            let response = self.client.request(outgoing).await.map_err(|e| {
                if e.is_connect() {
                    Failure::Connect(format!("instance {instance} at {addr}: {e}"))
                } else {
                    Failure::Other(502, format!("instance {instance} at {addr}: {e}"))
                }
            })?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map_err(|e| {
                Failure::Other(
                    502,
                    format!("instance {instance} broke off its response: {e}"),
                )
            })?;
            let mut response = http::Response::from_parts(parts, body.to_bytes());
            strip_hop_by_hop(response.headers_mut());
            Ok(response)
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Failure::Other(
                504,
                format!("instance {instance} did not answer within {REQUEST_TIMEOUT:?}"),
            )),
        }
    }
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

fn copy_end_to_end(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if !is_hop_by_hop(name) {
            to.append(name.clone(), value.clone());
        }
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_hop_by_hop(name))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

fn bad_gateway(reason: String) -> Response {
    error_response(502, reason)
}

fn error_response(status: u16, reason: String) -> Response {
    json(status, &serde_json::json!({ "error": reason }))
}
