//! Metric-gated roll-outs on two real nodes: while a request loop drives traffic at the group, a
//! version that answers 500 to 20 % of its requests (`my::Flaky`, `fail_percent = 20`) is rolled
//! back by itself once the scheduler leader reads its error ratio off the nodes' own response
//! counters (over `rollout.max_error_ratio = 0.05`), and a healthy version then completes — only
//! after the gate saw enough answers. The same for traffic shifts through a load balancer: a shift
//! to the flaky group is rolled back, one to a healthy group completes. And with
//! `--prometheus-url`, the same figures come from a real Prometheus scraping the nodes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use lathe_tests::http;
use lathe_tests::node::{free_port, Cluster, NodeBuilder};
use lathe_tests::scenario::TEST_COOKIE;
use lathe_tests::wait::wait_until;
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(120);
const GROUP: &str = "task.web";
const RECORD: &str = "/v1/kv/lathe/rollouts/task.web";

const FRONTPAGE_421: &str =
    "crate = \"http_frontpage\"\nversion = \"4.2.1\"\ntask = \"my::FrontPage\"";
const FRONTPAGE_422: &str =
    "crate = \"http_frontpage\"\nversion = \"4.2.2\"\ntask = \"my::FrontPage\"";
const FLAKY: &str = "crate = \"http_loadbalancer\"\nversion = \"0.8.2\"\ntask = \"my::Flaky\"";

/// One instance of `task_type`, gated: at most 5 % 5xx and a p99 under 1 s over at least 40
/// answers since the batch became healthy. `fail_percent` is read by `my::Flaky` only.
fn topology(task_type: &str) -> String {
    format!(
        "[task.web]\n{task_type}\ntasks = 1\nfail_percent = 20\n\
         rollout = {{ batch = 1, healthy_seconds = 2, timeout_seconds = 90, max_error_ratio = \
             0.05, \
         max_p99_ms = 1000, min_requests = 40 }}\n"
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

/// The group's one instance: (crate, version, status).
fn instance(addr: &str) -> Result<(String, String, String), String> {
    let reply = http::try_get_json(addr, "/v1/tasks")?;
    let list = reply.body.as_array().ok_or(reply.text.clone())?;
    let web = list
        .iter()
        .find(|t| t["group"] == GROUP)
        .ok_or(reply.text.clone())?;
    let text = |key: &str| web[key].as_str().unwrap_or_default().to_string();
    Ok((text("crate"), text("version"), text("status")))
}

fn rollout(addr: &str) -> Result<Value, String> {
    let reply = http::try_get_json(addr, "/v1/rollouts")?;
    let list = reply.body.as_array().ok_or(reply.text.clone())?;
    list.iter()
        .find(|r| r["group"] == GROUP)
        .cloned()
        .ok_or(reply.text)
}

/// Requests `GET /get/index` to the group's endpoints, one after the other, until stopped; counts
/// the answers by status (0: no answer, e.g. an instance being replaced).
struct RequestLoop {
    stop: Arc<AtomicBool>,
    counts: Arc<Mutex<BTreeMap<u16, u64>>>,
    thread: Option<JoinHandle<()>>,
}

impl RequestLoop {
    /// Requests to the endpoints of the group at `services` (`/v1/services/...`).
    fn start(addr: &str, services: &str) -> RequestLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Mutex::new(BTreeMap::new()));
        let (addr, stopped, counted) = (addr.to_string(), stop.clone(), counts.clone());
        let services = services.to_string();
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let endpoints = http::try_get_json(&addr, &services)
                    .ok()
                    .and_then(|reply| reply.body.as_array().cloned())
                    .unwrap_or_default();
                let targets: Vec<String> = endpoints
                    .iter()
                    .filter_map(|e| e["http"].as_str().map(str::to_string))
                    .collect();
                if targets.is_empty() {
                    std::thread::sleep(Duration::from_millis(50));
                }
                // A few requests per look-up: the endpoint changes when the instance is replaced.
                for target in targets.iter().cycle().take(20) {
                    let status = http::try_request("GET", target, "/get/index", None)
                        .map_or(0, |reply| reply.status);
                    *counted.lock().unwrap().entry(status).or_default() += 1;
                }
            }
        });
        RequestLoop {
            stop,
            counts,
            thread: Some(thread),
        }
    }

    fn counts(&self) -> BTreeMap<u16, u64> {
        self.counts.lock().unwrap().clone()
    }
}

impl Drop for RequestLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().ok();
        }
    }
}

