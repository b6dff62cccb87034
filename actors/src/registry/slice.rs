//! Which shard owns which key: slices are whole subtrees of depth two (`/task/http`,
//! `/lathe/endpoints`), so a subscription to any prefix of depth two or more lives on exactly one
//! shard and sees its changes in order. Shallower prefixes (`/`, `/task`) span slices and are
//! served by the feed, which sees every change.

use std::hash::{Hash, Hasher};

use lathe::KeyPath;

/// The depth of the subtree a slice is made of.
pub(crate) const SLICE_DEPTH: usize = 2;

#[derive(Debug, Clone, Copy)]
pub(crate) struct SliceMap {
    shards: usize,
}

impl SliceMap {
    pub(crate) fn new(shards: usize) -> Self {
        SliceMap {
            shards: shards.max(1),
        }
    }

    pub(crate) fn shards(&self) -> usize {
        self.shards
    }

    /// The shard that owns `key`.
    pub(crate) fn shard_of(&self, key: &KeyPath) -> usize {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.truncated(SLICE_DEPTH).as_str().hash(&mut hasher);
        (hasher.finish() % self.shards as u64) as usize
    }

    /// The one shard holding every key under `prefix`, or `None` when the prefix spans slices.
    pub(crate) fn owner_of_prefix(&self, prefix: &KeyPath) -> Option<usize> {
        (prefix.depth() >= SLICE_DEPTH).then(|| self.shard_of(prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deep_prefix_and_every_key_under_it_share_a_shard() {
        let slices = SliceMap::new(7);
        let prefix = KeyPath::parse("/task/http").unwrap();
        let owner = slices.owner_of_prefix(&prefix).unwrap();
        for key in [
            "/task/http",
            "/task/http/lb",
            "/task/http/frontpage/v4-2-1/x",
        ] {
            assert_eq!(slices.shard_of(&KeyPath::parse(key).unwrap()), owner);
        }
        assert_eq!(
            slices.owner_of_prefix(&KeyPath::parse("/task").unwrap()),
            None
        );
        assert_eq!(slices.owner_of_prefix(&KeyPath::root()), None);
    }
}
