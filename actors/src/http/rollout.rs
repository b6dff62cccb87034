//! `/v1/rollouts`: the slow roll-outs of the deployed groups.
//!
//! - `GET /v1/rollouts`: every roll-out.
//! - `GET /v1/rollouts/{group}`: one; `{group}` is its name (`task.http.frontpage.v4-2-1`) or its
//!   path as `/v1/services` takes it (`task/http/frontpage/v4-2-1`, `http/frontpage/v4-2-1`).
//! - `POST /v1/rollouts/{group}/pause|resume|undo`: what `lathe rollout` sends; the scheduler
//!   leader acts on the stored record at its next step.
//!
//! Each roll-out is shown with its progress: how many of the group's instances are assigned the
//! new type, and how many of those run.

use std::collections::BTreeMap;

use lathe::layout::{self, Assignment, InstanceState, InstanceStatus, RolloutRecord};
use lathe::topology::GroupSpec;
use lathe::KeyPath;
use warp::http::{Method, StatusCode};
use warp::reply::Response;
use warp::Reply;

use super::kv::with_index;
use super::query;
use super::{ApiContext, ApiError};
use crate::registry::RegistryError;
use crate::scheduler::deploy;
use crate::scheduler::rollout;

const ROLLOUTS: &str = "/v1/rollouts";
/// A command whose compare-and-set loses to the scheduler is read and tried again this often.
const CAS_ATTEMPTS: usize = 5;

pub(crate) fn is_rollouts_path(path: &str) -> bool {
    path == ROLLOUTS || path.starts_with("/v1/rollouts/")
}

pub(crate) async fn handle(
    context: &ApiContext,
    method: &Method,
    path: &str,
    query: &str,
) -> Result<Response, ApiError> {
    query::parse(query, &[])?;
    let rest = path
        .strip_prefix(ROLLOUTS)
        .unwrap_or_default()
        .trim_matches('/');
    match (method, rest.is_empty()) {
        (&Method::GET, true) => all(context).await,
        (&Method::GET, false) => {
            let groups = deployed_groups(context).await?;
            let group = find_group(&groups, rest)?;
            one(context, group).await
        }
        (&Method::POST, false) => {
            let (target, command) = super::steering_command(path, rest, "group")?;
            let groups = deployed_groups(context).await?;
            let group = find_group(&groups, target)?;
            run_command(context, group, command).await
        }
        _ => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "method {method} is not allowed on {path} (GET {ROLLOUTS}[/{{group}}], \
                 POST {ROLLOUTS}/{{group}}/pause|resume|undo)"
            ),
        )),
    }
}

async fn deployed_groups(context: &ApiContext) -> Result<Vec<GroupSpec>, ApiError> {
    Ok(deploy::current(&context.registry)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map(|(record, _)| record.topology.groups)
        .unwrap_or_default())
}

/// The group named `target`: its dotted name, its path, or its path without the leading `task`.
fn find_group<'a>(groups: &'a [GroupSpec], target: &str) -> Result<&'a GroupSpec, ApiError> {
    let slashed = format!("/{}", target.trim_matches('/'));
    let with_task = format!("/task{slashed}");
    groups
        .iter()
        .find(|g| g.name == target)
        .or_else(|| groups.iter().find(|g| g.path.as_str() == slashed))
        .or_else(|| groups.iter().find(|g| g.path.as_str() == with_task))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no group {target:?} in the deployed topology"),
            )
        })
}

async fn all(context: &ApiContext) -> Result<Response, ApiError> {
    let prefix = key(layout::ROLLOUTS)?;
    let (entries, index) = context.registry.list(&prefix).await?;
    let records: Vec<RolloutRecord> = entries
        .into_iter()
        .filter_map(|e| serde_json::from_value(e.value).ok())
        .collect();
    let groups = deployed_groups(context).await?;
    let progress = Progress::read(context).await?;
    let views: Vec<serde_json::Value> = records
        .iter()
        .map(|record| {
            let tasks = groups
                .iter()
                .find(|g| g.name == record.group)
                .map_or(0, |g| g.tasks);
            progress.view(record, tasks)
        })
        .collect();
    Ok(with_index(warp::reply::json(&views).into_response(), index))
}

