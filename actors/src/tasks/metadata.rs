//! Group metadata on one node: the registry keys directly under a group's path
//! (`/task/http/lb/backend_distribution`), mirrored once per group and shared by the node's
//! instances of that group; `metadata_changed` is a counter bumped on every change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use lathe::{layout, KeyPath, LookupError};
use tokio::sync::watch;

use super::mirror::{direct_children, spawn_mirror, AbortOnDrop, Entries};
use crate::registry::RegistryHandle;

/// One group's metadata, as of the latest registry change.
pub(crate) struct GroupMetadata {
    group: String,
    values: RwLock<HashMap<String, serde_json::Value>>,
    /// 0 until the first listing arrives, then bumped on every change.
    changed: watch::Sender<u64>,
    mirror: Mutex<Option<AbortOnDrop>>,
}

impl GroupMetadata {
    pub(crate) fn lookup(&self, key: &str) -> Option<serde_json::Value> {
        let values = self.values.read().unwrap_or_else(|e| e.into_inner());
        values.get(key).cloned()
    }

    pub(crate) fn changed(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Waits for the first listing (an instance starts only once it can read its metadata).
    pub(crate) async fn wait_loaded(&self, timeout: Duration) -> Result<(), LookupError> {
        let mut changed = self.changed.subscribe();
        let loaded = tokio::time::timeout(timeout, changed.wait_for(|generation| *generation > 0))
            .await
            .is_ok_and(|changed| changed.is_ok());
        if loaded {
            return Ok(());
        }
        Err(LookupError::Unavailable(format!(
            "the metadata of group {} did not load within {timeout:?}",
            self.group
        )))
    }

    /// Takes the mirror's entries; bumps the counter when the group's own keys changed.
    fn update(&self, entries: &Entries, path: &KeyPath) {
        let fresh: HashMap<String, serde_json::Value> = direct_children(entries, path)
            .map(|(name, value)| (name.to_string(), value.clone()))
            .collect();
        let mut values = self.values.write().unwrap_or_else(|e| e.into_inner());
        let first = *self.changed.borrow() == 0;
        if first || *values != fresh {
            *values = fresh;
            drop(values);
            self.changed.send_modify(|generation| *generation += 1);
            tracing::debug!(group = %self.group, generation = *self.changed.borrow(),
                "group metadata changed");
        }
    }
}

/// The node's group metadata: one mirror per group with a live instance on this node.
#[derive(Clone)]
pub(crate) struct MetadataCache {
    registry: RegistryHandle,
    groups: Arc<Mutex<HashMap<String, Weak<GroupMetadata>>>>,
}

impl MetadataCache {
    pub(crate) fn new(registry: RegistryHandle) -> Self {
        MetadataCache {
            registry,
            groups: Arc::default(),
        }
    }

    /// The group's metadata, mirrored for as long as someone holds the returned `Arc`.
    pub(crate) fn group(&self, group: &str) -> Result<Arc<GroupMetadata>, LookupError> {
        let path = layout::group_path(group)
            .ok()
            .filter(|path| !path.is_root())
            .ok_or_else(|| LookupError::NoSuchGroup(group.to_string()))?;
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        groups.retain(|_, weak| weak.strong_count() > 0);
        if let Some(existing) = groups.get(group).and_then(Weak::upgrade) {
            return Ok(existing);
        }
        let metadata = Arc::new(GroupMetadata {
            group: group.to_string(),
            values: RwLock::default(),
            changed: watch::channel(0).0,
            mirror: Mutex::new(None),
        });
        let weak = Arc::downgrade(&metadata);
        let watched = path.clone();
        let mirror = spawn_mirror(self.registry.clone(), path, move |entries| {
            let Some(metadata) = weak.upgrade() else {
                return false;
            };
            metadata.update(entries, &watched);
            true
        });
        *metadata.mirror.lock().unwrap_or_else(|e| e.into_inner()) = Some(mirror);
        groups.insert(group.to_string(), Arc::downgrade(&metadata));
        Ok(metadata)
    }
}
