//! `AgentSupervisor`: the root of the agent's actors.
//!
//! ```text
//! AgentSupervisor
//! ├── WatchActor × n     one per [[watch]]: subtree state, debounce, actions
//! ├── RegistryWatcher    one stream for the common prefix → routes events to the watch actors
//! └── Gossip             (with peers) digests to peers; behind → Resync through the supervisor
//! ```
//!
//! A child that fails is restarted (at most 10 restarts a minute, else the agent stops): a new
//! watch actor starts empty, so the watcher re-syncs from index 0 for it (the others ignore what
//! they have seen); a new watcher resumes from the last index on the status board.

use std::time::{Duration, Instant};

use lathe::KeyPath;
use lathe_supervisors::policy::{RestartBudget, RestartLimits};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use ractor_cluster::RactorMessage;

use crate::actions::{Action, ActionError};
use crate::config::{AgentConfig, WatchConfig};
use crate::gossip::{Gossip, GossipArgs, Heard};
use crate::registry::{common_prefix, RegistryWatcher, Route, WatcherArgs, WatcherMsg};
use crate::status::{Board, Metrics};
use crate::watch::{WatchActor, WatchArgs};

const MAX_RESTARTS: u32 = 10;
const RESTART_WINDOW: Duration = Duration::from_secs(60);

#[derive(RactorMessage)]
pub enum SupervisorMsg {
    /// Gossip found this agent behind: re-sync from another registry node.
    Resync { reason: String },
}

pub struct AgentSupervisor;

pub struct SupervisorArgs {
    pub config: AgentConfig,
    pub board: Board,
    pub metrics: Metrics,
    pub heard: Heard,
}

pub struct SupervisorState {
    args: SupervisorArgs,
    routes: Vec<Route>,
    watcher: ActorRef<WatcherMsg>,
    gossip: Option<ActorCell>,
    restarts: RestartBudget,
}

impl Actor for AgentSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let mut routes = Vec::new();
        for watch in &args.config.watches {
            routes.push(spawn_watch(&myself, watch, &args).await?);
        }
        let watcher = spawn_watcher(&myself, &args, routes.clone()).await?;
        let gossip = spawn_gossip(&myself, &args).await?;
        Ok(SupervisorState {
            args,
            routes,
            watcher,
            gossip,
            restarts: RestartBudget::new(RestartLimits::immediate(MAX_RESTARTS, RESTART_WINDOW)),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let SupervisorMsg::Resync { reason } = message;
        state.watcher.cast(WatcherMsg::Resync {
            reason,
            from_start: false,
        })?;
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match event {
            SupervisionEvent::ActorFailed(cell, error) => (cell, error.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "stopped".to_string()))
            }
            _ => return Ok(()),
        };
        if !state.restarts.allow(Instant::now()) {
            return Err(format!(
                "more than {MAX_RESTARTS} actor restarts within {RESTART_WINDOW:?}; last: {why}"
            )
            .into());
        }
        tracing::error!(actor = ?cell.get_id(), reason = %why,
            "agent actor stopped: restarting it");
        if cell.get_id() == state.watcher.get_id() {
            state.watcher = spawn_watcher(&myself, &state.args, state.routes.clone()).await?;
        } else if state
            .gossip
            .as_ref()
            .is_some_and(|g| g.get_id() == cell.get_id())
        {
            state.gossip = spawn_gossip(&myself, &state.args).await?;
        } else if let Some(i) = state
            .routes
            .iter()
            .position(|r| r.actor.get_id() == cell.get_id())
        {
            let config = state.args.config.watches[i].clone();
            let route = spawn_watch(&myself, &config, &state.args).await?;
            state.routes[i] = route.clone();
            state.watcher.cast(WatcherMsg::Reroute(route))?;
            state.watcher.cast(WatcherMsg::Resync {
                reason: format!("watch {} restarted", config.watch_name()),
                from_start: true,
            })?;
        }
        Ok(())
    }
}

async fn spawn_watch(
    myself: &ActorRef<SupervisorMsg>,
    watch: &WatchConfig,
    args: &SupervisorArgs,
) -> Result<Route, ActorProcessingErr> {
    let name = watch.watch_name();
    let actions = watch
        .actions
        .iter()
        .map(|a| Action::new(a, &name, args.metrics.clone()))
        .collect::<Result<Vec<_>, ActionError>>()?;
    let watch_args = WatchArgs {
        name: name.clone(),
        prefix: watch.prefix.0.clone(),
        wait: watch.wait,
        retry: watch.retry,
        actions,
        board: args.board.clone(),
        metrics: args.metrics.clone(),
    };
    let (actor, _) = Actor::spawn_linked(None, WatchActor, watch_args, myself.get_cell()).await?;
    Ok(Route {
        name,
        prefix: watch.prefix.0.clone(),
        actor,
    })
}

async fn spawn_watcher(
    myself: &ActorRef<SupervisorMsg>,
    args: &SupervisorArgs,
    routes: Vec<Route>,
) -> Result<ActorRef<WatcherMsg>, ActorProcessingErr> {
    let prefixes: Vec<KeyPath> = routes.iter().map(|r| r.prefix.clone()).collect();
    let config = &args.config;
    let watcher_args = WatcherArgs {
        registry: config.registry.clone(),
        prefix: common_prefix(&prefixes),
        routes,
        mode: config.mode,
        stall_timeout: config.stall_timeout.0,
        poll_wait: config.poll_wait.0,
        retry: config.retry,
        board: args.board.clone(),
        metrics: args.metrics.clone(),
        headers: config.registry_headers(),
    };
    let (watcher, _) =
        Actor::spawn_linked(None, RegistryWatcher, watcher_args, myself.get_cell()).await?;
    Ok(watcher)
}

async fn spawn_gossip(
    myself: &ActorRef<SupervisorMsg>,
    args: &SupervisorArgs,
) -> Result<Option<ActorCell>, ActorProcessingErr> {
    let config = &args.config;
    if config.peers.is_empty() {
        return Ok(None);
    }
    let gossip_args = GossipArgs {
        name: config.agent_name(),
        peers: config.peers.clone(),
        interval: config.gossip.interval.0,
        fanout: config.gossip.fanout.max(1),
        grace: config.gossip.grace.0,
        board: args.board.clone(),
        metrics: args.metrics.clone(),
        heard: args.heard.clone(),
        supervisor: myself.clone(),
        registry: config.registry.clone(),
    };
    let (gossip, _) = Actor::spawn_linked(None, Gossip, gossip_args, myself.get_cell()).await?;
    Ok(Some(gossip.get_cell()))
}
