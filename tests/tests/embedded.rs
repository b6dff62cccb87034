//! The embedded registry (no ZooKeeper): an acknowledged write survives SIGKILL and restart of the
//! founding node, and nodes that `--join` the founder read, write and watch its registry over the
//! cluster.

use std::time::Duration;

use lathe_tests::http::{self, SseReader};
use lathe_tests::node::{Cluster, NodeBuilder};
use lathe_tests::scenario::{entries_under, put_ok, try_entries_under, version_of, TEST_COOKIE};
use lathe_tests::wait::wait_until;
use serde_json::{json, Value};

/// How long a change may take to reach every node.
const CONVERGE: Duration = Duration::from_secs(20);
const EVENT_DEADLINE: Duration = Duration::from_secs(20);

#[test]
fn an_acknowledged_write_survives_sigkill_and_restart_of_the_node() {
    let mut node = NodeBuilder::new().name("solo").cookie(TEST_COOKIE).start();
    let addr = node.http_addr().to_string();
    let health = node.get_json("/v1/health");
    assert_eq!(
        health.body["store"], "embedded",
        "not the embedded store: {}",
        health.text
    );
    let mut acked = Vec::new();
    for i in 0..20 {
        let key = format!("/durable/k{i:02}");
        let value = json!({"i": i, "payload": "x".repeat(i * 10)});
        let version = put_ok(&addr, &key, &value);
        acked.push((key, value, version));
    }
    // A delete and a recursive delete are acknowledged writes too.
    put_ok(&addr, "/durable/gone/a", &json!(1));
    put_ok(&addr, "/durable/gone/b", &json!(2));
    assert_eq!(
        http::delete(&addr, "/v1/kv/durable/gone?recurse=true").status,
        200
    );
    let deleted = http::delete(&addr, "/v1/kv/durable/k00");
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    let last_version = version_of(&deleted).expect("a version");
    acked.remove(0);
    let before = entries_under(&addr, "/durable");

    node.kill();
    node.restart();

    let after = entries_under(&addr, "/durable");
    assert_eq!(after, before, "the registry after SIGKILL and restart");
    for (key, value, version) in &acked {
        assert_eq!(
            after.get(key),
            Some(&(value.clone(), *version)),
            "{key} after the restart"
        );
    }
    for key in ["/durable/k00", "/durable/gone/a", "/durable/gone/b"] {
        let reply = http::get_json(&addr, &format!("/v1/kv{key}"));
        assert_eq!(reply.status, 404, "deleted {key} is back: {}", reply.text);
    }
    // The index goes on from where it was: a new write gets a higher version.
    let next = put_ok(&addr, "/durable/after", &json!("restart"));
    assert!(
        next > last_version,
        "version {next} after the restart is not above {last_version}"
    );
}

#[test]
fn joined_nodes_read_write_and_watch_the_founders_embedded_registry() {
    let cluster = Cluster::start(3, NodeBuilder::new().name("emb").cookie(TEST_COOKIE));
    let addrs = cluster.http_addrs();
    let (founder, joined_a, joined_b) = (&addrs[0], &addrs[1], &addrs[2]);

    let mut watcher_on_joined = SseReader::connect(joined_b, "/v1/watch/shared");
    let mut watcher_on_founder = SseReader::connect(founder, "/v1/watch/shared");

    // A write on a joined node is readable on every node.
    let v1 = put_ok(joined_a, "/shared/from-joined", &json!({"by": "joined"}));
    // A write on the founder reaches the watcher of a joined node.
    let v2 = put_ok(founder, "/shared/from-founder", &json!({"by": "founder"}));
    // CAS through a joined node is checked against the founder's store.
    let stale = http::put_json(
        joined_b,
        "/v1/kv/shared/from-founder?cas=1",
        &json!("stale"),
    );
    assert_eq!(
        stale.status, 409,
        "a stale CAS via a joined node: {}",
        stale.text
    );
    let v3 = put_ok(joined_b, "/shared/from-joined-b", &json!([1, 2, 3]));
    assert!(v1 < v2 && v2 < v3, "versions {v1}, {v2}, {v3}");

    let expected: Vec<Value> = vec![
        json!({"key": "/shared/from-joined", "value": {"by": "joined"}, "version": v1,
               "op": "put"}),
        json!({"key": "/shared/from-founder", "value": {"by": "founder"}, "version": v2,
               "op": "put"}),
        json!({"key": "/shared/from-joined-b", "value": [1, 2, 3], "version": v3, "op": "put"}),
    ];
    for addr in &addrs {
        wait_until(&format!("every write readable on {addr}"), CONVERGE, || {
            try_entries_under(addr, "/shared").and_then(|entries| {
                if entries.len() == 3
                    && entries["/shared/from-joined"] == (json!({"by": "joined"}), v1)
                    && entries["/shared/from-founder"] == (json!({"by": "founder"}), v2)
                    && entries["/shared/from-joined-b"] == (json!([1, 2, 3]), v3)
                {
                    Ok(())
                } else {
                    Err(format!("{entries:?}"))
                }
            })
        });
    }
    assert_eq!(
        watcher_on_joined.expect_events(3, EVENT_DEADLINE),
        expected,
        "the watcher on a joined node"
    );
    assert_eq!(
        watcher_on_founder.expect_events(3, EVENT_DEADLINE),
        expected,
        "the watcher on the founder"
    );
    let deleted = http::delete(joined_a, "/v1/kv/shared/from-founder");
    assert_eq!(
        deleted.status, 200,
        "DELETE via a joined node: {}",
        deleted.text
    );
    let event = watcher_on_joined.expect_event(EVENT_DEADLINE);
    assert_eq!(event["op"], "delete", "{event}");
    assert_eq!(event["key"], "/shared/from-founder", "{event}");
    let founder_reply = http::get_json(founder, "/v1/kv/shared/from-founder");
    assert_eq!(founder_reply.status, 404, "{}", founder_reply.text);
}

