//! `/v1/kv/{path}`: read, write and delete registry keys, with versions, CAS, recursion and
//! Consul-style blocking queries (`?index=N&wait=30s`).

use lathe::KeyPath;
use warp::http::{HeaderValue, Method, StatusCode};
use warp::reply::Response;
use warp::Reply;

use super::query::{self, DEFAULT_WAIT};
use super::{ApiContext, ApiError, BodyStream};
use crate::registry::value_bytes;

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
    check_quota(context, key, &value).await?;
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

/// Refuses a write that would take the registry past its quota: 413 for a value larger than the
/// whole quota, 507 when the registry is full (`--max-keys`, `--max-registry-bytes`).
async fn check_quota(
    context: &ApiContext,
    key: &KeyPath,
    value: &serde_json::Value,
) -> Result<(), ApiError> {
    let (max_keys, max_bytes) = (context.limits.max_keys, context.limits.max_registry_bytes);
    let size = value_bytes(value);
    if size > max_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("value of about {size} bytes is over the registry quota of {max_bytes} bytes"),
        ));
    }
    let (keys, bytes) = context.registry.usage().await?;
    let existing = context.registry.get(key).await?.0;
    let freed = existing
        .as_ref()
        .map_or(0, |entry| value_bytes(&entry.value));
    if existing.is_none() && keys >= max_keys {
        return Err(ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            format!("the registry is full: {keys} keys, the quota is {max_keys} (--max-keys)"),
        ));
    }
    if bytes.saturating_sub(freed) + size > max_bytes {
        return Err(ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            format!(
                "the registry is full: about {bytes} bytes of values, this one would pass the \
                    quota of {max_bytes} bytes (--max-registry-bytes)"
            ),
        ));
    }
    Ok(())
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
