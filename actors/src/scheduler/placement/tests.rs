//! Placement of the seed topology, catalogs, pending reasons and redeploys.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lathe::topology::{parse, GroupSpec, RestartPolicy, Topology};
use lathe::KeyPath;

use super::*;

const SEED: &str = include_str!("../../../../config/my_topology.toml");

pub(super) fn seed() -> Topology {
    parse("my_topology.toml", SEED).unwrap()
}

pub(super) fn frontpage(version: &str) -> TaskType {
    TaskType::new("http_frontpage", version, "my::FrontPage")
}

fn lb_type() -> TaskType {
    TaskType::new("http_loadbalancer", "0.8.2", "my::LoadBalancer")
}

pub(super) fn node(name: &str, catalog: &[TaskType], tags: &[&str]) -> NodeCandidate {
    NodeCandidate {
        name: name.to_string(),
        catalog: catalog.iter().cloned().collect(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        max_instances: None,
    }
}

/// A node that takes at most `max` instances.
pub(super) fn capped(mut node: NodeCandidate, max: u32) -> NodeCandidate {
    node.max_instances = Some(max);
    node
}

pub(super) fn group(
    name: &str,
    task_type: TaskType,
    tasks: u32,
    tags: &[&str],
    biases: &[(&str, i64)],
) -> GroupSpec {
    GroupSpec {
        name: name.to_string(),
        path: KeyPath::parse(&name.replace('.', "/")).unwrap(),
        task_type,
        tasks,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        biases: biases.iter().map(|(t, s)| (t.to_string(), *s)).collect(),
        restart: RestartPolicy::default(),
        rollout: lathe::topology::RolloutPolicy::default(),
        flows: lathe::topology::FlowsSpec::default(),
        state: lathe::topology::StateSpec::default(),
        metadata: BTreeMap::new(),
    }
}

fn full_nodes(count: usize) -> Vec<NodeCandidate> {
    let catalog = [frontpage("4.2.1"), frontpage("4.2.2"), lb_type()];
    (1..=count)
        .map(|i| node(&format!("n{i}"), &catalog, &[]))
        .collect()
}

/// Instances per node name.
fn loads(placement: &Placement) -> BTreeMap<&str, usize> {
    let mut loads = BTreeMap::new();
    for a in &placement.assignments {
        *loads.entry(a.node.as_str()).or_default() += 1;
    }
    loads
}

fn nodes_of<'p>(placement: &'p Placement, group: &str) -> Vec<&'p str> {
    placement
        .assignments
        .iter()
        .filter(|a| a.group == group)
        .map(|a| a.node.as_str())
        .collect()
}

#[test]
fn the_seed_spreads_over_three_nodes_with_one_lb_each() {
    let placement = place(&seed().groups, &full_nodes(3), &[]);
    assert!(placement.pending.is_empty());
    assert_eq!(placement.assignments.len(), 13);
    let lbs: BTreeSet<&str> = nodes_of(&placement, "task.http.lb").into_iter().collect();
    assert_eq!(lbs.len(), 3, "{placement:#?}");
    let loads: Vec<usize> = loads(&placement).into_values().collect();
    assert_eq!(loads.len(), 3);
    assert!(
        loads.iter().max().unwrap() - loads.iter().min().unwrap() <= 1,
        "{loads:?}"
    );
    // every LB shares its node with frontpages (+7)
    for lb in lbs {
        assert!(placement
            .assignments
            .iter()
            .any(|a| a.node == lb && a.group.starts_with("task.http.frontpage")));
    }
}

#[test]
fn a_node_without_a_type_never_gets_its_instances() {
    let mut nodes = full_nodes(3);
    nodes[2].catalog.remove(&frontpage("4.2.2"));
    let placement = place(&seed().groups, &nodes, &[]);
    assert!(placement.pending.is_empty());
    assert_eq!(placement.assignments.len(), 13);
    assert!(!nodes_of(&placement, "task.http.frontpage.v4-2-2").contains(&"n3"));
}

