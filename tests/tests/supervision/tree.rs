//! `GET /v1/tree` on real nodes: a node's own tree, another node's through any node, the whole
//! cluster with an unreachable member listed with an error, `lathe tree` drawing it, the tree as
//! metrics; and the answers of `POST /v1/actors/kill` that kill nothing (403 without
//! `--enable-chaos`, 400, 404, 405).

use std::time::Duration;

use lathe_tests::http::{self, Reply};
use lathe_tests::node::{run_cli, NodeBuilder, NodeProcess};
use lathe_tests::scenario::{assert_error, zk_cluster_with};
use lathe_tests::wait::wait_until;
use serde_json::{json, Value};

const CONVERGE: Duration = Duration::from_secs(30);
const DISABLED: &str = "failure drills are disabled: start lathe-node with --enable-chaos";

fn tree_of(reply: &Reply) -> &Value {
    assert_eq!(reply.status, 200, "GET /v1/tree: {}", reply.text);
    &reply.body["tree"]
}

fn children(actor: &Value) -> Vec<&Value> {
    actor["children"]
        .as_array()
        .map(|c| c.iter().collect())
        .unwrap_or_default()
}

fn field<'a>(actors: &[&'a Value], name: &str) -> Vec<&'a str> {
    actors.iter().filter_map(|a| a[name].as_str()).collect()
}

/// Checks the shape of one node's tree: the root, the subsystems, the registry's children.
fn check_node_tree(tree: &Value, node: &str) {
    assert_eq!(
        (
            &tree["path"],
            &tree["kind"],
            &tree["status"],
            &tree["restarts"]
        ),
        (
            &json!("node"),
            &json!("node-supervisor"),
            &json!("running"),
            &json!(0)
        ),
        "{node}: {tree:#}"
    );
    let subsystems = children(tree);
    assert_eq!(
        field(&subsystems, "kind"),
        [
            "membership",
            "registry-supervisor",
            "scheduler",
            "task-supervisor"
        ],
        "{node}: {tree:#}"
    );
    assert_eq!(
        field(&subsystems, "path"),
        [
            "node/membership",
            "node/registry",
            "node/scheduler",
            "node/tasks"
        ]
    );
    let registry = children(subsystems[1]);
    assert_eq!(
        field(&registry, "path"),
        [
            "node/registry/feed",
            "node/registry/shard-0",
            "node/registry/shard-1",
            "node/registry/shard-2",
            "node/registry/shard-3"
        ]
    );
    assert!(registry.iter().all(|a| a["status"] == "running"));
}

/// The sample of a labelled metric whose labels include every `labels` pair.
fn labelled_metric(node: &NodeProcess, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let reply = http::try_get_json(node.http_addr(), "/metrics").ok()?;
    reply.text.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let rest = series.strip_prefix(name)?.strip_prefix('{')?;
        let all = labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        all.then(|| value.parse().ok()).flatten()
    })
}

