//! Tasks on one node: the `TaskSupervisor` turns this node's assignments into running instances.
//!
//! ```text
//! TaskSupervisor          watches /lathe/assignments/<node>; starts, stops, restarts instances
//! └── TaskActor × n       one instance: an HttpTask's server, or a plain Task's thread
//!
//! shared by the node's instances (NodeServices, behind every TaskContext):
//!   MetadataCache         a group's keys (/task/http/lb/*), mirrored per group
//!   EndpointCache         get_ref(group): /lathe/endpoints/<group>/*, filled on a miss, then followed
//!   Forwarder             forward(request, target): an instance on this node in-process
//!                         (LocalInstances), else a pooled keep-alive HTTP client
//!   StatusWriter          /lathe/instances and /lathe/endpoints records, in order, CAS-guarded
//! ```
//!
//! Callers start it with [`start_task_supervisor`] and use the [`TaskSupervisorHandle`].

pub mod changelog;
mod endpoints;
mod forward;
mod http_server;
pub(crate) use http_server::panic_message;
pub use http_server::{
    TaskHttpLimits, DEFAULT_TASK_HEADER_TIMEOUT, DEFAULT_TASK_MAX_BODY_BYTES,
    DEFAULT_TASK_MAX_CONNECTIONS,
};
mod instance;
mod local;
mod metadata;
mod metrics;
pub(crate) mod mirror;
mod plain;
mod policy;
mod reconcile;
mod report;
mod restarts;
mod runtime;
mod slots;
mod status;
mod supervisor;
mod topology;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use lathe::layout::InstanceStatus;
use lathe::Catalog;
use ractor::{Actor, ActorCell, ActorRef};

pub use changelog::{RestoreProgress, StateChangelog};
pub use endpoints::EndpointCache;
pub use forward::Forwarder;
pub use policy::{RestartPolicy, RestartStrategy};

use crate::registry::RegistryHandle;
use crate::tree::TreeScope;
use metrics::TaskMetrics;
use runtime::NodeServices;
use supervisor::{TaskSupervisor, TaskSupervisorArgs, TaskSupervisorMsg};

/// How long start-up spends removing what a previous run of the node left in the registry.
const CLEAR_PREVIOUS_RUN_DEADLINE: Duration = Duration::from_secs(3);
/// How long an instance failed past its restart intensity waits before it is retried with a fresh
/// budget (a redeploy that rewrites its assignment retries it at once).
pub const FAILED_RETRY: Duration = Duration::from_secs(60);

/// Who runs the tasks and where their HTTP servers listen.
#[derive(Debug, Clone)]
pub struct TaskSupervisorConfig {
    /// The node's name: its assignments are under `/lathe/assignments/<node>`.
    pub node: String,
    /// The IP HTTP instances bind (port 0), normally the node's `--http` IP.
    pub http_ip: IpAddr,
    /// The restart policy of groups without one of their own in the deployed topology.
    pub restart: RestartPolicy,
    /// How long a failed instance waits before it is retried ([`FAILED_RETRY`]).
    pub failed_retry: Duration,
    /// Where the supervisor reports its instances (`node/tasks` of the node's tree); a tree of
    /// its own when not given.
    pub tree: Option<TreeScope>,
    /// The node's fence (`MembershipHandle::fence`): while it holds a reason, every instance is
    /// stopped. Never fenced when not given.
    pub fence: Option<tokio::sync::watch::Receiver<Option<String>>>,
    /// Whether `forward` calls instances of this node in-process (the default) rather than over
    /// the network (`lathe-node --no-local-forward`).
    pub local_forward: bool,
    /// Where instances keep their persistent state (`ctx.state()`); none when not given.
    pub states: Option<Arc<lathe_store::state::LazyNodeStates>>,
    /// What flows travel through (Kafka); actor messages when not given.
    pub flow_transport: Option<Arc<dyn crate::flow::FlowTransport>>,
    /// Where state of groups with `state = { changelog = true }` is logged (Kafka).
    pub changelog: Option<Arc<dyn changelog::StateChangelog>>,
    /// Header timeout and body limit of HTTP instances' servers.
    pub http_limits: TaskHttpLimits,
}

impl TaskSupervisorConfig {
    pub fn new(node: impl Into<String>, http_ip: IpAddr) -> Self {
        TaskSupervisorConfig {
            node: node.into(),
            http_ip,
            restart: RestartPolicy::default(),
            failed_retry: FAILED_RETRY,
            tree: None,
            fence: None,
            local_forward: true,
            states: None,
            flow_transport: None,
            changelog: None,
            http_limits: TaskHttpLimits::default(),
        }
    }

    /// Instances keep their state (`ctx.state()`) in `states`.
    pub fn with_states(mut self, states: Arc<lathe_store::state::LazyNodeStates>) -> Self {
        self.states = Some(states);
        self
    }

    /// Stops every instance while `fence` holds a reason (see `MembershipHandle::fence`).
    pub fn with_fence(mut self, fence: tokio::sync::watch::Receiver<Option<String>>) -> Self {
        self.fence = Some(fence);
        self
    }

