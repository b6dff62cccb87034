//! `/v1/shifts`: traffic shifts of weighted splits (see `scheduler::shift`).
//!
//! - `POST /v1/shifts` with `{"key": "/task/http/lb/backend_distribution", "to": "<group>",
//!   "step": 10, "every_seconds": 30}` starts one (`step` and `every_seconds` optional).
//! - `GET /v1/shifts` lists them; `GET /v1/shifts/{key path}` shows one.
//! - `POST /v1/shifts/{key path}/pause|resume|undo` steers one.
//!
//! This handler parses, calls [`crate::scheduler::shift`] and maps its [`ShiftError`] to a status.

use serde::Deserialize;
use warp::http::{Method, StatusCode};
use warp::reply::Response;
use warp::Reply;

use super::kv::with_index;
use super::query;
use super::{ApiContext, ApiError, BodyStream};
use crate::scheduler::shift::{self, ShiftError, StartShift};

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
        (&Method::GET, true) => {
            let (records, index) = shift::list(&context.registry).await?;
            Ok(with_index(
                warp::reply::json(&records).into_response(),
                index,
            ))
        }
        (&Method::POST, true) => {
            let body = body.read_limited(MAX_BODY).await?;
            let start: Start = serde_json::from_slice(&body)
                .map_err(|e| ApiError::bad_request(format!("bad shift: {e}")))?;
            let request = StartShift {
                key: shift::shift_key(&start.key)?,
                to: start.to,
                step: start.step,
                every_seconds: start.every_seconds,
            };
            let record = shift::start(&context.registry, &request).await?;
            Ok(warp::reply::json(&record).into_response())
        }
        (&Method::GET, false) => {
            let key = shift::shift_key(rest)?;
            let (record, _) = shift::read(&context.registry, &key).await?;
            Ok(warp::reply::json(&record).into_response())
        }
        (&Method::POST, false) => {
            let (target, command) = super::steering_command(path, rest, "key")?;
            let key = shift::shift_key(target)?;
            let record = shift::steer(&context.registry, &key, command).await?;
            Ok(warp::reply::json(&record).into_response())
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

impl From<ShiftError> for ApiError {
    fn from(error: ShiftError) -> Self {
        let status = match &error {
            ShiftError::Registry(registry) => return registry.clone().into(),
            ShiftError::BadKey { .. }
            | ShiftError::NotMetadata(_)
            | ShiftError::BadStep(_)
            | ShiftError::BadPeriod(_)
            | ShiftError::BadSplit { .. }
            | ShiftError::NotInSplit { .. } => StatusCode::BAD_REQUEST,
            ShiftError::NoValue(_) | ShiftError::NoShift(_) => StatusCode::NOT_FOUND,
            ShiftError::AlreadyAll { .. }
            | ShiftError::AlreadyShifting { .. }
            | ShiftError::StartedMeanwhile(_)
            | ShiftError::Refused(_)
            | ShiftError::ChangedMeanwhile(_)
            | ShiftError::SplitChangedMeanwhile { .. } => StatusCode::CONFLICT,
            ShiftError::Unreadable { .. } | ShiftError::Encode { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError::new(status, error.to_string())
    }
}
