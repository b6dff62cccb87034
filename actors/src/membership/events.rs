//! Forwards ractor_cluster NodeServer events to the membership actor as plain messages, and
//! bounds the cluster handshake: ractor_cluster keeps a connection that never authenticates
//! (a port scanner, a slowloris) open forever, so every new session gets a deadline, after which
//! it is closed unless its cookie challenge succeeded.

use std::time::Duration;

use ractor::ActorRef;
use ractor_cluster::node::{NodeServerSessionInformation, NodeSessionMessage};
use ractor_cluster::NodeEventSubscription;

use super::actor::{kill_tree, MembershipMsg};
use super::sessions::{SessionEvent, SessionEventKind};

/// The id of membership's subscription on the NodeServer.
pub(crate) const SUBSCRIPTION_ID: &str = "lathe.membership";
/// How long a session may take to say whether it authenticated.
const AUTH_STATE_TIMEOUT_MS: u64 = 1000;

/// A NodeServer subscription that casts every session event to the membership actor.
pub(crate) struct SessionEvents {
    pub(crate) membership: ActorRef<MembershipMsg>,
    /// How long a new session may take to authenticate before it is closed.
    pub(crate) handshake_timeout: Duration,
    pub(crate) handshake_timeouts: prometheus::IntCounter,
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

    /// Closes `session` (its actor and the TCP actors below it) if it has not authenticated
    /// within the handshake timeout.
    fn guard_handshake(&self, session: &NodeServerSessionInformation) {
        let actor = session.actor.clone();
        let peer = session.peer_addr.clone();
        let deadline = self.handshake_timeout;
        let timeouts = self.handshake_timeouts.clone();
        tokio::spawn(async move {
            tokio::time::sleep(deadline).await;
            let authenticated = ractor::call_t!(
                actor,
                NodeSessionMessage::GetAuthenticationState,
                AUTH_STATE_TIMEOUT_MS
            );
            // An error: the session is gone already (or too wedged to answer: close it too).
            if matches!(authenticated, Ok(true)) {
                return;
            }
            if let Err(ractor::RactorErr::Messaging(_)) = authenticated {
                return;
            }
            tracing::warn!(%peer, timeout = ?deadline,
                "cluster connection did not authenticate in time: closing it");
            timeouts.inc();
            kill_tree(actor.get_cell()).await;
        });
    }
}

impl NodeEventSubscription for SessionEvents {
    fn node_session_opened(&self, session: NodeServerSessionInformation) {
        self.guard_handshake(&session);
        self.forward(SessionEventKind::Opened, session);
    }

    fn node_session_disconnected(&self, session: NodeServerSessionInformation) {
        self.forward(SessionEventKind::Closed, session);
    }

    fn node_session_authenticated(&self, session: NodeServerSessionInformation) {
        self.forward(SessionEventKind::Authenticated, session);
    }
}
