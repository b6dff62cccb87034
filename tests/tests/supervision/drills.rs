//! Failure drills on a real node (`--enable-chaos`): a task instance killed through
//! `POST /v1/actors/kill` restarts and the restart is counted (`/v1/tasks`, the tree,
//! `lathe_actor_restarts_total`); a killed scheduler restarts and keeps scheduling; a killed task
//! supervisor restarts and starts its instances again; a task that always fails (`my::Crasher`)
//! ends `failed` after its restart intensity while the rest of the node is unharmed; and every
//! kind of actor a supervisor restarts (the registry's feed and shards, the embedded registry's
//! server and follower, the cache and flow servers, the scheduler, the task supervisor, a task)
//! is killed in turn, seen restarted and counted, and the node still works.

use std::collections::BTreeMap;
use std::time::Duration;

use lathe_tests::http::{self, Reply};
use lathe_tests::node::{Cluster, NodeBuilder, NodeProcess, MEMBERSHIP_DEADLINE};
use lathe_tests::scenario::{put_ok, TEST_COOKIE};
use lathe_tests::wait::{try_wait_until, wait_until};
use serde_json::{json, Value};

const CONVERGE: Duration = Duration::from_secs(60);
const FRONTPAGE: &str = "task.http.frontpage.v4-2-1";

fn frontpage(tasks: u32) -> String {
    format!(
        "[task.http.frontpage.v4-2-1]\ncrate = \"http_frontpage\"\nversion = \"4.2.1\"\n\
         task = \"my::FrontPage\"\ntasks = {tasks}\n"
    )
}

const CRASHER: &str = "[task.crash]\ncrate = \"http_loadbalancer\"\nversion = \"0.8.2\"\n\
     task = \"my::Crasher\"\ntasks = 1\n\
     restart = { max_restarts = 2, within_seconds = 60, backoff_ms = 50 }\n";

fn deploy(node: &NodeProcess, source: &str) {
    let reply = http::put_text(node.http_addr(), "/v1/topology", "application/toml", source);
    assert_eq!(reply.status, 200, "deploy: {}", reply.text);
}

/// `/v1/tasks` as (group, index) → instance.
fn tasks(node: &NodeProcess) -> Result<BTreeMap<(String, u64), Value>, String> {
    let reply = http::try_get_json(node.http_addr(), "/v1/tasks")?;
    let list = reply.body.as_array().ok_or(reply.text.clone())?;
    Ok(list
        .iter()
        .map(|t| {
            let group = t["group"].as_str().unwrap_or_default().to_string();
            ((group, t["index"].as_u64().unwrap_or(u64::MAX)), t.clone())
        })
        .collect())
}

/// Waits until instance `index` of `group` has `status` and `restarts`; returns its record.
fn wait_instance(
    node: &NodeProcess,
    group: &str,
    index: u64,
    status: &str,
    restarts: u64,
) -> Value {
    let what = format!("{group}/{index} {status} with {restarts} restarts");
    wait_until(&what, CONVERGE, || {
        let tasks = tasks(node)?;
        let task = tasks.get(&(group.to_string(), index)).cloned();
        match task {
            Some(t) if t["status"] == status && t["restarts"] == restarts => Ok(t),
            other => Err(format!("{other:?}")),
        }
    })
}

/// The actor at `path` in the node's own tree.
fn actor(node: &NodeProcess, path: &str) -> Option<Value> {
    let reply = http::try_get_json(node.http_addr(), &format!("/v1/tree?node={}", node.name()));
    fn find(actor: &Value, path: &str) -> Option<Value> {
        if actor["path"] == path {
            return Some(actor.clone());
        }
        let children = actor["children"].as_array()?;
        children.iter().find_map(|child| find(child, path))
    }
    find(&reply.ok()?.body["tree"], path)
}

fn kill(node: &NodeProcess, path: &str) -> Reply {
    http::post_json(
        node.http_addr(),
        "/v1/actors/kill",
        &json!({ "path": path }),
    )
}

/// `lathe_actor_restarts_total{kind=...}` on the node.
fn restarts_total(node: &NodeProcess, kind: &str) -> Option<f64> {
    let reply = http::try_get_json(node.http_addr(), "/metrics").ok()?;
    let label = format!("kind=\"{kind}\"");
    reply.text.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let labelled = series.starts_with("lathe_actor_restarts_total{") && series.contains(&label);
        labelled.then(|| value.parse().ok()).flatten()
    })
}

