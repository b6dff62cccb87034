//! The metadata registry on one node: a feed, k shards, and a typed handle for callers.
//!
//! ```text
//! RegistrySupervisor
//! ├── RegistryFeed        one ordered stream of store events; full replica; wide subscriptions
//! └── RegistryShard × k   a slice each (subtrees of depth 2): reads, writes, fan-out
//! ```
//!
//! Callers use [`RegistryHandle`]; they never build actor messages themselves.

mod feed;
mod metrics;
pub mod remote;
mod replica;
pub(crate) use replica::value_bytes;
mod shard;
mod slice;
mod subscription;
mod supervisor;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use lathe::{Entry, KeyPath};
use lathe_store::StoreError;
use ractor::{ActorRef, RpcReplyPort};
use tokio::sync::{mpsc, watch};

pub use subscription::{SharedChange, Subscription, SubscriptionEvent, SUBSCRIBER_QUEUE};
pub use supervisor::{start_registry, start_registry_in, RegistryConfig, RegistrySupervisorMsg};

use feed::{FeedMsg, ShardTable};
use shard::ShardMsg;
use slice::SliceMap;

/// How long a call waits for a restarting shard or feed before giving up.
const RESTART_GRACE: Duration = Duration::from_secs(3);

/// Why a registry call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("registry unavailable on this node: {0}")]
    Unavailable(String),
}

/// A cheap-to-clone handle on this node's registry.
#[derive(Clone)]
pub struct RegistryHandle {
    feed: Arc<RwLock<Option<ActorRef<FeedMsg>>>>,
    shards: ShardTable,
    slices: SliceMap,
    index: watch::Receiver<u64>,
    next_subscription: Arc<AtomicU64>,
    store_kind: &'static str,
}

enum Target {
    Feed(ActorRef<FeedMsg>),
    Shard(ActorRef<ShardMsg>),
}

impl RegistryHandle {
    /// The highest index this node has applied.
    pub fn index(&self) -> u64 {
        *self.index.borrow()
    }

