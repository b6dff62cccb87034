//! The in-memory replica of (a slice of) the registry: values, tombstones and recent changes.
//!
//! Pure data, no actors: the feed holds one for the whole key space and each shard one for its
//! slice. Every mutation goes through [`Replica::apply`], which drops anything not newer than what
//! the replica already has for that key, so the same change arriving twice (an event after a
//! re-list, a coalesced read) is applied and fanned out once.
//!
//! **One copy of each value.** A change becomes one [`SharedChange`] when the feed applies it;
//! the feed's slot and ring, the shard's slot and ring and every subscriber hold that same
//! allocation. Only reads (`get`, `list`) copy a value out. (A change's JSON encoding, made once
//! for `/v1/watch` streams, lives as long as the change does: a watched value costs its parsed
//! form plus its text.)

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lathe::{Change, Entry, KeyPath};
use lathe_store::{Snapshot, StoredEntry};

use super::subscription::SharedChange;

/// How many recent changes a replica keeps for subscribers resuming from an index.
pub(crate) const DEFAULT_RING_CAPACITY: usize = 8192;
/// How many bytes of values (as JSON, roughly) that ring holds at most: a burst of large values
/// must not keep thousands of copies alive. Subscribers resuming from before it get a snapshot.
pub(crate) const DEFAULT_RING_MAX_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone)]
struct Slot {
    version: u64,
    /// The put that set the value, shared with the rings and subscribers. `None`: a tombstone,
    /// kept so an older write arriving late is recognised as old.
    put: Option<Arc<SharedChange>>,
    tombstone_since: Option<Instant>,
}

/// Recent changes of part of the key space, handed from the feed to a (re)starting shard.
#[derive(Debug, Default)]
pub(crate) struct History {
    /// In version order.
    pub(crate) changes: Vec<Arc<SharedChange>>,
    /// Every change of that part above this version is in `changes`.
    pub(crate) floor: u64,
}

/// Keys with their versions, plus a ring of the most recent changes.
#[derive(Debug)]
pub(crate) struct Replica {
    slots: BTreeMap<String, Slot>,
    ring: VecDeque<Arc<SharedChange>>,
    ring_capacity: usize,
    /// The approximate size of the values in the ring, and its cap.
    ring_bytes: usize,
    ring_max_bytes: usize,
    /// Live keys and the approximate size of their values (for the registry quota).
    live: usize,
    live_bytes: usize,
    /// Every change with a version above `floor` is in the ring.
    floor: u64,
    index: u64,
}

impl Replica {
    pub(crate) fn new(ring_capacity: usize) -> Self {
        Replica {
            slots: BTreeMap::new(),
            ring: VecDeque::new(),
            ring_capacity: ring_capacity.max(1),
            ring_bytes: 0,
            ring_max_bytes: DEFAULT_RING_MAX_BYTES,
            live: 0,
            live_bytes: 0,
            floor: 0,
            index: 0,
        }
    }

    /// The same replica with its ring capped at `bytes` of values instead of the default.
    #[cfg(test)]
    pub(crate) fn with_ring_max_bytes(mut self, bytes: usize) -> Self {
        self.ring_max_bytes = bytes;
        self
    }

    /// Replaces the contents with `entries` (a listing consistent with `index`). The ring starts
    /// empty: subscribers resuming from before `index` get a snapshot.
    pub(crate) fn load(
        &mut self,
        entries: impl IntoIterator<Item = Arc<SharedChange>>,
        index: u64,
    ) {
        self.slots.clear();
        self.ring.clear();
        self.ring_bytes = 0;
        let now = Instant::now();
        let mut max = index;
        for change in entries {
            max = max.max(change.version);
            let tombstone_since = change.value.is_none().then_some(now);
            self.slots.insert(
                change.key.as_str().to_string(),
                Slot {
                    version: change.version,
                    put: change.value.is_some().then_some(change),
                    tombstone_since,
                },
            );
        }
        self.index = max;
        self.floor = max;
        self.live = 0;
        self.live_bytes = 0;
        for value in self.slots.values().filter_map(Slot::value) {
            self.live += 1;
            self.live_bytes += value_bytes(value);
        }
    }

