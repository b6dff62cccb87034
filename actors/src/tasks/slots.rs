//! The `TaskSupervisor`'s table of instances: one slot per assigned instance, its phase, restart
//! bookkeeping and record, and the decisions that move it — start, stop, replace, forget. Crashes
//! and restarts are in `restarts.rs`, what is published about the slots in `report.rs`; the actor
//! (`supervisor.rs`) feeds it messages.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use lathe::layout::{InstanceState, InstanceStatus};
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef};

use super::instance::{TaskActor, TaskActorArgs, TaskActorMsg, FINISHED};
use super::metrics::InstanceCounts;
use super::mirror::AbortOnDrop;
use super::policy::{RestartPolicy, RestartTracker};
use super::reconcile::{plan, Current, Desired, InstanceKey, Step};
use super::supervisor::{TaskSupervisorArgs, TaskSupervisorMsg};
use crate::tree::ChildReport;

pub(crate) enum Phase {
    Starting(ActorRef<TaskActorMsg>, u64),
    Running(ActorRef<TaskActorMsg>, Option<String>),
    Stopping(ActorRef<TaskActorMsg>, AfterStop),
    BackingOff(u64),
    /// Beyond its intensity, or not runnable here; `Some(generation)` of the retry scheduled.
    Failed(Option<u64>),
    Finished,
}

/// What happens once a stopping instance has stopped.
pub(crate) enum AfterStop {
    /// It is not assigned here any more: forget it.
    Forget,
    /// Start this afresh: another task type, or a retry of a failed instance.
    Replace(Desired),
    /// Start it again with its bookkeeping: it restarts along with a crashed instance.
    Restart,
}

pub(crate) struct Slot {
    pub(super) desired: Desired,
    pub(super) phase: Phase,
    pub(super) restarts: u32,
    pub(super) tracker: RestartTracker,
    pub(super) reason: Option<String>,
    /// When the supervisor saw the instance crash, while it is being restarted
    /// (`lathe_task_restart_seconds` once it runs again).
    pub(super) crashed: Option<Instant>,
}

pub(crate) struct TaskSupervisorState {
    pub(crate) args: TaskSupervisorArgs,
    pub(super) policies: HashMap<String, RestartPolicy>,
    pub(super) slots: BTreeMap<InstanceKey, Slot>,
    actors: HashMap<ActorId, InstanceKey>,
    pub(super) incarnations: u64,
    pub(super) counts: InstanceCounts,
    /// What the tree was last told about the instances.
    pub(super) reported: Vec<ChildReport>,
    /// The node's assignments as last received, applied when a fence lifts.
    latest: Option<BTreeMap<InstanceKey, Desired>>,
    /// Why the node is fenced, while it is: nothing runs meanwhile.
    fenced: Option<String>,
    _watches: Vec<AbortOnDrop>,
}

impl TaskSupervisorState {
    pub(crate) fn new(args: TaskSupervisorArgs, watches: Vec<AbortOnDrop>) -> Self {
        TaskSupervisorState {
            args,
            policies: HashMap::new(),
            slots: BTreeMap::new(),
            actors: HashMap::new(),
            incarnations: 0,
            counts: InstanceCounts::new(),
            reported: Vec::new(),
            latest: None,
            fenced: None,
            _watches: watches,
        }
    }

    /// An instance reports that it serves.
    pub(crate) fn on_running(
        &mut self,
        key: InstanceKey,
        incarnation: u64,
        endpoint: Option<String>,
    ) {
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        if let Phase::Starting(actor, started) = &slot.phase {
            if *started == incarnation {
                slot.phase = Phase::Running(actor.clone(), endpoint);
                slot.reason = None;
                if let Some(crashed) = slot.crashed.take() {
                    let metrics = &self.args.services.metrics;
                    metrics.observe_restart(&key.group, crashed.elapsed());
                }
                self.write_status(&key);
            }
        }
    }

    /// A starting instance's progress note, shown as its record's `reason` until it runs.
    pub(crate) fn on_progress(&mut self, key: InstanceKey, incarnation: u64, note: String) {
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        if matches!(&slot.phase, Phase::Starting(_, started) if *started == incarnation) {
            slot.reason = Some(note);
            self.write_status(&key);
        }
    }

    /// A back-off ended: start the instance again, unless something else happened meanwhile.
    pub(crate) async fn on_restart_due(
        &mut self,
        myself: &ActorRef<TaskSupervisorMsg>,
        key: InstanceKey,
        generation: u64,
    ) {
        let due = self
            .slots
            .get_mut(&key)
            .filter(|slot| matches!(slot.phase, Phase::BackingOff(g) if g == generation));
        if due.is_some() {
            self.count_restart(&key);
            self.start(myself, &key).await;
        }
    }

    pub(crate) fn statuses(&self) -> Vec<InstanceStatus> {
        self.slots.keys().map(|key| self.status(key)).collect()
    }

