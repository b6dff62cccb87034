//! Properties of [`place`] over random groups, nodes and current assignments.

use std::collections::BTreeSet;

use lathe::topology::GroupSpec;
use proptest::prelude::*;

use super::tests::{frontpage, group, node};
use super::*;

static TAGS: [&str; 4] = ["a", "b", "c", "ssd"];

fn task_type(k: usize) -> TaskType {
    frontpage(&format!("1.0.{k}"))
}

/// Up to 5 groups over 3 task types, with tags and biases from a small pool so they interact.
fn groups() -> impl Strategy<Value = Vec<GroupSpec>> {
    let one = (
        0..3usize,
        1..7u32,
        proptest::sample::subsequence(&TAGS[..3], 0..=2),
        proptest::collection::btree_map(proptest::sample::select(&TAGS[..]), -10..=10i64, 0..=2),
    );
    proptest::collection::vec(one, 0..=5).prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(|(i, (k, tasks, tags, biases))| {
                let biases: Vec<(&str, i64)> = biases.into_iter().collect();
                group(&format!("g{i}"), task_type(k), tasks, &tags, &biases)
            })
            .collect()
    })
}

/// Up to 5 nodes, each with some of the 3 task types, some with the node tag `ssd`, some with a
/// capacity (`--max-instances` 0 to 5).
fn nodes() -> impl Strategy<Value = Vec<NodeCandidate>> {
    let one = (0..8usize, any::<bool>(), proptest::option::of(0..=5u32));
    proptest::collection::vec(one, 0..=5).prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(|(i, (mask, ssd, max_instances))| {
                let catalog: Vec<TaskType> = (0..3)
                    .filter(|k| mask & (1 << k) != 0)
                    .map(task_type)
                    .collect();
                let mut node = node(&format!("n{i}"), &catalog, if ssd { &["ssd"] } else { &[] });
                node.max_instances = max_instances;
                node
            })
            .collect()
    })
}

/// Instances per node name.
fn load_of(placement: &Placement) -> std::collections::BTreeMap<&str, usize> {
    let mut loads = std::collections::BTreeMap::new();
    for a in &placement.assignments {
        *loads.entry(a.node.as_str()).or_insert(0) += 1;
    }
    loads
}

/// Current assignments, valid or not: unknown groups and nodes, indices past `tasks`, old types.
fn current() -> impl Strategy<Value = Vec<Assignment>> {
    proptest::collection::vec((0..6usize, 0..8u32, 0..6usize, 0..3usize), 0..12).prop_map(|v| {
        v.into_iter()
            .map(|(g, index, n, k)| Assignment {
                group: format!("g{g}"),
                index,
                node: format!("n{n}"),
                task_type: task_type(k),
            })
            .collect()
    })
}

/// Checks what must hold for any placement of `groups` on `nodes`: every instance is placed where
/// its type runs and there is room, or pending with the right cause — no node has its type, or
/// every node that has it is full (so as many are placed as fit).
fn check_invariants(groups: &[GroupSpec], nodes: &[NodeCandidate], placement: &Placement) {
    let loads = load_of(placement);
    let load = |name: &str| loads.get(name).copied().unwrap_or(0);
    for node in nodes {
        if let Some(max) = node.max_instances {
            assert!(
                load(&node.name) <= max as usize,
                "{} holds {} > {max}",
                node.name,
                load(&node.name)
            );
        }
    }
    let mut seen = BTreeSet::new();
    for a in &placement.assignments {
        let group = groups
            .iter()
            .find(|g| g.name == a.group)
            .expect("a known group");
        let node = nodes
            .iter()
            .find(|n| n.name == a.node)
            .expect("a live node");
        assert!(
            node.catalog.contains(&group.task_type),
            "{a:?} on a node without its type"
        );
        assert_eq!(a.task_type, group.task_type);
        assert!(
            seen.insert((a.group.clone(), a.index)),
            "{a:?} placed twice"
        );
    }
    for p in &placement.pending {
        let group = groups
            .iter()
            .find(|g| g.name == p.group)
            .expect("a known group");
        let able: Vec<&NodeCandidate> = nodes
            .iter()
            .filter(|n| n.catalog.contains(&group.task_type))
            .collect();
        match p.cause {
            PendingCause::NoCatalog => assert!(able.is_empty(), "{p:?} could run"),
            PendingCause::Full => {
                assert!(!able.is_empty(), "{p:?}: full, but no node has the type");
                for n in able {
                    assert!(!n.has_room(load(&n.name)), "{p:?} fits on {}", n.name);
                }
            }
        }
        assert!(
            seen.insert((p.group.clone(), p.index)),
            "{p:?} placed and pending"
        );
    }
    let expected: BTreeSet<(String, u32)> = groups
        .iter()
        .flat_map(|g| (0..g.tasks).map(|i| (g.name.clone(), i)))
        .collect();
    assert_eq!(
        seen, expected,
        "every instance exactly once, placed or pending"
    );
}

