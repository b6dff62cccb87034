//! `NodeSupervisor`: the root of a node's supervision tree, one per `lathe-node` process:
//!
//! ```text
//! NodeSupervisor             node                     restarts scheduler, resources, tasks; else fails
//! ├── Membership             node/membership          NodeServer, heartbeats, ZooKeeper
//! ├── RegistrySupervisor     node/registry            rest-for-one from the feed
//! │   ├── RegistryFeed       node/registry/feed
//! │   └── RegistryShard × k  node/registry/shard-N    one-for-one, re-attaches to the feed
//! ├── Scheduler              node/scheduler           places instances (leader only)
//! ├── ResourceManagerActor   node/resources           asks YARN for nodes (leader only; --yarn-rm)
//! ├── TaskSupervisor         node/tasks               runs this node's assignments
//! │   └── TaskActor × n      node/tasks/<group>/<i>   the group's topology `restart` policy
//! └── HTTP server            (not an actor)           REST API, /v1/tree, /metrics
//! ```
//!
//! The second column is each actor's path in the node's supervision tree (`GET /v1/tree`, the
//! `lathe_actor_*` metrics, `POST /v1/actors/kill` with `--enable-chaos`); the actors live in
//! `lathe-actors`, the tree and the restart policy in `lathe-supervisors`.
//!
//! It starts the subsystems in dependency order (membership, registry, scheduler, the resource
//! manager when the node has a backend, tasks, HTTP) and registers each in the node's
//! [`ActorTree`] (`GET /v1/tree`, `lathe_actor_*` metrics, failure drills). The scheduler, the
//! resource manager and the task supervisor rebuild everything they know from the registry: when
//! one dies it is restarted, one-for-one (the task supervisor's instances died with
//! it and start afresh), at most [`MAX_RESTARTS`] times within [`RESTART_WINDOW`]. Any other
//! subsystem dying — or a subsystem's own supervisor giving up — fails the node: a node with a
//! broken registry must not keep answering. Stopping it drains the node: task instances withdraw
//! their endpoints and finish their requests, HTTP stops accepting, the node leaves the cluster,
//! the registry stops.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lathe_actors::acl::writer::WriteGate;
use lathe_actors::acl::Acl;
use lathe_actors::http::{serve_tls, ApiContext, RestTls};
use lathe_actors::membership::{start_membership, MembershipConfig, MembershipHandle};
use lathe_actors::registry::{start_registry_in, RegistryConfig, RegistryHandle};
use lathe_actors::resources::{
    ResourceManagerActor, ResourceManagerArgs, ResourceManagerMsg, ResourceManagerSpec,
};
use lathe_actors::scheduler::actor::{Scheduler, SchedulerArgs, SchedulerMsg};
use lathe_actors::scheduler::demand::{demand_channel, DemandSender};
use lathe_actors::scheduler::traffic::TrafficSource;
use lathe_actors::scheduler::{SchedulerMetrics, SchedulerSettings};
use lathe_actors::tasks::{start_task_supervisor, TaskSupervisorConfig, TaskSupervisorHandle};
use lathe_actors::tree::{ActorKind, ActorTree, TreeMetrics, TreeScope};
use lathe_store::Store;
use lathe_supervisors::policy::{RestartBudget, RestartLimits};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use ractor_cluster::RactorMessage;
use tokio::sync::watch;

use crate::startup::{deploy_on_start, wait_for_join, Members};

/// How long a draining node waits for open HTTP requests (watch streams never end by themselves).
const HTTP_DRAIN: Duration = Duration::from_secs(3);
/// How long a draining node waits for its task instances to finish their requests and stop.
const TASK_DRAIN: Duration = Duration::from_secs(5);
/// More restarts of the scheduler and the task supervisor than this within the window fail the
/// node.
pub(crate) const MAX_RESTARTS: u32 = 10;
pub(crate) const RESTART_WINDOW: Duration = Duration::from_secs(60);

#[derive(RactorMessage)]
pub(crate) enum NodeSupervisorMsg {}

pub(crate) struct NodeSupervisor;

