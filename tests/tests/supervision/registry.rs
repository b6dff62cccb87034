//! Registry shards killed through the failure drill (`POST /v1/actors/kill`) on a real node over a
//! real ZooKeeper, during a stream of writes with a watcher open: each shard restarts (counted in
//! the tree and in `lathe_actor_restarts_total`), writes carry on, and the watcher receives every
//! acknowledged write, in order, as individual changes — no gap and no snapshot.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use lathe_tests::http::{self, SseReader};
use lathe_tests::node::{NodeBuilder, NodeProcess};
use lathe_tests::scenario::{entries_under, put_ok, version_of, zk_cluster_with};
use lathe_tests::wait::wait_until;
use serde_json::{json, Value};

const CONVERGE: Duration = Duration::from_secs(30);
/// The watched prefix: of depth two, so one shard owns it and serves its watchers.
const PREFIX: &str = "/drill/shards";
const SHARDS: usize = 4;
/// Every shard is killed this often (8 restarts stay below the registry supervisor's intensity
/// of 20 in 10 s).
const ROUNDS: u64 = 2;
/// Acknowledged writes between two kills: few, so that kills land on writes in flight.
const WRITES_BETWEEN_KILLS: usize = 3;

/// One writer thread: PUTs new keys under [`PREFIX`] one after another until stopped, and records
/// the writes answered 200 (key, value, version) and the keys of the writes that failed.
struct Writer {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<(String, Value, u64)>>>,
    failed: Arc<Mutex<Vec<String>>>,
    thread: JoinHandle<()>,
}

impl Writer {
    fn start(addr: &str) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let (flag, acked, failures, addr) =
            (stop.clone(), acks.clone(), failed.clone(), addr.to_string());
        let thread = thread::spawn(move || {
            let mut i = 0;
            while !flag.load(Ordering::SeqCst) {
                let key = format!("{PREFIX}/k{i:05}");
                let value = json!({ "i": i });
                let path = format!("/v1/kv{key}");
                match http::try_request("PUT", &addr, &path, Some(&value.to_string())) {
                    Ok(reply) if reply.status == 200 => {
                        let version = version_of(&reply).expect("a version");
                        acked.lock().unwrap().push((key, value, version));
                    }
                    _ => failures.lock().unwrap().push(key),
                }
                i += 1;
            }
        });
        Writer {
            stop,
            acks,
            failed,
            thread,
        }
    }

    fn acked(&self) -> usize {
        self.acks.lock().unwrap().len()
    }

    fn wait_for_more(&self, more: usize) {
        let target = self.acked() + more;
        wait_until(&format!("{target} acknowledged writes"), CONVERGE, || {
            let acked = self.acked();
            (acked >= target).then_some(()).ok_or(acked)
        });
    }

    fn finish(self) -> (Vec<(String, Value, u64)>, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("the writer thread");
        let acks = self.acks.lock().unwrap().clone();
        let failed = self.failed.lock().unwrap().clone();
        (acks, failed)
    }
}

/// The shard at `path` in the node's tree: (status, restarts).
fn shard_state(node: &NodeProcess, path: &str) -> Option<(String, u64)> {
    let reply = http::try_get_json(node.http_addr(), &format!("/v1/tree?node={}", node.name()));
    let tree = reply.ok()?.body["tree"].clone();
    let registry = tree["children"]
        .as_array()?
        .iter()
        .find(|a| a["path"] == "node/registry")?;
    let shard = registry["children"]
        .as_array()?
        .iter()
        .find(|a| a["path"] == path)?;
    Some((
        shard["status"].as_str()?.to_string(),
        shard["restarts"].as_u64()?,
    ))
}

fn shard_restarts_metric(node: &NodeProcess) -> Option<f64> {
    let metrics = http::try_get_json(node.http_addr(), "/metrics").ok()?.text;
    metrics.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let ours = series.starts_with("lathe_actor_restarts_total{")
            && series.contains("kind=\"registry-shard\"");
        ours.then(|| value.parse().ok()).flatten()
    })
}

#[test]
fn killed_registry_shards_restart_and_their_watchers_miss_no_acknowledged_write() {
    let (_zk, cluster) = zk_cluster_with(1, NodeBuilder::new().name("shards").enable_chaos());
    let node = cluster.node(0);
    let addr = node.http_addr();
    let start = put_ok(addr, &format!("{PREFIX}/start"), &json!("start"));
    let mut watcher = SseReader::connect(addr, &format!("/v1/watch{PREFIX}?index={start}"));

    let writer = Writer::start(addr);
    // Every shard in turn, so the one that owns the watched prefix is among them.
    for round in 1..=ROUNDS {
        for shard in 0..SHARDS {
            writer.wait_for_more(WRITES_BETWEEN_KILLS);
            let path = format!("node/registry/shard-{shard}");
            let reply = http::post_json(addr, "/v1/actors/kill", &json!({ "path": path }));
            assert_eq!(reply.status, 200, "kill {path}: {}", reply.text);
            assert_eq!(reply.body["kind"], "registry-shard");
            wait_until(&format!("{path} running again"), CONVERGE, || {
                shard_state(node, &path) == Some(("running".to_string(), round))
            });
        }
    }
    writer.wait_for_more(WRITES_BETWEEN_KILLS);
    let (acks, failed) = writer.finish();
    let restarts = (ROUNDS * SHARDS as u64) as f64;
    assert_eq!(shard_restarts_metric(node), Some(restarts));

    // The watcher: individual changes in version order, up to the last acknowledged write.
    let last = acks.last().expect("acknowledged writes").2;
    let mut events: Vec<Value> = Vec::new();
    while events.last().and_then(|e| e["version"].as_u64()) < Some(last) {
        let event = watcher.expect_event(CONVERGE);
        assert_eq!(event["op"], "put", "a change, not a snapshot: {event}");
        events.push(event);
    }
    let versions: Vec<u64> = events
        .iter()
        .filter_map(|e| e["version"].as_u64())
        .collect();
    assert!(
        versions.windows(2).all(|pair| pair[0] < pair[1]),
        "versions in order: {versions:?}"
    );
    let mut unseen = acks.iter();
    let mut next = unseen.next();
    for event in &events {
        let key = event["key"].as_str().unwrap_or_default();
        match next {
            Some((ack_key, value, version)) if ack_key == key => {
                assert_eq!(
                    (&event["value"], event["version"].as_u64()),
                    (value, Some(*version))
                );
                next = unseen.next();
            }
            // A write that failed (its shard died under it) may still have happened.
            _ => assert!(
                failed.iter().any(|f| f == key),
                "an event for a write neither acknowledged next nor failed: {event}"
            ),
        }
    }
    assert!(
        next.is_none(),
        "acknowledged write never received: {next:?}"
    );

    // And the registry holds every acknowledged write.
    let state = entries_under(addr, PREFIX);
    for (key, value, version) in &acks {
        assert_eq!(state.get(key), Some(&(value.clone(), *version)), "{key}");
    }
}
