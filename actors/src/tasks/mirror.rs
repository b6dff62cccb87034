//! A registry prefix mirrored in memory: list it, subscribe from the listing's index, and resume
//! from the last index seen whenever the subscription ends (registry restart, slow consumer).
//!
//! The task runtime keeps three kinds of mirrors: a node's assignments, a group's metadata and a
//! group's endpoints. Each hands the whole (small) prefix to a callback after every change.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::FutureExt;
use lathe::KeyPath;
use tokio::task::JoinHandle;

use crate::registry::{RegistryHandle, SubscriptionEvent};

/// Every live key under the prefix, with its value and version.
pub(crate) type Entries = BTreeMap<KeyPath, Mirrored>;

/// One mirrored key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Mirrored {
    pub(crate) value: serde_json::Value,
    pub(crate) version: u64,
}

fn mirrored(entries: Vec<lathe::Entry>) -> Entries {
    entries
        .into_iter()
        .map(|e| {
            let entry = Mirrored {
                value: e.value,
                version: e.version,
            };
            (e.key, entry)
        })
        .collect()
}

const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// How many already-queued events are applied before the callback runs (bursts such as a deploy
/// writing many assignments then cost one callback).
const BATCH: usize = 256;

/// A spawned task that is aborted when this is dropped.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub(crate) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Mirrors `prefix` and calls `on_update` with every live entry under it: once after the first
/// listing, then after every change (or burst of changes). Stops when `on_update` returns false or
/// when the returned guard is dropped.
pub(crate) fn spawn_mirror<F>(
    registry: RegistryHandle,
    prefix: KeyPath,
    on_update: F,
) -> AbortOnDrop
where
    F: FnMut(&Entries) -> bool + Send + 'static,
{
    AbortOnDrop(tokio::spawn(run_mirror(registry, prefix, on_update)))
}

async fn run_mirror<F>(registry: RegistryHandle, prefix: KeyPath, mut on_update: F)
where
    F: FnMut(&Entries) -> bool + Send + 'static,
{
    let mut entries = Entries::new();
    let mut from: Option<u64> = None;
    let mut retry = RETRY_FIRST;
    loop {
        if from.is_none() {
            match registry.list(&prefix).await {
                Ok((listed, index)) => {
                    entries = mirrored(listed);
                    from = Some(index);
                    if !on_update(&entries) {
                        return;
                    }
                }
                Err(error) => {
                    tracing::warn!(%prefix, %error, "cannot list a registry prefix: retrying");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(RETRY_MAX);
                    continue;
                }
            }
        }
        let mut subscription = match registry.subscribe(&prefix, from).await {
            Ok(subscription) => subscription,
            Err(error) => {
                tracing::warn!(%prefix, %error, "cannot subscribe to a registry prefix: retrying");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
                continue;
            }
        };
        retry = RETRY_FIRST;
        while let Some(event) = subscription.next().await {
            from = Some(apply(&mut entries, event));
            for _ in 0..BATCH {
                match subscription.next().now_or_never() {
                    Some(Some(event)) => from = Some(apply(&mut entries, event)),
                    _ => break,
                }
            }
            if !on_update(&entries) {
                return;
            }
        }
        tracing::debug!(%prefix, ?from, "registry subscription ended: resuming");
    }
}

/// Applies one event to the mirror and returns the index it brings the mirror to.
fn apply(entries: &mut Entries, event: SubscriptionEvent) -> u64 {
    let index = event.index();
    match event {
        SubscriptionEvent::Snapshot {
            entries: listed, ..
        } => {
            *entries = mirrored(listed);
        }
        SubscriptionEvent::Change(change) => match &change.value {
            Some(value) => {
                let version = change.version;
                let value = value.clone();
                entries.insert(change.key.clone(), Mirrored { value, version });
            }
            None => {
                entries.remove(&change.key);
            }
        },
    }
    index
}

/// The entries exactly one segment below `prefix` (a group's own keys, not its subgroups').
pub(crate) fn direct_children<'a>(
    entries: &'a Entries,
    prefix: &'a KeyPath,
) -> impl Iterator<Item = (&'a str, &'a serde_json::Value)> + 'a {
    let depth = prefix.depth() + 1;
    entries
        .iter()
        .filter(move |(key, _)| key.depth() == depth && key.is_under(prefix))
        .filter_map(|(key, entry)| key.segments().last().map(|name| (name, &entry.value)))
}
