//! A supervisor's place in the node's [`ActorTree`]: the [`TreeScope`] it reports its children
//! to — started, restarting (counted), removed, or all children of one kind at once.

use std::collections::HashMap;

use ractor::ActorCell;

use super::{ActorKind, ActorStatus, ActorTree};

/// What a supervisor reports about one child (see [`TreeScope::sync`]).
#[derive(Debug, Clone)]
pub struct ChildReport {
    /// The child's name under its supervisor: `shard-2`, `task.http.lb/0`.
    pub name: String,
    pub status: ActorStatus,
    pub restarts: u64,
    pub reason: Option<String>,
    /// The live actor, if any (what a drill kills).
    pub cell: Option<ActorCell>,
}

impl PartialEq for ChildReport {
    fn eq(&self, other: &Self) -> bool {
        (&self.name, self.status, self.restarts, &self.reason)
            == (&other.name, other.status, other.restarts, &other.reason)
            && self.cell.as_ref().map(ActorCell::get_id)
                == other.cell.as_ref().map(ActorCell::get_id)
    }
}

/// A supervisor's place in the tree: where it reports its children.
#[derive(Clone, Debug)]
pub struct TreeScope {
    tree: ActorTree,
    path: String,
}

impl TreeScope {
    pub(super) fn at(tree: ActorTree, path: &str) -> Self {
        TreeScope {
            tree,
            path: path.to_string(),
        }
    }

    /// A scope in a tree of its own, for a subsystem started outside a node (tests, tools).
    pub fn detached(path: &str) -> Self {
        TreeScope {
            tree: ActorTree::new("local"),
            path: path.to_string(),
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn tree(&self) -> &ActorTree {
        &self.tree
    }

    /// The scope of the child `name` (registered once it is [`started`](Self::started)).
    pub fn child(&self, name: &str) -> TreeScope {
        TreeScope {
            tree: self.tree.clone(),
            path: self.child_path(name),
        }
    }

    pub fn child_path(&self, name: &str) -> String {
        format!("{}/{name}", self.path)
    }

    /// The child `name` runs (first start or restart) as `cell`.
    pub fn started(&self, name: &str, kind: ActorKind, cell: &ActorCell) {
        let path = self.child_path(name);
        self.tree
            .lock()
            .started(&path, Some(&self.path), kind, cell);
    }

    /// The child `name` died and is being restarted: counted in its restarts and in
    /// `lathe_actor_restarts_total`.
    pub fn restarting(&self, name: &str, kind: ActorKind, reason: &str) {
        let path = self.child_path(name);
        let mut inner = self.tree.lock();
        let entry = inner.entry(&path, Some(&self.path), kind);
        entry.status = ActorStatus::Restarting;
        entry.restarts += 1;
        entry.reason = Some(reason.to_string());
        entry.cell = None;
        *inner.restarts.entry(kind).or_insert(0) += 1;
    }

    /// Counts one restart of a `kind` child whose own count is reported by [`sync`](Self::sync).
    pub fn count_restart(&self, kind: ActorKind) {
        *self.tree.lock().restarts.entry(kind).or_insert(0) += 1;
    }

    /// The child `name` is gone for good, with everything below it.
    pub fn removed(&self, name: &str) {
        let path = self.child_path(name);
        self.tree.lock().remove_subtree(&path);
    }

    /// Makes the children of `kind` under this scope exactly `children` (a supervisor with many
    /// children of one kind reports them all at once).
    pub fn sync(&self, kind: ActorKind, children: &[ChildReport]) {
        let mut inner = self.tree.lock();
        let wanted: HashMap<String, &ChildReport> = children
            .iter()
            .map(|c| (self.child_path(&c.name), c))
            .collect();
        inner.entries.retain(|path, entry| {
            entry.kind != kind
                || entry.parent.as_deref() != Some(self.path.as_str())
                || wanted.contains_key(path)
        });
        for child in children {
            let path = self.child_path(&child.name);
            let entry = inner.entry(&path, Some(&self.path), kind);
            entry.status = child.status;
            entry.restarts = child.restarts;
            entry.reason = child.reason.clone();
            entry.cell = child.cell.clone();
        }
    }
}
