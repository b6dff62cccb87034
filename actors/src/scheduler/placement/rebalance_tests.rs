//! Rebalancing: the skewed seed is repaired in a few moves, a balanced one is left alone, and
//! repeated rebalancing settles when instances that moved are held still (as the scheduler does).

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::rebalance::rebalance;
use super::tests::{frontpage, node, seed};
use super::*;

fn seed_nodes() -> Vec<NodeCandidate> {
    let catalog = [
        frontpage("4.2.1"),
        frontpage("4.2.2"),
        TaskType::new("http_loadbalancer", "0.8.2", "my::LoadBalancer"),
    ];
    ["n1", "n2", "n3"]
        .iter()
        .map(|n| node(n, &catalog, &[]))
        .collect()
}

fn per_node<'a>(assignments: &'a [Assignment], group: Option<&str>) -> BTreeMap<&'a str, usize> {
    let mut counts = BTreeMap::new();
    for a in assignments
        .iter()
        .filter(|a| group.is_none_or(|g| a.group == g))
    {
        *counts.entry(a.node.as_str()).or_default() += 1;
    }
    counts
}

#[test]
fn a_freshly_placed_seed_is_left_alone() {
    let groups = seed().groups;
    let placement = place(&groups, &seed_nodes(), &[]);
    let (after, moved) = rebalance(
        &groups,
        &seed_nodes(),
        &placement.assignments,
        &BTreeSet::new(),
        10,
    );
    assert_eq!(moved, 0);
    assert_eq!(after, placement.assignments);
}

#[test]
fn a_seed_skewed_by_a_restart_is_repaired_gently() {
    let groups = seed().groups;
    let nodes = seed_nodes();
    // Everything placed while only n1 was up, then n2 and n3 came back.
    let skewed = place(&groups, &nodes[..1], &[]).assignments;
    let (after, moved) = rebalance(&groups, &nodes, &skewed, &BTreeSet::new(), 2);
    assert_eq!(moved, 2, "at most max_moves per call");
    let mut current = after;
    let mut total = moved;
    for _ in 0..20 {
        let (next, moved) = rebalance(&groups, &nodes, &current, &BTreeSet::new(), 2);
        current = next;
        total += moved;
        if moved == 0 {
            break;
        }
    }
    let lbs = per_node(&current, Some("task.http.lb"));
    assert_eq!(lbs.len(), 3, "one LB per node after rebalancing: {lbs:?}");
    let loads = per_node(&current, None);
    let (min, max) = (loads.values().min().unwrap(), loads.values().max().unwrap());
    assert!(max - min <= 2, "loads {loads:?}");
    assert!(total <= 13, "moved {total} instances to repair 13");
}

#[test]
fn instances_only_move_where_their_type_runs() {
    let groups = seed().groups;
    let mut nodes = seed_nodes();
    nodes[2].catalog.remove(&frontpage("4.2.2"));
    let skewed = place(&groups, &nodes[..1], &[]).assignments;
    let (after, _) = rebalance(&groups, &nodes, &skewed, &BTreeSet::new(), 100);
    for a in &after {
        let node = nodes.iter().find(|n| n.name == a.node).unwrap();
        assert!(node.catalog.contains(&a.task_type), "{a:?}");
    }
}

proptest! {
    #[test]
    fn rebalancing_with_moved_instances_held_settles(
        tasks in proptest::collection::vec(1..8u32, 1..4),
        scores in proptest::collection::vec(-10..10i64, 3),
        nodes in 2..5usize,
    ) {
        let all = [frontpage("4.2.1")];
        let groups: Vec<GroupSpec> = tasks
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                let tag = format!("t{i}");
                let biases: Vec<(String, i64)> = (0..tasks.len())
                    .map(|j| (format!("t{j}"), scores[j % scores.len()]))
                    .collect();
                let mut g = super::tests::group(&format!("g{i}"), frontpage("4.2.1"), t, &[], &[]);
                g.tags = vec![tag];
                g.biases = biases;
                g
            })
            .collect();
        let nodes: Vec<NodeCandidate> =
            (0..nodes).map(|i| node(&format!("n{i}"), &all, &[])).collect();
        let mut current = place(&groups, &nodes[..1], &[]).assignments;
        let instances: usize = tasks.iter().map(|&t| t as usize).sum();
        // The scheduler holds an instance that moved: then each moves at most once.
        let mut held = BTreeSet::new();
        let mut settled = false;
        for _ in 0..=instances {
            let (next, moved) = rebalance(&groups, &nodes, &current, &held, 1);
            prop_assert!(moved <= 1);
            prop_assert_eq!(next.len(), instances);
            for (before, after) in current.iter().zip(&next) {
                if before.node != after.node {
                    held.insert((after.group.clone(), after.index));
                    let node = nodes.iter().find(|n| n.name == after.node).unwrap();
                    prop_assert!(node.catalog.contains(&after.task_type));
                }
            }
            current = next;
            if moved == 0 {
                settled = true;
                break;
            }
        }
        prop_assert!(settled, "rebalancing did not settle");
    }
}
