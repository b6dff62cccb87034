//! `TaskSupervisor`: runs this node's share of the topology.
//!
//! ```text
//! TaskSupervisor         one per node, linked to the NodeSupervisor (tree path node/tasks)
//! │   mirror of /lathe/assignments/<node> → Assignments → plan → start / stop / replace
//! │   mirror of /lathe/topology → each group's restart policy (strategy, intensity, back-off)
//! │   crash → restart after the back-off, with the group's strategy; `failed` past the
//! │   intensity, retried after FAILED_RETRY or when the assignment is rewritten (policy.rs)
//! └── TaskActor × n      one per assigned instance (instance.rs): node/tasks/<group>/<i>
//! ```
//!
//! It writes each instance's record (`/lathe/instances/<group>/<i>`: starting, running,
//! restarting, failed, with its restarts and the reason), keeps `lathe_task_instances` and its
//! part of the supervision tree current (`report.rs`). An instance whose task type is not in the
//! node's catalog is `failed` with that reason. Stopping the supervisor drains every instance
//! (endpoints withdrawn, requests finished, `stop()` called) and marks them stopped.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use lathe::layout::{self, InstanceStatus};
use lathe::Catalog;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use ractor_cluster::RactorMessage;
use tokio::sync::watch;

use super::mirror::{spawn_mirror, AbortOnDrop};
use super::policy::RestartPolicy;
use super::reconcile::{desired_assignments, Desired, InstanceKey};
use super::runtime::NodeServices;
use super::slots::TaskSupervisorState;
use super::topology::follow_topology_policies;
use crate::follow::follow;
use crate::tree::{ActorKind, TreeScope};

/// How long stopping the supervisor waits for its instances to drain.
const DRAIN_DEADLINE: Duration = Duration::from_secs(3);
/// How long it then waits for the last instance records to be written.
const STATUS_FLUSH_DEADLINE: Duration = Duration::from_secs(1);

#[derive(RactorMessage)]
pub(crate) enum TaskSupervisorMsg {
    /// Every assignment of this node, as of the latest registry change.
    Assignments(BTreeMap<InstanceKey, Desired>),
    /// An instance serves (sent by its TaskActor).
    Running {
        group: String,
        index: u32,
        incarnation: u64,
        endpoint: Option<String>,
    },
    /// A starting instance says how far it got (its record's `reason`), e.g. restoring state.
    Progress {
        group: String,
        index: u32,
        incarnation: u64,
        note: String,
    },
    /// A back-off ended: start the instance again.
    RestartDue {
        key: InstanceKey,
        generation: u64,
    },
    /// A failed instance's retry is due.
    RetryFailed {
        key: InstanceKey,
        generation: u64,
    },
    /// Restart policies by group name (from the topology); other groups keep the default.
    SetRestartPolicies(HashMap<String, RestartPolicy>),
    Instances(RpcReplyPort<Vec<InstanceStatus>>),
    /// The restart policy in force for a group.
    Policy(String, RpcReplyPort<RestartPolicy>),
    /// The node was fenced (`Some(reason)`) or is no longer (`None`): see
    /// `MembershipHandle::fence`.
    Fence(Option<String>),
}

pub(crate) struct TaskSupervisor;

#[derive(Clone)]
pub(crate) struct TaskSupervisorArgs {
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) services: Arc<NodeServices>,
    pub(crate) default_policy: RestartPolicy,
    /// How long a failed instance waits before it is retried.
    pub(crate) failed_retry: Duration,
    /// Where the instances appear in the node's supervision tree (`node/tasks`).
    pub(crate) tree: TreeScope,
    /// The node's fence: while it holds a reason, no instance runs here.
    pub(crate) fence: Option<watch::Receiver<Option<String>>>,
}

impl Actor for TaskSupervisor {
    type Msg = TaskSupervisorMsg;
    type State = TaskSupervisorState;
    type Arguments = TaskSupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<TaskSupervisorMsg>,
        args: TaskSupervisorArgs,
    ) -> Result<TaskSupervisorState, ActorProcessingErr> {
        let services = &args.services;
        let node = services.node.clone();
        // A restarted supervisor starts from nothing: what its predecessor published goes.
        services.metrics.clear_instances();
        args.tree.sync(ActorKind::Task, &[]);
        // Policies first: a group's policy is then usually known before its instances start.
        let mut watches: Vec<_> =
            follow_topology_policies(services.registry.clone(), myself.clone())
                .into_iter()
                .collect();
        let supervisor = myself.clone();
        watches.push(spawn_mirror(
            services.registry.clone(),
            layout::node_assignments(&node),
            move |entries| {
                let desired = desired_assignments(&node, entries);
                supervisor
                    .cast(TaskSupervisorMsg::Assignments(desired))
                    .is_ok()
            },
        ));
        if let Some(fence) = args.fence.clone() {
            // Its state now, then every change.
            let following = follow(fence, myself.clone(), TaskSupervisorMsg::Fence);
            watches.push(AbortOnDrop(following));
        }
        tracing::info!(node = %services.node, catalog = args.catalog.len(),
            "task supervisor watching its assignments");
        Ok(TaskSupervisorState::new(args, watches))
    }

    async fn handle(
        &self,
        myself: ActorRef<TaskSupervisorMsg>,
        message: TaskSupervisorMsg,
        state: &mut TaskSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            TaskSupervisorMsg::Assignments(desired) => state.on_assignments(&myself, desired).await,
            TaskSupervisorMsg::Running {
                group,
                index,
                incarnation,
                endpoint,
            } => state.on_running(InstanceKey { group, index }, incarnation, endpoint),
            TaskSupervisorMsg::Progress {
                group,
                index,
                incarnation,
                note,
            } => state.on_progress(InstanceKey { group, index }, incarnation, note),
            TaskSupervisorMsg::RestartDue { key, generation } => {
                state.on_restart_due(&myself, key, generation).await
            }
            TaskSupervisorMsg::RetryFailed { key, generation } => {
                state.on_retry_failed(&myself, key, generation).await
            }
            TaskSupervisorMsg::SetRestartPolicies(policies) => state.set_policies(policies),
            TaskSupervisorMsg::Instances(reply) => {
                let _ = reply.send(state.statuses());
            }
            TaskSupervisorMsg::Policy(group, reply) => {
                let _ = reply.send(state.policy_of(&group));
            }
            TaskSupervisorMsg::Fence(fence) => state.set_fence(&myself, fence).await,
        }
        state.publish();
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<TaskSupervisorMsg>,
        event: SupervisionEvent,
        state: &mut TaskSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, exit) = match event {
            SupervisionEvent::ActorFailed(cell, error) => (cell, Err(error)),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (cell, Ok(reason)),
            _ => return Ok(()),
        };
        state.on_exit(&myself, cell.get_id(), exit).await;
        state.publish();
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<TaskSupervisorMsg>,
        state: &mut TaskSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let draining = state.stop_all();
        tracing::info!(
            instances = draining.len(),
            "task supervisor stopping: draining instances"
        );
        let deadline = tokio::time::Instant::now() + DRAIN_DEADLINE;
        for actor in draining {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let _ = actor.wait(Some(left)).await;
        }
        state.mark_node_stopped();
        let flush = state.args.services.status.flush();
        let _ = tokio::time::timeout(STATUS_FLUSH_DEADLINE, flush).await;
        Ok(())
    }
}
