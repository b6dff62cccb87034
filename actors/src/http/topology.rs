//! `/v1/topology` (deploy and read back), `/v1/tasks` (every instance) and
//! `/v1/services/{group-path}` (live endpoints of one group).

use lathe::layout::{self, InstanceStatus};
use lathe::{Endpoint, KeyPath};
use warp::http::{HeaderValue, Method, StatusCode};
use warp::reply::Response;
use warp::Reply;

use super::kv::{key_from, with_index};
use super::query;
use super::{ApiContext, ApiError, BodyStream};
use crate::scheduler::deploy::{self, DeployError};

/// The largest topology file accepted.
const MAX_TOPOLOGY_BYTES: usize = 1024 * 1024;
const SERVICES: &str = "/v1/services";

pub(crate) async fn topology(
    context: &ApiContext,
    method: &Method,
    query: &str,
    body: BodyStream,
) -> Result<Response, ApiError> {
    match *method {
        Method::PUT => {
            let file = query_file(query)?;
            let body = body.read_limited(MAX_TOPOLOGY_BYTES).await?;
            let source = std::str::from_utf8(&body)
                .map_err(|_| ApiError::bad_request(format!("{file}: topology is not UTF-8")))?;
            let outcome = deploy::deploy(&context.registry, &file, source)
                .await
                .map_err(deploy_error)?;
            Ok(warp::reply::json(&outcome).into_response())
        }
        Method::GET => {
            query::parse(query, &[])?;
            match deploy::current(&context.registry)
                .await
                .map_err(deploy_error)?
            {
                None => Err(ApiError::new(StatusCode::NOT_FOUND, "no topology deployed")),
                Some((record, version)) => {
                    let mut response = Response::new(record.source.into());
                    response.headers_mut().insert(
                        warp::http::header::CONTENT_TYPE,
                        HeaderValue::from_static("application/toml"),
                    );
                    Ok(with_index(response, version))
                }
            }
        }
        _ => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} is not allowed on /v1/topology (use GET or PUT)"),
        )),
    }
}

/// `?file=NAME` names the file in error messages (default `topology.toml`).
fn query_file(query: &str) -> Result<String, ApiError> {
    let mut file = "topology.toml".to_string();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("file", name)) if !name.is_empty() && name.len() <= 255 => {
                file = name.to_string()
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {pair:?} (allowed: file)"
                )))
            }
        }
    }
    Ok(file)
}

fn deploy_error(error: DeployError) -> ApiError {
    match error {
        DeployError::Invalid(e) => ApiError::bad_request(e.to_string()),
        DeployError::Conflict => ApiError::new(StatusCode::CONFLICT, error.to_string()),
        DeployError::Registry(e) => e.into(),
        DeployError::Corrupt(e) => ApiError::internal(e),
    }
}

pub(crate) async fn tasks(context: &ApiContext, query: &str) -> Result<Response, ApiError> {
    query::parse(query, &[])?;
    let prefix =
        KeyPath::parse(layout::INSTANCES).map_err(|e| ApiError::internal(e.to_string()))?;
    let (entries, index) = context.registry.list(&prefix).await?;
    let tasks: Vec<serde_json::Value> = entries
        .into_iter()
        .filter_map(|e| serde_json::from_value::<InstanceStatus>(e.value).ok())
        .map(|s| {
            serde_json::json!({
                "group": s.group,
                "index": s.index,
                "node": s.node,
                "crate": s.task_type.crate_name,
                "version": s.task_type.version,
                "task": s.task_type.task,
                "status": s.status,
                "endpoint": s.endpoint,
                "restarts": s.restarts,
                "reason": s.reason,
            })
        })
        .collect();
    Ok(with_index(warp::reply::json(&tasks).into_response(), index))
}

pub(crate) fn is_services_path(path: &str) -> bool {
    path.starts_with("/v1/services/")
}

/// `/v1/services/http/lb` and `/v1/services/task/http/lb` both name group `task.http.lb`.
pub(crate) async fn services(
    context: &ApiContext,
    path: &str,
    query: &str,
) -> Result<Response, ApiError> {
    query::parse(query, &[])?;
    let group_path = key_from(path, SERVICES)?;
    if group_path.is_root() {
        return Err(ApiError::bad_request(
            "name a group: /v1/services/{group-path}",
        ));
    }
    let groups = match deploy::current(&context.registry)
        .await
        .map_err(deploy_error)?
    {
        Some((record, _)) => record.topology.groups,
        None => Vec::new(),
    };
    let with_task = KeyPath::parse(&format!("/task{group_path}"))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let group = groups
        .iter()
        .find(|g| g.path == group_path)
        .or_else(|| groups.iter().find(|g| g.path == with_task))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no group at {group_path} in the deployed topology"),
            )
        })?;
    let (entries, index) = context
        .registry
        .list(&layout::group_endpoints(&group.name))
        .await?;
    let endpoints: Vec<Endpoint> = entries
        .into_iter()
        .filter_map(|e| serde_json::from_value(e.value).ok())
        .collect();
    Ok(with_index(
        warp::reply::json(&endpoints).into_response(),
        index,
    ))
}
