//! `ZkStore` request sizes against a real ZooKeeper 3.8: a value that passes the store's value
//! limit but whose request would exceed ZooKeeper's `jute.maxbuffer` is refused before it is
//! sent, so the session and every call in flight beside it survive.

use std::time::Duration;

use futures::future::join_all;
use lathe::KeyPath;
use lathe_store::zk::{ZkConnection, ZkStore, ZK_DEFAULT_MAX_PACKET};
use lathe_store::{Store, StoreError, DEFAULT_MAX_VALUE_BYTES};
use lathe_tests::zk::ZkServer;
use serde_json::json;

const SESSION: Duration = Duration::from_secs(10);

fn key(path: &str) -> KeyPath {
    KeyPath::parse(path).unwrap()
}

/// A server with ZooKeeper's default `jute.maxbuffer`, which the store assumes by default.
async fn start_zk() -> ZkServer {
    tokio::task::spawn_blocking(|| ZkServer::start_with_max_buffer(ZK_DEFAULT_MAX_PACKET))
        .await
        .unwrap()
        .expect("zookeeper starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_too_big_once_encoded_is_refused_and_the_session_survives() {
    let zk = start_zk().await;
    let store = ZkStore::connect(&zk.connect_string(), SESSION)
        .await
        .expect("the store connects");
    let session = store.session_id();
    // Its JSON is under the store's 1 MiB value limit, but not once path and framing are added
    // to ZooKeeper's request.
    let big = json!("x".repeat(DEFAULT_MAX_VALUE_BYTES - 12));
    assert!(big.to_string().len() <= DEFAULT_MAX_VALUE_BYTES);
    assert!(big.to_string().len() < ZK_DEFAULT_MAX_PACKET);

    // Writes in flight beside the big one (seen failing before the fix: ZooKeeper dropped the
    // connection and every one of them failed with a connection loss).
    let small = (0..20).map(|i| {
        let store = &store;
        async move {
            store
                .put(&key(&format!("/beside/{i}")), &json!(i), None)
                .await
        }
    });
    let big_key = key("/big");
    let (refused, beside) = tokio::join!(store.put(&big_key, &big, None), join_all(small));
    match refused {
        Err(StoreError::TooLarge { size, limit }) => {
            assert_eq!(size, big.to_string().len());
            assert!(
                limit < size && limit > ZK_DEFAULT_MAX_PACKET - 4096,
                "{limit}"
            );
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    for (i, result) in beside.into_iter().enumerate() {
        result.unwrap_or_else(|e| panic!("the write beside the big one {i} failed: {e}"));
    }
    assert_eq!(store.connection(), ZkConnection::Connected);
    assert_eq!(store.session_id(), session);
    assert_eq!(store.snapshot().await.unwrap().entries.len(), 20);

    // The largest value that fits is stored, and read back whole.
    let error = store.put(&key("/big"), &big, None).await.unwrap_err();
    let StoreError::TooLarge { limit, .. } = error else {
        panic!("{error:?}")
    };
    let fits = json!("y".repeat(limit - 2));
    store
        .put(&key("/big"), &fits, None)
        .await
        .expect("a value at the limit");
    let snapshot = store.snapshot().await.unwrap();
    let stored = snapshot
        .entries
        .iter()
        .find(|e| e.key == key("/big"))
        .unwrap();
    assert_eq!(stored.value.as_ref(), Some(&fits));
    assert_eq!(store.session_id(), session);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_limit_is_configurable() {
    let zk = start_zk().await;
    let store = ZkStore::connect(&zk.connect_string(), SESSION)
        .await
        .expect("the store connects")
        .with_max_request_bytes(8 * 1024);
    store
        .put(&key("/fits"), &json!("a".repeat(4 * 1024)), None)
        .await
        .expect("4 KiB within 8 KiB requests");
    let error = store
        .put(&key("/over"), &json!("b".repeat(8 * 1024)), None)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("over the limit of"), "{error}");
}

/// An operator who raised the store's request limit above the servers' `jute.maxbuffer`: the
/// server drops the connection on the big write. That is a 503 naming the likely cause, not a
/// 413 blaming the value, and the store carries on after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_on_a_big_write_says_to_check_jute_maxbuffer() {
    let zk = start_zk().await;
    let store = ZkStore::connect(&zk.connect_string(), SESSION)
        .await
        .expect("the store connects")
        .with_max_request_bytes(2 * ZK_DEFAULT_MAX_PACKET);
    // Over the server's packet limit, within the store's (raised) request limit and value limit.
    let big = json!("z".repeat(DEFAULT_MAX_VALUE_BYTES - 16));
    assert!(big.to_string().len() > ZK_DEFAULT_MAX_PACKET - 16);
    assert!(big.to_string().len() <= DEFAULT_MAX_VALUE_BYTES);
    let error = store.put(&key("/too/big"), &big, None).await.unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    assert!(error.to_string().contains("jute.maxbuffer"), "{error}");
    lathe_tests::wait::eventually("writes after the drop", Duration::from_secs(60), || async {
        store.put(&key("/small"), &json!(1), None).await.ok()
    })
    .await;
}
