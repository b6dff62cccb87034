//! What the `TaskSupervisor` does when an instance crashes: back off and restart it (with the
//! instances its group's strategy restarts along), or fail it past its intensity and retry it
//! later. The rules are in `policy.rs`; this applies them to the slots.

use std::collections::HashMap;
use std::time::Instant;

use ractor::ActorRef;

use super::instance::TaskActorMsg;
use super::policy::{restarted_with, AfterCrash, RestartPolicy, RestartStrategy, RestartTracker};
use super::reconcile::InstanceKey;
use super::slots::{AfterStop, Phase, TaskSupervisorState};
use super::supervisor::TaskSupervisorMsg;
use crate::tree::ActorKind;

impl TaskSupervisorState {
    /// Schedules a restart after the back-off (and restarts the instances the group's strategy
    /// names), or fails the instance past its intensity and schedules its retry.
    pub(super) fn on_crash(
        &mut self,
        myself: &ActorRef<TaskSupervisorMsg>,
        key: &InstanceKey,
        reason: String,
    ) {
        let seen = Instant::now();
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        self.args
            .services
            .status
            .forget_endpoint(&key.group, key.index);
        self.incarnations += 1;
        let generation = self.incarnations;
        let strategy = slot.tracker.policy().strategy;
        match slot.tracker.on_crash(Instant::now()) {
            AfterCrash::RestartAfter(delay) => {
                tracing::warn!(instance = %key, %reason, ?delay, restarts = slot.restarts,
                    strategy = strategy.name(), "task instance crashed: restarting");
                slot.phase = Phase::BackingOff(generation);
                slot.reason = Some(reason);
                // A crash while restarting keeps the first: the time runs until it serves again.
                slot.crashed.get_or_insert(seen);
                let due = TaskSupervisorMsg::RestartDue {
                    key: key.clone(),
                    generation,
                };
                if delay.is_zero() {
                    // Not through a timer: tokio rounds a zero sleep up to its next 1 ms tick.
                    let _ = myself.cast(due);
                } else {
                    myself.send_after(delay, move || due);
                }
                self.write_status(key);
                self.restart_along(key, strategy);
            }
            AfterCrash::GiveUp => {
                let policy = slot.tracker.policy();
                let retry = self.args.failed_retry;
                let reason = format!(
                    "crashed more than {} times within {}s, not restarted (retried in {}s or on \
                     redeploy); last: {reason}",
                    policy.max_restarts,
                    policy.within_seconds,
                    retry.as_secs()
                );
                tracing::error!(instance = %key, %reason, "task instance failed");
                slot.phase = Phase::Failed(Some(generation));
                slot.reason = Some(reason);
                slot.crashed = None;
                let due = key.clone();
                myself.send_after(retry, move || TaskSupervisorMsg::RetryFailed {
                    key: due,
                    generation,
                });
                self.write_status(key);
            }
        }
    }

    /// Stops the instances of the crashed one's group that `strategy` restarts along; each
    /// starts again once it has stopped.
    fn restart_along(&mut self, crashed: &InstanceKey, strategy: RestartStrategy) {
        let indexes = self
            .slots
            .keys()
            .filter(|key| key.group == crashed.group)
            .map(|key| key.index);
        for index in restarted_with(strategy, crashed.index, indexes.collect::<Vec<_>>()) {
            let key = InstanceKey {
                group: crashed.group.clone(),
                index,
            };
            let Some(slot) = self.slots.get_mut(&key) else {
                continue;
            };
            if let Phase::Starting(actor, _) | Phase::Running(actor, _) = &slot.phase {
                tracing::info!(instance = %key, crashed = %crashed, strategy = strategy.name(),
                    "restarting task instance along with a crashed one");
                let _ = actor.cast(TaskActorMsg::Stop);
                slot.phase = Phase::Stopping(actor.clone(), AfterStop::Restart);
                slot.reason = Some(format!(
                    "restarted along with {crashed} ({})",
                    strategy.name()
                ));
                self.write_status(&key);
            }
        }
    }

    /// The retry of a failed instance is due: start it again with a fresh restart budget, unless
    /// something else happened to it meanwhile.
    pub(crate) async fn on_retry_failed(
        &mut self,
        myself: &ActorRef<TaskSupervisorMsg>,
        key: InstanceKey,
        generation: u64,
    ) {
        let policy = self.policy_of(&key.group);
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        if !matches!(slot.phase, Phase::Failed(Some(g)) if g == generation) {
            return;
        }
        tracing::info!(instance = %key, "retrying a failed task instance");
        slot.tracker = RestartTracker::new(policy);
        self.count_restart(&key);
        self.start(myself, &key).await;
    }

    /// One more restart of the instance: in its record and in `lathe_actor_restarts_total`.
    pub(super) fn count_restart(&mut self, key: &InstanceKey) {
        if let Some(slot) = self.slots.get_mut(key) {
            slot.restarts += 1;
            self.args.tree.count_restart(ActorKind::Task);
        }
    }

    /// New per-group policies (a deployed topology): they apply at once, keeping each
    /// instance's crashes counted so far.
    pub(crate) fn set_policies(&mut self, policies: HashMap<String, RestartPolicy>) {
        self.policies = policies;
        let groups: Vec<(InstanceKey, RestartPolicy)> = self
            .slots
            .keys()
            .map(|key| (key.clone(), self.policy_of(&key.group)))
            .collect();
        for (key, policy) in groups {
            if let Some(slot) = self.slots.get_mut(&key) {
                slot.tracker.set_policy(policy);
            }
        }
    }
}