#[test]
fn nodes_serve_their_tree_another_nodes_tree_and_the_cluster_tree() {
    let (_zk, mut cluster) = zk_cluster_with(2, NodeBuilder::new().name("tree"));
    let (a, b) = (cluster.node(0), cluster.node(1));
    let (a_name, b_name) = (a.name().to_string(), b.name().to_string());

    let own = a.get_json(&format!("/v1/tree?node={a_name}"));
    assert_eq!(own.body["node"], json!(a_name));
    check_node_tree(tree_of(&own), &a_name);
    let other = a.get_json(&format!("/v1/tree?node={b_name}"));
    assert_eq!(other.body["node"], json!(b_name), "{}", other.text);
    check_node_tree(tree_of(&other), &b_name);

    let whole = a.get_json("/v1/tree");
    assert_eq!(whole.status, 200, "{}", whole.text);
    let nodes = whole.body["nodes"].as_array().expect("nodes");
    let names: Vec<&str> = nodes.iter().filter_map(|n| n["node"].as_str()).collect();
    assert_eq!(names.len(), 2, "{}", whole.text);
    for entry in nodes {
        assert_eq!(entry["status"], "alive", "{entry:#}");
        check_node_tree(&entry["tree"], entry["node"].as_str().unwrap_or("?"));
    }

    let unknown = a.get_json("/v1/tree?node=nobody");
    let message = assert_error(&unknown, 404, "an unknown node");
    assert!(message.contains("nobody"), "{message}");
    assert_error(&a.get_json("/v1/tree?depth=2"), 400, "an unknown parameter");
    assert_error(&a.get_json("/v1/tree?node="), 400, "an empty node name");

    // `lathe tree` draws it, one line per actor.
    let output = run_cli(a.http_addr(), &["tree", "--node", &a_name]);
    let drawing = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "lathe tree: {drawing}");
    assert!(
        drawing.contains("node/registry/shard-3  registry-shard  running  restarts=0"),
        "{drawing}"
    );

    // The tree as metrics.
    let shard = [
        ("path", "node/registry/shard-0"),
        ("kind", "registry-shard"),
    ];
    assert_eq!(labelled_metric(a, "lathe_actor_info", &shard), Some(1.0));
    let running_shards = [("kind", "registry-shard"), ("status", "running")];
    assert_eq!(
        labelled_metric(a, "lathe_actors", &running_shards),
        Some(4.0)
    );
    let no_restarts = [("kind", "registry-shard")];
    assert_eq!(
        labelled_metric(a, "lathe_actor_restarts_total", &no_restarts),
        Some(0.0)
    );

    // A member that is gone is listed with an error; the others' trees still come.
    cluster.node_mut(1).kill();
    let a = cluster.node(0);
    let entries = wait_until("the dead member listed with an error", CONVERGE, || {
        let reply = http::try_get_json(a.http_addr(), "/v1/tree").map_err(|e| e.to_string())?;
        let nodes = reply.body["nodes"].as_array().cloned().unwrap_or_default();
        let gone = nodes.iter().find(|n| n["node"] == json!(b_name));
        match gone {
            Some(entry) if entry["error"].is_string() => Ok(nodes),
            _ => Err(reply.text),
        }
    });
    let alive = entries.iter().find(|n| n["node"] == json!(a_name));
    check_node_tree(&alive.expect("the live node")["tree"], &a_name);
    let fetched = a.get_json(&format!("/v1/tree?node={b_name}"));
    assert!(
        matches!(fetched.status, 502 | 404),
        "the tree of a dead node: {}",
        fetched.text
    );
}

#[test]
fn drills_are_refused_without_the_flag_and_bad_drills_with_it() {
    let mut plain = NodeBuilder::new().name("nochaos").start();
    let body = json!({"path": "node/scheduler"});
    let refused = http::post_json(plain.http_addr(), "/v1/actors/kill", &body);
    assert_eq!(
        assert_error(&refused, 403, "a drill without --enable-chaos"),
        DISABLED
    );
    let tree = plain.get_json("/v1/tree?node=nochaos");
    assert_eq!(tree_of(&tree)["children"][2]["restarts"], json!(0));
    plain.terminate();

    let chaos = NodeBuilder::new().name("chaos").enable_chaos().start();
    let addr = chaos.http_addr();
    let kill = |body: &str| http::request("POST", addr, "/v1/actors/kill", Some(body));
    assert_error(&kill("not json"), 400, "a body that is not json");
    assert_error(&kill(r#"{"path": 3}"#), 400, "a path that is not a string");
    assert_error(
        &kill(r#"{"path": "node", "x": 1}"#),
        400,
        "an unknown field",
    );
    let unknown = assert_error(&kill(r#"{"path": "node/nothing"}"#), 404, "an unknown path");
    assert!(unknown.contains("node/nothing"), "{unknown}");
    let wrong_method = http::get_json(addr, "/v1/actors/kill");
    assert_error(&wrong_method, 405, "GET on the drill endpoint");
    assert!(http::is_healthy(addr));
}
