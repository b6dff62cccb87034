//! `GET /v1/tree`: supervision trees.
//!
//! - `?node=NAME`: that node's tree, `{"node": NAME, "tree": ACTOR}` — this node's from its own
//!   [`ActorTree`](crate::tree::ActorTree), another's fetched from its HTTP address as listed by
//!   `/v1/members` (404 for a name that is not a member, 502 when it does not answer in time).
//! - without `?node`: the whole cluster, `{"nodes": [{"node", "status", "tree"} | {"node",
//!   "status", "error"}]}`: every alive member's tree, fetched in parallel with a short timeout;
//!   members that are not alive or do not answer are listed with an error instead.
//!
//! An ACTOR is `{"path", "kind", "status", "restarts", "reason"?, "children": [ACTOR...]}`; paths
//! are node-local (`node/registry/shard-2`) and are what `POST /v1/actors/kill` takes.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

use super::{ApiContext, ApiError};

// The token the caller presented (with `--acl`), passed on when asking the other members.
tokio::task_local! {
    pub(crate) static CALLER_TOKEN: Option<String>;
}

/// How long the tree of another node may take to arrive.
const FETCH_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest tree answer read from another node.
const MAX_TREE_BYTES: usize = 8 * 1024 * 1024;

/// A member as `/v1/members` lists it, reduced to what fetching its tree needs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Member {
    pub(crate) name: String,
    pub(crate) status: String,
    pub(crate) is_self: bool,
    pub(crate) http_addr: Option<SocketAddr>,
    /// The Lathe version it runs ("" when it does not say).
    pub(crate) version: String,
}

pub(crate) async fn tree(context: &ApiContext, query: &str) -> Result<Response, ApiError> {
    let answer = match node_parameter(query)? {
        Some(name) if name == context.node_name => local_tree(context),
        Some(name) => {
            let members = members(context).await;
            let Some(member) = members.into_iter().find(|m| m.name == name) else {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("no member named {name:?} (see GET /v1/members)"),
                ));
            };
            fetch_tree(&member)
                .await
                .map_err(|error| ApiError::new(StatusCode::BAD_GATEWAY, error.to_string()))?
        }
        None => cluster_tree(context).await,
    };
    Ok(warp::reply::json(&answer).into_response())
}

fn local_tree(context: &ApiContext) -> Value {
    json!({ "node": context.node_name, "tree": context.tree.root_snapshot() })
}

/// Every member's entry, in the order `/v1/members` lists them.
async fn cluster_tree(context: &ApiContext) -> Value {
    let members = members(context).await;
    let entries = members.iter().map(|member| async move {
        let mut entry = if member.is_self {
            local_tree(context)
        } else if member.status != "alive" {
            let error = format!("member is {}: not asked", member.status);
            json!({ "node": member.name, "error": error })
        } else {
            fetch_tree(member)
                .await
                .unwrap_or_else(|error| json!({ "node": member.name, "error": error.to_string() }))
        };
        entry["status"] = json!(member.status);
        entry
    });
    json!({ "nodes": futures::future::join_all(entries).await })
}

/// Why another member's tree could not be fetched (the 502's message, or the member's `error`).
#[derive(Debug, thiserror::Error)]
enum FetchError {
    /// The member lists no HTTP address this node can reach.
    #[error("member {0} has no usable http address")]
    NoAddress(String),
    /// The request failed, or its answer was not a tree.
    #[error("cannot fetch the tree of {name} from {addr}: {why}")]
    Failed {
        name: String,
        addr: SocketAddr,
        why: AnswerError,
    },
    /// The member did not answer within [`FETCH_TIMEOUT`].
    #[error("cannot fetch the tree of {name} from {addr}: no answer within {FETCH_TIMEOUT:?}")]
    TimedOut { name: String, addr: SocketAddr },
}