    /// Asks every live instance to stop; returns them, to wait for.
    pub(crate) fn stop_all(&self) -> Vec<ActorCell> {
        let mut draining = Vec::new();
        for slot in self.slots.values() {
            if let Phase::Starting(actor, _)
            | Phase::Running(actor, _)
            | Phase::Stopping(actor, _) = &slot.phase
            {
                let _ = actor.cast(TaskActorMsg::Stop);
                draining.push(actor.get_cell());
            }
        }
        draining
    }

    /// After the node's drain: what ran is recorded `stopped`, what was going away is forgotten,
    /// and the instance metric is cleared.
    pub(crate) fn mark_node_stopped(&mut self) {
        let keys: Vec<InstanceKey> = self.slots.keys().cloned().collect();
        for key in keys {
            let Some(slot) = self.slots.get_mut(&key) else {
                continue;
            };
            match slot.phase {
                Phase::Stopping(_, AfterStop::Forget) => self.forget(&key),
                Phase::Failed(_) | Phase::Finished => {}
                _ => {
                    slot.phase = Phase::Finished;
                    slot.reason = Some("node stopped".into());
                    self.write_status(&key);
                }
            }
        }
        self.clear_counts();
    }

    /// The node's assignments changed: run them, unless the node is fenced.
    pub(crate) async fn on_assignments(
        &mut self,
        myself: &ActorRef<TaskSupervisorMsg>,
        desired: BTreeMap<InstanceKey, Desired>,
    ) {
        self.latest = Some(desired.clone());
        if self.fenced.is_none() {
            self.reconcile(myself, desired).await;
        }
    }

    /// The node was fenced (`Some`): every instance stops at once, since the scheduler is placing
    /// them elsewhere; or the fence lifted (`None`): run the assignments as last received (the
    /// registry mirror brings any newer ones as they come).
    pub(crate) async fn set_fence(
        &mut self,
        myself: &ActorRef<TaskSupervisorMsg>,
        fence: Option<String>,
    ) {
        match (&self.fenced, fence) {
            (None, Some(reason)) => {
                let running = self.slots.len();
                tracing::error!(%reason, instances = running,
                    "node fenced: stopping every task instance");
                self.fenced = Some(reason);
                self.reconcile(myself, BTreeMap::new()).await;
            }
            (Some(_), None) => {
                tracing::info!("fence lifted: running this node's assignments again");
                self.fenced = None;
                if let Some(desired) = self.latest.clone() {
                    self.reconcile(myself, desired).await;
                }
            }
            _ => {}
        }
    }

    async fn reconcile(
        &mut self,
        myself: &ActorRef<TaskSupervisorMsg>,
        desired: BTreeMap<InstanceKey, Desired>,
    ) {
        let current: BTreeMap<InstanceKey, Current<'_>> = self
            .slots
            .iter()
            .filter_map(|(key, slot)| {
                let (desired, settled) = match &slot.phase {
                    // An instance that is going away counts as absent, unless it is replaced.
                    Phase::Stopping(_, AfterStop::Forget) => return None,
                    Phase::Stopping(_, AfterStop::Replace(then)) => (then, false),
                    Phase::Failed(_) | Phase::Finished => (&slot.desired, true),
                    _ => (&slot.desired, false),
                };
                let current = Current {
                    task_type: &desired.assignment.task_type,
                    version: desired.version,
                    settled,
                };
                Some((key.clone(), current))
            })
            .collect();
        for step in plan(&desired, &current) {
            match step {
                Step::Start(wanted) | Step::Replace(wanted) => {
                    let key = InstanceKey::of(&wanted.assignment);
                    self.want(myself, key, Some(wanted)).await;
                }
                Step::Stop(key) => self.want(myself, key, None).await,
            }
        }
    }

    /// Moves one instance towards `wanted` (`None`: not assigned here any more).
    async fn want(
        &mut self,
        myself: &ActorRef<TaskSupervisorMsg>,
        key: InstanceKey,
        wanted: Option<Desired>,
    ) {
        let Some(slot) = self.slots.get_mut(&key) else {
            if let Some(wanted) = wanted {
                let slot = self.new_slot(wanted);
                self.slots.insert(key.clone(), slot);
                self.start(myself, &key).await;
            }
            return;
        };
        match (&mut slot.phase, wanted) {
            (Phase::Starting(actor, _) | Phase::Running(actor, _), then) => {
                tracing::info!(instance = %key, replaced = then.is_some(),
                    "stopping task instance");
                let _ = actor.cast(TaskActorMsg::Stop);
                slot.phase = Phase::Stopping(actor.clone(), AfterStop::from(then));
            }
            (Phase::Stopping(_, after), wanted) => *after = AfterStop::from(wanted),
            (_, Some(wanted)) => self.restart_fresh(myself, key, wanted).await,
            (_, None) => self.forget(&key),
        }
    }

    /// Starts the instance afresh: new restart bookkeeping, new task type or assignment version.
    async fn restart_fresh(
        &mut self,
        myself: &ActorRef<TaskSupervisorMsg>,
        key: InstanceKey,
        wanted: Desired,
    ) {
        let slot = self.new_slot(wanted);
        self.slots.insert(key.clone(), slot);
        self.start(myself, &key).await;
    }

