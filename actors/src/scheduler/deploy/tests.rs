//! Deploys over a store that fails chosen writes: a deploy is never left half-applied — either
//! nothing changed, or its record is stored and its metadata completed.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use lathe::KeyPath;
use lathe_store::embedded::EmbeddedStore;
use lathe_store::{Snapshot, Store, StoreError, StoreEvent};
use serde_json::json;
use tokio::sync::mpsc;

use super::{complete_pending, current, deploy};
use crate::registry::{start_registry, RegistryConfig, RegistryHandle};

/// A real embedded store whose puts at or under one key fail while that key is set.
struct FailingStore {
    inner: EmbeddedStore,
    fail_under: Mutex<Option<KeyPath>>,
}

impl FailingStore {
    fn fail_puts_under(&self, key: Option<&str>) {
        *self.fail_under.lock().unwrap() = key.map(|k| KeyPath::parse(k).unwrap());
    }
}

#[async_trait]
impl Store for FailingStore {
    fn kind(&self) -> &'static str {
        "failing"
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        self.inner.snapshot().await
    }

    async fn put(
        &self,
        key: &KeyPath,
        value: &serde_json::Value,
        cas: Option<u64>,
    ) -> Result<u64, StoreError> {
        let failing = self.fail_under.lock().unwrap().clone();
        if failing.is_some_and(|prefix| key.is_under(&prefix)) {
            return Err(StoreError::Unavailable(format!(
                "injected failure at {key}"
            )));
        }
        self.inner.put(key, value, cas).await
    }

    async fn delete(
        &self,
        key: &KeyPath,
        cas: Option<u64>,
        recurse: bool,
    ) -> Result<Option<u64>, StoreError> {
        self.inner.delete(key, cas, recurse).await
    }

    fn events(&self) -> mpsc::Receiver<StoreEvent> {
        self.inner.events()
    }
}

fn source(one: i64, two: i64) -> String {
    format!(
        "[task.x]\ncrate = \"http_frontpage\"\nversion = \"4.2.1\"\ntask = \"my::FrontPage\"\n\
            tasks = 1\none = {one}\ntwo = {two}\n"
    )
}

async fn start() -> (RegistryHandle, Arc<FailingStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Arc::new(FailingStore {
        inner: EmbeddedStore::open(dir.path()).expect("an embedded store"),
        fail_under: Mutex::new(None),
    });
    let metrics = prometheus::Registry::new();
    let (registry, _) = start_registry(RegistryConfig::default(), store.clone(), &metrics, None)
        .await
        .expect("the registry starts");
    deploy(&registry, "t.toml", &source(1, 2))
        .await
        .expect("the first deploy");
    (registry, store, dir)
}

async fn value(registry: &RegistryHandle, key: &str) -> Option<serde_json::Value> {
    let key = KeyPath::parse(key).unwrap();
    registry.get(&key).await.unwrap().0.map(|e| e.value)
}

async fn deployed_source(registry: &RegistryHandle) -> String {
    current(registry).await.unwrap().unwrap().0.source
}

#[tokio::test]
async fn a_deploy_whose_record_cannot_be_written_changes_nothing() {
    let (registry, store, _dir) = start().await;
    store.fail_puts_under(Some("/lathe/topology"));
    deploy(&registry, "t.toml", &source(10, 20))
        .await
        .expect_err("the record write fails");
    // Seen failing before the fix: the metadata was written first (one = 10) for a deploy that
    // never happened.
    assert_eq!(value(&registry, "/task/x/one").await, Some(json!(1)));
    assert_eq!(value(&registry, "/task/x/two").await, Some(json!(2)));
    assert_eq!(deployed_source(&registry).await, source(1, 2));
}

#[tokio::test]
async fn a_deploy_whose_metadata_write_fails_is_completed_later() {
    let (registry, store, _dir) = start().await;
    store.fail_puts_under(Some("/task/x/two"));
    deploy(&registry, "t.toml", &source(10, 20))
        .await
        .expect_err("a metadata write fails");
    // The deploy is stored (seen failing before the fix: the old topology stayed with half of
    // the new metadata, and nothing would ever finish it) and says what it still owes.
    let (record, _) = current(&registry).await.unwrap().unwrap();
    assert_eq!(record.source, source(10, 20));
    assert!(record.pending.is_some());
    // While the store still fails, completing fails too and keeps the debt.
    assert!(complete_pending(&registry).await.is_err());
    store.fail_puts_under(None);
    assert!(complete_pending(&registry).await.unwrap());
    assert_eq!(value(&registry, "/task/x/one").await, Some(json!(10)));
    assert_eq!(value(&registry, "/task/x/two").await, Some(json!(20)));
    let (record, _) = current(&registry).await.unwrap().unwrap();
    assert_eq!(record.pending, None);
    assert!(!complete_pending(&registry).await.unwrap());
}

#[tokio::test]
async fn the_next_deploy_completes_an_unfinished_one_first() {
    let (registry, store, _dir) = start().await;
    store.fail_puts_under(Some("/task/x/two"));
    deploy(&registry, "t.toml", &source(10, 20))
        .await
        .expect_err("a metadata write fails");
    store.fail_puts_under(None);
    // Only `one` changes from the stored deploy: `two` still comes from it.
    let outcome = deploy(&registry, "t.toml", &source(11, 20)).await.unwrap();
    assert_eq!(outcome.metadata_written, 1);
    assert_eq!(value(&registry, "/task/x/one").await, Some(json!(11)));
    assert_eq!(value(&registry, "/task/x/two").await, Some(json!(20)));
    assert_eq!(current(&registry).await.unwrap().unwrap().0.pending, None);
}