    /// Like [`load`](Self::load), then keeps `history` (the feed's recent changes of the loaded
    /// keys): subscribers resuming from an index above its floor get the changes they missed
    /// rather than a snapshot — a restarted shard's watchers see no difference.
    pub(crate) fn load_with_history(
        &mut self,
        entries: impl IntoIterator<Item = Arc<SharedChange>>,
        index: u64,
        history: History,
    ) {
        self.load(entries, index);
        let changes: Vec<Arc<SharedChange>> = history
            .changes
            .into_iter()
            .filter(|c| c.version <= self.index)
            .collect();
        let skip = changes.len().saturating_sub(self.ring_capacity);
        let floor = match skip {
            0 => history.floor,
            n => changes[n - 1].version.max(history.floor),
        };
        self.ring = changes.into_iter().skip(skip).collect();
        self.ring_bytes = self.ring.iter().map(|c| change_bytes(c)).sum();
        self.floor = floor.min(self.floor);
        self.trim_ring();
    }

    /// The recent changes whose key `keep` accepts, for a shard taking over that part.
    pub(crate) fn history(&self, keep: impl Fn(&KeyPath) -> bool) -> History {
        History {
            changes: self.ring.iter().filter(|c| keep(&c.key)).cloned().collect(),
            floor: self.floor,
        }
    }

    /// The live values whose key `keep` accepts (shared, not copied), for a shard taking over
    /// that part.
    pub(crate) fn live(&self, keep: impl Fn(&KeyPath) -> bool) -> Vec<Arc<SharedChange>> {
        self.slots
            .values()
            .filter_map(|slot| slot.put.as_ref())
            .filter(|put| keep(&put.key))
            .cloned()
            .collect()
    }

    /// The global index this replica has seen up to.
    pub(crate) fn index(&self) -> u64 {
        self.index
    }

    /// Raises the index without a change in this replica (a change elsewhere in the key space).
    pub(crate) fn advance(&mut self, index: u64) {
        self.index = self.index.max(index);
    }

    /// Applies one write or tombstone. Returns the change to fan out, or `None` when it is not
    /// newer than what the replica holds, or deletes a key that held no value.
    pub(crate) fn apply(&mut self, entry: StoredEntry) -> Option<Arc<SharedChange>> {
        let key = entry.key.as_str();
        if self
            .slots
            .get(key)
            .is_some_and(|slot| slot.version >= entry.version)
        {
            return None;
        }
        self.apply_shared(shared(entry))
    }

    /// [`apply`](Self::apply) for a change another replica already made shared: this replica
    /// keeps the same allocation.
    pub(crate) fn apply_shared(&mut self, change: Arc<SharedChange>) -> Option<Arc<SharedChange>> {
        let key = change.key.as_str();
        let previous_live = match self.slots.get(key) {
            Some(slot) if slot.version >= change.version => return None,
            Some(slot) => slot.put.is_some(),
            None => false,
        };
        self.index = self.index.max(change.version);
        if let Some(old) = self.slots.get(key).and_then(Slot::value) {
            self.live -= 1;
            self.live_bytes = self.live_bytes.saturating_sub(value_bytes(old));
        }
        if let Some(new) = &change.value {
            self.live += 1;
            self.live_bytes += value_bytes(new);
        }
        let is_delete = change.value.is_none();
        self.slots.insert(
            key.to_string(),
            Slot {
                version: change.version,
                put: (!is_delete).then(|| Arc::clone(&change)),
                tombstone_since: is_delete.then(Instant::now),
            },
        );
        if is_delete && !previous_live {
            return None;
        }
        self.remember(Arc::clone(&change));
        Some(change)
    }

    fn remember(&mut self, change: Arc<SharedChange>) {
        self.ring_bytes += change_bytes(&change);
        self.ring.push_back(change);
        self.trim_ring();
    }

    /// Forgets the oldest changes while the ring is over its length or byte cap (keeping the
    /// newest change whatever its size), raising the floor past them.
    fn trim_ring(&mut self) {
        while self.ring.len() > self.ring_capacity
            || (self.ring_bytes > self.ring_max_bytes && self.ring.len() > 1)
        {
            let Some(oldest) = self.ring.pop_front() else {
                break;
            };
            self.ring_bytes = self.ring_bytes.saturating_sub(change_bytes(&oldest));
            self.floor = self.floor.max(oldest.version);
        }
    }

