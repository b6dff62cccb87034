//! Whom to (re)connect to, and when: ractor_cluster never reconnects by itself.
//!
//! Every second the membership actor asks [`Reconnector::plan`] for targets:
//! - seeds, while no session is up, each with exponential back-off (1 s … [`SEED_BACKOFF_MAX`]);
//! - known non-dead members whose session is closed, every time;
//! - dead members, with back-off up to [`DEAD_BACKOFF_MAX`] (a partition heals from either side);
//! - members a peer told of (under cluster TLS) and not met yet, with the seeds' back-off.
//!
//! Connecting happens in a spawned task that reports back by message; `Ok` only means the TCP
//! connection opened: authentication (or refusal) shows up later in the NodeServer events.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use ractor::ActorRef;
use ractor_cluster::{ClientConnectErr, NodeServerMessage};
use tokio::time::Instant;

use super::actor::MembershipMsg;
use super::sessions::SessionTracker;
use super::table::MemberTable;
use super::types::MemberStatus;

pub(crate) const RECONNECT_INTERVAL: Duration = Duration::from_secs(1);
const SEED_BACKOFF_MAX: Duration = Duration::from_secs(8);
const DEAD_BACKOFF_MAX: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The most members learned from peers and not met yet that a node keeps dialing.
const MAX_LEARNED: usize = 1024;

/// Something to connect to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Target {
    Seed(String),
    Member {
        name: String,
        addr: SocketAddr,
        dead: bool,
    },
    /// A member a peer holds alive that this node has not heard from itself.
    Learned {
        name: String,
        addr: SocketAddr,
    },
}

impl Target {
    /// The longest back-off between attempts; `None`: tried on every reconnect tick.
    fn backoff_cap(&self) -> Option<Duration> {
        match self {
            Target::Seed(_) | Target::Learned { .. } => Some(SEED_BACKOFF_MAX),
            Target::Member { dead: true, .. } => Some(DEAD_BACKOFF_MAX),
            Target::Member { dead: false, .. } => None,
        }
    }

    pub(crate) fn address(&self) -> String {
        match self {
            Target::Seed(seed) => seed.clone(),
            Target::Member { addr, .. } | Target::Learned { addr, .. } => addr.to_string(),
        }
    }
}

/// How a connect attempt went.
#[derive(Debug, Clone)]
pub(crate) enum Attempt {
    /// TCP connection opened to this address; the handshake continues in the NodeServer.
    Opened(SocketAddr),
    /// The target resolves to this node's own listener.
    OwnAddress,
    Failed(String),
}

#[derive(Debug, Clone, Copy)]
struct Backoff {
    next: Instant,
    delay: Duration,
}

/// Reconnect bookkeeping: seeds, back-off per address, attempts in flight.
#[derive(Debug)]
pub(crate) struct Reconnector {
    seeds: Vec<String>,
    backoff: HashMap<String, Backoff>,
    in_flight: HashSet<String>,
    /// Addresses the seeds resolved to, to tell a refusing seed from a refusing member.
    seed_addrs: HashSet<SocketAddr>,
    /// Members peers told of that are not in the table yet (`PeerMessage::Members`).
    learned: HashMap<String, SocketAddr>,
}

impl Reconnector {
    pub(crate) fn new(seeds: Vec<String>) -> Self {
        Reconnector {
            seeds,
            backoff: HashMap::new(),
            in_flight: HashSet::new(),
            seed_addrs: HashSet::new(),
            learned: HashMap::new(),
        }
    }

    /// Remembers a member a peer holds alive, to dial until it is in the table. Bounded: a peer
    /// cannot make this node remember more than [`MAX_LEARNED`] addresses.
    pub(crate) fn learn(&mut self, name: String, addr: SocketAddr) {
        if self.learned.len() < MAX_LEARNED || self.learned.contains_key(&name) {
            self.learned.insert(name, addr);
        }
    }

    pub(crate) fn has_seeds(&self) -> bool {
        !self.seeds.is_empty()
    }

    pub(crate) fn is_seed_addr(&self, addr: &str) -> bool {
        addr.parse().is_ok_and(|a| self.seed_addrs.contains(&a))
    }