proptest! {
    #[test]
    fn every_instance_is_placed_where_its_type_runs_or_pending(
        groups in groups(), nodes in nodes(), current in current()
    ) {
        check_invariants(&groups, &nodes, &place(&groups, &nodes, &current));
    }

    #[test]
    fn placement_is_deterministic(groups in groups(), nodes in nodes(), current in current()) {
        let placement = place(&groups, &nodes, &current);
        let (mut g, mut n, mut c) = (groups.clone(), nodes.clone(), current.clone());
        g.reverse();
        n.reverse();
        c.reverse();
        prop_assert_eq!(place(&g, &n, &c), placement);
    }

    #[test]
    fn placing_again_changes_nothing(groups in groups(), nodes in nodes(), current in current()) {
        let placement = place(&groups, &nodes, &current);
        prop_assert_eq!(place(&groups, &nodes, &placement.assignments), placement);
    }

    #[test]
    fn adding_a_group_keeps_every_assignment(
        groups in groups(), nodes in nodes(), k in 0..3usize, tasks in 1..7u32
    ) {
        let before = place(&groups, &nodes, &[]);
        let mut more = groups.clone();
        more.push(group("added", task_type(k), tasks, &["a"], &[("a", -5), ("b", 3)]));
        let after = place(&more, &nodes, &before.assignments);
        check_invariants(&more, &nodes, &after);
        for a in &before.assignments {
            prop_assert!(after.assignments.contains(a), "{:?} moved", a);
        }
    }

    #[test]
    fn removing_a_node_moves_only_its_instances(
        groups in groups(), nodes in nodes(), gone in 0..5usize
    ) {
        let before = place(&groups, &nodes, &[]);
        let gone = nodes.get(gone).map(|n| n.name.clone()).unwrap_or_default();
        let alive: Vec<NodeCandidate> = nodes.iter().filter(|n| n.name != gone).cloned().collect();
        let after = place(&groups, &alive, &before.assignments);
        check_invariants(&groups, &alive, &after);
        for a in before.assignments.iter().filter(|a| a.node != gone) {
            prop_assert!(after.assignments.contains(a), "{:?} moved", a);
        }
    }

    #[test]
    fn rebalancing_never_fills_a_node_past_its_capacity(
        groups in groups(), nodes in nodes(), current in current(), moves in 0..6usize
    ) {
        let placement = place(&groups, &nodes, &current);
        let (moved, _) = rebalance(&groups, &nodes, &placement.assignments, &BTreeSet::new(),
            moves);
        let after = Placement { assignments: moved, pending: Vec::new() };
        let loads = load_of(&after);
        for node in &nodes {
            let load = loads.get(node.name.as_str()).copied().unwrap_or(0);
            prop_assert!(
                node.max_instances.is_none_or(|max| load <= max as usize),
                "{} holds {} > {:?}", node.name, load, node.max_instances
            );
        }
        for a in &after.assignments {
            let node = nodes.iter().find(|n| n.name == a.node).expect("a live node");
            prop_assert!(node.catalog.contains(&a.task_type),
                "{:?} moved where its type does not run", a);
        }
    }

    #[test]
    fn more_capacity_places_at_least_as_many(
        groups in groups(), nodes in nodes(), node in 0..5usize, more in 1..4u32
    ) {
        let before = place(&groups, &nodes, &[]);
        let mut bigger = nodes.clone();
        if let Some(n) = bigger.get_mut(node) {
            n.max_instances = n.max_instances.map(|max| max + more);
        }
        let after = place(&groups, &bigger, &before.assignments);
        check_invariants(&groups, &bigger, &after);
        prop_assert!(after.assignments.len() >= before.assignments.len());
    }

    #[test]
    fn without_biases_load_spreads_evenly(
        tasks in proptest::collection::vec(1..9u32, 1..5), nodes in 1..6usize
    ) {
        let groups: Vec<GroupSpec> = tasks
            .iter()
            .enumerate()
            .map(|(i, &t)| group(&format!("g{i}"), task_type(i % 3), t, &["a"], &[]))
            .collect();
        let all: Vec<TaskType> = (0..3).map(task_type).collect();
        let nodes: Vec<NodeCandidate> =
            (0..nodes).map(|i| node(&format!("n{i}"), &all, &[])).collect();
        let placement = place(&groups, &nodes, &[]);
        let mut loads = vec![0usize; nodes.len()];
        for a in &placement.assignments {
            loads[nodes.iter().position(|n| n.name == a.node).unwrap()] += 1;
        }
        let (min, max) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
        prop_assert!(max - min <= 1, "loads {:?}", loads);
    }
}
