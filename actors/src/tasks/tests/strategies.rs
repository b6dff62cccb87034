//! Restart strategies, intensity and policies from the deployed topology: instances are crashed
//! the way a failure drill does it (`ActorTree::kill`), and their supervisor must see a failure.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use lathe::layout::InstanceState;

use super::tasks::{catalog, counted_type, crashing_type, echo_type, Probes};
use super::{eventually, fast_policy, start_node, start_node_with, TestNode, PATIENCE};
use crate::scheduler::deploy;
use crate::tasks::{RestartPolicy, RestartStrategy};
use crate::tree::{ActorKind, ActorStatus};

const GROUP: &str = "t.g";

fn policy(strategy: RestartStrategy) -> RestartPolicy {
    RestartPolicy {
        strategy,
        ..fast_policy(5)
    }
}

/// Waits until every instance of `GROUP` runs with the given restarts.
async fn running_with(node: &TestNode, restarts: &[u32]) {
    for (index, wanted) in restarts.iter().enumerate() {
        let what = format!("{GROUP}/{index} running with {wanted} restarts");
        eventually(&what, PATIENCE, || async {
            node.status(GROUP, index as u32)
                .await
                .filter(|s| s.status == InstanceState::Running && s.restarts == *wanted)
        })
        .await;
    }
}

/// Three instances of `GROUP`; instance 1 is killed; returns the starts by index once the
/// instances that restart have (restarts as expected).
async fn kill_the_middle_one(node: &TestNode, probes: &Probes, restarts: &[u32]) -> Vec<usize> {
    for index in 0..3 {
        node.assign(GROUP, index, &counted_type()).await;
    }
    running_with(node, &[0, 0, 0]).await;
    let killed = node.tree.kill(&format!("node/tasks/{GROUP}/1"));
    assert_eq!(killed, Ok(ActorKind::Task));
    running_with(node, restarts).await;
    let starts: BTreeMap<u32, usize> = probes.starts();
    starts.values().copied().collect()
}

#[tokio::test]
async fn one_for_one_restarts_only_the_crashed_instance() {
    let probes = Probes::default();
    let node = start_node(
        "strat-n1",
        catalog(&probes),
        policy(RestartStrategy::OneForOne),
    )
    .await;
    let starts = kill_the_middle_one(&node, &probes, &[0, 1, 0]).await;
    assert_eq!(starts, vec![1, 2, 1]);
    let restarts = [("kind", "task"), ("node", "local")];
    assert_eq!(
        node.metric("lathe_actor_restarts_total", &restarts),
        Some(1.0)
    );
    let timed = [("group", GROUP)];
    assert_eq!(
        node.metric("lathe_task_restart_seconds", &timed),
        Some(1.0),
        "the crashed instance's way back to running is timed once"
    );
    let killed = node.actor(&format!("node/tasks/{GROUP}/1"));
    assert_eq!(
        killed.map(|a| (a.status, a.restarts)),
        Some((ActorStatus::Running, 1))
    );
}

#[tokio::test]
async fn one_for_all_restarts_every_instance_of_the_group() {
    let probes = Probes::default();
    let node = start_node(
        "strat-n2",
        catalog(&probes),
        policy(RestartStrategy::OneForAll),
    )
    .await;
    // Another group on the node is left alone.
    node.assign("t.other", 0, &echo_type()).await;
    let starts = kill_the_middle_one(&node, &probes, &[1, 1, 1]).await;
    assert_eq!(starts, vec![2, 2, 2]);
    let other = node.status("t.other", 0).await.expect("a record");
    assert_eq!(other.restarts, 0);
    let restarts = [("kind", "task"), ("node", "local")];
    assert_eq!(
        node.metric("lathe_actor_restarts_total", &restarts),
        Some(3.0)
    );
    let timed = [("group", GROUP)];
    assert_eq!(
        node.metric("lathe_task_restart_seconds", &timed),
        Some(1.0),
        "only the crashed instance is timed, not those restarted along"
    );
}

#[tokio::test]
async fn rest_for_one_restarts_the_crashed_instance_and_those_after_it() {
    let probes = Probes::default();
    let node = start_node(
        "strat-n3",
        catalog(&probes),
        policy(RestartStrategy::RestForOne),
    )
    .await;
    let starts = kill_the_middle_one(&node, &probes, &[0, 1, 1]).await;
    assert_eq!(starts, vec![1, 2, 2]);
}

