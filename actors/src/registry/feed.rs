//! `RegistryFeed`: the node's single, ordered view of the store.
//!
//! It consumes the store's event stream (one ZooKeeper watch per node, whatever the number of
//! subscribers), keeps a replica of the whole key space to drop duplicates and to re-sync after a
//! gap, and routes each change to the shard that owns its slice. Subscriptions to prefixes that
//! span slices (`/`, `/task`) live here, since only the feed sees every change in order.
//!
//! ```text
//! store events ──▶ RegistryFeed ──Apply──▶ RegistryShard × k ──▶ subscribers of their slices
//!                      └──────────────────────────────────────▶ subscribers of wide prefixes
//! ```

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use lathe::{Entry, KeyPath};
use lathe_store::{Store, StoreEvent, StoredEntry, TOMBSTONE_TTL};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorMessage;
use tokio::sync::{mpsc, watch};

use super::metrics::RegistryMetrics;
use super::replica::{shared, History, Replica, DEFAULT_RING_CAPACITY};
use super::shard::ShardMsg;
use super::slice::SliceMap;
use super::subscription::{attach, SharedChange, Subscriber, SubscriberSet, SubscriptionEvent};

const TICK: Duration = Duration::from_millis(250);

/// The shards as the handle sees them; `None` while a shard restarts.
pub(crate) type ShardTable = Arc<RwLock<Vec<Option<ActorRef<ShardMsg>>>>>;

#[derive(RactorMessage)]
pub(crate) enum FeedMsg {
    Store(StoreEvent),
    /// The store's event stream ended: the feed cannot vouch for anything any more.
    StreamEnded,
    /// A (re)started shard takes over its slice: it gets the slice as of the feed's index, the
    /// slice's recent changes (so its subscribers resume without a snapshot) and every change
    /// after it.
    AttachShard {
        number: usize,
        shard: ActorRef<ShardMsg>,
        reply: RpcReplyPort<(Vec<Arc<SharedChange>>, u64, History)>,
    },
    Get {
        key: KeyPath,
        reply: RpcReplyPort<(Option<Entry>, u64)>,
    },
    List {
        prefix: KeyPath,
        reply: RpcReplyPort<(Vec<Entry>, u64)>,
    },
    /// Live keys and the approximate bytes of their values.
    Usage {
        reply: RpcReplyPort<(usize, usize)>,
    },
    Subscribe {
        id: u64,
        prefix: KeyPath,
        from: Option<u64>,
        sender: mpsc::Sender<SubscriptionEvent>,
    },
    Tick,
}

pub(crate) struct RegistryFeed;

pub(crate) struct FeedArgs {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) slices: SliceMap,
    pub(crate) table: ShardTable,
    pub(crate) index: watch::Sender<u64>,
    pub(crate) metrics: RegistryMetrics,
}

pub(crate) struct FeedState {
    replica: Replica,
    slices: SliceMap,
    table: ShardTable,
    shards: Vec<Option<ActorRef<ShardMsg>>>,
    subscribers: SubscriberSet,
    index: watch::Sender<u64>,
    metrics: RegistryMetrics,
    forwarder: tokio::task::JoinHandle<()>,
}

