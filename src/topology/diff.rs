//! What changed between two topologies, so a redeploy moves only what changed.
//!
//! Groups are matched by name. A group is *changed* when its task type, its `tasks`, its tags, its
//! biases or its restart policy differ — what the scheduler and the task supervisors act on.
//! Metadata is listed separately: it is written to the registry, where running tasks see it
//! without a restart.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{GroupSpec, Topology};
use crate::catalog::TaskType;

/// The difference from an old topology to a new one; every list is sorted by group name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyDiff {
    /// Groups only in the new topology.
    pub added: Vec<String>,
    /// Groups only in the old topology.
    pub removed: Vec<String>,
    /// Groups in both whose placement or supervision settings differ.
    pub changed: Vec<GroupChange>,
    /// Groups whose metadata differs, added and removed groups included: applying these to the
    /// registry is all a metadata update needs.
    pub metadata_changed: Vec<MetadataChange>,
}

/// One group in both topologies, and what differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupChange {
    pub group: String,
    pub fields: Vec<ChangedField>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "field", rename_all = "snake_case")]
pub enum ChangedField {
    /// Every instance must be replaced (a new version is a roll-out).
    TaskType {
        from: TaskType,
        to: TaskType,
    },
    /// Instances `from..to` start, or `to..from` stop.
    Tasks {
        from: u32,
        to: u32,
    },
    Tags,
    Biases,
    Restart,
    Rollout,
    Flows,
    State,
}

/// The metadata keys of one group to write and to delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataChange {
    pub group: String,
    /// Keys new or with a new value.
    pub set: Vec<String>,
    /// Keys gone.
    pub removed: Vec<String>,
}

impl TopologyDiff {
    /// Nothing differs at all.
    pub fn is_empty(&self) -> bool {
        !self.needs_placement() && self.metadata_changed.is_empty()
    }

    /// Some instance has to start, stop or move; a metadata-only change does not.
    pub fn needs_placement(&self) -> bool {
        !(self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty())
    }
}

/// What changed from `old` to `new`.
pub fn diff(old: &Topology, new: &Topology) -> TopologyDiff {
    let old_groups: BTreeMap<&str, &GroupSpec> =
        old.groups.iter().map(|g| (g.name.as_str(), g)).collect();
    let new_groups: BTreeMap<&str, &GroupSpec> =
        new.groups.iter().map(|g| (g.name.as_str(), g)).collect();
    let names: BTreeSet<&str> = old_groups
        .keys()
        .chain(new_groups.keys())
        .copied()
        .collect();

    let mut out = TopologyDiff::default();
    for name in names {
        let before = old_groups.get(name).copied();
        let after = new_groups.get(name).copied();
        match (before, after) {
            (None, Some(_)) => out.added.push(name.to_string()),
            (Some(_), None) => out.removed.push(name.to_string()),
            (Some(before), Some(after)) => {
                let fields = changed_fields(before, after);
                if !fields.is_empty() {
                    out.changed.push(GroupChange {
                        group: name.to_string(),
                        fields,
                    });
                }
            }
            (None, None) => unreachable!("every name comes from one of the topologies"),
        }
        if let Some(change) = metadata_change(name, before, after) {
            out.metadata_changed.push(change);
        }
    }
    out
}

fn changed_fields(before: &GroupSpec, after: &GroupSpec) -> Vec<ChangedField> {
    let mut fields = Vec::new();
    if before.task_type != after.task_type {
        fields.push(ChangedField::TaskType {
            from: before.task_type.clone(),
            to: after.task_type.clone(),
        });
    }
    if before.tasks != after.tasks {
        fields.push(ChangedField::Tasks {
            from: before.tasks,
            to: after.tasks,
        });
    }
    if before.tags != after.tags {
        fields.push(ChangedField::Tags);
    }
    if before.biases != after.biases {
        fields.push(ChangedField::Biases);
    }
    if before.restart != after.restart {
        fields.push(ChangedField::Restart);
    }
    if before.rollout != after.rollout {
        fields.push(ChangedField::Rollout);
    }
    if before.flows != after.flows {
        fields.push(ChangedField::Flows);
    }
    if before.state != after.state {
        fields.push(ChangedField::State);
    }
    fields
}

fn metadata_change(
    name: &str,
    before: Option<&GroupSpec>,
    after: Option<&GroupSpec>,
) -> Option<MetadataChange> {
    let empty = BTreeMap::new();
    let before = before.map_or(&empty, |g| &g.metadata);
    let after = after.map_or(&empty, |g| &g.metadata);
    let set: Vec<String> = after
        .iter()
        .filter(|(key, value)| before.get(*key) != Some(*value))
        .map(|(key, _)| key.clone())
        .collect();
    let removed: Vec<String> = before
        .keys()
        .filter(|key| !after.contains_key(*key))
        .cloned()
        .collect();
    (!set.is_empty() || !removed.is_empty()).then(|| MetadataChange {
        group: name.to_string(),
        set,
        removed,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::topology::parse;

    const SEED: &str = include_str!("../../config/my_topology.toml");

    fn seed() -> Topology {
        parse("my_topology.toml", SEED).unwrap()
    }

    #[test]
    fn the_same_topology_has_no_diff() {
        assert!(diff(&seed(), &seed()).is_empty());
    }

    #[test]
    fn more_instances_of_one_version_change_only_that_group() {
        let more = SEED.replacen(
            "version = \"4.2.2\"\ntasks = 5",
            "version = \"4.2.2\"\ntasks = 8",
            1,
        );
        let d = diff(&seed(), &parse("t.toml", &more).unwrap());
        assert_eq!(
            d.changed,
            [GroupChange {
                group: "task.http.frontpage.v4-2-2".to_string(),
                fields: vec![ChangedField::Tasks { from: 5, to: 8 }],
            }]
        );
        assert!(d.added.is_empty() && d.removed.is_empty() && d.metadata_changed.is_empty());
        assert!(d.needs_placement());
    }

    #[test]
    fn metadata_changes_are_listed_apart() {
        let mut new = seed();
        let lb = new
            .groups
            .iter_mut()
            .find(|g| g.name == "task.http.lb")
            .unwrap();
        lb.metadata
            .insert("backend_distribution".into(), json!([["a", "b"], [50, 50]]));
        lb.metadata.insert("timeout_ms".into(), json!(100));
        let d = diff(&seed(), &new);
        assert!(!d.needs_placement());
        assert_eq!(
            d.metadata_changed,
            [MetadataChange {
                group: "task.http.lb".to_string(),
                set: vec!["backend_distribution".into(), "timeout_ms".into()],
                removed: vec![],
            }]
        );
    }

    #[test]
    fn added_removed_and_retyped_groups() {
        let old = seed();
        let mut new = seed();
        new.groups.retain(|g| g.name != "task.http.lb");
        let v422 = &mut new.groups[1];
        v422.task_type.version = "4.2.3".into();
        v422.restart.max_restarts = 1;
        let mut extra = v422.clone();
        extra.name = "task.http.frontpage.v4-2-3".into();
        new.groups.push(extra);
        let d = diff(&old, &new);
        assert_eq!(d.added, ["task.http.frontpage.v4-2-3"]);
        assert_eq!(d.removed, ["task.http.lb"]);
        assert_eq!(d.changed.len(), 1);
        assert!(matches!(
            d.changed[0].fields[..],
            [ChangedField::TaskType { .. }, ChangedField::Restart]
        ));
        // the removed LB's metadata goes away with it
        assert_eq!(d.metadata_changed[0].group, "task.http.lb");
        assert_eq!(d.metadata_changed[0].removed, ["backend_distribution"]);
    }
}
