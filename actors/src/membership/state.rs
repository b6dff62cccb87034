//! The membership actor's state, and what each event does to it. Nothing in here waits on I/O:
//! connects and ZooKeeper run in tasks, peers are reached with casts.

use std::sync::Arc;

use ractor::ActorRef;
use ractor_cluster::NodeServerMessage;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::actor::MembershipMsg;
use super::config::MembershipConfig;
use super::connect::{spawn_connect, Attempt, Reconnector, Target};
use super::handle::Shared;
use super::leave::Leaving;
use super::metrics::MembershipMetrics;
use super::peer::{cast_remote, node_group, MEMBERS_GROUP};
use super::sessions::{
    Applied, CloseVerdict, Closed, SessionEvent, SessionTracker, UnauthenticatedClose,
};
use super::table::{HeartbeatOutcome, MemberTable, Transition};
use super::types::{
    unix_ms, JoinState, MemberInfo, MemberStatus, MemberView, PeerMessage, Refusal,
    SessionDirection,
};
use super::zookeeper::{ZkEvent, SESSION_TIMEOUT};

/// How many refusals are remembered (the oldest are forgotten first).
const MAX_REFUSALS: usize = 100;

pub(crate) struct MembershipState {
    pub(crate) config: MembershipConfig,
    /// This node's ractor node name, `name@host`.
    pub(crate) own_node: String,
    pub(crate) node_server: ActorRef<NodeServerMessage>,
    pub(crate) peer: Option<ActorRef<PeerMessage>>,
    pub(crate) table: MemberTable,
    pub(crate) sessions: SessionTracker,
    pub(crate) reconnect: Reconnector,
    pub(crate) published: watch::Sender<Vec<MemberView>>,
    pub(crate) join: watch::Sender<JoinState>,
    /// This node's info for the ZooKeeper task.
    pub(crate) own_info: watch::Sender<MemberInfo>,
    /// Tells the ZooKeeper task to delete the member node and end.
    pub(crate) leaving_signal: watch::Sender<bool>,
    pub(crate) zookeeper: Option<JoinHandle<()>>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) metrics: MembershipMetrics,
    pub(crate) leaving: Option<Leaving>,
    /// When the heartbeat timer last fired, to notice this process being paused.
    pub(crate) last_tick: Instant,
    /// Since when ZooKeeper has been unreachable (`None` while it answers), for fencing.
    pub(crate) zookeeper_lost_since: Option<Instant>,
}

impl MembershipState {
    pub(crate) fn send_heartbeat(&self) {
        if self.leaving.is_none() {
            cast_remote(
                MEMBERS_GROUP,
                &PeerMessage::Heartbeat(self.table.own().clone()),
            );
        }
    }

    /// Under cluster TLS, tells peers which members this node holds alive (once per reconnect
    /// tick: a peer cannot dial what it learns any sooner).
    fn send_members(&self) {
        if self.config.tls.is_none() {
            return;
        }
        let alive = self
            .table
            .peers()
            .filter(|(_, status)| *status == MemberStatus::Alive)
            .map(|(info, _)| (info.name.clone(), info.cluster_addr))
            .collect();
        cast_remote(MEMBERS_GROUP, &PeerMessage::Members(alive));
    }

    pub(crate) fn on_heartbeat_tick(&mut self, now: Instant) {
        let since_last_tick =
            now.saturating_duration_since(std::mem::replace(&mut self.last_tick, now));
        if since_last_tick >= self.config.suspect_after {
            let pause = since_last_tick.saturating_sub(self.config.heartbeat_interval);
            tracing::warn!(
                pause_ms = pause.as_millis() as u64,
                "this node stood still: peers' silence meanwhile is forgiven"
            );
            self.table.on_local_pause(pause);
        }
        self.send_heartbeat();
        let transitions = self.table.tick(now);
        self.changed(transitions, now);
        self.fence_if_cut_off(now);
    }

