//! `RegistryShard`: owns one slice of the key space.
//!
//! It holds the slice's replica, answers reads from it, writes through to the store (the change
//! comes back through the feed, in order), and fans every change of its slice out to the
//! subscriptions whose prefix lies in the slice. A write is acknowledged once the shard has applied
//! it, so a read on this node after a write sees it.
//!
//! On (re)start the shard attaches to the feed, which hands it the slice as of the feed's index
//! with the slice's recent changes, and routes every later change to it, so a crashed shard comes
//! back with the current state, misses nothing in between, and its subscribers resume from their
//! last index with the changes they missed (not a snapshot).

use std::sync::Arc;
use std::time::{Duration, Instant};

use lathe::{Entry, KeyPath};
use lathe_store::{Store, StoreError, TOMBSTONE_TTL};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorMessage;
use tokio::sync::mpsc;

use super::feed::FeedMsg;
use super::metrics::RegistryMetrics;
use super::replica::{Replica, DEFAULT_RING_CAPACITY};
use super::subscription::{attach, SharedChange, Subscriber, SubscriberSet, SubscriptionEvent};
use crate::acl::writer::{scope, Writer};

/// How long a write waits for its change to come back through the feed before it is
/// acknowledged anyway (the store already made it durable).
const WRITE_APPLY_TIMEOUT: Duration = Duration::from_secs(2);
const TICK: Duration = Duration::from_millis(100);

/// A finished write waiting for the shard to apply its version.
type WriteAck = Box<dyn FnOnce() + Send>;

#[derive(RactorMessage)]
pub(crate) enum ShardMsg {
    /// Changes of this slice, in order, and the global index they bring the node to.
    Apply {
        changes: Vec<Arc<SharedChange>>,
        index: u64,
        received: Instant,
    },
    Get {
        key: KeyPath,
        reply: RpcReplyPort<(Option<Entry>, u64)>,
    },
    List {
        prefix: KeyPath,
        reply: RpcReplyPort<(Vec<Entry>, u64)>,
    },
    Subscribe {
        id: u64,
        prefix: KeyPath,
        from: Option<u64>,
        sender: mpsc::Sender<SubscriptionEvent>,
    },
    Put {
        key: KeyPath,
        value: serde_json::Value,
        cas: Option<u64>,
        /// The REST caller behind the write (`acl::writer`), carried to the store.
        writer: Option<Writer>,
        reply: RpcReplyPort<Result<u64, StoreError>>,
    },
    Delete {
        key: KeyPath,
        cas: Option<u64>,
        recurse: bool,
        writer: Option<Writer>,
        reply: RpcReplyPort<Result<Option<u64>, StoreError>>,
    },
    /// The store finished a write; acknowledge it once `version` is applied here.
    WriteDone {
        version: u64,
        ack: WriteAck,
    },
    Tick,
}

pub(crate) struct RegistryShard;

pub(crate) struct ShardArgs {
    pub(crate) number: usize,
    pub(crate) feed: ActorRef<FeedMsg>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) metrics: RegistryMetrics,
}

pub(crate) struct ShardState {
    number: usize,
    store: Arc<dyn Store>,
    replica: Replica,
    subscribers: SubscriberSet,
    waiting: Vec<(u64, Instant, WriteAck)>,
    metrics: RegistryMetrics,
}