#[tokio::test]
async fn an_instance_killed_beyond_its_intensity_fails_alone() {
    let probes = Probes::default();
    let node = start_node(
        "strat-n4",
        catalog(&probes),
        policy(RestartStrategy::OneForAll),
    )
    .await;
    let mut intensity = fast_policy(2);
    intensity.strategy = RestartStrategy::OneForOne;
    node.tasks
        .set_restart_policies([(GROUP.to_string(), intensity)].into_iter().collect());
    for index in 0..2 {
        node.assign(GROUP, index, &counted_type()).await;
    }
    running_with(&node, &[0, 0]).await;
    let path = format!("node/tasks/{GROUP}/1");
    for restarts in 1..=2 {
        eventually("the instance to run again", PATIENCE, || async {
            node.tree.kill(&path).ok()
        })
        .await;
        running_with(&node, &[0, restarts]).await;
    }
    eventually("the third kill", PATIENCE, || async {
        node.tree.kill(&path).ok()
    })
    .await;
    let failed = eventually("a failed record", PATIENCE, || async {
        node.status(GROUP, 1)
            .await
            .filter(|s| s.status == InstanceState::Failed)
    })
    .await;
    let reason = failed.reason.unwrap_or_default();
    assert!(
        reason.contains("crashed more than 2 times within 30s"),
        "{reason}"
    );
    assert!(reason.contains("killed"), "{reason}");
    let sibling = node.status(GROUP, 0).await.expect("a record");
    assert_eq!(
        (sibling.status, sibling.restarts),
        (InstanceState::Running, 0)
    );
    assert_eq!(
        node.actor(&path).map(|a| a.status),
        Some(ActorStatus::Failed)
    );
    let failed = [("kind", "task"), ("status", "failed")];
    assert_eq!(node.metric("lathe_actors", &failed), Some(1.0));
    let group_failed = [("group", GROUP), ("status", "failed")];
    assert_eq!(
        node.metric("lathe_task_instances", &group_failed),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_failed_instance_is_retried_later() {
    let probes = Probes::default();
    let node = start_node_with("strat-n5", catalog(&probes), Vec::new(), |config| {
        config.restart = fast_policy(1);
        config.failed_retry = Duration::from_millis(300);
    })
    .await;
    node.assign("t.crash", 0, &crashing_type()).await;
    eventually("a failed record", PATIENCE, || async {
        node.status("t.crash", 0)
            .await
            .filter(|s| s.status == InstanceState::Failed)
    })
    .await;
    eventually("a retry, failed again", PATIENCE, || async {
        let status = node.status("t.crash", 0).await?;
        let retried = probes.crashing_starts.load(Ordering::SeqCst) >= 4;
        (retried && status.status == InstanceState::Failed && status.restarts >= 3).then_some(())
    })
    .await;
}

#[tokio::test]
async fn policies_come_from_the_deployed_topology() {
    let probes = Probes::default();
    let node = start_node("strat-n6", catalog(&probes), RestartPolicy::default()).await;
    let source = |strategy: &str| {
        format!(
            "[t.g]\ncrate = \"test_tasks\"\nversion = \"1.0.0\"\ntask = \"t::Counted\"\ntasks = 3\n\
             restart = {{ strategy = \"{strategy}\", max_restarts = 7, within_seconds = 20, \
                 backoff_ms = 5 }}\n"
        )
    };
    deploy::deploy(&node.registry, "t.toml", &source("rest-for-one"))
        .await
        .expect("a deploy");
    let policy = eventually("the topology's policy", PATIENCE, || async {
        let policy = node.tasks.restart_policy(GROUP).await?;
        (policy.strategy == RestartStrategy::RestForOne).then_some(policy)
    })
    .await;
    assert_eq!((policy.max_restarts, policy.within_seconds), (7, 20));
    assert_eq!(
        node.tasks.restart_policy("t.other").await,
        Some(RestartPolicy::default())
    );
    let starts = kill_the_middle_one(&node, &probes, &[0, 1, 1]).await;
    assert_eq!(starts, vec![1, 2, 2]);

    deploy::deploy(&node.registry, "t.toml", &source("one-for-all"))
        .await
        .expect("a redeploy");
    eventually("the redeployed policy", PATIENCE, || async {
        let policy = node.tasks.restart_policy(GROUP).await?;
        (policy.strategy == RestartStrategy::OneForAll).then_some(())
    })
    .await;
}
