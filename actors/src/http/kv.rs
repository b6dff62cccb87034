//! `/v1/kv/{path}`: read, write and delete registry keys, with versions, CAS, recursion and
//! Consul-style blocking queries (`?index=N&wait=30s`).

use lathe::KeyPath;
use warp::http::{HeaderValue, Method, StatusCode};
use warp::reply::Response;
use warp::Reply;

use super::query::{self, DEFAULT_WAIT};
use super::{ApiContext, ApiError, BodyStream};

const PREFIX: &str = "/v1/kv";
pub(crate) const INDEX_HEADER: &str = "x-lathe-index";

pub(crate) fn is_kv_path(path: &str) -> bool {
    path == PREFIX || path.starts_with("/v1/kv/")
}

/// Parses the key part of a route (`/v1/kv/a/b` → `/a/b`) into a registry path.
pub(crate) fn key_from(path: &str, prefix: &str) -> Result<KeyPath, ApiError> {
    let raw = &path[prefix.len()..];
    KeyPath::parse(raw).map_err(|e| ApiError::bad_request(format!("bad key path {raw:?}: {e}")))
}

pub(crate) async fn handle(
    context: &ApiContext,
    method: &Method,
    path: &str,
    query: &str,
    body: BodyStream,
) -> Result<Response, ApiError> {
    let key = key_from(path, PREFIX)?;
    match *method {
        Method::GET => get(context, &key, query).await,
        Method::PUT => put(context, &key, query, body).await,
        Method::DELETE => delete(context, &key, query).await,
        _ => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} is not allowed on {path} (use GET, PUT or DELETE)"),
        )),
    }
}

async fn get(context: &ApiContext, key: &KeyPath, query: &str) -> Result<Response, ApiError> {
    let query = query::parse(query, &["recurse", "index", "wait"])?;
    if let Some(index) = query.index {
        wait_for_change(context, key, index, query.wait.unwrap_or(DEFAULT_WAIT)).await?;
    }
    if query.recurse {
        let (entries, index) = context.registry.list(key).await?;
        return Ok(with_index(
            warp::reply::json(&entries).into_response(),
            index,
        ));
    }
    let (entry, index) = context.registry.get(key).await?;
    let response = match entry {
        Some(entry) => warp::reply::json(&entry).into_response(),
        None => {
            ApiError::new(StatusCode::NOT_FOUND, format!("key {key} not found")).into_response()
        }
    };
    Ok(with_index(response, index))
}

/// Blocks until something at or under `key` changes after `index`, or `wait` passes.
async fn wait_for_change(
    context: &ApiContext,
    key: &KeyPath,
    index: u64,
    wait: std::time::Duration,
) -> Result<(), ApiError> {
    let _permit = context.limits.blocking_query()?;
    let mut subscription = context.registry.subscribe(key, Some(index)).await?;
    let _ = tokio::time::timeout(wait, subscription.next()).await;
    Ok(())
}

async fn put(
    context: &ApiContext,
    key: &KeyPath,
    query: &str,
    body: BodyStream,
) -> Result<Response, ApiError> {
    let query = query::parse(query, &["cas"])?;
    check_writable(key)?;
    let body = body.read_limited(context.max_value_bytes).await?;
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("body is not valid JSON: {e}")))?;
    let version = context.registry.put(key, value, query.cas).await?;
    let reply = warp::reply::json(&serde_json::json!({ "version": version }));
    let index = context.registry.index().max(version);
    Ok(with_index(reply.into_response(), index))
}

async fn delete(context: &ApiContext, key: &KeyPath, query: &str) -> Result<Response, ApiError> {
    let query = query::parse(query, &["recurse", "cas"])?;
    check_writable(key)?;
    let version = context
        .registry
        .delete(key, query.cas, query.recurse)
        .await?;
    let reply = warp::reply::json(&serde_json::json!({ "version": version }));
    Ok(with_index(reply.into_response(), context.registry.index()))
}

fn check_writable(key: &KeyPath) -> Result<(), ApiError> {
    if key.is_root() {
        return Err(ApiError::bad_request(
            "the root key / cannot be written or deleted",
        ));
    }
    if key.is_reserved() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{key} is under /lathe, which is reserved for lathe's own state"),
        ));
    }
    Ok(())
}

pub(crate) fn with_index(mut response: Response, index: u64) -> Response {
    response
        .headers_mut()
        .insert(INDEX_HEADER, HeaderValue::from(index));
    response
}
