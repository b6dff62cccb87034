//! The node-local endpoint cache behind `ctx.get_ref(group)`, shared by every instance on a node.
//!
//! A group is looked up in the registry on its first miss (`/lathe/endpoints/<group path>`) and
//! then kept current by a subscription, so an instance that stops or dies leaves the cache within
//! the registry's fan-out time. Hits are a read lock and a clone.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use lathe::{layout, Endpoint, LookupError, TaskRef};
use tokio::sync::watch;

use super::mirror::{direct_children, spawn_mirror, AbortOnDrop};
use crate::registry::RegistryHandle;

/// How long a first lookup waits for the registry before it fails.
const FIRST_FILL_TIMEOUT: Duration = Duration::from_secs(3);

struct WatchedGroup {
    current: watch::Receiver<Option<TaskRef>>,
    _mirror: AbortOnDrop,
}

/// Live endpoints of the groups this node's instances asked about.
pub struct EndpointCache {
    registry: RegistryHandle,
    groups: RwLock<HashMap<String, WatchedGroup>>,
}

impl EndpointCache {
    pub fn new(registry: RegistryHandle) -> Self {
        EndpointCache {
            registry,
            groups: RwLock::default(),
        }
    }

    /// The live instances of `group` (`task.http.frontpage.v4-2-1`), by index. A group with no
    /// live instance is an empty `TaskRef`, not an error.
    pub async fn get_ref(&self, group: &str) -> Result<TaskRef, LookupError> {
        let mut current = self.watch(group)?;
        if let Some(task_ref) = current.borrow().as_ref() {
            return Ok(task_ref.clone());
        }
        let filled = tokio::time::timeout(FIRST_FILL_TIMEOUT, current.wait_for(Option::is_some))
            .await
            .ok()
            .and_then(|filled| filled.ok().map(|task_ref| task_ref.clone()));
        filled
            .map(|task_ref| task_ref.unwrap_or_else(|| empty(group)))
            .ok_or_else(|| {
                LookupError::Unavailable(format!(
                    "the endpoints of group {group} did not load within {FIRST_FILL_TIMEOUT:?}"
                ))
            })
    }

    /// How many groups the cache follows.
    pub fn watched_groups(&self) -> usize {
        self.groups.read().map(|groups| groups.len()).unwrap_or(0)
    }

    fn watch(&self, group: &str) -> Result<watch::Receiver<Option<TaskRef>>, LookupError> {
        if let Some(watched) = self
            .groups
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(group)
        {
            return Ok(watched.current.clone());
        }
        layout::group_path(group)
            .ok()
            .filter(|path| !path.is_root())
            .ok_or_else(|| LookupError::NoSuchGroup(group.to_string()))?;
        let mut groups = self.groups.write().unwrap_or_else(|e| e.into_inner());
        let watched = groups.entry(group.to_string()).or_insert_with(|| {
            let (sender, current) = watch::channel(None);
            let prefix = layout::group_endpoints(group);
            let watched_prefix = prefix.clone();
            let name = group.to_string();
            tracing::debug!(group, "endpoint cache miss: watching the group");
            let mirror = spawn_mirror(self.registry.clone(), prefix, move |entries| {
                let mut instances: Vec<Endpoint> = direct_children(entries, &watched_prefix)
                    .filter_map(|(_, value)| serde_json::from_value(value.clone()).ok())
                    .filter(|endpoint: &Endpoint| endpoint.group == name)
                    .collect();
                instances.sort_by_key(|endpoint| endpoint.index);
                let fresh = TaskRef::new(name.as_str(), instances);
                sender.send_if_modified(|current| {
                    let modified = current.as_ref() != Some(&fresh);
                    *current = Some(fresh);
                    modified
                });
                !sender.is_closed()
            });
            WatchedGroup {
                current,
                _mirror: mirror,
            }
        });
        Ok(watched.current.clone())
    }
}

fn empty(group: &str) -> TaskRef {
    TaskRef::new(group, Vec::new())
}
