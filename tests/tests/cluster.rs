//! Cluster membership with real processes and a real ZooKeeper: three nodes join and each lists
//! three alive members; a node with the wrong cookie is refused, never listed, and the refusal is
//! logged.

use std::time::Duration;

use lathe_tests::node::{Cluster, NodeBuilder, NodeProcess};
use lathe_tests::scenario::zk_cluster;
use lathe_tests::wait::{try_wait_until, wait_until};
use serde_json::Value;

/// How long a refusal may take to show in the logs.
const REFUSAL_DEADLINE: Duration = Duration::from_secs(30);
/// How long the members of the cluster keep being checked for the refused node after the refusal is
/// logged.
const NEVER_LISTED_WINDOW: Duration = Duration::from_secs(3);

#[test]
fn three_nodes_with_one_zookeeper_each_list_three_alive_members() {
    let (_zk, cluster) = zk_cluster(3, "trio");
    let expected = vec!["trio-0", "trio-1", "trio-2"];
    for node in cluster.nodes() {
        let members = node.members().expect("GET /v1/members");
        assert_eq!(
            members.len(),
            3,
            "{} lists {} members: {members:?}",
            node.name(),
            members.len()
        );
        for member in &members {
            assert_eq!(
                member.get("status").and_then(Value::as_str),
                Some("alive"),
                "{} lists a member that is not alive: {member}",
                node.name()
            );
        }
        assert_eq!(node.alive_member_names().unwrap(), expected);
    }
}

/// The intruder joins through `--join` only (its ZooKeeper chroot is another one, so the cluster
/// cannot learn of it from ZooKeeper): the cluster transport's cookie check alone must keep it out.
#[test]
fn a_node_with_the_wrong_cookie_is_refused_never_listed_and_the_refusal_is_logged() {
    let (zk, cluster) = zk_cluster(3, "guarded");
    let intruder = NodeBuilder::new()
        .name("intruder")
        .zookeeper(format!("{}/elsewhere", zk.connect_string()))
        .join(cluster.node(0).cluster_addr())
        .cookie("not-the-cluster-cookie")
        .spawn();
    check_refused(&cluster, intruder, "guarded");
}

/// The intruder shares the cluster's ZooKeeper (same chroot), as a misconfigured node of the same
/// deployment would: its ZooKeeper member node must not make it a member either.
#[test]
fn a_node_with_the_wrong_cookie_sharing_the_zookeeper_is_never_listed() {
    let (zk, cluster) = zk_cluster(3, "shared");
    let intruder = NodeBuilder::new()
        .name("intruder")
        .zookeeper(zk.connect_string())
        .join(cluster.node(0).cluster_addr())
        .cookie("not-the-cluster-cookie")
        .spawn();
    check_refused(&cluster, intruder, "shared");
}

fn lists_intruder(members: &[Value]) -> bool {
    members
        .iter()
        .any(|m| m.get("name").and_then(Value::as_str) == Some("intruder"))
}

fn refusal_logged(log: &str) -> bool {
    log.lines().any(|line| {
        let line = line.to_ascii_lowercase();
        line.contains("refused") && line.contains("cookie")
    })
}

/// No member of `cluster` ever lists `intruder`; both the intruder and the seed it contacted log
/// the refusal; the cluster keeps its three alive members; the intruder stays up or exits non-zero.
fn check_refused(cluster: &Cluster, mut intruder: NodeProcess, prefix: &str) {
    let check_not_listed = || {
        for node in cluster.nodes() {
            let members = node.members().expect("GET /v1/members");
            assert!(
                !lists_intruder(&members),
                "{} lists the node with the wrong cookie: {members:?}",
                node.name()
            );
        }
    };
    wait_until(
        "the refusal of the wrong cookie in the intruder's and the seed's logs",
        REFUSAL_DEADLINE,
        || {
            check_not_listed();
            let intruder_logged = refusal_logged(&intruder.log_contents());
            let seed_logged = refusal_logged(&cluster.node(0).log_contents());
            if intruder_logged && seed_logged {
                Ok(())
            } else {
                Err(format!(
                    "intruder logged it: {intruder_logged}, seed logged it: {seed_logged}"
                ))
            }
        },
    );
    // The intruder may keep trying (or exit): for a while longer, nobody lists it.
    let listed = try_wait_until(NEVER_LISTED_WINDOW, || {
        cluster.nodes().iter().find_map(|node| {
            let members = node.members().expect("GET /v1/members");
            lists_intruder(&members).then(|| format!("{} lists it: {members:?}", node.name()))
        })
    });
    assert!(listed.is_err(), "{}", listed.unwrap_or_default());
    let expected: Vec<String> = (0..3).map(|i| format!("{prefix}-{i}")).collect();
    for node in cluster.nodes() {
        assert_eq!(
            node.alive_member_names().unwrap(),
            expected,
            "{} after the refusal",
            node.name()
        );
    }
    // Refused nodes either stay up (refused) or exit with a non-zero code.
    if let Some(status) = intruder.exit_status() {
        assert!(
            !status.success(),
            "the refused node exited successfully: {status}"
        );
    }
}
