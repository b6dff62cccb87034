//! Names and keys just under the old 1024-byte key limit, against real processes: a group name
//! whose derived `/lathe/rollouts/<group>` path would be too long is refused at deploy (it used to
//! pass, panic the scheduler's reconcile and leave the leader scheduling nothing, failover
//! included), a shift key as long answers 400 (it used to drop the connection), and afterwards
//! the cluster still deploys, schedules and fails over.

use std::time::Duration;

use lathe_tests::http;
use lathe_tests::scenario::{assert_error, leader, zk_cluster};
use lathe_tests::wait::wait_until;

const CONVERGE: Duration = Duration::from_secs(120);

fn seed_source() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/my_topology.toml");
    std::fs::read_to_string(path).expect("read config/my_topology.toml")
}

/// The running instances, as (group, node).
fn running(addr: &str) -> Vec<(String, String)> {
    http::try_get_json(addr, "/v1/tasks")
        .ok()
        .and_then(|reply| reply.body.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter(|t| t["status"] == "running")
        .map(|t| {
            let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
            (text(&t["group"]), text(&t["node"]))
        })
        .collect()
}

fn deploy(addr: &str, source: &str) -> http::Reply {
    http::put_text(
        addr,
        "/v1/topology?file=my_topology.toml",
        "application/toml",
        source,
    )
}

#[test]
fn names_too_long_for_derived_paths_are_refused_and_scheduling_carries_on() {
    let (_zk, mut cluster) = zk_cluster(2, "longnames");
    let addrs = cluster.http_addrs();
    let first = wait_until("both nodes to agree on one leader", CONVERGE, || {
        let seen: Vec<Option<String>> = addrs.iter().map(|a| leader(a)).collect();
        let first = seen[0].clone()?;
        seen.iter()
            .all(|s| s.as_deref() == Some(&first))
            .then_some(first)
    });

    // 1015 bytes: under the old limit of every key, over what leaves room for its records.
    let long_group = format!("task.{}", "g".repeat(1010));
    let bad = seed_source().replace("task.http.lb", &long_group);
    let reply = deploy(&addrs[0], &bad);
    let message = assert_error(&reply, 400, "a deploy with a 1015-byte group name");
    assert!(
        message.contains("limit of 768 bytes"),
        "the error does not name the limit: {message}"
    );
    let stored = http::get_json(&addrs[0], "/v1/topology");
    assert_eq!(
        stored.status, 404,
        "a refused deploy stored: {}",
        stored.text
    );

    let long_key = format!("/v1/shifts/{}", "k".repeat(1015));
    for addr in &addrs {
        let reply = http::get_json(addr, &long_key);
        let message = assert_error(&reply, 400, "a shift of a 1015-byte key");
        assert!(message.contains("limit of 768 bytes"), "{message}");
        assert_eq!(http::get_json(addr, "/v1/health").status, 200);
    }

    // The leader still schedules what comes next.
    let reply = deploy(&addrs[0], &seed_source());
    assert_eq!(reply.status, 200, "deploy: {}", reply.text);
    wait_until("13 running instances", CONVERGE, || {
        (running(&addrs[0]).len() == 13).then_some(())
    });

    // And a killed leader's instances are placed again by the new one.
    let victim = (0..cluster.len())
        .find(|&i| cluster.node(i).name() == first)
        .expect("the leader is one of the nodes");
    let before = running(&addrs[0]);
    println!("before the kill, leader {first}: {before:?}");
    cluster.node_mut(victim).kill();
    let survivor = addrs[1 - victim].clone();
    let second = wait_until("a new leader", CONVERGE, || {
        leader(&survivor).filter(|name| *name != first)
    });
    // The new leader places the next change: two more v4.2.2 instances, all on the survivor.
    let more = seed_source().replacen(
        "version = \"4.2.2\"\ntasks = 5",
        "version = \"4.2.2\"\ntasks = 7",
        1,
    );
    assert_ne!(
        more,
        seed_source(),
        "the seed file changed shape: adjust this test"
    );
    let reply = deploy(&survivor, &more);
    assert_eq!(reply.status, 200, "redeploy: {}", reply.text);
    wait_until("15 running instances on the survivor", CONVERGE, || {
        let live = running(&survivor)
            .iter()
            .filter(|(_, node)| *node == second)
            .count();
        (live == 15).then_some(())
    });
}
