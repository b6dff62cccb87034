//! `MembershipHandle`: what the rest of the node uses; cheap to clone.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{ActorCell, ActorRef};
use ractor_cluster::NodeServerMessage;
use tokio::sync::watch;

use super::actor::MembershipMsg;
use super::types::{JoinState, MemberView, Refusal};

/// How long `members()` and `shutdown()` wait for the membership actor.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `shutdown()` waits for the membership actor to stop after leaving.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// State the actor writes and the handle reads without a round trip.
#[derive(Debug)]
pub(crate) struct Shared {
    /// `Some(why)` while this node is fenced (see [`MembershipHandle::fence`]).
    pub(crate) fence: watch::Sender<Option<String>>,
    pub(crate) refusals: Mutex<Vec<Refusal>>,
}

/// A cheap-to-clone handle on this node's membership.
#[derive(Clone)]
pub struct MembershipHandle {
    pub(crate) name: String,
    pub(crate) actor: ActorRef<MembershipMsg>,
    pub(crate) node_server: ActorRef<NodeServerMessage>,
    pub(crate) members: watch::Receiver<Vec<MemberView>>,
    pub(crate) join: watch::Receiver<JoinState>,
    pub(crate) shared: Arc<Shared>,
}

impl MembershipHandle {
    /// This node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every known member (this node included), sorted by name: the JSON of `/v1/members`.
    /// Falls back to the last published list if the membership actor does not answer.
    pub async fn members(&self) -> Vec<MemberView> {
        match ractor::call_t!(
            self.actor,
            MembershipMsg::Members,
            CALL_TIMEOUT.as_millis() as u64
        ) {
            Ok(members) => members,
            Err(_) => self.members.borrow().clone(),
        }
    }

    /// Membership changes: a new list whenever a member joins, changes status or incarnation.
    pub fn subscribe(&self) -> watch::Receiver<Vec<MemberView>> {
        self.members.clone()
    }

    /// How joining the cluster is going; `lathe-node` exits when it turns [`JoinState::Refused`].
    pub fn join_state(&self) -> watch::Receiver<JoinState> {
        self.join.clone()
    }

    /// Peers that opened a cluster session and dropped it before authenticating (cookie mismatch),
    /// in both directions, oldest first (the last 100).
    pub fn refusals(&self) -> Vec<Refusal> {
        self.shared
            .refusals
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// True while this node is fenced: it must not act on cluster-wide decisions nor serve its
    /// assignments meanwhile (see [`MembershipHandle::fence`]).
    pub fn is_fenced(&self) -> bool {
        self.shared.fence.borrow().is_some()
    }

    /// Whether this node is fenced, and why: `Some(reason)` from the moment it knows the cluster
    /// has given it up — ZooKeeper out of reach while its peers hold it dead (its member node
    /// vanished, so the scheduler re-places its instances), or out of reach for a whole session
    /// timeout while it reaches only a minority of the cluster — until its member node is
    /// registered in ZooKeeper again. A fenced node stops its instances. A ZooKeeper outage that
    /// the whole cluster sees fences nobody: no one can re-place anything meanwhile, so the
    /// instances keep serving. Always `None` without ZooKeeper.
    pub fn fence(&self) -> watch::Receiver<Option<String>> {
        self.shared.fence.subscribe()
    }

    /// The cluster connection, for other actors that talk to remote nodes.
    pub fn node_server(&self) -> ActorRef<NodeServerMessage> {
        self.node_server.clone()
    }

    /// The membership actor, for the supervision tree.
    pub fn actor(&self) -> ActorCell {
        self.actor.get_cell()
    }

    /// Leaves gracefully: tells peers (they mark this node dead at once), deletes the ZooKeeper
    /// member node, then stops the membership actors and the cluster connection.
    pub async fn shutdown(&self) {
        let left = ractor::call_t!(
            self.actor,
            MembershipMsg::Leave,
            CALL_TIMEOUT.as_millis() as u64
        );
        if let Err(err) = left {
            tracing::warn!(error = %err, "membership did not confirm leaving; stopping it anyway");
            self.actor.stop(Some("shutdown".to_string()));
        }
        if self
            .actor
            .get_cell()
            .wait(Some(STOP_TIMEOUT))
            .await
            .is_err()
        {
            tracing::warn!("membership did not stop in time");
        }
    }
}