#[test]
fn a_killed_task_instance_restarts_and_the_restart_is_counted() {
    let node = NodeBuilder::new().name("drill-task").enable_chaos().start();
    deploy(&node, &frontpage(2));
    wait_instance(&node, FRONTPAGE, 0, "running", 0);
    wait_instance(&node, FRONTPAGE, 1, "running", 0);
    let path = format!("node/tasks/{FRONTPAGE}/0");
    assert_eq!(
        actor(&node, &path).expect("the task in the tree")["kind"],
        "task"
    );
    assert_eq!(restarts_total(&node, "task"), Some(0.0));

    let reply = kill(&node, &path);
    assert_eq!(reply.status, 200, "kill: {}", reply.text);
    assert_eq!(reply.body["killed"], json!(path));
    assert_eq!(reply.body["kind"], "task");

    let record = wait_instance(&node, FRONTPAGE, 0, "running", 1);
    let endpoint = record["endpoint"]
        .as_str()
        .expect("an endpoint")
        .to_string();
    let answer = http::get_json(&endpoint, "/get/index");
    assert_eq!((answer.status, answer.text.as_str()), (200, ":)"));
    wait_until("the restart counted in the metrics", CONVERGE, || {
        restarts_total(&node, "task") == Some(1.0)
    });
    let killed = actor(&node, &path).expect("the task in the tree");
    assert_eq!(
        (&killed["status"], &killed["restarts"]),
        (&json!("running"), &json!(1))
    );
    // One-for-one (the default): the other instance did not restart.
    let other = &tasks(&node).expect("tasks")[&(FRONTPAGE.to_string(), 1)];
    assert_eq!(other["restarts"], 0, "{other}");
}

/// Kills the actor at `path` and waits until it runs again, restarted once.
fn kill_and_wait_restart(node: &NodeProcess, path: &str) {
    let reply = kill(node, path);
    assert_eq!(reply.status, 200, "kill {path}: {}", reply.text);
    wait_until(&format!("{path} running again"), CONVERGE, || {
        let restarted = actor(node, path)?;
        (restarted["status"] == "running" && restarted["restarts"] == 1).then_some(())
    });
}

#[test]
fn a_killed_scheduler_or_task_supervisor_restarts_and_the_node_carries_on() {
    let node = NodeBuilder::new()
        .name("drill-sched")
        .enable_chaos()
        .start();
    deploy(&node, &frontpage(1));
    wait_instance(&node, FRONTPAGE, 0, "running", 0);
    kill_and_wait_restart(&node, "node/scheduler");
    assert_eq!(restarts_total(&node, "scheduler"), Some(1.0));
    deploy(&node, &frontpage(2));
    wait_instance(&node, FRONTPAGE, 1, "running", 0);

    // The task supervisor's instances die with it; its successor starts them again.
    let before = tasks(&node).expect("tasks")[&(FRONTPAGE.to_string(), 0)]["endpoint"].clone();
    kill_and_wait_restart(&node, "node/tasks");
    assert_eq!(restarts_total(&node, "task-supervisor"), Some(1.0));
    let after = wait_until("instance 0 serving from a new endpoint", CONVERGE, || {
        let record = tasks(&node).ok()?.get(&(FRONTPAGE.to_string(), 0))?.clone();
        (record["status"] == "running" && record["endpoint"] != before).then_some(record)
    });
    let endpoint = after["endpoint"].as_str().expect("an endpoint");
    assert_eq!(http::get_json(endpoint, "/get/index").status, 200);
    wait_instance(&node, FRONTPAGE, 1, "running", 0);
    let instance = actor(&node, &format!("node/tasks/{FRONTPAGE}/0")).expect("in the tree");
    assert_eq!(instance["status"], "running");
}

#[test]
fn a_task_that_always_fails_ends_failed_and_the_node_carries_on() {
    let node = NodeBuilder::new()
        .name("drill-crash")
        .enable_chaos()
        .start();
    deploy(&node, &format!("{CRASHER}\n{}", frontpage(1)));
    let failed = wait_instance(&node, "task.crash", 0, "failed", 2);
    let reason = failed["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("crashed more than 2 times within 60s"),
        "{reason}"
    );
    assert!(
        reason.contains("my::Crasher always fails to start"),
        "{reason}"
    );

    // It stays failed: no restart loop.
    let more = try_wait_until(Duration::from_secs(2), || {
        let tasks = tasks(&node).ok()?;
        let restarts = tasks.get(&("task.crash".to_string(), 0))?["restarts"].as_u64()?;
        (restarts > 2).then_some(restarts)
    });
    assert!(
        more.is_err(),
        "the failed instance restarted again: {more:?}"
    );
    let crasher = actor(&node, "node/tasks/task.crash/0").expect("the crasher in the tree");
    assert_eq!(
        (&crasher["status"], &crasher["restarts"]),
        (&json!("failed"), &json!(2))
    );
    assert_eq!(
        kill(&node, "node/tasks/task.crash/0").status,
        409,
        "a failed actor cannot be killed"
    );
    assert!(node.log_contents().contains("task instance failed"));

    // The rest of the node is unharmed.
    wait_instance(&node, FRONTPAGE, 0, "running", 0);
    let root = actor(&node, "node").expect("the root");
    assert_eq!(
        (&root["status"], &root["restarts"]),
        (&json!("running"), &json!(0))
    );
    put_ok(node.http_addr(), "/drill/after", &json!("still writable"));
    let metrics = http::get_json(node.http_addr(), "/metrics").text;
    let failed_series = metrics.lines().any(|line| {
        line.starts_with("lathe_task_instances{")
            && line.contains("group=\"task.crash\"")
            && line.contains("status=\"failed\"")
            && line.ends_with(" 1")
    });
    assert!(
        failed_series,
        "lathe_task_instances for the failed crasher:\n{metrics}"
    );
}