pub(crate) struct NodeSupervisorArgs {
    pub(crate) name: String,
    /// The node's supervision tree (made before this supervisor: the store's actors are in it).
    pub(crate) tree: ActorTree,
    /// The keeper of the embedded registry's server or follower, if this node has one.
    pub(crate) store_keeper: Option<ActorCell>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) registry: RegistryConfig,
    pub(crate) membership: MembershipConfig,
    pub(crate) http_listener: tokio::net::TcpListener,
    pub(crate) max_value_bytes: usize,
    /// Timeouts and caps of the REST port.
    pub(crate) api_limits: lathe_actors::http::ApiLimits,
    /// TLS on the REST port (`--tls-cert`), `None` for plain HTTP.
    pub(crate) rest_tls: Option<RestTls>,
    /// Header timeout and body limit of task instances' HTTP servers.
    pub(crate) task_http_limits: lathe_actors::tasks::TaskHttpLimits,
    pub(crate) metrics: prometheus::Registry,
    /// The task types this node's binary can run.
    pub(crate) catalog: lathe::Catalog,
    /// A validated topology to deploy once the registry is up: (file name, TOML).
    pub(crate) topology: Option<(String, String)>,
    /// Accept failure drills (`POST /v1/actors/kill`, `--enable-chaos`).
    pub(crate) enable_chaos: bool,
    /// Default-deny REST access by token (`--acl`).
    pub(crate) acl: bool,
    /// Where the embedded registry's store server (founding node) checks forwarded writes.
    pub(crate) write_gate: WriteGate,
    /// Call instances of this node in-process from `forward` (not `--no-local-forward`).
    pub(crate) local_forward: bool,
    /// A resource manager backend (`--yarn-rm`): asks for more nodes when the cluster is full.
    pub(crate) resources: Option<ResourceManagerSpec>,
    /// Where task instances keep their state (`ctx.state()`), under `--data-dir`.
    pub(crate) states: Option<Arc<lathe_store::state::LazyNodeStates>>,
    /// What flows travel through (`--kafka`); actor messages when not given.
    pub(crate) flow_transport: Option<Arc<dyn lathe_actors::flow::FlowTransport>>,
    /// Where state of groups with `state = { changelog = true }` is logged (`--kafka`).
    pub(crate) changelog: Option<Arc<dyn lathe_actors::tasks::StateChangelog>>,
    /// Where metric gates read response counters (`--prometheus-url`, else the nodes).
    pub(crate) traffic_source: TrafficSource,
}

pub(crate) struct NodeSupervisorState {
    registry: RegistryHandle,
    membership: MembershipHandle,
    tasks: TaskSupervisorHandle,
    tree: TreeScope,
    scheduler: ActorRef<SchedulerMsg>,
    /// Where schedulers publish their capacity demand, when a resource manager listens.
    demand: Option<DemandSender>,
    /// Where the scheduler's metric gates read response counters.
    traffic_source: TrafficSource,
    /// The scheduler's counters, registered once for all its incarnations.
    scheduler_metrics: SchedulerMetrics,
    resources: Option<(ResourceManagerSpec, ActorRef<ResourceManagerMsg>)>,
    node: String,
    restarts: RestartBudget,
    http_shutdown: watch::Sender<bool>,
    http: Option<tokio::task::JoinHandle<()>>,
    /// The one-shot `--topology` deploy (bounded by its own deadline): owned here, so a node
    /// that stops first does not leave it writing to a registry that is going away.
    topology_deploy: Option<tokio::task::JoinHandle<()>>,
}

