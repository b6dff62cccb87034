//! A synthetic placement benchmark for `make bench`: instances placed per second.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use lathe::topology::{GroupSpec, RestartPolicy};
use lathe::{KeyPath, TaskType};

use super::{place, NodeCandidate};

const INSTANCES_PER_GROUP: usize = 20;
const TASK_TYPES: usize = 5;
const TAGS: usize = 7;

/// How long [`place`] takes to place `instances` new instances on `nodes` simulated nodes.
///
/// Groups of 20 instances over 5 task types, each with a tag and every third with biases; every
/// tenth node lacks one task type and every fifth carries a node tag. Only the `place` call is
/// timed. Instances per second = `instances / duration`.
pub fn bench_place(instances: usize, nodes: usize) -> Duration {
    let groups = bench_groups(instances);
    let nodes = bench_nodes(nodes);
    let start = Instant::now();
    let placement = place(&groups, &nodes, &[]);
    let elapsed = start.elapsed();
    assert_eq!(
        placement.assignments.len() + placement.pending.len(),
        instances,
        "every instance is placed or pending"
    );
    elapsed
}

fn task_type(k: usize) -> TaskType {
    TaskType::new(format!("bench_task_{k}"), "1.0.0", "bench::Task")
}

fn bench_groups(instances: usize) -> Vec<GroupSpec> {
    let count = instances.div_ceil(INSTANCES_PER_GROUP);
    (0..count)
        .map(|g| {
            let name = format!("bench.group-{g:05}");
            let tasks = INSTANCES_PER_GROUP.min(instances - g * INSTANCES_PER_GROUP);
            let biases = if g % 3 == 0 {
                vec![
                    (format!("t{}", (g + 1) % TAGS), 5),
                    (format!("t{}", g % TAGS), -3),
                ]
            } else {
                Vec::new()
            };
            GroupSpec {
                path: KeyPath::parse(&name.replace('.', "/")).expect("a valid bench path"),
                name,
                task_type: task_type(g % TASK_TYPES),
                tasks: tasks as u32,
                tags: vec![format!("t{}", g % TAGS)],
                biases,
                restart: RestartPolicy::default(),
                rollout: lathe::topology::RolloutPolicy::default(),
                flows: lathe::topology::FlowsSpec::default(),
                state: lathe::topology::StateSpec::default(),
                metadata: BTreeMap::new(),
            }
        })
        .collect()
}

fn bench_nodes(nodes: usize) -> Vec<NodeCandidate> {
    (0..nodes)
        .map(|n| {
            let lacking = (n % 10 == 9).then_some(TASK_TYPES - 1);
            NodeCandidate {
                name: format!("node-{n:04}"),
                catalog: (0..TASK_TYPES)
                    .filter(|&k| Some(k) != lacking)
                    .map(task_type)
                    .collect::<BTreeSet<_>>(),
                tags: if n % 5 == 0 {
                    vec!["ssd".to_string()]
                } else {
                    Vec::new()
                },
                max_instances: None,
            }
        })
        .collect()
}