    /// Fences this node when it has been without ZooKeeper for a whole session timeout while it
    /// reaches only a minority of the cluster: ZooKeeper has expired its session by now unless
    /// ZooKeeper itself is down, and a node that reaches a majority of its peers cannot tell
    /// the two apart, so only the minority side fences (a whole-cluster ZooKeeper outage fences
    /// nobody and the instances keep serving).
    fn fence_if_cut_off(&mut self, now: Instant) {
        let Some(since) = self.zookeeper_lost_since else {
            return;
        };
        let lost_for = now.saturating_duration_since(since);
        if lost_for < SESSION_TIMEOUT || self.is_fenced() {
            return;
        }
        let (reachable, total) = self.table.reachability();
        if reachable * 2 < total {
            self.fence(format!(
                "cut off: no zookeeper for {} s and only {reachable} of {total} members reachable",
                lost_for.as_secs()
            ));
        }
    }

    fn is_fenced(&self) -> bool {
        self.shared.fence.borrow().is_some()
    }

    /// Fences this node (see `MembershipHandle::fence`); the first reason given stays.
    pub(crate) fn fence(&mut self, reason: String) {
        let fenced = self.shared.fence.send_if_modified(|fence| {
            let new = fence.is_none();
            if new {
                *fence = Some(reason.clone());
            }
            new
        });
        if fenced {
            tracing::error!(%reason, "node fenced: its task instances stop until it is registered \
                in zookeeper again");
            self.metrics.set_fenced(true);
        }
    }

    /// While this node leaves, a peer that leaves too, or whose session closed, will not
    /// acknowledge: stop waiting for it (when the whole cluster stops at once, every node would
    /// otherwise wait out the leave timeout).
    fn stop_awaiting(&mut self, peer: &str, myself: &ActorRef<MembershipMsg>) {
        if let Some(leaving) = &mut self.leaving {
            if leaving.awaiting_peers.remove(peer) {
                tracing::debug!(%peer, "leaving: not waiting for a peer that is gone or leaving");
            }
            self.finish_leave_if_done(myself);
        }
    }

    fn unfence(&mut self) {
        if self
            .shared
            .fence
            .send_if_modified(|fence| fence.take().is_some())
        {
            tracing::info!("member node registered in zookeeper: no longer fenced");
            self.metrics.set_fenced(false);
        }
    }

    pub(crate) fn on_peer(
        &mut self,
        message: PeerMessage,
        myself: &ActorRef<MembershipMsg>,
        now: Instant,
    ) {
        match message {
            PeerMessage::Heartbeat(info) => {
                let name = info.name.clone();
                let (outcome, transitions) = self.table.on_heartbeat(info, now);
                if let HeartbeatOutcome::Refute { incarnation } = outcome {
                    cast_remote(
                        &node_group(&name),
                        &PeerMessage::Refute { name, incarnation },
                    );
                }
                self.changed(transitions, now);
            }
            PeerMessage::Leave { name, incarnation } => {
                let transitions = self.table.on_leave(&name, incarnation);
                cast_remote(
                    &node_group(&name),
                    &PeerMessage::LeaveAck {
                        from: self.config.name.clone(),
                    },
                );
                self.changed(transitions, now);
                self.stop_awaiting(&name, myself);
            }
            PeerMessage::Members(members) => {
                for (name, addr) in members {
                    let unknown = !self.table.knows(&name);
                    if unknown && !self.config.is_own_address(&addr) {
                        self.reconnect.learn(name, addr);
                    }
                }
            }
            PeerMessage::LeaveAck { from } => {
                if let Some(leaving) = &mut self.leaving {
                    leaving.awaiting_peers.remove(&from);
                }
                self.finish_leave_if_done(myself);
            }
            PeerMessage::Refute { name, incarnation } => {
                if name != self.config.name || self.leaving.is_some() {
                    return;
                }
                if self.zookeeper_lost_since.is_some() {
                    // Held dead while ZooKeeper is out of reach: its member node is gone, so
                    // the scheduler is re-placing this node's instances elsewhere.
                    self.fence(format!(
                        "peers hold this node dead (incarnation {incarnation}) while zookeeper is \
                            unreachable"
                    ));
                }
                if !self.is_fenced() {
                    tracing::info!(
                        held_dead_at = incarnation,
                        "a peer holds this node dead: refuting with a newer incarnation"
                    );
                    self.bump_incarnation(incarnation);
                    self.send_heartbeat();
                }
            }
        }
    }

    /// Raises this node's incarnation above `at_least` (and above its current one).
    pub(crate) fn bump_incarnation(&mut self, at_least: u64) {
        let mut own = self.table.own().clone();
        own.incarnation = own.incarnation.max(at_least) + 1;
        self.table.set_own(own.clone());
        self.own_info.send_replace(own);
    }