#[test]
fn a_version_answering_500_to_a_fifth_of_requests_is_rolled_back_and_a_healthy_one_completes() {
    let cluster = Cluster::start(2, NodeBuilder::new().name("gate").cookie(TEST_COOKIE));
    let addr = cluster.node(0).http_addr().to_string();
    deploy(&addr, &topology(FRONTPAGE_421));
    let running_421 = (
        "http_frontpage".to_string(),
        "4.2.1".to_string(),
        "running".to_string(),
    );
    wait_until("task.web running 4.2.1", CONVERGE, || {
        instance(&addr).map(|i| i == running_421).unwrap_or(false)
    });
    let traffic = RequestLoop::start(&addr, "/v1/services/web");

    // The flaky version: rolled back by itself, with the figure that failed it.
    deploy(&addr, &topology(FLAKY));
    let record = wait_until("the flaky version rolled back", CONVERGE, || {
        let record = rollout(&addr)?;
        match record["state"].as_str() {
            Some("rolled-back") => Ok(record),
            _ => Err(format!("{record} {:?}", traffic.counts())),
        }
    });
    let reason = record["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("error ratio 0.") && reason.contains("over max_error_ratio 0.05"),
        "{record}"
    );
    eprintln!(
        "lathe-tests: rolled back: {reason}; answers so far by status {:?}",
        traffic.counts()
    );
    wait_until("task.web back on 4.2.1", CONVERGE, || {
        instance(&addr).map(|i| i == running_421).unwrap_or(false)
    });
    let flaky_errors = traffic.counts().get(&500).copied().unwrap_or(0);
    assert!(
        flaky_errors > 0,
        "the flaky version answered 500s: {:?}",
        traffic.counts()
    );

    // A healthy version completes, once the gate has seen its answers.
    let before = traffic.counts();
    deploy(&addr, &topology(FRONTPAGE_422));
    let mut gate_baseline_seen = false;
    wait_until("the 4.2.2 roll-out done", CONVERGE, || {
        let stored = http::try_get_json(&addr, RECORD)?;
        gate_baseline_seen |= stored.body["value"]["gate_baseline"].is_object();
        let record = rollout(&addr)?;
        if record["to"]["version"] != "4.2.2" {
            return Err(format!("not started yet: {record}"));
        }
        match record["state"].as_str() {
            Some("done") => Ok(()),
            Some("rolling") => Err(record.to_string()),
            _ => panic!("the healthy roll-out did not go ahead: {record}"),
        }
    });
    assert!(
        gate_baseline_seen,
        "the gate took a baseline of the counters"
    );
    let after = traffic.counts();
    drop(traffic);
    let during = |status: u16| after.get(&status).unwrap_or(&0) - before.get(&status).unwrap_or(&0);
    assert!(
        during(200) >= 40,
        "the healthy version answered: {before:?} -> {after:?}"
    );
    assert_eq!(
        during(500),
        0,
        "no 500 from 4.2.1 or 4.2.2: {before:?} -> {after:?}"
    );
    let running_422 = (
        "http_frontpage".to_string(),
        "4.2.2".to_string(),
        "running".to_string(),
    );
    assert_eq!(instance(&addr), Ok(running_422));
}

const SPLIT_KEY: &str = "/task/http/lb/backend_distribution";
const SHIFT_RECORD: &str = "/v1/kv/lathe/shifts/task/http/lb/backend_distribution";
const GOOD: &str = "task.front.good";
const FLAKY_GROUP: &str = "task.front.flaky";
const NEXT: &str = "task.front.next";

/// A load balancer sending 80/10/10 to three front pages; the flaky one and the next one are
/// gated (at most 5 % 5xx over at least 20 answers per step).
fn shift_topology() -> String {
    let gate = "rollout = { max_error_ratio = 0.05, max_p99_ms = 1000, min_requests = 20 }";
    format!(
        "[task.http.lb]\ncrate = \"http_loadbalancer\"\nversion = \"0.8.2\"\n\
            task = \"my::LoadBalancer\"\n\
         tasks = 1\n\
             backend_distribution = [[\"{GOOD}\", \"{FLAKY_GROUP}\", \"{NEXT}\"], [80, 10, 10]]\n\n\
         [task.front.good]\n{FRONTPAGE_421}\ntasks = 1\n\n\
         [task.front.flaky]\n{FLAKY}\ntasks = 1\nfail_percent = 20\n{gate}\n\n\
         [task.front.next]\n{FRONTPAGE_422}\ntasks = 1\n{gate}\n"
    )
}

fn split(addr: &str) -> Value {
    http::get_json(addr, &format!("/v1/kv{SPLIT_KEY}")).body["value"].clone()
}

fn shift_record(addr: &str) -> Result<Value, String> {
    let reply = http::try_get_json(addr, &format!("/v1/shifts{SPLIT_KEY}"))?;
    (reply.status == 200)
        .then_some(reply.body)
        .ok_or(reply.text)
}

fn start_shift(addr: &str, to: &str) {
    let body = serde_json::json!({"key": SPLIT_KEY, "to": to, "step": 30, "every_seconds": 1});
    let started = http::post_json(addr, "/v1/shifts", &body);
    assert_eq!(started.status, 200, "shift to {to}: {}", started.text);
}

