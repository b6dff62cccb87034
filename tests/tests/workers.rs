//! `--workers N`: the node runs its async work (REST, the cluster, HTTP tasks) on N threads, says
//! so in `lathe_node_workers`, and serves with them.

use lathe_tests::http;
use lathe_tests::node::NodeBuilder;
use lathe_tests::scenario::TEST_COOKIE;

/// `lathe_node_workers` of the node at `addr`.
fn workers_metric(addr: &str) -> Option<u64> {
    let metrics = http::request("GET", addr, "/metrics", None).text;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("lathe_node_workers "))
        .and_then(|value| value.trim().parse().ok())
}

#[test]
fn a_node_runs_as_many_async_workers_as_asked() {
    for workers in [1, 3] {
        let node = NodeBuilder::new()
            .name(format!("workers-{workers}"))
            .cookie(TEST_COOKIE)
            .arg("--workers")
            .arg(workers.to_string())
            .start();
        let addr = node.http_addr().to_string();
        let health = http::get_json(&addr, "/v1/health");
        assert_eq!(health.status, 200, "{}", health.text);
        assert_eq!(workers_metric(&addr), Some(workers), "--workers {workers}");
    }
    // Without the flag: one per CPU.
    let cpus = std::thread::available_parallelism().map_or(1, usize::from) as u64;
    let node = NodeBuilder::new()
        .name("workers-default")
        .cookie(TEST_COOKIE)
        .start();
    assert_eq!(workers_metric(node.http_addr()), Some(cpus));
}
