//! Change notification across a three-node ZooKeeper cluster: blocking queries wake fast after a
//! write on another node and time out after `wait` otherwise; hundreds of SSE watchers spread over
//! the nodes each get every change under their prefix in order, while ZooKeeper's watch count
//! (`wchs`) stays flat in the number of watchers.

use std::thread;
use std::time::{Duration, Instant};

use lathe_tests::http::{self, SseReader};
use lathe_tests::scenario::{
    assert_same_events, expect_user_events, metric_value, put_ok, zk_cluster,
};
use lathe_tests::wait::{try_wait_until, wait_until};
use serde_json::{json, Value};

/// How long a change may take to reach every node's replica.
const CONVERGE: Duration = Duration::from_secs(15);
/// How long to wait for a blocking query to show up in the subscriber gauge (best effort: the
/// measurement below stays valid without it).
const SUBSCRIBED: Duration = Duration::from_secs(5);
/// The most a blocking query may take to wake after a write on another node (kept loose for a
/// loaded 2-core CI).
const WAKE_LIMIT: Duration = Duration::from_secs(1);
const BLOCKING_ROUNDS: usize = 5;
/// SSE watchers: this many on each of the three nodes.
const WATCHERS_PER_NODE: usize = 100;
const WATCH_PREFIXES: [&str; 4] = ["/", "/w", "/w/a", "/w/b"];
const WRITES: usize = 50;
/// How long every watcher may take to receive every change.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(90);

/// `GET /v1/kv{key}` on `addr` once it shows `value`; returns the reply's `X-Lathe-Index`.
fn index_once_visible(addr: &str, key: &str, value: &Value) -> u64 {
    wait_until(&format!("{key} = {value} on {addr}"), CONVERGE, || {
        let reply = http::get_json(addr, &format!("/v1/kv{key}"));
        match (reply.status, reply.body.get("value"), reply.index()) {
            (200, Some(seen), Some(index)) if seen == value => Ok(index),
            _ => Err(format!("{} {}", reply.status, reply.text)),
        }
    })
}

fn subscribers(addr: &str) -> f64 {
    metric_value(addr, "lathe_registry_subscribers").unwrap_or(0.0)
}

#[test]
fn a_blocking_query_on_one_node_wakes_within_a_second_of_a_write_on_another() {
    let (_zk, cluster) = zk_cluster(3, "block");
    let (a, b) = (
        cluster.node(0).http_addr().to_string(),
        cluster.node(1).http_addr().to_string(),
    );
    let mut latencies = Vec::new();
    for round in 0..BLOCKING_ROUNDS {
        let key = format!("/block/k{round}");
        put_ok(&a, &key, &json!({"round": round, "step": 0}));
        let index = index_once_visible(&b, &key, &json!({"round": round, "step": 0}));
        let before = subscribers(&b);
        let query = {
            let (b, path) = (b.clone(), format!("/v1/kv{key}?index={index}&wait=30s"));
            thread::spawn(move || {
                let reply = http::get_json(&b, &path);
                (reply, Instant::now())
            })
        };
        let _ = try_wait_until(SUBSCRIBED, || subscribers(&b) > before);
        let written_at = Instant::now();
        let version = put_ok(&a, &key, &json!({"round": round, "step": 1}));
        let (reply, woke_at) = query.join().expect("the blocking query thread");
        assert!(
            woke_at >= written_at,
            "round {round}: the blocking query returned before any change: {} {}",
            reply.status,
            reply.text
        );
        let latency = woke_at - written_at;
        assert_eq!(reply.status, 200, "round {round}: {}", reply.text);
        assert_eq!(
            reply.body,
            json!({"key": key, "value": {"round": round, "step": 1}, "version": version}),
            "round {round}: the blocking query did not answer the new value"
        );
        assert!(
            reply.index().is_some_and(|i| i >= version),
            "round {round}: X-Lathe-Index {:?} below the change {version}",
            reply.index()
        );
        assert!(
            latency < WAKE_LIMIT,
            "round {round}: the blocking query on B woke {latency:?} after the write on A"
        );
        latencies.push(latency);
    }
    println!(
        "blocking query wake-up after a write on another node (PUT sent → GET answered): \
        {latencies:?}"
    );
}

