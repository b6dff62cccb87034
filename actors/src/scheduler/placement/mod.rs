//! Placement: which node runs each task instance — a pure, deterministic function.
//!
//! [`place`] takes the topology's groups, the live nodes and the current assignments, and returns
//! one [`Assignment`] per instance it could place and one [`Pending`] (with the reason) per
//! instance it could not. No actors, no I/O: the scheduler actor reads its inputs from the
//! registry and writes the difference back.
//!
//! The rules, in order:
//! 1. **Catalog.** An instance goes only to a node whose catalog has its task type; when no node
//!    has it, the instance is pending: `no live node can run http_frontpage 4.2.2 my::FrontPage`.
//! 2. **Capacity.** A node started with `--max-instances N` never holds more than N instances (of
//!    any group). When every node that has the type is full, the instance is pending with
//!    [`PendingCause::Full`]: `every node that can run http_frontpage 4.2.2 my::FrontPage is
//!    full` — the cause a resource manager answers by asking for more nodes.
//! 3. **Stability.** A current assignment that is still valid (its group exists with the same task
//!    type, its index is below `tasks`, its node is live, has the type and room for it) stays
//!    where it is. Only new instances, those of dead nodes and invalid ones are placed, so a
//!    redeploy with more instances places only the new ones, and indices at or above `tasks` are
//!    dropped. A node holding more than its capacity keeps the first ones by (group, index).
//!    Moving running instances to improve balance is a separate, gentle step: [`rebalance`].
//! 4. **Score.** Each instance goes to the candidate node with the highest score:
//!    `Σ score(tag) × (instances on the node carrying tag)` over the group's `biases`, minus
//!    [`LOAD_PENALTY`] per instance already on the node (of any group). A node's own tags
//!    (`lathe-node --tag`) count as one instance carrying them, so `biases = [["ssd"], [5]]` draws
//!    a group to nodes started with `--tag ssd`. Ties go to the node whose name sorts first.
//! 5. **Order.** Groups are placed after the groups carrying the tags their biases name (the
//!    seed's load balancers after the frontpages, so the LB's +7 sees them), then by name; groups
//!    whose biases refer to each other in a cycle go by name. Instances of a group go by index.
//!
//! With the seed on three nodes: the ten frontpages spread 4/3/3, then each LB goes where
//! frontpages are (+7 each) and no LB is (-10 each): the three LBs land on three nodes.

mod bench;
mod order;
mod rebalance;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod rebalance_tests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use lathe::layout::Assignment;
use lathe::topology::GroupSpec;
use lathe::TaskType;
use serde::{Deserialize, Serialize};

pub use bench::bench_place;
pub use rebalance::{rebalance, MIN_GAIN};

/// What one instance already on a node costs in a node's score; biases are in the same unit.
pub const LOAD_PENALTY: i64 = 1;

/// A live node the scheduler may place instances on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCandidate {
    pub name: String,
    /// The task types the node can run.
    pub catalog: BTreeSet<TaskType>,
    /// The node's `--tag`s.
    pub tags: Vec<String>,
    /// The most instances the node takes (`--max-instances`); `None` = unlimited.
    #[serde(default)]
    pub max_instances: Option<u32>,
}

impl NodeCandidate {
    /// Whether `instances` already placed leave room for one more.
    pub fn has_room(&self, instances: usize) -> bool {
        self.max_instances
            .is_none_or(|max| instances < max as usize)
    }
}

/// The result of [`place`]: every instance `0..tasks` of every group is in exactly one list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Sorted by group, then index.
    pub assignments: Vec<Assignment>,
    /// Instances no live node can run, sorted by group, then index.
    pub pending: Vec<Pending>,
}

/// An instance that could not be placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub group: String,
    pub index: u32,
    pub cause: PendingCause,
    /// For people: what `cause` means for this instance's task type.
    pub reason: String,
}

/// Why an instance could not be placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PendingCause {
    /// No live node has the task type in its catalog.
    NoCatalog,
    /// Nodes have the type, and every one of them is at its `--max-instances`: more nodes (or
    /// more capacity) would place it.
    Full,
}

impl PendingCause {
    fn reason(self, task_type: &TaskType) -> String {
        match self {
            PendingCause::NoCatalog => format!("no live node can run {task_type}"),
            PendingCause::Full => format!("every node that can run {task_type} is full"),
        }
    }
}

/// One node while placing: its load and how many instances carry each tag.
struct NodeLoad<'a> {
    node: &'a NodeCandidate,
    instances: i64,
    tags: HashMap<&'a str, i64>,
}

impl<'a> NodeLoad<'a> {
    fn new(node: &'a NodeCandidate) -> Self {
        let mut tags = HashMap::new();
        for tag in &node.tags {
            tags.insert(tag.as_str(), 1);
        }
        NodeLoad {
            node,
            instances: 0,
            tags,
        }
    }

