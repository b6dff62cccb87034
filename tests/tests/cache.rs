//! The distributed cache (`ctx.cache`) over three real nodes and a real ZooKeeper: `my::Cached`
//! has one instance per node; every key is loaded once, by its owner, whichever instance is
//! asked and however many ask at once (the other instances get it from the owner over the
//! cluster); when a node dies, its keys get new owners and every key is still served.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lathe_tests::http;
use lathe_tests::scenario::zk_cluster;
use lathe_tests::wait::wait_until;

const CONVERGE: Duration = Duration::from_secs(90);
const CACHED: &str = "[task.cached]\ncrate = \"http_loadbalancer\"\nversion = \"0.8.2\"\n\
     task = \"my::Cached\"\ntasks = 3\n";

/// The group's running instances: index → (node, endpoint).
fn instances(addr: &str) -> Result<BTreeMap<u64, (String, String)>, String> {
    let reply = http::try_get_json(addr, "/v1/tasks")?;
    Ok(reply
        .body
        .as_array()
        .ok_or(reply.text.clone())?
        .iter()
        .filter(|t| t["group"] == "task.cached" && t["status"] == "running")
        .filter_map(|t| {
            Some((
                t["index"].as_u64()?,
                (
                    t["node"].as_str()?.to_string(),
                    t["endpoint"].as_str()?.to_string(),
                ),
            ))
        })
        .collect())
}

fn value(endpoint: &str, key: &str) -> String {
    let reply = http::get_json(endpoint, &format!("/cache/{key}"));
    assert_eq!(
        reply.status, 200,
        "GET /cache/{key} on {endpoint}: {}",
        reply.text
    );
    reply.body["value"].as_str().expect("a value").to_string()
}

fn loads(endpoints: &[String]) -> u64 {
    endpoints
        .iter()
        .map(|e| {
            http::get_json(e, "/stats").body["loads"]
                .as_u64()
                .expect("loads")
        })
        .sum()
}

/// Whether every endpoint answers `key` with the same value.
fn agreed(endpoints: &[String], key: &str) -> bool {
    let values: BTreeSet<String> = endpoints.iter().map(|e| value(e, key)).collect();
    values.len() == 1
}

#[test]
fn each_key_is_loaded_once_by_its_owner_and_every_instance_serves_it() {
    let (_zk, mut cluster) = zk_cluster(3, "cache");
    let addr = cluster.node(0).http_addr().to_string();
    let reply = http::put_text(&addr, "/v1/topology", "application/toml", CACHED);
    assert_eq!(reply.status, 200, "deploy: {}", reply.text);
    let placed = wait_until("3 instances on 3 nodes", CONVERGE, || {
        let now = instances(&addr)?;
        let nodes: BTreeSet<&String> = now.values().map(|(node, _)| node).collect();
        if now.len() == 3 && nodes.len() == 3 {
            Ok(now)
        } else {
            Err(format!("{now:?}"))
        }
    });
    let endpoints: Vec<String> = placed.values().map(|(_, e)| e.clone()).collect();
    // Every instance has heard of the other two once they all answer fresh keys alike.
    let mut fresh = 0;
    wait_until("the instances agree on the owners", CONVERGE, || {
        fresh += 1;
        (0..5).all(|i| agreed(&endpoints, &format!("warm-{fresh}-{i}")))
    });

    let before = loads(&endpoints);
    let mut owners = BTreeSet::new();
    for key in (0..30).map(|i| format!("k{i}")) {
        let values: BTreeSet<String> = endpoints.iter().map(|e| value(e, &key)).collect();
        assert_eq!(values.len(), 1, "{key}: {values:?}");
        let only = values.into_iter().next().unwrap_or_default();
        assert!(
            only.starts_with(&format!("value of {key}, loaded by task.cached/")),
            "{only}"
        );
        owners.insert(only.rsplit('/').next().unwrap_or_default().to_string());
    }
    assert_eq!(loads(&endpoints) - before, 30, "one load per key, 90 gets");
    assert!(owners.len() >= 2, "keys spread over the owners: {owners:?}");
    for endpoint in &endpoints {
        let stats = http::get_json(endpoint, "/stats").body;
        assert!(stats["peer_gets"].as_u64() > Some(0), "{endpoint}: {stats}");
        assert!(stats["served"].as_u64() > Some(0), "{endpoint}: {stats}");
    }

    // The nodes count their instances' gets by outcome.
    let peer_gets: f64 = (0..3)
        .map(|i| {
            let metrics = http::request("GET", cluster.node(i).http_addr(), "/metrics", None).text;
            metrics
                .lines()
                .filter(|l| {
                    l.starts_with("lathe_cache_gets_total{") && l.contains("outcome=\"peer\"")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        })
        .sum();
    assert!(
        peer_gets >= 60.0,
        "lathe_cache_gets_total{{outcome=\"peer\"}} = {peer_gets}"
    );

    // 30 requests at once for one new key, through all three instances: one load.
    let before = loads(&endpoints);
    let threads: Vec<_> = (0..30)
        .map(|i| {
            let endpoint = endpoints[i % 3].clone();
            std::thread::spawn(move || value(&endpoint, "popular"))
        })
        .collect();
    let values: BTreeSet<String> = threads
        .into_iter()
        .map(|t| t.join().expect("a request thread"))
        .collect();
    assert_eq!(values.len(), 1, "{values:?}");
    assert_eq!(
        loads(&endpoints) - before,
        1,
        "single flight across the cluster"
    );

    // A node dies: its instance runs again elsewhere, and every key is served by all.
    cluster.node_mut(2).kill();
    let survivors = wait_until("3 instances on the 2 live nodes", CONVERGE, || {
        let now = instances(&addr)?;
        let dead = cluster.node(2).name().to_string();
        if now.len() == 3 && now.values().all(|(node, _)| *node != dead) {
            Ok(now)
        } else {
            Err(format!("{now:?}"))
        }
    });
    let endpoints: Vec<String> = survivors.values().map(|(_, e)| e.clone()).collect();
    wait_until("every key served alike by the instances", CONVERGE, || {
        (0..30).all(|i| agreed(&endpoints, &format!("k{i}")))
    });
}
