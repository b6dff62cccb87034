//! `GET /ui`, the live dashboard, on real `lathe-node` processes: the page is served as uncached
//! HTML by every node, other methods are refused with a JSON error, and the request is counted in
//! `lathe_api_requests_total`. Its data sources (`/v1/members`, `/v1/tasks`, `/v1/rollouts`,
//! `/v1/shifts`, `/v1/tree`, the `/v1/watch/lathe` event stream) answer on the node that served it,
//! and every field its script reads exists in their real answers — with a leader, a failed task (a
//! reason), a finished roll-out, a finished traffic shift, a restarted actor and a member that is
//! not alive (a tree entry with an error) among them — so renaming a field of the API breaks this
//! test rather than the page.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lathe_tests::http::{self, Reply, SseReader};
use lathe_tests::node::{Cluster, NodeBuilder};
use lathe_tests::scenario::{assert_error, TEST_COOKIE};
use lathe_tests::wait::wait_until;
use serde_json::{json, Value};

/// Instances placed and running (or failed) on a busy two-core machine.
const CONVERGE: Duration = Duration::from_secs(90);
const EVENT_DEADLINE: Duration = Duration::from_secs(30);

/// What the page reads: the JSON endpoints it fetches and the event stream it follows.
const SOURCES: [&str; 5] = [
    "/v1/members",
    "/v1/tasks",
    "/v1/rollouts",
    "/v1/shifts",
    "/v1/tree",
];
const WATCH: &str = "/v1/watch/lathe";

const FRONTPAGE: &str = "task.http.frontpage.v4-2-1";
const WEB: &str = "task.web";
/// The registry keys of the roll-out records.
const ROLLOUT_KEYS: &str = "/lathe/rollouts/";
/// The registry keys of the traffic shift records.
const SHIFT_KEYS: &str = "/lathe/shifts/";
/// A weighted split between two groups the test runs, shifted to the front pages.
const SPLIT_KEY: &str = "/task/http/lb/backend_distribution";

/// Two front pages, a task that always fails (ends `failed` with a reason after 2 restarts), and a
/// group of one instance of `web_version`: deployed again with another version, it is rolled out
/// (quickly: healthy for 1 s).
fn topology(web_version: &str) -> String {
    format!(
        "[task.http.frontpage.v4-2-1]\ncrate = \"http_frontpage\"\nversion = \"4.2.1\"\n\
         task = \"my::FrontPage\"\ntasks = 2\n\n\
         [task.crash]\ncrate = \"http_loadbalancer\"\nversion = \"0.8.2\"\ntask = \"my::Crasher\"\n\
             tasks = 1\n\
         restart = {{ max_restarts = 2, within_seconds = 60, backoff_ms = 50 }}\n\n\
         [task.web]\ncrate = \"http_frontpage\"\nversion = \"{web_version}\"\n\
             task = \"my::FrontPage\"\n\
         tasks = 1\nrollout = {{ batch = 1, healthy_seconds = 1, timeout_seconds = 30 }}\n"
    )
}

fn deploy(addr: &str, topology: &str) {
    let deployed = http::put_text(addr, "/v1/topology", "application/toml", topology);
    assert_eq!(deployed.status, 200, "deploy: {}", deployed.text);
}

fn get_page(addr: &str, path: &str) -> Reply {
    let reply = http::get_json(addr, path);
    assert_eq!(reply.status, 200, "GET {path}: {}", reply.text);
    assert_eq!(
        reply.header("content-type"),
        Some("text/html; charset=utf-8"),
        "GET {path}"
    );
    assert_eq!(
        reply.header("cache-control"),
        Some("no-cache"),
        "GET {path}"
    );
    assert!(
        reply.text.starts_with("<!doctype html>") && reply.text.trim_end().ends_with("</html>"),
        "GET {path} is not the page: {:.200}",
        reply.text
    );
    reply
}