impl Actor for RegistryShard {
    type Msg = ShardMsg;
    type State = ShardState;
    type Arguments = ShardArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ShardMsg>,
        args: ShardArgs,
    ) -> Result<ShardState, ActorProcessingErr> {
        let number = args.number;
        let (entries, index, history) = ractor::call!(args.feed, |reply| FeedMsg::AttachShard {
            number,
            shard: myself.clone(),
            reply,
        })?;
        let mut replica = Replica::new(DEFAULT_RING_CAPACITY);
        replica.load_with_history(entries, index, history);
        tracing::debug!(
            shard = number,
            keys = replica.live_keys(),
            index = replica.index(),
            "shard loaded"
        );
        myself.send_interval(TICK, || ShardMsg::Tick);
        Ok(ShardState {
            number,
            store: args.store,
            replica,
            subscribers: SubscriberSet::default(),
            waiting: Vec::new(),
            metrics: args.metrics,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ShardMsg>,
        message: ShardMsg,
        state: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ShardMsg::Apply {
                changes,
                index,
                received,
            } => {
                for change in changes {
                    if let Some(change) = state.replica.apply_shared(change) {
                        let dropped = state.subscribers.fan_out(&change);
                        state.metrics.subscribers.sub(dropped as i64);
                    }
                }
                state.replica.advance(index);
                state
                    .metrics
                    .fanout_seconds
                    .observe(received.elapsed().as_secs_f64());
                state.release_applied_writes();
            }
            ShardMsg::Get { key, reply } => {
                let _ = reply.send((state.replica.get(&key), state.replica.index()));
            }
            ShardMsg::List { prefix, reply } => {
                let _ = reply.send((state.replica.list(&prefix), state.replica.index()));
            }
            ShardMsg::Subscribe {
                id,
                prefix,
                from,
                sender,
            } => state.subscribe(Subscriber::new(id, prefix, sender), from),
            ShardMsg::Put {
                key,
                value,
                cas,
                writer,
                reply,
            } => {
                let store = state.store.clone();
                spawn_write(
                    myself,
                    scope(writer, async move { store.put(&key, &value, cas).await }),
                    reply,
                    Some,
                );
            }
            ShardMsg::Delete {
                key,
                cas,
                recurse,
                writer,
                reply,
            } => {
                let store = state.store.clone();
                spawn_write(
                    myself,
                    scope(
                        writer,
                        async move { store.delete(&key, cas, recurse).await },
                    ),
                    reply,
                    |v| v,
                );
            }
            ShardMsg::WriteDone { version, ack } => {
                if version <= state.replica.index() {
                    ack();
                } else {
                    state
                        .waiting
                        .push((version, Instant::now() + WRITE_APPLY_TIMEOUT, ack));
                }
            }
            ShardMsg::Tick => {
                state.release_expired_writes();
                let pruned = state.subscribers.prune_closed();
                state.metrics.subscribers.sub(pruned as i64);
                state.replica.sweep_tombstones(TOMBSTONE_TTL);
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ShardMsg>,
        state: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        state
            .metrics
            .subscribers
            .sub(state.subscribers.len() as i64);
        tracing::debug!(shard = state.number, "shard stopped");
        Ok(())
    }
}

/// Runs a store write off the shard's handler; its acknowledgement comes back as `WriteDone`.
fn spawn_write<T, F>(
    shard: ActorRef<ShardMsg>,
    write: F,
    reply: RpcReplyPort<Result<T, StoreError>>,
    version_of: fn(T) -> Option<u64>,
) where
    T: Clone + Send + 'static,
    F: std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
{
    tokio::spawn(async move {
        let result = write.await;
        let version = match &result {
            Ok(value) => version_of(value.clone()),
            Err(_) => None,
        };
        let ack: WriteAck = Box::new(move || {
            let _ = reply.send(result);
        });
        match version {
            Some(version) => {
                // If the shard is gone, the write is durable: acknowledge it directly.
                if let Err(ractor::MessagingErr::SendErr(ShardMsg::WriteDone { ack, .. })) =
                    shard.cast(ShardMsg::WriteDone { version, ack })
                {
                    ack();
                }
            }
            None => ack(),
        }
    });
}

impl ShardState {
    fn subscribe(&mut self, subscriber: Subscriber, from: Option<u64>) {
        if attach(&self.replica, &mut self.subscribers, subscriber, from) {
            self.metrics.subscribers.inc();
        }
    }

    fn release_applied_writes(&mut self) {
        let index = self.replica.index();
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|(v, _, _)| *v <= index);
        self.waiting = waiting;
        ready.into_iter().for_each(|(_, _, ack)| ack());
    }

    fn release_expired_writes(&mut self) {
        let now = Instant::now();
        let (expired, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|(_, d, _)| *d <= now);
        self.waiting = waiting;
        for (version, _, ack) in expired {
            tracing::warn!(
                shard = self.number,
                version,
                "write acknowledged before its change came back from the store"
            );
            ack();
        }
    }
}
