//! The registry through failures, with real processes: a node SIGKILLed during a stream of writes
//! (every acknowledged write kept and delivered in order to the live nodes' watchers; the restarted
//! node rejoins and its watchers resume from an index with no gap), and a ZooKeeper restart under
//! load (data intact, writes resume).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use lathe_tests::http::{self, SseReader};
use lathe_tests::node::MEMBERSHIP_DEADLINE;
use lathe_tests::scenario::{
    assert_same_events, expect_user_events, try_entries_under, version_of, zk_cluster,
};
use lathe_tests::wait::wait_until;
use serde_json::{json, Value};

/// How long a change may take to reach every node's replica and watcher.
const CONVERGE: Duration = Duration::from_secs(30);
/// How many writes are acknowledged before the failure, and after it.
const WRITES_BEFORE: usize = 20;
const WRITES_AFTER: usize = 20;
/// How long writes may take to succeed again by themselves once ZooKeeper is back.
const RESUME_DEADLINE: Duration = Duration::from_secs(30);
/// The pause between two writes of one writer under "light load".
const LIGHT_LOAD_PAUSE: Duration = Duration::from_millis(20);
/// How long to wait for one more event from a stream that should still deliver.
const EVENT_WAIT: Duration = Duration::from_secs(10);

/// The registry state as key → (value, version).
type State = BTreeMap<String, (Value, u64)>;

/// One acknowledged write.
#[derive(Debug, Clone)]
struct Ack {
    key: String,
    value: Value,
    version: u64,
    at: Instant,
}

/// Writer threads that PUT distinct keys under `prefix`, each to its own node, until stopped; they
/// record the writes answered 200 and the failures.
struct Writers {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Writers {
    fn start(addrs: &[String], prefix: &str, pause: Option<Duration>) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = addrs
            .iter()
            .enumerate()
            .map(|(t, addr)| {
                let (stop, acks, failures) = (stop.clone(), acks.clone(), failures.clone());
                let (addr, prefix) = (addr.clone(), prefix.to_string());
                thread::spawn(move || {
                    let mut i = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let key = format!("{prefix}/w{t}/k{i:04}");
                        let value = json!({"writer": t, "i": i});
                        match http::try_request(
                            "PUT",
                            &addr,
                            &format!("/v1/kv{key}"),
                            Some(&value.to_string()),
                        ) {
                            Ok(reply) if reply.status == 200 => {
                                let version = version_of(&reply).expect("a version");
                                let at = Instant::now();
                                acks.lock().unwrap().push(Ack {
                                    key,
                                    value,
                                    version,
                                    at,
                                });
                            }
                            Ok(reply) => failures
                                .lock()
                                .unwrap()
                                .push(format!("{key}: {} {}", reply.status, reply.text)),
                            Err(err) => {
                                failures.lock().unwrap().push(format!("{key}: {err}"));
                                // A node that is gone refuses at once: do not spin on it.
                                thread::sleep(LIGHT_LOAD_PAUSE);
                            }
                        }
                        i += 1;
                        if let Some(pause) = pause {
                            thread::sleep(pause);
                        }
                    }
                })
            })
            .collect();
        Writers {
            stop,
            acks,
            failures,
            threads,
        }
    }

    fn acked(&self) -> Vec<Ack> {
        self.acks.lock().unwrap().clone()
    }

    fn wait_for_acks(&self, count: usize, after: Option<Instant>, what: &str) {
        wait_until(what, CONVERGE, || {
            let acks = self.acks.lock().unwrap();
            let n = acks
                .iter()
                .filter(|a| after.is_none_or(|t| a.at > t))
                .count();
            (n >= count).then_some(()).ok_or(n)
        });
    }

    /// Stops the writers; returns the acknowledged writes and the failures.
    fn finish(self) -> (Vec<Ack>, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads {
            thread.join().expect("a writer thread");
        }
        let acks = self.acks.lock().unwrap().clone();
        let failures = self.failures.lock().unwrap().clone();
        (acks, failures)
    }
}

/// Waits until `addr` holds the same entries under `prefix` as `expected`.
fn wait_for_state(addr: &str, prefix: &str, expected: &State) {
    wait_until(
        &format!("{addr} to hold {} entries under {prefix}", expected.len()),
        CONVERGE,
        || match try_entries_under(addr, prefix) {
            Ok(seen) if &seen == expected => Ok(()),
            Ok(seen) => Err(format!(
                "{} entries, differing: {:?}",
                seen.len(),
                diff(&seen, expected)
            )),
            Err(err) => Err(err),
        },
    );
}

