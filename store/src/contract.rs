//! The [`Store`] contract as executable checks, run against every backend by its own tests
//! (`store/src/embedded/tests.rs`, `store/tests/zk.rs`) so that both keep the same semantics.
//!
//! Each check takes an empty store and panics, naming what broke, when the backend does not
//! hold the contract. Versions are only compared by order: ZooKeeper's zxids are not
//! consecutive, the embedded store's are.

use std::collections::BTreeSet;
use std::time::Duration;

use lathe::KeyPath;
use serde_json::json;

use crate::{Snapshot, Store, StoreError, StoreEvent, StoredEntry};

fn key(path: &str) -> KeyPath {
    KeyPath::parse(path).expect("a valid test key")
}

fn find<'a>(snapshot: &'a Snapshot, path: &str) -> Option<&'a StoredEntry> {
    snapshot.entries.iter().find(|e| e.key.as_str() == path)
}

/// Puts and deletes: versions grow, a delete leaves a tombstone with its version, deleting what
/// is absent is `None`, parents of keys are not entries, the root is a key like any other.
pub async fn values_and_tombstones(store: &dyn Store) {
    let v1 = store
        .put(&key("/a/b/c"), &json!({"n": 1}), None)
        .await
        .unwrap();
    let v2 = store
        .put(&key("/a/b/c"), &json!({"n": 2}), None)
        .await
        .unwrap();
    let v3 = store.put(&key("/a/x"), &json!("x"), None).await.unwrap();
    assert!(v1 < v2 && v2 < v3, "versions grow: {v1} {v2} {v3}");
    let snapshot = store.snapshot().await.unwrap();
    let entry = find(&snapshot, "/a/b/c").expect("/a/b/c in the snapshot");
    assert_eq!(
        (entry.value.clone(), entry.version),
        (Some(json!({"n": 2})), v2)
    );
    assert!(find(&snapshot, "/a").is_none(), "parents are not entries");
    assert!(find(&snapshot, "/a/b").is_none(), "parents are not entries");
    assert!(
        snapshot.index >= v3,
        "the snapshot's index covers its entries"
    );

    let deleted = store.delete(&key("/a/x"), None, false).await.unwrap();
    let deleted = deleted.expect("a live key is deleted");
    assert!(deleted > v3);
    assert_eq!(store.delete(&key("/a/x"), None, false).await.unwrap(), None);
    assert_eq!(
        store.delete(&key("/nothing"), None, false).await.unwrap(),
        None
    );
    assert_eq!(
        store.delete(&key("/a"), None, false).await.unwrap(),
        None,
        "a parent"
    );
    let snapshot = store.snapshot().await.unwrap();
    let tombstone = find(&snapshot, "/a/x").expect("a tombstone");
    assert_eq!(
        (tombstone.value.clone(), tombstone.version),
        (None, deleted)
    );
    assert!(snapshot.index >= deleted);

    let root = store
        .put(&KeyPath::root(), &json!("root"), None)
        .await
        .unwrap();
    let snapshot = store.snapshot().await.unwrap();
    assert_eq!(find(&snapshot, "/").expect("the root").version, root);
}

/// CAS: `Some(0)` creates only, `Some(v)` matches the live version, a mismatch changes nothing,
/// a tombstone or a parent counts as absent.
pub async fn compare_and_set(store: &dyn Store) {
    let k = key("/cas/k");
    let c1 = store.put(&k, &json!(1), Some(0)).await.unwrap();
    let err = store.put(&k, &json!(2), Some(0)).await.unwrap_err();
    let mismatch = StoreError::CasMismatch {
        key: "/cas/k".into(),
        expected: 0,
        found: c1,
    };
    assert_eq!(err, mismatch);
    let c2 = store.put(&k, &json!(2), Some(c1)).await.unwrap();
    let err = store.put(&k, &json!(3), Some(c1)).await.unwrap_err();
    assert!(
        matches!(err, StoreError::CasMismatch { found, .. } if found == c2),
        "{err}"
    );
    let err = store
        .put(&key("/cas/nope"), &json!(3), Some(c1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::CasMismatch { found: 0, .. }),
        "{err}"
    );
    let err = store.delete(&k, Some(c1), false).await.unwrap_err();
    assert!(matches!(err, StoreError::CasMismatch { .. }), "{err}");
    let gone = store
        .delete(&k, Some(c2), false)
        .await
        .unwrap()
        .expect("deleted");

    let err = store.put(&k, &json!(4), Some(gone)).await.unwrap_err();
    assert!(
        matches!(err, StoreError::CasMismatch { found: 0, .. }),
        "tombstone: {err}"
    );
    let c5 = store.put(&k, &json!(5), Some(0)).await.unwrap();
    assert!(c5 > gone);
    store.put(&key("/cas/p/q"), &json!(1), None).await.unwrap();
    store
        .put(&key("/cas/p"), &json!("now a value"), Some(0))
        .await
        .unwrap();
}

