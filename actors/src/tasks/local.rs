//! The HTTP instances serving in this process, by group: `forward` hands a request to one of them
//! directly — an in-process call, no socket, no HTTP encoding — when the target group has an
//! instance on this node. That is what the seed's `+7` bias (LBs beside their frontpages) buys.
//!
//! An instance is listed from the moment it serves until its server starts draining or is dropped
//! (the [`LocalRegistration`] guard the server holds), so a crashed or killed instance is never
//! called.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::http_server::HttpInstance;

type Group = Vec<(u32, Arc<HttpInstance>)>;

/// This node's serving HTTP instances.
#[derive(Default)]
pub(crate) struct LocalInstances {
    groups: RwLock<HashMap<String, Group>>,
}

impl LocalInstances {
    /// Lists `instance` as `group`/`index` until the returned guard is dropped.
    pub(crate) fn register(
        self: &Arc<Self>,
        group: &str,
        index: u32,
        instance: Arc<HttpInstance>,
    ) -> LocalRegistration {
        let mut groups = self.groups.write().unwrap_or_else(|e| e.into_inner());
        let members = groups.entry(group.to_string()).or_default();
        members.retain(|(i, _)| *i != index);
        members.push((index, instance.clone()));
        members.sort_by_key(|(i, _)| *i);
        LocalRegistration {
            local: self.clone(),
            group: group.to_string(),
            index,
            instance,
        }
    }

    /// The `nth` (modulo their number) of this node's instances of `group` that `listed` accepts
    /// (an index of the target as discovery shows it), if any.
    pub(crate) fn pick(
        &self,
        group: &str,
        nth: usize,
        listed: impl Fn(u32) -> bool,
    ) -> Option<Arc<HttpInstance>> {
        let groups = self.groups.read().unwrap_or_else(|e| e.into_inner());
        let members = groups.get(group)?;
        let count = members.iter().filter(|(i, _)| listed(*i)).count();
        if count == 0 {
            return None;
        }
        members
            .iter()
            .filter(|(i, _)| listed(*i))
            .nth(nth % count)
            .map(|(_, instance)| instance.clone())
    }

    fn remove(&self, group: &str, index: u32, instance: &Arc<HttpInstance>) {
        let mut groups = self.groups.write().unwrap_or_else(|e| e.into_inner());
        if let Some(members) = groups.get_mut(group) {
            members.retain(|(i, listed)| !(*i == index && Arc::ptr_eq(listed, instance)));
            if members.is_empty() {
                groups.remove(group);
            }
        }
    }
}

/// Keeps one instance listed; dropping it takes the instance off the list.
pub(crate) struct LocalRegistration {
    local: Arc<LocalInstances>,
    group: String,
    index: u32,
    instance: Arc<HttpInstance>,
}

impl Drop for LocalRegistration {
    fn drop(&mut self) {
        self.local.remove(&self.group, self.index, &self.instance);
    }
}
