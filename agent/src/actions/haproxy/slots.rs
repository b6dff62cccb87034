//! Slot planning for one backend, pure: servers `lathe1..latheN` are slots; a slot holds one live
//! endpoint or is free (disabled at `127.0.0.1:1`). Endpoints that stay keep their slot, gone
//! ones free theirs, new ones take free slots; only when free slots run out does the backend
//! grow, which takes a reload.

use std::collections::BTreeSet;

use serde::Serialize;

/// The name prefix of slot servers.
pub const SLOT_PREFIX: &str = "lathe";

/// `HOST`, `PORT` of an endpoint.
pub type Target = (String, u16);

/// One slot as the template renders it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Slot {
    pub name: String,
    pub addr: String,
    pub port: u16,
    pub enabled: bool,
}

impl Slot {
    pub fn free(number: usize) -> Slot {
        Slot {
            name: format!("{SLOT_PREFIX}{number}"),
            addr: "127.0.0.1".to_string(),
            port: 1,
            enabled: false,
        }
    }

    pub fn target(&self) -> Option<Target> {
        self.enabled.then(|| (self.addr.clone(), self.port))
    }
}

/// A runtime change: point slot `name` at a target and enable it, or disable it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotChange {
    Fill { name: String, target: Target },
    Free { name: String },
}

/// What to do with one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The slots afterwards (what the configuration file holds).
    pub slots: Vec<Slot>,
    /// Runtime commands that get from the current slots there (when `grew` is false).
    pub changes: Vec<SlotChange>,
    /// The slots ran out: the backend has more slots now, which takes a reload.
    pub grew: bool,
}

/// Plans `current` → `desired`. `spare` is the minimum slot count and the headroom added when
/// the backend grows.
pub fn plan(current: &[Slot], desired: &BTreeSet<Target>, spare: usize) -> Plan {
    let mut slots: Vec<Slot> = if current.is_empty() {
        (1..=spare.max(1)).map(Slot::free).collect()
    } else {
        current.to_vec()
    };
    let mut changes = Vec::new();
    let mut placed = BTreeSet::new();
    let mut freed = BTreeSet::new();
    // Keep what stays (once: a duplicate slot is freed), free what is gone.
    for (at, slot) in slots.iter_mut().enumerate() {
        match slot.target() {
            Some(target) if desired.contains(&target) && placed.insert(target.clone()) => {}
            Some(_) => {
                changes.push(SlotChange::Free {
                    name: slot.name.clone(),
                });
                *slot = Slot {
                    enabled: false,
                    ..slot.clone()
                };
                freed.insert(at);
            }
            None => {}
        }
    }
    let missing: Vec<Target> = desired.difference(&placed).cloned().collect();
    let free = slots.iter().filter(|s| !s.enabled).count();
    let grew = missing.len() > free;
    if grew {
        let needed = desired.len() + spare.max(1);
        let numbers = slots.len() + 1..=needed.max(slots.len());
        slots.extend(numbers.map(Slot::free));
    }
    // New endpoints take the slots that were free already, so the ones just freed keep serving
    // until the new ones are in; a freed slot is refilled only when nothing else is free, and
    // then its fill alone re-points it (a fill and a free of one slot would end in `maint`).
    let mut free_slots: Vec<usize> = (0..slots.len())
        .filter(|at| !slots[*at].enabled && !freed.contains(at))
        .chain(freed.iter().copied())
        .collect();
    free_slots.reverse();
    for target in missing {
        let at = free_slots.pop().expect("enough free slots after growing");
        let slot = &mut slots[at];
        (slot.addr, slot.port, slot.enabled) = (target.0.clone(), target.1, true);
        if freed.contains(&at) {
            changes.retain(|change| {
                *change
                    != SlotChange::Free {
                        name: slot.name.clone(),
                    }
            });
        }
        changes.push(SlotChange::Fill {
            name: slot.name.clone(),
            target,
        });
    }
    Plan {
        slots,
        changes,
        grew,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(ports: &[u16]) -> BTreeSet<Target> {
        ports
            .iter()
            .map(|p| ("127.0.0.1".to_string(), *p))
            .collect()
    }

    fn live(plan: &Plan) -> BTreeSet<Target> {
        plan.slots.iter().filter_map(Slot::target).collect()
    }

    #[test]
    fn fills_keeps_and_frees_slots() {
        let first = plan(&[], &targets(&[10, 11, 12]), 4);
        assert_eq!((first.slots.len(), first.grew), (4, false));
        assert_eq!(live(&first), targets(&[10, 11, 12]));
        let second = plan(&first.slots, &targets(&[11, 12, 13]), 4);
        assert!(!second.grew);
        assert_eq!(live(&second), targets(&[11, 12, 13]));
        assert_eq!(second.changes.len(), 2, "{:?}", second.changes);
        assert_eq!(
            second.slots[1], first.slots[1],
            "a staying endpoint keeps its slot"
        );
        let unchanged = plan(&second.slots, &targets(&[11, 12, 13]), 4);
        assert!(unchanged.changes.is_empty());
    }

    #[test]
    fn a_moved_endpoint_takes_a_free_slot_before_its_old_one_is_freed() {
        let first = plan(&[], &targets(&[10, 11, 12]), 4);
        let moved = plan(&first.slots, &targets(&[10, 11, 13]), 4);
        assert_eq!(live(&moved), targets(&[10, 11, 13]));
        assert_eq!(
            moved.changes,
            vec![
                SlotChange::Free {
                    name: "lathe3".into()
                },
                SlotChange::Fill {
                    name: "lathe4".into(),
                    target: ("127.0.0.1".into(), 13)
                },
            ],
            "the new endpoint goes to the slot that was free, not the one just freed"
        );
        // With no other slot free, the freed one is re-pointed by its fill alone.
        let full = plan(&[], &targets(&[1, 2, 3, 4]), 4);
        let swapped = plan(&full.slots, &targets(&[1, 2, 3, 5]), 4);
        assert!(!swapped.grew);
        assert_eq!(live(&swapped), targets(&[1, 2, 3, 5]));
        assert_eq!(
            swapped.changes,
            vec![SlotChange::Fill {
                name: "lathe4".into(),
                target: ("127.0.0.1".into(), 5)
            }]
        );
    }

    #[test]
    fn grows_only_when_the_slots_run_out() {
        let small = plan(&[], &targets(&[1, 2, 3, 4]), 4);
        assert!(!small.grew);
        let big = plan(&small.slots, &targets(&[1, 2, 3, 4, 5]), 4);
        assert!(big.grew);
        assert_eq!(big.slots.len(), 9);
        assert_eq!(live(&big), targets(&[1, 2, 3, 4, 5]));
        assert_eq!(&big.slots[..4], &small.slots[..], "existing slots stay");
        let shrink = plan(&big.slots, &targets(&[2]), 4);
        assert!(!shrink.grew);
        assert_eq!(
            shrink.slots.len(),
            9,
            "slots never shrink without a reason to reload"
        );
    }
}
