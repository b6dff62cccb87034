//! `GET /ui` in a real headless Chromium (chromedriver, WebDriver) against a real two-node cluster
//! with failure drills on: the page loads with no console error, shows the members, every instance
//! with its status and the supervision tree of both nodes as the API has them, and a task instance
//! killed through `POST /v1/actors/kill` shows as restarted in the browser within 2 s of the kill
//! (measured in the page by a `MutationObserver`). Roll-outs and traffic shifts show with their
//! state, progress and reason: a version that cannot start rolled back, a split shifted to 100 %.
//! Screenshots are kept under the test artifacts (the paths are printed).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lathe_tests::browser::Browser;
use lathe_tests::http;
use lathe_tests::node::{Cluster, NodeBuilder};
use lathe_tests::scenario::TEST_COOKIE;
use lathe_tests::wait::wait_until;
use serde_json::{json, Value};

/// Instances placed and running (or failed) on a busy two-core machine.
const CONVERGE: Duration = Duration::from_secs(90);
/// The page showing what the API has: generous, the page refreshes on registry events and every 5
/// s.
const PAGE_DEADLINE: Duration = Duration::from_secs(30);
/// What the issue asks: a chaos kill shows in the browser within 2 s.
const KILL_SHOWN_WITHIN_MS: u64 = 2000;

const FRONTPAGE: &str = "task.http.frontpage.v4-2-1";

/// Three front pages and a task that always fails (ends `failed` with a reason after 2 restarts).
const TOPOLOGY: &str = "[task.http.frontpage.v4-2-1]\ncrate = \"http_frontpage\"\n\
    version = \"4.2.1\"\n\
     task = \"my::FrontPage\"\ntasks = 3\n\n\
     [task.crash]\ncrate = \"http_loadbalancer\"\nversion = \"0.8.2\"\ntask = \"my::Crasher\"\n\
         tasks = 1\n\
     restart = { max_restarts = 2, within_seconds = 60, backoff_ms = 50 }\n";

/// What the page shows, read from its DOM: member rows, instance rows, tree lines (by their data
/// attributes), the error lines and the connection status.
const READ_PAGE: &str = r#"
const rows = (selector, key) => Object.fromEntries([...document.querySelectorAll(selector)]
  .map((row) => [key(row), row.textContent]));
return {
  members: rows("tr[data-member]", (row) => row.dataset.member),
  instances: rows("tr[data-instance]", (row) => row.dataset.instance),
  actors: rows("[data-path]", (line) => line.dataset.node + " " + line.dataset.path),
  errors: document.getElementById("errors").textContent,
  connection: document.getElementById("conn").textContent,
};
"#;

/// `/v1/tasks` as `group/index` → instance.
fn instances(addr: &str) -> Result<BTreeMap<String, Value>, String> {
    let reply = http::try_get_json(addr, "/v1/tasks")?;
    let list = reply.body.as_array().ok_or(reply.text.clone())?;
    Ok(list
        .iter()
        .map(|task| {
            (
                format!(
                    "{}/{}",
                    task["group"].as_str().unwrap_or("?"),
                    task["index"]
                ),
                task.clone(),
            )
        })
        .collect())
}

/// Why the page read by [`READ_PAGE`] does not show what the API answers, if it does not.
fn page_differs(
    page: &Value,
    members: &[String],
    tasks: &BTreeMap<String, Value>,
) -> Option<String> {
    if page["errors"] != "" || page["connection"] != "connected" {
        return Some(format!(
            "errors {}, connection {}",
            page["errors"], page["connection"]
        ));
    }
    for name in members {
        let row = page["members"][name].as_str().unwrap_or_default();
        if !row.contains("alive") {
            return Some(format!("member {name}: {row:?}"));
        }
    }
    let leaders = members
        .iter()
        .filter(|name| {
            page["members"][name.as_str()]
                .as_str()
                .unwrap_or_default()
                .contains("leader")
        })
        .count();
    if leaders != 1 {
        return Some(format!("{leaders} leaders shown: {}", page["members"]));
    }
    for (key, task) in tasks {
        let row = page["instances"][key].as_str().unwrap_or_default();
        let status = task["status"].as_str().unwrap_or("?");
        let node = task["node"].as_str().unwrap_or("?");
        let reason = task["reason"].as_str().unwrap_or_default();
        if !(row.contains(status) && row.contains(node) && row.contains(reason)) {
            return Some(format!(
                "instance {key} ({status} on {node}, {reason:?}): {row:?}"
            ));
        }
        let line = format!("{node} node/tasks/{key}");
        if status == "running" && page["actors"].get(&line).is_none() {
            return Some(format!("no tree line {line:?}"));
        }
    }
    for name in members {
        if page["actors"].get(format!("{name} node")).is_none() {
            return Some(format!("no tree of {name}"));
        }
    }
    None
}

fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970");
    u64::try_from(since.as_millis()).expect("milliseconds in u64")
}

/// Watches the page for the killed instance shown running with one restart, in its instance row and
/// in its tree line: `window.shown.task` and `window.shown.tree` become the page's clock (ms) at
/// the first such DOM change.
fn watch_restart_script(instance: &str, node: &str) -> String {
    format!(
        r#"
window.shown = {{ task: null, tree: null }};
const restarted = (element) => element !== null && element.textContent.includes("running")
  && element.textContent.includes("1 restart");
const check = () => {{
  const now = Date.now();
  if (window.shown.task === null && restarted(document.querySelector('tr[data-instance="{instance}"]')))
    window.shown.task = now;
  if (window.shown.tree === null
      && restarted(document.querySelector('[data-node="{node}"][data-path="node/tasks/{instance}"]')))
    window.shown.tree = now;
}};
new MutationObserver(check).observe(document.body, {{ subtree: true, childList: true, characterData: true }});
return true;
"#
    )
}

#[test]
fn the_dashboard_in_chromium_shows_the_cluster_and_a_chaos_kill_within_two_seconds() {
    let cluster = Cluster::start(
        2,
        NodeBuilder::new()
            .name("browser")
            .cookie(TEST_COOKIE)
            .enable_chaos(),
    );
    let founder = cluster.node(0).http_addr().to_string();
    let joined = cluster.node(1).http_addr().to_string();
    let members: Vec<String> = (0..2).map(|i| cluster.node(i).name().to_string()).collect();
    let deployed = http::put_text(&founder, "/v1/topology", "application/toml", TOPOLOGY);
    assert_eq!(deployed.status, 200, "deploy: {}", deployed.text);
    let expected = [
        (format!("{FRONTPAGE}/0"), "running"),
        (format!("{FRONTPAGE}/1"), "running"),
        (format!("{FRONTPAGE}/2"), "running"),
        ("task.crash/0".to_string(), "failed"),
    ];
    wait_until(
        "three running front pages and a failed crasher",
        CONVERGE,
        || {
            let tasks = instances(&founder)?;
            let ready = expected.iter().all(|(key, status)| {
                tasks
                    .get(key)
                    .is_some_and(|t| t["status"] == *status && t["restarts"].as_u64() <= Some(2))
            });
            ready.then_some(()).ok_or(format!("{tasks:?}"))
        },
    );

    // The page as the joined node serves it: it shows both nodes' trees.
    let browser = Browser::start("ui_browser");
    browser.open(&format!("http://{joined}/ui"));
    wait_until(
        "the page showing what the API answers",
        PAGE_DEADLINE,
        || {
            let tasks = instances(&joined)?;
            let page = browser.eval(READ_PAGE);
            match page_differs(&page, &members, &tasks) {
                Some(difference) => Err(difference),
                None => Ok(()),
            }
        },
    );
    assert_eq!(
        browser.eval("return document.title"),
        json!("Lathe dashboard")
    );
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors on load: {errors:?}");
    browser.screenshot("loaded");

    // The chaos kill, on the node that runs the instance; the page is served by the other one, or
    // the same.
    let key = format!("{FRONTPAGE}/0");
    let node_name = instances(&founder).expect("tasks")[&key]["node"]
        .as_str()
        .expect("a placed instance")
        .to_string();
    let node = (0..2)
        .map(|i| cluster.node(i))
        .find(|node| node.name() == node_name)
        .expect("the instance's node in the cluster");
    assert_eq!(
        browser.eval(&watch_restart_script(&key, &node_name)),
        json!(true)
    );
    let killed_ms = now_ms();
    let kill = http::post_json(
        node.http_addr(),
        "/v1/actors/kill",
        &json!({"path": format!("node/tasks/{key}")}),
    );
    assert_eq!(kill.status, 200, "kill: {}", kill.text);
    let shown = wait_until("the restart shown in the page", PAGE_DEADLINE, || {
        let shown = browser.eval("return window.shown");
        (shown["task"].is_u64() && shown["tree"].is_u64()).then_some(shown)
    });
    let task_ms = shown["task"].as_u64().expect("a time") - killed_ms;
    let tree_ms = shown["tree"].as_u64().expect("a time") - killed_ms;
    eprintln!(
        "lathe-tests: the kill of {key} on {node_name} shown in the browser after {task_ms} ms \
            (instance row) \
         and {tree_ms} ms (tree)"
    );
    browser.screenshot("after-kill");
    let errors = browser.console_errors();
    assert!(
        errors.is_empty(),
        "console errors after the kill: {errors:?}"
    );
    assert!(
        task_ms.max(tree_ms) <= KILL_SHOWN_WITHIN_MS,
        "the kill showed after {task_ms} ms (instance row) and {tree_ms} ms (tree), over \
            {KILL_SHOWN_WITHIN_MS} ms"
    );
}