    pub(crate) fn on_session(
        &mut self,
        event: SessionEvent,
        myself: &ActorRef<MembershipMsg>,
        now: Instant,
    ) {
        let (peer_addr, peer_node) = (&event.peer_addr, &event.peer_node);
        tracing::debug!(kind = ?event.kind, %peer_addr, ?peer_node, "cluster session event");
        match self.sessions.apply(&event, now) {
            Applied::Opened | Applied::Closed(Closed::Unknown) => {}
            Applied::Up(member) => {
                tracing::info!(%peer_addr, ?peer_node, "cluster session established");
                self.join.send_if_modified(|join| {
                    replace_if(join, |j| *j != JoinState::Joined, JoinState::Joined)
                });
                if let Some(member) = member {
                    let transitions = self.table.on_session_up(&member, now);
                    self.changed(transitions, now);
                }
            }
            Applied::Closed(Closed::Established { member }) => {
                tracing::info!(%peer_addr, ?peer_node, "cluster session closed");
                if let Some(member) = member {
                    let transitions = self.table.on_session_closed(&member, now);
                    self.changed(transitions, now);
                    self.stop_awaiting(&member, myself);
                }
            }
            Applied::Closed(Closed::Unauthenticated) => {
                let delay = super::sessions::REFUSAL_GRACE + std::time::Duration::from_millis(50);
                myself.send_after(delay, || MembershipMsg::ClassifyCloses);
            }
        }
    }

    pub(crate) fn on_classify(&mut self, now: Instant) {
        for (close, verdict) in self.sessions.take_due(&self.own_node, now) {
            match verdict {
                CloseVerdict::Refused => self.refused(close),
                verdict => tracing::debug!(
                    peer_addr = %close.peer_addr,
                    peer_node = ?close.peer_node,
                    ?verdict,
                    "unauthenticated cluster session closed"
                ),
            }
        }
    }

    fn refused(&mut self, close: UnauthenticatedClose) {
        let direction = if close.is_server {
            SessionDirection::Incoming
        } else {
            SessionDirection::Outgoing
        };
        let seed = direction == SessionDirection::Outgoing
            && self.reconnect.is_seed_addr(&close.peer_addr);
        let (peer, node) = (&close.peer_addr, close.peer_node.as_deref().unwrap_or("?"));
        let lifetime_ms = close.lifetime.as_millis() as u64;
        match direction {
            SessionDirection::Outgoing => tracing::error!(
                peer_addr = %peer,
                peer_node = node,
                seed,
                lifetime_ms,
                "refused by cluster peer {peer} ({node}): cookie mismatch, \
                 the session closed before it authenticated"
            ),
            SessionDirection::Incoming => tracing::error!(
                peer_addr = %peer,
                peer_node = node,
                listen_addr = close.connection_string.as_deref().unwrap_or("?"),
                lifetime_ms,
                "refused cluster peer {peer} ({node}): cookie mismatch, \
                 the session closed before it authenticated"
            ),
        }
        let refusal = Refusal {
            peer_addr: close.peer_addr,
            peer_node: close.peer_node,
            direction,
            seed,
            at_ms: unix_ms(),
        };
        if let Ok(mut refusals) = self.shared.refusals.lock() {
            if refusals.len() >= MAX_REFUSALS {
                refusals.remove(0);
            }
            refusals.push(refusal.clone());
        }
        if seed && !self.sessions.any_established() {
            self.join.send_replace(JoinState::Refused(refusal));
        }
    }

    pub(crate) fn on_reconnect_tick(&mut self, myself: &ActorRef<MembershipMsg>, now: Instant) {
        if self.leaving.is_some() {
            return;
        }
        self.send_members();
        for target in self.reconnect.plan(&self.table, &self.sessions, now) {
            let config = self.config.clone();
            let own = move |addr: &std::net::SocketAddr| config.is_own_address(addr);
            let tls = self.config.tls.as_ref().map(|tls| tls.connector.clone());
            spawn_connect(self.node_server.clone(), own, target, tls, myself.clone());
        }
    }

