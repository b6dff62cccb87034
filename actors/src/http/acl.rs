//! `/v1/acl`: bootstrap, policies and tokens (with `--acl`).
//!
//! - `POST /v1/acl/bootstrap`: once per cluster, makes a management token and answers its secret
//!   (`{"accessor","secret","management":true}`); later calls answer 409. The record is created
//!   with create-only CAS, so two nodes racing cannot both succeed.
//! - `GET /v1/acl/policies`, `GET|PUT|DELETE /v1/acl/policies/{name}` (body
//!   `{"rules":[{"resource","prefix"?,"access"}], "description"?}`).
//! - `GET /v1/acl/tokens`, `POST /v1/acl/tokens` (body `{"policies":[..], "management"?,
//!   "description"?}`; the answer carries the secret, the only time it is shown),
//!   `GET|DELETE /v1/acl/tokens/{accessor}`.
//!
//! After each write the node re-reads its table, so the answer holds on this node at once; other
//! nodes follow within the registry's fan-out (`acl::REFRESH_EVERY` at worst).

use lathe::KeyPath;
use serde::Deserialize;
use warp::http::{Method, StatusCode};
use warp::reply::Response;
use warp::Reply;

use super::{query, ApiContext, ApiError, BodyStream};
use crate::acl::records::{
    self, bootstrap_key, hash_secret, policies_key, tokens_key, BOOTSTRAP_ACCESSOR,
};
use crate::acl::{PolicyRecord, Rule, TokenRecord};
use crate::registry::RegistryError;
use lathe_store::StoreError;

pub(crate) const BOOTSTRAP_PATH: &str = "/v1/acl/bootstrap";
const POLICIES_PATH: &str = "/v1/acl/policies";
const TOKENS_PATH: &str = "/v1/acl/tokens";
const MAX_BODY: usize = 64 * 1024;

pub(crate) fn is_acl_path(path: &str) -> bool {
    path == "/v1/acl" || path.starts_with("/v1/acl/")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    rules: Vec<Rule>,
    #[serde(default)]
    description: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    #[serde(default)]
    policies: Vec<String>,
    #[serde(default)]
    management: bool,
    #[serde(default)]
    description: String,
}

pub(crate) async fn handle(
    context: &ApiContext,
    method: &Method,
    path: &str,
    query: &str,
    body: BodyStream,
) -> Result<Response, ApiError> {
    query::parse(query, &[])?;
    if !context.acl.is_enabled() {
        return Err(ApiError::bad_request(
            "acl is off on this node: start the nodes with --acl (LATHE_ACL=true)",
        ));
    }
    let response = match (method, path) {
        (&Method::POST, BOOTSTRAP_PATH) => bootstrap(context).await,
        (&Method::GET, POLICIES_PATH) => list_policies(context).await,
        (&Method::GET, TOKENS_PATH) => list_tokens(context).await,
        (&Method::POST, TOKENS_PATH) => create_token(context, body).await,
        _ => match (method, named(path, POLICIES_PATH), named(path, TOKENS_PATH)) {
            (&Method::GET, Some(name), _) => get_policy(context, name).await,
            (&Method::PUT, Some(name), _) => put_policy(context, name, body).await,
            (&Method::DELETE, Some(name), _) => delete_record(context, policy_key(name)?).await,
            (&Method::GET, _, Some(accessor)) => get_token(context, accessor).await,
            (&Method::DELETE, _, Some(accessor)) => delete_token(context, accessor).await,
            _ => Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "method {method} is not allowed on {path} (POST {BOOTSTRAP_PATH}; GET \
                     {POLICIES_PATH}, GET|PUT|DELETE {POLICIES_PATH}/{{name}}; GET|POST \
                     {TOKENS_PATH}, GET|DELETE {TOKENS_PATH}/{{accessor}})"
                ),
            )),
        },
    }?;
    context.acl.refresh().await;
    Ok(response)
}

/// `{name}` of `{route}/{name}`.
fn named<'a>(path: &'a str, route: &str) -> Option<&'a str> {
    path.strip_prefix(route)?
        .strip_prefix('/')
        .filter(|name| !name.is_empty())
}

async fn bootstrap(context: &ApiContext) -> Result<Response, ApiError> {
    let secret =
        records::new_secret().map_err(|e| ApiError::internal(format!("no randomness: {e}")))?;
    let record = TokenRecord {
        accessor: BOOTSTRAP_ACCESSOR.to_string(),
        hash: hash_secret(&secret),
        policies: Vec::new(),
        management: true,
        description: "bootstrap management token".to_string(),
        revoked: false,
    };
    let value = serde_json::to_value(&record).map_err(|e| ApiError::internal(e.to_string()))?;
    match context.registry.put(&bootstrap_key(), value, Some(0)).await {
        Err(RegistryError::Store(StoreError::CasMismatch { .. })) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "acl bootstrap was done already: ask the holder of the management token for a token",
        )),
        Err(error) => Err(error.into()),
        Ok(_) => {
            tracing::warn!("acl bootstrapped: a management token was handed out");
            Ok(with_secret(&record, &secret))
        }
    }
}

/// A token's public fields and, this once, its secret.
fn with_secret(record: &TokenRecord, secret: &str) -> Response {
    let mut body = record.public();
    body["secret"] = serde_json::Value::String(secret.to_string());
    warp::reply::json(&body).into_response()
}

async fn list_policies(context: &ApiContext) -> Result<Response, ApiError> {
    let (entries, _) = context.registry.list(&policies_key()).await?;
    let policies: Vec<PolicyRecord> = entries
        .into_iter()
        .filter_map(|e| serde_json::from_value(e.value).ok())
        .collect();
    Ok(warp::reply::json(&policies).into_response())
}

