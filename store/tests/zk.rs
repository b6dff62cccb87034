//! `ZkStore` against a real ZooKeeper 3.8 (`lathe_tests::zk::ZkServer`): the store contract,
//! ordered events across sessions, CAS races, one watch per store, restarts and session expiry.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use futures::future::join_all;
use lathe::KeyPath;
use lathe_store::contract;
use lathe_store::zk::{ZkConnection, ZkStore};
use lathe_store::{Snapshot, Store, StoreError, StoreEvent, StoredEntry, DEFAULT_MAX_VALUE_BYTES};
use lathe_tests::wait::eventually;
use lathe_tests::zk::ZkServer;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;

const SESSION: Duration = Duration::from_secs(10);
/// Generous: the machine running the tests may be busy.
const PATIENCE: Duration = Duration::from_secs(60);

fn key(path: &str) -> KeyPath {
    KeyPath::parse(path).unwrap()
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

async fn start_zk() -> ZkServer {
    init_logs();
    tokio::task::spawn_blocking(ZkServer::start)
        .await
        .unwrap()
        .expect("zookeeper starts")
}

async fn connect(zk: &ZkServer) -> ZkStore {
    ZkStore::connect(&zk.connect_string(), SESSION)
        .await
        .expect("the store connects")
}

async fn next_event(events: &mut mpsc::Receiver<StoreEvent>) -> StoreEvent {
    tokio::time::timeout(PATIENCE, events.recv())
        .await
        .expect("an event within the deadline")
        .expect("the event stream goes on")
}

async fn first_snapshot(events: &mut mpsc::Receiver<StoreEvent>) -> Snapshot {
    match next_event(events).await {
        StoreEvent::Resync(snapshot) => snapshot,
        other => panic!("a stream opens with a resync, got {other:?}"),
    }
}

fn find<'a>(snapshot: &'a Snapshot, path: &str) -> Option<&'a StoredEntry> {
    snapshot
        .entries
        .iter()
        .find(|entry| entry.key.as_str() == path)
}

fn watch_count(zk: &ZkServer) -> usize {
    zk.watch_count().expect("wchs answers")
}