impl Actor for RegistryFeed {
    type Msg = FeedMsg;
    type State = FeedState;
    type Arguments = FeedArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<FeedMsg>,
        args: FeedArgs,
    ) -> Result<FeedState, ActorProcessingErr> {
        let mut events = args.store.events();
        // The stream opens with the store's whole state: load it before serving anything.
        let mut replica = Replica::new(DEFAULT_RING_CAPACITY);
        match events.recv().await {
            Some(StoreEvent::Resync(snapshot)) => {
                let index = snapshot.index;
                replica.load(snapshot.entries.into_iter().map(shared), index);
            }
            Some(StoreEvent::Changes(_)) => {
                return Err("registry store stream did not open with a snapshot".into())
            }
            None => return Err("registry store stream ended before its first snapshot".into()),
        }
        tracing::info!(
            keys = replica.live_keys(),
            index = replica.index(),
            "registry loaded"
        );
        args.index.send_replace(replica.index());
        let feed = myself.clone();
        let forwarder = tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if feed.cast(FeedMsg::Store(event)).is_err() {
                    return;
                }
            }
            let _ = feed.cast(FeedMsg::StreamEnded);
        });
        myself.send_interval(TICK, || FeedMsg::Tick);
        let shards = vec![None; args.slices.shards()];
        Ok(FeedState {
            replica,
            slices: args.slices,
            table: args.table,
            shards,
            subscribers: SubscriberSet::default(),
            index: args.index,
            metrics: args.metrics,
            forwarder,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<FeedMsg>,
        message: FeedMsg,
        state: &mut FeedState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            FeedMsg::Store(StoreEvent::Changes(entries)) => state.apply(entries, None),
            FeedMsg::Store(StoreEvent::Resync(snapshot)) => {
                let index = snapshot.index;
                let updates = state.replica.resync(snapshot);
                tracing::info!(
                    index,
                    changed = updates.len(),
                    "registry re-synced with the store"
                );
                state.apply(updates, Some(index));
            }
            FeedMsg::StreamEnded => return Err("registry store event stream ended".into()),
            FeedMsg::AttachShard {
                number,
                shard,
                reply,
            } => {
                let slices = state.slices;
                let entries = state.replica.live(|key| slices.shard_of(key) == number);
                let history = state.replica.history(|key| slices.shard_of(key) == number);
                if reply
                    .send((entries, state.replica.index(), history))
                    .is_ok()
                {
                    state.set_shard(number, Some(shard));
                }
            }
            FeedMsg::Get { key, reply } => {
                let _ = reply.send((state.replica.get(&key), state.replica.index()));
            }
            FeedMsg::Usage { reply } => {
                let _ = reply.send(state.replica.usage());
            }
            FeedMsg::List { prefix, reply } => {
                let _ = reply.send((state.replica.list(&prefix), state.replica.index()));
            }
            FeedMsg::Subscribe {
                id,
                prefix,
                from,
                sender,
            } => state.subscribe(Subscriber::new(id, prefix, sender), from),
            FeedMsg::Tick => {
                let pruned = state.subscribers.prune_closed();
                state.metrics.subscribers.sub(pruned as i64);
                state.replica.sweep_tombstones(TOMBSTONE_TTL);
                state.refresh_dead_shards();
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<FeedMsg>,
        state: &mut FeedState,
    ) -> Result<(), ActorProcessingErr> {
        state.forwarder.abort();
        state
            .metrics
            .subscribers
            .sub(state.subscribers.len() as i64);
        Ok(())
    }
}

impl FeedState {
    /// Applies store entries in order, fans out the resulting changes and routes them to shards.
    fn apply(&mut self, entries: Vec<StoredEntry>, at_least: Option<u64>) {
        let received = Instant::now();
        let mut per_shard: Vec<Vec<Arc<SharedChange>>> = vec![Vec::new(); self.shards.len()];
        for entry in entries {
            let Some(change) = self.replica.apply(entry) else {
                continue;
            };
            self.metrics.changes_total.inc();
            let dropped = self.subscribers.fan_out(&change);
            self.metrics.subscribers.sub(dropped as i64);
            per_shard[self.slices.shard_of(&change.key)].push(change);
        }
        if let Some(index) = at_least {
            self.replica.advance(index);
        }
        let index = self.replica.index();
        // Publish the index before the shards can acknowledge a write at it, so no answer
        // carries an X-Lathe-Index below its own version.
        self.index.send_if_modified(|current| {
            let moved = *current != index;
            *current = index;
            moved
        });
        for (number, changes) in per_shard.into_iter().enumerate() {
            if let Some(shard) = &self.shards[number] {
                let apply = ShardMsg::Apply {
                    changes,
                    index,
                    received,
                };
                if shard.cast(apply).is_err() {
                    // Restarting: it re-attaches and gets its slice from the replica.
                    self.set_shard(number, None);
                }
            }
        }
    }

    fn set_shard(&mut self, number: usize, shard: Option<ActorRef<ShardMsg>>) {
        self.shards[number] = shard.clone();
        if let Ok(mut table) = self.table.write() {
            table[number] = shard;
        }
    }

    fn refresh_dead_shards(&mut self) {
        for number in 0..self.shards.len() {
            let dead = self.shards[number]
                .as_ref()
                .is_some_and(|s| s.get_status() == ractor::ActorStatus::Stopped);
            if dead {
                self.set_shard(number, None);
            }
        }
    }

    fn subscribe(&mut self, subscriber: Subscriber, from: Option<u64>) {
        if attach(&self.replica, &mut self.subscribers, subscriber, from) {
            self.metrics.subscribers.inc();
        }
    }
}