/// A load balancer splitting 90/10 between two front pages, and a web group rolled out quickly.
fn rollout_topology(web_task: &str) -> String {
    format!(
        "[task.http.lb]\ncrate = \"http_loadbalancer\"\nversion = \"0.8.2\"\n\
            task = \"my::LoadBalancer\"\n\
         tasks = 1\nbackend_distribution = [[\"task.front.a\", \"task.front.b\"], [90, 10]]\n\n\
         [task.front.a]\ncrate = \"http_frontpage\"\nversion = \"4.2.1\"\n\
             task = \"my::FrontPage\"\ntasks = 1\n\n\
         [task.front.b]\ncrate = \"http_frontpage\"\nversion = \"4.2.2\"\n\
             task = \"my::FrontPage\"\ntasks = 1\n\n\
         [task.web]\n{web_task}\ntasks = 1\n\
         rollout = {{ batch = 1, healthy_seconds = 1, timeout_seconds = 20 }}\n\
         restart = {{ max_restarts = 1, within_seconds = 60, backoff_ms = 50 }}\n"
    )
}

#[test]
fn the_dashboard_in_chromium_shows_a_rolled_back_roll_out_and_a_finished_shift() {
    let node = NodeBuilder::new()
        .name("browser-rollout")
        .cookie(TEST_COOKIE)
        .start();
    let addr = node.http_addr().to_string();
    let frontpage = "crate = \"http_frontpage\"\nversion = \"4.2.1\"\ntask = \"my::FrontPage\"";
    let crasher = "crate = \"http_loadbalancer\"\nversion = \"0.8.2\"\ntask = \"my::Crasher\"";
    let deployed = http::put_text(
        &addr,
        "/v1/topology",
        "application/toml",
        &rollout_topology(frontpage),
    );
    assert_eq!(deployed.status, 200, "deploy: {}", deployed.text);
    wait_until("every group running", CONVERGE, || {
        let tasks = instances(&addr)?;
        let running = tasks.values().filter(|t| t["status"] == "running").count();
        (running == 4).then_some(()).ok_or(format!("{tasks:?}"))
    });
    let browser = Browser::start("ui_browser");
    browser.open(&format!("http://{addr}/ui"));

    // A version that always fails to start: rolled back by itself, with the reason.
    let deployed = http::put_text(
        &addr,
        "/v1/topology",
        "application/toml",
        &rollout_topology(crasher),
    );
    assert_eq!(deployed.status, 200, "deploy: {}", deployed.text);
    let key = "/task/http/lb/backend_distribution";
    let body = json!({"key": key, "to": "task.front.b", "step": 50, "every_seconds": 1});
    let started = http::post_json(&addr, "/v1/shifts", &body);
    assert_eq!(started.status, 200, "shift: {}", started.text);
    let read_rows = r#"
const row = (selector) => { const row = document.querySelector(selector); return row ? row.textContent : null; };
return { rollout: row('tr[data-rollout="task.web"]'), shift: row('tr[data-shift="/task/http/lb/backend_distribution"]') };
"#;
    wait_until(
        "the page showing the rolled-back roll-out and the finished shift",
        CONVERGE,
        || {
            let rows = browser.eval(read_rows);
            let rollout = rows["rollout"].as_str().unwrap_or_default();
            let shift = rows["shift"].as_str().unwrap_or_default();
            let rolled_back = rollout.contains("rolled-back")
                && rollout.contains("4.2.1 \u{2192} 0.8.2")
                && rollout.contains("failed");
            let shifted =
                shift.contains("task.front.b") && shift.contains("100%") && shift.contains("done");
            (rolled_back && shifted)
                .then_some(())
                .ok_or(format!("{rows}"))
        },
    );
    let titles = browser.eval(
        "return ['members-title', 'tree-title'].map((id) => \
            document.getElementById(id).textContent)",
    );
    assert_eq!(titles[0], "Cluster: 1 member (1 alive)", "{titles}");
    assert!(
        titles[1]
            .as_str()
            .is_some_and(|t| t.starts_with("Supervision tree: 1 node, ")),
        "{titles}"
    );
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    browser.screenshot("rollouts");
}