impl Actor for NodeSupervisor {
    type Msg = NodeSupervisorMsg;
    type State = NodeSupervisorState;
    type Arguments = NodeSupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: NodeSupervisorArgs,
    ) -> Result<NodeSupervisorState, ActorProcessingErr> {
        let tree = args.tree;
        let root = tree.root(ActorKind::NodeSupervisor, &myself.get_cell());
        // The embedded registry's server or follower started before this supervisor, which
        // now takes its keeper: a keeper that gives up fails the node.
        if let Some(keeper) = &args.store_keeper {
            keeper.link(myself.get_cell());
        }
        TreeMetrics::register(tree.clone(), &args.metrics)?;
        let joining = !args.membership.join.is_empty();
        let membership = start_membership(
            args.membership,
            args.metrics.clone(),
            Some(myself.get_cell()),
        )
        .await?;
        root.started("membership", ActorKind::Membership, &membership.actor());
        if joining {
            wait_for_join(&membership).await?;
        }
        let (registry, registry_supervisor) = start_registry_in(
            args.registry,
            args.store,
            &args.metrics,
            Some(myself.get_cell()),
            root.child("registry"),
        )
        .await?;
        let registry_cell = registry_supervisor.get_cell();
        root.started("registry", ActorKind::RegistrySupervisor, &registry_cell);
        let demand = args.resources.as_ref().map(|_| demand_channel().0);
        let scheduler_metrics = SchedulerMetrics::register(&args.metrics)?;
        let scheduler_args = SchedulerArgs {
            node: args.name.clone(),
            registry: registry.clone(),
            membership: membership.clone(),
            demand: demand.clone(),
            traffic_source: args.traffic_source.clone(),
            settings: SchedulerSettings::default(),
            metrics: Some(scheduler_metrics.clone()),
        };
        let scheduler = spawn_scheduler(&myself, &root, scheduler_args).await?;
        let resources = match (args.resources, &demand) {
            (Some(spec), Some(demand)) => {
                let actor = spawn_resources(
                    &myself,
                    &root,
                    &args.name,
                    &spec,
                    &registry,
                    &membership,
                    demand,
                )
                .await?;
                Some((spec, actor))
            }
            _ => None,
        };
        let topology_deploy = args
            .topology
            .map(|(file, source)| tokio::spawn(deploy_on_start(registry.clone(), file, source)));
        let http_ip = args.http_listener.local_addr()?.ip();
        let mut task_config = TaskSupervisorConfig::new(&args.name, http_ip)
            .with_tree(root.child("tasks"))
            .with_fence(membership.fence());
        task_config.local_forward = args.local_forward;
        task_config.states = args.states.clone();
        task_config.flow_transport = args.flow_transport.clone();
        task_config.changelog = args.changelog.clone();
        task_config.http_limits = args.task_http_limits;
        let tasks = start_task_supervisor(
            task_config,
            args.catalog,
            registry.clone(),
            &args.metrics,
            Some(myself.get_cell()),
        )
        .await?;
        root.started("tasks", ActorKind::TaskSupervisor, &tasks.actor());
        let acl = if args.acl {
            tracing::info!("acl on: REST requests need a token");
            Acl::enabled(registry.clone()).await
        } else {
            Acl::disabled()
        };
        args.write_gate.install(acl.clone());
        let context = ApiContext {
            acl,
            node_name: args.name.clone(),
            registry: registry.clone(),
            members: Arc::new(Members(membership.clone())),
            metrics: args.metrics,
            max_value_bytes: args.max_value_bytes,
            tree,
            enable_chaos: args.enable_chaos,
            limits: args.api_limits.clone(),
        };
        if args.enable_chaos {
            tracing::warn!(
                "failure drills enabled: POST /v1/actors/kill kills actors of this node"
            );
        }
        let (http_shutdown, mut stop) = watch::channel(false);
        let http = tokio::spawn(serve_tls(
            args.http_listener,
            context,
            args.rest_tls,
            async move {
                let _ = stop.wait_for(|stop| *stop).await;
            },
        ));
        Ok(NodeSupervisorState {
            registry,
            membership,
            tasks,
            tree: root,
            scheduler,
            demand,
            traffic_source: args.traffic_source,
            scheduler_metrics,
            resources,
            node: args.name,
            restarts: RestartBudget::new(RestartLimits::immediate(MAX_RESTARTS, RESTART_WINDOW)),
            http_shutdown,
            http: Some(http),
            topology_deploy,
        })
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut NodeSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, what) = match event {
            SupervisionEvent::ActorFailed(cell, error) => (cell, format!("failed: {error}")),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell,
                format!(
                    "stopped: {}",
                    reason.unwrap_or_else(|| "no reason given".into())
                ),
            ),
            _ => return Ok(()),
        };
        let id = cell.get_id();
        if id == state.scheduler.get_id() {
            state.restart_scheduler(&myself, &what).await
        } else if state
            .resources
            .as_ref()
            .is_some_and(|(_, actor)| actor.get_id() == id)
        {
            state.restart_resources(&myself, &what).await
        } else if id == state.tasks.actor().get_id() {
            state.restart_tasks(&myself, &what).await
        } else {
            Err(format!("subsystem {} {what}", subsystem_name(&cell)).into())
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut NodeSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(deploy) = state.topology_deploy.take() {
            deploy.abort();
        }
        // Instances first, while the registry still takes their endpoint withdrawals.
        state.tasks.shutdown(TASK_DRAIN).await;
        let _ = state.http_shutdown.send(true);
        if let Some(mut http) = state.http.take() {
            if tokio::time::timeout(HTTP_DRAIN, &mut http).await.is_err() {
                http.abort();
            }
        }
        state.membership.shutdown().await;
        tracing::info!(index = state.registry.index(), "node drained");
        Ok(())
    }
}