    /// Brings the replica to `snapshot` and returns the changes that took, in version order:
    /// newer entries, and deletes (at the snapshot's index) of live keys the snapshot lacks.
    pub(crate) fn resync(&mut self, snapshot: Snapshot) -> Vec<StoredEntry> {
        let mut listed = std::collections::HashSet::new();
        let mut updates: Vec<StoredEntry> = Vec::new();
        for entry in snapshot.entries {
            listed.insert(entry.key.as_str().to_string());
            let newer = self
                .slots
                .get(entry.key.as_str())
                .is_none_or(|slot| slot.version < entry.version);
            if newer {
                updates.push(entry);
            }
        }
        for (key, slot) in &self.slots {
            if slot.put.is_some() && !listed.contains(key) && slot.version <= snapshot.index {
                if let Ok(key) = KeyPath::parse(key) {
                    updates.push(StoredEntry {
                        key,
                        value: None,
                        version: snapshot.index,
                    });
                }
            }
        }
        updates.sort_by_key(|e| e.version);
        self.advance(snapshot.index);
        updates
    }

    /// The live entry at `key`.
    pub(crate) fn get(&self, key: &KeyPath) -> Option<Entry> {
        let slot = self.slots.get(key.as_str())?;
        Some(Entry {
            key: key.clone(),
            value: slot.value()?.clone(),
            version: slot.version,
        })
    }

    /// Every live entry at or under `prefix`, in key order.
    pub(crate) fn list(&self, prefix: &KeyPath) -> Vec<Entry> {
        let live = |(key, slot): (&String, &Slot)| {
            let value = slot.value()?.clone();
            Some(Entry {
                key: KeyPath::parse(key).ok()?,
                value,
                version: slot.version,
            })
        };
        if prefix.is_root() {
            return self.slots.iter().filter_map(live).collect();
        }
        // Keys under "/a" are "/a" itself and the range ["/a/", "/a0"): '0' follows '/'.
        let exact = self.slots.get_key_value(prefix.as_str());
        let lower = format!("{}/", prefix.as_str());
        let upper = format!("{}0", prefix.as_str());
        let below = self.slots.range::<str, _>((
            Bound::Included(lower.as_str()),
            Bound::Excluded(upper.as_str()),
        ));
        exact.into_iter().chain(below).filter_map(live).collect()
    }

    /// The changes under `prefix` after `from`, or `None` when `from` is older than the ring.
    pub(crate) fn changes_since(
        &self,
        prefix: &KeyPath,
        from: u64,
    ) -> Option<Vec<Arc<SharedChange>>> {
        if from < self.floor {
            return None;
        }
        let start = self.ring.partition_point(|c| c.version <= from);
        Some(
            self.ring
                .range(start..)
                .filter(|c| c.key.is_under(prefix))
                .cloned()
                .collect(),
        )
    }

    /// Forgets tombstones older than `ttl` (the store collects them after the same delay).
    pub(crate) fn sweep_tombstones(&mut self, ttl: Duration) {
        let now = Instant::now();
        self.slots.retain(|_, slot| {
            slot.tombstone_since
                .is_none_or(|since| now.duration_since(since) < ttl)
        });
    }

    /// Live keys and the approximate bytes of their values.
    pub(crate) fn usage(&self) -> (usize, usize) {
        (self.live, self.live_bytes)
    }

    pub(crate) fn live_keys(&self) -> usize {
        self.slots.values().filter(|s| s.put.is_some()).count()
    }
}

impl Slot {
    /// The live value; `None` for a tombstone.
    fn value(&self) -> Option<&serde_json::Value> {
        self.put.as_ref()?.value.as_ref()
    }
}

/// A store entry as a change ready to share.
pub(crate) fn shared(entry: StoredEntry) -> Arc<SharedChange> {
    SharedChange::new(Change {
        key: entry.key,
        value: entry.value,
        version: entry.version,
    })
}

/// Roughly the memory a change holds: its key and value.
fn change_bytes(change: &Change) -> usize {
    change.key.as_str().len() + change.value.as_ref().map_or(0, value_bytes)
}

