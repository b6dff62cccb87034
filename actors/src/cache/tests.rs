use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use lathe::{Cache, CacheLoader, Endpoint, LookupError, TaskRef};

use super::{CacheHost, Peers};

/// The group's live instances, as a test sets them, all on node `n`.
#[derive(Default)]
pub(crate) struct FixedPeers(pub(crate) Mutex<Vec<u32>>);

#[async_trait]
impl Peers for FixedPeers {
    async fn live(&self, group: &str) -> Result<TaskRef, LookupError> {
        let indices = self.0.lock().unwrap().clone();
        Ok(TaskRef::new(
            group,
            indices
                .into_iter()
                .map(|index| Endpoint {
                    group: group.to_string(),
                    index,
                    node: "n".into(),
                    http: None,
                    version: "1".into(),
                })
                .collect(),
        ))
    }
}

/// Counts its loads; answers `<key> by <index>` after `delay`.
struct Counting {
    index: u32,
    loads: Arc<AtomicU64>,
    delay: Duration,
}

#[async_trait]
impl CacheLoader for Counting {
    async fn load(&self, key: &str) -> Result<Vec<u8>, String> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        if key.starts_with("bad") {
            return Err(format!("no value for {key}"));
        }
        Ok(format!("{key} by {}", self.index).into_bytes())
    }
}

struct Group {
    caches: Vec<Cache>,
    loads: Vec<Arc<AtomicU64>>,
}

fn group(instances: u32, delay: Duration) -> (Arc<CacheHost>, Arc<FixedPeers>, Group) {
    let peers = Arc::new(FixedPeers(Mutex::new((0..instances).collect())));
    let host = CacheHost::new("n", peers.clone());
    let mut group = Group {
        caches: Vec::new(),
        loads: Vec::new(),
    };
    for index in 0..instances {
        let loads = Arc::new(AtomicU64::new(0));
        let loader = Arc::new(Counting {
            index,
            loads: loads.clone(),
            delay,
        });
        group.caches.push(
            host.register("task.c", index, "squares", 1 << 20, loader)
                .unwrap(),
        );
        group.loads.push(loads);
    }
    (host, peers, group)
}

fn total(loads: &[Arc<AtomicU64>]) -> u64 {
    loads.iter().map(|l| l.load(Ordering::SeqCst)).sum()
}

#[tokio::test]
async fn each_key_is_loaded_once_by_its_owner_whoever_asks() {
    let (_host, _peers, group) = group(3, Duration::ZERO);
    let mut owners = HashMap::new();
    for key in (0..30).map(|i| format!("k{i}")) {
        let mut answers = Vec::new();
        for cache in &group.caches {
            answers.push(cache.get(&key).await.unwrap());
        }
        assert!(
            answers.windows(2).all(|w| w[0] == w[1]),
            "{key}: {answers:?}"
        );
        let answer = String::from_utf8(answers[0].to_vec()).unwrap();
        owners.insert(key, answer.rsplit(' ').next().unwrap().to_string());
    }
    assert_eq!(total(&group.loads), 30, "one load per key");
    let distinct: std::collections::BTreeSet<&String> = owners.values().collect();
    assert_eq!(distinct.len(), 3, "keys spread over the owners: {owners:?}");
    let stats = group.caches[0].stats();
    assert_eq!(stats.gets, 30);
    assert!(stats.peer_gets > 0 && stats.loads < 30, "{stats:?}");
}

#[tokio::test]
async fn concurrent_gets_of_a_missing_key_share_one_load() {
    let (_host, _peers, group) = group(2, Duration::from_millis(50));
    let gets = (0..20).map(|i| {
        let cache = group.caches[i % 2].clone();
        tokio::spawn(async move { cache.get("popular").await })
    });
    for get in futures::future::join_all(gets).await {
        get.unwrap().unwrap();
    }
    assert_eq!(total(&group.loads), 1);
}

#[tokio::test]
async fn load_errors_reach_the_caller_and_are_not_kept() {
    let (_host, _peers, group) = group(1, Duration::ZERO);
    let error = group.caches[0].get("bad-key").await.unwrap_err();
    assert!(
        error.to_string().contains("no value for bad-key"),
        "{error}"
    );
    group.caches[0].get("bad-key").await.unwrap_err();
    assert_eq!(total(&group.loads), 2, "a failed load is tried again");
    assert!(group.caches[0].get("").await.is_err(), "empty key");
}

#[tokio::test]
async fn an_owner_that_is_gone_is_replaced_by_the_ring_and_a_missing_one_by_a_local_load() {
    let (host, peers, mut group) = group(2, Duration::ZERO);
    // Instance 1 stops: its cache handle is dropped, and it leaves the live instances.
    group.caches.pop();
    *peers.0.lock().unwrap() = vec![0];
    for key in (0..10).map(|i| format!("k{i}")) {
        let value = group.caches[0].get(&key).await.unwrap();
        assert!(value.ends_with(b"by 0"));
    }
    // Still listed live but without a cache (a restarting instance): loaded where asked.
    *peers.0.lock().unwrap() = vec![0, 1];
    for key in (10..40).map(|i| format!("k{i}")) {
        let value = group.caches[0].get(&key).await.unwrap();
        assert!(value.ends_with(b"by 0"), "{key}");
    }
    assert!(host.find("task.c", 1, "squares").is_none());
}
