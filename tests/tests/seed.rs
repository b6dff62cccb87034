//! The seed's example end to end on three real nodes and a real ZooKeeper:
//! `config/my_topology.toml` deploys, its load balancers forward 90/10 to the two front-page
//! versions, the split follows a run-time metadata change without restarts, a redeploy starts only
//! what it adds, and a broken topology is refused with its position while the running one stays.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use lathe_tests::http::{self, Reply};
use lathe_tests::node::Cluster;
use lathe_tests::scenario::zk_cluster;
use lathe_tests::wait::wait_until;
use serde_json::{json, Value};

const CONVERGE: Duration = Duration::from_secs(120);

fn seed_source() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/my_topology.toml");
    std::fs::read_to_string(path).expect("read config/my_topology.toml")
}

fn deploy(addr: &str, source: &str) -> Reply {
    http::put_text(
        addr,
        "/v1/topology?file=my_topology.toml",
        "application/toml",
        source,
    )
}

/// `/v1/tasks` as (group, index) → instance.
fn tasks(addr: &str) -> BTreeMap<(String, u64), Value> {
    let reply = http::get_json(addr, "/v1/tasks");
    assert_eq!(reply.status, 200, "/v1/tasks: {}", reply.text);
    reply
        .body
        .as_array()
        .expect("/v1/tasks is an array")
        .iter()
        .map(|t| {
            let group = t["group"].as_str().unwrap_or_default().to_string();
            ((group, t["index"].as_u64().unwrap_or(u64::MAX)), t.clone())
        })
        .collect()
}

fn running(tasks: &BTreeMap<(String, u64), Value>) -> usize {
    tasks.values().filter(|t| t["status"] == "running").count()
}

fn lb_endpoints(addr: &str) -> Vec<String> {
    let reply = http::get_json(addr, "/v1/services/http/lb");
    assert_eq!(reply.status, 200, "/v1/services/http/lb: {}", reply.text);
    reply
        .body
        .as_array()
        .expect("services is an array")
        .iter()
        .filter_map(|e| e["http"].as_str().map(str::to_string))
        .collect()
}

/// Sends `count` `GET path` requests round-robin over `endpoints` on keep-alive connections.
/// Returns (status, body, X-Lathe-Task, X-Lathe-Version) per request.
fn load(endpoints: &[String], path: &str, count: usize) -> Vec<(u16, String, String, String)> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    (0..count)
        .map(|i| {
            let url = format!("http://{}{path}", endpoints[i % endpoints.len()]);
            let response = match agent.get(&url).call() {
                Ok(response) => response,
                Err(ureq::Error::Status(_, response)) => response,
                Err(e) => panic!("GET {url}: {e}"),
            };
            let status = response.status();
            let task = response.header("x-lathe-task").unwrap_or("").to_string();
            let version = response.header("x-lathe-version").unwrap_or("").to_string();
            let body = response.into_string().unwrap_or_default();
            (status, body, task, version)
        })
        .collect()
}

