//! [`ClusterView`]: everything one reconcile decides from, read once from the registry and
//! membership, with the versions later writes compare against. The only I/O of a reconcile
//! besides [`apply`](super::apply::apply); [`plan`](super::plan::plan) works on this alone.

use std::collections::{BTreeMap, BTreeSet};

use lathe::layout::{self, Assignment, InstanceStatus, RolloutRecord, ShiftRecord, Traffic};
use lathe::layout::{RolloutState, ShiftState};
use lathe::topology::GroupSpec;
use lathe::{Endpoint, KeyPath};
use serde_json::Value;

use super::deploy;
use super::error::SchedulerError;
use super::traffic::{self, TrafficSource};
use crate::membership::{MemberStatus, MemberView};
use crate::registry::RegistryHandle;

/// A record and the version it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub value: T,
    pub version: u64,
}

/// The cluster as one reconcile sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterView {
    /// What `/lathe/scheduler/leader` holds.
    pub leader: Option<Value>,
    /// The deployed topology's groups.
    pub groups: Vec<GroupSpec>,
    /// `/lathe/assignments`, by path.
    pub assignments: BTreeMap<KeyPath, Assignment>,
    /// `/lathe/instances`, by path.
    pub instances: BTreeMap<KeyPath, Versioned<InstanceStatus>>,
    /// `/lathe/rollouts`, by path.
    pub rollouts: BTreeMap<KeyPath, Versioned<RolloutRecord>>,
    /// `/lathe/shifts`, by path.
    pub shifts: BTreeMap<KeyPath, Versioned<ShiftRecord>>,
    /// The split each shifting shift moves, by its key; `None` (version 0) when the key is gone.
    pub splits: BTreeMap<String, Versioned<Option<Value>>>,
    /// The endpoint records of instances on dead nodes (listed only while a node is dead).
    pub dead_endpoints: BTreeMap<KeyPath, Versioned<Endpoint>>,
    pub members: Vec<MemberView>,
    /// The response counters of the groups a metric gate judges now ([`ClusterView::gated`]),
    /// summed over the cluster; `None` when they could not all be read (a gate then waits).
    pub traffic: Option<BTreeMap<String, Traffic>>,
}

/// The groups whose counters a metric gate needs this round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gated {
    /// Groups whose current roll-out batch a gate judges.
    pub rollouts: BTreeSet<String>,
    /// Targets of shifting traffic shifts under a gate.
    pub shifts: BTreeSet<String>,
}

impl ClusterView {
    /// Reads the view. Before reading the topology it completes a deploy that stopped after
    /// storing its record (it still owes its group metadata).
    pub async fn read(
        registry: &RegistryHandle,
        members: &[MemberView],
        source: &TrafficSource,
    ) -> Result<ClusterView, SchedulerError> {
        let leader = registry.get(&key(layout::SCHEDULER_LEADER)?).await?.0;
        deploy::complete_pending(registry)
            .await
            .map_err(SchedulerError::CompleteDeploy)?;
        let groups = deploy::current(registry)
            .await
            .map_err(SchedulerError::Topology)?
            .map(|(record, _)| record.topology.groups)
            .unwrap_or_default();
        let mut view = ClusterView {
            leader: leader.map(|entry| entry.value),
            groups,
            assignments: list(registry, layout::ASSIGNMENTS)
                .await?
                .into_iter()
                .map(|(path, record)| (path, record.value))
                .collect(),
            instances: list(registry, layout::INSTANCES).await?,
            rollouts: list(registry, layout::ROLLOUTS).await?,
            shifts: list(registry, layout::SHIFTS).await?,
            splits: BTreeMap::new(),
            dead_endpoints: BTreeMap::new(),
            members: members.to_vec(),
            traffic: None,
        };
        for shift in view.shifts.values().map(|s| &s.value) {
            if shift.state != ShiftState::Shifting || view.splits.contains_key(&shift.key) {
                continue;
            }
            let entry = registry.get(&key(&shift.key)?).await?.0;
            let split = match entry {
                Some(entry) => Versioned {
                    value: Some(entry.value),
                    version: entry.version,
                },
                None => Versioned {
                    value: None,
                    version: 0,
                },
            };
            view.splits.insert(shift.key.clone(), split);
        }
        let dead = view.dead_nodes();
        if !dead.is_empty() {
            view.dead_endpoints = list::<Endpoint>(registry, layout::ENDPOINTS)
                .await?
                .into_iter()
                .filter(|(_, endpoint)| dead.contains(endpoint.value.node.as_str()))
                .collect();
        }
        let gated = view.gated();
        let wanted: BTreeSet<String> = gated.rollouts.union(&gated.shifts).cloned().collect();
        view.traffic = traffic::read(source, members, &wanted).await;
        Ok(view)
    }

    /// The nodes membership holds dead.
    pub fn dead_nodes(&self) -> BTreeSet<&str> {
        self.members
            .iter()
            .filter(|m| m.status == MemberStatus::Dead)
            .map(|m| m.name.as_str())
            .collect()
    }

    /// The group named `name` in the deployed topology.
    pub fn group(&self, name: &str) -> Option<&GroupSpec> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// Which groups' response counters metric gates judge this round.
    pub fn gated(&self) -> Gated {
        let rollouts = self
            .groups
            .iter()
            .filter(|group| group.rollout.gated())
            .filter(|group| {
                self.rollouts
                    .get(&layout::rollout(&group.name))
                    .is_some_and(|r| {
                        r.value.state == RolloutState::Rolling
                            && !r.value.batch.is_empty()
                            && r.value.to == group.task_type
                    })
            })
            .map(|group| group.name.clone())
            .collect();
        let shifts = self
            .shifts
            .values()
            .map(|record| &record.value)
            .filter(|record| record.state == ShiftState::Shifting)
            .filter(|record| {
                self.group(&record.to)
                    .is_some_and(|group| group.rollout.gated())
            })
            .map(|record| record.to.clone())
            .collect();
        Gated { rollouts, shifts }
    }

    /// `group`'s counters, when a gate judges it (`gated`) and they were read.
    pub fn traffic_of(&self, gated: &BTreeSet<String>, group: &str) -> Option<Traffic> {
        self.traffic
            .as_ref()
            .filter(|_| gated.contains(group))
            .map(|all| all.get(group).cloned().unwrap_or_default())
    }
}

/// Every record under `prefix` that parses as a `T`, by path, with its version.
async fn list<T: serde::de::DeserializeOwned>(
    registry: &RegistryHandle,
    prefix: &str,
) -> Result<BTreeMap<KeyPath, Versioned<T>>, SchedulerError> {
    let (entries, _) = registry.list(&key(prefix)?).await?;
    Ok(entries
        .into_iter()
        .filter_map(|e| {
            let value = serde_json::from_value(e.value).ok()?;
            Some((
                e.key,
                Versioned {
                    value,
                    version: e.version,
                },
            ))
        })
        .collect())
}

pub(crate) fn key(path: &str) -> Result<KeyPath, SchedulerError> {
    KeyPath::parse(path).map_err(|source| SchedulerError::Path {
        path: path.to_string(),
        source,
    })
}
