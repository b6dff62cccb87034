//! What the `TaskSupervisor` publishes about its instances after every message: the
//! `lathe_task_instances` gauge and its children in the node's supervision tree
//! (`node/tasks/<group>/<index>`).

use super::metrics::InstanceCounts;
use super::slots::{AfterStop, Phase, Slot, TaskSupervisorState};
use crate::tree::{ActorKind, ActorStatus, ChildReport};

impl TaskSupervisorState {
    /// Brings the metric and the tree up to date (each only when something changed).
    pub(crate) fn publish(&mut self) {
        self.publish_counts();
        self.publish_tree();
    }

    fn publish_counts(&mut self) {
        let mut counts = InstanceCounts::new();
        for slot in self.slots.values() {
            let assignment = &slot.desired.assignment;
            let key = (
                assignment.group.clone(),
                assignment.task_type.version.clone(),
                phase_label(&slot.phase),
            );
            *counts.entry(key).or_insert(0) += 1;
        }
        if counts != self.counts {
            self.args
                .services
                .metrics
                .set_instances(&self.counts, &counts);
            self.counts = counts;
        }
    }

    /// Clears `lathe_task_instances` (the node stopped).
    pub(super) fn clear_counts(&mut self) {
        let previous = std::mem::take(&mut self.counts);
        self.args
            .services
            .metrics
            .set_instances(&previous, &InstanceCounts::new());
    }

    fn publish_tree(&mut self) {
        let reports: Vec<ChildReport> = self
            .slots
            .iter()
            .map(|(key, slot)| child_report(key.to_string(), slot))
            .collect();
        if reports != self.reported {
            self.args.tree.sync(ActorKind::Task, &reports);
            self.reported = reports;
        }
    }
}

fn phase_label(phase: &Phase) -> &'static str {
    match phase {
        Phase::Starting(..) => "starting",
        Phase::Running(..) => "running",
        Phase::Stopping(_, AfterStop::Restart) => "restarting",
        Phase::Stopping(..) => "stopping",
        Phase::BackingOff(_) => "restarting",
        Phase::Failed(_) => "failed",
        Phase::Finished => "stopped",
    }
}

fn child_report(name: String, slot: &Slot) -> ChildReport {
    let (status, cell) = match &slot.phase {
        Phase::Starting(actor, _) | Phase::Running(actor, _) => {
            (ActorStatus::Running, Some(actor.get_cell()))
        }
        Phase::Stopping(actor, AfterStop::Restart) => {
            (ActorStatus::Restarting, Some(actor.get_cell()))
        }
        Phase::Stopping(actor, _) => (ActorStatus::Running, Some(actor.get_cell())),
        Phase::BackingOff(_) => (ActorStatus::Restarting, None),
        Phase::Failed(_) => (ActorStatus::Failed, None),
        Phase::Finished => (ActorStatus::Stopped, None),
    };
    let reason = match status {
        ActorStatus::Running => None,
        _ => slot.reason.clone(),
    };
    ChildReport {
        name,
        status,
        restarts: u64::from(slot.restarts),
        reason,
        cell,
    }
}
