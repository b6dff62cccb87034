//! The data of membership: what a node says about itself, what `/v1/members` shows, what peers
//! send.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// What a node says about itself in every heartbeat and in its ZooKeeper member node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// The node's name (`--name`), unique in the cluster.
    pub name: String,
    /// The operating-system process id of the node.
    pub pid: u32,
    /// The ractor_cluster listen address (`--bind`).
    pub cluster_addr: SocketAddr,
    /// The REST address (`--http`).
    pub http_addr: SocketAddr,
    /// The node's tags (`--tag`).
    pub tags: Vec<String>,
    /// When the process started, in milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// Starts at `started_at_ms` and grows by one each time the node refutes being declared dead,
    /// so a restarted process or a node back from a partition always carries a newer one.
    pub incarnation: u64,
    /// The task types this node's binary can run.
    #[serde(default)]
    pub catalog: Vec<lathe::TaskType>,
    /// Whether this node holds the embedded registry (the founding node of a cluster without
    /// ZooKeeper); that node is the scheduler leader of such a cluster.
    #[serde(default)]
    pub holds_registry: bool,
    /// The most task instances the scheduler may place on this node (`--max-instances`);
    /// `None` = unlimited.
    #[serde(default)]
    pub max_instances: Option<u32>,
    /// The Lathe version the node runs (empty from a node too old to say).
    #[serde(default)]
    pub version: String,
}

/// How a node looks from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberStatus {
    /// A heartbeat arrived within `suspect_after` and the cluster session is up.
    Alive,
    /// The cluster session closed, or the last heartbeat is older than `suspect_after`.
    Suspect,
    /// No heartbeat for `dead_after`, it left, or its ZooKeeper member node vanished.
    Dead,
}

impl MemberStatus {
    /// The lowercase name used in JSON and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Alive => "alive",
            MemberStatus::Suspect => "suspect",
            MemberStatus::Dead => "dead",
        }
    }
}

/// One entry of `/v1/members`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberView {
    pub name: String,
    pub pid: u32,
    pub cluster_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub tags: Vec<String>,
    pub status: MemberStatus,
    /// Whether this node is the scheduler leader: with ZooKeeper, the member whose ephemeral node
    /// is the oldest; without, the founding node that holds the registry.
    pub leader: bool,
    /// The task types this node can run.
    pub catalog: Vec<lathe::TaskType>,
    /// The most task instances the scheduler places on this node (`--max-instances`); `null` =
    /// unlimited.
    pub max_instances: Option<u32>,
    /// The Lathe version the node runs.
    #[serde(default)]
    pub version: String,
    /// Milliseconds since the last heartbeat from that node; `None` for this node itself and for
    /// nodes only known from ZooKeeper so far.
    pub last_heartbeat_ms_ago: Option<u64>,
    pub is_self: bool,
    pub incarnation: u64,
    pub started_at_ms: u64,
}

/// Which end of a refused cluster session this node was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionDirection {
    /// This node connected out (to a seed or a member).
    Outgoing,
    /// The peer connected in.
    Incoming,
}

/// A peer that opened a cluster session and dropped it before authenticating: a cookie mismatch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The TCP address of the other end.
    pub peer_addr: String,
    /// The ractor node name (`name@host`) the peer announced, if it got that far.
    pub peer_node: Option<String>,
    pub direction: SessionDirection,
    /// Whether the peer is one of this node's `--join` seeds.
    pub seed: bool,
    /// When the refusal was detected, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// How joining the cluster is going, for `lathe-node` to decide whether to carry on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinState {
    /// No `--join` seeds: this node founds a cluster.
    Founding,
    /// Seeds are configured and no peer session is up yet.
    Joining,
    /// At least one peer session authenticated.
    Joined,
    /// A seed refused this node (cookie mismatch) and no peer session is up.
    Refused(Refusal),
}

/// What membership actors of different nodes tell each other (serialized with `blanket_serde`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMessage {
    /// Sent every `heartbeat_interval` to every remote member.
    Heartbeat(MemberInfo),
    /// Sent on graceful shutdown: mark me dead at once.
    Leave { name: String, incarnation: u64 },
    /// The answer to `Leave`, so the leaving node knows its peers heard it.
    LeaveAck { from: String },
    /// "I hold you dead at this incarnation": the receiver bumps its incarnation to come back.
    Refute { name: String, incarnation: u64 },
    /// Under cluster TLS, every reconnect tick (1 s): the members the sender holds alive, by name
    /// and cluster address. ractor_cluster's own transitive connects are plain TCP, which a TLS
    /// port refuses, so without ZooKeeper this is how a node that joined through one seed finds
    /// the others (it dials them itself, over TLS).
    Members(Vec<(String, SocketAddr)>),
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
