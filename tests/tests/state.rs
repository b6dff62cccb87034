//! Task state (`ctx.state()`) on a real node: `my::Counter` (in the seed's `http_loadbalancer`
//! crate) keeps a count in its instance's state, which survives a crash of the instance (killed
//! through the failure drills) and SIGKILL + restart of its node with the same `--data-dir`; two
//! instances never see each other's count.

use std::collections::BTreeMap;
use std::time::Duration;

use lathe_tests::http;
use lathe_tests::node::{NodeBuilder, NodeProcess};
use lathe_tests::wait::wait_until;
use serde_json::{json, Value};

const CONVERGE: Duration = Duration::from_secs(60);
const GROUP: &str = "task.counter";
const COUNTER: &str = "[task.counter]\ncrate = \"http_loadbalancer\"\nversion = \"0.8.2\"\n\
     task = \"my::Counter\"\ntasks = 2\n";

/// Instance `index` once it runs with `restarts` restarts: its endpoint.
fn running(node: &NodeProcess, index: u64, restarts: u64) -> String {
    let what = format!("{GROUP}/{index} running with {restarts} restarts");
    wait_until(&what, CONVERGE, || {
        let reply = http::try_get_json(node.http_addr(), "/v1/tasks")?;
        let tasks: BTreeMap<(String, u64), Value> = reply
            .body
            .as_array()
            .ok_or(reply.text.clone())?
            .iter()
            .map(|t| {
                let group = t["group"].as_str().unwrap_or_default().to_string();
                ((group, t["index"].as_u64().unwrap_or(u64::MAX)), t.clone())
            })
            .collect();
        match tasks.get(&(GROUP.to_string(), index)) {
            Some(t) if t["status"] == "running" && t["restarts"] == restarts => t["endpoint"]
                .as_str()
                .map(str::to_string)
                .ok_or(format!("no endpoint: {t}")),
            other => Err(format!("{other:?}")),
        }
    })
}

fn count(endpoint: &str, method: &str) -> u64 {
    let reply = http::request(method, endpoint, "/count", None);
    assert_eq!(reply.status, 200, "{method} /count: {}", reply.text);
    reply.body["count"].as_u64().expect("a count")
}

#[test]
fn a_count_in_task_state_survives_a_crash_of_the_instance_and_a_restart_of_its_node() {
    let mut node = NodeBuilder::new().name("state").enable_chaos().start();
    let reply = http::put_text(
        node.http_addr(),
        "/v1/topology",
        "application/toml",
        COUNTER,
    );
    assert_eq!(reply.status, 200, "deploy: {}", reply.text);
    let zero = running(&node, 0, 0);
    let one = running(&node, 1, 0);
    for expected in 1..=5 {
        assert_eq!(count(&zero, "POST"), expected);
    }
    assert_eq!(count(&one, "POST"), 1, "instance 1 has its own count");
    assert_eq!(count(&one, "GET"), 1);
    let bad = http::request("GET", &zero, "/elsewhere", None);
    assert_eq!((bad.status, bad.text.as_str()), (400, "invalid request"));

    // The instance crashes (as if it had panicked) and its supervisor restarts it.
    let killed = http::post_json(
        node.http_addr(),
        "/v1/actors/kill",
        &json!({ "path": format!("node/tasks/{GROUP}/0") }),
    );
    assert_eq!(killed.status, 200, "kill: {}", killed.text);
    let zero = running(&node, 0, 1);
    assert_eq!(count(&zero, "GET"), 5, "the count after the crash");
    assert_eq!(count(&zero, "POST"), 6);

    // The node is killed outright and started again with the same --data-dir.
    node.kill();
    node.restart();
    let zero = running(&node, 0, 0);
    let one = running(&node, 1, 0);
    assert_eq!(
        count(&zero, "GET"),
        6,
        "the count after SIGKILL of the node"
    );
    assert_eq!(count(&one, "GET"), 1);
    assert!(
        node.data_dir().join("state").is_dir(),
        "the state lives under --data-dir"
    );
}