/// `lathe_forward_total{way=...}` of one node.
fn forwarded(addr: &str, way: &str) -> f64 {
    let reply = http::get_json(addr, "/metrics");
    let series = format!("lathe_forward_total{{way=\"{way}\"}} ");
    reply
        .text
        .lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

fn share_of(results: &[(u16, String, String, String)], version: &str) -> f64 {
    let hits = results.iter().filter(|r| r.3 == version).count();
    hits as f64 / results.len() as f64
}

fn wait_running(cluster: &Cluster, count: usize) -> BTreeMap<(String, u64), Value> {
    let addr = cluster.node(0).http_addr().to_string();
    wait_until(&format!("{count} running instances"), CONVERGE, || {
        let tasks = tasks(&addr);
        (running(&tasks) == count).then_some(tasks)
    })
}

#[test]
fn the_seed_topology_runs_end_to_end() {
    let (_zk, cluster) = zk_cluster(3, "seed");
    let addr = cluster.node(1).http_addr().to_string();
    let source = seed_source();

    let reply = deploy(&addr, &source);
    assert_eq!(reply.status, 200, "deploy: {}", reply.text);
    let before = wait_running(&cluster, 13);

    // 3 LBs on 3 different nodes; 5 + 5 front pages.
    let lb_nodes: BTreeSet<&str> = before
        .iter()
        .filter(|((group, _), _)| group == "task.http.lb")
        .filter_map(|(_, t)| t["node"].as_str())
        .collect();
    assert_eq!(lb_nodes.len(), 3, "one LB per node: {before:#?}");
    for version in ["v4-2-1", "v4-2-2"] {
        let group = format!("task.http.frontpage.{version}");
        assert_eq!(before.keys().filter(|(g, _)| *g == group).count(), 5);
    }

    // Thousands of requests through the LBs: all 200 ":)", ~10 % from v4.2.2, all stamped.
    let endpoints = wait_until("3 LB endpoints", CONVERGE, || {
        let endpoints = lb_endpoints(&addr);
        (endpoints.len() == 3).then_some(endpoints)
    });
    let results = load(&endpoints, "/get/index", 3000);
    for (status, body, task, version) in &results {
        assert_eq!((*status, body.as_str()), (200, ":)"));
        assert!(
            task.starts_with("task.http.frontpage.v4-2-"),
            "X-Lathe-Task {task:?}"
        );
        assert!(
            version == "4.2.1" || version == "4.2.2",
            "X-Lathe-Version {version:?}"
        );
    }
    let share = share_of(&results, "4.2.2");
    println!("v4.2.2 share at 90/10: {:.1} %", share * 100.0);
    // Each LB sits beside front pages (+7): it calls those of its own node in-process.
    let local: f64 = cluster
        .nodes()
        .iter()
        .map(|node| forwarded(node.http_addr(), "local"))
        .sum();
    assert!(
        local > 1000.0,
        "only {local} of 3000 requests forwarded in-process to co-located front pages"
    );
    assert!((0.07..=0.13).contains(&share), "v4.2.2 share {share}");

    // Any other path: 400 "invalid request", from a front page.
    for (status, body, task, _) in load(&endpoints, "/nope", 30) {
        assert_eq!((status, body.as_str()), (400, "invalid request"));
        assert!(task.starts_with("task.http.frontpage."));
    }

    // 50/50 at run time: the split follows within a second, nothing restarts.
    let changed_at = Instant::now();
    let reply = http::put_json(
        &addr,
        "/v1/kv/task/http/lb/backend_distribution",
        &json!([
            ["task.http.frontpage.v4-2-1", "task.http.frontpage.v4-2-2"],
            [50, 50]
        ]),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    let followed = wait_until("the 50/50 split", Duration::from_secs(10), || {
        (share_of(&load(&endpoints, "/get/index", 200), "4.2.2") > 0.35).then(Instant::now)
    });
    println!(
        "split followed the metadata change after {:?}",
        followed - changed_at
    );
    let share = share_of(&load(&endpoints, "/get/index", 2000), "4.2.2");
    assert!((0.44..=0.56).contains(&share), "v4.2.2 share {share}");
    let after = tasks(&addr);
    for (key, task) in &before {
        assert_eq!(
            after[key]["restarts"], task["restarts"],
            "{key:?} restarted"
        );
        assert_eq!(after[key]["endpoint"], task["endpoint"], "{key:?} moved");
    }

    // Redeploy with 7 v4.2.2 instances: only the two new ones start.
    let more = source.replacen(
        "version = \"4.2.2\"\ntasks = 5",
        "version = \"4.2.2\"\ntasks = 7",
        1,
    );
    assert_ne!(
        more, source,
        "the seed file changed shape: adjust this test"
    );
    let reply = deploy(&addr, &more);
    assert_eq!(reply.status, 200, "redeploy: {}", reply.text);
    let grown = wait_running(&cluster, 15);
    for (key, task) in &before {
        assert_eq!(
            grown[key]["endpoint"], task["endpoint"],
            "{key:?} was restarted"
        );
        assert_eq!(grown[key]["node"], task["node"], "{key:?} moved");
    }
    let metadata = http::get_json(&addr, "/v1/kv/task/http/lb/backend_distribution");
    assert_eq!(
        metadata.body["value"][1],
        json!([50, 50]),
        "a redeploy that leaves the key alone keeps the run-time value"
    );

    // A broken topology is refused with line:column; the running one is untouched.
    let missing: String = more
        .lines()
        .filter(|line| !line.starts_with("tasks = 3 "))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_ne!(missing.len(), more.len(), "the seed file changed shape");
    let reply = deploy(&addr, &missing);
    assert_eq!(reply.status, 400, "{}", reply.text);
    let error = reply.error().unwrap_or_default().to_string();
    assert!(error.starts_with("my_topology.toml:1:1:"), "{error}");
    assert!(
        error.contains("task.http.lb") && error.contains("tasks"),
        "{error}"
    );
    let reply = deploy(&addr, "[task.http.lb\ncrate = ");
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert!(reply
        .error()
        .unwrap_or_default()
        .starts_with("my_topology.toml:1:"));
    let deployed = http::request("GET", &addr, "/v1/topology", None);
    assert_eq!(deployed.text, more, "the running topology changed");
    assert_eq!(running(&tasks(&addr)), 15);
}
