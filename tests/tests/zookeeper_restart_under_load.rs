//! A ZooKeeper outage under load, with real processes: the seed topology serves steady traffic
//! through its three LBs while ZooKeeper is stopped and started again. The data plane carries on
//! (no request fails: nothing is fenced, since every node still reaches a majority of the cluster),
//! registry writes answer 503 while ZooKeeper is away and resume by themselves, the sessions that
//! expired meanwhile are rebuilt, and the scheduler applies the next topology change.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use lathe_tests::http;
use lathe_tests::node::NodeProcess;
use lathe_tests::scenario::{metric_value, zk_cluster};
use lathe_tests::wait::wait_until;
use serde_json::json;

const CONVERGE: Duration = Duration::from_secs(120);
/// How many requests the LBs must answer while ZooKeeper is down.
const REQUESTS_DURING_OUTAGE: usize = 3_000;

fn seed_source() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/my_topology.toml");
    std::fs::read_to_string(path).expect("read config/my_topology.toml")
}

/// How many times the node's log says a ZooKeeper session expired.
fn expiries(node: &NodeProcess) -> usize {
    node.log_contents()
        .matches("zookeeper session expired")
        .count()
}

fn running(addr: &str) -> usize {
    let reply = http::get_json(addr, "/v1/tasks");
    reply
        .body
        .as_array()
        .into_iter()
        .flatten()
        .filter(|task| task["status"] == "running")
        .count()
}

fn lb_urls(addr: &str) -> Vec<String> {
    let reply = http::get_json(addr, "/v1/services/http/lb");
    reply
        .body
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["http"].as_str().map(|a| format!("http://{a}/get/index")))
        .collect()
}

/// Requests through the LBs, round-robin, until stopped: how many went through, and what failed.
struct Traffic {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(urls: Vec<String>) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let (s, d, f) = (stop.clone(), done.clone(), failures.clone());
        let thread = thread::spawn(move || {
            let agent = ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(10))
                .build();
            let mut i = 0usize;
            while !s.load(Ordering::SeqCst) {
                let url = &urls[i % urls.len()];
                i += 1;
                match agent.get(url).call() {
                    Ok(response) if response.status() == 200 => {}
                    Ok(response) => f
                        .lock()
                        .unwrap()
                        .push(format!("{url}: {}", response.status())),
                    Err(error) => f.lock().unwrap().push(format!("{url}: {error}")),
                }
                d.fetch_add(1, Ordering::SeqCst);
            }
        });
        Traffic {
            stop,
            done,
            failures,
            thread: Some(thread),
        }
    }

    fn done(&self) -> usize {
        self.done.load(Ordering::SeqCst)
    }

    fn stop(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the traffic thread");
        }
        let failures = std::mem::take(&mut *self.failures.lock().unwrap());
        (self.done(), failures)
    }
}

#[test]
fn the_cluster_serves_through_a_zookeeper_restart_and_applies_the_next_change() {
    let (mut zk, cluster) = zk_cluster(3, "zkload");
    let addrs = cluster.http_addrs();
    let addr = addrs[0].clone();
    let reply = http::put_text(&addr, "/v1/topology", "application/toml", &seed_source());
    assert_eq!(reply.status, 200, "deploy: {}", reply.text);
    wait_until("13 running instances and 3 LB endpoints", CONVERGE, || {
        running(&addr) == 13 && lb_urls(&addr).len() == 3
    });
    let traffic = Traffic::start(lb_urls(&addr));
    wait_until("traffic flowing", CONVERGE, || traffic.done() >= 200);

    let expired_before: Vec<usize> = cluster.nodes().iter().map(expiries).collect();
    zk.stop().expect("stop zookeeper");
    // The registry refuses writes while its store is away (503), on every node.
    wait_until("every node refusing writes with 503", CONVERGE, || {
        addrs.iter().all(|a| {
            let reply = http::put_json(a, "/v1/kv/zkload/during", &json!(1));
            reply.status == 503
        })
    });
    // ZooKeeper stays away until every node's sessions have expired (zookeeper-client gives a
    // session up when it cannot reconnect within the session timeout), so that the restart finds
    // sessions to rebuild, and the LBs answered plenty meanwhile.
    let at_outage = traffic.done();
    wait_until(
        "every node's zookeeper sessions expired, the LBs answering through the outage",
        CONVERGE,
        || {
            let now: Vec<usize> = cluster.nodes().iter().map(expiries).collect();
            let expired = now
                .iter()
                .zip(&expired_before)
                .all(|(n, before)| n > before);
            let answered = traffic.done() - at_outage;
            if expired && answered >= REQUESTS_DURING_OUTAGE {
                Ok(())
            } else {
                Err(format!(
                    "expiries {expired_before:?} → {now:?}; {answered} requests answered"
                ))
            }
        },
    );
    for a in &addrs {
        assert_eq!(
            metric_value(a, "lathe_node_fenced"),
            Ok(0.0),
            "{a} fenced itself while it reached the whole cluster"
        );
    }

    zk.restart().expect("start zookeeper again");
    wait_until("writes accepted again on every node", CONVERGE, || {
        addrs.iter().all(|a| {
            let reply = http::put_json(a, "/v1/kv/zkload/after", &json!(2));
            reply.status == 200
        })
    });
    let (requests, failures) = traffic.stop();
    assert!(
        failures.is_empty(),
        "{} of {requests} requests failed around the zookeeper restart, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );

    // Membership and the scheduler carry on: 3 alive members, one leader, and the next change
    // applies.
    for node in cluster.nodes() {
        wait_until("3 alive members", CONVERGE, || {
            node.alive_member_names().map(|n| n.len()) == Ok(3)
        });
    }
    let more = seed_source().replacen("tasks = 5", "tasks = 6", 1);
    let reply = http::put_text(&addr, "/v1/topology", "application/toml", &more);
    assert_eq!(reply.status, 200, "redeploy: {}", reply.text);
    wait_until("14 running instances after the change", CONVERGE, || {
        running(&addr) == 14
    });
}
