//! `Membership`: the local actor that owns the cluster connection and the member table.
//!
//! ```text
//! Membership        member table, timers, refusals, leave; linked to the node supervisor
//! ├── NodeServer    ractor_cluster: listener + a NodeSession per peer (events → Membership)
//! ├── MembershipPeer   remotely advertised; pg `lathe.membership`, `lathe.membership.<name>`
//! └── (tasks)       ZooKeeper session, connect attempts: they report back by message
//! ```
//!
//! If the NodeServer or the peer actor dies, Membership tears everything down and fails, so that
//! its supervisor can start membership afresh (a new cluster connection, a new handle).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use ractor::{pg, Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use ractor_cluster::{NodeServerMessage, RactorMessage};
use tokio::sync::watch;
use tokio::time::Instant;

use super::config::MembershipConfig;
use super::connect::{Attempt, Reconnector, Target, RECONNECT_INTERVAL};
use super::events::{SessionEvents, SUBSCRIPTION_ID};
use super::handle::Shared;
use super::metrics::MembershipMetrics;
use super::peer::{MembershipPeer, PeerArgs, MEMBERS_GROUP};
use super::sessions::{SessionEvent, SessionTracker};
use super::state::MembershipState;
use super::table::{MemberTable, Timing};
use super::types::{unix_ms, JoinState, MemberInfo, MemberView, PeerMessage};
use super::zookeeper::{ZkEvent, ZookeeperTask};

/// How long stopping waits for each actor of the cluster connection.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// Messages of the membership actor (local only).
#[derive(RactorMessage)]
pub(crate) enum MembershipMsg {
    HeartbeatTick,
    ReconnectTick,
    /// Classify sessions that closed unauthenticated (after the refusal grace).
    ClassifyCloses,
    Peer(PeerMessage),
    Session(SessionEvent),
    Connected(Target, Attempt),
    Zookeeper(ZkEvent),
    Members(RpcReplyPort<Vec<MemberView>>),
    Leave(RpcReplyPort<()>),
    LeaveTimeout,
}

pub(crate) struct Membership;

pub(crate) struct MembershipArgs {
    pub(crate) config: MembershipConfig,
    pub(crate) node_server: ActorRef<NodeServerMessage>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) published: watch::Sender<Vec<MemberView>>,
    pub(crate) join: watch::Sender<JoinState>,
    pub(crate) metrics: MembershipMetrics,
}

