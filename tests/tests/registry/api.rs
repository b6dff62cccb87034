//! The registry's REST semantics on a three-node ZooKeeper cluster: CRUD, CAS, recursive reads and
//! deletes, increasing versions (ZooKeeper zxids), `X-Lathe-Index` (also at least the version a
//! write answers, in both store modes), and many concurrent CAS writers on one version from
//! different nodes.

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use lathe_tests::http::{self, Reply, SseReader};
use lathe_tests::node::NodeBuilder;
use lathe_tests::scenario::{
    assert_error, entries_under, put_ok, version_of, without_reserved, zk_cluster,
};
use lathe_tests::wait::wait_until;
use serde_json::{json, Value};

/// How long a change may take to reach the replica of every node.
const CONVERGE: Duration = Duration::from_secs(15);
const EVENT_DEADLINE: Duration = Duration::from_secs(15);
/// Concurrent writers per node in the CAS races.
const WRITERS_PER_NODE: usize = 8;
/// Sequential writes checked for an `X-Lathe-Index` below their version.
const WRITES_FOR_INDEX_RACE: usize = 300;

/// The `X-Lathe-Index` of a reply, which must be there.
fn index_of(reply: &Reply, what: &str) -> u64 {
    reply
        .index()
        .unwrap_or_else(|| panic!("{what}: no X-Lathe-Index header: {:?}", reply.headers))
}

/// Waits until `GET /v1/kv{key}` on `addr` answers `value` at `version`.
fn wait_for_entry(addr: &str, key: &str, value: &Value, version: u64) {
    let expected = json!({"key": key, "value": value, "version": version});
    wait_until(
        &format!("{key} = {value} at version {version} on {addr}"),
        CONVERGE,
        || {
            let reply = http::get_json(addr, &format!("/v1/kv{key}"));
            if reply.status == 200 && reply.body == expected {
                Ok(())
            } else {
                Err(format!("{} {}", reply.status, reply.text))
            }
        },
    );
}

/// Waits until `GET /v1/kv{key}` on `addr` answers 404.
fn wait_for_absence(addr: &str, key: &str) {
    wait_until(&format!("{key} to be absent on {addr}"), CONVERGE, || {
        let reply = http::get_json(addr, &format!("/v1/kv{key}"));
        if reply.status == 404 {
            Ok(())
        } else {
            Err(format!("{} {}", reply.status, reply.text))
        }
    });
}