    pub(crate) fn on_connected(&mut self, target: Target, attempt: Attempt, now: Instant) {
        let retry_in = self.reconnect.done(&target, &attempt, now);
        match (&target, &attempt) {
            (_, Attempt::Opened(addr)) => {
                tracing::debug!(target = %target.address(), %addr, "cluster connection opened")
            }
            (Target::Seed(seed), Attempt::OwnAddress) => {
                tracing::info!(%seed, "seed is this node itself, skipping it");
                if !self.reconnect.has_seeds() {
                    self.join.send_if_modified(|join| {
                        replace_if(join, |j| *j == JoinState::Joining, JoinState::Founding)
                    });
                }
            }
            (Target::Seed(seed), Attempt::Failed(error)) => {
                tracing::warn!(%seed, %error, ?retry_in, "cannot reach seed")
            }
            (Target::Member { name, addr, .. }, Attempt::Failed(error)) => {
                tracing::debug!(member = %name, %addr, %error, "cannot reach member")
            }
            (Target::Learned { name, addr }, Attempt::Failed(error)) => {
                tracing::debug!(member = %name, %addr, %error, "cannot reach a member a peer named")
            }
            (Target::Member { .. } | Target::Learned { .. }, Attempt::OwnAddress) => {}
        }
    }

    pub(crate) fn on_zookeeper(
        &mut self,
        event: ZkEvent,
        myself: &ActorRef<MembershipMsg>,
        now: Instant,
    ) {
        match event {
            ZkEvent::Registered => {
                self.zookeeper_lost_since = None;
                self.unfence();
            }
            ZkEvent::Listing(listing) => {
                // A listing follows this session's own registration: the member node is ours.
                self.zookeeper_lost_since = None;
                self.unfence();
                let transitions = self.table.on_zookeeper(Some(listing), now);
                self.changed(transitions, now);
            }
            ZkEvent::Unavailable(reason) => {
                tracing::debug!(%reason, "no zookeeper listing: membership runs on heartbeats");
                self.zookeeper_lost_since.get_or_insert(now);
                self.table.on_zookeeper(None, now);
            }
            ZkEvent::Expired => {
                // Not proof that the cluster gave this node up: zookeeper-client also reports
                // an expiry when it could not reconnect within the session timeout, as during a
                // whole-ZooKeeper outage in which no one re-places anything. The node fences if
                // its peers hold it dead or it is in a minority (`fence_if_cut_off`).
                self.zookeeper_lost_since.get_or_insert(now);
                self.table.on_zookeeper(None, now);
                // Peers hold this node dead once its member node vanished; come back newer.
                let current = self.table.own().incarnation;
                self.bump_incarnation(current);
            }
            ZkEvent::Left => {
                if let Some(leaving) = &mut self.leaving {
                    leaving.awaiting_zookeeper = false;
                }
                self.finish_leave_if_done(myself);
            }
        }
    }

    /// Logs status changes and publishes the member list when it changed.
    pub(crate) fn changed(&mut self, transitions: Vec<Transition>, now: Instant) {
        for t in &transitions {
            let member = t.name.as_str();
            match (t.from, t.to) {
                (None, to) => tracing::info!(member, status = to.as_str(), "member joined"),
                (_, MemberStatus::Dead) => tracing::warn!(member, cause = ?t.cause, "member dead"),
                (_, MemberStatus::Suspect) => tracing::warn!(member, "member suspect"),
                (_, MemberStatus::Alive) => tracing::info!(member, "member alive"),
            }
        }
        self.publish(now);
    }

    /// Publishes the member list if anything but heartbeat ages changed; updates the gauge.
    pub(crate) fn publish(&mut self, now: Instant) {
        let views = self.table.views(now);
        let strip = |v: &MemberView| MemberView {
            last_heartbeat_ms_ago: None,
            ..v.clone()
        };
        self.published.send_if_modified(|current| {
            let same = current.len() == views.len()
                && current
                    .iter()
                    .zip(&views)
                    .all(|(a, b)| strip(a) == strip(b));
            if !same {
                *current = views;
            }
            !same
        });
        self.metrics.set(&self.table.counts());
    }
}

/// Replaces `value` by `new` if `condition` holds; returns whether it did.
fn replace_if<T>(value: &mut T, condition: impl FnOnce(&T) -> bool, new: T) -> bool {
    let replace = condition(value);
    if replace {
        *value = new;
    }
    replace
}