fn diff(seen: &State, expected: &State) -> Vec<String> {
    let mut out: Vec<String> = expected
        .iter()
        .filter(|(k, v)| seen.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: expected {v:?}, got {:?}", seen.get(k)))
        .collect();
    out.extend(
        seen.keys()
            .filter(|k| !expected.contains_key(*k))
            .map(|k| format!("{k}: unexpected")),
    );
    out.truncate(10);
    out
}

/// Checks that every acknowledged write is in `state` with its value and version.
fn check_acks_kept(state: &State, acks: &[Ack], where_: &str) {
    for ack in acks {
        assert_eq!(
            state.get(&ack.key),
            Some(&(ack.value.clone(), ack.version)),
            "{where_}: the acknowledged write of {} (version {}) is lost or changed",
            ack.key,
            ack.version
        );
    }
}

/// The changes that make up `state` (keys written once each), in version order, as SSE event data.
fn changes_of(state: &State) -> Vec<Value> {
    let mut changes: Vec<Value> = state
        .iter()
        .map(|(key, (value, version))| {
            json!({"key": key, "value": value, "version": version, "op": "put"})
        })
        .collect();
    changes.sort_by_key(|c| c["version"].as_u64());
    changes
}

/// Applies SSE events (changes and snapshots) to `state`; returns the highest index seen.
fn apply(state: &mut State, events: &[Value], mut index: u64) -> u64 {
    for event in events {
        match event["op"].as_str() {
            Some("snapshot") => {
                state.clear();
                for entry in event["entries"].as_array().expect("snapshot entries") {
                    state.insert(
                        entry["key"].as_str().unwrap().to_string(),
                        (entry["value"].clone(), entry["version"].as_u64().unwrap()),
                    );
                }
                index = event["index"].as_u64().expect("a snapshot index");
            }
            Some("put") => {
                let version = event["version"].as_u64().unwrap();
                assert!(
                    version > index,
                    "change {event} after index {index}: duplicate or out of order"
                );
                state.insert(
                    event["key"].as_str().unwrap().to_string(),
                    (event["value"].clone(), version),
                );
                index = version;
            }
            Some("delete") => {
                let version = event["version"].as_u64().unwrap();
                assert!(
                    version >= index,
                    "delete {event} after index {index}: out of order"
                );
                state.remove(event["key"].as_str().unwrap());
                index = version;
            }
            _ => panic!("unexpected event {event}"),
        }
    }
    index
}

#[test]
fn sigkill_a_node_during_writes_keeps_every_acknowledged_write_and_watchers_resume_without_a_gap() {
    sigkill_a_node_during_writes(Writes::ToLiveNodes);
}

/// The check of issue 13: the killed node takes writes too (some acknowledged by it just before it
/// dies), and a watcher on the restarted node reads everything again from index 0.
#[test]
fn sigkill_a_node_that_takes_writes_loses_no_acknowledged_change_for_any_watcher() {
    sigkill_a_node_during_writes(Writes::ToEveryNode);
}

/// Which nodes the writers write to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writes {
    /// The two nodes that stay; a watcher on the restarted node resumes from its last seen index.
    ToLiveNodes,
    /// All three, the node killed included; a watcher on the restarted node resumes from index 0.
    ToEveryNode,
}

