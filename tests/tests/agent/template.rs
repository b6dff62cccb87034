//! The template action against a real node: renders on change, a render the check command
//! rejects leaves the live file alone and shows in `/status`, an unchanged render is skipped, a
//! burst of changes is debounced, and no change is acted on twice.

use std::path::Path;
use std::time::Duration;

use crate::support::{free_addr, registry_list, toml_str, AgentProcess};
use lathe_tests::node::NodeBuilder;
use lathe_tests::scenario::put_ok;
use lathe_tests::wait::wait_until;
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(30);

fn config(node: &str, status: &str, dir: &Path) -> String {
    let template = dir.join("app.conf.j2");
    std::fs::write(
        &template,
        "mode = {{ values[\"/app/conf/mode\"] | default(\"none\") }}\n\
         counter = {{ values[\"/app/conf/counter\"] | default(\"none\") }}\n",
    )
    .expect("write the template");
    format!(
        r#"
registry = {registry}
[status]
listen = {status}
[[watch]]
name = "app"
prefix = "/app/conf"
wait = {{ min = "1s", max = "5s" }}
[[watch.action]]
type = "template"
name = "app"
template = {template}
destination = {destination}
check = "grep -q '^mode = good' {{file}}"
reload = {reload}
"#,
        registry = registry_list(&[node.to_string()]),
        status = toml_str(status),
        template = toml_str(template.display().to_string()),
        destination = toml_str(dir.join("app.conf").display().to_string()),
        reload = toml_str(format!("echo reload >> {}", dir.join("reloads").display())),
    )
}

fn reloads(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("reloads")).map_or(0, |text| text.lines().count())
}

fn live(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("app.conf")).unwrap_or_default()
}

fn action(agent: &AgentProcess) -> Value {
    agent.watch("app")["actions"][0].clone()
}

#[test]
fn rejected_renders_keep_the_old_file_and_are_reported() {
    let node = NodeBuilder::new().name("agent-tpl").start();
    let addr = node.http_addr().to_string();
    let dir = tempfile::tempdir().expect("a scratch dir");
    let status = free_addr();
    let mode = "/app/conf/mode";
    put_ok(&addr, mode, &json!("good-1"));
    let agent = AgentProcess::start(
        dir.path(),
        "tpl",
        &status,
        &config(&addr, &status, dir.path()),
    );
    wait_until("the first render", DEADLINE, || {
        live(dir.path()).contains("mode = good-1")
    });
    wait_until("the first reload", DEADLINE, || reloads(dir.path()) == 1);

    // The check rejects this render: the file stays, /status says why, nothing reloads.
    put_ok(&addr, mode, &json!("bad"));
    let rejected = wait_until("the rejection in /status", DEADLINE, || {
        let action = action(&agent);
        (action["result"] == "rejected").then_some(action)
    });
    assert_eq!(rejected["ok"], false);
    let error = rejected["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("check failed") && error.contains("left as it was"),
        "{rejected:#}"
    );
    assert!(
        live(dir.path()).contains("mode = good-1"),
        "the old file stays live"
    );
    assert_eq!(reloads(dir.path()), 1);
    assert!(agent.metric("lathe_agent_actions_total") >= 2.0);

    // A good value again: applied, the error stays visible as the last one.
    put_ok(&addr, mode, &json!("good-2"));
    wait_until("the good render", DEADLINE, || {
        live(dir.path()).contains("mode = good-2")
    });
    wait_until("the second reload", DEADLINE, || reloads(dir.path()) == 2);
    let applied = action(&agent);
    assert_eq!(
        (applied["result"].as_str(), applied["ok"].as_bool()),
        (Some("applied"), Some(true))
    );
    assert!(applied["last_error"]
        .as_str()
        .is_some_and(|e| e.contains("check failed")));

    // A burst of changes is debounced into few runs (not one per change), and the last wins.
    let mut last = 0;
    for i in 0..10 {
        last = put_ok(&addr, "/app/conf/counter", &json!(i));
    }
    wait_until("the burst's last value", DEADLINE, || {
        live(dir.path()).contains("counter = 9\n")
    });
    // The file is replaced before the reload command runs: wait until the run that brought the
    // last change has finished, reload included.
    wait_until("the burst's last run applied", DEADLINE, || {
        let action = action(&agent);
        action["index"].as_u64() >= Some(last) && action["result"] == "applied"
    });
    let after_burst = reloads(dir.path());
    assert!(
        (3..=5).contains(&after_burst),
        "10 changes gave {} reloads",
        after_burst - 2
    );

    // A change the template does not show: the render is byte-identical, so no write, no reload.
    let index_before = action(&agent)["index"].as_u64().unwrap_or(0);
    put_ok(&addr, "/app/conf/unused", &json!("x"));
    wait_until("the unchanged run", DEADLINE, || {
        let action = action(&agent);
        action["index"].as_u64() > Some(index_before) && action["result"] == "unchanged"
    });
    let streams = crate::support::metric_with(&status, "lathe_agent_registry_requests_total", "");
    assert_eq!(streams, 1.0, "one SSE stream served every change");
    let watch = agent.watch("app");
    assert_eq!(
        reloads(dir.path()),
        after_burst,
        "an unchanged render reloads nothing: {watch:#}"
    );
    assert_eq!(
        watch["actions"][0]["applied_index"],
        watch["actions"][0]["index"]
    );
}