    /// The targets to try now; marks them in flight.
    pub(crate) fn plan(
        &mut self,
        table: &MemberTable,
        sessions: &SessionTracker,
        now: Instant,
    ) -> Vec<Target> {
        let mut targets = Vec::new();
        if sessions.any_established() {
            for seed in &self.seeds {
                self.backoff.remove(seed);
            }
        } else {
            targets.extend(self.seeds.iter().map(|s| Target::Seed(s.clone())));
        }
        self.learned.retain(|name, _| !table.knows(name));
        for (name, addr) in &self.learned {
            let addr_text = addr.to_string();
            let busy =
                sessions.is_connected(name, &addr_text) || sessions.is_handshaking(&addr_text, now);
            if !busy {
                targets.push(Target::Learned {
                    name: name.clone(),
                    addr: *addr,
                });
            }
        }
        for (info, status) in table.peers() {
            let addr = info.cluster_addr.to_string();
            if sessions.is_connected(&info.name, &addr) || sessions.is_handshaking(&addr, now) {
                self.backoff.remove(&addr);
                continue;
            }
            let dead = status == MemberStatus::Dead;
            targets.push(Target::Member {
                name: info.name.clone(),
                addr: info.cluster_addr,
                dead,
            });
        }
        targets.retain(|t| {
            let key = t.address();
            let due =
                t.backoff_cap().is_none() || self.backoff.get(&key).is_none_or(|b| b.next <= now);
            due && self.in_flight.insert(key)
        });
        for target in &targets {
            let Some(cap) = target.backoff_cap() else {
                continue;
            };
            let entry = self.backoff.entry(target.address()).or_insert(Backoff {
                next: now,
                delay: RECONNECT_INTERVAL,
            });
            entry.next = now + entry.delay;
            entry.delay = (entry.delay * 2).min(cap);
        }
        targets
    }

    /// Records the outcome of an attempt; returns when a throttled target is tried again.
    pub(crate) fn done(
        &mut self,
        target: &Target,
        attempt: &Attempt,
        now: Instant,
    ) -> Option<Duration> {
        self.in_flight.remove(&target.address());
        match (target, attempt) {
            (Target::Seed(_), Attempt::Opened(addr)) => {
                self.seed_addrs.insert(*addr);
            }
            (Target::Seed(seed), Attempt::OwnAddress) => self.seeds.retain(|s| s != seed),
            _ => {}
        }
        self.backoff
            .get(&target.address())
            .map(|b| b.next.saturating_duration_since(now))
    }
}

/// Connects to `target` in a task and reports the attempt to `membership`.
pub(crate) fn spawn_connect(
    node_server: ActorRef<NodeServerMessage>,
    own_addr: impl Fn(&SocketAddr) -> bool + Send + 'static,
    target: Target,
    tls: Option<tokio_rustls::TlsConnector>,
    membership: ActorRef<MembershipMsg>,
) {
    tokio::spawn(async move {
        let address = target.address();
        let connecting = connect(&node_server, &address, own_addr, tls);
        let attempt = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(attempt) => attempt,
            Err(_) => Attempt::Failed(format!("timed out after {CONNECT_TIMEOUT:?}")),
        };
        let _ = membership.cast(MembershipMsg::Connected(target, attempt));
    });
}

async fn connect(
    node_server: &ActorRef<NodeServerMessage>,
    address: &str,
    own_addr: impl Fn(&SocketAddr) -> bool,
    tls: Option<tokio_rustls::TlsConnector>,
) -> Attempt {
    let addr = match tokio::net::lookup_host(address)
        .await
        .map(|mut addrs| addrs.next())
    {
        Ok(Some(addr)) => addr,
        Ok(None) => return Attempt::Failed("address resolves to nothing".to_string()),
        Err(err) => return Attempt::Failed(format!("cannot resolve: {err}")),
    };
    if own_addr(&addr) {
        return Attempt::OwnAddress;
    }
    let connected = match tls {
        // The peer's certificate must name its IP: that is the address it advertises.
        Some(connector) => {
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            ractor_cluster::client_connect_enc(node_server, addr, connector, name).await
        }
        None => ractor_cluster::client_connect(node_server, addr).await,
    };
    match connected {
        Ok(()) => Attempt::Opened(addr),
        Err(ClientConnectErr::Socket(err)) => Attempt::Failed(err.to_string()),
        Err(err) => Attempt::Failed(err.to_string()),
    }
}
