//! Flows without Kafka on three real nodes and a real ZooKeeper: `my::Emitter` emits to stream
//! `clicks`, which `my::Tally` (3 instances, one per node) consumes. Every message is taken by
//! exactly one Tally instance, the same one for the same key; a stream nobody consumes and a bad
//! stream name are refused with a clear error.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lathe_tests::http;
use lathe_tests::scenario::{assert_error, zk_cluster};
use lathe_tests::wait::wait_until;
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(90);
const TOPOLOGY: &str = "[task.emitter]\ncrate = \"http_loadbalancer\"\nversion = \"0.8.2\"\n\
     task = \"my::Emitter\"\ntasks = 1\n\n\
     [task.tally]\ncrate = \"http_loadbalancer\"\nversion = \"0.8.2\"\ntask = \"my::Tally\"\n\
     tasks = 3\nflows = { inputs = [\"clicks\"] }\n";

/// Running instances of `group`: index → (node, endpoint).
fn running(addr: &str, group: &str) -> Result<BTreeMap<u64, (String, String)>, String> {
    let reply = http::try_get_json(addr, "/v1/tasks")?;
    Ok(reply
        .body
        .as_array()
        .ok_or(reply.text.clone())?
        .iter()
        .filter(|t| t["group"] == group && t["status"] == "running")
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

fn emit(emitter: &str, stream: &str, key: &str) -> http::Reply {
    http::request(
        "POST",
        emitter,
        &format!("/emit/{stream}/{key}"),
        Some("{\"n\": 1}"),
    )
}

#[test]
fn every_message_is_taken_once_by_the_instance_its_key_maps_to() {
    let (_zk, cluster) = zk_cluster(3, "flows");
    let addr = cluster.node(0).http_addr().to_string();
    let reply = http::put_text(&addr, "/v1/topology", "application/toml", TOPOLOGY);
    assert_eq!(reply.status, 200, "deploy: {}", reply.text);
    let tallies = wait_until("3 tallies on 3 nodes", CONVERGE, || {
        let now = running(&addr, "task.tally")?;
        let nodes: BTreeSet<&String> = now.values().map(|(node, _)| node).collect();
        if now.len() == 3 && nodes.len() == 3 {
            Ok(now)
        } else {
            Err(format!("{now:?}"))
        }
    });
    let emitter = wait_until("the emitter running", CONVERGE, || {
        running(&addr, "task.emitter")?
            .into_values()
            .next()
            .map(|(_, endpoint)| endpoint)
            .ok_or("not yet".to_string())
    });
    // The emitter's node learns the tallies from their endpoint records: all three first.
    wait_until("3 tally endpoints registered", CONVERGE, || {
        let reply = http::get_json(&addr, "/v1/services/tally");
        reply.body.as_array().map(Vec::len) == Some(3)
    });

    let mut taken_by: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for i in 0..60 {
        let key = format!("user-{}", i % 6);
        let reply = emit(&emitter, "clicks", &key);
        assert_eq!(reply.status, 200, "emit {key}: {}", reply.text);
        let by = reply.body["taken_by"].as_array().expect("taken_by");
        assert_eq!(by.len(), 1, "one consuming group: {}", reply.text);
        taken_by
            .entry(key)
            .or_default()
            .insert(by[0].as_str().unwrap_or_default().to_string());
    }
    assert!(
        taken_by.values().all(|instances| instances.len() == 1),
        "a key always goes to one instance: {taken_by:?}"
    );
    let instances: BTreeSet<&String> = taken_by.values().flatten().collect();
    assert!(
        instances.len() >= 2,
        "keys spread over the tallies: {taken_by:?}"
    );

    // Each tally counted exactly what it took.
    let mut total = 0;
    for (node, endpoint) in tallies.values() {
        let reply = http::get_json(endpoint, "/tally");
        assert_eq!(reply.status, 200, "{node}: {}", reply.text);
        let instance = reply.body["instance"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let counts = reply.body["counts"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for (key, count) in counts.iter().filter(|(k, _)| k.starts_with("user-")) {
            assert_eq!(count, &Value::from(10), "{instance} {key}");
            assert_eq!(taken_by[key], BTreeSet::from([instance.clone()]), "{key}");
            total += 10;
        }
    }
    assert_eq!(total, 60, "every message counted once");

    let nobody = emit(&emitter, "orders", "k");
    let message = assert_error(&nobody, 404, "a stream nobody consumes");
    assert!(
        message.contains("no group consumes stream \"orders\""),
        "{message}"
    );
    let bad = emit(&emitter, "bad%20name", "k");
    let message = assert_error(&bad, 400, "a bad stream name");
    assert!(message.contains("stream name"), "{message}");
}
