//! The seed topology on a real cluster for the agent tests: deploy, scale a group by redeploying
//! with another `tasks`, read a group's endpoints from the registry, and a request loop that
//! counts failures while things change.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lathe_tests::http;
use lathe_tests::node::Cluster;
use lathe_tests::scenario::try_entries_under;
use lathe_tests::wait::wait_until;

/// How long a deploy may take to converge on a loaded machine.
pub const CONVERGE: Duration = Duration::from_secs(120);

pub fn seed_source() -> String {
    std::fs::read_to_string(super::repo_file("config/my_topology.toml"))
        .expect("read the seed topology")
}

/// `PUT /v1/topology`, which must answer 200.
pub fn deploy(addr: &str, source: &str) {
    let reply = http::put_text(
        addr,
        "/v1/topology?file=my_topology.toml",
        "application/toml",
        source,
    );
    assert_eq!(reply.status, 200, "deploy: {}", reply.text);
}

/// The topology with `tasks = n` in table `[group]`.
pub fn with_tasks(source: &str, group: &str, n: u32) -> String {
    let header = format!("[{group}]");
    let mut in_group = false;
    let mut replaced = false;
    let lines: Vec<String> = source
        .lines()
        .map(|line| {
            if line.starts_with('[') {
                in_group = line.trim() == header;
            }
            if in_group && !replaced && line.trim_start().starts_with("tasks =") {
                replaced = true;
                let comment = line
                    .find('#')
                    .map(|i| format!("  {}", &line[i..]))
                    .unwrap_or_default();
                return format!("tasks = {n}{comment}");
            }
            line.to_string()
        })
        .collect();
    assert!(replaced, "no `tasks =` in [{group}]");
    lines.join("\n") + "\n"
}

/// The `HOST:PORT` of every endpoint of `group` (`task.http.lb`) in the registry.
pub fn endpoints(addr: &str, group: &str) -> Result<BTreeSet<String>, String> {
    let prefix = format!("/lathe/endpoints/{}", group.replace('.', "/"));
    let entries = try_entries_under(addr, &prefix)?;
    Ok(entries
        .values()
        .filter_map(|(value, _)| value["http"].as_str().map(str::to_string))
        .collect())
}

/// Waits until `group` has `n` endpoints; returns them.
pub fn wait_endpoints(
    cluster: &Cluster,
    group: &str,
    n: usize,
    deadline: Duration,
) -> BTreeSet<String> {
    let addr = cluster.node(0).http_addr().to_string();
    wait_until(
        &format!("{n} endpoints of {group}"),
        deadline,
        || match endpoints(&addr, group) {
            Ok(found) if found.len() == n => Ok(found),
            Ok(found) => Err(format!("{} endpoints: {found:?}", found.len())),
            Err(e) => Err(e),
        },
    )
}

/// Deploys the seed and waits for its 3 + 5 + 5 endpoints.
pub fn deploy_seed(cluster: &Cluster) -> String {
    let source = seed_source();
    deploy(cluster.node(0).http_addr(), &source);
    wait_endpoints(cluster, "task.http.lb", 3, CONVERGE);
    wait_endpoints(cluster, "task.http.frontpage.v4-2-1", 5, CONVERGE);
    wait_endpoints(cluster, "task.http.frontpage.v4-2-2", 5, CONVERGE);
    source
}

/// What a request loop saw.
#[derive(Debug, Default)]
pub struct LoopReport {
    pub ok: u64,
    pub failed: u64,
    pub errors: Vec<String>,
}

/// `GET url` in a loop on keep-alive connections until finished (at most ten minutes).
pub struct RequestLoop {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<LoopReport>>,
}

impl RequestLoop {
    /// One keep-alive connection.
    pub fn start(url: String, expect_body: &'static str) -> RequestLoop {
        RequestLoop::start_on(url, expect_body, 1)
    }

    /// `connections` keep-alive connections, each with its own thread.
    pub fn start_on(url: String, expect_body: &'static str, connections: usize) -> RequestLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..connections)
            .map(|_| {
                let (flag, url) = (stop.clone(), url.clone());
                std::thread::spawn(move || request_loop(&url, expect_body, &flag))
            })
            .collect();
        RequestLoop { stop, handles }
    }

    /// Stops the loop; what every connection saw, added up.
    pub fn finish(mut self) -> LoopReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = LoopReport::default();
        for handle in self.handles.drain(..) {
            let report = handle.join().expect("the request loop");
            total.ok += report.ok;
            total.failed += report.failed;
            total.errors.extend(report.errors);
        }
        total.errors.truncate(10);
        total
    }
}

fn request_loop(url: &str, expect_body: &str, stop: &AtomicBool) -> LoopReport {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .max_idle_connections(1)
        .build();
    let mut report = LoopReport::default();
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(600) {
        let outcome = match agent.get(url).call() {
            Ok(response) => match response.into_string() {
                Ok(body) if body == expect_body => Ok(()),
                Ok(body) => Err(format!("body {body:?}")),
                Err(e) => Err(format!("reading the body: {e}")),
            },
            Err(ureq::Error::Status(code, response)) => {
                let body = response.into_string().unwrap_or_default();
                Err(format!(
                    "status {code}: {}",
                    body.trim().chars().take(200).collect::<String>()
                ))
            }
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(()) => report.ok += 1,
            Err(error) => {
                report.failed += 1;
                if report.errors.len() < 10 {
                    report
                        .errors
                        .push(format!("{:.1}s: {error}", started.elapsed().as_secs_f64()));
                }
            }
        }
    }
    report
}

impl Drop for RequestLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
