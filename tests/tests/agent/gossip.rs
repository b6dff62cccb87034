//! Two agents gossip. One is cut off from the registry (a proxy in front of its only node is
//! blocked): it learns from its peer that it is behind, says so in `/status`, and catches up once
//! access returns. A claim no registry node confirms (anyone can `POST /v1/gossip`) is ignored.

use std::path::Path;
use std::time::Duration;

use crate::support::{free_addr, metric_with, registry_list, toml_str, AgentProcess};
use lathe_tests::http;
use lathe_tests::node::NodeBuilder;
use lathe_tests::proxy::TcpProxy;
use lathe_tests::scenario::put_ok;
use lathe_tests::wait::wait_until;
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(30);

fn config(name: &str, registry: &str, status: &str, peer: &str, dir: &Path) -> String {
    let template = dir.join("g.j2");
    std::fs::write(
        &template,
        "v = {{ values[\"/app/g/v\"] | default(\"none\") }}\n",
    )
    .expect("write the template");
    format!(
        r#"
name = "{name}"
registry = {registry}
peers = {peers}
retry = {{ min = "100ms", max = "500ms" }}
[gossip]
interval = "200ms"
grace = "500ms"
[status]
listen = {status}
[[watch]]
name = "g"
prefix = "/app/g"
wait = {{ min = "50ms", max = "500ms" }}
[[watch.action]]
type = "template"
template = {template}
destination = {destination}
"#,
        registry = registry_list(&[registry.to_string()]),
        peers = registry_list(&[peer.to_string()]),
        status = toml_str(status),
        template = toml_str(template.display().to_string()),
        destination = toml_str(dir.join(format!("{name}.out")).display().to_string()),
    )
}

fn output(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.out"))).unwrap_or_default()
}

#[test]
fn a_cut_off_agent_learns_it_is_behind_and_catches_up() {
    let node = NodeBuilder::new().name("agent-gossip").start();
    let addr = node.http_addr().to_string();
    let proxy = TcpProxy::start(&addr);
    let dir = tempfile::tempdir().expect("a scratch dir");
    let (status_a, status_b) = (free_addr(), free_addr());
    put_ok(&addr, "/app/g/v", &json!(1));
    let a = AgentProcess::start(
        dir.path(),
        "a",
        &status_a,
        &config("a", &addr, &status_a, &status_b, dir.path()),
    );
    let b = AgentProcess::start(
        dir.path(),
        "b",
        &status_b,
        &config("b", &proxy.addr(), &status_b, &status_a, dir.path()),
    );
    wait_until("both agents to render v = 1", DEADLINE, || {
        output(dir.path(), "a") == "v = 1\n" && output(dir.path(), "b") == "v = 1\n"
    });

    proxy.cut();
    put_ok(&addr, "/app/g/v", &json!(2));
    wait_until("agent a to render v = 2", DEADLINE, || {
        output(dir.path(), "a") == "v = 2\n"
    });
    let watch = wait_until("agent b to report itself behind", DEADLINE, || {
        let watch = b.watch("g");
        (watch["behind"] == true).then_some(watch)
    });
    println!("b while cut off: {watch:#}");
    assert_eq!(watch["peer"], "a");
    assert!(
        watch["peer_version"].as_u64() > watch["index"].as_u64(),
        "{watch:#}"
    );
    assert_eq!(b.status()["behind"], true);
    assert_eq!(
        output(dir.path(), "b"),
        "v = 1\n",
        "b cannot have the change yet"
    );
    assert!(b.metric("lathe_agent_gossip_messages_total") > 0.0);

    proxy.restore();
    wait_until("agent b to catch up", DEADLINE, || {
        output(dir.path(), "b") == "v = 2\n"
    });
    wait_until("agent b to stop reporting itself behind", DEADLINE, || {
        b.watch("g")["behind"] == false
    });
    assert_eq!(a.watch("g")["behind"], false, "a was never behind");
}

/// One `POST /v1/gossip` claiming a version far beyond the registry used to mark the agent
/// behind and make it re-sync every second, for good. The registry node contradicts it: the
/// claim is forgotten, nothing re-syncs.
#[test]
fn a_claim_no_registry_node_confirms_is_ignored() {
    let node = NodeBuilder::new().name("agent-gossip-false").start();
    let addr = node.http_addr().to_string();
    let dir = tempfile::tempdir().expect("a scratch dir");
    let (status_a, nobody) = (free_addr(), free_addr());
    put_ok(&addr, "/app/g/v", &json!(1));
    let a = AgentProcess::start(
        dir.path(),
        "a",
        &status_a,
        &config("a", &addr, &status_a, &nobody, dir.path()),
    );
    wait_until("agent a to render v = 1", DEADLINE, || {
        output(dir.path(), "a") == "v = 1\n"
    });
    let claim = json!({"from": "evil", "prefixes": {"/app/g": u64::MAX / 2}});
    wait_until("the false claim to be found out", DEADLINE, || {
        let reply = http::post_json(&status_a, "/v1/gossip", &claim);
        assert_eq!(reply.status, 200, "{}", reply.text);
        metric_with(
            &status_a,
            "lathe_agent_gossip_messages_total",
            "unconfirmed",
        ) >= 1.0
    });
    assert_eq!(
        metric_with(&status_a, "lathe_agent_reconnects_total", "resync"),
        0.0,
        "a false claim made the agent re-sync: {}",
        a.log_tail(20)
    );
    wait_until("agent a not to be behind", DEADLINE, || {
        a.watch("g")["behind"] == false
    });
    // The agent still follows the registry.
    put_ok(&addr, "/app/g/v", &json!(2));
    wait_until("agent a to render v = 2", DEADLINE, || {
        output(dir.path(), "a") == "v = 2\n"
    });
}
