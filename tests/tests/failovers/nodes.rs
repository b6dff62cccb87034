//! Node failover with real processes: SIGKILL a node that hosts instances of the seed topology;
//! its endpoints are withdrawn, every instance runs again on the live nodes, and the load
//! balancers elsewhere keep answering throughout.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lathe_tests::http;
use lathe_tests::scenario::zk_cluster;
use lathe_tests::wait::wait_until;
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(120);

fn seed_source() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/my_topology.toml");
    std::fs::read_to_string(path).expect("read config/my_topology.toml")
}

/// Running instances per node, and the LB endpoints with their nodes.
fn running_by_node(addr: &str) -> BTreeMap<String, usize> {
    let reply = http::get_json(addr, "/v1/tasks");
    let mut counts = BTreeMap::new();
    for task in reply.body.as_array().into_iter().flatten() {
        if task["status"] == "running" {
            let node = task["node"].as_str().unwrap_or_default().to_string();
            *counts.entry(node).or_default() += 1;
        }
    }
    counts
}

fn lb_endpoints(addr: &str) -> Vec<(String, String)> {
    let reply = http::get_json(addr, "/v1/services/http/lb");
    reply
        .body
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e["node"].as_str()?.to_string(),
                e["http"].as_str()?.to_string(),
            ))
        })
        .collect()
}

fn get(agent: &ureq::Agent, url: &str) -> Result<u16, String> {
    match agent.get(url).call() {
        Ok(response) => Ok(response.status()),
        Err(ureq::Error::Status(code, _)) => Ok(code),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn sigkill_of_a_node_moves_its_instances_and_the_other_lbs_keep_answering() {
    let (_zk, mut cluster) = zk_cluster(3, "failover");
    let addr = cluster.node(0).http_addr().to_string();
    let reply = http::put_text(
        &addr,
        "/v1/topology?file=my_topology.toml",
        "application/toml",
        &seed_source(),
    );
    assert_eq!(reply.status, 200, "deploy: {}", reply.text);
    wait_until("13 running instances", CONVERGE, || {
        running_by_node(&addr).values().sum::<usize>() == 13
    });

    let victim = cluster.node(2).name().to_string();
    let hosted = running_by_node(&addr).get(&victim).copied().unwrap_or(0);
    assert!(hosted > 0, "{victim} hosts no instance");
    let survivor_lb = lb_endpoints(&addr)
        .into_iter()
        .find(|(node, _)| *node != victim)
        .map(|(_, http)| format!("http://{http}/get/index"))
        .expect("an LB on a surviving node");

    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    assert_eq!(get(&agent, &survivor_lb), Ok(200));
    let killed_at = Instant::now();
    cluster.node_mut(2).kill();

    // Steady traffic through a surviving LB while the cluster fails over.
    let mut requests = 0usize;
    let mut unreachable = Vec::new();
    let failover = wait_until("every instance running on live nodes", CONVERGE, || {
        for _ in 0..20 {
            requests += 1;
            if let Err(e) = get(&agent, &survivor_lb) {
                unreachable.push(e);
            }
        }
        let counts = running_by_node(&addr);
        let moved = !counts.contains_key(&victim) && counts.values().sum::<usize>() == 13;
        let withdrawn = lb_endpoints(&addr).iter().all(|(node, _)| *node != victim);
        (moved && withdrawn).then(|| killed_at.elapsed())
    });
    println!(
        "failover after SIGKILL: {failover:?} ({hosted} instances moved, {requests} requests)"
    );
    assert!(
        unreachable.is_empty(),
        "the surviving LB stopped answering: {unreachable:?}"
    );

    // Once failed over, everything through the surviving LBs succeeds.
    let endpoints = lb_endpoints(&addr);
    assert_eq!(endpoints.len(), 3, "3 LBs again: {endpoints:?}");
    for (_, http) in &endpoints {
        for _ in 0..20 {
            let url = format!("http://{http}/get/index");
            assert_eq!(get(&agent, &url), Ok(200), "{url}");
        }
    }
    let members = http::get_json(&addr, "/v1/members");
    let dead: Vec<&Value> = members.body["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["name"] == victim.as_str())
        .collect();
    assert_eq!(
        dead.first().map(|m| m["status"].clone()),
        Some("dead".into())
    );
}