impl NodeSupervisorState {
    /// Counts a restart of a subsystem; past the intensity the node fails.
    fn allow_restart(&mut self, name: &str, what: &str) -> Result<(), ActorProcessingErr> {
        if self.restarts.allow(Instant::now()) {
            tracing::warn!(subsystem = name, reason = %what, "subsystem died: restarting it");
            return Ok(());
        }
        Err(format!(
            "subsystems restarted {MAX_RESTARTS} times within {RESTART_WINDOW:?}: giving up \
             (last: {name} {what})"
        )
        .into())
    }

    /// The scheduler died: start a new one (it rebuilds everything from the registry and
    /// membership).
    async fn restart_scheduler(
        &mut self,
        myself: &ActorRef<NodeSupervisorMsg>,
        what: &str,
    ) -> Result<(), ActorProcessingErr> {
        self.allow_restart("scheduler", what)?;
        self.tree
            .restarting("scheduler", ActorKind::Scheduler, what);
        let args = SchedulerArgs {
            node: self.node.clone(),
            registry: self.registry.clone(),
            membership: self.membership.clone(),
            demand: self.demand.clone(),
            traffic_source: self.traffic_source.clone(),
            settings: SchedulerSettings::default(),
            metrics: Some(self.scheduler_metrics.clone()),
        };
        self.scheduler = spawn_scheduler(myself, &self.tree, args).await?;
        Ok(())
    }

    /// The resource manager died: start a new one (it adopts its containers from the registry).
    async fn restart_resources(
        &mut self,
        myself: &ActorRef<NodeSupervisorMsg>,
        what: &str,
    ) -> Result<(), ActorProcessingErr> {
        self.allow_restart("resource manager", what)?;
        self.tree
            .restarting("resources", ActorKind::ResourceManager, what);
        let (Some((spec, _)), Some(demand)) = (&self.resources, &self.demand) else {
            return Ok(());
        };
        let actor = spawn_resources(
            myself,
            &self.tree,
            &self.node,
            spec,
            &self.registry,
            &self.membership,
            demand,
        )
        .await?;
        self.resources = Some((spec.clone(), actor));
        Ok(())
    }

    /// The task supervisor died, and its instances with it: start a new one, which starts this
    /// node's instances again from its assignments.
    async fn restart_tasks(
        &mut self,
        myself: &ActorRef<NodeSupervisorMsg>,
        what: &str,
    ) -> Result<(), ActorProcessingErr> {
        self.allow_restart("task supervisor", what)?;
        self.tree
            .restarting("tasks", ActorKind::TaskSupervisor, what);
        self.tasks.restart(myself.get_cell()).await?;
        self.tree
            .started("tasks", ActorKind::TaskSupervisor, &self.tasks.actor());
        Ok(())
    }
}

async fn spawn_scheduler(
    supervisor: &ActorRef<NodeSupervisorMsg>,
    tree: &TreeScope,
    args: SchedulerArgs,
) -> Result<ActorRef<SchedulerMsg>, ActorProcessingErr> {
    let (scheduler, _) = Actor::spawn_linked(None, Scheduler, args, supervisor.get_cell()).await?;
    tree.started("scheduler", ActorKind::Scheduler, &scheduler.get_cell());
    Ok(scheduler)
}

async fn spawn_resources(
    supervisor: &ActorRef<NodeSupervisorMsg>,
    tree: &TreeScope,
    node: &str,
    spec: &ResourceManagerSpec,
    registry: &RegistryHandle,
    membership: &MembershipHandle,
    demand: &DemandSender,
) -> Result<ActorRef<ResourceManagerMsg>, ActorProcessingErr> {
    let args = ResourceManagerArgs {
        node: node.to_string(),
        spec: spec.clone(),
        registry: registry.clone(),
        membership: membership.clone(),
        demand: demand.subscribe(),
    };
    let (actor, _) =
        Actor::spawn_linked(None, ResourceManagerActor, args, supervisor.get_cell()).await?;
    tree.started("resources", ActorKind::ResourceManager, &actor.get_cell());
    Ok(actor)
}

fn subsystem_name(cell: &ActorCell) -> String {
    cell.get_name().unwrap_or_else(|| cell.get_id().to_string())
}
