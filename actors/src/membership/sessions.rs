//! Cluster sessions as seen through NodeServer events, and the rule that calls a drop a refusal.
//!
//! ractor_cluster authenticates a session with a cookie challenge. With a wrong cookie the session
//! opens, the peers exchange names, and the accepting end drops it a few milliseconds later:
//! `client_connect` has long returned `Ok`. So a session that closes before it authenticated, whose
//! peer named itself, and to which no other session authenticated meanwhile (a lost simultaneous-
//! connect election also drops one session) is a refusal.

use std::collections::HashMap;
use std::time::Duration;

use ractor::ActorId;
use tokio::time::Instant;

/// How long after an unauthenticated close another session to the same peer may still win.
pub(crate) const REFUSAL_GRACE: Duration = Duration::from_secs(2);

/// How long an outgoing session may take to authenticate before a new attempt is made.
const HANDSHAKE_PATIENCE: Duration = Duration::from_secs(10);

/// One NodeServer event, reduced to plain data.
#[derive(Debug, Clone)]
pub(crate) struct SessionEvent {
    pub(crate) kind: SessionEventKind,
    pub(crate) id: ActorId,
    pub(crate) peer_addr: String,
    pub(crate) is_server: bool,
    /// The peer's ractor node name, `name@host`, once it announced it.
    pub(crate) peer_node: Option<String>,
    /// The peer's advertised listen address, `host:port`, once known.
    pub(crate) connection_string: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionEventKind {
    Opened,
    Authenticated,
    Closed,
}

/// A session that closed before authenticating, waiting for [`REFUSAL_GRACE`] to be classified.
#[derive(Debug, Clone)]
pub(crate) struct UnauthenticatedClose {
    pub(crate) peer_addr: String,
    pub(crate) is_server: bool,
    pub(crate) peer_node: Option<String>,
    pub(crate) connection_string: Option<String>,
    pub(crate) lifetime: Duration,
    pub(crate) closed_at: Instant,
}

/// What an unauthenticated close was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseVerdict {
    /// The peer named itself and never authenticated: cookie mismatch.
    Refused,
    /// Another session to the same peer authenticated: a lost election or a duplicate.
    Superseded,
    /// This node connected to itself.
    SelfConnection,
    /// Closed before the peer even named itself (not a ractor node, or it died mid-handshake).
    Dropped,
}

/// The refusal rule, as a pure function.
pub(crate) fn classify_unauthenticated_close(
    close: &UnauthenticatedClose,
    own_node: &str,
    peer_established: bool,
) -> CloseVerdict {
    match &close.peer_node {
        Some(node) if node == own_node => CloseVerdict::SelfConnection,
        _ if peer_established => CloseVerdict::Superseded,
        None => CloseVerdict::Dropped,
        Some(_) => CloseVerdict::Refused,
    }
}

/// The member name in a ractor node name (`name@host` → `name`).
pub(crate) fn member_name(node: &str) -> &str {
    node.rsplit_once('@').map_or(node, |(name, _)| name)
}

/// What one event meant for membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Applied {
    Opened,
    /// A session authenticated, to this member if the peer named itself.
    Up(Option<String>),
    Closed(Closed),
}

/// What a closed session meant for membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Closed {
    /// An authenticated session to `member` closed; `member` is `None` if no session to that
    /// member remains.
    Established {
        member: Option<String>,
    },
    Unauthenticated,
    Unknown,
}

#[derive(Debug, Clone)]
struct Tracked {
    peer_addr: String,
    is_server: bool,
    opened_at: Instant,
    authenticated: bool,
    peer_node: Option<String>,
    connection_string: Option<String>,
}

impl Tracked {
    fn opened(event: &SessionEvent, now: Instant) -> Self {
        Tracked {
            peer_addr: event.peer_addr.clone(),
            is_server: event.is_server,
            opened_at: now,
            authenticated: false,
            peer_node: None,
            connection_string: None,
        }
    }
}

/// Open sessions, recent authentications, and closes waiting to be classified.
#[derive(Debug, Default)]
pub(crate) struct SessionTracker {
    sessions: HashMap<ActorId, Tracked>,
    /// Last authentication per peer node name and per connection string.
    last_authenticated: HashMap<String, Instant>,
    pending: Vec<UnauthenticatedClose>,
}

