//! Writes a [`Plan`] in order. The one place a lost compare-and-set is handled: it is counted
//! (`lathe_scheduler_conflicts_total` when metrics are given) and means "re-read and re-plan next
//! round"; a write the rest of the plan depends on stops the apply there
//! ([`WriteKind::stops_on_conflict`]). Any other registry failure fails the reconcile.

use lathe_store::StoreError;

use super::error::SchedulerError;
use super::metrics::SchedulerMetrics;
use super::plan::{Change, Plan, ReconcileReport, Write, WriteKind};
use crate::registry::{RegistryError, RegistryHandle};

/// Applies `plan`; returns its report with the conflicts met.
pub async fn apply(
    plan: Plan,
    registry: &RegistryHandle,
    metrics: Option<&SchedulerMetrics>,
) -> Result<ReconcileReport, SchedulerError> {
    let mut report = plan.report;
    for write in &plan.writes {
        let result = match &write.change {
            Change::Put(value) => registry
                .put(&write.key, value.clone(), write.expect)
                .await
                .map(drop),
            Change::Delete => registry
                .delete(&write.key, write.expect, false)
                .await
                .map(drop),
        };
        match result {
            Ok(()) => written(write),
            Err(RegistryError::Store(StoreError::CasMismatch { .. })) => {
                report.conflicts += 1;
                if let Some(metrics) = metrics {
                    metrics.conflict(&write.kind);
                }
                tracing::debug!(
                    key = %write.key,
                    kind = write.kind.name(),
                    "lost a compare-and-set: re-planning next round"
                );
                if write.kind.stops_on_conflict() {
                    report.stopped = true;
                    break;
                }
            }
            Err(source) => {
                return Err(SchedulerError::Write {
                    key: write.key.to_string(),
                    source,
                })
            }
        }
    }
    Ok(report)
}

/// Logs what a write did, where people want to know.
fn written(write: &Write) {
    match &write.kind {
        WriteKind::Rollout(Some(record)) => tracing::info!(
            group = %record.group,
            from = %record.from,
            to = %record.to,
            state = record.state.name(),
            batch = ?record.batch,
            reason = record.reason.as_deref().unwrap_or(""),
            "roll-out"
        ),
        WriteKind::Split(record) => {
            if let Change::Put(split) = &write.change {
                tracing::info!(
                    key = %record.key,
                    to = %record.to,
                    percent = record.percent,
                    state = record.state.name(),
                    reason = record.reason.as_deref().unwrap_or(""),
                    %split,
                    "traffic shift"
                );
            }
        }
        WriteKind::DeadEndpoint(endpoint) => tracing::info!(
            group = %endpoint.group,
            index = endpoint.index,
            node = %endpoint.node,
            "endpoint of a dead node withdrawn"
        ),
        _ => {}
    }
}
