//! Reads the response counters of some groups (`lathe_http_requests_total` and
//! `lathe_http_request_duration_seconds`), summed over the cluster, for the scheduler leader's
//! metric gates. Two sources ([`TrafficSource`]): every live node's own `GET /metrics`, parsed and
//! summed by [`gate`] (the default), or a Prometheus that scrapes the nodes (`--prometheus-url`),
//! asked with PromQL (`sum by (group, code)` and `sum by (group, le)` of the same counters).
//!
//! All or nothing: when a live node or Prometheus does not answer, no counters are returned (a
//! gate then waits rather than judge a part of the traffic).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use lathe::layout::Traffic;

use super::gate;
use crate::membership::{MemberStatus, MemberView};

/// How long one node's `/metrics`, or the PromQL queries, may take.
const READ_TIMEOUT: Duration = Duration::from_secs(3);

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// Where metric gates read response counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TrafficSource {
    /// Every live node's `GET /metrics`.
    #[default]
    Nodes,
    /// A Prometheus that scrapes the nodes: its base URL (`http://HOST:PORT`).
    Prometheus(String),
}

/// The counters of `groups` summed over the cluster; `None` when they could not all be read.
pub async fn read(
    source: &TrafficSource,
    members: &[MemberView],
    groups: &BTreeSet<String>,
) -> Option<BTreeMap<String, Traffic>> {
    if groups.is_empty() {
        return Some(BTreeMap::new());
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let TrafficSource::Prometheus(url) = source else {
        return from_nodes(&client, members, groups).await;
    };
    match tokio::time::timeout(READ_TIMEOUT, from_prometheus(&client, url, groups)).await {
        Ok(Ok(traffic)) => {
            tracing::debug!(%url, groups = ?groups, "metric gate: counters read from Prometheus");
            Some(traffic)
        }
        Ok(Err(error)) => {
            tracing::info!(%url, %error, "metric gate: cannot query Prometheus");
            None
        }
        Err(_) => {
            tracing::info!(%url, "metric gate: the Prometheus query timed out");
            None
        }
    }
}

async fn from_nodes(
    client: &HttpClient,
    members: &[MemberView],
    groups: &BTreeSet<String>,
) -> Option<BTreeMap<String, Traffic>> {
    let scrapes = members
        .iter()
        .filter(|member| member.status != MemberStatus::Dead)
        .map(|member| {
            let addr = reachable(member);
            let url = format!("http://{addr}/metrics");
            async move {
                match tokio::time::timeout(READ_TIMEOUT, get(client, &url)).await {
                    Ok(Ok(text)) => Some(gate::parse_metrics(&text, groups)),
                    Ok(Err(error)) => {
                        tracing::info!(node = %member.name, %addr, %error,
                            "metric gate: cannot read /metrics");
                        None
                    }
                    Err(_) => {
                        tracing::info!(node = %member.name, %addr,
                            "metric gate: /metrics timed out");
                        None
                    }
                }
            }
        });
    let mut total: BTreeMap<String, Traffic> = BTreeMap::new();
    for node in futures::future::join_all(scrapes).await {
        for (group, traffic) in node? {
            gate::add(total.entry(group).or_default(), &traffic);
        }
    }
    Some(total)
}

/// A member's REST address, with its cluster address's host when it listens on every interface.
fn reachable(member: &MemberView) -> SocketAddr {
    let mut addr = member.http_addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(member.cluster_addr.ip());
    }
    addr
}

/// The two PromQL queries' answers, as counters per group.
async fn from_prometheus(
    client: &HttpClient,
    url: &str,
    groups: &BTreeSet<String>,
) -> Result<BTreeMap<String, Traffic>, ReadError> {
    let query = |promql: String| async move {
        let url = format!(
            "{}/api/v1/query?query={}",
            url.trim_end_matches('/'),
            encode(&promql)
        );
        let text = get(client, &url).await?;
        serde_json::from_str::<serde_json::Value>(&text).map_err(ReadError::Json)
    };
    let selector = gate::promql_selector(groups);
    let requests = query(format!(
        "sum by (group, code) (lathe_http_requests_total{selector})"
    ))
    .await?;
    let buckets = query(format!(
        "sum by (group, le) (lathe_http_request_duration_seconds_bucket{selector})"
    ))
    .await?;
    Ok(gate::parse_prometheus(&requests, &buckets, groups)?)
}

/// `text` percent-encoded for a URL's query (all but letters, digits and `-_.~`).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Why the counters could not be read from a node's `/metrics` or from Prometheus (logged).
#[derive(Debug, thiserror::Error)]
enum ReadError {
    /// The URL is not a URI.
    #[error(transparent)]
    Url(#[from] http::uri::InvalidUri),
    /// No connection, or the connection failed.
    #[error(transparent)]
    Request(#[from] hyper_util::client::legacy::Error),
    /// An answer with an error status.
    #[error("GET {url} answered {status}")]
    Status {
        url: String,
        status: http::StatusCode,
    },
    /// The answer's body could not be read.
    #[error(transparent)]
    Body(#[from] hyper::Error),
    /// The answer is not UTF-8.
    #[error(transparent)]
    Text(#[from] std::string::FromUtf8Error),
    /// Prometheus's answer is not JSON.
    #[error(transparent)]
    Json(serde_json::Error),
    /// Prometheus's answer is JSON, but not the instant vector asked for.
    #[error(transparent)]
    Answer(#[from] gate::AnswerError),
}

async fn get(client: &HttpClient, url: &str) -> Result<String, ReadError> {
    let uri: http::Uri = url.parse()?;
    let response = client.get(uri).await?;
    if !response.status().is_success() {
        return Err(ReadError::Status {
            url: url.to_string(),
            status: response.status(),
        });
    }
    let body = response.into_body().collect().await?;
    Ok(String::from_utf8(body.to_bytes().to_vec())?)
}
