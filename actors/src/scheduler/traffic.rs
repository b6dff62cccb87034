//! Reads the response counters of some groups off every live node: `GET /metrics` of each member
//! that is not dead (their `lathe_http_requests_total` and `lathe_http_request_duration_seconds`),
//! parsed and summed by [`gate`]. The scheduler leader does it for the groups under a metric gate.
//!
//! All or nothing: when a live node does not answer, no counters are returned (a gate then waits
//! rather than judge a part of the traffic).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use lathe::layout::Traffic;

use super::gate;
use crate::membership::{MemberStatus, MemberView};

/// How long one node's `/metrics` may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(3);

/// The counters of `groups` summed over the members that are not dead; `None` when one of them
/// could not be read.
pub async fn read(
    members: &[MemberView],
    groups: &BTreeSet<String>,
) -> Option<BTreeMap<String, Traffic>> {
    if groups.is_empty() {
        return Some(BTreeMap::new());
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let scrapes = members
        .iter()
        .filter(|member| member.status != MemberStatus::Dead)
        .map(|member| {
            let addr = reachable(member);
            let client = client.clone();
            async move {
                let text = tokio::time::timeout(SCRAPE_TIMEOUT, scrape(&client, addr)).await;
                match text {
                    Ok(Ok(text)) => Some(gate::parse_metrics(&text, groups)),
                    Ok(Err(error)) => {
                        tracing::info!(node = %member.name, %addr, %error, "metric gate: cannot read /metrics");
                        None
                    }
                    Err(_) => {
                        tracing::info!(node = %member.name, %addr, "metric gate: /metrics timed out");
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

async fn scrape(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    addr: SocketAddr,
) -> Result<String, String> {
    let uri: http::Uri = format!("http://{addr}/metrics")
        .parse()
        .map_err(|e: http::uri::InvalidUri| e.to_string())?;
    let response = client.get(uri).await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("GET /metrics answered {}", response.status()));
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    String::from_utf8(body.to_bytes().to_vec()).map_err(|e| e.to_string())
}
