//! The YARN backend with real processes, against the ResourceManager double of `lathe-tests` (no
//! YARN can be installed here): a real ZooKeeper, one `lathe-node --max-instances 4 --yarn-rm
//! <double>`, and the seed's 13 instances. The leader asks YARN for containers while instances are
//! pending for want of capacity; the double runs each granted container's `lathe-node`, which
//! joins and takes instances. A container that fails, or that someone kills through the RM, is
//! replaced, and every instance runs again.

use std::collections::BTreeMap;
use std::time::Duration;

use lathe_tests::http;
use lathe_tests::node::NodeBuilder;
use lathe_tests::scenario::zk_cluster_with;
use lathe_tests::wait::wait_until;
use lathe_tests::yarn::{AppView, ResourceManagerDouble};
use serde_json::Value;

/// Containers start real node processes on a busy machine: be patient.
const CONVERGE: Duration = Duration::from_secs(180);
const SEED_INSTANCES: usize = 13;
const LEADER_CAPACITY: usize = 4;
const CONTAINER_CAPACITY: usize = 3;

fn seed_source() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/my_topology.toml");
    std::fs::read_to_string(path).expect("read config/my_topology.toml")
}

/// One entry of `/v1/tasks`.
#[derive(Debug)]
struct Instance {
    status: String,
    node: String,
    reason: String,
}

fn tasks(addr: &str) -> Result<Vec<Instance>, String> {
    let reply = http::try_get_json(addr, "/v1/tasks")?;
    let tasks = reply
        .body
        .as_array()
        .ok_or_else(|| format!("/v1/tasks: {}", reply.text))?;
    let text = |t: &Value, key: &str| t[key].as_str().unwrap_or_default().to_string();
    Ok(tasks
        .iter()
        .map(|t| Instance {
            status: text(t, "status"),
            node: text(t, "node"),
            reason: text(t, "reason"),
        })
        .collect())
}

/// Running instances per node.
fn running_by_node(addr: &str) -> Result<BTreeMap<String, usize>, String> {
    let mut counts = BTreeMap::new();
    for instance in tasks(addr)? {
        if instance.status == "running" {
            *counts.entry(instance.node).or_default() += 1;
        }
    }
    Ok(counts)
}

/// Alive members and their `max_instances`.
fn alive_members(addr: &str) -> Result<BTreeMap<String, Option<u64>>, String> {
    let reply = http::try_get_json(addr, "/v1/members")?;
    let members = reply.body["members"]
        .as_array()
        .ok_or_else(|| format!("/v1/members: {}", reply.text))?;
    Ok(members
        .iter()
        .filter(|m| m["status"] == "alive")
        .map(|m| {
            (
                m["name"].as_str().unwrap_or_default().to_string(),
                m["max_instances"].as_u64(),
            )
        })
        .collect())
}