/// The checks every backend runs (`lathe_store::contract`), each on a fresh ZooKeeper.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_contract_holds_on_zookeeper() {
    let zk = start_zk().await;
    let store = connect(&zk).await;
    assert_eq!(store.kind(), "zookeeper");
    contract::values_and_tombstones(&store).await;
    // Each check starts from an empty registry.
    store.delete(&KeyPath::root(), None, true).await.unwrap();
    contract::compare_and_set(&store).await;
    store.delete(&KeyPath::root(), None, true).await.unwrap();
    contract::recursive_delete(&store).await;
    store.delete(&KeyPath::root(), None, true).await.unwrap();
    contract::oversized_values(&store, DEFAULT_MAX_VALUE_BYTES).await;
    store.delete(&KeyPath::root(), None, true).await.unwrap();
    contract::events_open_with_a_snapshot_then_every_change(
        &store,
        contract::Delivery::NewestPerKey,
    )
    .await;

    let counts: BTreeMap<_, _> = store.request_counts().into_iter().collect();
    for op in ["get", "set", "create", "list", "watch"] {
        assert!(counts[op] > 0, "no {op} requests counted: {counts:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_session_sees_a_burst_of_writes_in_order_without_gaps() {
    let zk = start_zk().await;
    let writer = connect(&zk).await;
    let other_writer = connect(&zk).await;
    let reader = connect(&zk).await;
    writer.put(&key("/before"), &json!(0), None).await.unwrap();
    let mut events = reader.events();
    let snapshot = first_snapshot(&mut events).await;
    assert!(find(&snapshot, "/before").is_some());

    // 400 writes to distinct keys, 16 at a time, from two sessions.
    let mut written: BTreeMap<u64, String> = BTreeMap::new();
    let paths: Vec<String> = (0..400).map(|i| format!("/burst/{}/k{i}", i % 5)).collect();
    for chunk in paths.chunks(16) {
        let writers = [&writer, &other_writer];
        let puts = chunk.iter().enumerate().map(|(i, path)| async move {
            writers[i % 2].put(&key(path), &json!(path), None).await
        });
        for (path, version) in chunk.iter().zip(join_all(puts).await) {
            written.insert(version.unwrap(), path.clone());
        }
    }
    let deleted = writer
        .delete(&key("/burst/0"), None, true)
        .await
        .unwrap()
        .unwrap();

    let mut last = snapshot.index;
    let mut seen: BTreeMap<u64, String> = BTreeMap::new();
    let mut tombstones = HashSet::new();
    while seen.len() < written.len() || tombstones.len() < 80 {
        let entries = match next_event(&mut events).await {
            StoreEvent::Changes(entries) => entries,
            // Legitimate after a connection hiccup on a busy machine: the snapshot must then hold
            // every write up to its index.
            StoreEvent::Resync(resync) => {
                tracing::warn!(index = resync.index, "re-synced during the burst");
                for (version, path) in written.range(..=resync.index) {
                    let entry = find(&resync, path).expect("a write below the index is there");
                    assert!(
                        entry.version == *version || entry.version == deleted,
                        "{path}"
                    );
                    seen.insert(*version, path.clone());
                }
                for entry in &resync.entries {
                    if entry.value.is_none() && entry.version == deleted {
                        tombstones.insert(entry.key.to_string());
                    }
                }
                last = resync.index;
                continue;
            }
        };
        let mut batch_deletes = 0;
        for entry in entries {
            assert!(entry.version > snapshot.index);
            if entry.value.is_none() {
                assert_eq!(entry.version, deleted);
                assert!(entry.version > last);
                assert!(tombstones.insert(entry.key.to_string()));
                batch_deletes += 1;
                continue;
            }
            assert!(entry.version > last, "one version per write, in order");
            last = entry.version;
            assert!(seen.insert(entry.version, entry.key.to_string()).is_none());
        }
        assert!(
            batch_deletes == 0 || batch_deletes == 80,
            "one delete, one batch"
        );
    }
    assert_eq!(seen, written, "every write, each once, with its version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cas_writers_from_several_sessions_have_one_winner() {
    let zk = start_zk().await;
    let stores = join_all((0..4).map(|_| connect(&zk))).await;
    for round in 0..5 {
        let path = &key(&format!("/race/{round}"));
        // Create-only.
        let creates = stores
            .iter()
            .enumerate()
            .map(|(i, store)| async move { store.put(path, &json!(i), Some(0)).await });
        let results = join_all(creates).await;
        let winners: Vec<u64> = results
            .iter()
            .filter_map(|r| r.as_ref().ok().copied())
            .collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        let winners = &winners;
        for result in &results {
            if let Err(err) = result {
                assert!(
                    matches!(err, StoreError::CasMismatch { found, .. } if *found == winners[0]),
                    "{err}"
                );
            }
        }
        // Compare-and-set on one version.
        let updates = stores.iter().enumerate().map(|(i, store)| async move {
            store.put(path, &json!(i + 10), Some(winners[0])).await
        });
        let results = join_all(updates).await;
        let winners: Vec<u64> = results
            .iter()
            .filter_map(|r| r.as_ref().ok().copied())
            .collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        assert!(results.iter().all(|r| match r {
            Ok(_) => true,
            Err(StoreError::CasMismatch { found, .. }) => *found == winners[0],
            Err(_) => false,
        }));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_store_holds_one_watch_however_many_consumers() {
    let zk = start_zk().await;
    let first = connect(&zk).await;
    let second = connect(&zk).await;
    let mut streams = Vec::new();
    for store in [&first, &second] {
        for _ in 0..3 {
            let mut events = store.events();
            first_snapshot(&mut events).await;
            streams.push(events);
        }
        store.snapshot().await.unwrap();
    }
    for i in 0..20 {
        first
            .put(&key(&format!("/w/{i}")), &json!(i), None)
            .await
            .unwrap();
    }
    first.delete(&key("/w"), None, true).await.unwrap();
    for events in &mut streams {
        // Every consumer sees the changes.
        loop {
            let entries = match next_event(events).await {
                StoreEvent::Changes(entries) => entries,
                StoreEvent::Resync(snapshot) => snapshot.entries,
            };
            if entries.iter().any(|e| e.value.is_none()) {
                break;
            }
        }
    }
    assert_eq!(watch_count(&zk), 2, "{}", zk.four_letter("wchc").unwrap());
    drop(first);
    eventually("the dropped store's watch to go", PATIENCE, || async {
        (watch_count(&zk) == 1).then_some(())
    })
    .await;
    second.put(&key("/w/after"), &json!(1), None).await.unwrap();
    assert_eq!(watch_count(&zk), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zookeeper_restart_keeps_data_and_everything_resumes() {
    let mut zk = start_zk().await;
    let store = connect(&zk).await;
    let mut events = store.events();
    first_snapshot(&mut events).await;
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let version = store
            .put(&key(&format!("/r/{i}")), &json!(i), None)
            .await
            .unwrap();
        acknowledged.push((format!("/r/{i}"), version));
    }
    let session = store.session_id();

    let mut zk = tokio::task::spawn_blocking(move || {
        zk.restart().expect("zookeeper restarts");
        zk
    })
    .await
    .unwrap();

    // Writes resume by themselves.
    let after = eventually("a write after the restart", PATIENCE, || async {
        store
            .put(&key("/r/after"), &json!("after"), None)
            .await
            .ok()
    })
    .await;
    let snapshot = store.snapshot().await.unwrap();
    for (path, version) in &acknowledged {
        assert_eq!(find(&snapshot, path).unwrap().version, *version, "{path}");
    }
    // The stream re-syncs (possibly more than once) and then carries on.
    let mut resynced = false;
    let mut saw_after = false;
    while !(resynced && saw_after) {
        match next_event(&mut events).await {
            StoreEvent::Resync(snapshot) => {
                resynced = true;
                saw_after = find(&snapshot, "/r/after").is_some_and(|e| e.version == after);
            }
            StoreEvent::Changes(entries) => {
                saw_after |= entries.iter().any(|e| e.version == after);
            }
        }
    }
    let next = store.put(&key("/r/next"), &json!(1), None).await.unwrap();
    loop {
        let carried = match next_event(&mut events).await {
            StoreEvent::Changes(entries) => entries.iter().any(|e| e.version == next),
            StoreEvent::Resync(snapshot) => find(&snapshot, "/r/next").is_some(),
        };
        if carried {
            break;
        }
    }
    assert_eq!(store.connection(), ZkConnection::Connected);
    tracing::info!(
        same_session = session == store.session_id(),
        "restart survived"
    );
    eventually("one watch after the restart", PATIENCE, || async {
        (watch_count(&zk) == 1).then_some(())
    })
    .await;
    zk.stop().unwrap();
}

/// A snapshot asked for while ZooKeeper is away waits for it (within the session timeout)
/// instead of failing at the first sign of a disconnect: a restart is a blip, not an outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_during_a_zookeeper_restart_waits_for_it() {
    let mut zk = start_zk().await;
    // A long session, so that a slow JVM start on a busy machine stays within it.
    let store = std::sync::Arc::new(
        ZkStore::connect(&zk.connect_string(), Duration::from_secs(30))
            .await
            .unwrap(),
    );
    let written = store.put(&key("/b/kept"), &json!(1), None).await.unwrap();
    zk = tokio::task::spawn_blocking(move || {
        zk.stop().unwrap();
        zk
    })
    .await
    .unwrap();
    eventually("the store to see the disconnect", PATIENCE, || async {
        (store.connection() != ZkConnection::Connected).then_some(())
    })
    .await;
    let asked = tokio::spawn({
        let store = std::sync::Arc::clone(&store);
        async move { store.snapshot().await }
    });
    let zk = tokio::task::spawn_blocking(move || {
        zk.restart().expect("zookeeper starts again");
        zk
    })
    .await
    .unwrap();
    let snapshot = asked
        .await
        .unwrap()
        .expect("the snapshot waits for the restart");
    assert_eq!(find(&snapshot, "/b/kept").unwrap().version, written);
    drop(zk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_is_replaced_and_the_stream_resyncs() {
    let mut zk = start_zk().await;
    // The shortest session ZooKeeper grants with tickTime 2000.
    let store = ZkStore::connect(&zk.connect_string(), Duration::from_secs(4))
        .await
        .unwrap();
    let mut events = store.events();
    first_snapshot(&mut events).await;
    let before = store.put(&key("/s/before"), &json!(1), None).await.unwrap();
    let session = store.session_id();

    zk = tokio::task::spawn_blocking(move || {
        zk.stop().unwrap();
        zk
    })
    .await
    .unwrap();
    // Writes while ZooKeeper is away fail, within the session timeout and a bit.
    let started = Instant::now();
    let err = store
        .put(&key("/s/down"), &json!(0), None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    eventually("the session to expire", PATIENCE, || async {
        (store.connection() == ZkConnection::Expired).then_some(())
    })
    .await;
    let err = store
        .put(&key("/s/down"), &json!(1), None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    let started = Instant::now();
    let err = store.snapshot().await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(started.elapsed() < PATIENCE);

    let zk = tokio::task::spawn_blocking(move || {
        zk.restart().expect("zookeeper starts again");
        zk
    })
    .await
    .unwrap();
    let after = eventually("a write on a new session", PATIENCE, || async {
        store.put(&key("/s/after"), &json!(2), None).await.ok()
    })
    .await;
    assert_ne!(store.session_id(), session);
    loop {
        match next_event(&mut events).await {
            StoreEvent::Resync(snapshot) => {
                assert_eq!(find(&snapshot, "/s/before").unwrap().version, before);
                if find(&snapshot, "/s/after").is_some_and(|e| e.version == after) {
                    break;
                }
            }
            StoreEvent::Changes(entries) => {
                if entries.iter().any(|e| e.version == after) {
                    break;
                }
            }
        }
    }
    eventually("one watch on the new session", PATIENCE, || async {
        (watch_count(&zk) == 1).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_removes_old_tombstones_and_placeholders() {
    let zk = start_zk().await;
    let store = connect(&zk).await;
    store
        .put(&key("/g/live/deep"), &json!(1), None)
        .await
        .unwrap();
    store
        .put(&key("/g/dead/deep"), &json!(1), None)
        .await
        .unwrap();
    store.delete(&key("/g/dead"), None, true).await.unwrap();
    store
        .delete(&key("/g/dead/deep"), None, false)
        .await
        .unwrap();
    assert_eq!(
        store
            .collect_garbage(Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    // Leaves only: /g/dead/deep now, its placeholder parent /g/dead on the next run.
    assert_eq!(store.collect_garbage(Duration::ZERO).await.unwrap(), 1);
    assert_eq!(store.collect_garbage(Duration::ZERO).await.unwrap(), 1);
    assert_eq!(store.collect_garbage(Duration::ZERO).await.unwrap(), 0);
    let snapshot = store.snapshot().await.unwrap();
    assert_eq!(snapshot.entries.len(), 1, "{snapshot:?}");
    assert_eq!(snapshot.entries[0].key.as_str(), "/g/live/deep");
    // A key can be written again where its tombstone was removed.
    store
        .put(&key("/g/dead/deep"), &json!(2), Some(0))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chroot_in_the_ensemble_separates_registries() {
    let zk = start_zk().await;
    let blue = ZkStore::connect(&format!("{}/blue/env", zk.connect_string()), SESSION)
        .await
        .unwrap();
    let green = ZkStore::connect(&format!("{}/green", zk.connect_string()), SESSION)
        .await
        .unwrap();
    let plain = connect(&zk).await;
    blue.put(&key("/k"), &json!("blue"), None).await.unwrap();
    green.put(&key("/k"), &json!("green"), None).await.unwrap();
    let blue_again = ZkStore::connect(&format!("{}/blue/env/", zk.connect_string()), SESSION)
        .await
        .unwrap();
    let seen = blue_again.snapshot().await.unwrap();
    assert_eq!(find(&seen, "/k").unwrap().value, Some(json!("blue")));
    assert!(plain.snapshot().await.unwrap().entries.is_empty());
    assert!(ZkStore::connect("", SESSION).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_falls_behind_gets_a_fresh_snapshot() {
    let zk = start_zk().await;
    let store = connect(&zk).await;
    let mut events = store.events_with_capacity(4);
    let first = first_snapshot(&mut events).await;
    let mut last = 0;
    for i in 0..60 {
        let path = format!("/lag/{}", i % 10);
        last = store.put(&key(&path), &json!(i), None).await.unwrap();
    }

    // A replica fed by the stream ends up equal to the store.
    let mut replica: BTreeMap<String, StoredEntry> = first
        .entries
        .into_iter()
        .map(|entry| (entry.key.to_string(), entry))
        .collect();
    let mut index = first.index;
    let mut resyncs = 0;
    while index < last {
        match next_event(&mut events).await {
            StoreEvent::Changes(entries) => {
                for entry in entries {
                    assert!(entry.version > index);
                    index = entry.version;
                    replica.insert(entry.key.to_string(), entry);
                }
            }
            StoreEvent::Resync(snapshot) => {
                resyncs += 1;
                assert!(snapshot.index >= index);
                index = snapshot.index;
                replica = snapshot
                    .entries
                    .into_iter()
                    .map(|entry| (entry.key.to_string(), entry))
                    .collect();
            }
        }
    }
    assert!(resyncs >= 1, "the consumer fell behind and was re-synced");
    let expected = store.snapshot().await.unwrap();
    assert_eq!(replica.into_values().collect::<Vec<_>>(), expected.entries);
}
