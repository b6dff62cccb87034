//! Registration with the cluster, so Prometheus finds the agent: every [`RENEW`] the agent tells
//! a registry node where its status endpoint (`/status`, `/metrics`) answers, `PUT
//! /v1/agents/{name}` `{"addr", "ttl_seconds"}`; the node lists it in `/v1/prometheus/targets`
//! until [`TTL`] passes without a renewal. On shutdown the agent deregisters (`DELETE`). An
//! agent whose status endpoint listens on an unspecified address (`0.0.0.0`) cannot say where it
//! is reached and does not register.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::Addr;

/// How long a registration holds without renewal.
pub const TTL: Duration = Duration::from_secs(60);
/// How often the agent renews it (three chances before it expires).
pub const RENEW: Duration = Duration::from_secs(20);
/// How long one request to one registry node may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The address to register for a status endpoint bound at `bound`, if others can reach it there.
pub fn advertised(bound: SocketAddr) -> Option<SocketAddr> {
    (!bound.ip().is_unspecified() && bound.port() != 0).then_some(bound)
}

/// The body of a registration.
pub fn registration(addr: SocketAddr) -> serde_json::Value {
    serde_json::json!({ "addr": addr.to_string(), "ttl_seconds": TTL.as_secs() })
}

/// Registers `name` at `addr` with the first registry node that answers, every [`RENEW`], until
/// `stop` resolves; then deregisters.
pub async fn run(
    name: String,
    addr: SocketAddr,
    registry: Vec<Addr>,
    headers: reqwest::header::HeaderMap,
    stop: impl std::future::Future<Output = ()>,
) {
    let http = match crate::tls::client_builder()
        .default_headers(headers)
        .connect_timeout(REQUEST_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .build()
    {
        Ok(http) => http,
        Err(error) => return tracing::warn!(%error, "cannot register with the cluster"),
    };
    let body = registration(addr);
    let mut failing = false;
    tokio::pin!(stop);
    loop {
        let registered = send(&http, reqwest::Method::PUT, &name, Some(&body), &registry).await;
        match registered {
            Ok(node) if failing => {
                tracing::info!(%node, %addr, "registered with the cluster again");
                failing = false;
            }
            Ok(node) => tracing::debug!(%node, %addr, "registered with the cluster"),
            Err(error) if !failing => {
                tracing::warn!(%error,
                    "cannot register with the cluster: Prometheus will not find this agent");
                failing = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep(RENEW) => {}
        }
    }
    if let Err(error) = send(&http, reqwest::Method::DELETE, &name, None, &registry).await {
        tracing::debug!(%error, "cannot deregister (the registration expires by itself)");
    }
}

/// Why no registry node took a registration (or deregistration): what the last one tried said.
#[derive(Debug, thiserror::Error)]
enum SendError {
    /// The agent has no registry node to ask.
    #[error("no registry node configured")]
    NoNode,
    /// The node answered with an error status: it and the body.
    #[error("{method} {url}: {status} {text}")]
    Refused {
        method: reqwest::Method,
        url: String,
        status: reqwest::StatusCode,
        text: String,
    },
    /// The request did not get an answer.
    #[error("{method} {url}: {error}")]
    Failed {
        method: reqwest::Method,
        url: String,
        error: reqwest::Error,
    },
}

/// Sends the request to each registry node in turn until one accepts it; returns that node.
async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    name: &str,
    body: Option<&serde_json::Value>,
    registry: &[Addr],
) -> Result<String, SendError> {
    let mut last = SendError::NoNode;
    for node in registry {
        let url = node.url(&format!("/v1/agents/{name}"));
        let mut request = http.request(method.clone(), &url);
        if let Some(body) = body {
            request = request.json(body);
        }
        let method = method.clone();
        match request.send().await {
            Ok(response) if response.status().is_success() => return Ok(node.0.clone()),
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                last = SendError::Refused {
                    method,
                    url,
                    status,
                    text,
                };
            }
            Err(error) => last = SendError::Failed { method, url, error },
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_reachable_address_is_advertised() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            advertised(addr("127.0.0.1:7610")),
            Some(addr("127.0.0.1:7610"))
        );
        assert_eq!(advertised(addr("0.0.0.0:7610")), None);
        assert_eq!(advertised(addr("[::]:7610")), None);
        assert_eq!(
            registration(addr("10.0.0.5:7610")),
            serde_json::json!({"addr": "10.0.0.5:7610", "ttl_seconds": 60})
        );
    }
}
