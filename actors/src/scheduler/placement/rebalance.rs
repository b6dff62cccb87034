//! Gentle rebalancing: move a few running instances when that clearly helps.
//!
//! [`place`](super::place) never moves a valid assignment, so after a node returns (or a cluster
//! restarts one node at a time) the load can stay skewed and biases broken: two load balancers on
//! one node, none on another. [`rebalance`] moves at most `max_moves` instances per call: each time
//! the instance that `place` would now put elsewhere with the largest gain in its own score (the
//! same score `place` uses: biases towards the tags on a node minus the load), and only when the
//! gain is at least [`MIN_GAIN`] — a load difference of one instance (5/4/4) is not worth a
//! restart. Moves are per call; the scheduler also keeps a moved instance still for a while, so
//! one-sided biases (load balancers like front pages, front pages don't care) cannot make
//! instances chase each other. A move never fills a node past its `--max-instances`.

use std::collections::{BTreeSet, HashMap};

use lathe::layout::Assignment;
use lathe::topology::GroupSpec;

use super::{NodeCandidate, LOAD_PENALTY};

/// The least gain in an instance's score that justifies restarting it elsewhere.
pub const MIN_GAIN: i64 = 2;

/// One node's aggregates: instance count and how many carry each tag.
#[derive(Default)]
struct Aggregate {
    instances: i64,
    carrying: HashMap<String, i64>,
}

impl Aggregate {
    fn apply(&mut self, group: &GroupSpec, sign: i64) {
        self.instances += sign;
        for tag in &group.tags {
            *self.carrying.entry(tag.clone()).or_default() += sign;
        }
    }

    fn carrying(&self, tag: &str) -> i64 {
        self.carrying.get(tag).copied().unwrap_or(0)
    }
}

/// Moves at most `max_moves` of `assignments` (all valid, e.g. from [`place`](super::place)) to
/// other nodes of `nodes`, best move first, each gaining at least [`MIN_GAIN`].
/// Instances in `held` (group, index) stay where they are. Returns the new assignments (same
/// order) and how many moved.
pub fn rebalance(
    groups: &[GroupSpec],
    nodes: &[NodeCandidate],
    assignments: &[Assignment],
    held: &BTreeSet<(String, u32)>,
    max_moves: usize,
) -> (Vec<Assignment>, usize) {
    let group_of: HashMap<&str, &GroupSpec> = groups.iter().map(|g| (g.name.as_str(), g)).collect();
    let mut nodes: Vec<&NodeCandidate> = nodes.iter().collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let mut aggregates: HashMap<&str, Aggregate> = nodes
        .iter()
        .map(|n| (n.name.as_str(), Aggregate::default()))
        .collect();
    for a in assignments {
        if let (Some(group), Some(agg)) = (
            group_of.get(a.group.as_str()),
            aggregates.get_mut(a.node.as_str()),
        ) {
            agg.apply(group, 1);
        }
    }
    let mut result = assignments.to_vec();
    let mut moved = 0;
    while moved < max_moves {
        let Some((i, to, _)) = best_move(&group_of, &nodes, &aggregates, &result, held) else {
            break;
        };
        let group = group_of[result[i].group.as_str()];
        if let Some(from) = aggregates.get_mut(result[i].node.as_str()) {
            from.apply(group, -1);
        }
        if let Some(dest) = aggregates.get_mut(nodes[to].name.as_str()) {
            dest.apply(group, 1);
        }
        result[i].node = nodes[to].name.clone();
        moved += 1;
    }
    (result, moved)
}

/// The move (assignment index, destination node index, gain) with the largest gain, if any
/// gains at least [`MIN_GAIN`]. Ties: the first assignment, then the first node by name.
fn best_move(
    group_of: &HashMap<&str, &GroupSpec>,
    nodes: &[&NodeCandidate],
    aggregates: &HashMap<&str, Aggregate>,
    assignments: &[Assignment],
    held: &BTreeSet<(String, u32)>,
) -> Option<(usize, usize, i64)> {
    let mut best: Option<(usize, usize, i64)> = None;
    for (i, a) in assignments.iter().enumerate() {
        if held.contains(&(a.group.clone(), a.index)) {
            continue;
        }
        let (Some(group), Some(from)) = (
            group_of.get(a.group.as_str()),
            aggregates.get(a.node.as_str()),
        ) else {
            continue;
        };
        let from_node = nodes.iter().find(|n| n.name == a.node);
        for (j, to_node) in nodes.iter().enumerate() {
            if to_node.name == a.node || !to_node.catalog.contains(&group.task_type) {
                continue;
            }
            let to = &aggregates[to_node.name.as_str()];
            if !to_node.has_room(to.instances.max(0) as usize) {
                continue;
            }
            let gain = move_gain(group, from, from_node.copied(), to, to_node);
            if gain >= MIN_GAIN && best.is_none_or(|(_, _, top)| gain > top) {
                best = Some((i, j, gain));
            }
        }
    }
    best
}

/// How much one instance of `group` gains by moving from the node of `from` to that of `to`:
/// its score there minus its score where it is (without itself).
fn move_gain(
    group: &GroupSpec,
    from: &Aggregate,
    from_node: Option<&NodeCandidate>,
    to: &Aggregate,
    to_node: &NodeCandidate,
) -> i64 {
    let has_tag = |node: Option<&NodeCandidate>, tag: &str| {
        i64::from(node.is_some_and(|n| n.tags.iter().any(|t| t == tag)))
    };
    let carries = |tag: &str| i64::from(group.tags.iter().any(|t| t == tag));
    let here: i64 = group
        .biases
        .iter()
        .map(|(t, s)| s * (from.carrying(t) - carries(t) + has_tag(from_node, t)))
        .sum::<i64>()
        - LOAD_PENALTY * (from.instances - 1);
    let there: i64 = group
        .biases
        .iter()
        .map(|(t, s)| s * (to.carrying(t) + has_tag(Some(to_node), t)))
        .sum::<i64>()
        - LOAD_PENALTY * to.instances;
    there - here
}
