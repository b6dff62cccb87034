//! `ctx.forward(request, target)`: an instance on this node in-process, else one pooled
//! keep-alive HTTP/1.1 client per node.
//!
//! When the target group has instances serving on this node (the seed's `+7` bias puts load
//! balancers beside their frontpages), the request goes to one of them, round-robin, as a direct
//! call: no socket, no HTTP encoding, the same handling otherwise (see `local.rs`). Otherwise
//! instances of the target are taken round-robin; a connect error moves on to the next instance
//! once; if none answers the caller gets a 502 `{"error": ...}` (504 past the deadline). The
//! response comes back as the instance sent it — its `X-Lathe-*` headers included — minus the
//! hop-by-hop headers, which belong to one connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName};
use http::uri::{Authority, InvalidUri, PathAndQuery, Scheme};
use http::Uri;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use lathe::http::{json, Request, Response};
use lathe::{Endpoint, TaskRef};
use prometheus::{IntCounter, IntCounterVec};

use super::http_server::HttpInstance;
use super::local::LocalInstances;

/// How long one forwarded request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Indices of the counters of `lathe_forward_total{way}`.
const LOCAL: usize = 0;
const NETWORK: usize = 1;
/// The cache of parsed instance addresses starts over past this many.
const MAX_AUTHORITIES: usize = 4096;

/// The node's forwarding client, shared by its instances.
pub struct Forwarder {
    client: Client<HttpConnector, Full<Bytes>>,
    next: AtomicUsize,
    /// Parsed `HOST:PORT`s of the instances forwarded to.
    authorities: RwLock<HashMap<Box<str>, Authority>>,
    /// This node's name and serving instances, when co-located instances are called in-process.
    local: Option<(String, Arc<LocalInstances>)>,
    /// Counts of requests forwarded in-process and over the network.
    counted: Option<[IntCounter; 2]>,
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
    /// A forwarder that always goes over the network.
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
            authorities: RwLock::default(),
            local: None,
            counted: None,
        }
    }

    /// A forwarder that calls the target's instances on the node named in `local` (listed in its
    /// `LocalInstances`) in-process, and goes over the network to the others (to all without
    /// `local`); `forwarded` is `lathe_forward_total{way}`.
    pub(crate) fn counted(
        local: Option<(String, Arc<LocalInstances>)>,
        forwarded: &IntCounterVec,
    ) -> Self {
        Forwarder {
            local,
            counted: Some([
                forwarded.with_label_values(&["local"]),
                forwarded.with_label_values(&["network"]),
            ]),
            ..Forwarder::new()
        }
    }

    fn count(&self, way: usize) {
        if let Some(counters) = &self.counted {
            counters[way].inc();
        }
    }

    /// One of the target's instances serving in this process, round-robin, if any.
    fn co_located(&self, target: &TaskRef) -> Option<Arc<HttpInstance>> {
        let (node, local) = self.local.as_ref()?;
        // Only instances discovery lists: one that withdrew its endpoint takes nothing new.
        let listed = |index: u32| {
            target
                .instances
                .binary_search_by_key(&index, |endpoint| endpoint.index)
                .is_ok_and(|at| target.instances[at].node == *node)
        };
        let nth = self.next.fetch_add(1, Ordering::Relaxed);
        local.pick(&target.group, nth, listed)
    }

    /// Sends `request` to one live instance of `target` and returns its response.
    pub async fn forward(&self, request: Request, target: &TaskRef) -> Response {
        if let Some(instance) = self.co_located(target) {
            self.count(LOCAL);
            return instance.answer_local(request).await;
        }
        self.count(NETWORK);
        let with_http = |endpoint: &&Endpoint| endpoint.http.is_some();
        let count = target.instances.iter().filter(with_http).count();
        if count == 0 {
            return bad_gateway(format!("group {} has no live HTTP instance", target.group));
        }
        let first = self.next.fetch_add(1, Ordering::Relaxed) % count;
        let attempts = count.min(2);
        let (head, body) = request.into_parts();
        let mut last_error = String::new();
        let mut candidates = target
            .instances
            .iter()
            .filter(with_http)
            .cycle()
            .skip(first);
        for _ in 0..attempts {
            let Some(endpoint) = candidates.next() else {
                break;
            };
            match self.send(&head, body.clone(), endpoint).await {
                Ok(response) => return response,
                Err(Failure::Connect(error)) => {
                    tracing::debug!(group = %endpoint.group, index = endpoint.index, %error,
                        "forward: cannot connect, trying another instance");
                    last_error = error;
                }
                Err(Failure::Other(status, error)) => {
                    tracing::debug!(group = %endpoint.group, index = endpoint.index, %error,
                        "forward failed");
                    return error_response(status, error);
                }
            }
        }
        bad_gateway(format!(
            "no instance of group {} answered: {last_error}",
            target.group
        ))
    }

    /// The authority of an instance's `HOST:PORT`, parsed once per address.
    fn authority(&self, addr: &str) -> Result<Authority, InvalidUri> {
        if let Some(authority) = self
            .authorities
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(addr)
        {
            return Ok(authority.clone());
        }
        let authority = Authority::try_from(addr)?;
        let mut authorities = self.authorities.write().unwrap_or_else(|e| e.into_inner());
        if authorities.len() >= MAX_AUTHORITIES {
            authorities.clear();
        }
        authorities.insert(addr.into(), authority.clone());
        Ok(authority)
    }

    async fn send(
        &self,
        head: &http::request::Parts,
        body: Bytes,
        endpoint: &Endpoint,
    ) -> Result<Response, Failure> {
        let addr = endpoint.http.as_deref().unwrap_or_default();
        let instance = || format!("{}/{}", endpoint.group, endpoint.index);
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(self.authority(addr).map_err(|e| {
            Failure::Other(502, format!("cannot address instance {}: {e}", instance()))
        })?);
        uri.path_and_query = Some(
            head.uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        let uri = Uri::from_parts(uri).map_err(|e| {
            Failure::Other(502, format!("cannot address instance {}: {e}", instance()))
        })?;
        let mut outgoing = http::Request::new(Full::new(body));
        *outgoing.method_mut() = head.method.clone();
        *outgoing.uri_mut() = uri;
        copy_end_to_end(&head.headers, outgoing.headers_mut());
        let exchange = async {
            let response = self.client.request(outgoing).await.map_err(|e| {
                if e.is_connect() {
                    Failure::Connect(format!("instance {} at {addr}: {e}", instance()))
                } else {
                    Failure::Other(502, format!("instance {} at {addr}: {e}", instance()))
                }
            })?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map_err(|e| {
                Failure::Other(
                    502,
                    format!("instance {} broke off its response: {e}", instance()),
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
                format!(
                    "instance {} did not answer within {REQUEST_TIMEOUT:?}",
                    instance()
                ),
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
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
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