    fn add(&mut self, group: &'a GroupSpec) {
        self.instances += 1;
        for tag in &group.tags {
            *self.tags.entry(tag.as_str()).or_insert(0) += 1;
        }
    }

    fn score(&self, group: &GroupSpec) -> i64 {
        let bias: i64 = group
            .biases
            .iter()
            .map(|(tag, score)| score * self.tags.get(tag.as_str()).copied().unwrap_or(0))
            .sum();
        bias - LOAD_PENALTY * self.instances
    }
}

/// Places every instance of `groups` on `nodes`, keeping the valid ones of `current` in place.
///
/// Deterministic: the same groups, nodes and assignments give the same placement, whatever the
/// order of each list (names are unique; of repeated group or node names the first given counts).
pub fn place(groups: &[GroupSpec], nodes: &[NodeCandidate], current: &[Assignment]) -> Placement {
    let groups = sorted_unique(groups, |g| g.name.as_str());
    let nodes = sorted_unique(nodes, |n| n.name.as_str());
    let mut loads: Vec<NodeLoad<'_>> = nodes.iter().map(|n| NodeLoad::new(n)).collect();
    let node_index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    let group_index: HashMap<&str, &GroupSpec> =
        groups.iter().map(|g| (g.name.as_str(), *g)).collect();

    // (group, index) → node, for the current assignments that stay.
    let mut placed: BTreeMap<(&str, u32), usize> = BTreeMap::new();
    let mut current: Vec<&Assignment> = current.iter().collect();
    current.sort_by(|a, b| (&a.group, a.index, &a.node).cmp(&(&b.group, b.index, &b.node)));
    for assignment in current {
        let Some(group) = group_index.get(assignment.group.as_str()).copied() else {
            continue;
        };
        let Some(&node) = node_index.get(assignment.node.as_str()) else {
            continue;
        };
        let valid = assignment.index < group.tasks
            && assignment.task_type == group.task_type
            && nodes[node].catalog.contains(&group.task_type)
            && nodes[node].has_room(loads[node].instances as usize);
        let key = (group.name.as_str(), assignment.index);
        if valid && !placed.contains_key(&key) {
            placed.insert(key, node);
            loads[node].add(group);
        }
    }

    let mut able: HashMap<&TaskType, Vec<usize>> = HashMap::new();
    let mut pending = Vec::new();
    for group in order::placement_order(&groups) {
        let able = able.entry(&group.task_type).or_insert_with(|| {
            (0..nodes.len())
                .filter(|&i| nodes[i].catalog.contains(&group.task_type))
                .collect()
        });
        for index in 0..group.tasks {
            let key = (group.name.as_str(), index);
            if placed.contains_key(&key) {
                continue;
            }
            match best_node(&loads, able, group) {
                Some(node) => {
                    placed.insert(key, node);
                    loads[node].add(group);
                }
                None => {
                    let cause = if able.is_empty() {
                        PendingCause::NoCatalog
                    } else {
                        PendingCause::Full
                    };
                    pending.push(Pending {
                        group: group.name.clone(),
                        index,
                        cause,
                        reason: cause.reason(&group.task_type),
                    });
                }
            }
        }
    }

    let assignments = placed
        .into_iter()
        .map(|((group, index), node)| Assignment {
            group: group.to_string(),
            index,
            node: nodes[node].name.clone(),
            task_type: group_index[group].task_type.clone(),
        })
        .collect();
    pending.sort_by(|a: &Pending, b: &Pending| (&a.group, a.index).cmp(&(&b.group, b.index)));
    Placement {
        assignments,
        pending,
    }
}

/// The highest-scoring node of `able` (indices into `loads`, in name order) with room for one
/// more instance; the first on ties.
fn best_node(loads: &[NodeLoad<'_>], able: &[usize], group: &GroupSpec) -> Option<usize> {
    let mut best: Option<(usize, i64)> = None;
    for &i in able {
        if !loads[i].node.has_room(loads[i].instances as usize) {
            continue;
        }
        let score = loads[i].score(group);
        if best.is_none_or(|(_, top)| score > top) {
            best = Some((i, score));
        }
    }
    debug_assert!(best.is_none_or(|(i, _)| loads[i].node.catalog.contains(&group.task_type)));
    best.map(|(i, _)| i)
}

/// References sorted by `key`, keeping the first of equal keys (the sort is stable).
fn sorted_unique<T>(items: &[T], key: impl Fn(&T) -> &str) -> Vec<&T> {
    let mut sorted: Vec<&T> = items.iter().collect();
    sorted.sort_by(|a, b| key(a).cmp(key(b)));
    sorted.dedup_by(|a, b| key(a) == key(b));
    sorted
}
