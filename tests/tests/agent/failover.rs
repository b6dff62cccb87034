//! Kill the registry node lathe-agent streams from: it resumes from another node at the index it
//! had, and misses none of the changes written meanwhile.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::{free_addr, registry_list, toml_str, AgentProcess};
use lathe_tests::scenario::{entries_under, put_ok, zk_cluster};
use lathe_tests::wait::wait_until;
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(30);

fn config(nodes: &[String], status: &str, dir: &Path) -> String {
    let template = dir.join("keys.j2");
    std::fs::write(
        &template,
        "{% for e in entries %}{{ e.key }}={{ e.value }}\n{% endfor %}",
    )
    .expect("write the template");
    format!(
        r#"
registry = {registry}
[status]
listen = {status}
[[watch]]
name = "keys"
prefix = "/app/fo"
wait = {{ min = "50ms", max = "500ms" }}
[[watch.action]]
type = "template"
template = {template}
destination = {destination}
"#,
        registry = registry_list(nodes),
        status = toml_str(status),
        template = toml_str(template.display().to_string()),
        destination = toml_str(dir.join("keys").display().to_string()),
    )
}

/// The rendered file as key → value.
fn rendered(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(dir.join("keys"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn killing_the_streaming_node_loses_no_change() {
    let (_zk, mut cluster) = zk_cluster(3, "agent-fo");
    let nodes = cluster.http_addrs();
    let dir = tempfile::tempdir().expect("a scratch dir");
    let status = free_addr();
    put_ok(&nodes[0], "/app/fo/start", &json!(0));
    let agent = AgentProcess::start(
        dir.path(),
        "fo",
        &status,
        &config(&nodes, &status, dir.path()),
    );
    wait_until("the first render", DEADLINE, || {
        rendered(dir.path()).contains_key("/app/fo/start")
    });

    let streaming = agent.status()["registry"]["addr"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let victim = nodes
        .iter()
        .position(|n| *n == streaming)
        .expect("the agent streams from a node");
    let survivor = nodes[(victim + 1) % nodes.len()].clone();
    for i in 0..10 {
        put_ok(&survivor, &format!("/app/fo/before-{i}"), &json!(i));
    }
    cluster.node_mut(victim).kill();
    let killed_at = Instant::now();
    // Written while the agent notices and reconnects.
    for i in 0..10 {
        put_ok(&survivor, &format!("/app/fo/after-{i}"), &json!(i));
    }
    let expected: BTreeMap<String, String> = entries_under(&survivor, "/app/fo")
        .into_iter()
        .map(|(k, (v, _))| (k, v.to_string()))
        .collect();
    assert_eq!(expected.len(), 21);
    wait_until("the agent to render every key", DEADLINE, || {
        let got = rendered(dir.path());
        if got == expected {
            Ok(())
        } else {
            Err(format!("{} of {} keys", got.len(), expected.len()))
        }
    });
    println!(
        "all 21 keys rendered {:?} after the kill",
        killed_at.elapsed()
    );
    let registry = agent.status()["registry"].clone();
    assert_ne!(
        registry["addr"].as_str(),
        Some(streaming.as_str()),
        "{registry:#}"
    );
    assert!(agent.metric("lathe_agent_reconnects_total") >= 1.0);

    // And it keeps following from the new node.
    put_ok(&survivor, "/app/fo/later", &json!("x"));
    wait_until("a later change", DEADLINE, || {
        rendered(dir.path()).contains_key("/app/fo/later")
    });
}
