//! The status board: what `/status` shows, written by the actors as things happen (so the HTTP
//! endpoint never waits on a busy actor) and read by gossip for this agent's progress.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The registry stream.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RegistryStatus {
    /// The node the current session talks to.
    pub addr: String,
    /// `sse` or `poll`.
    pub transport: String,
    /// Whether the current session has delivered an event.
    pub connected: bool,
    /// The last registry index received.
    pub index: u64,
    pub last_error: Option<String>,
    pub last_error_at_ms: Option<u64>,
}

/// The last outcome of one action.
#[derive(Debug, Clone, Serialize)]
pub struct ActionStatus {
    pub name: String,
    pub kind: String,
    /// `applied`, `unchanged`, `rejected` (the check refused the render: the old config stays)
    /// or `failed` (retried).
    pub result: String,
    pub ok: bool,
    pub detail: String,
    /// The watch's index this outcome is for.
    pub index: u64,
    pub at_ms: u64,
    /// The last index applied (never acted on twice).
    pub applied_index: Option<u64>,
    pub last_error: Option<String>,
    pub last_error_at_ms: Option<u64>,
}

/// One watch.
#[derive(Debug, Clone, Serialize)]
pub struct WatchStatus {
    pub name: String,
    pub prefix: String,
    /// The index of the subtree's current state.
    pub index: u64,
    /// The newest change seen under the prefix.
    pub version: u64,
    pub keys: usize,
    /// A change waits for its debounce or for a running action.
    pub pending: bool,
    /// A peer agent has seen a change under this prefix that this agent has not.
    pub behind: bool,
    pub peer_version: Option<u64>,
    pub peer: Option<String>,
    pub actions: Vec<ActionStatus>,
}

#[derive(Debug, Default, Serialize)]
struct BoardInner {
    agent: String,
    registry: RegistryStatus,
    watches: BTreeMap<String, WatchStatus>,
}

/// Shared, cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Board(Arc<Mutex<BoardInner>>);

impl Board {
    pub fn new(agent: &str) -> Self {
        let board = Board::default();
        board.lock().agent = agent.to_string();
        board
    }

    fn lock(&self) -> MutexGuard<'_, BoardInner> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn add_watch(&self, name: &str, prefix: &str) {
        self.lock().watches.insert(
            name.to_string(),
            WatchStatus {
                name: name.to_string(),
                prefix: prefix.to_string(),
                index: 0,
                version: 0,
                keys: 0,
                pending: false,
                behind: false,
                peer_version: None,
                peer: None,
                actions: Vec::new(),
            },
        );
    }

    pub fn stream_index(&self) -> u64 {
        self.lock().registry.index
    }

    pub fn set_registry(&self, addr: &str, transport: &str, connected: bool) {
        let mut inner = self.lock();
        inner.registry.addr = addr.to_string();
        inner.registry.transport = transport.to_string();
        inner.registry.connected = connected;
    }

    pub fn set_connected(&self, index: u64) {
        let mut inner = self.lock();
        inner.registry.connected = true;
        inner.registry.index = inner.registry.index.max(index);
    }

    pub fn set_error(&self, error: &str) {
        let mut inner = self.lock();
        inner.registry.connected = false;
        inner.registry.last_error = Some(error.to_string());
        inner.registry.last_error_at_ms = Some(now_ms());
    }

    /// Updates a watch's entry with `update`.
    pub fn update_watch(&self, name: &str, update: impl FnOnce(&mut WatchStatus)) {
        if let Some(watch) = self.lock().watches.get_mut(name) {
            update(watch);
        }
    }

    /// Records an action's outcome (keeping its last error).
    pub fn set_action(&self, watch: &str, mut status: ActionStatus) {
        self.update_watch(watch, |w| {
            match w.actions.iter_mut().find(|a| a.name == status.name) {
                Some(existing) => {
                    if status.last_error.is_none() {
                        status.last_error = existing.last_error.take();
                        status.last_error_at_ms = existing.last_error_at_ms;
                    }
                    *existing = status;
                }
                None => w.actions.push(status),
            }
        });
    }

    /// Per watch: (name, prefix, version, index this agent's state is known good through).
    pub fn progress(&self) -> Vec<(String, String, u64, u64)> {
        let inner = self.lock();
        let stream = inner.registry.index;
        inner
            .watches
            .values()
            .map(|w| {
                (
                    w.name.clone(),
                    w.prefix.clone(),
                    w.version,
                    stream.max(w.index),
                )
            })
            .collect()
    }

    /// The `/status` document.
    pub fn to_json(&self) -> serde_json::Value {
        let inner = self.lock();
        let behind = inner.watches.values().any(|w| w.behind);
        serde_json::json!({
            "agent": inner.agent,
            "registry": inner.registry,
            "behind": behind,
            "watches": inner.watches,
        })
    }
}