async fn get_policy(context: &ApiContext, name: &str) -> Result<Response, ApiError> {
    match context.registry.get(&policy_key(name)?).await?.0 {
        Some(entry) => Ok(warp::reply::json(&entry.value).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no policy {name:?}"),
        )),
    }
}

async fn put_policy(
    context: &ApiContext,
    name: &str,
    body: BodyStream,
) -> Result<Response, ApiError> {
    let key = policy_key(name)?;
    let body = body.read_limited(MAX_BODY).await?;
    let body: PolicyBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "bad policy: {e} (expected {{\"rules\": \
                [{{\"resource\": \"key\", \"prefix\": \"/app\", \"access\": \"read\"}}]}})"
        ))
    })?;
    for rule in &body.rules {
        rule.validate()
            .map_err(|e| ApiError::bad_request(format!("bad rule {rule}: {e}")))?;
    }
    let record = PolicyRecord {
        name: name.to_string(),
        rules: body.rules,
        description: body.description,
    };
    let value = serde_json::to_value(&record).map_err(|e| ApiError::internal(e.to_string()))?;
    context.registry.put(&key, value, None).await?;
    Ok(warp::reply::json(&record).into_response())
}

async fn list_tokens(context: &ApiContext) -> Result<Response, ApiError> {
    let (entries, _) = context.registry.list(&records::acl_key()).await?;
    let tokens: Vec<serde_json::Value> = entries
        .into_iter()
        .filter(|e| e.key.is_under(&tokens_key()) || e.key == bootstrap_key())
        .filter_map(|e| serde_json::from_value::<TokenRecord>(e.value).ok())
        .filter(|t| !t.revoked)
        .map(|t| t.public())
        .collect();
    Ok(warp::reply::json(&tokens).into_response())
}

async fn create_token(context: &ApiContext, body: BodyStream) -> Result<Response, ApiError> {
    let body = body.read_limited(MAX_BODY).await?;
    let body: TokenBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "bad token request: {e} (expected {{\"policies\": [\"NAME\"], \"management\": false}})"
        ))
    })?;
    if body.policies.is_empty() && !body.management {
        return Err(ApiError::bad_request(
            "a token needs at least one policy (or \"management\": true)",
        ));
    }
    for name in &body.policies {
        if context.registry.get(&policy_key(name)?).await?.0.is_none() {
            return Err(ApiError::bad_request(format!("no policy {name:?}")));
        }
    }
    let no_randomness = |e: getrandom::Error| ApiError::internal(format!("no randomness: {e}"));
    let secret = records::new_secret().map_err(no_randomness)?;
    let record = TokenRecord {
        accessor: records::new_accessor().map_err(no_randomness)?,
        hash: hash_secret(&secret),
        policies: body.policies,
        management: body.management,
        description: body.description,
        revoked: false,
    };
    let value = serde_json::to_value(&record).map_err(|e| ApiError::internal(e.to_string()))?;
    context
        .registry
        .put(&token_key(&record.accessor)?, value, Some(0))
        .await?;
    Ok(with_secret(&record, &secret))
}

async fn get_token(context: &ApiContext, accessor: &str) -> Result<Response, ApiError> {
    let key = if accessor == BOOTSTRAP_ACCESSOR {
        bootstrap_key()
    } else {
        token_key(accessor)?
    };
    let record = context
        .registry
        .get(&key)
        .await?
        .0
        .and_then(|e| serde_json::from_value::<TokenRecord>(e.value).ok())
        .filter(|t| !t.revoked)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no token {accessor:?}")))?;
    Ok(warp::reply::json(&record.public()).into_response())
}

/// Deletes a token; the bootstrap token is revoked in place instead, so bootstrap stays done.
async fn delete_token(context: &ApiContext, accessor: &str) -> Result<Response, ApiError> {
    if accessor != BOOTSTRAP_ACCESSOR {
        return delete_record(context, token_key(accessor)?).await;
    }
    let Some(entry) = context.registry.get(&bootstrap_key()).await?.0 else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no bootstrap token"));
    };
    let mut record: TokenRecord = serde_json::from_value(entry.value)
        .map_err(|e| ApiError::internal(format!("bad bootstrap record: {e}")))?;
    record.revoked = true;
    record.hash.clear();
    let value = serde_json::to_value(&record).map_err(|e| ApiError::internal(e.to_string()))?;
    let version = context
        .registry
        .put(&bootstrap_key(), value, Some(entry.version))
        .await?;
    Ok(warp::reply::json(&serde_json::json!({ "version": version })).into_response())
}

async fn delete_record(context: &ApiContext, key: KeyPath) -> Result<Response, ApiError> {
    match context.registry.delete(&key, None, false).await? {
        Some(version) => {
            Ok(warp::reply::json(&serde_json::json!({ "version": version })).into_response())
        }
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("nothing at {key}"),
        )),
    }
}

fn policy_key(name: &str) -> Result<KeyPath, ApiError> {
    one_segment(name, "policy name")?;
    policies_key()
        .child(name)
        .map_err(|e| ApiError::bad_request(format!("bad policy name {name:?}: {e}")))
}

fn token_key(accessor: &str) -> Result<KeyPath, ApiError> {
    one_segment(accessor, "token accessor")?;
    tokens_key()
        .child(accessor)
        .map_err(|e| ApiError::bad_request(format!("bad token accessor {accessor:?}: {e}")))
}

fn one_segment(name: &str, what: &str) -> Result<(), ApiError> {
    if name.contains('/') {
        return Err(ApiError::bad_request(format!(
            "{what} {name:?} must be one path segment ([A-Za-z0-9._-])"
        )));
    }
    Ok(())
}