    /// Reports the instances under `scope` (normally `node/tasks` of the node's tree).
    pub fn with_tree(mut self, scope: TreeScope) -> Self {
        self.tree = Some(scope);
        self
    }
}

/// A handle on a node's task supervisor; it follows the supervisor across
/// [restarts](TaskSupervisorHandle::restart).
#[derive(Clone)]
pub struct TaskSupervisorHandle {
    actor: Arc<RwLock<ActorRef<TaskSupervisorMsg>>>,
    endpoints: Arc<EndpointCache>,
    /// What a restarted supervisor starts from (the node's services outlive it).
    args: Arc<TaskSupervisorArgs>,
}

/// Starts the node's task supervisor under `parent` (or unsupervised), after removing the
/// endpoints and instance records a previous run of this node left behind.
pub async fn start_task_supervisor(
    config: TaskSupervisorConfig,
    catalog: Catalog,
    registry: RegistryHandle,
    metrics: &prometheus::Registry,
    parent: Option<ActorCell>,
) -> anyhow::Result<TaskSupervisorHandle> {
    lathe::registry::check_node_name(&config.node).map_err(anyhow::Error::msg)?;
    let cleared = status::clear_previous_run(&registry, &config.node);
    if tokio::time::timeout(CLEAR_PREVIOUS_RUN_DEADLINE, cleared)
        .await
        .is_err()
    {
        tracing::warn!(node = %config.node, "records of a previous run not cleared in time");
    }
    let services = Arc::new(NodeServices::new(
        &config,
        registry,
        TaskMetrics::register(metrics)?,
    ));
    let endpoints = services.endpoints.clone();
    let tree = config
        .tree
        .unwrap_or_else(|| TreeScope::detached("node/tasks"));
    // The servers outlive the task supervisor's restarts: their keepers hang off its parent.
    services.caches.serve(&tree, parent.clone()).await?;
    services
        .flows
        .start(services.registry.clone(), &tree, parent.clone())
        .await?;
    let args = TaskSupervisorArgs {
        catalog: Arc::new(catalog),
        services,
        default_policy: config.restart,
        failed_retry: config.failed_retry,
        tree,
        fence: config.fence,
    };
    let actor = spawn_supervisor(args.clone(), parent).await?;
    Ok(TaskSupervisorHandle {
        actor: Arc::new(RwLock::new(actor)),
        endpoints,
        args: Arc::new(args),
    })
}

async fn spawn_supervisor(
    args: TaskSupervisorArgs,
    parent: Option<ActorCell>,
) -> anyhow::Result<ActorRef<TaskSupervisorMsg>> {
    let name = Some(format!("lathe.tasks.{}", args.services.node));
    let (actor, _) = match parent {
        Some(parent) => Actor::spawn_linked(name, TaskSupervisor, args, parent).await?,
        None => Actor::spawn(name, TaskSupervisor, args).await?,
    };
    Ok(actor)
}

impl TaskSupervisorHandle {
    /// Starts a new supervisor under `parent` after the previous one died (its instances died
    /// with it): it reads the node's assignments and the deployed topology again and starts every
    /// instance afresh. Policies set by hand are not carried over.
    pub async fn restart(&self, parent: ActorCell) -> anyhow::Result<()> {
        let actor = spawn_supervisor((*self.args).clone(), Some(parent)).await?;
        *self.actor.write().unwrap_or_else(|e| e.into_inner()) = actor;
        Ok(())
    }

    fn current(&self) -> ActorRef<TaskSupervisorMsg> {
        self.actor.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The instances assigned to this node and where each is in its life.
    pub async fn instances(&self) -> Vec<InstanceStatus> {
        ractor::call!(self.current(), TaskSupervisorMsg::Instances).unwrap_or_default()
    }

    /// The restart policy in force for `group` (its own from the deployed topology, or the
    /// default); `None` when the supervisor is gone.
    pub async fn restart_policy(&self, group: &str) -> Option<RestartPolicy> {
        ractor::call!(self.current(), TaskSupervisorMsg::Policy, group.to_string()).ok()
    }

    /// The node-local endpoint cache (the one behind `ctx.get_ref`).
    pub fn endpoints(&self) -> &Arc<EndpointCache> {
        &self.endpoints
    }

    /// Sets the restart policies by group name (other groups get the default); they apply at once.
    /// The supervisor also follows the deployed topology, whose policies replace these whenever
    /// a topology is deployed.
    pub fn set_restart_policies(&self, policies: HashMap<String, RestartPolicy>) {
        let _ = self
            .current()
            .cast(TaskSupervisorMsg::SetRestartPolicies(policies));
    }

    /// The supervisor actor as it is now.
    pub fn actor(&self) -> ActorCell {
        self.current().get_cell()
    }

    /// Drains every instance and stops the supervisor (waits at most `timeout`).
    pub async fn shutdown(&self, timeout: Duration) {
        let _ = self
            .current()
            .stop_and_wait(Some("node stopping".into()), Some(timeout))
            .await;
    }
}
