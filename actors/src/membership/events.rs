//! Forwards ractor_cluster NodeServer events to the membership actor as plain messages.

use ractor::ActorRef;
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::NodeEventSubscription;

use super::actor::MembershipMsg;
use super::sessions::{SessionEvent, SessionEventKind};

/// The id of membership's subscription on the NodeServer.
pub(crate) const SUBSCRIPTION_ID: &str = "lathe.membership";

/// A NodeServer subscription that casts every session event to the membership actor.
pub(crate) struct SessionEvents {
    pub(crate) membership: ActorRef<MembershipMsg>,
}

impl SessionEvents {
    fn forward(&self, kind: SessionEventKind, session: NodeServerSessionInformation) {
        let (peer_node, connection_string) = match session.peer_name {
            Some(name) => (Some(name.name), Some(name.connection_string)),
            None => (None, None),
        };
        let event = SessionEvent {
            kind,
            id: session.actor.get_id(),
            peer_addr: session.peer_addr,
            is_server: session.is_server,
            peer_node,
            connection_string,
        };
        // The membership actor being gone is its supervisor's business, not the NodeServer's.
        let _ = self.membership.cast(MembershipMsg::Session(event));
    }
}

impl NodeEventSubscription for SessionEvents {
    fn node_session_opened(&self, session: NodeServerSessionInformation) {
        self.forward(SessionEventKind::Opened, session);
    }

    fn node_session_disconnected(&self, session: NodeServerSessionInformation) {
        self.forward(SessionEventKind::Closed, session);
    }

    fn node_session_authenticated(&self, session: NodeServerSessionInformation) {
        self.forward(SessionEventKind::Authenticated, session);
    }
}
