//! Small building blocks shared by the integration tests: a ZooKeeper-backed cluster, registry
//! writes that must succeed, the entries under a prefix, one metric's value, and the shape of error
//! answers.
//!
//! ```no_run
//! use lathe_tests::scenario::{entries_under, put_ok, zk_cluster};
//!
//! let (_zk, cluster) = zk_cluster(3, "zk");
//! let version = put_ok(cluster.node(0).http_addr(), "/a/b", &serde_json::json!({"x": 1}));
//! let entries = entries_under(cluster.node(0).http_addr(), "/a");
//! assert_eq!(entries["/a/b"].1, version);
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::http::{self, Reply, SseReader};
use crate::node::{Cluster, NodeBuilder};
use crate::zk::ZkServer;

/// The cookie the test clusters share.
pub const TEST_COOKIE: &str = "lathe-test-cookie";

/// Starts a fresh ZooKeeper and `n` nodes named `<name>-<i>` using it (all joined to the first, all
/// alive).
pub fn zk_cluster(n: usize, name: &str) -> (ZkServer, Cluster) {
    zk_cluster_with(n, NodeBuilder::new().name(name))
}

/// Like [`zk_cluster`], from a template (extra flags, environment).
pub fn zk_cluster_with(n: usize, template: NodeBuilder) -> (ZkServer, Cluster) {
    let zk = ZkServer::start().unwrap_or_else(|err| panic!("cannot start zookeeper: {err:#}"));
    let template = template.zookeeper(zk.connect_string()).cookie(TEST_COOKIE);
    let cluster = Cluster::start(n, template);
    (zk, cluster)
}

/// Whether `key` lies under `/lathe`, which Lathe writes to itself (scheduler leader, members,
/// ...).
pub fn is_reserved(key: &str) -> bool {
    key == "/lathe" || key.starts_with("/lathe/")
}

/// The registry entries of a tree without Lathe's own state (keys under `/lathe`).
pub fn without_reserved(entries: BTreeMap<String, (Value, u64)>) -> BTreeMap<String, (Value, u64)> {
    entries
        .into_iter()
        .filter(|(key, _)| !is_reserved(key))
        .collect()
}

/// The next `count` events of `reader` that are not changes of Lathe's own state (keys under
/// `/lathe`, which a watcher of `/` also receives); panics with those received if they do not all
/// come within `timeout`.
pub fn expect_user_events(reader: &mut SseReader, count: usize, timeout: Duration) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    let mut events = Vec::with_capacity(count);
    while events.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        let batch = reader.expect_events(1, left.max(Duration::from_millis(1)));
        let event = batch.into_iter().next().expect("one event");
        if !event["key"].as_str().is_some_and(is_reserved) {
            events.push(event);
        }
    }
    events
}

/// Asserts that two event sequences are equal; on a difference, names the first differing position,
/// the event expected and received there, and the lengths (whole sequences are too long to read in
/// a panic message).
pub fn assert_same_events(received: &[Value], expected: &[Value], what: &str) {
    if received == expected {
        return;
    }
    let at = received
        .iter()
        .zip(expected)
        .position(|(r, e)| r != e)
        .unwrap_or(received.len().min(expected.len()));
    let show = |events: &[Value]| -> String {
        events
            .iter()
            .skip(at.saturating_sub(1))
            .take(4)
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n    ")
    };
    panic!(
        "{what}: {} events received, {} expected; first difference at #{at}\n  received from \
            #{}:\n    {}\n  \
         expected from #{}:\n    {}",
        received.len(),
        expected.len(),
        at.saturating_sub(1),
        show(received),
        at.saturating_sub(1),
        show(expected)
    );
}

/// The `version` of a `{"version": N}` answer.
pub fn version_of(reply: &Reply) -> Option<u64> {
    reply.body.get("version").and_then(Value::as_u64)
}