/// What went wrong asking a member for its tree.
#[derive(Debug, thiserror::Error)]
enum AnswerError {
    /// The member's address does not make a URI.
    #[error("bad address {uri}: {error}")]
    BadUri {
        uri: String,
        error: http::uri::InvalidUri,
    },
    /// The request could not be built (a token that is not a header value).
    #[error("bad request: {0}")]
    BadRequest(http::Error),
    /// No connection, or the connection failed.
    #[error(transparent)]
    Request(#[from] hyper_util::client::legacy::Error),
    /// The answer's body could not be read (or was over [`MAX_TREE_BYTES`]).
    #[error("cannot read the answer: {0}")]
    Read(Box<dyn std::error::Error + Send + Sync>),
    /// The member answered an error status: it and the body.
    #[error("answered {status}: {body}")]
    Status {
        status: http::StatusCode,
        body: String,
    },
    /// The answer is JSON without a `tree`.
    #[error("answered without a tree")]
    NoTree,
    /// The answer is not JSON.
    #[error("answered bad json: {0}")]
    Json(serde_json::Error),
}

/// `GET http://<member>/v1/tree?node=<member>`: the member answers with its own tree.
async fn fetch_tree(member: &Member) -> Result<Value, FetchError> {
    let name = &member.name;
    let addr = member
        .http_addr
        .ok_or_else(|| FetchError::NoAddress(name.clone()))?;
    let uri = format!("http://{addr}/v1/tree?node={name}");
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let request = async {
        let uri: http::Uri = uri.parse().map_err(|error| AnswerError::BadUri {
            uri: uri.clone(),
            error,
        })?;
        let mut request = http::Request::get(uri);
        if let Some(token) = CALLER_TOKEN.try_with(Clone::clone).ok().flatten() {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Empty::new())
            .map_err(AnswerError::BadRequest)?;
        let response = client.request(request).await?;
        let status = response.status();
        let body = http_body_util::Limited::new(response.into_body(), MAX_TREE_BYTES)
            .collect()
            .await
            .map_err(AnswerError::Read)?
            .to_bytes();
        if !status.is_success() {
            return Err(AnswerError::Status {
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        match serde_json::from_slice::<Value>(&body) {
            Ok(answer) if answer.get("tree").is_some() => Ok(answer),
            Ok(_) => Err(AnswerError::NoTree),
            Err(e) => Err(AnswerError::Json(e)),
        }
    };
    match tokio::time::timeout(FETCH_TIMEOUT, request).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(why)) => Err(FetchError::Failed {
            name: name.clone(),
            addr,
            why,
        }),
        Err(_) => Err(FetchError::TimedOut {
            name: name.clone(),
            addr,
        }),
    }
}

async fn members(context: &ApiContext) -> Vec<Member> {
    let answer = context.members.members_json().await;
    let listed = answer
        .get("members")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    listed.iter().filter_map(member).collect()
}

pub(crate) fn member(value: &Value) -> Option<Member> {
    let text = |field: &str| value.get(field).and_then(Value::as_str);
    let addr = |field: &str| text(field).and_then(|a| a.parse::<SocketAddr>().ok());
    // A node serving on 0.0.0.0 is reached at the host its cluster address names.
    let http_addr = match (addr("http_addr"), addr("cluster_addr")) {
        (Some(http), Some(cluster)) if http.ip().is_unspecified() => {
            Some(SocketAddr::new(cluster.ip(), http.port()))
        }
        (http, _) => http,
    };
    Some(Member {
        name: text("name")?.to_string(),
        status: text("status").unwrap_or("unknown").to_string(),
        is_self: value.get("is_self").and_then(Value::as_bool) == Some(true),
        http_addr,
        version: text("version").unwrap_or_default().to_string(),
    })
}

/// The only parameter: `node=NAME`.
fn node_parameter(query: &str) -> Result<Option<String>, ApiError> {
    let mut node = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("node", "") => {
                return Err(ApiError::bad_request(
                    "query parameter node needs a node name",
                ))
            }
            ("node", name) => node = Some(name.to_string()),
            (name, _) => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {name:?} (allowed: node)"
                )))
            }
        }
    }
    Ok(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_read_from_the_members_answer() {
        let listed = json!({"name": "n2", "status": "suspect", "is_self": false,
            "http_addr": "0.0.0.0:7502", "cluster_addr": "10.0.0.2:7402"});
        assert_eq!(
            member(&listed),
            Some(Member {
                name: "n2".into(),
                status: "suspect".into(),
                is_self: false,
                http_addr: Some("10.0.0.2:7502".parse().unwrap()),
                version: String::new(),
            })
        );
        assert_eq!(member(&json!({"status": "alive"})), None);
    }

    #[test]
    fn only_the_node_parameter_is_accepted() {
        assert_eq!(node_parameter("").unwrap(), None);
        assert_eq!(node_parameter("node=n1").unwrap(), Some("n1".into()));
        assert!(node_parameter("node=").is_err());
        assert!(node_parameter("node").is_err());
        let error = node_parameter("depth=2").unwrap_err();
        assert!(error.message.contains("depth"), "{}", error.message);
    }
}