#[test]
fn crud_cas_and_recurse_with_increasing_versions_on_every_node() {
    let (zk, cluster) = zk_cluster(3, "crud");
    let addrs = cluster.http_addrs();
    let (a, b) = (addrs[0].as_str(), addrs[1].as_str());
    let mut versions = Vec::new();

    // Absent key: 404 with an error, and the index header.
    let missing = http::get_json(a, "/v1/kv/crud/a");
    assert_error(&missing, 404, "GET of a missing key");
    index_of(&missing, "GET of a missing key");

    // Create, read everywhere, update.
    let created = http::put_json(a, "/v1/kv/crud/a", &json!({"x": 1}));
    assert_eq!(created.status, 200, "{}", created.text);
    let v1 = version_of(&created).expect("a version");
    // Present here; its value against the version is checked by
    // a_write_answers_an_index_at_least_its_own_version.
    index_of(&created, "PUT");
    versions.push(v1);
    for addr in &addrs {
        wait_for_entry(addr, "/crud/a", &json!({"x": 1}), v1);
        index_of(&http::get_json(addr, "/v1/kv/crud/a"), "GET");
    }
    let v2 = put_ok(b, "/crud/a", &json!([1, "two", null, 3.5]));
    versions.push(v2);
    wait_for_entry(a, "/crud/a", &json!([1, "two", null, 3.5]), v2);

    // CAS create-only: refused on an existing key (body unchanged), accepted on a new one.
    let refused = http::put_json(a, "/v1/kv/crud/a?cas=0", &json!("clobber"));
    assert_error(&refused, 409, "PUT ?cas=0 on an existing key");
    let v3 = version_of(&http::put_json(b, "/v1/kv/crud/b?cas=0", &json!("fresh")))
        .expect("PUT ?cas=0 on a new key answers a version");
    versions.push(v3);
    let again = http::put_json(a, "/v1/kv/crud/b?cas=0", &json!("again"));
    assert_error(&again, 409, "a second PUT ?cas=0");

    // CAS on the exact version: accepted; on a stale one: 409 and nothing changes.
    let cas = http::put_json(a, &format!("/v1/kv/crud/a?cas={v2}"), &json!("swapped"));
    assert_eq!(cas.status, 200, "PUT ?cas={v2}: {}", cas.text);
    let v4 = version_of(&cas).expect("a version");
    versions.push(v4);
    let stale = http::put_json(b, &format!("/v1/kv/crud/a?cas={v2}"), &json!("stale"));
    assert_error(&stale, 409, "PUT with a stale cas");
    let stale_delete = http::delete(b, &format!("/v1/kv/crud/a?cas={v2}"));
    assert_error(&stale_delete, 409, "DELETE with a stale cas");
    for addr in &addrs {
        wait_for_entry(addr, "/crud/a", &json!("swapped"), v4);
        wait_for_entry(addr, "/crud/b", &json!("fresh"), v3);
    }

    // Delete with the right cas, then a plain delete; both keys gone everywhere.
    let deleted = http::delete(b, &format!("/v1/kv/crud/a?cas={v4}"));
    assert_eq!(deleted.status, 200, "DELETE ?cas={v4}: {}", deleted.text);
    versions.push(version_of(&deleted).expect("DELETE answers a version"));
    index_of(&deleted, "DELETE");
    let deleted_b = http::delete(a, "/v1/kv/crud/b");
    assert_eq!(deleted_b.status, 200, "DELETE: {}", deleted_b.text);
    versions.push(version_of(&deleted_b).expect("DELETE answers a version"));
    for addr in &addrs {
        wait_for_absence(addr, "/crud/a");
        wait_for_absence(addr, "/crud/b");
    }
    // A deleted key can be created again with cas=0.
    let reborn = http::put_json(a, "/v1/kv/crud/a?cas=0", &json!("reborn"));
    assert_eq!(
        reborn.status, 200,
        "PUT ?cas=0 after a delete: {}",
        reborn.text
    );
    versions.push(version_of(&reborn).expect("a version"));

    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "versions of successive writes do not increase: {versions:?}"
    );
    // Versions are ZooKeeper zxids: the last one is at most the server's zxid, in the same epoch.
    let srvr = zk.four_letter("srvr").expect("srvr");
    let zxid = srvr
        .lines()
        .find_map(|l| l.strip_prefix("Zxid: 0x"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no zxid in {srvr:?}"));
    let last = *versions.last().unwrap();
    assert!(
        last <= zxid && last >> 32 == zxid >> 32,
        "version {last:#x} is not a zxid of this zookeeper (at {zxid:#x})"
    );
}

#[test]
fn recursive_reads_and_deletes_cover_exactly_the_subtree() {
    let (_zk, cluster) = zk_cluster(3, "tree");
    let addrs = cluster.http_addrs();
    let mut written = BTreeMap::new();
    for (i, key) in ["/t/x", "/t/y/z", "/t/y/w", "/t/y/w/deep", "/tx", "/u/t"]
        .iter()
        .enumerate()
    {
        let value = json!({"i": i});
        let version = put_ok(&addrs[i % 3], key, &value);
        written.insert(key.to_string(), (value, version));
    }
    let under_t: BTreeMap<_, _> = written
        .iter()
        .filter(|(k, _)| k.starts_with("/t/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for addr in &addrs {
        wait_until(&format!("/t's subtree on {addr}"), CONVERGE, || {
            let seen = entries_under(addr, "/t");
            if seen == under_t {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        });
        let listed = http::get_json(addr, "/v1/kv/t?recurse=true");
        index_of(&listed, "GET ?recurse=true");
        assert_eq!(
            without_reserved(entries_under(addr, "/")),
            written,
            "the whole tree on {addr}"
        );
    }

    // One recursive delete: every key under /t goes, with one version, seen by a watcher as delete
    // events.
    let mut watcher = SseReader::connect(&addrs[2], "/v1/watch/t");
    let deleted = http::delete(&addrs[0], "/v1/kv/t?recurse=true");
    assert_eq!(
        deleted.status, 200,
        "DELETE ?recurse=true: {}",
        deleted.text
    );
    let delete_version = version_of(&deleted).expect("a recursive DELETE answers a version");
    let latest = written.values().map(|(_, v)| *v).max().unwrap();
    assert!(
        delete_version > latest,
        "delete version {delete_version} <= {latest}"
    );
    let events = watcher.expect_events(under_t.len(), EVENT_DEADLINE);
    let mut deleted_keys: Vec<String> = events
        .iter()
        .map(|e| {
            assert_eq!(e["op"], "delete", "event {e}");
            assert_eq!(
                e["version"].as_u64(),
                Some(delete_version),
                "one recursive delete is one version: {e}"
            );
            e["key"].as_str().expect("a key").to_string()
        })
        .collect();
    deleted_keys.sort();
    assert_eq!(deleted_keys, under_t.keys().cloned().collect::<Vec<_>>());
    for addr in &addrs {
        wait_until(&format!("/t to be empty on {addr}"), CONVERGE, || {
            entries_under(addr, "/t").is_empty()
        });
        for key in under_t.keys() {
            wait_for_absence(addr, key);
        }
        // Siblings with a common string prefix (/tx) and other subtrees stay.
        let rest = without_reserved(entries_under(addr, "/"));
        let expected: BTreeMap<_, _> = written
            .iter()
            .filter(|(k, _)| !k.starts_with("/t/"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(rest, expected, "what is left on {addr}");
    }
}

/// Every writer sends `PUT path?cas=V` at once (3 nodes × 8 threads); returns the (status, body) of
/// each.
fn cas_race(addrs: &[String], path: &str, cas: u64) -> Vec<(usize, Reply)> {
    let writers = addrs.len() * WRITERS_PER_NODE;
    let barrier = Arc::new(Barrier::new(writers));
    let handles: Vec<_> = (0..writers)
        .map(|writer| {
            let addr = addrs[writer % addrs.len()].clone();
            let url = format!("/v1/kv{path}?cas={cas}");
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                (
                    writer,
                    http::put_json(&addr, &url, &json!({"writer": writer})),
                )
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("a writer thread"))
        .collect()
}

/// Checks that exactly one writer won, every other got 409, and every node ends with the winner's
/// value.
fn check_one_winner(addrs: &[String], key: &str, replies: &[(usize, Reply)]) -> u64 {
    let winners: Vec<&(usize, Reply)> = replies.iter().filter(|(_, r)| r.status == 200).collect();
    let statuses: Vec<u16> = replies.iter().map(|(_, r)| r.status).collect();
    assert_eq!(
        winners.len(),
        1,
        "{key}: expected exactly one 200, statuses: {statuses:?}"
    );
    for (writer, reply) in replies.iter().filter(|(_, r)| r.status != 200) {
        assert_error(reply, 409, &format!("{key}: losing writer {writer}"));
    }
    let (winner, reply) = winners[0];
    let version = version_of(reply).expect("the winner's version");
    for addr in addrs {
        wait_for_entry(addr, key, &json!({"writer": winner}), version);
    }
    version
}

#[test]
fn concurrent_cas_writers_from_every_node_exactly_one_wins() {
    let (_zk, cluster) = zk_cluster(3, "race");
    let addrs = cluster.http_addrs();

    // Create-only race on a fresh key.
    let replies = cas_race(&addrs, "/race/fresh", 0);
    check_one_winner(&addrs, "/race/fresh", &replies);

    // Races on one existing version, several rounds, each on the previous winner's version.
    let mut version = put_ok(&addrs[0], "/race/key", &json!("start"));
    for addr in &addrs {
        wait_for_entry(addr, "/race/key", &json!("start"), version);
    }
    for round in 0..3 {
        let replies = cas_race(&addrs, "/race/key", version);
        let next = check_one_winner(&addrs, "/race/key", &replies);
        assert!(next > version, "round {round}: version {next} <= {version}");
        version = next;
    }
}

/// A node acknowledges a write once its replica has it, so the `X-Lathe-Index` of the answer (the
/// node's index) is at least the write's version, and a blocking query from that index waits for
/// the next change rather than waking on the client's own write. Many writes, to catch a race
/// between the two.
#[test]
fn a_write_answers_an_index_at_least_its_own_version() {
    let (_zk, cluster) = zk_cluster(3, "idx");
    check_write_indexes(&cluster.http_addrs());
}

/// The same with the embedded store.
#[test]
fn a_write_answers_an_index_at_least_its_own_version_in_embedded_mode() {
    let node = NodeBuilder::new().name("idx-embedded").start();
    check_write_indexes(&[node.http_addr().to_string()]);
}

fn check_write_indexes(addrs: &[String]) {
    let mut behind = Vec::new();
    for i in 0..WRITES_FOR_INDEX_RACE {
        let addr = &addrs[i % addrs.len()];
        let reply = http::put_json(addr, &format!("/v1/kv/idx/k{}", i % 7), &json!(i));
        assert_eq!(reply.status, 200, "{}", reply.text);
        let version = version_of(&reply).expect("a version");
        let index = index_of(&reply, "PUT");
        if index < version {
            behind.push(format!(
                "write {i} on {addr}: version {version}, X-Lathe-Index {index}"
            ));
        }
    }
    assert!(
        behind.is_empty(),
        "{} of {WRITES_FOR_INDEX_RACE} writes answered an index below their own version: \
            {behind:?}",
        behind.len()
    );
}
