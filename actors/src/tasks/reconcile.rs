//! What a node should do to match its assignments: a pure function from the assignments in the
//! registry and the instances it has to start, stop and replace steps.

use std::collections::BTreeMap;
use std::fmt;

use lathe::layout::Assignment;
use lathe::{KeyPath, TaskType};

use super::mirror::Entries;

/// One instance of one group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct InstanceKey {
    pub(crate) group: String,
    pub(crate) index: u32,
}

impl InstanceKey {
    pub(crate) fn of(assignment: &Assignment) -> Self {
        InstanceKey {
            group: assignment.group.clone(),
            index: assignment.index,
        }
    }
}

impl fmt::Display for InstanceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.group, self.index)
    }
}

/// An assignment and the registry version it was read at (a rewrite retries a failed instance).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Desired {
    pub(crate) assignment: Assignment,
    pub(crate) version: u64,
}

/// What the node has for one instance.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Current<'a> {
    pub(crate) task_type: &'a TaskType,
    pub(crate) version: u64,
    /// Failed or finished: nothing runs and nothing will by itself.
    pub(crate) settled: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Step {
    Start(Desired),
    /// Stop what runs, then start this (another task type, or a retry of a failed instance).
    Replace(Desired),
    Stop(InstanceKey),
}

/// The node's assignments from the mirror of `/lathe/assignments/<node>`; malformed entries and
/// entries naming another node are skipped with a warning.
pub(crate) fn desired_assignments(node: &str, entries: &Entries) -> BTreeMap<InstanceKey, Desired> {
    let mut desired = BTreeMap::new();
    for (key, entry) in entries {
        match serde_json::from_value::<Assignment>(entry.value.clone()) {
            Ok(assignment) if !is_group_name(&assignment.group) => {
                tracing::warn!(%key, group = %assignment.group,
                    "assignment with an invalid group name: skipped")
            }
            Ok(assignment) if assignment.node == node => {
                let version = entry.version;
                desired.insert(
                    InstanceKey::of(&assignment),
                    Desired {
                        assignment,
                        version,
                    },
                );
            }
            Ok(assignment) => {
                tracing::warn!(%key, node = %assignment.node,
                    "assignment for another node: skipped")
            }
            Err(error) => tracing::warn!(%key, %error, "malformed assignment: skipped"),
        }
    }
    desired
}

/// A group name is a dotted path of registry segments (`task.http.lb`).
fn is_group_name(group: &str) -> bool {
    !group.is_empty()
        && group
            .split('.')
            .all(|segment| KeyPath::parse(segment).is_ok_and(|path| path.depth() == 1))
}

/// The steps from `current` to `desired`, in key order: unchanged instances are left alone.
pub(crate) fn plan(
    desired: &BTreeMap<InstanceKey, Desired>,
    current: &BTreeMap<InstanceKey, Current<'_>>,
) -> Vec<Step> {
    let mut steps = Vec::new();
    for (key, wanted) in desired {
        match current.get(key) {
            None => steps.push(Step::Start(wanted.clone())),
            Some(have) if have.task_type != &wanted.assignment.task_type => {
                steps.push(Step::Replace(wanted.clone()))
            }
            Some(have) if have.settled && have.version != wanted.version => {
                steps.push(Step::Replace(wanted.clone()))
            }
            Some(_) => {}
        }
    }
    for key in current.keys().filter(|key| !desired.contains_key(*key)) {
        steps.push(Step::Stop(key.clone()));
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(group: &str, index: u32, version: &str, at: u64) -> (InstanceKey, Desired) {
        let assignment = Assignment {
            group: group.into(),
            index,
            node: "n1".into(),
            task_type: TaskType::new("c", version, "my::T"),
        };
        (
            InstanceKey::of(&assignment),
            Desired {
                assignment,
                version: at,
            },
        )
    }

    #[test]
    fn starts_stops_replaces_and_leaves_the_rest() {
        let wanted: BTreeMap<_, _> = [
            desired("a", 0, "1", 5),
            desired("a", 1, "2", 5),
            desired("b", 0, "1", 9),
            desired("c", 0, "1", 3),
        ]
        .into_iter()
        .collect();
        let v1 = TaskType::new("c", "1", "my::T");
        let have = |group: &str, index, settled, version| {
            let key = InstanceKey {
                group: group.into(),
                index,
            };
            (
                key,
                Current {
                    task_type: &v1,
                    version,
                    settled,
                },
            )
        };
        let current: BTreeMap<_, _> = [
            have("a", 0, false, 5),
            have("a", 1, false, 5),
            have("b", 0, true, 4),
            have("z", 0, false, 1),
        ]
        .into_iter()
        .collect();
        let steps = plan(&wanted, &current);
        assert_eq!(
            steps,
            vec![
                Step::Replace(
                    wanted[&InstanceKey {
                        group: "a".into(),
                        index: 1
                    }]
                        .clone()
                ),
                Step::Replace(
                    wanted[&InstanceKey {
                        group: "b".into(),
                        index: 0
                    }]
                        .clone()
                ),
                Step::Start(
                    wanted[&InstanceKey {
                        group: "c".into(),
                        index: 0
                    }]
                        .clone()
                ),
                Step::Stop(InstanceKey {
                    group: "z".into(),
                    index: 0
                }),
            ]
        );
        // Once applied, nothing more to do.
        let applied: BTreeMap<_, _> = wanted
            .iter()
            .map(|(key, d)| {
                let current = Current {
                    task_type: &d.assignment.task_type,
                    version: d.version,
                    settled: false,
                };
                (key.clone(), current)
            })
            .collect();
        assert!(plan(&wanted, &applied).is_empty());
    }

    #[test]
    fn malformed_and_foreign_assignments_are_skipped() {
        use super::super::mirror::Mirrored;
        let entry = |value: serde_json::Value| Mirrored { value, version: 7 };
        let task_type = TaskType::new("c", "1", "my::T");
        let assignment = |group: &str, node: &str| {
            serde_json::json!({"group": group, "index": 0, "node": node,
                               "task_type": task_type})
        };
        let key = |s: &str| KeyPath::parse(s).unwrap();
        let entries: Entries = [
            (
                key("/lathe/assignments/n1/ok/0"),
                entry(assignment("task.ok", "n1")),
            ),
            (
                key("/lathe/assignments/n1/bad/0"),
                entry(assignment("a b", "n1")),
            ),
            (
                key("/lathe/assignments/n1/dots/0"),
                entry(assignment("a..b", "n1")),
            ),
            (
                key("/lathe/assignments/n1/other/0"),
                entry(assignment("task.x", "n2")),
            ),
            (
                key("/lathe/assignments/n1/junk/0"),
                entry(serde_json::json!("junk")),
            ),
        ]
        .into_iter()
        .collect();
        let desired = desired_assignments("n1", &entries);
        let groups: Vec<&str> = desired.keys().map(|k| k.group.as_str()).collect();
        assert_eq!(groups, vec!["task.ok"]);
        assert_eq!(desired.values().next().unwrap().version, 7);
    }
}