/// Roughly the memory a value holds: its strings and numbers, plus a little per node.
pub(crate) fn value_bytes(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    16 + match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        Value::String(text) => text.len(),
        Value::Array(items) => items.iter().map(value_bytes).sum(),
        Value::Object(fields) => fields
            .iter()
            .map(|(name, value)| name.len() + value_bytes(value))
            .sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A burst of large values keeps only the newest within the byte cap; resuming from before
    /// them is "too old" (a snapshot), from within them gives exactly the rest.
    #[test]
    fn usage_counts_live_keys_and_their_bytes() {
        let mut replica = Replica::new(16);
        replica.load(
            vec![put("/a", json!("x".repeat(100)), 1), tomb("/t", 2)]
                .into_iter()
                .map(shared),
            2,
        );
        assert_eq!(replica.usage(), (1, 116));
        replica.apply(put("/b", json!("y".repeat(50)), 3));
        replica.apply(put("/a", json!(1), 4));
        assert_eq!(replica.usage(), (2, 66 + 16));
        replica.apply(tomb("/b", 5));
        replica.apply(tomb("/never", 6));
        assert_eq!(replica.usage(), (1, 16));
    }

    #[test]
    fn the_ring_is_capped_by_bytes() {
        let mut replica = Replica::new(1000).with_ring_max_bytes(4 * 1024);
        let big = json!("v".repeat(1024));
        for version in 1..=10 {
            replica.apply(put(&format!("/big/{version}"), big.clone(), version));
        }
        assert!(
            replica.ring.len() <= 4,
            "{} changes kept",
            replica.ring.len()
        );
        assert!(replica.ring_bytes <= 4 * 1024, "{}", replica.ring_bytes);
        let root = KeyPath::root();
        assert_eq!(replica.changes_since(&root, 0), None);
        let kept = replica.changes_since(&root, 7).expect("within the ring");
        assert_eq!(
            kept.iter().map(|c| c.version).collect::<Vec<_>>(),
            vec![8, 9, 10]
        );
        // One value bigger than the whole cap is still kept, alone.
        replica.apply(put("/huge", json!("h".repeat(10 * 1024)), 11));
        assert_eq!(replica.ring.len(), 1);
        assert_eq!(replica.changes_since(&root, 10).unwrap().len(), 1);
        // Small changes are bounded by count as before.
        let mut small = Replica::new(3);
        for version in 1..=5 {
            small.apply(put("/s", json!(version), version));
        }
        assert_eq!(small.ring.len(), 3);
        assert_eq!(small.changes_since(&root, 1), None);
    }

    fn put(key: &str, value: serde_json::Value, version: u64) -> StoredEntry {
        StoredEntry {
            key: KeyPath::parse(key).unwrap(),
            value: Some(value),
            version,
        }
    }

    fn tomb(key: &str, version: u64) -> StoredEntry {
        StoredEntry {
            key: KeyPath::parse(key).unwrap(),
            value: None,
            version,
        }
    }

    #[test]
    fn a_replica_loaded_with_history_serves_resumes_from_before_its_load() {
        let mut feed = Replica::new(16);
        for (version, key) in [(1, "/a/x"), (2, "/b/y"), (3, "/a/z"), (4, "/b/y")] {
            feed.apply(put(key, json!(version), version));
        }
        let history = feed.history(|key| key.as_str().starts_with("/a"));
        let mut shard = Replica::new(16);
        let entries = vec![put("/a/x", json!(1), 1), put("/a/z", json!(3), 3)];
        shard.load_with_history(entries.into_iter().map(shared), 4, history);
        let a = KeyPath::parse("/a").unwrap();
        let versions = |from| {
            shard
                .changes_since(&a, from)
                .map(|c| c.iter().map(|c| c.version).collect::<Vec<_>>())
        };
        assert_eq!(versions(1), Some(vec![3]));
        assert_eq!(versions(0), Some(vec![1, 3]));
        // Without history, anything before the load is too old.
        let mut bare = Replica::new(16);
        bare.load(vec![put("/a/x", json!(1), 1)].into_iter().map(shared), 4);
        assert_eq!(bare.changes_since(&a, 1), None);
    }

    /// The feed's replica, a shard's replica and their rings hold one allocation of a value: a
    /// 1 MiB PUT costs 1 MiB, not four.
    #[test]
    fn a_value_is_held_once_by_both_replicas_and_their_rings() {
        let mut feed = Replica::new(16);
        let mut shard = Replica::new(16);
        let change = feed
            .apply(put("/big", json!("b".repeat(1024)), 1))
            .expect("applied");
        let kept = shard.apply_shared(Arc::clone(&change)).expect("applied");
        assert!(Arc::ptr_eq(&change, &kept));
        let all = |_: &KeyPath| true;
        assert!(Arc::ptr_eq(&feed.live(all)[0], &shard.live(all)[0]));
        let ring = shard.changes_since(&KeyPath::root(), 0).unwrap();
        assert!(Arc::ptr_eq(&ring[0], &change));
        // Two slots, two rings, the ring copy just taken and `change`, `kept`: one value.
        assert_eq!(Arc::strong_count(&change), 7);
        // A shard loaded from the feed shares too.
        let mut restarted = Replica::new(16);
        restarted.load_with_history(feed.live(all), 1, feed.history(all));
        assert!(Arc::ptr_eq(&restarted.live(all)[0], &change));
    }

    #[test]
    fn applies_only_newer_changes() {
        let mut r = Replica::new(16);
        assert!(r.apply(put("/a", json!(1), 5)).is_some());
        assert!(r.apply(put("/a", json!(0), 4)).is_none());
        assert!(r.apply(put("/a", json!(1), 5)).is_none());
        assert!(
            r.apply(tomb("/b", 6)).is_none(),
            "deleting an absent key is no change"
        );
        assert!(r.apply(tomb("/a", 7)).is_some());
        assert!(
            r.apply(put("/a", json!(0), 6)).is_none(),
            "late write under a tombstone"
        );
        assert_eq!(r.get(&KeyPath::parse("/a").unwrap()), None);
        assert_eq!(r.index(), 7);
    }

    #[test]
    fn lists_segment_wise() {
        let mut r = Replica::new(16);
        for (i, k) in ["/a", "/a/b", "/a-x", "/a/b/c", "/ab", "/a0"]
            .iter()
            .enumerate()
        {
            r.apply(put(k, json!(i), i as u64 + 1));
        }
        let keys: Vec<String> = r
            .list(&KeyPath::parse("/a").unwrap())
            .into_iter()
            .map(|e| e.key.to_string())
            .collect();
        assert_eq!(keys, vec!["/a", "/a/b", "/a/b/c"]);
        assert_eq!(r.list(&KeyPath::root()).len(), 6);
    }

    #[test]
    fn resumes_from_the_ring_or_says_too_old() {
        let mut r = Replica::new(3);
        r.load(vec![put("/x", json!(0), 10)].into_iter().map(shared), 10);
        assert_eq!(r.changes_since(&KeyPath::root(), 9), None);
        for v in 11..=14 {
            r.apply(put("/y", json!(v), v));
        }
        // capacity 3: 11 fell out, so from 10 is too old but from 11 is complete
        assert_eq!(r.changes_since(&KeyPath::root(), 10), None);
        let since: Vec<u64> = r
            .changes_since(&KeyPath::root(), 11)
            .unwrap()
            .iter()
            .map(|c| c.version)
            .collect();
        assert_eq!(since, vec![12, 13, 14]);
    }

    #[test]
    fn resync_reports_new_and_vanished_keys_in_order() {
        let mut r = Replica::new(16);
        r.load(
            vec![put("/a", json!(1), 1), put("/b", json!(2), 2)]
                .into_iter()
                .map(shared),
            2,
        );
        let snapshot = Snapshot {
            entries: vec![put("/a", json!(1), 1), put("/c", json!(3), 5)],
            index: 7,
        };
        let updates = r.resync(snapshot);
        let got: Vec<(String, u64, bool)> = updates
            .iter()
            .map(|e| (e.key.to_string(), e.version, e.value.is_some()))
            .collect();
        assert_eq!(got, vec![("/c".into(), 5, true), ("/b".into(), 7, false)]);
    }
}
