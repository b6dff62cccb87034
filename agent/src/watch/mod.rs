//! Watches: per `[[watch]]`, a `WatchActor` keeping the subtree's current state (snapshots and
//! changes applied, duplicates ignored), debouncing, and running the watch's actions on it.

mod actor;
mod debounce;
mod subtree;

use std::collections::BTreeMap;

use serde_json::Value;

pub use actor::{WatchActor, WatchArgs, WatchMsg};
pub use debounce::Debounce;
pub use subtree::Subtree;

/// A watch's state as actions see it.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    pub watch: String,
    pub prefix: String,
    /// The registry index this state is as of (actions remember the last one they applied).
    pub index: u64,
    /// The newest change version under the prefix.
    pub version: u64,
    /// Key → (value, version), sorted by key.
    pub entries: BTreeMap<String, (Value, u64)>,
}
