//! Fencing with real processes: a node cut off from ZooKeeper (its ZooKeeper traffic goes through a
//! proxy the test cuts) while its peers still reach it. Its session expires, the scheduler
//! re-places its instances on the live nodes, and the cut-off node must stop serving them: it
//! fences itself (its peers hold it dead while it has no ZooKeeper) and stops every instance. When
//! ZooKeeper is back, it registers again and the fence lifts.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::time::Duration;

use lathe_tests::http;
use lathe_tests::node::{NodeBuilder, NodeProcess};
use lathe_tests::proxy::TcpProxy;
use lathe_tests::scenario::{metric_value, TEST_COOKIE};
use lathe_tests::wait::wait_until;
use lathe_tests::zk::ZkServer;
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(90);
const INSTANCES: usize = 6;

const TOPOLOGY: &str = r#"
[task.http.fp]
crate = "http_frontpage"
version = "4.2.1"
task = "my::FrontPage"
tasks = 6
"#;

/// Running instances per node, from the registry as `addr` sees it.
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

/// The HTTP endpoints of group `fp` that `node` serves.
fn endpoints_of(addr: &str, node: &str) -> Vec<String> {
    let reply = http::get_json(addr, "/v1/services/http/fp");
    reply
        .body
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["node"] == node)
        .filter_map(|e| e["http"].as_str().map(str::to_string))
        .collect()
}

fn alive_names(node: &NodeProcess) -> Vec<String> {
    node.alive_member_names().unwrap_or_default()
}

#[test]
fn a_node_cut_off_from_zookeeper_stops_serving_and_comes_back_when_it_reconnects() {
    let zk = ZkServer::start().expect("start zookeeper");
    let proxy = TcpProxy::start(&zk.connect_string());
    let builder = |name: &str, zookeeper: &str| {
        NodeBuilder::new()
            .name(name)
            .zookeeper(zookeeper)
            .cookie(TEST_COOKIE)
    };
    let first = builder("fence-0", &zk.connect_string()).start();
    let seed = first.cluster_addr().to_string();
    let second = builder("fence-1", &zk.connect_string()).join(&seed).start();
    // Only the third node reaches ZooKeeper through the proxy.
    let cut_off = builder("fence-2", &proxy.addr()).join(&seed).start();
    let names = ["fence-0", "fence-1", "fence-2"];
    wait_until("3 alive members on every node", CONVERGE, || {
        [&first, &second, &cut_off]
            .iter()
            .all(|n| alive_names(n) == names)
    });

    let addr = first.http_addr().to_string();
    let reply = http::put_text(&addr, "/v1/topology", "application/toml", TOPOLOGY);
    assert_eq!(reply.status, 200, "deploy: {}", reply.text);
    let on_cut_off = wait_until("6 instances running, some on fence-2", CONVERGE, || {
        let counts = running_by_node(&addr);
        let endpoints = endpoints_of(&addr, "fence-2");
        let placed = counts.values().sum::<usize>() == INSTANCES
            && counts.get("fence-2").copied().unwrap_or(0) == endpoints.len()
            && !endpoints.is_empty();
        if placed {
            Ok(endpoints)
        } else {
            Err(format!("running {counts:?}, fence-2 serves {endpoints:?}"))
        }
    });
    for endpoint in &on_cut_off {
        let reply = http::get_json(endpoint, "/get/index");
        assert_eq!(reply.status, 200, "fence-2's instance at {endpoint}");
    }
    assert_eq!(
        metric_value(cut_off.http_addr(), "lathe_node_fenced"),
        Ok(0.0)
    );

    proxy.cut();

    // The live nodes re-place fence-2's instances...
    wait_until(
        "every instance running on fence-0 and fence-1",
        CONVERGE,
        || {
            let counts = running_by_node(&addr);
            let moved =
                !counts.contains_key("fence-2") && counts.values().sum::<usize>() == INSTANCES;
            moved.then_some(()).ok_or(format!("running {counts:?}"))
        },
    );
    // ...and fence-2, which still answers REST, fences itself and stops serving them.
    wait_until("fence-2 fenced, its instances stopped", CONVERGE, || {
        let node = cut_off.http_addr();
        let fenced = metric_value(node, "lathe_node_fenced");
        let instances = metric_value(node, "lathe_task_instances").unwrap_or(0.0);
        let serving: Vec<&String> = on_cut_off
            .iter()
            .filter(|endpoint| TcpStream::connect(endpoint.as_str()).is_ok())
            .collect();
        if fenced == Ok(1.0) && instances == 0.0 && serving.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "fenced {fenced:?}, {instances} instances, still accepting on {serving:?}"
            ))
        }
    });
    let log = cut_off.log_contents();
    assert!(
        log.contains("node fenced"),
        "fence-2's log does not say why it stopped its instances:\n{}",
        cut_off.log_tail(40)
    );

    proxy.restore();

    // Back in ZooKeeper with a new session: the fence lifts and fence-2 is a live member again.
    wait_until("fence-2 unfenced and alive everywhere", CONVERGE, || {
        let fenced = metric_value(cut_off.http_addr(), "lathe_node_fenced");
        let views: Vec<Vec<String>> = [&first, &second, &cut_off]
            .iter()
            .map(|n| alive_names(n))
            .collect();
        let all_alive = views.iter().all(|v| v == &names);
        if fenced == Ok(0.0) && all_alive {
            Ok(())
        } else {
            Err(format!("fenced {fenced:?}, alive views {views:?}"))
        }
    });
    wait_until("6 instances running", CONVERGE, || {
        let counts = running_by_node(&addr);
        (counts.values().sum::<usize>() == INSTANCES)
            .then_some(())
            .ok_or(format!("running {counts:?}"))
    });
    let members = http::get_json(&addr, "/v1/members");
    let leader: Vec<&Value> = members.body["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["leader"] == true)
        .collect();
    assert_eq!(leader.len(), 1, "one leader: {}", members.text);
}
