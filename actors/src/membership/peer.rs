//! `MembershipPeer`: the one remotely-advertised membership actor of a node.
//!
//! Its message type is serializable, so ractor_cluster proxies it onto every peer; it sits in the
//! process group [`MEMBERS_GROUP`] and in the node's own group ([`node_group`]), and forwards what
//! peers send to the local membership actor.

use ractor::{pg, Actor, ActorProcessingErr, ActorRef};

use super::actor::MembershipMsg;
use super::types::PeerMessage;

/// The process group of every node's `MembershipPeer`.
pub const MEMBERS_GROUP: &str = "lathe.membership";

/// The process group holding only the `MembershipPeer` of node `name`.
pub fn node_group(name: &str) -> String {
    format!("{MEMBERS_GROUP}.{name}")
}

pub(crate) struct MembershipPeer;

pub(crate) struct PeerArgs {
    pub(crate) name: String,
    pub(crate) membership: ActorRef<MembershipMsg>,
}

impl Actor for MembershipPeer {
    type Msg = PeerMessage;
    type State = ActorRef<MembershipMsg>;
    type Arguments = PeerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<PeerMessage>,
        args: PeerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        pg::join(MEMBERS_GROUP.to_string(), vec![myself.get_cell()]);
        pg::join(node_group(&args.name), vec![myself.get_cell()]);
        Ok(args.membership)
    }

    async fn handle(
        &self,
        _myself: ActorRef<PeerMessage>,
        message: PeerMessage,
        membership: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        membership.cast(MembershipMsg::Peer(message))?;
        Ok(())
    }
}

/// Casts `message` to every remote member of `group` (serialized over the cluster session).
pub(crate) fn cast_remote(group: &str, message: &PeerMessage) -> usize {
    let mut sent = 0;
    for cell in pg::get_members(&group.to_string()) {
        if cell.get_id().is_local() {
            continue;
        }
        let peer: ActorRef<PeerMessage> = cell.into();
        if peer.cast(message.clone()).is_ok() {
            sent += 1;
        }
    }
    sent
}