/// README: while the founding node is down, joined nodes serve reads and watches from their
/// replicas and answer writes with 503; when it comes back (same `--bind` and `--data-dir`) they
/// re-sync and their watchers get what changed.
#[test]
fn joined_nodes_ride_out_a_restart_of_the_founder() {
    let mut cluster = Cluster::start(3, NodeBuilder::new().name("ride").cookie(TEST_COOKIE));
    let addrs = cluster.http_addrs();
    let (founder, joined) = (addrs[0].clone(), addrs[1].clone());
    let before_version = put_ok(&joined, "/ride/before", &json!("before"));
    for addr in &addrs {
        wait_until(&format!("/ride/before on {addr}"), CONVERGE, || {
            try_entries_under(addr, "/ride").is_ok_and(|e| e.len() == 1)
        });
    }
    let mut watcher =
        SseReader::connect(&joined, &format!("/v1/watch/ride?index={before_version}"));

    cluster.node_mut(0).kill();
    // Reads keep working from the replica; writes answer 503.
    let read = http::get_json(&joined, "/v1/kv/ride/before");
    assert_eq!(
        read.status, 200,
        "a read on a joined node with the founder down: {}",
        read.text
    );
    assert_eq!(read.body["value"], "before");
    let refused = wait_until("a write via a joined node to answer 503", CONVERGE, || {
        let reply = http::put_json(&joined, "/v1/kv/ride/during", &json!("during"));
        match reply.status {
            503 => Ok(reply),
            _ => Err(format!("{} {}", reply.status, reply.text)),
        }
    });
    assert!(refused.error().is_some(), "{}", refused.text);

    cluster.node_mut(0).restart();
    let after_version = put_ok(&founder, "/ride/after", &json!("after"));
    // Writes through the joined node work again by themselves.
    let again = wait_until(
        "a write via a joined node to succeed again",
        CONVERGE,
        || {
            let reply = http::put_json(&joined, "/v1/kv/ride/again", &json!("again"));
            match reply.status {
                200 => Ok(version_of(&reply).expect("a version")),
                _ => Err(format!("{} {}", reply.status, reply.text)),
            }
        },
    );
    assert!(before_version < after_version && after_version < again);
    let mut seen = Vec::new();
    wait_until(
        "the joined node's watcher to get what changed",
        CONVERGE,
        || {
            while let Some(event) = watcher.next_event(Duration::from_millis(100)) {
                seen.push(event);
            }
            let keys: Vec<&str> = seen
                .iter()
                .flat_map(|e| match e["op"].as_str() {
                    Some("snapshot") => e["entries"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|x| x["key"].as_str())
                                .collect::<Vec<_>>()
                        })
                        .unwrap_or_default(),
                    _ => e["key"].as_str().into_iter().collect(),
                })
                .collect();
            (keys.contains(&"/ride/after") && keys.contains(&"/ride/again"))
                .then_some(())
                .ok_or(keys.join(","))
        },
    );
    assert!(
        seen.iter().all(|e| e["key"] != "/ride/during"),
        "a write refused with 503 reached a watcher: {seen:?}"
    );
    cluster.wait_all_alive(lathe_tests::node::MEMBERSHIP_DEADLINE);
    for addr in &addrs {
        wait_until(
            &format!("the re-synced registry on {addr}"),
            CONVERGE,
            || {
                try_entries_under(addr, "/ride").is_ok_and(|e| {
                    e.keys().cloned().collect::<Vec<_>>()
                        == ["/ride/after", "/ride/again", "/ride/before"]
                })
            },
        );
    }
}
