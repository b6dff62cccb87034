//! `CapacityDemand`: what the leading scheduler could not place for want of room, published after
//! every reconcile for the node's resource manager (`crate::resources`).
//!
//! ```text
//! Scheduler ──reconcile──> place() ──pending (Full)──> DemandSender ──watch──> ResourceManager
//!                                                                               asks for nodes
//! ```
//!
//! The demand names the nodes the placement had, so the resource manager can tell the nodes it
//! started that were already counted (they joined and are full too) from those still on their
//! way — without that, a count made before a new node joined would ask for it twice.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::watch;

/// The outcome of one reconcile, as far as capacity goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapacityDemand {
    /// Instances pending because every node that can run their task type is at its
    /// `--max-instances`.
    pub pending: usize,
    /// The nodes the placement could use (live members, by name).
    pub nodes: BTreeSet<String>,
}

/// The scheduler's end of the demand channel; every incarnation of the scheduler publishes on
/// the same one.
#[derive(Debug, Clone)]
pub struct DemandSender(Arc<watch::Sender<CapacityDemand>>);

/// A channel for the capacity demand: the scheduler publishes, the resource manager watches.
pub fn demand_channel() -> (DemandSender, watch::Receiver<CapacityDemand>) {
    let (sender, receiver) = watch::channel(CapacityDemand::default());
    (DemandSender(Arc::new(sender)), receiver)
}

impl DemandSender {
    /// Publishes `demand`; watchers are woken only when it differs from the last one.
    pub fn publish(&self, demand: CapacityDemand) {
        self.0.send_if_modified(|current| {
            let changed = *current != demand;
            if changed {
                *current = demand;
            }
            changed
        });
    }

    /// Another receiver (a restarted resource manager).
    pub fn subscribe(&self) -> watch::Receiver<CapacityDemand> {
        self.0.subscribe()
    }
}