#[test]
fn a_type_no_node_has_is_pending_with_the_reason() {
    let mut nodes = full_nodes(2);
    for n in &mut nodes {
        n.catalog.remove(&frontpage("4.2.2"));
    }
    let placement = place(&seed().groups, &nodes, &[]);
    assert_eq!(placement.assignments.len(), 8);
    let pending: Vec<(&str, u32, &str)> = placement
        .pending
        .iter()
        .map(|p| (p.group.as_str(), p.index, p.reason.as_str()))
        .collect();
    let reason = "no live node can run http_frontpage 4.2.2 my::FrontPage";
    let expected: Vec<(&str, u32, &str)> = (0..5)
        .map(|i| ("task.http.frontpage.v4-2-2", i, reason))
        .collect();
    assert_eq!(pending, expected);

    let nothing = place(&seed().groups, &[], &[]);
    assert!(nothing.assignments.is_empty());
    assert_eq!(nothing.pending.len(), 13);
}

#[test]
fn redeploying_with_more_instances_places_only_the_new_ones() {
    let nodes = full_nodes(3);
    let before = place(&seed().groups, &nodes, &[]);
    let mut more = seed();
    more.groups[1].tasks = 8; // task.http.frontpage.v4-2-2
    let after = place(&more.groups, &nodes, &before.assignments);
    assert_eq!(after.assignments.len(), 16);
    for a in &before.assignments {
        assert!(after.assignments.contains(a), "{a:?} moved");
    }
    // and fewer instances drop the high indices, keeping the rest in place
    let mut fewer = seed();
    fewer.groups[1].tasks = 2;
    let after = place(&fewer.groups, &nodes, &before.assignments);
    let kept: Vec<&Assignment> = before
        .assignments
        .iter()
        .filter(|a| a.group != "task.http.frontpage.v4-2-2" || a.index < 2)
        .collect();
    assert_eq!(after.assignments.iter().collect::<Vec<_>>(), kept);
}

#[test]
fn a_new_version_replaces_the_assignments_of_the_old_one() {
    let nodes = full_nodes(3);
    let before = place(&seed().groups, &nodes, &[]);
    let mut upgraded = seed();
    upgraded.groups[0].task_type = frontpage("4.2.2"); // v4-2-1 now runs 4.2.2
    let after = place(&upgraded.groups, &nodes, &before.assignments);
    for a in after
        .assignments
        .iter()
        .filter(|a| a.group == "task.http.frontpage.v4-2-1")
    {
        assert_eq!(a.task_type, frontpage("4.2.2"));
    }
}

#[test]
fn a_dead_nodes_instances_move_to_the_live_ones() {
    let nodes = full_nodes(3);
    let before = place(&seed().groups, &nodes, &[]);
    let after = place(&seed().groups, &nodes[..2], &before.assignments);
    assert_eq!(after.assignments.len(), 13);
    for a in &before.assignments {
        if a.node != "n3" {
            assert!(after.assignments.contains(a));
        }
    }
    assert!(after.assignments.iter().all(|a| a.node != "n3"));
}

#[test]
fn node_tags_attract_biased_groups() {
    let t = frontpage("4.2.1");
    let catalog = std::slice::from_ref(&t);
    let nodes = [node("a", catalog, &[]), node("b", catalog, &["ssd"])];
    let groups = [group("db", t, 2, &["db"], &[("ssd", 5)])];
    let placement = place(&groups, &nodes, &[]);
    assert_eq!(nodes_of(&placement, "db"), ["b", "b"]);
}

#[test]
fn input_order_does_not_matter() {
    let mut groups = seed().groups;
    let mut nodes = full_nodes(4);
    let placement = place(&groups, &nodes, &[]);
    groups.reverse();
    nodes.reverse();
    assert_eq!(place(&groups, &nodes, &[]), placement);
}

#[test]
fn placing_1000_instances_on_50_nodes_takes_well_under_a_second() {
    let took = bench_place(1000, 50);
    println!("placed 1000 instances on 50 nodes in {took:?}");
    assert!(took < Duration::from_millis(500), "took {took:?}");
}

