//! The supervision tree of one node, as its supervisors report it (`GET /v1/tree`, the
//! `lathe_actor_*` metrics, the failure drills of `POST /v1/actors/kill`).
//!
//! ```text
//! node                                 node-supervisor      node/src/supervisor.rs
//! ├── node/membership                  membership
//! ├── node/registry                    registry-supervisor  actors/src/registry/supervisor.rs
//! │   ├── node/registry/feed           registry-feed
//! │   ├── node/registry/shard-N        registry-shard
//! │   ├── node/registry/store-server   store-server         the embedded store, for joiners
//! │   └── node/registry/store-follower store-follower       a joiner's view of it
//! ├── node/scheduler                   scheduler
//! ├── node/resources                   resource-manager     actors/src/resources/actor.rs
//! └── node/tasks                       task-supervisor      actors/src/tasks/supervisor.rs
//!     ├── node/tasks/<group>/<i>       task
//!     ├── node/tasks/cache-server      cache-server         peers' cache gets
//!     └── node/tasks/flow-server       flow-server          peers' flow messages
//! ```
//!
//! The store, cache and flow servers are kept by [`spawn_supervised`](crate::supervised).
//!
//! Nothing here walks ractor's internals: each supervisor already knows its children, and tells
//! its [`TreeScope`] when one starts, dies and is restarted, or goes away. The [`ActorTree`] is a
//! small map behind a mutex, held for microseconds; the HTTP API, the metrics and the drills read
//! it. Paths are node-local, stable across restarts and readable; the root is always `node`.

mod metrics;
mod scope;
mod snapshot;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use ractor::ActorCell;
use serde::Serialize;

pub use metrics::TreeMetrics;
pub use scope::{ChildReport, TreeScope};
pub use snapshot::ActorSnapshot;

/// The path of a node's root supervisor.
pub const ROOT: &str = "node";

/// What an actor of the tree is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActorKind {
    NodeSupervisor,
    Membership,
    RegistrySupervisor,
    RegistryFeed,
    RegistryShard,
    Scheduler,
    ResourceManager,
    TaskSupervisor,
    Task,
    StoreServer,
    StoreFollower,
    CacheServer,
    FlowServer,
}

impl ActorKind {
    pub const ALL: [ActorKind; 13] = [
        ActorKind::NodeSupervisor,
        ActorKind::Membership,
        ActorKind::RegistrySupervisor,
        ActorKind::RegistryFeed,
        ActorKind::RegistryShard,
        ActorKind::Scheduler,
        ActorKind::ResourceManager,
        ActorKind::TaskSupervisor,
        ActorKind::Task,
        ActorKind::StoreServer,
        ActorKind::StoreFollower,
        ActorKind::CacheServer,
        ActorKind::FlowServer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ActorKind::NodeSupervisor => "node-supervisor",
            ActorKind::Membership => "membership",
            ActorKind::RegistrySupervisor => "registry-supervisor",
            ActorKind::RegistryFeed => "registry-feed",
            ActorKind::RegistryShard => "registry-shard",
            ActorKind::Scheduler => "scheduler",
            ActorKind::ResourceManager => "resource-manager",
            ActorKind::TaskSupervisor => "task-supervisor",
            ActorKind::Task => "task",
            ActorKind::StoreServer => "store-server",
            ActorKind::StoreFollower => "store-follower",
            ActorKind::CacheServer => "cache-server",
            ActorKind::FlowServer => "flow-server",
        }
    }
}

/// Where an actor of the tree is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorStatus {
    Running,
    /// It died and its supervisor restarts it (possibly after a back-off).
    Restarting,
    /// Beyond its restart intensity: left alone (a task, until it is retried).
    Failed,
    Stopped,
}

impl ActorStatus {
    pub fn name(self) -> &'static str {
        match self {
            ActorStatus::Running => "running",
            ActorStatus::Restarting => "restarting",
            ActorStatus::Failed => "failed",
            ActorStatus::Stopped => "stopped",
        }
    }
}

/// Why a failure drill could not kill an actor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KillError {
    #[error("no actor at {0:?} on this node (see GET /v1/tree)")]
    Unknown(String),
    #[error("actor {path} is {status}: nothing runs there to kill")]
    NotRunning { path: String, status: &'static str },
}

