//! A watch's current state of its subtree, built from snapshots and changes: pure, so the rules
//! (duplicates ignored, old snapshots ignored, no-op events reported as such) are unit-tested.

use std::collections::BTreeMap;

use lathe::{Change, Entry, KeyPath};
use serde_json::Value;

use super::View;

#[derive(Debug, Clone)]
pub struct Subtree {
    prefix: KeyPath,
    entries: BTreeMap<String, (Value, u64)>,
    /// The registry index this state is as of.
    index: u64,
    /// The newest change version seen under the prefix (what gossip compares).
    version: u64,
    /// Whether any snapshot or change was received yet.
    loaded: bool,
}

impl Subtree {
    pub fn new(prefix: KeyPath) -> Self {
        Subtree {
            prefix,
            entries: BTreeMap::new(),
            index: 0,
            version: 0,
            loaded: false,
        }
    }

    pub fn index(&self) -> u64 {
        self.index
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Replaces the state with a snapshot; returns whether the content changed (the first
    /// snapshot always counts as a change, so an empty subtree is rendered too).
    pub fn apply_snapshot(&mut self, index: u64, entries: Vec<Entry>) -> bool {
        if self.loaded && index < self.index {
            return false;
        }
        let fresh: BTreeMap<String, (Value, u64)> = entries
            .into_iter()
            .filter(|e| e.key.is_under(&self.prefix))
            .map(|e| (e.key.as_str().to_string(), (e.value, e.version)))
            .collect();
        let newest = fresh.values().map(|(_, v)| *v).max().unwrap_or(0);
        self.version = self.version.max(newest);
        let changed = !self.loaded || fresh != self.entries;
        self.entries = fresh;
        self.index = self.index.max(index);
        self.loaded = true;
        changed
    }

    /// Applies one change; returns whether the content changed. A change at or below the current
    /// index was seen already (a resumed stream repeats nothing, but a re-sync may).
    pub fn apply_change(&mut self, change: Change) -> bool {
        if change.version <= self.index || !change.key.is_under(&self.prefix) {
            return false;
        }
        self.index = change.version;
        self.version = self.version.max(change.version);
        let key = change.key.as_str().to_string();
        let first = !self.loaded;
        self.loaded = true;
        let changed = match change.value {
            Some(value) => {
                let before = self.entries.insert(key, (value.clone(), change.version));
                before.is_none_or(|(old, _)| old != value)
            }
            None => self.entries.remove(&key).is_some(),
        };
        changed || first
    }

    /// What actions see.
    pub fn view(&self, watch: &str) -> View {
        View {
            watch: watch.to_string(),
            prefix: self.prefix.as_str().to_string(),
            index: self.index,
            version: self.version,
            entries: self.entries.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(raw: &str) -> KeyPath {
        KeyPath::parse(raw).unwrap()
    }

    fn put(k: &str, value: i64, version: u64) -> Change {
        Change {
            key: key(k),
            value: Some(serde_json::json!(value)),
            version,
        }
    }

    #[test]
    fn changes_apply_once_and_deletes_remove() {
        let mut tree = Subtree::new(key("/a"));
        assert!(tree.apply_change(put("/a/x", 1, 5)));
        assert!(
            !tree.apply_change(put("/a/x", 2, 5)),
            "a repeated version is ignored"
        );
        assert!(
            !tree.apply_change(put("/a/x", 1, 6)),
            "same value: no content change"
        );
        assert!(!tree.apply_change(put("/b/x", 1, 7)), "outside the prefix");
        let delete = Change {
            key: key("/a/x"),
            value: None,
            version: 8,
        };
        assert!(tree.apply_change(delete));
        assert!(tree.is_empty());
        assert_eq!((tree.index(), tree.version()), (8, 8));
    }

    #[test]
    fn snapshots_replace_and_old_ones_are_ignored() {
        let mut tree = Subtree::new(key("/a"));
        let entry = |k: &str, v: u64| Entry {
            key: key(k),
            value: serde_json::json!(v),
            version: v,
        };
        assert!(tree.apply_snapshot(10, vec![]), "the first snapshot counts");
        assert!(tree.apply_snapshot(12, vec![entry("/a/1", 11), entry("/c", 3)]));
        assert_eq!(tree.len(), 1);
        assert!(!tree.apply_snapshot(13, vec![entry("/a/1", 11)]));
        assert!(!tree.apply_snapshot(9, vec![]), "older than the state");
        assert_eq!((tree.index(), tree.version()), (13, 11));
        assert!(
            !tree.apply_change(put("/a/1", 5, 12)),
            "covered by the snapshot"
        );
    }
}