    /// Which store backs the registry (`zookeeper`, `embedded`, `remote`).
    pub fn store_kind(&self) -> &'static str {
        self.store_kind
    }

    /// The live entry at `key`, and the node's index.
    pub async fn get(&self, key: &KeyPath) -> Result<(Option<Entry>, u64), RegistryError> {
        let shard = self.slices.shard_of(key);
        let key = key.clone();
        self.ask(
            Some(shard),
            move |target, reply: RpcReplyPort<_>| match target {
                Target::Shard(s) => s
                    .cast(ShardMsg::Get {
                        key: key.clone(),
                        reply,
                    })
                    .is_ok(),
                Target::Feed(f) => f
                    .cast(FeedMsg::Get {
                        key: key.clone(),
                        reply,
                    })
                    .is_ok(),
            },
        )
        .await
    }

    /// Every live entry at or under `prefix`, in key order, and the index they are consistent with.
    pub async fn list(&self, prefix: &KeyPath) -> Result<(Vec<Entry>, u64), RegistryError> {
        let owner = self.slices.owner_of_prefix(prefix);
        let prefix = prefix.clone();
        self.ask(owner, move |target, reply: RpcReplyPort<_>| match target {
            Target::Shard(s) => s
                .cast(ShardMsg::List {
                    prefix: prefix.clone(),
                    reply,
                })
                .is_ok(),
            Target::Feed(f) => f
                .cast(FeedMsg::List {
                    prefix: prefix.clone(),
                    reply,
                })
                .is_ok(),
        })
        .await
    }

    /// How many keys hold a value, and roughly how many bytes their values take, as this node
    /// sees the registry (for the registry quota).
    pub async fn usage(&self) -> Result<(usize, usize), RegistryError> {
        self.ask(None, |target, reply: RpcReplyPort<_>| match target {
            Target::Feed(f) => f.cast(FeedMsg::Usage { reply }).is_ok(),
            Target::Shard(_) => false,
        })
        .await
    }

    /// Writes `value` at `key`; returns the new version once this node has applied it.
    pub async fn put(
        &self,
        key: &KeyPath,
        value: serde_json::Value,
        cas: Option<u64>,
    ) -> Result<u64, RegistryError> {
        let shard = self.slices.shard_of(key);
        let key = key.clone();
        let writer = crate::acl::writer::current();
        let result: Result<u64, StoreError> = self
            .ask_shard(shard, move |reply| ShardMsg::Put {
                key: key.clone(),
                value: value.clone(),
                cas,
                writer: writer.clone(),
                reply,
            })
            .await?;
        Ok(result?)
    }

    /// Deletes `key` (with `recurse`, its subtree); returns the version of the delete, or `None`
    /// when nothing held a value.
    pub async fn delete(
        &self,
        key: &KeyPath,
        cas: Option<u64>,
        recurse: bool,
    ) -> Result<Option<u64>, RegistryError> {
        let shard = self.slices.shard_of(key);
        let key = key.clone();
        let writer = crate::acl::writer::current();
        let result: Result<Option<u64>, StoreError> = self
            .ask_shard(shard, move |reply| ShardMsg::Delete {
                key: key.clone(),
                cas,
                recurse,
                writer: writer.clone(),
                reply,
            })
            .await?;
        Ok(result?)
    }

    /// Subscribes to every change at or under `prefix`. With `from = Some(n)` the subscription
    /// first delivers what happened after `n` (or a snapshot when `n` is too old).
    pub async fn subscribe(
        &self,
        prefix: &KeyPath,
        from: Option<u64>,
    ) -> Result<Subscription, RegistryError> {
        let (sender, receiver) = mpsc::channel(SUBSCRIBER_QUEUE);
        let id = self.next_subscription.fetch_add(1, Ordering::Relaxed);
        let owner = self.slices.owner_of_prefix(prefix);
        let deadline = tokio::time::Instant::now() + RESTART_GRACE;
        loop {
            let sent = match self.target(owner) {
                Some(Target::Shard(s)) => s
                    .cast(ShardMsg::Subscribe {
                        id,
                        prefix: prefix.clone(),
                        from,
                        sender: sender.clone(),
                    })
                    .is_ok(),
                Some(Target::Feed(f)) => f
                    .cast(FeedMsg::Subscribe {
                        id,
                        prefix: prefix.clone(),
                        from,
                        sender: sender.clone(),
                    })
                    .is_ok(),
                None => false,
            };
            if sent {
                return Ok(Subscription {
                    prefix: prefix.clone(),
                    receiver,
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RegistryError::Unavailable("registry is restarting".into()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the node's index reaches `index` or `timeout` passes; returns the index.
    pub async fn wait_for_index(&self, index: u64, timeout: Duration) -> u64 {
        let mut receiver = self.index.clone();
        let _ = tokio::time::timeout(timeout, receiver.wait_for(|i| *i >= index)).await;
        self.index()
    }

    fn target(&self, shard: Option<usize>) -> Option<Target> {
        if let Some(number) = shard {
            let table = self.shards.read().ok()?;
            if let Some(Some(shard)) = table.get(number) {
                return Some(Target::Shard(shard.clone()));
            }
        }
        // Wide prefixes, and keys whose shard is restarting, are served by the feed.
        let feed = self.feed.read().ok()?;
        feed.clone().map(Target::Feed)
    }

    /// Sends a request to the shard (or the feed) and waits for the answer, retrying while the
    /// target restarts.
    async fn ask<T: Send + 'static>(
        &self,
        shard: Option<usize>,
        send: impl Fn(Target, RpcReplyPort<T>) -> bool,
    ) -> Result<T, RegistryError> {
        let deadline = tokio::time::Instant::now() + RESTART_GRACE;
        loop {
            if let Some(target) = self.target(shard) {
                let (tx, rx) = tokio::sync::oneshot::channel();
                if send(target, tx.into()) {
                    if let Ok(answer) = rx.await {
                        return Ok(answer);
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RegistryError::Unavailable("registry is restarting".into()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Like `ask`, for writes, which only shards take. A write is sent once: if the shard dies
    /// after taking it, the caller gets `Unavailable` (the write may or may not have happened,
    /// as with any lost connection) rather than a silent retry that could apply it twice.
    async fn ask_shard<T: Send + 'static>(
        &self,
        shard: usize,
        message: impl Fn(RpcReplyPort<T>) -> ShardMsg,
    ) -> Result<T, RegistryError> {
        let deadline = tokio::time::Instant::now() + RESTART_GRACE;
        loop {
            let current = self
                .shards
                .read()
                .ok()
                .and_then(|table| table.get(shard).cloned().flatten());
            if let Some(target) = current {
                let (tx, rx) = tokio::sync::oneshot::channel();
                if target.cast(message(tx.into())).is_ok() {
                    return rx.await.map_err(|_| {
                        RegistryError::Unavailable("registry shard stopped during the write".into())
                    });
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RegistryError::Unavailable(
                    "registry shard is restarting".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
