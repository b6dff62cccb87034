//! Tasks on one node: the `TaskSupervisor` turns this node's assignments into running instances.
//!
//! ```text
//! TaskSupervisor          watches /lathe/assignments/<node>; starts, stops, restarts instances
//! └── TaskActor × n       one instance: an HttpTask's server, or a plain Task's thread
//!
//! shared by the node's instances (NodeServices, behind every TaskContext):
//!   MetadataCache         a group's keys (/task/http/lb/*), mirrored per group
//!   EndpointCache         get_ref(group): /lathe/endpoints/<group>/*, filled on a miss, then followed
//!   Forwarder             forward(request, target): pooled keep-alive HTTP client
//!   StatusWriter          /lathe/instances and /lathe/endpoints records, in order, CAS-guarded
//! ```
//!
//! Callers start it with [`start_task_supervisor`] and use the [`TaskSupervisorHandle`].

mod endpoints;
mod forward;
mod http_server;
mod instance;
mod metadata;
mod metrics;
mod mirror;
mod plain;
mod policy;
mod reconcile;
mod runtime;
mod slots;
mod status;
mod supervisor;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use lathe::layout::InstanceStatus;
use lathe::{Catalog, KeyPath};
use ractor::{Actor, ActorCell, ActorRef};

pub use endpoints::EndpointCache;
pub use forward::Forwarder;
pub use policy::RestartPolicy;

use crate::registry::RegistryHandle;
use metrics::TaskMetrics;
use runtime::NodeServices;
use supervisor::{TaskSupervisor, TaskSupervisorArgs, TaskSupervisorMsg};

/// How long start-up spends removing what a previous run of the node left in the registry.
const CLEAR_PREVIOUS_RUN_DEADLINE: Duration = Duration::from_secs(3);

/// Who runs the tasks and where their HTTP servers listen.
#[derive(Debug, Clone)]
pub struct TaskSupervisorConfig {
    /// The node's name: its assignments are under `/lathe/assignments/<node>`.
    pub node: String,
    /// The IP HTTP instances bind (port 0), normally the node's `--http` IP.
    pub http_ip: IpAddr,
    /// The restart policy of groups without one of their own.
    pub restart: RestartPolicy,
}

impl TaskSupervisorConfig {
    pub fn new(node: impl Into<String>, http_ip: IpAddr) -> Self {
        TaskSupervisorConfig {
            node: node.into(),
            http_ip,
            restart: RestartPolicy::default(),
        }
    }
}

/// A handle on a node's task supervisor.
#[derive(Clone)]
pub struct TaskSupervisorHandle {
    actor: ActorRef<TaskSupervisorMsg>,
    endpoints: Arc<EndpointCache>,
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
    let valid_name = KeyPath::parse(&config.node)
        .map(|path| path.depth() == 1)
        .unwrap_or(false);
    anyhow::ensure!(
        valid_name,
        "node name {:?} is not one registry segment",
        config.node
    );
    let cleared = status::clear_previous_run(&registry, &config.node);
    if tokio::time::timeout(CLEAR_PREVIOUS_RUN_DEADLINE, cleared)
        .await
        .is_err()
    {
        tracing::warn!(node = %config.node, "records of a previous run not cleared in time");
    }
    let services = Arc::new(NodeServices::new(
        config.node.clone(),
        config.http_ip,
        registry,
        TaskMetrics::register(metrics)?,
    ));
    let endpoints = services.endpoints.clone();
    let args = TaskSupervisorArgs {
        catalog: Arc::new(catalog),
        services,
        default_policy: config.restart,
    };
    let name = Some(format!("lathe.tasks.{}", config.node));
    let (actor, _) = match parent {
        Some(parent) => Actor::spawn_linked(name, TaskSupervisor, args, parent).await?,
        None => Actor::spawn(name, TaskSupervisor, args).await?,
    };
    Ok(TaskSupervisorHandle { actor, endpoints })
}

impl TaskSupervisorHandle {
    /// The instances assigned to this node and where each is in its life.
    pub async fn instances(&self) -> Vec<InstanceStatus> {
        ractor::call!(self.actor, TaskSupervisorMsg::Instances).unwrap_or_default()
    }

    /// The node-local endpoint cache (the one behind `ctx.get_ref`).
    pub fn endpoints(&self) -> &Arc<EndpointCache> {
        &self.endpoints
    }

    /// Sets per-group restart policies; they apply from each instance's next fresh start.
    pub fn set_restart_policies(&self, policies: HashMap<String, RestartPolicy>) {
        let _ = self
            .actor
            .cast(TaskSupervisorMsg::SetRestartPolicies(policies));
    }

    pub fn actor(&self) -> ActorCell {
        self.actor.get_cell()
    }

    /// Drains every instance and stops the supervisor (waits at most `timeout`).
    pub async fn shutdown(&self, timeout: Duration) {
        let _ = self
            .actor
            .stop_and_wait(Some("node stopping".into()), Some(timeout))
            .await;
    }
}
