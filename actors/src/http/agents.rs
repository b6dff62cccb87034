//! `/v1/agents`: `lathe-agent`s say where their status endpoint (`/status`, `/metrics`) answers,
//! so Prometheus's service discovery (`/v1/prometheus/targets`) lists them with the nodes.
//!
//! - `PUT /v1/agents/{name}` with `{"addr": "HOST:PORT", "ttl_seconds": 60}`: registers (or
//!   renews) the agent under `/lathe/agents/{name}` until `ttl_seconds` from now; an agent renews
//!   well before then, so one that dies drops out of the list within its ttl.
//! - `DELETE /v1/agents/{name}`: an agent that stops says so at once.
//! - `GET /v1/agents`: the registrations that have not expired.
//!
//! An expired registration is only skipped, not deleted: the next registration under that name
//! overwrites it.

use lathe::KeyPath;
use serde::{Deserialize, Serialize};
use warp::http::{Method, StatusCode};
use warp::reply::Response;
use warp::Reply;

use super::{query, ApiContext, ApiError, BodyStream};

pub(crate) const AGENTS_PATH: &str = "/v1/agents";
/// The registry subtree of the registrations.
const AGENTS_KEY: &str = "/lathe/agents";
const MAX_BODY: usize = 4096;
const MAX_TTL_SECONDS: u64 = 3600;

/// One agent's registration, as stored and listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AgentRecord {
    pub(crate) name: String,
    /// Where its `/status` and `/metrics` answer.
    pub(crate) addr: String,
    pub(crate) expires_at_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Registration {
    addr: String,
    ttl_seconds: u64,
}

pub(crate) fn is_agents_path(path: &str) -> bool {
    path == AGENTS_PATH || path.starts_with("/v1/agents/")
}

pub(crate) async fn handle(
    context: &ApiContext,
    method: &Method,
    path: &str,
    query: &str,
    body: BodyStream,
) -> Result<Response, ApiError> {
    query::parse(query, &[])?;
    let name = path
        .strip_prefix(AGENTS_PATH)
        .unwrap_or_default()
        .trim_matches('/');
    match (method, name.is_empty()) {
        (&Method::GET, true) => {
            let agents = live(context, unix_ms_now()).await?;
            Ok(warp::reply::json(&agents).into_response())
        }
        (&Method::PUT, false) => {
            let key = agent_key(name)?;
            let body = body.read_limited(MAX_BODY).await?;
            let record = record(name, &body, unix_ms_now())?;
            let value =
                serde_json::to_value(&record).map_err(|e| ApiError::internal(e.to_string()))?;
            context.registry.put(&key, value, None).await?;
            Ok(warp::reply::json(&record).into_response())
        }
        (&Method::DELETE, false) => {
            context
                .registry
                .delete(&agent_key(name)?, None, false)
                .await?;
            Ok(warp::reply::json(&serde_json::json!({ "deleted": name })).into_response())
        }
        _ => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "method {method} is not allowed on {path} (GET {AGENTS_PATH}, PUT or DELETE \
                 {AGENTS_PATH}/{{name}})"
            ),
        )),
    }
}

/// The registrations that have not expired at `now_ms`, by name.
pub(crate) async fn live(context: &ApiContext, now_ms: u64) -> Result<Vec<AgentRecord>, ApiError> {
    let prefix = KeyPath::parse(AGENTS_KEY).map_err(|e| ApiError::internal(e.to_string()))?;
    let (entries, _) = context.registry.list(&prefix).await?;
    let records: Vec<AgentRecord> = entries
        .into_iter()
        .filter_map(|e| serde_json::from_value(e.value).ok())
        .collect();
    Ok(unexpired(records, now_ms))
}

fn unexpired(mut records: Vec<AgentRecord>, now_ms: u64) -> Vec<AgentRecord> {
    records.retain(|r| r.expires_at_ms > now_ms);
    records.sort_by(|a, b| a.name.cmp(&b.name));
    records
}

fn agent_key(name: &str) -> Result<KeyPath, ApiError> {
    if name.contains('/') {
        return Err(ApiError::bad_request(format!(
            "agent name {name:?} must be one path segment ([A-Za-z0-9._-])"
        )));
    }
    KeyPath::parse(&format!("{AGENTS_KEY}/{name}"))
        .map_err(|e| ApiError::bad_request(format!("bad agent name {name:?}: {e}")))
}

/// Validates a registration body.
fn record(name: &str, body: &[u8], now_ms: u64) -> Result<AgentRecord, ApiError> {
    let registration: Registration = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "bad registration: {e} (expected {{\"addr\": \"HOST:PORT\", \"ttl_seconds\": N}})"
        ))
    })?;
    let addr: std::net::SocketAddr = registration.addr.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "addr {:?} is not an IP:PORT address",
            registration.addr
        ))
    })?;
    if addr.ip().is_unspecified() || addr.port() == 0 {
        return Err(ApiError::bad_request(format!(
            "addr {addr} cannot be reached: give the address others reach the agent at"
        )));
    }
    if !(1..=MAX_TTL_SECONDS).contains(&registration.ttl_seconds) {
        return Err(ApiError::bad_request(format!(
            "ttl_seconds must be 1 to {MAX_TTL_SECONDS}, not {}",
            registration.ttl_seconds
        )));
    }
    Ok(AgentRecord {
        name: name.to_string(),
        addr: addr.to_string(),
        expires_at_ms: now_ms + registration.ttl_seconds * 1000,
    })
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registration_expires_after_its_ttl() {
        let record = record(
            "edge-1",
            br#"{"addr": "10.0.0.5:7610", "ttl_seconds": 60}"#,
            1_000,
        )
        .unwrap();
        assert_eq!(
            record,
            AgentRecord {
                name: "edge-1".into(),
                addr: "10.0.0.5:7610".into(),
                expires_at_ms: 61_000,
            }
        );
        let other = AgentRecord {
            name: "edge-0".into(),
            addr: "10.0.0.4:7610".into(),
            expires_at_ms: 70_000,
        };
        let live = unexpired(vec![record.clone(), other.clone()], 60_999);
        assert_eq!(live, vec![other.clone(), record]);
        assert_eq!(unexpired(live, 61_000), vec![other]);
    }

    #[test]
    fn bad_registrations_are_refused_saying_why() {
        let refused = |body: &str| record("a", body.as_bytes(), 0).unwrap_err().message;
        assert!(refused("{}").contains("expected {\"addr\""));
        assert!(refused(r#"{"addr": "host:1", "ttl_seconds": 5}"#).contains("not an IP:PORT"));
        assert!(
            refused(r#"{"addr": "0.0.0.0:7610", "ttl_seconds": 5}"#).contains("cannot be reached")
        );
        assert!(refused(r#"{"addr": "127.0.0.1:7610", "ttl_seconds": 0}"#).contains("ttl_seconds"));
        assert!(
            refused(r#"{"addr": "127.0.0.1:1", "ttl_seconds": 5, "x": 1}"#)
                .contains("unknown field")
        );
        assert!(agent_key("a/b").is_err());
        assert!(agent_key("bad name").is_err());
        assert_eq!(
            agent_key("edge-1").unwrap().as_str(),
            "/lathe/agents/edge-1"
        );
    }
}
