//! Topologies: the TOML file that declares functional groups, parsed and validated.
//!
//! ```toml
//! [task.http.lb]                      # a table with a `crate` key is a functional group
//! crate = "http_loadbalancer"         # required: the task crate's name
//! version = "0.8.2"                   # required: its Cargo version, in full
//! task = "my::LoadBalancer"           # required: the task path given to http_task!/task!
//! tasks = 3                           # required: instances, 1 to 10000
//! tags = ["lb", "net"]                # optional: tags carried by every instance
//! biases = [["lb", "frontpage"], [-10, 7]]  # optional: a score per tag, see below
//! restart = { strategy = "one-for-one", max_restarts = 5, within_seconds = 10 }  # optional
//! backend_distribution = [["task.http.frontpage.v4-2-1", "task.http.frontpage.v4-2-2"], [90, 10]]
//! ```
//!
//! - A group's name is its table path (`task.http.lb`), its registry path the same with slashes
//!   (`/task/http/lb`). Table names use `A-Z a-z 0-9 _ -` only, and the top-level `lathe` is
//!   reserved. Tables above a group are namespaces: they hold only tables. A group cannot contain
//!   another group.
//! - `biases`: parallel arrays, tags then integer scores. Placing an instance on a node adds the
//!   score once for every instance already there that carries the tag (negative avoids, positive
//!   attracts).
//! - `restart` ([`RestartPolicy`]), every key optional:
//!
//!   | key | default | meaning |
//!   |---|---|---|
//!   | `strategy` | `"one-for-one"` | on a crash, restart only it (`one-for-one`), every instance of the group on that node (`one-for-all`), or it and those with a higher index there (`rest-for-one`) |
//!   | `max_restarts` | `5` | at most this many restarts (0 to 1000) ... |
//!   | `within_seconds` | `10` | ... within this many seconds (1 to 86400); one more marks the instance `failed` |
//!   | `backoff_ms` | `100` | the first restart is immediate, the second waits this long (0 to 600000), each further one twice as long ... |
//!   | `max_backoff_ms` | `5000` | ... up to this (at least `backoff_ms`; raised to it when not given) |
//!
//! - `rollout` ([`RolloutPolicy`]): how a new `version` replaces the running instances, every key
//!   optional:
//!
//!   | key | default | meaning |
//!   |---|---|---|
//!   | `batch` | `1` | instances replaced at a time (1 to 10000) |
//!   | `healthy_seconds` | `5` | each new instance must run this long without a restart (0 to 86400) before the next batch |
//!   | `timeout_seconds` | `60` | a batch not healthy this long after it started fails the roll-out (above `healthy_seconds`) |
//!   | `on_failure` | `"rollback"` | then put every instance back on the old version (`rollback`), or stop where it is (`pause`) |
//!
//! - `flows` ([`FlowsSpec`]): `flows = { inputs = ["clicks"] }`, the streams the group consumes
//!   (see [`crate::flow`]).
//! - `state` ([`StateSpec`]): `state = { changelog = true }`: with Kafka, every state write is
//!   also written to the group's changelog topic, and an instance restores its state from it
//!   before its `start` runs, on whatever node it starts.
//! - `cache` is reserved for settings to come and refused today.
//! - Every other key is metadata: converted to JSON and stored at the group's registry path
//!   (`/task/http/lb/backend_distribution`), where running tasks read it and where it can be
//!   changed at run time. Metadata keys are registry path segments (`A-Z a-z 0-9 . _ -`).
//!
//! Errors name the file, line, column and group:
//! `my_topology.toml:3:1: group task.http.lb: missing required key "tasks" (add e.g. tasks = 3)`.
//! [`parse_all`] returns every error of a file; [`parse`] the first.

mod diff;
mod error;
mod flows;
mod group;
mod restart;
mod rollout;
mod state;
mod tags;
mod value;
mod walk;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use toml::de::DeTable;

pub use diff::{diff, ChangedField, GroupChange, MetadataChange, TopologyDiff};
pub use error::{TopologyError, TopologyErrors};
pub use flows::FlowsSpec;
pub use group::{FUTURE_KEYS, MAX_TASKS, RESERVED_KEYS};
pub use restart::{RestartPolicy, RestartStrategy};
pub use rollout::{OnFailure, Ratio, RolloutPolicy};
pub use state::StateSpec;
pub use tags::MAX_BIAS;

use crate::catalog::TaskType;
use crate::registry::KeyPath;
use error::Diagnostics;

/// A parsed, valid topology (the default one is empty: nothing deployed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// Sorted by name.
    pub groups: Vec<GroupSpec>,
}

/// One functional group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSpec {
    /// The table path: `task.http.frontpage.v4-2-1`.
    pub name: String,
    /// The registry path: `/task/http/frontpage/v4-2-1`.
    pub path: KeyPath,
    pub task_type: TaskType,
    /// How many instances, 1 to [`MAX_TASKS`].
    pub tasks: u32,
    pub tags: Vec<String>,
    /// (tag, score) pairs, in the order written.
    pub biases: Vec<(String, i64)>,
    pub restart: RestartPolicy,
    /// How a new task type replaces the running instances (topologies stored before roll-outs
    /// existed read as the default).
    #[serde(default)]
    pub rollout: RolloutPolicy,
    /// The streams the group consumes.
    #[serde(default)]
    pub flows: FlowsSpec,
    /// How its instances keep their state (`state = { changelog = true }`).
    #[serde(default)]
    pub state: StateSpec,
    /// Every non-reserved key, as JSON.
    pub metadata: BTreeMap<String, serde_json::Value>,
}

impl Topology {
    pub fn group(&self, name: &str) -> Option<&GroupSpec> {
        self.groups
            .binary_search_by(|g| g.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.groups[i])
    }

    /// Instances over all groups.
    pub fn instances(&self) -> u64 {
        self.groups.iter().map(|g| u64::from(g.tasks)).sum()
    }
}

/// Parses and validates a topology; `file` names it in errors. Returns the first error.
pub fn parse(file: &str, text: &str) -> Result<Topology, TopologyError> {
    parse_all(file, text).map_err(|errors| errors.first().clone())
}

/// Parses and validates a topology, returning every error found, in file order.
///
/// Broken TOML stops at its first syntax error (`file:line:col: <toml's message>`).
pub fn parse_all(file: &str, text: &str) -> Result<Topology, TopologyErrors> {
    let mut d = Diagnostics::new(file, text);
    let root = match DeTable::parse(text) {
        Ok(root) => root,
        Err(e) => {
            d.report(
                &e.span().unwrap_or(0..0),
                None,
                e.message().trim_end().to_string(),
            );
            return Err(d.finish().expect("an error was reported"));
        }
    };
    let mut groups = walk::groups(&mut d, root.get_ref());
    if let Some(errors) = d.finish() {
        return Err(errors);
    }
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Topology { groups })
}
