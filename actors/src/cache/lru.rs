//! A least-recently-used map bounded by the bytes of its values.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

/// Values by key; inserting past `capacity` bytes evicts the least recently used first.
#[derive(Debug)]
pub(crate) struct Lru {
    capacity: usize,
    bytes: usize,
    tick: u64,
    entries: HashMap<String, (Bytes, u64)>,
    /// Last use → key: the first is the least recently used.
    order: BTreeMap<u64, String>,
}

impl Lru {
    pub(crate) fn new(capacity: usize) -> Self {
        Lru {
            capacity,
            bytes: 0,
            tick: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    pub(crate) fn get(&mut self, key: &str) -> Option<Bytes> {
        self.tick += 1;
        let tick = self.tick;
        let (value, used) = self.entries.get_mut(key)?;
        self.order.remove(used);
        *used = tick;
        self.order.insert(tick, key.to_string());
        Some(value.clone())
    }

    /// Keeps `value` unless it alone is over the capacity.
    pub(crate) fn insert(&mut self, key: &str, value: Bytes) {
        if value.len() > self.capacity {
            return;
        }
        self.remove(key);
        self.tick += 1;
        self.bytes += value.len();
        self.entries.insert(key.to_string(), (value, self.tick));
        self.order.insert(self.tick, key.to_string());
        while self.bytes > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((value, _)) = self.entries.remove(&oldest) {
                self.bytes -= value.len();
            }
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some((value, used)) = self.entries.remove(key) {
            self.bytes -= value.len();
            self.order.remove(&used);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_used_past_the_byte_budget() {
        let mut lru = Lru::new(10);
        lru.insert("a", Bytes::from_static(b"1234"));
        lru.insert("b", Bytes::from_static(b"1234"));
        assert!(lru.get("a").is_some(), "a is now the most recent");
        lru.insert("c", Bytes::from_static(b"1234"));
        assert_eq!((lru.len(), lru.bytes()), (2, 8));
        assert!(lru.get("b").is_none(), "b was the least recently used");
        assert!(lru.get("a").is_some() && lru.get("c").is_some());
        lru.insert("a", Bytes::from_static(b"12"));
        assert_eq!(lru.bytes(), 6, "a replaced, not added");
        lru.insert("huge", Bytes::from(vec![0; 11]));
        assert!(lru.get("huge").is_none(), "over the whole budget: not kept");
        assert_eq!(lru.len(), 2);
    }
}