fn sigkill_a_node_during_writes(writes: Writes) {
    let (_zk, mut cluster) = zk_cluster(3, "crash");
    let addrs = cluster.http_addrs();
    let live = &addrs[..2];
    let writing = match writes {
        Writes::ToLiveNodes => live,
        Writes::ToEveryNode => &addrs[..],
    };
    let mut live_watchers: Vec<(String, SseReader)> = Vec::new();
    for addr in live {
        for path in ["/v1/watch/s", "/v1/watch/", "/v1/watch/s/w0"] {
            live_watchers.push((format!("{addr}{path}"), SseReader::connect(addr, path)));
        }
    }
    let mut victim_watcher = SseReader::connect(&addrs[2], "/v1/watch/s");

    let writers = Writers::start(writing, "/s", None);
    writers.wait_for_acks(WRITES_BEFORE, None, "writes acknowledged before the kill");
    // Let the victim's watcher see part of the stream, so that it has an index to resume from.
    let mut victim_events = Vec::new();
    wait_until("events on the victim's watcher", CONVERGE, || {
        if let Some(event) = victim_watcher.next_event(Duration::from_millis(100)) {
            victim_events.push(event);
        }
        victim_events.len() >= WRITES_BEFORE / 2
    });
    cluster.node_mut(2).kill();
    let killed_at = Instant::now();
    writers.wait_for_acks(
        WRITES_AFTER,
        Some(killed_at),
        "writes acknowledged after the kill",
    );
    let (acks, failures) = writers.finish();
    println!(
        "{} writes acknowledged ({} after the kill), {} failed: {failures:?}",
        acks.len(),
        acks.iter().filter(|a| a.at > killed_at).count(),
        failures.len()
    );

    // The victim's stream ends with the process; what it got is in order with no gap.
    while let Some(event) = victim_watcher.next_event(EVENT_WAIT) {
        victim_events.push(event);
    }
    assert!(
        victim_watcher.closed_reason().is_some(),
        "the killed node's stream did not end"
    );

    // Every acknowledged write is kept, on both live nodes alike.
    let final_state = wait_until("the final state on the first node", CONVERGE, || {
        try_entries_under(&addrs[0], "/s").and_then(|state| {
            let missing = acks.iter().filter(|a| !state.contains_key(&a.key)).count();
            if missing == 0 {
                Ok(state)
            } else {
                Err(format!("{missing} acknowledged writes missing"))
            }
        })
    });
    check_acks_kept(&final_state, &acks, &addrs[0]);
    wait_for_state(&addrs[1], "/s", &final_state);

    // Every watcher on the live nodes got every change under its prefix, in version order, nothing
    // else.
    let all_changes = changes_of(&final_state);
    for (name, watcher) in &mut live_watchers {
        let prefix = name.split_once("/v1/watch").unwrap().1;
        let expected: Vec<Value> = all_changes
            .iter()
            .filter(|c| {
                let key = c["key"].as_str().unwrap();
                prefix == "/" || key.starts_with(&format!("{prefix}/"))
            })
            .cloned()
            .collect();
        let received = expect_user_events(watcher, expected.len(), CONVERGE);
        assert_same_events(&received, &expected, &format!("watcher {name}"));
    }

    // The victim's events before the kill were a gap-free prefix of the stream.
    assert_same_events(
        &victim_events,
        &all_changes[..victim_events.len().min(all_changes.len())],
        "the killed node's watcher before the kill",
    );
    let last_seen = victim_events
        .last()
        .and_then(|e| e["version"].as_u64())
        .expect("a last seen version");

    // The restarted node rejoins, holds the same data, and a watcher resuming from the last seen
    // index catches up.
    cluster.node_mut(2).restart();
    cluster.wait_all_alive(MEMBERSHIP_DEADLINE);
    wait_for_state(&addrs[2], "/s", &final_state);
    let resume_from = match writes {
        Writes::ToLiveNodes => last_seen,
        Writes::ToEveryNode => 0,
    };
    let mut resumed = SseReader::connect(&addrs[2], &format!("/v1/watch/s?index={resume_from}"));
    let mut state: State = BTreeMap::new();
    let mut resumed_events = Vec::new();
    let mut index = resume_from;
    if resume_from > 0 {
        apply(&mut state, &victim_events, 0);
    }
    wait_until("the resumed watcher to catch up", CONVERGE, || {
        while let Some(event) = resumed.next_event(Duration::from_millis(100)) {
            index = apply(&mut state, std::slice::from_ref(&event), index);
            resumed_events.push(event);
        }
        if state == final_state {
            Ok(())
        } else {
            Err(format!(
                "{} events so far; differing: {:?}",
                resumed_events.len(),
                diff(&state, &final_state)
            ))
        }
    });
    if resumed_events.iter().all(|e| e["op"] != "snapshot") {
        let missed: Vec<Value> = all_changes
            .iter()
            .filter(|c| c["version"].as_u64().unwrap() > resume_from)
            .cloned()
            .collect();
        assert_same_events(
            &resumed_events,
            &missed,
            &format!("changes after {resume_from} on the resumed watcher"),
        );
    }
    println!(
        "resumed from {resume_from}: {} events ({} snapshots)",
        resumed_events.len(),
        resumed_events
            .iter()
            .filter(|e| e["op"] == "snapshot")
            .count()
    );
}