#[test]
fn a_blocking_query_without_a_change_returns_after_wait() {
    let (_zk, cluster) = zk_cluster(2, "idle");
    let (a, b) = (
        cluster.node(0).http_addr().to_string(),
        cluster.node(1).http_addr().to_string(),
    );
    put_ok(&a, "/idle/key", &json!("still"));
    let index = index_once_visible(&b, "/idle/key", &json!("still"));
    let before = subscribers(&b);
    let query = {
        let b = b.clone();
        thread::spawn(move || {
            let started = Instant::now();
            let reply = http::get_json(&b, &format!("/v1/kv/idle/key?index={index}&wait=1s"));
            (reply, started.elapsed())
        })
    };
    // Changes elsewhere (a sibling, a key sharing the string prefix) must not wake it.
    let _ = try_wait_until(SUBSCRIBED, || subscribers(&b) > before);
    put_ok(&a, "/idle/other", &json!(1));
    put_ok(&a, "/idle/key2", &json!(2));
    let (reply, elapsed) = query.join().expect("the blocking query thread");
    println!("blocking query with wait=1s and no change returned after {elapsed:?}");
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["value"], json!("still"));
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(5),
        "wait=1s without a change returned after {elapsed:?}"
    );
}

/// Whether `key` is at or under `prefix`.
fn is_under(key: &str, prefix: &str) -> bool {
    prefix == "/" || key == prefix || key.starts_with(&format!("{prefix}/"))
}

#[test]
fn hundreds_of_sse_watchers_each_receive_every_change_in_order_and_zookeeper_watches_stay_flat() {
    let (zk, cluster) = zk_cluster(3, "fan");
    let addrs = cluster.http_addrs();
    let watches_without_watchers = zk.watch_count().expect("wchs");

    let mut watchers: Vec<(String, String, SseReader)> = (0..3 * WATCHERS_PER_NODE)
        .map(|i| {
            let addr = addrs[i % 3].clone();
            let prefix = WATCH_PREFIXES[(i / 3) % WATCH_PREFIXES.len()];
            let path = format!("/v1/watch{}", if prefix == "/" { "/" } else { prefix });
            let reader = SseReader::connect(&addr, &path);
            (addr, prefix.to_string(), reader)
        })
        .collect();
    let watches_with_watchers = zk.watch_count().expect("wchs");

    // A stream of writes to distinct keys under /w/a and /w/b, sent round-robin to the three nodes.
    let mut writes = Vec::with_capacity(WRITES);
    for i in 0..WRITES {
        let key = format!("/w/{}/k{i:02}", if i % 2 == 0 { "a" } else { "b" });
        let value = json!({"i": i, "via": i % 3});
        let version = put_ok(&addrs[i % 3], &key, &value);
        writes.push(json!({"key": key, "value": value, "version": version, "op": "put"}));
    }
    let versions: Vec<u64> = writes
        .iter()
        .map(|w| w["version"].as_u64().unwrap())
        .collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");

    let deadline = Instant::now() + DELIVERY_DEADLINE;
    let started = Instant::now();
    for (n, (addr, prefix, reader)) in watchers.iter_mut().enumerate() {
        let expected: Vec<Value> = writes
            .iter()
            .filter(|w| is_under(w["key"].as_str().unwrap(), prefix))
            .cloned()
            .collect();
        assert!(!expected.is_empty());
        let received = expect_user_events(
            reader,
            expected.len(),
            deadline.saturating_duration_since(Instant::now()),
        );
        assert_same_events(
            &received,
            &expected,
            &format!("watcher {n} on {addr} at {prefix}"),
        );
    }
    println!(
        "{} watchers got all their events {:?} after the last write",
        watchers.len(),
        started.elapsed()
    );
    let watches_after_writes = zk.watch_count().expect("wchs");
    println!(
        "zookeeper watches: {watches_without_watchers} without watchers, {watches_with_watchers} \
            with {} watchers, \
         {watches_after_writes} after the writes",
        watchers.len()
    );
    assert!(
        watches_without_watchers > 0,
        "zookeeper holds no watch at all: the registry does not watch it"
    );
    for (when, count) in [
        ("with the watchers", watches_with_watchers),
        ("after the writes", watches_after_writes),
    ] {
        assert!(
            count <= watches_without_watchers + addrs.len(),
            "zookeeper watches grew with the watchers: {watches_without_watchers} without, {count} \
                {when}"
        );
    }
    let open: f64 = addrs.iter().map(|a| subscribers(a)).sum();
    assert!(
        open >= watchers.len() as f64,
        "the nodes count {open} subscribers for {} open watchers",
        watchers.len()
    );
}
