//! `NodeSupervisor`: the root of a node's supervision tree (drawn in the crate doc).
//!
//! It starts the subsystems in dependency order (membership, registry, scheduler, tasks, HTTP), and if a
//! subsystem's own supervisor gives up, it fails too: a node with a broken registry must not keep
//! answering. Stopping it drains the node: task instances withdraw their endpoints and finish
//! their requests, HTTP stops accepting, the node leaves the cluster, the registry stops.

use std::sync::Arc;
use std::time::Duration;

use lathe_actors::http::{serve, ApiContext, MemberDirectory};
use lathe_actors::membership::{start_membership, JoinState, MembershipConfig, MembershipHandle};
use lathe_actors::registry::{start_registry, RegistryConfig, RegistryHandle};
use lathe_actors::scheduler::actor::{Scheduler, SchedulerArgs};
use lathe_actors::scheduler::deploy::{self, DeployError};
use lathe_actors::tasks::{start_task_supervisor, TaskSupervisorConfig, TaskSupervisorHandle};
use lathe_store::Store;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use ractor_cluster::RactorMessage;
use tokio::sync::watch;

/// How long a draining node waits for open HTTP requests (watch streams never end by themselves).
const HTTP_DRAIN: Duration = Duration::from_secs(3);
/// How long a joining node waits to hear from its seeds before carrying on without them
/// (membership keeps retrying; with ZooKeeper the node finds its peers there).
const JOIN_WAIT: Duration = Duration::from_secs(10);
/// How long a node keeps trying to deploy its `--topology` (the registry may still be syncing).
const TOPOLOGY_DEPLOY_WAIT: Duration = Duration::from_secs(60);
/// How long a draining node waits for its task instances to finish their requests and stop.
const TASK_DRAIN: Duration = Duration::from_secs(5);

#[derive(RactorMessage)]
pub enum NodeSupervisorMsg {}

pub struct NodeSupervisor;

pub struct NodeSupervisorArgs {
    pub name: String,
    pub store: Arc<dyn Store>,
    pub registry: RegistryConfig,
    pub membership: MembershipConfig,
    pub http_listener: tokio::net::TcpListener,
    pub max_value_bytes: usize,
    pub metrics: prometheus::Registry,
    /// The task types this node's binary can run.
    pub catalog: lathe::Catalog,
    /// A validated topology to deploy once the registry is up: (file name, TOML).
    pub topology: Option<(String, String)>,
}

pub struct NodeSupervisorState {
    registry: RegistryHandle,
    membership: MembershipHandle,
    tasks: TaskSupervisorHandle,
    http_shutdown: watch::Sender<bool>,
    http: Option<tokio::task::JoinHandle<()>>,
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
        let joining = !args.membership.join.is_empty();
        let membership = start_membership(
            args.membership,
            args.metrics.clone(),
            Some(myself.get_cell()),
        )
        .await?;
        if joining {
            wait_for_join(&membership).await?;
        }
        let (registry, _) = start_registry(
            args.registry,
            args.store,
            &args.metrics,
            Some(myself.get_cell()),
        )
        .await?;
        let scheduler = SchedulerArgs {
            node: args.name.clone(),
            registry: registry.clone(),
            membership: membership.clone(),
        };
        Actor::spawn_linked(None, Scheduler, scheduler, myself.get_cell()).await?;
        if let Some((file, source)) = args.topology {
            tokio::spawn(deploy_on_start(registry.clone(), file, source));
        }
        let http_ip = args.http_listener.local_addr()?.ip();
        let tasks = start_task_supervisor(
            TaskSupervisorConfig::new(&args.name, http_ip),
            args.catalog,
            registry.clone(),
            &args.metrics,
            Some(myself.get_cell()),
        )
        .await?;
        let context = ApiContext {
            node_name: args.name,
            registry: registry.clone(),
            members: Arc::new(Members(membership.clone())),
            metrics: args.metrics,
            max_value_bytes: args.max_value_bytes,
        };
        let (http_shutdown, mut stop) = watch::channel(false);
        let http = tokio::spawn(serve(args.http_listener, context, async move {
            let _ = stop.wait_for(|stop| *stop).await;
        }));
        Ok(NodeSupervisorState {
            registry,
            membership,
            tasks,
            http_shutdown,
            http: Some(http),
        })
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        _state: &mut NodeSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => Err(format!(
                "subsystem {} failed: {error}",
                cell.get_name().unwrap_or_else(|| cell.get_id().to_string())
            )
            .into()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => Err(format!(
                "subsystem {} stopped: {}",
                cell.get_name().unwrap_or_else(|| cell.get_id().to_string()),
                reason.unwrap_or_else(|| "no reason given".into())
            )
            .into()),
            _ => Ok(()),
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut NodeSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
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

/// Deploys `--topology` once the registry takes writes, unless that very topology is already
/// deployed (every node of a cluster may be started with the same file).
async fn deploy_on_start(registry: RegistryHandle, file: String, source: String) {
    let deadline = tokio::time::Instant::now() + TOPOLOGY_DEPLOY_WAIT;
    loop {
        let attempt = async {
            if let Some((record, _)) = deploy::current(&registry).await? {
                if record.source == source {
                    return Ok(None);
                }
            }
            deploy::deploy(&registry, &file, &source).await.map(Some)
        };
        match attempt.await {
            Ok(Some(outcome)) => {
                return tracing::info!(%file, groups = outcome.groups, "--topology deployed")
            }
            Ok(None) => return tracing::info!(%file, "--topology is already deployed"),
            Err(DeployError::Invalid(error)) => {
                return tracing::error!(%error, "--topology refused")
            }
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(%error, "--topology not deployed yet: retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return tracing::error!(%error, "--topology could not be deployed"),
        }
    }
}

/// Waits until a seed accepted this node; a refusal (wrong cookie) fails the start-up with a
/// message saying so, rather than leaving a node that can never join.
async fn wait_for_join(membership: &MembershipHandle) -> Result<(), ActorProcessingErr> {
    let mut state = membership.join_state();
    let outcome = tokio::time::timeout(
        JOIN_WAIT,
        state.wait_for(|s| matches!(s, JoinState::Joined | JoinState::Refused(_))),
    )
    .await;
    match outcome {
        Ok(Ok(state)) => match &*state {
            JoinState::Refused(refusal) => Err(format!(
                "--join: the cluster at {} refused this node (check --cookie)",
                refusal.peer_addr
            )
            .into()),
            _ => Ok(()),
        },
        Ok(Err(_)) => Err("membership stopped while joining".into()),
        Err(_) => {
            tracing::warn!(
                wait = ?JOIN_WAIT,
                "no --join seed answered yet: carrying on, membership keeps trying"
            );
            Ok(())
        }
    }
}

struct Members(MembershipHandle);

#[async_trait::async_trait]
impl MemberDirectory for Members {
    async fn members_json(&self) -> serde_json::Value {
        serde_json::json!({ "members": self.0.members().await })
    }
}
