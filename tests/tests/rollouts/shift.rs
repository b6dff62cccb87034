//! Traffic shifts on the seed (3 real nodes + ZooKeeper): `backend_distribution` moves to v4.2.2
//! a step at a time until every response through the load balancers comes from 4.2.2; an undo
//! puts 90/10 back; a shift to a group that is not healthy puts the split back by itself; bad
//! requests are refused naming what is wrong.

use std::time::Duration;

use lathe_tests::http::{self, Reply};
use lathe_tests::node::run_cli;
use lathe_tests::scenario::{assert_error, zk_cluster};
use lathe_tests::wait::wait_until;
use serde_json::{json, Value};

const CONVERGE: Duration = Duration::from_secs(120);
const KEY: &str = "/task/http/lb/backend_distribution";
const V421: &str = "task.http.frontpage.v4-2-1";
const V422: &str = "task.http.frontpage.v4-2-2";

fn seed() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/my_topology.toml");
    std::fs::read_to_string(path).expect("read config/my_topology.toml")
}

fn deploy(addr: &str, source: &str) {
    let reply = http::put_text(addr, "/v1/topology", "application/toml", source);
    assert_eq!(reply.status, 200, "deploy: {}", reply.text);
}

fn split(addr: &str) -> Value {
    http::get_json(addr, &format!("/v1/kv{KEY}")).body["value"].clone()
}

fn shift(addr: &str) -> Reply {
    http::get_json(addr, &format!("/v1/shifts{KEY}"))
}

fn start(addr: &str, body: &Value) -> Reply {
    http::request("POST", addr, "/v1/shifts", Some(&body.to_string()))
}

/// The versions of `n` responses through the first LB.
fn versions(addr: &str, n: usize) -> Result<Vec<String>, String> {
    let lbs = http::try_get_json(addr, "/v1/services/http/lb")?;
    let lb = lbs.body[0]["http"]
        .as_str()
        .ok_or(lbs.text.clone())?
        .to_string();
    (0..n)
        .map(|_| {
            let reply = http::try_request("GET", &lb, "/get/index", None)?;
            reply
                .header("x-lathe-version")
                .map(str::to_string)
                .ok_or(format!("no version: {}", reply.text))
        })
        .collect()
}

#[test]
fn a_split_moves_to_the_new_version_step_by_step_and_back_on_undo_or_failure() {
    let (_zk, cluster) = zk_cluster(3, "shift");
    let addr = cluster.node(0).http_addr().to_string();
    deploy(&addr, &seed());
    wait_until("the LB answering", CONVERGE, || versions(&addr, 1).is_ok());

    let started = start(
        &addr,
        &json!({"key": KEY, "to": V422, "step": 45, "every_seconds": 1}),
    );
    assert_eq!(started.status, 200, "{}", started.text);
    assert_eq!(started.body["percent"], 10, "{}", started.text);
    let again = start(&addr, &json!({"key": KEY, "to": V422}));
    let message = assert_error(&again, 409, "a second shift of the same key");
    assert!(message.contains("already shifting"), "{message}");

    // 10 -> 55 -> 100: each step waits a second and a healthy 4.2.2.
    let mut seen = vec![];
    wait_until("the shift done", CONVERGE, || {
        let now = split(&addr);
        if seen.last() != Some(&now) {
            seen.push(now);
        }
        let now = shift(&addr);
        if now.body["state"] == "done" {
            Ok(())
        } else {
            Err(now.text)
        }
    });
    // The record says done once the leader wrote it; the split follows it in the registry.
    wait_until("the split all to 4.2.2", CONVERGE, || {
        split(&addr) == json!([[V421, V422], [0, 100]])
    });
    assert!(
        seen.contains(&json!([[V421, V422], [45, 55]])),
        "the half-way split was never seen: {seen:?}"
    );
    wait_until("every response from 4.2.2", CONVERGE, || {
        versions(&addr, 50).map(|v| v.iter().all(|v| v == "4.2.2"))
    });
    let listed = run_cli(&addr, &["rollout", "shifts"]);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success() && text.contains("100%") && text.contains("done"),
        "{text}"
    );

    // Undo: 90/10 is back.
    let undo = run_cli(&addr, &["rollout", "undo", "--shift", KEY]);
    let text = String::from_utf8_lossy(&undo.stdout);
    assert!(
        undo.status.success() && text.contains("rolled-back"),
        "{text}"
    );
    wait_until("90/10 back", CONVERGE, || {
        split(&addr) == json!([[V421, V422], [90, 10]])
    });

    // A target that is not healthy (no node can run 9.9.9): the split is put back by itself.
    deploy(
        &addr,
        &format!(
            "{}\n[task.http.frontpage.v9]\ncrate = \"http_frontpage\"\nversion = \"9.9.9\"\n\
             tasks = 1\ntask = \"my::FrontPage\"\n",
            seed()
        ),
    );
    let with_v9 = json!([[V421, "task.http.frontpage.v9"], [100, 0]]);
    let put = http::put_json(&addr, &format!("/v1/kv{KEY}"), &with_v9);
    assert_eq!(put.status, 200, "{}", put.text);
    let started = start(
        &addr,
        &json!({"key": KEY, "to": "task.http.frontpage.v9", "step": 50, "every_seconds": 1}),
    );
    assert_eq!(started.status, 200, "{}", started.text);
    let failed = wait_until("the shift rolled back", CONVERGE, || {
        let now = shift(&addr);
        (now.body["state"] == "rolled-back").then_some(now)
    });
    let reason = failed.body["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("task.http.frontpage.v9/0 is pending"),
        "{reason}"
    );
    wait_until("the split as it was", CONVERGE, || split(&addr) == with_v9);

    // Bad requests say what is wrong.
    let unknown = start(&addr, &json!({"key": KEY, "to": "task.nope"}));
    assert!(assert_error(&unknown, 400, "a group not in the split").contains("is not one of them"));
    let absent = start(&addr, &json!({"key": "/task/none/split", "to": V422}));
    assert!(assert_error(&absent, 404, "a key with no value").contains("no value at"));
    let reserved = start(&addr, &json!({"key": "/lathe/topology", "to": V422}));
    assert_error(&reserved, 400, "a key under /lathe");
    let zero = start(&addr, &json!({"key": KEY, "to": V421, "step": 0}));
    assert!(assert_error(&zero, 400, "step 0").contains("step must be"));
    let junk = http::request("POST", &addr, "/v1/shifts", Some("{\"key\": 1"));
    assert_error(&junk, 400, "a body that is no JSON");
    let pause = http::request("POST", &addr, &format!("/v1/shifts{KEY}/pause"), None);
    assert!(assert_error(&pause, 409, "pausing a rolled-back shift").contains("only a shifting"));
}