/// One sample of a labelled metric.
fn metric(addr: &str, series: &str) -> Option<f64> {
    let reply = http::try_get_json(addr, "/metrics").ok()?;
    reply.text.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// Every seed instance runs, no node holds more than its capacity, and the nodes running them
/// are alive: returns the running instances per node.
fn all_running(addr: &str) -> Result<BTreeMap<String, usize>, String> {
    let counts = running_by_node(addr)?;
    let members = alive_members(addr)?;
    let total: usize = counts.values().sum();
    if total != SEED_INSTANCES {
        return Err(format!("{total} running: {counts:?}; alive: {members:?}"));
    }
    for (node, count) in &counts {
        match members.get(node) {
            None => return Err(format!("{node} runs {count} but is not alive: {members:?}")),
            Some(Some(max)) if *count as u64 > *max => {
                return Err(format!("{node} runs {count} > its {max}"))
            }
            _ => {}
        }
    }
    Ok(counts)
}

/// The running application of node `name`.
fn app_of(rm: &ResourceManagerDouble, name: &str) -> AppView {
    rm.apps()
        .into_iter()
        .find(|app| app.name == name && app.state == "RUNNING")
        .unwrap_or_else(|| panic!("no running application for {name}: {:?}", rm.apps()))
}

/// The REST address a container's node printed when it started (`..., http http://HOST:PORT`).
fn container_http(rm: &ResourceManagerDouble, app: &str) -> Option<String> {
    let output = rm.container_output(app);
    let (_, rest) = output.split_once(", http http://")?;
    Some(rest.split_whitespace().next()?.to_string())
}

/// The REST address of the scheduler leader when a container node leads, asked of the running
/// containers' nodes.
fn leader_addr(rm: &ResourceManagerDouble) -> Result<String, String> {
    let mut seen = Vec::new();
    for app in rm.apps().iter().filter(|a| a.state == "RUNNING") {
        let Some(http) = container_http(rm, &app.id) else {
            continue;
        };
        let Ok(reply) = http::try_get_json(&http, "/v1/members") else {
            continue;
        };
        for member in reply.body["members"].as_array().into_iter().flatten() {
            if member["leader"] == true && member["status"] == "alive" {
                let name = member["name"].as_str().unwrap_or_default();
                if name.starts_with("yarn-") {
                    if let Some(addr) = member["http_addr"].as_str() {
                        return Ok(addr.to_string());
                    }
                }
                seen.push(format!("{} says {name} leads", app.name));
            }
        }
    }
    Err(format!("no container node leads: {seen:?}"))
}

fn yarn_nodes(counts: &BTreeMap<String, usize>) -> Vec<&str> {
    counts
        .keys()
        .filter(|n| n.starts_with("yarn-"))
        .map(String::as_str)
        .collect()
}

#[test]
fn yarn_containers_join_when_capacity_is_short_and_are_replaced_when_they_die() {
    let rm = ResourceManagerDouble::start();
    // Room for two containers at first: the third waits ACCEPTED.
    rm.set_capacity(Some(2));
    let template = NodeBuilder::new()
        .name("leader")
        .arg("--max-instances")
        .arg(LEADER_CAPACITY.to_string())
        .arg("--yarn-rm")
        .arg(rm.url())
        .arg("--yarn-container-max-instances")
        .arg(CONTAINER_CAPACITY.to_string())
        .arg("--yarn-max-containers")
        .arg("4")
        .arg("--yarn-container-memory")
        .arg("256");
    let (_zk, cluster) = zk_cluster_with(1, template);
    let leader = cluster.node(0);
    let addr = leader.http_addr().to_string();

    // The resource manager is part of the leader's supervision tree.
    let tree = leader.get_json("/v1/tree");
    let subsystems: Vec<&str> = tree.body["nodes"][0]["tree"]["children"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["path"].as_str())
        .collect();
    assert!(subsystems.contains(&"node/resources"), "{}", tree.text);
    let leader_name = leader.name().to_string();
    assert_eq!(
        alive_members(&addr).unwrap().get(&leader_name),
        Some(&Some(LEADER_CAPACITY as u64))
    );

    let reply = http::put_text(
        &addr,
        "/v1/topology?file=my_topology.toml",
        "application/toml",
        &seed_source(),
    );
    assert_eq!(reply.status, 200, "deploy: {}", reply.text);

    // 4 on the leader, 9 pending for capacity: ceil(9 / 3) = 3 containers asked for; two run,
    // their nodes join and take 3 each; 3 instances wait, pending for capacity, for the third.
    let reason = wait_until("10 running and 3 pending for capacity", CONVERGE, || {
        let tasks = tasks(&addr)?;
        let running = tasks.iter().filter(|t| t.status == "running").count();
        let pending: Vec<&String> = tasks
            .iter()
            .filter(|t| t.status == "pending")
            .map(|t| &t.reason)
            .collect();
        let apps = rm.apps();
        if running == 10 && pending.len() == 3 && apps.len() == 3 {
            Ok(pending[0].clone())
        } else {
            Err(format!(
                "{running} running, pending {pending:?}; apps {apps:?}"
            ))
        }
    });
    assert!(reason.starts_with("every node that can run "), "{reason}");
    assert!(reason.ends_with(" is full"), "{reason}");
    let states: Vec<String> = rm.apps().iter().map(|a| a.state.clone()).collect();
    assert_eq!(states, ["RUNNING", "RUNNING", "ACCEPTED"]);
    assert_eq!(rm.submissions(), 3, "no more than needed");
    let app = &rm.apps()[0];
    assert_eq!(app.application_type, "LATHE");
    assert_eq!(app.max_attempts, 1);
    assert!(app.command.contains("--join"), "{}", app.command);
    assert!(
        app.command
            .contains(&format!("--max-instances {CONTAINER_CAPACITY}")),
        "{}",
        app.command
    );
    assert!(!app.command.contains(lathe_tests::scenario::TEST_COOKIE));
    assert_eq!(
        app.env.get("LATHE_COOKIE").map(String::as_str),
        Some(lathe_tests::scenario::TEST_COOKIE)
    );

    // The cluster grows: the third container runs, and everything is placed.
    rm.set_capacity(Some(3));
    let counts = wait_until("every instance running", CONVERGE, || all_running(&addr));
    assert_eq!(
        yarn_nodes(&counts),
        ["yarn-1", "yarn-2", "yarn-3"],
        "{counts:?}"
    );
    assert_eq!(counts.get(&leader_name), Some(&LEADER_CAPACITY));
    let members = alive_members(&addr).unwrap();
    assert_eq!(
        members.get("yarn-1"),
        Some(&Some(CONTAINER_CAPACITY as u64))
    );
    wait_until("3 joined containers in the metrics", CONVERGE, || {
        metric(&addr, r#"lathe_resource_containers{state="joined"}"#) == Some(3.0)
    });

    // A container fails (its machine dies): the application FAILS, the node is dead, a new
    // container replaces it and every instance runs again.
    let failed = app_of(&rm, "yarn-2");
    assert!(rm.fail_container(&failed.id));
    let counts = wait_until(
        "every instance running after a failed container",
        CONVERGE,
        || {
            let counts = all_running(&addr)?;
            if counts.contains_key("yarn-2") {
                return Err(format!("yarn-2 still listed: {counts:?}"));
            }
            Ok(counts)
        },
    );
    assert_eq!(rm.app(&failed.id).unwrap().state, "FAILED");
    assert!(
        rm.app(&failed.id)
            .unwrap()
            .diagnostics
            .contains("exitCode: 137"),
        "{:?}",
        rm.app(&failed.id)
    );
    assert_eq!(
        yarn_nodes(&counts),
        ["yarn-1", "yarn-3", "yarn-4"],
        "{counts:?}"
    );
    assert_eq!(rm.submissions(), 4, "one replacement: {:?}", rm.apps());

    // Someone kills one through the RM's REST API: replaced the same way.
    let killed = app_of(&rm, "yarn-1");
    assert!(matches!(rm.kill_through_api(&killed.id), 200 | 202));
    let counts = wait_until("every instance running after a kill", CONVERGE, || {
        let counts = all_running(&addr)?;
        if counts.contains_key("yarn-1") {
            return Err(format!("yarn-1 still listed: {counts:?}"));
        }
        Ok(counts)
    });
    assert_eq!(rm.app(&killed.id).unwrap().state, "KILLED");
    assert_eq!(
        yarn_nodes(&counts),
        ["yarn-3", "yarn-4", "yarn-5"],
        "{counts:?}"
    );
    assert_eq!(rm.submissions(), 5, "one replacement each: {:?}", rm.apps());
    let live = rm
        .apps()
        .iter()
        .filter(|a| a.state == "RUNNING" || a.state == "ACCEPTED")
        .count();
    assert_eq!(live, 3, "{:?}", rm.apps());
    wait_until("the ends in the metrics", CONVERGE, || {
        let failed = metric(
            &addr,
            r#"lathe_resource_container_ends_total{state="failed"}"#,
        );
        let killed = metric(
            &addr,
            r#"lathe_resource_container_ends_total{state="killed"}"#,
        );
        let released = metric(
            &addr,
            r#"lathe_resource_container_ends_total{state="released"}"#,
        );
        let total = [failed, killed, released].iter().flatten().sum::<f64>();
        (total == 2.0).then_some(())
    });

    // The leader keeps its records of what it owns, for a successor to adopt.
    let records = lathe_tests::scenario::entries_under(&addr, "/lathe/resources/yarn");
    let nodes: Vec<String> = records
        .values()
        .filter_map(|(v, _)| v["node"].as_str().map(str::to_string))
        .collect();
    assert_eq!(nodes.len(), 3, "{records:?}");
    for name in ["yarn-3", "yarn-4", "yarn-5"] {
        assert!(nodes.iter().any(|n| n == name), "{records:?}");
    }
}

#[test]
fn a_new_leader_adopts_the_containers_instead_of_asking_again() {
    let rm = ResourceManagerDouble::start();
    let template = NodeBuilder::new()
        .name("first")
        .arg("--max-instances")
        .arg(LEADER_CAPACITY.to_string())
        .arg("--yarn-rm")
        .arg(rm.url())
        .arg("--yarn-container-max-instances")
        .arg(CONTAINER_CAPACITY.to_string())
        .arg("--yarn-container-memory")
        .arg("256");
    let (_zk, mut cluster) = zk_cluster_with(1, template);
    let addr = cluster.node(0).http_addr().to_string();
    let reply = http::put_text(
        &addr,
        "/v1/topology?file=my_topology.toml",
        "application/toml",
        &seed_source(),
    );
    assert_eq!(reply.status, 200, "deploy: {}", reply.text);
    let counts = wait_until("every instance running", CONVERGE, || all_running(&addr));
    assert_eq!(
        yarn_nodes(&counts),
        ["yarn-1", "yarn-2", "yarn-3"],
        "{counts:?}"
    );
    assert_eq!(rm.submissions(), 3);

    // The leader dies. A container node leads now (the oldest member left; every container node
    // got the --yarn-* flags): it adopts the three containers from the registry, and asks only
    // for what the dead leader's 4 instances need, ceil(4 / 3) = 2.
    let yarn_1 = app_of(&rm, "yarn-1");
    cluster.node_mut(0).kill();
    let new_addr = wait_until("a container node leading", CONVERGE, || leader_addr(&rm));
    let counts = wait_until("every instance running again", CONVERGE, || {
        all_running(&new_addr)
    });
    assert_eq!(
        yarn_nodes(&counts),
        ["yarn-1", "yarn-2", "yarn-3", "yarn-4", "yarn-5"],
        "{counts:?}"
    );
    assert_eq!(
        rm.submissions(),
        5,
        "adopted, not asked again: {:?}",
        rm.apps()
    );
    assert_eq!(rm.app(&yarn_1.id).unwrap().state, "RUNNING");
    let records = lathe_tests::scenario::entries_under(&new_addr, "/lathe/resources/yarn");
    assert_eq!(records.len(), 5, "{records:?}");
}
