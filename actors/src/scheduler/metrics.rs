//! `lathe_scheduler_conflicts_total{kind}`: scheduler writes that lost a compare-and-set (the
//! next reconcile re-reads and re-plans).

use prometheus::{IntCounterVec, Opts, Registry};

use super::plan::WriteKind;

#[derive(Clone)]
pub struct SchedulerMetrics {
    conflicts: IntCounterVec,
}

impl SchedulerMetrics {
    /// Registers the scheduler's metrics once per node (the scheduler actor may restart; give
    /// each incarnation a clone).
    pub fn register(registry: &Registry) -> anyhow::Result<Self> {
        let conflicts = IntCounterVec::new(
            Opts::new(
                "lathe_scheduler_conflicts_total",
                "Scheduler writes that lost a compare-and-set, by what they wrote",
            ),
            &["kind"],
        )?;
        registry
            .register(Box::new(conflicts.clone()))
            .map_err(|err| {
                anyhow::anyhow!("failed to register lathe_scheduler_conflicts_total: {err}")
            })?;
        Ok(SchedulerMetrics { conflicts })
    }

    pub(crate) fn conflict(&self, kind: &WriteKind) {
        self.conflicts.with_label_values(&[kind.name()]).inc();
    }
}