#[test]
fn a_shift_to_a_fifth_failing_group_is_rolled_back_and_one_to_a_healthy_group_completes() {
    let cluster = Cluster::start(2, NodeBuilder::new().name("gate-shift").cookie(TEST_COOKIE));
    let addr = cluster.node(0).http_addr().to_string();
    deploy(&addr, &shift_topology());
    wait_until("every group running", CONVERGE, || {
        let reply = http::try_get_json(&addr, "/v1/tasks")?;
        let list = reply.body.as_array().cloned().unwrap_or_default();
        let running = list.iter().filter(|t| t["status"] == "running").count();
        (running == 4).then_some(()).ok_or(reply.text)
    });
    let original = split(&addr);
    let traffic = RequestLoop::start(&addr, "/v1/services/http/lb");

    start_shift(&addr, FLAKY_GROUP);
    let record = wait_until("the shift to the flaky group rolled back", CONVERGE, || {
        let record = shift_record(&addr)?;
        match record["state"].as_str() {
            Some("rolled-back") => Ok(record),
            _ => Err(format!("{record} {:?}", traffic.counts())),
        }
    });
    let reason = record["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("task.front.flaky: error ratio 0.")
            && reason.contains("over max_error_ratio 0.05"),
        "{record}"
    );
    eprintln!(
        "lathe-tests: shift rolled back: {reason}; answers by status {:?}",
        traffic.counts()
    );
    assert_eq!(split(&addr), original, "the original split is back");

    start_shift(&addr, NEXT);
    let mut gate_baseline_seen = false;
    wait_until("the shift to the next group done", CONVERGE, || {
        let stored = http::try_get_json(&addr, SHIFT_RECORD)?;
        gate_baseline_seen |= stored.body["value"]["gate_baseline"].is_object();
        let record = shift_record(&addr)?;
        if record["to"] != NEXT {
            return Err(format!("not started yet: {record}"));
        }
        match record["state"].as_str() {
            Some("done") => Ok(()),
            Some("shifting") => Err(record.to_string()),
            _ => panic!("the healthy shift did not go ahead: {record}"),
        }
    });
    assert!(
        gate_baseline_seen,
        "the gate took a baseline of the counters"
    );
    // The record is stored before the split is written.
    let all_to_next = serde_json::json!([[GOOD, FLAKY_GROUP, NEXT], [0, 0, 100]]);
    wait_until("the split all to the next group", CONVERGE, || {
        let now = split(&addr);
        (now == all_to_next).then_some(()).ok_or(now)
    });
    eprintln!(
        "lathe-tests: shift done; answers by status {:?}",
        traffic.counts()
    );
}

/// A real Prometheus (Debian's) on `port`, scraping `targets`' `/metrics` every second.
struct Prometheus {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(port: u16, targets: &[&str]) -> Prometheus {
        let dir = tempfile::tempdir().expect("a folder for Prometheus");
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                scrape_configs:\n  - job_name: lathe\n    \
             static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).expect("write prometheus.yml");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("a log file");
        let child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(log.try_clone().expect("the log file"))
            .stderr(log)
            .spawn()
            .expect("run prometheus (make deps installs it)");
        let prometheus = Prometheus { child, dir };
        let addr = format!("127.0.0.1:{port}");
        wait_until("Prometheus ready", CONVERGE, || {
            http::try_get_json(&addr, "/-/ready").is_ok_and(|reply| reply.status == 200)
        });
        prometheus
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

#[test]
fn with_a_prometheus_url_the_gate_reads_promql_and_rolls_a_flaky_version_back() {
    let port = free_port();
    let cluster = Cluster::start(
        2,
        NodeBuilder::new()
            .name("gate-prom")
            .cookie(TEST_COOKIE)
            .arg("--prometheus-url")
            .arg(format!("http://127.0.0.1:{port}/"))
            .env("LATHE_LOG", "info,lathe_actors::scheduler::traffic=debug"),
    );
    let addr = cluster.node(0).http_addr().to_string();
    let prometheus = Prometheus::start(
        port,
        &[cluster.node(0).http_addr(), cluster.node(1).http_addr()],
    );
    deploy(&addr, &topology(FRONTPAGE_421));
    let running_421 = (
        "http_frontpage".to_string(),
        "4.2.1".to_string(),
        "running".to_string(),
    );
    wait_until("task.web running 4.2.1", CONVERGE, || {
        instance(&addr).map(|i| i == running_421).unwrap_or(false)
    });
    let traffic = RequestLoop::start(&addr, "/v1/services/web");
    deploy(&addr, &topology(FLAKY));
    let record = wait_until("the flaky version rolled back", CONVERGE, || {
        let record = rollout(&addr)?;
        match record["state"].as_str() {
            Some("rolled-back") => Ok(record),
            _ => Err(format!(
                "{record} {:?}\n{}",
                traffic.counts(),
                prometheus.log()
            )),
        }
    });
    let reason = record["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("error ratio 0.") && reason.contains("over max_error_ratio 0.05"),
        "{record}"
    );
    eprintln!("lathe-tests: rolled back through Prometheus: {reason}");
    let leader_log = (0..2)
        .map(|i| cluster.node(i).log_contents())
        .collect::<String>();
    assert!(
        leader_log.contains("metric gate: counters read from Prometheus"),
        "the leader read the counters from Prometheus"
    );
    assert!(
        !leader_log.contains("cannot read /metrics"),
        "the leader did not read the nodes' /metrics itself"
    );
}