/// `ZkServer::restart()` (a stop and a start, about a second of outage) under a light write load.
#[test]
fn zookeeper_restart_keeps_acknowledged_data_and_writes_resume_by_themselves() {
    zookeeper_outage_under_light_load("zkr", 0);
}

/// ZooKeeper stays down until every writer has had two writes fail: the second one was sent after
/// ZooKeeper went away, so it fails only when the node gives up on it (the ZooKeeper session
/// timeout, 10 s); the nodes reconnect after a long outage and re-list what they missed.
#[test]
fn a_long_zookeeper_outage_keeps_acknowledged_data_and_the_order_of_changes() {
    zookeeper_outage_under_light_load("zkl", 2);
}

/// Two nodes under a light write load while ZooKeeper stops, stays down until every writer has seen
/// `failures_per_writer` writes fail, and starts again: the acknowledged data is intact on both
/// nodes, writes succeed again by themselves, a watcher that stayed connected got every change in
/// order, and writes that failed while ZooKeeper was away failed with 503.
fn zookeeper_outage_under_light_load(name: &str, failures_per_writer: usize) {
    let (mut zk, cluster) = zk_cluster(2, name);
    let addrs = cluster.http_addrs();
    let mut watcher = SseReader::connect(&addrs[1], "/v1/watch/load");
    let writers = Writers::start(&addrs, "/load", Some(LIGHT_LOAD_PAUSE));
    writers.wait_for_acks(
        WRITES_BEFORE,
        None,
        "writes acknowledged before the restart",
    );

    zk.stop().expect("stop zookeeper");
    let stopped_at = Instant::now();
    wait_until(
        &format!("every writer to see {failures_per_writer} writes fail while zookeeper is down"),
        CONVERGE,
        || {
            let failures = writers.failures.lock().unwrap();
            let failed: Vec<usize> = (0..addrs.len())
                .map(|t| {
                    failures
                        .iter()
                        .filter(|f| f.starts_with(&format!("/load/w{t}/")))
                        .count()
                })
                .collect();
            failed
                .iter()
                .all(|n| *n >= failures_per_writer)
                .then_some(())
                .ok_or(failed)
        },
    );
    zk.restart().expect("start zookeeper again");
    let back = Instant::now();
    println!("zookeeper was down for {:?}", back - stopped_at);
    wait_until(
        "writes to succeed again on both nodes",
        RESUME_DEADLINE,
        || {
            let acks = writers.acked();
            let writers_back: Vec<bool> = (0..addrs.len())
                .map(|t| acks.iter().any(|a| a.at > back && a.value["writer"] == t))
                .collect();
            writers_back
                .iter()
                .all(|b| *b)
                .then_some(())
                .ok_or(writers_back)
        },
    );
    let resumed_after = writers
        .acked()
        .iter()
        .filter(|a| a.at > back)
        .map(|a| a.at - back)
        .min();
    writers.wait_for_acks(
        WRITES_AFTER,
        Some(back),
        "writes acknowledged after the restart",
    );
    let (acks, failures) = writers.finish();
    println!(
        "{} writes acknowledged, first one {resumed_after:?} after zookeeper served again; {} \
            failed: {failures:?}",
        acks.len(),
        failures.len()
    );

    let final_state = wait_until(
        "every acknowledged write on the first node",
        CONVERGE,
        || {
            try_entries_under(&addrs[0], "/load").and_then(|state| {
                let missing = acks.iter().filter(|a| !state.contains_key(&a.key)).count();
                if missing == 0 {
                    Ok(state)
                } else {
                    Err(format!("{missing} acknowledged writes missing"))
                }
            })
        },
    );
    check_acks_kept(&final_state, &acks, &addrs[0]);
    wait_for_state(&addrs[1], "/load", &final_state);

    // A watcher that stayed connected through the restart got every change, in order.
    let expected = changes_of(&final_state);
    let received = watcher.expect_events(expected.len(), CONVERGE);
    assert_same_events(
        &received,
        &expected,
        "the watcher through the zookeeper restart",
    );

    // While ZooKeeper was away, writes failed with 503 (retry later), not with another status.
    for failure in &failures {
        assert!(
            failure.contains(" 503 "),
            "a write failed otherwise than with 503 while zookeeper restarted: {failure}"
        );
    }
}
