//! Subscribers of the registry: where fanned-out changes go, and the receiving end callers hold.
//!
//! A subscription watches one prefix from a starting index. It first receives either the changes
//! after that index still held in memory, or — when the index is too old — one snapshot of the
//! prefix; then every change under the prefix, in version order, with no gap and no duplicate.
//! A subscriber that cannot keep up is dropped: its receiver then ends, and the caller
//! re-subscribes from the last index it saw (which is what `Subscription::resume` does).

use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use lathe::{Change, ChangeOp, Entry, KeyPath};
use serde::Serialize;
use tokio::sync::mpsc;

/// How many events may wait for a subscriber before it is dropped as too slow.
pub const SUBSCRIBER_QUEUE: usize = 4096;

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq)]
pub enum SubscriptionEvent {
    /// The whole prefix as of `index` (sent instead of changes when the start index is too old).
    Snapshot { entries: Vec<Entry>, index: u64 },
    /// One change under the prefix, shared with every other subscriber it went to.
    Change(Arc<SharedChange>),
}

/// One change as fanned out: a single allocation shared by every subscriber it goes to, with its
/// JSON encoding made once for all of them (a change to a key a thousand clients watch is encoded
/// once, not a thousand times).
#[derive(Debug)]
pub struct SharedChange {
    change: Change,
    json: OnceLock<Bytes>,
}

/// The JSON of a change on the wire (`/v1/watch` events): `{"key","value","version","op"}`.
#[derive(Serialize)]
struct ChangeJson<'a> {
    key: &'a KeyPath,
    value: &'a Option<serde_json::Value>,
    version: u64,
    op: ChangeOp,
}

impl SharedChange {
    pub fn new(change: Change) -> Arc<SharedChange> {
        Arc::new(SharedChange {
            change,
            json: OnceLock::new(),
        })
    }

    /// `{"key","value","version","op"}` (`value` is `null` for a delete), encoded on first use.
    pub fn json(&self) -> &Bytes {
        self.json.get_or_init(|| {
            let change = &self.change;
            let json = ChangeJson {
                key: &change.key,
                value: &change.value,
                version: change.version,
                op: change.op(),
            };
            // A map of a string, a JSON value and numbers always encodes.
            Bytes::from(serde_json::to_vec(&json).unwrap_or_default())
        })
    }
}

impl Deref for SharedChange {
    type Target = Change;

    fn deref(&self) -> &Change {
        &self.change
    }
}

impl PartialEq for SharedChange {
    fn eq(&self, other: &SharedChange) -> bool {
        self.change == other.change
    }
}

impl SubscriptionEvent {
    /// The index this event brings its receiver to.
    pub fn index(&self) -> u64 {
        match self {
            SubscriptionEvent::Snapshot { index, .. } => *index,
            SubscriptionEvent::Change(change) => change.version,
        }
    }
}

/// The sending half, held by a shard or the feed.
#[derive(Debug)]
pub(crate) struct Subscriber {
    pub(crate) id: u64,
    pub(crate) prefix: KeyPath,
    sender: mpsc::Sender<SubscriptionEvent>,
}

/// Whether a delivery reached the subscriber.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    Delivered,
    /// The subscriber is gone or too slow: drop it.
    Dropped,
}

impl Subscriber {
    pub(crate) fn new(id: u64, prefix: KeyPath, sender: mpsc::Sender<SubscriptionEvent>) -> Self {
        Subscriber { id, prefix, sender }
    }

