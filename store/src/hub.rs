//! Fan-out of one store's events to the channels of its consumers.
//!
//! Each consumer starts out *unsynced*: it gets nothing until the backend hands it a
//! `Resync(snapshot)`. A synced consumer then gets every `Changes` batch. A consumer whose channel
//! is full drops back to unsynced instead of blocking the store (or every other consumer): once it
//! has room again, the backend sends it a fresh `Resync`. Consumers that hung up are forgotten.

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::{Snapshot, StoreEvent, StoredEntry};

struct Consumer {
    sender: mpsc::Sender<StoreEvent>,
    synced: bool,
}

/// The consumers of one store's events.
#[derive(Default)]
pub(crate) struct Hub {
    consumers: Vec<Consumer>,
}

impl Hub {
    /// Adds a consumer; it gets events from its first `Resync` on.
    pub(crate) fn add(&mut self, sender: mpsc::Sender<StoreEvent>) {
        self.consumers.push(Consumer {
            sender,
            synced: false,
        });
    }

    /// True when some consumer waits for a `Resync` and has room for it.
    pub(crate) fn wants_snapshot(&mut self) -> bool {
        self.consumers
            .retain(|consumer| !consumer.sender.is_closed());
        self.consumers
            .iter()
            .any(|consumer| !consumer.synced && consumer.sender.capacity() > 0)
    }

    /// Marks every consumer as needing a `Resync` (after a gap the store cannot vouch for).
    pub(crate) fn unsync_all(&mut self) {
        for consumer in &mut self.consumers {
            consumer.synced = false;
        }
    }

    /// Sends one `Changes` batch to every synced consumer.
    pub(crate) fn publish(&mut self, entries: &[StoredEntry]) {
        if entries.is_empty() {
            return;
        }
        self.consumers.retain_mut(|consumer| {
            if !consumer.synced {
                return !consumer.sender.is_closed();
            }
            match consumer
                .sender
                .try_send(StoreEvent::Changes(entries.to_vec()))
            {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    tracing::warn!("a registry store consumer fell behind; it will be re-synced");
                    consumer.synced = false;
                    true
                }
                Err(TrySendError::Closed(_)) => false,
            }
        });
    }

    /// Sends `Resync(snapshot)` to every unsynced consumer that has room; they are synced from
    /// then on.
    pub(crate) fn resync(&mut self, snapshot: &Snapshot) {
        self.consumers.retain_mut(|consumer| {
            if consumer.synced {
                return true;
            }
            match consumer
                .sender
                .try_send(StoreEvent::Resync(snapshot.clone()))
            {
                Ok(()) => {
                    consumer.synced = true;
                    true
                }
                Err(TrySendError::Full(_)) => true,
                Err(TrySendError::Closed(_)) => false,
            }
        });
    }

    /// The number of live consumers.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.consumers.len()
    }
}

#[cfg(test)]
mod tests {
    use lathe::KeyPath;

    use super::*;

    fn entry(version: u64) -> StoredEntry {
        StoredEntry {
            key: KeyPath::parse("/a").unwrap(),
            value: Some(serde_json::json!(version)),
            version,
        }
    }

    #[test]
    fn a_consumer_that_falls_behind_is_resynced_once_it_has_room() {
        let mut hub = Hub::default();
        let (sender, mut receiver) = mpsc::channel(2);
        hub.add(sender);
        assert!(hub.wants_snapshot());
        hub.publish(&[entry(1)]);
        assert!(
            receiver.try_recv().is_err(),
            "nothing before the first resync"
        );
        hub.resync(&Snapshot::default());
        assert!(matches!(receiver.try_recv(), Ok(StoreEvent::Resync(_))));
        hub.publish(&[entry(2)]);
        hub.publish(&[entry(3)]);
        hub.publish(&[entry(4)]); // full: falls behind
        assert!(!hub.wants_snapshot(), "no room yet");
        assert!(matches!(receiver.try_recv(), Ok(StoreEvent::Changes(_))));
        assert!(hub.wants_snapshot());
        hub.resync(&Snapshot {
            entries: vec![entry(4)],
            index: 4,
        });
        assert!(matches!(receiver.try_recv(), Ok(StoreEvent::Changes(_))));
        assert!(matches!(receiver.try_recv(), Ok(StoreEvent::Resync(s)) if s.index == 4));
        drop(receiver);
        hub.publish(&[entry(5)]);
        assert_eq!(hub.len(), 0);
    }
}