impl Actor for Membership {
    type Msg = MembershipMsg;
    type State = MembershipState;
    type Arguments = MembershipArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<MembershipMsg>,
        args: MembershipArgs,
    ) -> Result<MembershipState, ActorProcessingErr> {
        let MembershipArgs {
            config,
            node_server,
            shared,
            published,
            join,
            metrics,
        } = args;
        node_server.get_cell().link(myself.get_cell());
        let subscription = Box::new(SessionEvents {
            membership: myself.clone(),
            handshake_timeout: config.handshake_timeout,
            handshake_timeouts: metrics.handshake_timeouts.clone(),
        });
        node_server.cast(NodeServerMessage::SubscribeToEvents {
            id: SUBSCRIPTION_ID.to_string(),
            subscription,
        })?;
        let started_at_ms = unix_ms();
        let own = MemberInfo {
            name: config.name.clone(),
            pid: std::process::id(),
            cluster_addr: config.cluster_addr,
            http_addr: config.http_addr,
            tags: config.tags.clone(),
            started_at_ms,
            incarnation: started_at_ms,
            catalog: config.catalog.clone(),
            holds_registry: config.holds_registry,
            max_instances: config.max_instances,
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let peer_args = PeerArgs {
            name: config.name.clone(),
            membership: myself.clone(),
        };
        let (peer, _) =
            Actor::spawn_linked(None, MembershipPeer, peer_args, myself.get_cell()).await?;
        pg::monitor(MEMBERS_GROUP.to_string(), myself.get_cell());
        let timing = Timing {
            suspect_after: config.suspect_after,
            dead_after: config.dead_after,
        };
        let mut state = MembershipState {
            own_node: format!("{}@{}", config.name, config.advertised_host()),
            table: MemberTable::new(own.clone(), timing),
            sessions: SessionTracker::default(),
            reconnect: Reconnector::new(config.join.clone()),
            own_info: watch::channel(own).0,
            leaving_signal: watch::channel(false).0,
            zookeeper: None,
            peer: Some(peer),
            leaving: None,
            last_tick: Instant::now(),
            zookeeper_lost_since: None,
            config,
            node_server,
            published,
            join,
            shared,
            metrics,
        };
        state.publish(Instant::now());
        Ok(state)
    }

    async fn post_start(
        &self,
        myself: ActorRef<MembershipMsg>,
        state: &mut MembershipState,
    ) -> Result<(), ActorProcessingErr> {
        myself.send_interval(state.config.heartbeat_interval, || {
            MembershipMsg::HeartbeatTick
        });
        myself.send_interval(RECONNECT_INTERVAL, || MembershipMsg::ReconnectTick);
        myself.cast(MembershipMsg::ReconnectTick)?;
        if let Some(connect) = state.config.zookeeper.clone() {
            let task = ZookeeperTask {
                connect,
                auth: state.config.zookeeper_auth.clone(),
                own: state.own_info.subscribe(),
                leaving: state.leaving_signal.subscribe(),
                membership: myself.clone(),
            };
            state.zookeeper = Some(tokio::spawn(task.run()));
        }
        let config = &state.config;
        tracing::info!(
            name = %config.name,
            cluster_addr = %config.cluster_addr,
            node = %state.own_node,
            "membership started"
        );
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<MembershipMsg>,
        message: MembershipMsg,
        state: &mut MembershipState,
    ) -> Result<(), ActorProcessingErr> {
        let now = Instant::now();
        match message {
            MembershipMsg::HeartbeatTick => state.on_heartbeat_tick(now),
            MembershipMsg::ReconnectTick => state.on_reconnect_tick(&myself, now),
            MembershipMsg::ClassifyCloses => state.on_classify(now),
            MembershipMsg::Peer(message) => state.on_peer(message, &myself, now),
            MembershipMsg::Session(event) => state.on_session(event, &myself, now),
            MembershipMsg::Connected(target, attempt) => state.on_connected(target, attempt, now),
            MembershipMsg::Zookeeper(event) => state.on_zookeeper(event, &myself, now),
            MembershipMsg::Members(reply) => {
                let _ = reply.send(state.table.views(now));
            }
            MembershipMsg::Leave(reply) => state.begin_leave(reply, &myself),
            MembershipMsg::LeaveTimeout => state.finish_leave(&myself),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<MembershipMsg>,
        event: SupervisionEvent,
        state: &mut MembershipState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match event {
            SupervisionEvent::ProcessGroupChanged(pg::GroupChangeMessage::Join(
                _,
                group,
                cells,
            )) => {
                // A peer's membership actor appeared: greet it now rather than at the next tick.
                if group == MEMBERS_GROUP && cells.iter().any(|c| !c.get_id().is_local()) {
                    state.send_heartbeat();
                }
                return Ok(());
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, format!("stopped ({reason:?})"))
            }
            SupervisionEvent::ActorFailed(cell, err) => (cell, format!("failed: {err}")),
            _ => return Ok(()),
        };
        let is_peer = state
            .peer
            .as_ref()
            .is_some_and(|p| p.get_id() == cell.get_id());
        if cell.get_id() != state.node_server.get_id() && !is_peer {
            return Ok(());
        }
        let actor = cell.get_id();
        tracing::error!(?actor, %why, "a membership child ended: restarting membership");
        teardown(state).await;
        Err(format!("membership child {:?} {why}", cell.get_id()).into())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<MembershipMsg>,
        state: &mut MembershipState,
    ) -> Result<(), ActorProcessingErr> {
        teardown(state).await;
        tracing::info!(name = %state.config.name, "membership stopped");
        Ok(())
    }
}

/// Stops everything membership started: the ZooKeeper task (it deletes the member node), the peer
/// actor, and the whole cluster connection (NodeServer, sessions, their TCP actors).
pub(crate) async fn teardown(state: &mut MembershipState) {
    let _ = state.leaving_signal.send(true);
    if let Some(task) = state.zookeeper.take() {
        let abort = task.abort_handle();
        tokio::spawn(async move {
            if tokio::time::timeout(STOP_TIMEOUT, task).await.is_err() {
                abort.abort();
            }
        });
    }
    if let Some(peer) = state.peer.take() {
        let _ = peer
            .stop_and_wait(Some("membership stopped".to_string()), Some(STOP_TIMEOUT))
            .await;
    }
    let _ = state
        .node_server
        .cast(NodeServerMessage::UnsubscribeToEvents(
            SUBSCRIPTION_ID.to_string(),
        ));
    kill_tree(state.node_server.get_cell()).await;
}

/// Kills an actor and everything below it, parents first (a NodeServer does not stop its
/// sessions, nor a session its TCP actors).
pub(crate) async fn kill_tree(root: ActorCell) {
    let mut order = Vec::new();
    let mut queue = VecDeque::from([root]);
    while let Some(cell) = queue.pop_front() {
        queue.extend(cell.get_children());
        order.push(cell);
    }
    for cell in order {
        let _ = cell.kill_and_wait(Some(STOP_TIMEOUT)).await;
    }
}