pub(crate) struct Entry {
    /// Order of first appearance: children are listed in it.
    pub(crate) seq: u64,
    pub(crate) parent: Option<String>,
    pub(crate) kind: ActorKind,
    pub(crate) status: ActorStatus,
    pub(crate) restarts: u64,
    pub(crate) reason: Option<String>,
    pub(crate) cell: Option<ActorCell>,
}

pub(crate) struct Inner {
    pub(crate) node: String,
    pub(crate) entries: HashMap<String, Entry>,
    next_seq: u64,
    /// Restarts by kind since the node started (`lathe_actor_restarts_total`).
    pub(crate) restarts: BTreeMap<ActorKind, u64>,
}

/// The supervision tree of one node; cheap to clone.
#[derive(Clone)]
pub struct ActorTree(Arc<Mutex<Inner>>);

impl std::fmt::Debug for ActorTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("ActorTree")
            .field("node", &inner.node)
            .field("actors", &inner.entries.len())
            .finish()
    }
}

impl ActorTree {
    pub fn new(node: impl Into<String>) -> Self {
        ActorTree(Arc::new(Mutex::new(Inner {
            node: node.into(),
            entries: HashMap::new(),
            next_seq: 0,
            restarts: BTreeMap::new(),
        })))
    }

    /// The node's name (the `node` label of the metrics).
    pub fn node(&self) -> String {
        self.lock().node.clone()
    }

    /// Registers the root supervisor (path [`ROOT`]) and returns its scope.
    pub fn root(&self, kind: ActorKind, cell: &ActorCell) -> TreeScope {
        self.lock().started(ROOT, None, kind, cell);
        TreeScope::at(self.clone(), ROOT)
    }

    /// The scope at `path`, for a supervisor that starts before its parent registers (the
    /// embedded registry's server starts before the node's root supervisor).
    pub fn scope(&self, path: &str) -> TreeScope {
        TreeScope::at(self.clone(), path)
    }

    /// Restarts of actors of `kind` since the node started.
    pub fn restarts_of(&self, kind: ActorKind) -> u64 {
        self.lock().restarts.get(&kind).copied().unwrap_or(0)
    }

    /// Kills the live actor at `path` as if it had crashed (`ActorCell::kill`): its supervisor sees
    /// it die and applies its restart policy. Returns its kind.
    pub fn kill(&self, path: &str) -> Result<ActorKind, KillError> {
        let inner = self.lock();
        let entry = inner
            .entries
            .get(path)
            .ok_or_else(|| KillError::Unknown(path.to_string()))?;
        match (&entry.cell, entry.status) {
            (Some(cell), ActorStatus::Running) => {
                tracing::warn!(%path, kind = entry.kind.name(), "failure drill: killing the actor");
                cell.kill();
                Ok(entry.kind)
            }
            (_, status) => Err(KillError::NotRunning {
                path: path.to_string(),
                status: status.name(),
            }),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    pub(super) fn started(
        &mut self,
        path: &str,
        parent: Option<&str>,
        kind: ActorKind,
        cell: &ActorCell,
    ) {
        let entry = self.entry(path, parent, kind);
        entry.status = ActorStatus::Running;
        entry.reason = None;
        entry.cell = Some(cell.clone());
    }

    pub(super) fn entry(
        &mut self,
        path: &str,
        parent: Option<&str>,
        kind: ActorKind,
    ) -> &mut Entry {
        let seq = &mut self.next_seq;
        self.entries.entry(path.to_string()).or_insert_with(|| {
            *seq += 1;
            Entry {
                seq: *seq,
                parent: parent.map(str::to_string),
                kind,
                status: ActorStatus::Running,
                restarts: 0,
                reason: None,
                cell: None,
            }
        })
    }

    /// Removes `path` and everything below it.
    pub(super) fn remove_subtree(&mut self, path: &str) {
        let below = format!("{path}/");
        self.entries.retain(|p, entry| {
            p != path && !p.starts_with(&below) && entry.parent.as_deref() != Some(path)
        });
    }
}