    pub(crate) fn deliver(&self, event: SubscriptionEvent) -> Delivery {
        match self.sender.try_send(event) {
            Ok(()) => Delivery::Delivered,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::debug!(subscriber = self.id, prefix = %self.prefix,
                    "subscriber too slow: dropped");
                Delivery::Dropped
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Delivery::Dropped,
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// The receiving half of a subscription.
#[derive(Debug)]
pub struct Subscription {
    pub(crate) prefix: KeyPath,
    pub(crate) receiver: mpsc::Receiver<SubscriptionEvent>,
}

impl Subscription {
    /// The watched prefix.
    pub fn prefix(&self) -> &KeyPath {
        &self.prefix
    }

    /// The next event, or `None` when the subscription ended (registry restart, too slow).
    pub async fn next(&mut self) -> Option<SubscriptionEvent> {
        self.receiver.recv().await
    }
}

/// The subscribers of one actor, grouped by prefix so that a change is matched against its
/// key's ancestors (a handful of lookups) rather than against every subscriber.
#[derive(Debug, Default)]
pub(crate) struct SubscriberSet {
    by_prefix: std::collections::HashMap<KeyPath, Vec<Subscriber>>,
    count: usize,
}

impl SubscriberSet {
    pub(crate) fn insert(&mut self, subscriber: Subscriber) {
        self.by_prefix
            .entry(subscriber.prefix.clone())
            .or_default()
            .push(subscriber);
        self.count += 1;
    }

    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// Sends `change` to every subscriber whose prefix covers its key; drops those that fail.
    /// Returns how many subscribers were dropped.
    pub(crate) fn fan_out(&mut self, shared: &Arc<SharedChange>) -> usize {
        if self.count == 0 {
            return 0;
        }
        let change: &Change = shared;
        let mut dropped = 0;
        for prefix in change.key.ancestors_inclusive() {
            let Some(subscribers) = self.by_prefix.get_mut(&prefix) else {
                continue;
            };
            let before = subscribers.len();
            subscribers.retain(|s| {
                s.deliver(SubscriptionEvent::Change(shared.clone())) == Delivery::Delivered
            });
            dropped += before - subscribers.len();
            if subscribers.is_empty() {
                self.by_prefix.remove(&prefix);
            }
        }
        self.count -= dropped;
        dropped
    }

    /// Removes subscribers whose receivers were dropped. Returns how many were removed.
    pub(crate) fn prune_closed(&mut self) -> usize {
        let mut removed = 0;
        self.by_prefix.retain(|_, subscribers| {
            let before = subscribers.len();
            subscribers.retain(|s| !s.is_closed());
            removed += before - subscribers.len();
            !subscribers.is_empty()
        });
        self.count -= removed;
        removed
    }
}

/// Starts `subscriber` from `from` against `replica` — the changes after `from` it still holds, or
/// a snapshot of the prefix when `from` is older — then adds it to `set` for future changes.
pub(crate) fn attach(
    replica: &super::replica::Replica,
    set: &mut SubscriberSet,
    subscriber: Subscriber,
    from: Option<u64>,
) -> bool {
    if let Some(from) = from {
        let backlog = match replica.changes_since(&subscriber.prefix, from) {
            Some(changes) => changes.into_iter().map(SubscriptionEvent::Change).collect(),
            None => vec![SubscriptionEvent::Snapshot {
                entries: replica.list(&subscriber.prefix),
                index: replica.index(),
            }],
        };
        for event in backlog {
            if subscriber.deliver(event) == Delivery::Dropped {
                return false;
            }
        }
    }
    set.insert(subscriber);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(key: &str, version: u64) -> Arc<SharedChange> {
        SharedChange::new(Change {
            key: KeyPath::parse(key).unwrap(),
            value: Some(serde_json::json!(version)),
            version,
        })
    }

    #[tokio::test]
    async fn fans_out_by_prefix_and_drops_slow_subscribers() {
        let mut set = SubscriberSet::default();
        let (tx_a, mut rx_a) = mpsc::channel(8);
        let (tx_root, mut rx_root) = mpsc::channel(1);
        let (tx_other, mut rx_other) = mpsc::channel(8);
        set.insert(Subscriber::new(1, KeyPath::parse("/a").unwrap(), tx_a));
        set.insert(Subscriber::new(2, KeyPath::root(), tx_root));
        set.insert(Subscriber::new(3, KeyPath::parse("/ab").unwrap(), tx_other));
        assert_eq!(set.fan_out(&change("/a/b", 1)), 0);
        // the root subscriber's queue (1) is full now: the next change drops it
        assert_eq!(set.fan_out(&change("/a/c", 2)), 1);
        assert_eq!(set.len(), 2);
        assert_eq!(rx_a.recv().await.unwrap().index(), 1);
        assert_eq!(rx_a.recv().await.unwrap().index(), 2);
        assert_eq!(rx_root.recv().await.unwrap().index(), 1);
        assert!(rx_root.recv().await.is_none());
        assert!(rx_other.try_recv().is_err());
    }
}
