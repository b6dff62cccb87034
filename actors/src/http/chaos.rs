//! `POST /v1/actors/kill`, the failure drills: body `{"path": "<an actor path from GET /v1/tree>"}`
//! kills that actor of this node as if it had crashed (`ActorCell::kill`: no `post_stop`, its
//! supervisor sees it die and applies its restart policy).
//!
//! Only on a node started with `--enable-chaos`; otherwise 403. 400 for a bad body, 404 for a path
//! that names no actor of this node, 409 for an actor that is not running (restarting, failed).
//! Killing a subsystem its root supervisor does not restart (`node`, `node/membership`,
//! `node/registry`) fails the whole node, as such a crash would: the process exits non-zero and
//! its resource manager replaces it.

use serde::Deserialize;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

use super::{query, ApiContext, ApiError, BodyStream};
use crate::tree::KillError;

/// The largest request body read.
const MAX_BODY_BYTES: usize = 64 * 1024;

pub(crate) const DISABLED: &str =
    "failure drills are disabled: start lathe-node with --enable-chaos";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KillRequest {
    path: String,
}

pub(crate) async fn kill(
    context: &ApiContext,
    query: &str,
    body: BodyStream,
) -> Result<Response, ApiError> {
    if !context.enable_chaos {
        return Err(ApiError::new(StatusCode::FORBIDDEN, DISABLED));
    }
    query::parse(query, &[])?;
    let body = body.read_limited(MAX_BODY_BYTES).await?;
    let request: KillRequest = serde_json::from_slice(&body).map_err(|error| {
        ApiError::bad_request(format!(
            "the body must be {{\"path\": \"<an actor path from GET /v1/tree>\"}}: {error}"
        ))
    })?;
    match context.tree.kill(&request.path) {
        Ok(kind) => {
            let answer = serde_json::json!({
                "node": context.node_name,
                "killed": request.path,
                "kind": kind,
            });
            Ok(warp::reply::json(&answer).into_response())
        }
        Err(error @ KillError::Unknown(_)) => {
            Err(ApiError::new(StatusCode::NOT_FOUND, error.to_string()))
        }
        Err(error @ KillError::NotRunning { .. }) => {
            Err(ApiError::new(StatusCode::CONFLICT, error.to_string()))
        }
    }
}
