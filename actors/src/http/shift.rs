//! `/v1/shifts`: traffic shifts of weighted splits (see `scheduler::shift`).
//!
//! - `POST /v1/shifts` with `{"key": "/task/http/lb/backend_distribution", "to": "<group>",
//!   "step": 10, "every_seconds": 30}` starts one (`step` and `every_seconds` optional).
//! - `GET /v1/shifts` lists them; `GET /v1/shifts/{key path}` shows one.
//! - `POST /v1/shifts/{key path}/pause|resume|undo` steers one.

use lathe::layout::{self, ShiftRecord, ShiftState};
use lathe::KeyPath;
use serde::Deserialize;
use warp::http::{Method, StatusCode};
use warp::reply::Response;
use warp::Reply;

use super::kv::with_index;
use super::query;
use super::{ApiContext, ApiError, BodyStream};
use crate::registry::RegistryError;
use crate::scheduler::rollout::unix_ms;
use crate::scheduler::shift;

const SHIFTS: &str = "/v1/shifts";
const MAX_BODY: usize = 64 * 1024;

pub(crate) fn is_shifts_path(path: &str) -> bool {
    path == SHIFTS || path.starts_with("/v1/shifts/")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Start {
    key: String,
    to: String,
    #[serde(default = "default_step")]
    step: u32,
    #[serde(default = "default_every")]
    every_seconds: u32,
}

fn default_step() -> u32 {
    10
}

fn default_every() -> u32 {
    30
}

pub(crate) async fn handle(
    context: &ApiContext,
    method: &Method,
    path: &str,
    query: &str,
    body: BodyStream,
) -> Result<Response, ApiError> {
    query::parse(query, &[])?;
    let rest = path.strip_prefix(SHIFTS).unwrap_or_default();
    match (method, rest.trim_matches('/').is_empty()) {
        (&Method::GET, true) => all(context).await,
        (&Method::POST, true) => start(context, body).await,
        (&Method::GET, false) => {
            let key = metadata_key(rest)?;
            let (record, _) = read(context, &key).await?;
            Ok(warp::reply::json(&record).into_response())
        }
        (&Method::POST, false) => {
            let (target, command) = super::steering_command(path, rest, "key")?;
            run_command(context, &metadata_key(target)?, command).await
        }
        _ => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "method {method} is not allowed on {path} (GET {SHIFTS}[/{{key}}], POST {SHIFTS}, \
                 POST {SHIFTS}/{{key}}/pause|resume|undo)"
            ),
        )),
    }
}

/// The metadata key a shift is about: a registry path outside `/lathe`.
fn metadata_key(raw: &str) -> Result<KeyPath, ApiError> {
    let key = KeyPath::parse(&format!("/{}", raw.trim_matches('/')))
        .map_err(|e| ApiError::bad_request(format!("bad key {raw:?}: {e}")))?;
    if key.is_root() || key.is_reserved() {
        return Err(ApiError::bad_request(format!(
            "a shift moves a group's metadata key, not {key}"
        )));
    }
    Ok(key)
}

async fn all(context: &ApiContext) -> Result<Response, ApiError> {
    let prefix = KeyPath::parse(layout::SHIFTS).map_err(|e| ApiError::internal(e.to_string()))?;
    let (entries, index) = context.registry.list(&prefix).await?;
    let records: Vec<ShiftRecord> = entries
        .into_iter()
        .filter_map(|e| serde_json::from_value(e.value).ok())
        .collect();
    Ok(with_index(
        warp::reply::json(&records).into_response(),
        index,
    ))
}

async fn read(context: &ApiContext, key: &KeyPath) -> Result<(ShiftRecord, u64), ApiError> {
    let (entry, _) = context.registry.get(&layout::shift(key)).await?;
    let entry =
        entry.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no shift of {key}")))?;
    let record = serde_json::from_value(entry.value)
        .map_err(|e| ApiError::internal(format!("unreadable shift of {key}: {e}")))?;
    Ok((record, entry.version))
}