    fn new_slot(&self, desired: Desired) -> Slot {
        let policy = self.policy_of(&desired.assignment.group);
        Slot {
            desired,
            phase: Phase::Finished,
            restarts: 0,
            tracker: RestartTracker::new(policy),
            reason: None,
            crashed: None,
        }
    }

    /// The restart policy of `group`: its own from the topology, else the node's default.
    pub(crate) fn policy_of(&self, group: &str) -> RestartPolicy {
        self.policies
            .get(group)
            .unwrap_or(&self.args.default_policy)
            .clone()
    }

    /// Spawns the slot's TaskActor (or fails the slot when its task type is not in the catalog).
    pub(super) async fn start(&mut self, myself: &ActorRef<TaskSupervisorMsg>, key: &InstanceKey) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let assignment = slot.desired.assignment.clone();
        let Some(descriptor) = self.args.catalog.get(&assignment.task_type).cloned() else {
            let reason = format!(
                "task type {} not in this node's catalog",
                assignment.task_type
            );
            tracing::warn!(instance = %key, %reason, "cannot run task instance");
            slot.phase = Phase::Failed(None);
            slot.reason = Some(reason);
            self.write_status(key);
            return;
        };
        self.incarnations += 1;
        let incarnation = self.incarnations;
        let args = TaskActorArgs {
            assignment,
            descriptor,
            services: self.args.services.clone(),
            supervisor: myself.clone(),
            incarnation,
        };
        match Actor::spawn_linked(None, TaskActor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                self.actors.insert(actor.get_id(), key.clone());
                slot.phase = Phase::Starting(actor, incarnation);
                self.write_status(key);
            }
            Err(error) => {
                let reason = format!("cannot start: {error}");
                self.on_crash(myself, key, reason);
            }
        }
    }

    /// A TaskActor ended: `Ok(reason)` when it stopped, `Err(error)` when it failed.
    pub(crate) async fn on_exit(
        &mut self,
        myself: &ActorRef<TaskSupervisorMsg>,
        actor: ActorId,
        exit: Result<Option<String>, ActorProcessingErr>,
    ) {
        let Some(key) = self.actors.remove(&actor) else {
            return;
        };
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        match (&mut slot.phase, exit) {
            (Phase::Stopping(_, after), _) => match std::mem::replace(after, AfterStop::Forget) {
                AfterStop::Replace(wanted) => self.restart_fresh(myself, key, wanted).await,
                AfterStop::Forget => self.forget(&key),
                AfterStop::Restart => {
                    self.count_restart(&key);
                    self.start(myself, &key).await;
                }
            },
            (_, Ok(Some(reason))) if reason == FINISHED => {
                tracing::info!(instance = %key, "task instance finished: its run returned");
                slot.phase = Phase::Finished;
                slot.reason = Some("run returned before the instance was stopped".into());
                self.write_status(&key);
            }
            (_, exit) => {
                let reason = match exit {
                    Err(error) => error.to_string(),
                    Ok(reason) => format!(
                        "stopped unexpectedly: {}",
                        reason.unwrap_or_else(|| "no reason given".into())
                    ),
                };
                self.on_crash(myself, &key, reason);
            }
        }
    }

    /// Drops an instance that is no longer assigned here, and its records.
    pub(super) fn forget(&mut self, key: &InstanceKey) {
        self.slots.remove(key);
        let status = &self.args.services.status;
        status.forget_endpoint(&key.group, key.index);
        status.forget_instance(&key.group, key.index);
        tracing::info!(instance = %key, "task instance removed");
    }

    fn status(&self, key: &InstanceKey) -> InstanceStatus {
        let slot = &self.slots[key];
        let (status, endpoint) = match &slot.phase {
            Phase::Starting(..) => (InstanceState::Starting, None),
            Phase::Running(_, endpoint) => (InstanceState::Running, endpoint.clone()),
            Phase::Stopping(_, AfterStop::Restart) => (InstanceState::Restarting, None),
            Phase::Stopping(..) => (InstanceState::Running, None),
            Phase::BackingOff(_) => (InstanceState::Restarting, None),
            Phase::Failed(_) => (InstanceState::Failed, None),
            Phase::Finished => (InstanceState::Stopped, None),
        };
        let assignment = &slot.desired.assignment;
        InstanceStatus {
            group: key.group.clone(),
            index: key.index,
            node: Some(self.args.services.node.clone()),
            task_type: assignment.task_type.clone(),
            status,
            endpoint,
            restarts: slot.restarts,
            reason: slot.reason.clone(),
        }
    }

    pub(super) fn write_status(&self, key: &InstanceKey) {
        if self.slots.contains_key(key) {
            self.args.services.status.instance(&self.status(key));
        }
    }
}

impl From<Option<Desired>> for AfterStop {
    fn from(wanted: Option<Desired>) -> Self {
        wanted.map_or(AfterStop::Forget, AfterStop::Replace)
    }
}
