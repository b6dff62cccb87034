//! Leaving the cluster gracefully: tell every peer (they mark this node dead at once instead of
//! suspecting it), delete the ZooKeeper member node, then stop. Waits for acknowledgements at most
//! [`LEAVE_TIMEOUT`].

use std::collections::BTreeSet;
use std::time::Duration;

use ractor::{ActorRef, RpcReplyPort};

use super::actor::MembershipMsg;
use super::peer::{cast_remote, MEMBERS_GROUP};
use super::state::MembershipState;
use super::types::{MemberStatus, PeerMessage};

/// How long a leave waits for peers' acknowledgements and the ZooKeeper delete.
pub(crate) const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);

/// A leave in progress: who still has to acknowledge it.
pub(crate) struct Leaving {
    pub(crate) reply: Option<RpcReplyPort<()>>,
    pub(crate) awaiting_peers: BTreeSet<String>,
    pub(crate) awaiting_zookeeper: bool,
}

impl MembershipState {
    pub(crate) fn begin_leave(
        &mut self,
        reply: RpcReplyPort<()>,
        myself: &ActorRef<MembershipMsg>,
    ) {
        if self.leaving.is_some() {
            let _ = reply.send(());
            return;
        }
        let awaiting_peers = self
            .table
            .peers()
            .filter(|(info, status)| {
                *status != MemberStatus::Dead
                    && self
                        .sessions
                        .is_connected(&info.name, &info.cluster_addr.to_string())
            })
            .map(|(info, _)| info.name.clone())
            .collect();
        let own = self.table.own();
        tracing::info!(peers = ?awaiting_peers, "leaving the cluster");
        cast_remote(
            MEMBERS_GROUP,
            &PeerMessage::Leave {
                name: own.name.clone(),
                incarnation: own.incarnation,
            },
        );
        let _ = self.leaving_signal.send(true);
        let awaiting_zookeeper = self
            .zookeeper
            .as_ref()
            .is_some_and(|task| !task.is_finished());
        self.leaving = Some(Leaving {
            reply: Some(reply),
            awaiting_peers,
            awaiting_zookeeper,
        });
        myself.send_after(LEAVE_TIMEOUT, || MembershipMsg::LeaveTimeout);
        self.finish_leave_if_done(myself);
    }

    pub(crate) fn finish_leave_if_done(&mut self, myself: &ActorRef<MembershipMsg>) {
        let Some(leaving) = &mut self.leaving else {
            return;
        };
        if leaving.awaiting_peers.is_empty() && !leaving.awaiting_zookeeper {
            self.finish_leave(myself);
        }
    }

    pub(crate) fn finish_leave(&mut self, myself: &ActorRef<MembershipMsg>) {
        let Some(leaving) = &mut self.leaving else {
            return;
        };
        if let Some(reply) = leaving.reply.take() {
            if !leaving.awaiting_peers.is_empty() || leaving.awaiting_zookeeper {
                tracing::warn!(
                    peers = ?leaving.awaiting_peers,
                    zookeeper = leaving.awaiting_zookeeper,
                    "left without every acknowledgement"
                );
            }
            let _ = reply.send(());
            myself.stop(Some("left".to_string()));
        }
    }
}
