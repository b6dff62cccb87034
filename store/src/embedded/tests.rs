//! Tests of the embedded store against a RocksDB in a temporary directory.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;

fn key(path: &str) -> KeyPath {
    KeyPath::parse(path).unwrap()
}

fn find<'a>(snapshot: &'a Snapshot, path: &str) -> Option<&'a StoredEntry> {
    snapshot.entries.iter().find(|e| e.key.as_str() == path)
}

async fn next_event(events: &mut mpsc::Receiver<StoreEvent>) -> StoreEvent {
    tokio::time::timeout(Duration::from_secs(30), events.recv())
        .await
        .expect("no event within 30 s")
        .expect("event stream ended")
}

/// A fresh store in a temporary directory (kept as long as the store).
fn fresh() -> (tempfile::TempDir, EmbeddedStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    (dir, store)
}

#[tokio::test]
async fn the_store_contract_values_and_tombstones() {
    let (_dir, store) = fresh();
    assert_eq!(store.snapshot().await.unwrap(), Snapshot::default());
    crate::contract::values_and_tombstones(&store).await;
}

#[tokio::test]
async fn the_store_contract_compare_and_set() {
    let (_dir, store) = fresh();
    crate::contract::compare_and_set(&store).await;
}

#[tokio::test]
async fn the_store_contract_recursive_delete() {
    let (_dir, store) = fresh();
    crate::contract::recursive_delete(&store).await;
}

#[tokio::test]
async fn the_store_contract_oversized_values() {
    let (_dir, store) = fresh();
    crate::contract::oversized_values(&store, crate::DEFAULT_MAX_VALUE_BYTES).await;
}

#[tokio::test]
async fn the_store_contract_event_streams() {
    let (_dir, store) = fresh();
    crate::contract::events_open_with_a_snapshot_then_every_change(
        &store,
        crate::contract::Delivery::EveryChange,
    )
    .await;
}

/// The embedded store's versions are consecutive: a failed CAS takes none, a recursive delete
/// exactly one.
#[tokio::test]
async fn versions_are_consecutive_and_failed_writes_take_none() {
    let (_dir, store) = fresh();
    let k = key("/cas/k");
    let v1 = store.put(&k, &json!(1), Some(0)).await.unwrap();
    store.put(&k, &json!(2), Some(0)).await.unwrap_err();
    store.delete(&k, Some(v1 + 5), false).await.unwrap_err();
    assert_eq!(store.index().await.unwrap(), v1);
    for path in ["/t", "/t/a", "/t/a/b"] {
        store.put(&key(path), &json!(path), None).await.unwrap();
    }
    let before = store.index().await.unwrap();
    let version = store.delete(&key("/t"), None, true).await.unwrap().unwrap();
    assert_eq!(version, before + 1);
}

#[tokio::test]
async fn reopening_keeps_data_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let (snapshot, index) = {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store
            .put(&key("/keep/a"), &json!([1, 2]), None)
            .await
            .unwrap();
        store
            .put(&key("/keep/b"), &json!(null), None)
            .await
            .unwrap();
        store.delete(&key("/keep/a"), None, false).await.unwrap();
        (
            store.snapshot().await.unwrap(),
            store.index().await.unwrap(),
        )
    };
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(store.snapshot().await.unwrap(), snapshot);
    assert_eq!(store.index().await.unwrap(), index);
    let next = store.put(&key("/keep/c"), &json!(1), None).await.unwrap();
    assert_eq!(next, index + 1);
}

#[tokio::test]
async fn garbage_collection_removes_old_tombstones_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    store.put(&key("/gc/live"), &json!(1), None).await.unwrap();
    store.put(&key("/gc/dead"), &json!(1), None).await.unwrap();
    store.delete(&key("/gc/dead"), None, false).await.unwrap();
    assert_eq!(store.collect_garbage(TOMBSTONE_TTL).await.unwrap(), 0);
    assert_eq!(store.collect_garbage(Duration::ZERO).await.unwrap(), 1);
    let snapshot = store.snapshot().await.unwrap();
    assert_eq!(snapshot.entries.len(), 1);
    assert_eq!(snapshot.entries[0].key.as_str(), "/gc/live");
}

#[tokio::test]
async fn a_damaged_record_is_reported_by_key_and_can_be_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store.put(&key("/ok"), &json!(1), None).await.unwrap();
    }
    {
        let db = DB::open_default(dir.path().join("registry")).unwrap();
        db.put(b"k/bad/record", b"\x01\x01garbage").unwrap();
    }
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let err = store.snapshot().await.unwrap_err().to_string();
    assert!(err.contains("/bad/record"), "{err}");
    let err = store
        .put(&key("/bad/record"), &json!(2), Some(0))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("/bad/record"), "{err}");
    store
        .put(&key("/bad/record"), &json!(2), None)
        .await
        .unwrap();
    let snapshot = store.snapshot().await.unwrap();
    assert_eq!(
        find(&snapshot, "/bad/record").unwrap().value,
        Some(json!(2))
    );
}

/// The child half of `acknowledged_writes_survive_sigkill`: writes until killed, printing each
/// acknowledged version.
#[tokio::test]
#[ignore = "run by acknowledged_writes_survive_sigkill in a child process"]
async fn sigkill_child_writer() {
    let Ok(dir) = std::env::var("LATHE_SIGKILL_DIR") else {
        return;
    };
    let store = EmbeddedStore::open(Path::new(&dir)).unwrap();
    for i in 0u64.. {
        let version = store
            .put(&key(&format!("/crash/{}", i % 100)), &json!(i), None)
            .await
            .unwrap();
        println!("acked {i} {version}");
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "embedded::tests::sigkill_child_writer",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("LATHE_SIGKILL_DIR", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("acked ") {
            let mut parts = rest.split(' ').map(|n| n.parse::<u64>().unwrap());
            acked.push((parts.next().unwrap(), parts.next().unwrap()));
        }
        if acked.len() >= 150 || Instant::now() > deadline {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL: no destructor, no flush
    child.wait().unwrap();
    assert!(
        acked.len() >= 150,
        "the child acknowledged only {} writes",
        acked.len()
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let snapshot = runtime.block_on(async {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store.snapshot().await.unwrap()
    });
    let (last_i, last_version) = *acked.last().unwrap();
    assert!(snapshot.index >= last_version);
    for (i, version) in acked.iter().rev().take(100) {
        let entry = find(&snapshot, &format!("/crash/{}", i % 100)).unwrap();
        assert!(entry.version >= *version, "write {i} lost: {entry:?}");
    }
    let newest = find(&snapshot, &format!("/crash/{}", last_i % 100)).unwrap();
    assert!(newest.value.as_ref().unwrap().as_u64().unwrap() >= last_i);
}

#[tokio::test]
async fn a_consumer_that_falls_behind_gets_a_fresh_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let mut events = store.events_with_capacity(4);
    let StoreEvent::Resync(first) = next_event(&mut events).await else {
        panic!("the stream must open with a resync");
    };
    for i in 0..40 {
        let path = format!("/lag/{}", i % 10);
        store.put(&key(&path), &json!(i), None).await.unwrap();
    }
    let expected = store.snapshot().await.unwrap();

    // A replica fed by the stream ends up equal to the store.
    let mut replica: std::collections::BTreeMap<String, StoredEntry> = first
        .entries
        .into_iter()
        .map(|entry| (entry.key.to_string(), entry))
        .collect();
    let mut index = first.index;
    let mut resyncs = 0;
    while index < expected.index {
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
    assert_eq!(replica.into_values().collect::<Vec<_>>(), expected.entries);
}
