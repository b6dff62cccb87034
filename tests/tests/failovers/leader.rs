//! Scheduler leader failover with real processes: SIGKILL the leader named in `/v1/members`;
//! another node is named leader and applies the next topology change.

use std::time::Duration;

use lathe_tests::http;
use lathe_tests::scenario::{leader, zk_cluster};
use lathe_tests::wait::wait_until;

const CONVERGE: Duration = Duration::from_secs(120);

fn seed_source() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/my_topology.toml");
    std::fs::read_to_string(path).expect("read config/my_topology.toml")
}

fn running(addr: &str) -> usize {
    http::try_get_json(addr, "/v1/tasks")
        .ok()
        .and_then(|reply| reply.body.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter(|t| t["status"] == "running")
        .count()
}

#[test]
fn a_killed_leader_is_replaced_and_the_new_one_applies_the_next_change() {
    let (_zk, mut cluster) = zk_cluster(3, "leader");
    let addrs = cluster.http_addrs();
    let first = wait_until("every node to agree on one leader", CONVERGE, || {
        let seen: Vec<Option<String>> = addrs.iter().map(|a| leader(a)).collect();
        let first = seen[0].clone()?;
        seen.iter()
            .all(|s| s.as_deref() == Some(&first))
            .then_some(first)
    });
    let source = seed_source();
    let reply = http::put_text(
        &addrs[0],
        "/v1/topology?file=my_topology.toml",
        "application/toml",
        &source,
    );
    assert_eq!(reply.status, 200, "deploy: {}", reply.text);
    wait_until("13 running instances", CONVERGE, || {
        running(&addrs[0]) == 13
    });

    let victim = (0..cluster.len())
        .find(|&i| cluster.node(i).name() == first)
        .expect("the leader is one of the nodes");
    cluster.node_mut(victim).kill();
    let survivor = addrs[(victim + 1) % addrs.len()].clone();
    let second = wait_until("a new leader", CONVERGE, || {
        leader(&survivor).filter(|name| *name != first)
    });
    println!("leader {first} killed; {second} leads now");

    // The new leader applies the next change: two more v4.2.2 instances, on live nodes.
    let more = source.replacen(
        "version = \"4.2.2\"\ntasks = 5",
        "version = \"4.2.2\"\ntasks = 7",
        1,
    );
    assert_ne!(
        more, source,
        "the seed file changed shape: adjust this test"
    );
    let reply = http::put_text(
        &survivor,
        "/v1/topology?file=my_topology.toml",
        "application/toml",
        &more,
    );
    assert_eq!(reply.status, 200, "redeploy: {}", reply.text);
    wait_until("15 running instances on live nodes", CONVERGE, || {
        let reply = http::try_get_json(&survivor, "/v1/tasks").ok()?;
        let tasks = reply.body.as_array()?.clone();
        let live = tasks
            .iter()
            .filter(|t| t["status"] == "running" && t["node"] != first.as_str())
            .count();
        (live == 15).then_some(())
    });
}