/// `PUT /v1/kv{key}` that must answer 200 with a version; returns the version.
pub fn put_ok(addr: &str, key: &str, value: &Value) -> u64 {
    let reply = http::put_json(addr, &format!("/v1/kv{key}"), value);
    assert_eq!(
        reply.status, 200,
        "PUT {key} on {addr} answered {}: {}",
        reply.status, reply.text
    );
    version_of(&reply)
        .unwrap_or_else(|| panic!("PUT {key} on {addr}: no version in {}", reply.text))
}

/// The entries at or under `prefix` on `addr` (`GET /v1/kv{prefix}?recurse=true`): key → (value,
/// version).
pub fn entries_under(addr: &str, prefix: &str) -> BTreeMap<String, (Value, u64)> {
    try_entries_under(addr, prefix).unwrap_or_else(|err| panic!("{err}"))
}

/// Like [`entries_under`], with transport errors and non-200 answers as `Err` (for polling).
pub fn try_entries_under(
    addr: &str,
    prefix: &str,
) -> Result<BTreeMap<String, (Value, u64)>, String> {
    let path = format!("/v1/kv{prefix}?recurse=true");
    let reply = http::try_get_json(addr, &path)?;
    if reply.status != 200 {
        return Err(format!(
            "GET {path} on {addr} answered {}: {}",
            reply.status, reply.text
        ));
    }
    let entries = reply
        .body
        .as_array()
        .ok_or_else(|| format!("GET {path} on {addr}: not an array: {}", reply.text))?;
    entries
        .iter()
        .map(|entry| {
            let key = entry.get("key").and_then(Value::as_str);
            let version = entry.get("version").and_then(Value::as_u64);
            match (key, version, entry.get("value")) {
                (Some(key), Some(version), Some(value)) => {
                    Ok((key.to_string(), (value.clone(), version)))
                }
                _ => Err(format!("GET {path} on {addr}: bad entry {entry}")),
            }
        })
        .collect()
}

/// The value of an unlabelled metric (or the sum over its labels) from `GET /metrics`.
pub fn metric_value(addr: &str, name: &str) -> Result<f64, String> {
    let reply = http::try_get_json(addr, "/metrics")?;
    let mut found = None;
    for line in reply.text.lines().filter(|line| !line.starts_with('#')) {
        let (series, value) = match line.rsplit_once(' ') {
            Some(split) => split,
            None => continue,
        };
        let metric = series.split('{').next().unwrap_or(series);
        if metric == name {
            let value: f64 = value.parse().map_err(|_| format!("bad sample {line:?}"))?;
            *found.get_or_insert(0.0) += value;
        }
    }
    found.ok_or_else(|| format!("no metric {name} on {addr}"))
}

/// Asserts that `reply` is an error answer: the status, and a JSON body `{"error": "<non-empty>"}`;
/// returns the message.
pub fn assert_error(reply: &Reply, status: u16, what: &str) -> String {
    assert_eq!(
        reply.status, status,
        "{what}: expected {status}, got {}: {}",
        reply.status, reply.text
    );
    let message = reply.error().unwrap_or_else(|| {
        panic!(
            "{what}: the {status} body is not {{\"error\": \"...\"}}: {:?}",
            reply.text
        )
    });
    assert!(
        !message.trim().is_empty(),
        "{what}: empty error message: {}",
        reply.text
    );
    message.to_string()
}

/// The scheduler leader's name as the node at `addr` sees it, if exactly one alive member is
/// marked leader in `/v1/members`.
pub fn leader(addr: &str) -> Option<String> {
    let reply = http::try_get_json(addr, "/v1/members").ok()?;
    let leaders: Vec<String> = reply.body["members"]
        .as_array()?
        .iter()
        .filter(|m| m["leader"] == true && m["status"] == "alive")
        .filter_map(|m| m["name"].as_str().map(str::to_string))
        .collect();
    (leaders.len() == 1).then(|| leaders[0].clone())
}