async fn one(context: &ApiContext, group: &GroupSpec) -> Result<Response, ApiError> {
    let (entry, index) = context.registry.get(&layout::rollout(&group.name)).await?;
    let record = entry
        .and_then(|e| serde_json::from_value::<RolloutRecord>(e.value).ok())
        .ok_or_else(|| no_rollout(group))?;
    let progress = Progress::read(context).await?;
    Ok(with_index(
        warp::reply::json(&progress.view(&record, group.tasks)).into_response(),
        index,
    ))
}

fn no_rollout(group: &GroupSpec) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "group {} has no roll-out: it has run {} since it was deployed",
            group.name, group.task_type
        ),
    )
}

async fn run_command(
    context: &ApiContext,
    group: &GroupSpec,
    command: &str,
) -> Result<Response, ApiError> {
    let path = layout::rollout(&group.name);
    for _ in 0..CAS_ATTEMPTS {
        let (entry, _) = context.registry.get(&path).await?;
        let Some(entry) = entry else {
            return Err(no_rollout(group));
        };
        let record: RolloutRecord = serde_json::from_value(entry.value)
            .map_err(|e| ApiError::internal(format!("unreadable roll-out at {path}: {e}")))?;
        let next = rollout::command(&record, command, rollout::unix_ms())
            .map_err(|why| ApiError::new(StatusCode::CONFLICT, why.to_string()))?;
        let value = serde_json::to_value(&next).map_err(|e| ApiError::internal(e.to_string()))?;
        match context
            .registry
            .put(&path, value, Some(entry.version))
            .await
        {
            Ok(_) => {
                tracing::info!(group = %group.name, command, state = next.state.name(),
                    "roll-out command");
                let progress = Progress::read(context).await?;
                return Ok(warp::reply::json(&progress.view(&next, group.tasks)).into_response());
            }
            Err(RegistryError::Store(lathe_store::StoreError::CasMismatch { .. })) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        format!(
            "the roll-out of {} kept changing while {command} was applied: retry",
            group.name
        ),
    ))
}

/// The assignments and instance records, for the progress of each roll-out.
struct Progress {
    assignments: Vec<Assignment>,
    statuses: BTreeMap<(String, u32), InstanceStatus>,
}

impl Progress {
    async fn read(context: &ApiContext) -> Result<Progress, ApiError> {
        let (assignments, _) = context.registry.list(&key(layout::ASSIGNMENTS)?).await?;
        let (statuses, _) = context.registry.list(&key(layout::INSTANCES)?).await?;
        Ok(Progress {
            assignments: assignments
                .into_iter()
                .filter_map(|e| serde_json::from_value(e.value).ok())
                .collect(),
            statuses: statuses
                .into_iter()
                .filter_map(|e| serde_json::from_value::<InstanceStatus>(e.value).ok())
                .map(|s| ((s.group.clone(), s.index), s))
                .collect(),
        })
    }

    fn view(&self, record: &RolloutRecord, tasks: u32) -> serde_json::Value {
        let on_new: Vec<u32> = self
            .assignments
            .iter()
            .filter(|a| a.group == record.group && a.task_type == record.to)
            .map(|a| a.index)
            .collect();
        let running = on_new
            .iter()
            .filter(|&&i| {
                self.statuses
                    .get(&(record.group.clone(), i))
                    .is_some_and(|s| s.task_type == record.to && s.status == InstanceState::Running)
            })
            .count();
        serde_json::json!({
            "group": record.group,
            "from": record.from,
            "to": record.to,
            "state": record.state,
            "batch": record.batch,
            "reason": record.reason,
            "tasks": tasks,
            "updated": on_new.len(),
            "updated_running": running,
            "batch_started_ms": record.batch_started_ms,
            "healthy_since_ms": record.healthy_since_ms,
            "started_ms": record.started_ms,
            "updated_ms": record.updated_ms,
        })
    }
}

fn key(path: &str) -> Result<KeyPath, ApiError> {
    KeyPath::parse(path).map_err(|e| ApiError::internal(e.to_string()))
}
