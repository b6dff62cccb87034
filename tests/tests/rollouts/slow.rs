//! Slow roll-outs on three real nodes and a real ZooKeeper: a new version replaces the instances
//! one batch at a time while the others serve; a version no node can run is rolled back by
//! itself; `lathe rollout pause|resume|undo|status` steer and show it, and refuse what does not
//! apply with a clear message.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lathe_tests::http::{self, Reply};
use lathe_tests::node::run_cli;
use lathe_tests::scenario::{assert_error, leader, zk_cluster};
use lathe_tests::wait::{try_wait_until, wait_until};
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(90);
const GROUP: &str = "task.web";

fn topology(version: &str, tasks: u32, rollout: &str) -> String {
    format!(
        "[task.web]\ncrate = \"http_frontpage\"\nversion = \"{version}\"\n\
            task = \"my::FrontPage\"\n\
         tasks = {tasks}\nrollout = {rollout}\n"
    )
}

fn deploy(addr: &str, source: &str) {
    let reply = http::put_text(
        addr,
        "/v1/topology?file=web.toml",
        "application/toml",
        source,
    );
    assert_eq!(reply.status, 200, "deploy: {}", reply.text);
}

/// The group's instances: index → (version, status).
fn instances(addr: &str) -> BTreeMap<u64, (String, String)> {
    let reply = http::get_json(addr, "/v1/tasks");
    assert_eq!(reply.status, 200, "/v1/tasks: {}", reply.text);
    reply
        .body
        .as_array()
        .expect("/v1/tasks is an array")
        .iter()
        .filter(|t| t["group"] == GROUP)
        .map(|t| {
            let text = |key: &str| t[key].as_str().unwrap_or_default().to_string();
            (
                t["index"].as_u64().unwrap_or(u64::MAX),
                (text("version"), text("status")),
            )
        })
        .collect()
}

/// Every one of `tasks` instances runs `version`.
fn all_running(addr: &str, version: &str, tasks: usize) -> bool {
    let now = instances(addr);
    now.len() == tasks && now.values().all(|(v, s)| v == version && s == "running")
}

fn rollout(addr: &str) -> Reply {
    http::get_json(addr, &format!("/v1/rollouts/{GROUP}"))
}

