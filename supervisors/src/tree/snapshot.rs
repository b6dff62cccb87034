//! A copy of the tree, nested, as `GET /v1/tree` answers it:
//! `{"path", "kind", "status", "restarts", "reason"?, "children": [...]}`.

use std::collections::HashMap;

use serde::Serialize;

use super::{ActorKind, ActorStatus, ActorTree, Inner};

/// One actor and, nested, its children.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActorSnapshot {
    pub path: String,
    pub kind: ActorKind,
    pub status: ActorStatus,
    pub restarts: u64,
    /// Why it is restarting or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub children: Vec<ActorSnapshot>,
}

impl ActorSnapshot {
    /// The actor at `path` in this subtree.
    pub fn find(&self, path: &str) -> Option<&ActorSnapshot> {
        if self.path == path {
            return Some(self);
        }
        self.children.iter().find_map(|child| child.find(path))
    }

    /// Every actor of this subtree, depth first.
    pub fn flatten(&self) -> Vec<&ActorSnapshot> {
        let mut all = vec![self];
        for child in &self.children {
            all.extend(child.flatten());
        }
        all
    }
}

impl ActorTree {
    /// The tree as it is now: its roots (normally one, `node`), children in order of appearance.
    pub fn snapshot(&self) -> Vec<ActorSnapshot> {
        self.lock().snapshot()
    }

    /// The tree under the root `node`, if the root is registered.
    pub fn root_snapshot(&self) -> Option<ActorSnapshot> {
        self.snapshot()
            .into_iter()
            .find(|root| root.path == super::ROOT)
    }
}

impl Inner {
    fn snapshot(&self) -> Vec<ActorSnapshot> {
        let mut children: HashMap<&str, Vec<(u64, &str)>> = HashMap::new();
        let mut roots = Vec::new();
        for (path, entry) in &self.entries {
            match entry.parent.as_deref() {
                Some(parent) if self.entries.contains_key(parent) => children
                    .entry(parent)
                    .or_default()
                    .push((entry.seq, path.as_str())),
                _ => roots.push((entry.seq, path.as_str())),
            }
        }
        roots.sort_unstable();
        children.values_mut().for_each(|c| c.sort_unstable());
        roots
            .into_iter()
            .map(|(_, path)| self.build(path, &children, 0))
            .collect()
    }

    fn build(
        &self,
        path: &str,
        children: &HashMap<&str, Vec<(u64, &str)>>,
        depth: usize,
    ) -> ActorSnapshot {
        let entry = &self.entries[path];
        let nested = match children.get(path) {
            // Paths are a tree by construction; the bound only guards against a cycle.
            Some(list) if depth < 32 => list
                .iter()
                .map(|(_, child)| self.build(child, children, depth + 1))
                .collect(),
            _ => Vec::new(),
        };
        ActorSnapshot {
            path: path.to_string(),
            kind: entry.kind,
            status: entry.status,
            restarts: entry.restarts,
            reason: entry.reason.clone(),
            children: nested,
        }
    }
}