/// A recursive delete is one change with one version for every key under it, leaves older
/// tombstones and siblings sharing a name prefix alone, and takes CAS on its top key.
pub async fn recursive_delete(store: &dyn Store) {
    for path in ["/t", "/t/a", "/t/a/b", "/t/c", "/t-sibling", "/tt/y"] {
        store.put(&key(path), &json!(path), None).await.unwrap();
    }
    let old = store
        .delete(&key("/t/c"), None, false)
        .await
        .unwrap()
        .unwrap();
    let err = store
        .delete(&key("/t"), Some(old + 1_000_000), true)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::CasMismatch { .. }), "{err}");
    let version = store.delete(&key("/t"), None, true).await.unwrap().unwrap();
    let snapshot = store.snapshot().await.unwrap();
    for path in ["/t", "/t/a", "/t/a/b"] {
        let entry = find(&snapshot, path).unwrap_or_else(|| panic!("{path} tombstone"));
        assert_eq!(
            (entry.value.clone(), entry.version),
            (None, version),
            "{path}"
        );
    }
    assert_eq!(
        find(&snapshot, "/t/c").unwrap().version,
        old,
        "old tombstones keep theirs"
    );
    assert!(find(&snapshot, "/t-sibling").unwrap().value.is_some());
    assert!(find(&snapshot, "/tt/y").unwrap().value.is_some());
    assert_eq!(store.delete(&key("/t"), None, true).await.unwrap(), None);

    let root = store.put(&KeyPath::root(), &json!(0), None).await.unwrap();
    let all = store
        .delete(&KeyPath::root(), Some(root), true)
        .await
        .unwrap()
        .unwrap();
    let snapshot = store.snapshot().await.unwrap();
    assert!(snapshot.entries.iter().all(|entry| entry.value.is_none()));
    assert_eq!(find(&snapshot, "/tt/y").unwrap().version, all);
}

/// A value over `max_value_bytes` is refused and changes nothing; one just under is taken.
pub async fn oversized_values(store: &dyn Store, max_value_bytes: usize) {
    let before = store.snapshot().await.unwrap();
    let big = json!("x".repeat(max_value_bytes));
    let err = store.put(&key("/big"), &big, None).await.unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { .. }), "{err}");
    assert_eq!(
        store.snapshot().await.unwrap(),
        before,
        "a refused value changes nothing"
    );
    let almost = json!("y".repeat(max_value_bytes - 100));
    store.put(&key("/big"), &almost, None).await.unwrap();
}

/// What a backend's event stream promises about a key written again before it was delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Every change, each with its own version (the embedded store logs every write).
    EveryChange,
    /// Every change, or a newer change of the same key in its place: ZooKeeper keeps no
    /// history and its notifications carry no data, so a key overwritten before the store read
    /// it is delivered as its newer value, as ZooKeeper's own watches and Consul's blocking
    /// queries do. Nothing is invented, the order holds, and each key ends at its last write.
    NewestPerKey,
}

/// A stream opens with a snapshot, then carries the changes in version order as `delivery`
/// says (a recursive delete as one version), and a stream opened later opens with a snapshot.
pub async fn events_open_with_a_snapshot_then_every_change(store: &dyn Store, delivery: Delivery) {
    let first = store.put(&key("/e/0"), &json!(0), None).await.unwrap();
    let mut events = store.events();
    let StoreEvent::Resync(snapshot) = next_event(&mut events).await else {
        panic!("the stream must open with a resync");
    };
    assert!(snapshot.index >= first);
    assert!(find(&snapshot, "/e/0").is_some());

    let mut written = Vec::new();
    for i in 1..=30 {
        let path = format!("/e/{}", i % 7);
        let version = store.put(&key(&path), &json!(i), None).await.unwrap();
        written.push((path, Some(json!(i)), version));
    }
    let deleted = store.delete(&key("/e"), None, true).await.unwrap().unwrap();
    let children: BTreeSet<String> = (0..7).map(|i| format!("/e/{i}")).collect();
    let mut seen = Vec::new();
    let mut tombstones = BTreeSet::new();
    let mut last = snapshot.index;
    while tombstones != children {
        let StoreEvent::Changes(entries) = next_event(&mut events).await else {
            panic!("no resync expected on a healthy stream");
        };
        for entry in entries {
            assert!(entry.version >= last, "versions never go down");
            last = entry.version;
            match entry.value {
                Some(value) => seen.push((entry.key.to_string(), Some(value), entry.version)),
                None => {
                    assert_eq!(
                        entry.version, deleted,
                        "one version for the recursive delete"
                    );
                    if children.contains(entry.key.as_str()) {
                        tombstones.insert(entry.key.to_string());
                    }
                }
            }
        }
    }
    match delivery {
        Delivery::EveryChange => assert_eq!(seen, written, "every put, in order"),
        Delivery::NewestPerKey => {
            for change in &seen {
                assert!(written.contains(change), "{change:?} was never written");
            }
            for (key, value, version) in &written {
                let delivered = seen
                    .iter()
                    .any(|(k, v, n)| k == key && (n > version || (n == version && v == value)));
                assert!(
                    delivered,
                    "{key} = {value:?} (version {version}) nor a newer change of it"
                );
            }
        }
    }

    let mut late = store.events();
    let StoreEvent::Resync(late_snapshot) = next_event(&mut late).await else {
        panic!("a late stream opens with a resync too");
    };
    assert!(late_snapshot.index >= deleted);
}

async fn next_event(events: &mut tokio::sync::mpsc::Receiver<StoreEvent>) -> StoreEvent {
    tokio::time::timeout(Duration::from_secs(60), events.recv())
        .await
        .expect("an event within 60 s")
        .expect("the event stream goes on")
}