#[test]
fn load_balancers_never_share_a_node_when_there_are_enough() {
    for count in 3..=8 {
        let placement = place(&seed().groups, &full_nodes(count), &[]);
        let lbs: BTreeSet<&str> = nodes_of(&placement, "task.http.lb").into_iter().collect();
        assert_eq!(lbs.len(), 3, "{count} nodes: {placement:#?}");
    }
}

#[test]
fn a_full_node_takes_no_more_and_the_rest_is_pending_for_capacity() {
    let catalog = [frontpage("4.2.1"), frontpage("4.2.2"), lb_type()];
    let nodes = [
        capped(node("n1", &catalog, &[]), 3),
        capped(node("n2", &catalog, &[]), 4),
    ];
    let placement = place(&seed().groups, &nodes, &[]);
    assert_eq!(loads(&placement).get("n1"), Some(&3));
    assert_eq!(loads(&placement).get("n2"), Some(&4));
    assert_eq!(placement.pending.len(), 6, "{placement:#?}");
    assert!(placement
        .pending
        .iter()
        .all(|p| p.cause == PendingCause::Full));
    let reason = "every node that can run http_frontpage 4.2.2 my::FrontPage is full";
    assert!(
        placement.pending.iter().any(|p| p.reason == reason),
        "{placement:#?}"
    );

    // A node joins: the pending ones land on it, nothing placed moves.
    let mut more = nodes.to_vec();
    more.push(capped(node("n3", &catalog, &[]), 10));
    let after = place(&seed().groups, &more, &placement.assignments);
    assert!(after.pending.is_empty());
    for a in &placement.assignments {
        assert!(after.assignments.contains(a), "{a:?} moved");
    }
    assert_eq!(loads(&after).get("n3"), Some(&6));
}

#[test]
fn capacity_and_catalog_are_told_apart() {
    let only_421 = [frontpage("4.2.1")];
    let nodes = [capped(node("n1", &only_421, &[]), 2)];
    let placement = place(&seed().groups, &nodes, &[]);
    let causes: BTreeMap<&str, BTreeSet<PendingCause>> =
        placement
            .pending
            .iter()
            .fold(BTreeMap::new(), |mut causes, p| {
                causes.entry(p.group.as_str()).or_default().insert(p.cause);
                causes
            });
    assert_eq!(
        causes["task.http.frontpage.v4-2-1"],
        BTreeSet::from([PendingCause::Full])
    );
    assert_eq!(
        causes["task.http.frontpage.v4-2-2"],
        BTreeSet::from([PendingCause::NoCatalog])
    );
    assert_eq!(
        causes["task.http.lb"],
        BTreeSet::from([PendingCause::NoCatalog])
    );
}

#[test]
fn a_node_over_its_capacity_keeps_the_first_instances() {
    let t = frontpage("4.2.1");
    let catalog = std::slice::from_ref(&t);
    let groups = [group("g", t.clone(), 4, &[], &[])];
    let roomy = [node("n1", catalog, &[])];
    let before = place(&groups, &roomy, &[]);
    assert_eq!(before.assignments.len(), 4);
    // Restarted with --max-instances 2.
    let tight = [capped(node("n1", catalog, &[]), 2)];
    let after = place(&groups, &tight, &before.assignments);
    let kept: Vec<u32> = after.assignments.iter().map(|a| a.index).collect();
    assert_eq!(kept, [0, 1]);
    let pending: Vec<u32> = after.pending.iter().map(|p| p.index).collect();
    assert_eq!(pending, [2, 3]);
}

#[test]
fn a_node_with_no_room_at_all_takes_nothing() {
    let t = frontpage("4.2.1");
    let catalog = std::slice::from_ref(&t);
    let nodes = [
        capped(node("n1", catalog, &[]), 0),
        node("n2", catalog, &[]),
    ];
    let placement = place(&[group("g", t, 3, &[], &[])], &nodes, &[]);
    assert_eq!(nodes_of(&placement, "g"), ["n2", "n2", "n2"]);
}
