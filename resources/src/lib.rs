//! Lathe's resource managers: whatever starts `lathe-node` processes for a cluster, behind one
//! trait, [`ResourceManager`]. A light crate (no actors, no RocksDB, no ZooKeeper): the `lathe`
//! CLI uses it for `lathe up`, `lathe-node` for its YARN backend.
//!
//! ```text
//!                    request(NodeLaunch) ──> ContainerId
//! caller ──────────> release(ContainerId)                    ┌─ local::LocalProcesses
//! (lathe up,         poll() ──> [ContainerEvent]  ── impl ───┤   one process per node on this machine
//!  the node's        adopt(ContainerId)                      └─ yarn::YarnBackend
//!  ResourceManager                                               one YARN application per node,
//!  actor)                                                        over the RM's REST API
//! ```
//!
//! A backend only starts, watches and stops what it is asked to. When to ask — how many nodes, when
//! to replace one that died, how long to back off — is its caller's business: `lathe up` restarts
//! each of its N nodes; a `lathe-node` leader asks for nodes when instances are pending for want
//! of capacity. Backends are blocking (plain threads and `ureq`): callers in async code run them
//! on a thread of their own.

pub mod local;
pub mod yarn;

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One `lathe-node` to start: what runs, with which arguments and environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLaunch {
    /// The node's name (its `--name`): unique in the cluster, and how the backend names the
    /// container (the local backend's log folder, the YARN application's name).
    pub name: String,
    /// The `lathe-node` binary (a path the machine that runs the container can execute).
    pub program: PathBuf,
    /// The arguments after the binary.
    pub args: Vec<String>,
    /// Extra environment variables: secrets such as `LATHE_COOKIE` travel here, never in `args`,
    /// where `ps` and the YARN UI show them.
    pub env: Vec<(String, String)>,
}

/// What a backend calls one started node: a local node's name, a YARN application id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ContainerId(pub String);

impl ContainerId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a container is in its life, as its backend reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum ContainerState {
    /// Asked for, not started yet: waiting for capacity (YARN: NEW … ACCEPTED).
    Requested,
    /// Its process runs.
    Running,
    /// It exited by itself, successfully.
    Finished { diagnostics: String },
    /// It exited with an error, was killed by a signal or lost, or could not start.
    Failed { diagnostics: String },
    /// It was stopped on request (`release`, or someone else killed it through the backend).
    Killed { diagnostics: String },
}

impl ContainerState {
    /// Whether the container is over: no more events come for it.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, ContainerState::Requested | ContainerState::Running)
    }

    /// `requested`, `running`, `finished`, `failed` or `killed` (metric labels, logs).
    pub fn name(&self) -> &'static str {
        match self {
            ContainerState::Requested => "requested",
            ContainerState::Running => "running",
            ContainerState::Finished { .. } => "finished",
            ContainerState::Failed { .. } => "failed",
            ContainerState::Killed { .. } => "killed",
        }
    }

    /// What the backend said about how it ended, if it did.
    pub fn diagnostics(&self) -> Option<&str> {
        match self {
            ContainerState::Requested | ContainerState::Running => None,
            ContainerState::Finished { diagnostics }
            | ContainerState::Failed { diagnostics }
            | ContainerState::Killed { diagnostics } => Some(diagnostics),
        }
    }
}

/// One state change of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    pub id: ContainerId,
    pub state: ContainerState,
}

/// Why a backend could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// The backend's service did not answer (connection refused, timeout).
    #[error("cannot reach the resource manager at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The service answered with an error (YARN's `RemoteException`).
    #[error("the resource manager refused to {action} ({status} {exception}): {message}")]
    Refused {
        action: String,
        status: u16,
        exception: String,
        message: String,
    },
    /// The service answered something this client does not understand.
    #[error("unexpected answer from the resource manager to {action}: {detail}")]
    Protocol { action: String, detail: String },
    /// The backend knows no such container (never started, or forgotten after its end).
    #[error("no container {0}")]
    UnknownContainer(ContainerId),
    /// The container cannot be started as asked (a name already running, a bad request).
    #[error("cannot start {name}: {reason}")]
    Launch { name: String, reason: String },
    /// This backend cannot do that at all.
    #[error("the {backend} backend cannot {action}")]
    Unsupported {
        backend: &'static str,
        action: &'static str,
    },
}

/// A resource manager: starts `lathe-node`s in containers, stops them, and says what became of
/// them. Every method may block (network, processes); none waits for a container to start.
pub trait ResourceManager: Send {
    /// A short name for logs: `local`, `yarn`.
    fn backend(&self) -> &'static str;

    /// Asks for one node. Returns as soon as the backend took the request; the container's states
    /// (requested, running, ...) follow through [`ResourceManager::poll`]. Asking for N nodes is N
    /// calls.
    fn request(&mut self, launch: &NodeLaunch) -> Result<ContainerId, ResourceError>;

    /// Stops a container this backend started or adopted (gracefully where the backend can). Its
    /// end is reported by a later [`ResourceManager::poll`] as `Killed`.
    fn release(&mut self, id: &ContainerId) -> Result<(), ResourceError>;

    /// The state changes of every container this backend started or adopted since the last call,
    /// each reported once, in no particular order. The first poll after `request` or `adopt`
    /// reports the container's current state; after a terminal state the container is forgotten.
    fn poll(&mut self) -> Result<Vec<ContainerEvent>, ResourceError>;

    /// Watches a container another instance of this backend started (a previous scheduler
    /// leader's). Backends whose containers die with their starter cannot.
    fn adopt(&mut self, id: &ContainerId) -> Result<(), ResourceError> {
        let _ = id;
        Err(ResourceError::Unsupported {
            backend: self.backend(),
            action: "adopt containers it did not start",
        })
    }
}