fn state(addr: &str) -> String {
    rollout(addr).body["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn cli(addr: &str, args: &[&str]) -> (bool, String, String) {
    let output = run_cli(addr, args);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_new_version_replaces_one_instance_at_a_time_while_the_others_serve() {
    let (_zk, cluster) = zk_cluster(3, "rollout");
    let addr = cluster.node(0).http_addr().to_string();
    let policy = "{ batch = 1, healthy_seconds = 1, timeout_seconds = 60 }";
    deploy(&addr, &topology("4.2.1", 3, policy));
    wait_until("3 instances running 4.2.1", CONVERGE, || {
        all_running(&addr, "4.2.1", 3)
    });
    assert_error(&rollout(&addr), 404, "no roll-out before a version change");

    deploy(&addr, &topology("4.2.2", 3, policy));
    // Watch it happen: never more than one instance (the batch) out of service, never fewer on
    // the new version than before, and both versions serving side by side on the way.
    let deadline = Instant::now() + CONVERGE;
    let mut most_down = 0;
    let mut on_new_seen = Vec::new();
    let mut mixed = false;
    while !(all_running(&addr, "4.2.2", 3) && state(&addr) == "done") {
        assert!(
            Instant::now() < deadline,
            "roll-out not done: {:?}",
            rollout(&addr).text
        );
        let now = instances(&addr);
        let down = now.values().filter(|(_, s)| s != "running").count() + 3 - now.len();
        most_down = most_down.max(down);
        let on_new = now.values().filter(|(v, _)| v == "4.2.2").count();
        if on_new_seen.last() != Some(&on_new) {
            on_new_seen.push(on_new);
        }
        let running = |version: &str| now.values().any(|(v, s)| v == version && s == "running");
        mixed |= running("4.2.1") && running("4.2.2");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        most_down <= 1,
        "{most_down} instances out at once (batch = 1)"
    );
    assert!(
        on_new_seen.windows(2).all(|w| w[0] <= w[1]),
        "instances on 4.2.2 over time: {on_new_seen:?}"
    );
    assert!(
        mixed,
        "both versions never served together: {on_new_seen:?}"
    );
    let done = rollout(&addr);
    assert_eq!(done.status, 200, "{}", done.text);
    assert_eq!(
        (
            done.body["from"]["version"].as_str(),
            done.body["to"]["version"].as_str(),
            done.body["updated"].as_u64(),
            done.body["updated_running"].as_u64()
        ),
        (Some("4.2.1"), Some("4.2.2"), Some(3), Some(3)),
        "{}",
        done.text
    );
    // Every endpoint answers as the new version.
    let endpoints = http::get_json(&addr, "/v1/services/web");
    for endpoint in endpoints.body.as_array().expect("endpoints") {
        let at = endpoint["http"].as_str().expect("an http endpoint");
        let reply = http::request("GET", at, "/get/index", None);
        assert_eq!(
            (reply.status, reply.header("x-lathe-version")),
            (200, Some("4.2.2")),
            "{at}"
        );
    }
    let (ok, out, err) = cli(&addr, &["rollout", "status", GROUP]);
    assert!(
        ok && out.contains("done") && out.contains("3/3"),
        "{out}{err}"
    );
}

#[test]
fn a_version_no_node_can_run_is_rolled_back_by_itself() {
    let (_zk, cluster) = zk_cluster(3, "rollback");
    let addr = cluster.node(0).http_addr().to_string();
    let policy = "{ batch = 1, healthy_seconds = 1, timeout_seconds = 20 }";
    deploy(&addr, &topology("4.2.1", 2, policy));
    wait_until("2 instances running 4.2.1", CONVERGE, || {
        all_running(&addr, "4.2.1", 2)
    });

    deploy(&addr, &topology("9.9.9", 2, policy));
    let rolled_back = try_wait_until(CONVERGE, || match state(&addr).as_str() {
        "rolled-back" => Ok(rollout(&addr)),
        other => Err(other.to_string()),
    })
    .unwrap_or_else(|last| panic!("not rolled back; last state {last:?}"));
    let reason = rolled_back.body["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&format!("{GROUP}/0"))
            && reason.contains("cannot run http_frontpage 9.9.9"),
        "reason: {reason}"
    );
    wait_until("2 instances back on 4.2.1", CONVERGE, || {
        all_running(&addr, "4.2.1", 2)
    });
    // Instance 1 was never touched: only the first batch was tried.
    let (ok, out, err) = cli(&addr, &["rollout", "status"]);
    assert!(
        ok && out.contains(GROUP) && out.contains("rolled-back") && out.contains("9.9.9"),
        "{out}{err}"
    );
}

#[test]
fn pause_resume_and_undo_steer_a_roll_out_and_refuse_what_does_not_apply() {
    let (_zk, cluster) = zk_cluster(3, "steer");
    let addr = cluster.node(0).http_addr().to_string();
    // A batch must stay healthy 3 s: time to pause after the first one starts.
    let policy = "{ batch = 1, healthy_seconds = 3, timeout_seconds = 60 }";
    deploy(&addr, &topology("4.2.1", 3, policy));
    wait_until("3 instances running 4.2.1", CONVERGE, || {
        all_running(&addr, "4.2.1", 3)
    });
    deploy(&addr, &topology("4.2.2", 3, policy));
    wait_until("the first batch on 4.2.2", CONVERGE, || {
        let now = rollout(&addr);
        now.status == 200 && now.body["state"] == "rolling" && now.body["updated"] == 1
    });

    let (ok, out, err) = cli(&addr, &["rollout", "pause", GROUP]);
    assert!(ok && out.contains("paused"), "{out}{err}");
    // Paused: past the 3 s the batch needed, still one instance on 4.2.2.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let now = rollout(&addr);
        assert_eq!(
            (now.body["state"].as_str(), now.body["updated"].as_u64()),
            (Some("paused"), Some(1)),
            "{}",
            now.text
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, out, err) = cli(&addr, &["rollout", "pause", GROUP]);
    assert!(
        !ok && err.contains("only a rolling roll-out can pause"),
        "pausing twice: {out}{err}"
    );

    let (ok, out, err) = cli(&addr, &["rollout", "resume", GROUP]);
    assert!(ok && out.contains("rolling"), "{out}{err}");
    wait_until("the resumed roll-out done", CONVERGE, || {
        state(&addr) == "done" && all_running(&addr, "4.2.2", 3)
    });

    let (ok, out, err) = cli(&addr, &["rollout", "undo", GROUP]);
    assert!(ok && out.contains("rolling-back"), "{out}{err}");
    wait_until("the undone roll-out rolled back", CONVERGE, || {
        state(&addr) == "rolled-back" && all_running(&addr, "4.2.1", 3)
    });
    let undone = rollout(&addr);
    assert!(
        undone.body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("undone by lathe rollout undo")),
        "{}",
        undone.text
    );

    // What does not apply is refused, naming why.
    let (ok, _, err) = cli(&addr, &["rollout", "status", "task.nope"]);
    assert!(!ok && err.contains("no group"), "{err}");
    let (ok, _, err) = cli(&addr, &["rollout", "undo", "bad group"]);
    assert!(!ok && err.contains("is not a group"), "{err}");
    let explode = http::request(
        "POST",
        &addr,
        &format!("/v1/rollouts/{GROUP}/explode"),
        None,
    );
    let message = assert_error(&explode, 400, "an unknown command");
    assert!(message.contains("pause, /resume or /undo"), "{message}");
    let put = http::request("PUT", &addr, "/v1/rollouts", Some("{}"));
    assert_error(&put, 405, "PUT /v1/rollouts");
    let all: Value = http::get_json(&addr, "/v1/rollouts").body;
    assert_eq!(all.as_array().map(Vec::len), Some(1), "{all}");
}

#[test]
fn a_roll_out_goes_on_under_a_new_leader_when_the_leader_is_killed() {
    let (_zk, mut cluster) = zk_cluster(3, "rollout-leader");
    let addr = cluster.node(0).http_addr().to_string();
    let policy = "{ batch = 1, healthy_seconds = 2, timeout_seconds = 60 }";
    deploy(&addr, &topology("4.2.1", 3, policy));
    wait_until("3 instances running 4.2.1", CONVERGE, || {
        all_running(&addr, "4.2.1", 3)
    });
    let first = wait_until("one leader", CONVERGE, || leader(&addr));
    deploy(&addr, &topology("4.2.2", 3, policy));
    wait_until("the first batch on 4.2.2", CONVERGE, || {
        let now = rollout(&addr);
        now.status == 200 && now.body["state"] == "rolling" && now.body["updated"] == 1
    });

    let killed = (0..3)
        .find(|&i| cluster.node(i).name() == first)
        .expect("the leader is one of the nodes");
    cluster.node_mut(killed).kill();
    let survivor = cluster.node((killed + 1) % 3).http_addr().to_string();
    let second = wait_until("a new leader", CONVERGE, || {
        leader(&survivor).filter(|name| *name != first)
    });
    // The new leader carries the stored roll-out on: done, every instance on 4.2.2, running on
    // the two live nodes.
    wait_until("the roll-out done under the new leader", CONVERGE, || {
        state(&survivor) == "done" && all_running(&survivor, "4.2.2", 3)
    });
    let done = rollout(&survivor);
    assert_eq!(done.body["from"]["version"], "4.2.1", "{}", done.text);
    println!("leader {first} killed mid-roll-out; {second} finished it");
}