impl SessionTracker {
    /// Applies one event.
    pub(crate) fn apply(&mut self, event: &SessionEvent, now: Instant) -> Applied {
        match event.kind {
            SessionEventKind::Opened => {
                self.sessions.insert(event.id, Tracked::opened(event, now));
                Applied::Opened
            }
            SessionEventKind::Authenticated => {
                let tracked = self
                    .sessions
                    .entry(event.id)
                    .or_insert_with(|| Tracked::opened(event, now));
                tracked.authenticated = true;
                tracked.peer_node = event.peer_node.clone();
                tracked.connection_string = event.connection_string.clone();
                for key in event.peer_node.iter().chain(event.connection_string.iter()) {
                    self.last_authenticated.insert(key.clone(), now);
                }
                Applied::Up(
                    event
                        .peer_node
                        .as_deref()
                        .map(|node| member_name(node).to_string()),
                )
            }
            SessionEventKind::Closed => Applied::Closed(self.close(event, now)),
        }
    }

    fn close(&mut self, event: &SessionEvent, now: Instant) -> Closed {
        let Some(tracked) = self.sessions.remove(&event.id) else {
            return Closed::Unknown;
        };
        if tracked.authenticated {
            let node = tracked.peer_node.or_else(|| event.peer_node.clone());
            let member = node
                .filter(|n| !self.has_session(Some(n), None))
                .map(|n| member_name(&n).to_string());
            return Closed::Established { member };
        }
        self.pending.push(UnauthenticatedClose {
            peer_addr: event.peer_addr.clone(),
            is_server: event.is_server,
            peer_node: event.peer_node.clone(),
            connection_string: event.connection_string.clone(),
            lifetime: now.saturating_duration_since(tracked.opened_at),
            closed_at: now,
        });
        Closed::Unauthenticated
    }

    /// Classifies the closes older than [`REFUSAL_GRACE`].
    pub(crate) fn take_due(
        &mut self,
        own_node: &str,
        now: Instant,
    ) -> Vec<(UnauthenticatedClose, CloseVerdict)> {
        let (due, later): (Vec<_>, Vec<_>) = self
            .pending
            .drain(..)
            .partition(|c| now.saturating_duration_since(c.closed_at) >= REFUSAL_GRACE);
        self.pending = later;
        due.into_iter()
            .map(|close| {
                let established =
                    self.established_since(&close, close.closed_at.checked_sub(REFUSAL_GRACE));
                let verdict = classify_unauthenticated_close(&close, own_node, established);
                (close, verdict)
            })
            .collect()
    }

    fn established_since(&self, close: &UnauthenticatedClose, since: Option<Instant>) -> bool {
        let keys = close.peer_node.iter().chain(close.connection_string.iter());
        let recent = keys
            .filter_map(|k| self.last_authenticated.get(k))
            .any(|at| since.is_none_or(|since| *at >= since));
        recent || self.has_session(close.peer_node.as_ref(), close.connection_string.as_ref())
    }

    fn has_session(&self, node: Option<&String>, connection_string: Option<&String>) -> bool {
        self.sessions.values().any(|s| {
            s.authenticated
                && ((node.is_some() && s.peer_node.as_ref() == node)
                    || (connection_string.is_some()
                        && s.connection_string.as_ref() == connection_string))
        })
    }

    /// Whether an authenticated session to this member (by name or by address) is up.
    pub(crate) fn is_connected(&self, member: &str, cluster_addr: &str) -> bool {
        self.sessions.values().any(|s| {
            s.authenticated
                && (s.peer_node.as_deref().map(member_name) == Some(member)
                    || s.connection_string.as_deref() == Some(cluster_addr))
        })
    }

    /// Whether an outgoing session to `peer_addr` opened recently and is still authenticating.
    pub(crate) fn is_handshaking(&self, peer_addr: &str, now: Instant) -> bool {
        self.sessions.values().any(|s| {
            !s.authenticated
                && !s.is_server
                && s.peer_addr == peer_addr
                && now.saturating_duration_since(s.opened_at) < HANDSHAKE_PATIENCE
        })
    }

    /// Whether any authenticated session is up.
    pub(crate) fn any_established(&self) -> bool {
        self.sessions.values().any(|s| s.authenticated)
    }

    #[cfg(test)]
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}
