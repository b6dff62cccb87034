//! `mode = "poll"`: the agent follows the registry with blocking queries (one at a time, for the
//! common prefix of its watches) instead of an SSE stream, and sees every change.

use std::path::Path;
use std::time::Duration;

use crate::support::{free_addr, registry_list, toml_str, AgentProcess};
use lathe_tests::node::NodeBuilder;
use lathe_tests::scenario::put_ok;
use lathe_tests::wait::wait_until;
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(30);

fn config(node: &str, status: &str, dir: &Path) -> String {
    let template = dir.join("poll.j2");
    std::fs::write(
        &template,
        "{% for e in entries %}{{ e.key }}={{ e.value }}\n{% endfor %}",
    )
    .expect("write the template");
    let watch = |name: &str, prefix: &str| {
        format!(
            r#"
[[watch]]
name = "{name}"
prefix = "{prefix}"
wait = {{ min = "50ms", max = "500ms" }}
[[watch.action]]
type = "template"
template = {template}
destination = {destination}
"#,
            template = toml_str(template.display().to_string()),
            destination = toml_str(dir.join(name).display().to_string()),
        )
    };
    format!(
        "registry = {}\nmode = \"poll\"\npoll_wait = \"5s\"\n[status]\nlisten = {}\n{}{}",
        registry_list(&[node.to_string()]),
        toml_str(status),
        watch("one", "/app/poll/one"),
        watch("two", "/app/poll/two"),
    )
}

fn output(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

#[test]
fn polling_follows_every_watch_with_one_query_at_a_time() {
    let node = NodeBuilder::new().name("agent-poll").start();
    let addr = node.http_addr().to_string();
    let dir = tempfile::tempdir().expect("a scratch dir");
    let status = free_addr();
    put_ok(&addr, "/app/poll/one/a", &json!(1));
    let agent = AgentProcess::start(
        dir.path(),
        "poll",
        &status,
        &config(&addr, &status, dir.path()),
    );
    wait_until("the first render", DEADLINE, || {
        output(dir.path(), "one") == "/app/poll/one/a=1\n"
    });
    for i in 0..5 {
        put_ok(&addr, "/app/poll/one/a", &json!(i + 2));
        put_ok(&addr, &format!("/app/poll/two/k{i}"), &json!(i));
    }
    wait_until("both watches to follow", DEADLINE, || {
        output(dir.path(), "one") == "/app/poll/one/a=6\n"
            && output(dir.path(), "two").lines().count() == 5
    });
    let registry = &agent.status()["registry"];
    assert_eq!(registry["transport"], "poll", "{registry:#}");
    let sse = crate::support::metric_with(
        &status,
        "lathe_agent_registry_requests_total",
        "kind=\"sse\"",
    );
    assert_eq!(sse, 0.0, "no SSE stream in poll mode");
    let polls = crate::support::metric_with(
        &status,
        "lathe_agent_registry_requests_total",
        "kind=\"poll\"",
    );
    assert!(
        (1.0..=20.0).contains(&polls),
        "{polls} blocking queries for 11 changes"
    );
}