/// The sum of `lathe_api_requests_total` over the series with `code` whose route is the one `/ui`
/// is counted under (`other`, or `ui` should it get a label of its own).
fn ui_requests(addr: &str, code: u16) -> f64 {
    let metrics = http::get_json(addr, "/metrics").text;
    let code = format!("code=\"{code}\"");
    metrics
        .lines()
        .filter(|line| line.starts_with("lathe_api_requests_total{") && line.contains(&code))
        .filter(|line| line.contains("route=\"other\"") || line.contains("route=\"ui\""))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[test]
fn the_dashboard_is_served_as_uncached_html_and_other_methods_are_refused() {
    let node = NodeBuilder::new()
        .name("ui-page")
        .cookie(TEST_COOKIE)
        .start();
    let addr = node.http_addr();
    let before = ui_requests(addr, 200);

    let page = get_page(addr, "/ui");
    let with_slash = get_page(addr, "/ui/");
    assert_eq!(page.text, with_slash.text, "/ui and /ui/ are one page");
    for source in SOURCES.iter().chain([&WATCH]) {
        assert!(
            page.text.contains(&format!("\"{source}\"")),
            "the page does not read {source}"
        );
    }
    assert_eq!(
        ui_requests(addr, 200),
        before + 2.0,
        "GET /ui and GET /ui/ counted in lathe_api_requests_total"
    );

    let refused_before = ui_requests(addr, 405);
    for (method, path) in [("POST", "/ui"), ("PUT", "/ui/"), ("DELETE", "/ui")] {
        let reply = http::request(method, addr, path, Some("{}"));
        let message = assert_error(&reply, 405, &format!("{method} {path}"));
        assert!(
            message.contains(method) && message.contains(path),
            "{method} {path}: {message}"
        );
    }
    assert_eq!(ui_requests(addr, 405), refused_before + 3.0);
    // Nothing else appeared under /ui.
    assert_error(&http::get_json(addr, "/ui/other"), 404, "GET /ui/other");
}

/// One of the page's JSON sources on `addr`: 200, JSON, and the body.
fn source(addr: &str, path: &str) -> Result<Value, String> {
    let reply = http::try_get_json(addr, path)?;
    let json = reply
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/json"));
    if reply.status == 200 && json && !reply.body.is_null() {
        Ok(reply.body)
    } else {
        Err(format!(
            "GET {path} on {addr}: {} {:?}: {}",
            reply.status,
            reply.header("content-type"),
            reply.text
        ))
    }
}

/// `/v1/tasks` as `(group, index)` → `status`.
fn statuses(addr: &str) -> Result<BTreeMap<(String, u64), String>, String> {
    let tasks = source(addr, "/v1/tasks")?;
    let list = tasks.as_array().ok_or_else(|| tasks.to_string())?;
    Ok(list
        .iter()
        .map(|task| {
            let group = task["group"].as_str().unwrap_or_default().to_string();
            let status = task["status"].as_str().unwrap_or_default().to_string();
            ((group, task["index"].as_u64().unwrap_or(u64::MAX)), status)
        })
        .collect())
}

/// The roll-out of `group` in `/v1/rollouts` on `addr`.
fn rollout_of(addr: &str, group: &str) -> Result<Value, String> {
    let rollouts = source(addr, "/v1/rollouts")?;
    let list = rollouts.as_array().ok_or_else(|| rollouts.to_string())?;
    list.iter()
        .find(|rollout| rollout["group"] == group)
        .cloned()
        .ok_or_else(|| format!("no roll-out of {group}: {rollouts}"))
}

/// The traffic shift of `key` in `/v1/shifts` on `addr`.
fn shift_of(addr: &str, key: &str) -> Result<Value, String> {
    let shifts = source(addr, "/v1/shifts")?;
    let list = shifts.as_array().ok_or_else(|| shifts.to_string())?;
    list.iter()
        .find(|shift| shift["key"] == key)
        .cloned()
        .ok_or_else(|| format!("no shift of {key}: {shifts}"))
}

/// The first event of `watch` about a key under `prefix`, the keys of the others meanwhile in the
/// error.
fn expect_event_under(watch: &mut SseReader, prefix: &str) {
    let mut keys_seen = Vec::new();
    wait_until(
        &format!("an event of {WATCH} about {prefix}"),
        EVENT_DEADLINE,
        || {
            while let Some(event) = watch.next_event(Duration::ZERO) {
                let key = event["key"].as_str().unwrap_or_default().to_string();
                if key.starts_with(prefix) {
                    return Ok(());
                }
                keys_seen.push(key);
            }
            Err(format!("{keys_seen:?}"))
        },
    );
}

/// The JSON objects the page reads, by the variable name its script reads them through.
#[derive(Default)]
struct Answers(BTreeMap<&'static str, Vec<Value>>);

impl Answers {
    /// The five answers as the page gets them from `addr`.
    fn read(&mut self, addr: &str) {
        let members = source(addr, "/v1/members").expect("members");
        let tasks = source(addr, "/v1/tasks").expect("tasks");
        let rollouts = source(addr, "/v1/rollouts").expect("rollouts");
        let shifts = source(addr, "/v1/shifts").expect("shifts");
        let tree = source(addr, "/v1/tree").expect("tree");
        let items = |value: &Value| value.as_array().cloned().unwrap_or_default();
        let member_list = items(&members["members"]);
        for member in &member_list {
            self.add("taskType", items(&member["catalog"]));
        }
        self.add("member", member_list);
        self.add("membersAnswer", vec![members]);
        self.add("task", items(&tasks));
        let rollout_list = items(&rollouts);
        for rollout in &rollout_list {
            self.add("fromType", vec![rollout["from"].clone()]);
            self.add("toType", vec![rollout["to"].clone()]);
        }
        self.add("rollout", rollout_list);
        self.add("shift", items(&shifts));
        let entries = items(&tree["nodes"]);
        for entry in &entries {
            if let Some(root) = entry.get("tree") {
                self.add("actor", actors(root));
            }
        }
        self.add("entry", entries);
        self.add("treeAnswer", vec![tree]);
    }

    fn add(&mut self, variable: &'static str, values: Vec<Value>) {
        self.0.entry(variable).or_default().extend(values);
    }
}

/// An actor of the tree and, depth first, every actor under it.
fn actors(actor: &Value) -> Vec<Value> {
    let mut all = vec![actor.clone()];
    for child in actor["children"].as_array().into_iter().flatten() {
        all.extend(actors(child));
    }
    all
}

/// The page's script: what is between `<script>` and `</script>`.
fn script(page: &str) -> &str {
    let start = page.find("<script>").expect("the page has a script") + "<script>".len();
    let end = page[start..].find("</script>").expect("the script ends") + start;
    &page[start..end]
}

/// The field names the script reads through `variable`: `x` of every `variable.x` (not
/// `other.variable.x`).
fn fields_read(script: &str, variable: &str) -> BTreeSet<String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '$';
    let needle = format!("{variable}.");
    script
        .match_indices(&needle)
        .filter(|(at, _)| {
            script[..*at]
                .chars()
                .next_back()
                .is_none_or(|c| !is_name(c) && c != '.')
        })
        .map(|(at, _)| {
            script[at + needle.len()..]
                .chars()
                .take_while(|&c| is_name(c))
                .collect::<String>()
        })
        .filter(|field| !field.is_empty())
        .collect()
}

#[test]
fn every_field_the_dashboard_reads_is_in_the_real_answers_of_its_sources() {
    let mut cluster = Cluster::start(2, NodeBuilder::new().name("ui").cookie(TEST_COOKIE));
    let founder = cluster.node(0).http_addr().to_string();
    let joined = cluster.node(1).http_addr().to_string();
    // Every node serves the page and its sources: read it all from the joined node.
    let page = get_page(&joined, "/ui").text;
    let mut watch = SseReader::connect(&joined, WATCH);

    deploy(&founder, &topology("4.2.1"));
    let event = watch.expect_event(EVENT_DEADLINE);
    let key = event["key"].as_str().unwrap_or_default();
    assert!(
        key.starts_with("/lathe/"),
        "an event of {WATCH} about {key:?}: {event}"
    );

    // A roll-out: the web group runs, then is deployed with another version.
    wait_until("the web group running", CONVERGE, || {
        let statuses = statuses(&joined)?;
        let web = statuses.get(&(WEB.to_string(), 0)).map(String::as_str);
        (web == Some("running"))
            .then_some(())
            .ok_or(format!("{statuses:?}"))
    });
    // None yet: the page shows its "no roll-outs" and "no traffic shifts" lines for these answers.
    assert_eq!(
        source(&joined, "/v1/rollouts"),
        Ok(Value::Array(Vec::new())),
        "no roll-out before a version change"
    );
    assert_eq!(
        source(&joined, "/v1/shifts"),
        Ok(Value::Array(Vec::new())),
        "no traffic shift before one is started"
    );
    deploy(&founder, &topology("4.2.2"));
    // Roll-out records are under the watched prefix: the page refreshes when one changes.
    expect_event_under(&mut watch, ROLLOUT_KEYS);

    let expected = [
        ((FRONTPAGE.to_string(), 0), "running"),
        ((FRONTPAGE.to_string(), 1), "running"),
        (("task.crash".to_string(), 0), "failed"),
        ((WEB.to_string(), 0), "running"),
    ];
    wait_until(
        "two running front pages, a failed crasher and the web group rolled out",
        CONVERGE,
        || {
            let statuses = statuses(&joined)?;
            let ready = expected.iter().all(|(instance, status)| {
                statuses.get(instance).map(String::as_str) == Some(status)
            });
            let rollout = rollout_of(&joined, WEB)?;
            let done = rollout["state"] == "done" && rollout["updated_running"] == 1;
            (ready && done)
                .then_some(())
                .ok_or(format!("{statuses:?}; {rollout}"))
        },
    );

    // A traffic shift: a split 90/10 between the web group and the (running) front pages moves to
    // the front pages, 50 points a second: 10 -> 60 -> 100, done.
    let split = json!([[WEB, FRONTPAGE], [90, 10]]);
    let put = http::put_json(&founder, &format!("/v1/kv{SPLIT_KEY}"), &split);
    assert_eq!(put.status, 200, "PUT {SPLIT_KEY}: {}", put.text);
    let started = http::post_json(
        &founder,
        "/v1/shifts",
        &json!({"key": SPLIT_KEY, "to": FRONTPAGE, "step": 50, "every_seconds": 1}),
    );
    assert_eq!(started.status, 200, "POST /v1/shifts: {}", started.text);
    // Shift records are under the watched prefix too.
    expect_event_under(&mut watch, SHIFT_KEYS);
    watch.close();
    wait_until(&format!("the shift of {SPLIT_KEY} done"), CONVERGE, || {
        let shift = shift_of(&joined, SPLIT_KEY)?;
        (shift["state"] == "done" && shift["percent"] == 100)
            .then_some(())
            .ok_or(shift.to_string())
    });
    let mut answers = Answers::default();
    answers.read(&joined);

    // A member that is not alive: the cluster tree lists it with an error instead of a tree.
    cluster.node_mut(1).kill();
    wait_until("the killed node listed with an error", CONVERGE, || {
        let tree = source(&founder, "/v1/tree")?;
        let entries = tree["nodes"].as_array().cloned().unwrap_or_default();
        entries
            .iter()
            .any(|entry| entry.get("error").is_some())
            .then_some(())
            .ok_or(tree.to_string())
    });
    answers.read(&founder);

    // The fields below are the ones the page cannot do without; the script must still read them
    // through these names, or this test would check nothing.
    let essential: [(&str, &[&str]); 13] = [
        ("membersAnswer", &["members"]),
        ("member", &["name", "status", "leader", "catalog", "tags"]),
        ("taskType", &["crate", "version", "task"]),
        ("task", &["group", "index", "node", "version", "status"]),
        ("task", &["endpoint", "restarts", "reason"]),
        (
            "rollout",
            &["group", "from", "to", "state", "batch", "reason"],
        ),
        (
            "rollout",
            &["tasks", "updated", "updated_running", "started_ms"],
        ),
        (
            "shift",
            &[
                "key",
                "to",
                "percent",
                "step",
                "every_seconds",
                "state",
                "reason",
                "started_ms",
            ],
        ),
        ("fromType", &["version"]),
        ("toType", &["version"]),
        ("treeAnswer", &["nodes"]),
        ("entry", &["node", "status", "tree", "error"]),
        (
            "actor",
            &["path", "kind", "status", "restarts", "reason", "children"],
        ),
    ];
    let script = script(&page);
    for (variable, fields) in essential {
        let read = fields_read(script, variable);
        let missing: Vec<_> = fields.iter().filter(|f| !read.contains(**f)).collect();
        assert!(
            missing.is_empty(),
            "the script no longer reads {missing:?} through `{variable}.` (it reads {read:?})"
        );
    }
    let mut checked = 0;
    for (variable, objects) in &answers.0 {
        assert!(!objects.is_empty(), "no {variable} in the answers");
        for field in fields_read(script, variable) {
            assert!(
                objects.iter().any(|object| object.get(&field).is_some()),
                "the page reads `{variable}.{field}`, which no answer has; {variable}s: {}",
                Value::Array(objects.clone())
            );
            checked += 1;
        }
    }
    assert!(checked >= 53, "only {checked} fields checked");
    // The answers hold the cases the page shows differently.
    let seen = |variable: &str, field: &str, value: Value| {
        answers.0[variable]
            .iter()
            .any(|object| object[field] == value)
    };
    assert!(seen("member", "leader", Value::Bool(true)));
    assert!(seen("member", "leader", Value::Bool(false)));
    assert!(seen("task", "status", "failed".into()));
    assert!(seen("rollout", "state", "done".into()));
    assert!(seen("shift", "state", "done".into()));
    assert!(seen("shift", "to", FRONTPAGE.into()));
    assert!(seen("fromType", "version", "4.2.1".into()));
    assert!(seen("toType", "version", "4.2.2".into()));
    assert!(seen("actor", "status", "failed".into()));
}

#[test]
fn fields_are_read_after_the_variable_name_only() {
    let script = "member.status; members.length; x.member.pid; member.catalog.map((taskType) => \
                  taskType.crate); // a member.\n remember.me";
    let read = fields_read(script, "member");
    assert_eq!(
        read,
        BTreeSet::from(["status".to_string(), "catalog".to_string()])
    );
    assert_eq!(
        fields_read(script, "taskType"),
        BTreeSet::from(["crate".to_string()])
    );
}