async fn start(context: &ApiContext, body: BodyStream) -> Result<Response, ApiError> {
    let body = body.read_limited(MAX_BODY).await?;
    let start: Start = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("bad shift: {e}")))?;
    let key = metadata_key(&start.key)?;
    if !(1..=100).contains(&start.step) {
        return Err(ApiError::bad_request(format!(
            "step must be 1 to 100 percentage points, got {}",
            start.step
        )));
    }
    if !(1..=86_400).contains(&start.every_seconds) {
        return Err(ApiError::bad_request(format!(
            "every_seconds must be 1 to 86400, got {}",
            start.every_seconds
        )));
    }
    let (entry, _) = context.registry.get(&key).await?;
    let entry = entry.ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, format!("no value at {key} to shift"))
    })?;
    let split = shift::parse_split(&entry.value)
        .map_err(|e| ApiError::bad_request(format!("{key}: {e}")))?;
    if !split.iter().any(|(group, _)| *group == start.to) {
        let groups: Vec<&str> = split.iter().map(|(g, _)| g.as_str()).collect();
        return Err(ApiError::bad_request(format!(
            "{key} splits between {groups:?}: {} is not one of them",
            start.to
        )));
    }
    let percent = shift::percent_of(&split, &start.to);
    if percent >= 100 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("{} already has all the traffic of {key}", start.to),
        ));
    }
    let existing = context.registry.get(&layout::shift(&key)).await?.0;
    if let Some(existing) = &existing {
        if let Ok(record) = serde_json::from_value::<ShiftRecord>(existing.value.clone()) {
            if matches!(record.state, ShiftState::Shifting | ShiftState::Paused) {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "{key} is already shifting to {} ({}): undo it first",
                        record.to,
                        record.state.name()
                    ),
                ));
            }
        }
    }
    let now = unix_ms();
    let record = ShiftRecord {
        key: key.as_str().to_string(),
        to: start.to,
        step: start.step,
        every_seconds: start.every_seconds,
        original: entry.value.clone(),
        written: entry.value.clone(),
        previous: entry.value,
        percent,
        state: ShiftState::Shifting,
        restarts: 0,
        reason: None,
        // The first step comes after `every_seconds`, like the others.
        last_step_ms: now,
        started_ms: now,
        updated_ms: now,
        gate_baseline: None,
    };
    let value = serde_json::to_value(&record).map_err(|e| ApiError::internal(e.to_string()))?;
    let cas = existing.map_or(0, |e| e.version);
    match context
        .registry
        .put(&layout::shift(&key), value, Some(cas))
        .await
    {
        Ok(_) => Ok(warp::reply::json(&record).into_response()),
        Err(RegistryError::Store(lathe_store::StoreError::CasMismatch { .. })) => {
            Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("a shift of {key} started meanwhile"),
            ))
        }
        Err(e) => Err(e.into()),
    }
}

async fn run_command(
    context: &ApiContext,
    key: &KeyPath,
    command: &str,
) -> Result<Response, ApiError> {
    let (record, version) = read(context, key).await?;
    let (entry, _) = context.registry.get(key).await?;
    let (current, key_version) = match &entry {
        Some(entry) => (Some(&entry.value), entry.version),
        None => (None, 0),
    };
    let step = shift::command(&record, command, current, unix_ms())
        .map_err(|why| ApiError::new(StatusCode::CONFLICT, why))?;
    let value =
        serde_json::to_value(&step.record).map_err(|e| ApiError::internal(e.to_string()))?;
    context
        .registry
        .put(&layout::shift(key), value, Some(version))
        .await
        .map_err(|e| match e {
            RegistryError::Store(lathe_store::StoreError::CasMismatch { .. }) => ApiError::new(
                StatusCode::CONFLICT,
                format!("the shift of {key} changed meanwhile: retry"),
            ),
            other => other.into(),
        })?;
    if let Some(split) = step.write {
        context
            .registry
            .put(key, split, Some(key_version))
            .await
            .map_err(|e| match e {
                RegistryError::Store(lathe_store::StoreError::CasMismatch { .. }) => ApiError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "{key} changed meanwhile: the shift is {}; retry the undo",
                        step.record.state.name()
                    ),
                ),
                other => other.into(),
            })?;
    }
    Ok(warp::reply::json(&step.record).into_response())
}