/// Kills the actor at `path` and waits until it runs again with one more restart, and its kind's
/// restarts counted one more in the metrics.
fn kill_and_see_counted(node: &NodeProcess, path: &str) {
    let before = actor(node, path).unwrap_or_else(|| panic!("{path} is not in the tree"));
    assert_eq!(before["status"], "running", "{path}: {before}");
    let kind = before["kind"].as_str().expect("a kind").to_string();
    let restarts = before["restarts"].as_u64().expect("restarts");
    let counted = restarts_total(node, &kind).unwrap_or_else(|| panic!("no metric for {kind}"));
    let reply = kill(node, path);
    assert_eq!(reply.status, 200, "kill {path}: {}", reply.text);
    assert_eq!(reply.body["kind"], json!(kind));
    wait_until(&format!("{path} ({kind}) running again"), CONVERGE, || {
        let now = actor(node, path).ok_or("gone from the tree".to_string())?;
        if now["status"] == "running" && now["restarts"] == restarts + 1 {
            Ok(())
        } else {
            Err(now.to_string())
        }
    });
    wait_until(&format!("the {kind} restart counted"), CONVERGE, || {
        restarts_total(node, &kind) == Some(counted + 1.0)
    });
}

/// `GET /v1/kv{key}` on `node` answers `value`.
fn wait_value(node: &NodeProcess, key: &str, value: &Value) {
    wait_until(
        &format!("{key} = {value} on {}", node.name()),
        CONVERGE,
        || {
            let reply = http::try_get_json(node.http_addr(), &format!("/v1/kv{key}"))?;
            if reply.status == 200 && &reply.body["value"] == value {
                Ok(())
            } else {
                Err(format!("{} {}", reply.status, reply.text))
            }
        },
    );
}

#[test]
fn every_kind_of_supervised_actor_restarts_when_killed_and_is_counted() {
    // Without ZooKeeper: the founder serves its embedded registry, the joiner follows it.
    let template = NodeBuilder::new()
        .name("drill-kinds")
        .cookie(TEST_COOKIE)
        .enable_chaos();
    let mut cluster = Cluster::start(2, template);
    cluster.wait_all_alive(MEMBERSHIP_DEADLINE);
    let (founder, joiner) = (cluster.node(0), cluster.node(1));
    deploy(founder, &frontpage(1));
    let running = wait_until("an instance running", CONVERGE, || {
        let tasks = tasks(founder).ok()?;
        let (key, record) = tasks.into_iter().next()?;
        (record["status"] == "running").then_some((key, record))
    });
    let placed = record_node(&running.1);

    let mut written = 0;
    let mut write_and_see = |why: &str| {
        written += 1;
        let value = json!({ "after": why, "n": written });
        put_ok(joiner.http_addr(), "/drill/key", &value);
        wait_value(founder, "/drill/key", &value);
        wait_value(joiner, "/drill/key", &value);
    };
    write_and_see("start");

    for (node, path) in [
        (founder, "node/registry/store-server"),
        (joiner, "node/registry/store-follower"),
        (founder, "node/registry/feed"),
        (joiner, "node/registry/shard-0"),
    ] {
        kill_and_see_counted(node, path);
        // The registry still takes writes through the joiner and both nodes see them.
        write_and_see(path);
    }
    for node in [founder, joiner] {
        kill_and_see_counted(node, "node/tasks/cache-server");
        kill_and_see_counted(node, "node/tasks/flow-server");
    }
    let host = if founder.name() == placed {
        founder
    } else {
        joiner
    };
    kill_and_see_counted(founder, "node/scheduler");
    let (group, index) = &running.0;
    kill_and_see_counted(host, &format!("node/tasks/{group}/{index}"));
    kill_and_see_counted(host, "node/tasks");
    // Still scheduling: one more instance is placed and runs.
    deploy(founder, &frontpage(2));
    wait_until("both instances running", CONVERGE, || {
        let tasks = tasks(founder).ok()?;
        (tasks.values().filter(|t| t["status"] == "running").count() == 2).then_some(())
    });
    write_and_see("end");
}

/// The node an instance record is on.
fn record_node(record: &Value) -> String {
    record["node"].as_str().expect("a node").to_string()
}
