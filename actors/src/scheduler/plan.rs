//! The pure core of a reconcile: from one [`ClusterView`], the time and what the leader
//! remembers ([`Leadership`]), the writes that bring the registry where the topology asks
//! ([`Plan`]), with the versions each must still find. No I/O and no clock of its own, so tests
//! give it any view and any instant.
//!
//! In order, as [`apply`](super::apply::apply) writes them:
//! 1. the leader record, when it does not name this node;
//! 2. the roll-out records that changed ([`rollout::step`]), CAS on the version read: a record
//!    that cannot be stored (a `lathe rollout` command changed it meanwhile) stops the apply, so
//!    no instance is replaced without its batch on record;
//! 3. per traffic shift ([`shift::step`]): its record (CAS; a concurrent `pause` or `undo` wins
//!    and stops the apply), then the split (CAS on the key's version read, so a change by hand is
//!    never overwritten: the next step sees it and pauses);
//! 4. the assignments placement changed ([`place`], then at most `max_moves` moves by
//!    [`rebalance`] of instances not held);
//! 5. pending instance records, and removals of instance records no node will clean up;
//! 6. removals of the endpoints of instances on dead nodes.
//!
//! While `settle` has not passed since this node became leader, nodes that hold assignments but
//! that membership has not listed yet count as live and nothing is rebalanced.

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lathe::layout::{self, Assignment, InstanceState, InstanceStatus, RolloutRecord, ShiftRecord};
use lathe::topology::GroupSpec;
use lathe::{Endpoint, KeyPath};
use serde_json::Value;
use tokio::time::Instant;

use super::demand::CapacityDemand;
use super::placement::{place, rebalance, NodeCandidate, Pending, PendingCause};
use super::rollout::{self, Governed, Placed};
use super::settings::SchedulerSettings;
use super::shift;
use super::view::ClusterView;
use crate::membership::{MemberStatus, MemberView};

/// The time a plan is made at: the monotonic instant (settle window, holds, wake-ups) and the
/// wall clock in Unix milliseconds (what roll-out and shift records store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    pub now: Instant,
    pub unix_ms: u64,
}

impl Clock {
    /// The time now.
    pub fn now() -> Clock {
        Clock {
            now: Instant::now(),
            unix_ms: rollout::unix_ms(),
        }
    }
}

/// What the leader remembers between reconciles.
#[derive(Debug, Clone)]
pub struct Leadership {
    /// This node's name, as the leader record holds it.
    pub node: String,
    /// When this node became leader (for the settle window).
    pub since: Instant,
    /// Instances moved by rebalancing, (group, index), held still until the instant given.
    pub held: BTreeMap<(String, u32), Instant>,
}

/// What one reconcile does.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// In the order they are to be written.
    pub writes: Vec<Write>,
    pub report: ReconcileReport,
}

/// One registry write of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub key: KeyPath,
    pub change: Change,
    /// The version the key must still have (0: absent); `None`: whatever it holds.
    pub expect: Option<u64>,
    pub kind: WriteKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Put(Value),
    Delete,
}

/// What a write is for: how a lost compare-and-set is handled, and what is logged once written.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteKind {
    Leader,
    /// A roll-out record; `None` when it is removed (its group is no longer deployed).
    Rollout(Option<Box<RolloutRecord>>),
    ShiftRecord,
    /// A shift's step written to its key, with the shift's record after the step.
    Split(Box<ShiftRecord>),
    Assignment,
    /// An instance record marked pending.
    Pending,
    /// An instance record no node will clean up.
    Orphan,
    /// The endpoint of an instance on a dead node.
    DeadEndpoint(Endpoint),
}

impl WriteKind {
    /// Whether a lost compare-and-set must stop the writes after this one: the rest of the plan
    /// was computed from the record that changed (an assignment from its roll-out batch, a split
    /// from its shift's step). Other writes are skipped alone; the next reconcile re-reads.
    pub fn stops_on_conflict(&self) -> bool {
        matches!(self, WriteKind::Rollout(_) | WriteKind::ShiftRecord)
    }

    /// A short name, for logs and metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            WriteKind::Leader => "leader",
            WriteKind::Rollout(_) => "rollout",
            WriteKind::ShiftRecord => "shift",
            WriteKind::Split(_) => "split",
            WriteKind::Assignment => "assignment",
            WriteKind::Pending => "pending",
            WriteKind::Orphan => "orphan",
            WriteKind::DeadEndpoint(_) => "endpoint",
        }
    }
}

/// What one reconcile did (or, from [`plan`], means to do).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReconcileReport {
    pub placed: usize,
    pub removed: usize,
    pub pending: usize,
    /// Instances the rebalance moved, (group, index).
    pub moved: Vec<(String, u32)>,
    /// What the placement lacked room for, and the nodes it had.
    pub demand: CapacityDemand,
    /// Whether a roll-out is rolling or rolling back (the scheduler comes back soon).
    pub rolling: bool,
    /// When the next step of a traffic shift is due, if one is shifting (the scheduler comes
    /// back then; the periodic safety net checks the target's health in between).
    pub next_shift_step: Option<Duration>,
    /// When the scheduler should look again without a trigger (a roll-out or rebalance moving, a
    /// shift step due, the settle window ending), if it should.
    pub wake_after: Option<Duration>,
    /// Writes that lost a compare-and-set (filled in by the apply).
    pub conflicts: usize,
    /// Whether a lost compare-and-set stopped the apply before its end.
    pub stopped: bool,
}

/// Plans one reconcile; see the module doc for what and in which order.
pub fn plan(
    view: &ClusterView,
    leadership: &Leadership,
    clock: Clock,
    settings: &SchedulerSettings,
) -> Plan {
    let mut planner = Planner {
        view,
        clock,
        settings,
        writes: Vec::new(),
        report: ReconcileReport::default(),
    };
    planner.leader(&leadership.node);
    let (groups, governed) = planner.roll_outs();
    planner.shifts();
    let since_leading = clock.now.saturating_duration_since(leadership.since);
    let settling = since_leading < settings.settle;
    let held: BTreeSet<(String, u32)> = leadership
        .held
        .iter()
        .filter(|(_, until)| **until > clock.now)
        .map(|(instance, _)| instance.clone())
        .collect();
    let pending = planner.assignments(&groups, &governed, settling, &held);
    planner.pending(&groups, &pending);
    planner.withdraw_dead_endpoints();
    let Planner {
        writes, mut report, ..
    } = planner;
    report.placed = count(&writes, |w| {
        w.kind == WriteKind::Assignment && matches!(w.change, Change::Put(_))
    });
    report.removed = count(&writes, |w| {
        w.kind == WriteKind::Assignment && w.change == Change::Delete
    });
    report.wake_after = [
        report.rolling.then_some(settings.rollout_tick),
        report
            .next_shift_step
            .filter(|_| !report.rolling)
            .map(|due| due.max(settings.rollout_tick)),
        (!report.moved.is_empty()).then_some(settings.next_step),
        // Once the settle window ends, unheard-of nodes lose their instances.
        settling.then(|| settings.settle - since_leading),
    ]
    .into_iter()
    .flatten()
    .min();
    Plan { writes, report }
}

fn count(writes: &[Write], what: impl Fn(&Write) -> bool) -> usize {
    writes.iter().filter(|w| what(w)).count()
}

struct Planner<'a> {
    view: &'a ClusterView,
    clock: Clock,
    settings: &'a SchedulerSettings,
    writes: Vec<Write>,
    report: ReconcileReport,
}

impl Planner<'_> {
    fn push(&mut self, key: KeyPath, change: Change, expect: Option<u64>, kind: WriteKind) {
        self.writes.push(Write {
            key,
            change,
            expect,
            kind,
        });
    }

    fn leader(&mut self, node: &str) {
        let value = serde_json::json!({ "node": node });
        if self.view.leader.as_ref() != Some(&value) {
            if let Ok(key) = KeyPath::parse(layout::SCHEDULER_LEADER) {
                self.push(key, Change::Put(value), None, WriteKind::Leader);
            }
        }
    }

    /// One step of every group's roll-out ([`rollout::step`]). Returns the groups as placement
    /// should see them, and the groups a roll-out governs.
    fn roll_outs(&mut self) -> (Vec<GroupSpec>, BTreeMap<String, Governed>) {
        let view = self.view;
        let catalogs: BTreeMap<&str, &Vec<lathe::TaskType>> = view
            .members
            .iter()
            .filter(|m| m.status != MemberStatus::Dead)
            .map(|m| (m.name.as_str(), &m.catalog))
            .collect();
        let gated = view.gated().rollouts;
        let mut placed_groups = view.groups.clone();
        let mut governed = BTreeMap::new();
        for group in &mut placed_groups {
            let path = layout::rollout(&group.name);
            let stored = view.rollouts.get(&path);
            let placed: Vec<Placed<'_>> = view
                .assignments
                .values()
                .filter(|a| a.group == group.name)
                .map(|assignment| Placed {
                    assignment,
                    // A node membership does not list (yet) is not held against the roll-out.
                    node_can_run: catalogs
                        .get(assignment.node.as_str())
                        .is_none_or(|catalog| catalog.contains(&assignment.task_type)),
                })
                .collect();
            let statuses: BTreeMap<u32, &InstanceStatus> = view
                .instances
                .values()
                .map(|s| &s.value)
                .filter(|s| s.group == group.name)
                .map(|s| (s.index, s))
                .collect();
            let traffic = view.traffic_of(&gated, &group.name);
            let step = rollout::step(
                group,
                stored.map(|r| &r.value),
                &placed,
                &statuses,
                traffic.as_ref(),
                self.clock.unix_ms,
            );
            let cas = Some(stored.map_or(0, |r| r.version));
            match (&step.record, stored) {
                (Some(new), Some(old)) if *new == old.value => {}
                (None, None) => {}
                (Some(new), _) => match serde_json::to_value(new) {
                    Ok(value) => {
                        let kind = WriteKind::Rollout(Some(Box::new(new.clone())));
                        self.push(path, Change::Put(value), cas, kind);
                    }
                    Err(error) => tracing::error!(%error, "cannot encode a roll-out record"),
                },
                (None, Some(_)) => self.push(path, Change::Delete, cas, WriteKind::Rollout(None)),
            }
            if let Some(record) = &step.record {
                self.report.rolling |= record.state.is_moving();
            }
            if let Some(rule) = step.governs {
                group.task_type = rule.base.clone();
                governed.insert(group.name.clone(), rule);
            }
        }
        // Roll-outs of groups no longer deployed.
        for (path, record) in &view.rollouts {
            if view.group(&record.value.group).is_none() {
                let cas = Some(record.version);
                self.push(path.clone(), Change::Delete, cas, WriteKind::Rollout(None));
            }
        }
        (placed_groups, governed)
    }

    /// One step of every shifting traffic shift ([`shift::step`]).
    fn shifts(&mut self) {
        let view = self.view;
        let gated = view.gated().shifts;
        let now_ms = self.clock.unix_ms;
        for (path, stored) in &view.shifts {
            let record = &stored.value;
            if record.state != lathe::layout::ShiftState::Shifting {
                continue;
            }
            let Ok(key) = KeyPath::parse(&record.key) else {
                continue;
            };
            let split = view.splits.get(&record.key);
            let current = split.and_then(|s| s.value.as_ref());
            let key_version = split.map_or(0, |s| s.version);
            let to: Vec<&InstanceStatus> = view
                .instances
                .values()
                .map(|s| &s.value)
                .filter(|s| s.group == record.to)
                .collect();
            let traffic = view.traffic_of(&gated, &record.to);
            let policy = view.group(&record.to).map(|g| &g.rollout);
            let step = shift::step(record, current, &to, policy, traffic.as_ref(), now_ms);
            if step.record.state == lathe::layout::ShiftState::Shifting {
                let every_ms = u64::from(step.record.every_seconds) * 1000;
                let due_ms = (step.record.last_step_ms + every_ms).saturating_sub(now_ms);
                let mut due = Duration::from_millis(due_ms);
                if gated.contains(&record.to) {
                    // A gate watches the target between steps too: a figure over its threshold
                    // rolls the shift back without waiting for the step.
                    due = due.min(self.settings.gate_watch);
                }
                let next = &mut self.report.next_shift_step;
                *next = Some(next.map_or(due, |d| d.min(due)));
            }
            if step.record != *record {
                match serde_json::to_value(&step.record) {
                    Ok(value) => {
                        let cas = Some(stored.version);
                        self.push(
                            path.clone(),
                            Change::Put(value),
                            cas,
                            WriteKind::ShiftRecord,
                        );
                    }
                    Err(error) => {
                        tracing::error!(%error, "cannot encode a shift record");
                        continue;
                    }
                }
            }
            if let Some(split) = step.write {
                let kind = WriteKind::Split(Box::new(step.record));
                self.push(key, Change::Put(split), Some(key_version), kind);
            }
        }
    }

    /// Places what the topology asks for on the live nodes; returns what could not be placed.
    fn assignments(
        &mut self,
        groups: &[GroupSpec],
        governed: &BTreeMap<String, Governed>,
        settling: bool,
        held: &BTreeSet<(String, u32)>,
    ) -> Vec<Pending> {
        let view = self.view;
        // Placement sees a group under roll-out with the type it rolls from, so that instances
        // already replaced stay valid and in place; `governed` then gives each index its type.
        let current: Vec<Assignment> = view
            .assignments
            .values()
            .cloned()
            .map(|mut a| {
                if let Some(governed) = governed.get(&a.group) {
                    a.task_type = governed.base.clone();
                }
                a
            })
            .collect();
        let mut candidates: Vec<NodeCandidate> = view
            .members
            .iter()
            .filter(|m| m.status != MemberStatus::Dead)
            .map(candidate)
            .collect();
        if settling {
            candidates.extend(unheard_of(&view.members, &current));
        }
        let mut placement = place(groups, &candidates, &current);
        if !settling {
            let alive: Vec<NodeCandidate> = candidates
                .iter()
                .filter(|c| {
                    view.members
                        .iter()
                        .any(|m| m.name == c.name && m.status == MemberStatus::Alive)
                })
                .cloned()
                .collect();
            let max_moves = self.settings.max_moves;
            let (rebalanced, _) =
                rebalance(groups, &alive, &placement.assignments, held, max_moves);
            self.report.moved = placement
                .assignments
                .iter()
                .zip(&rebalanced)
                .filter(|(before, after)| before.node != after.node)
                .map(|(_, after)| (after.group.clone(), after.index))
                .collect();
            placement.assignments = rebalanced;
        }
        let wanted: BTreeMap<KeyPath, Assignment> = placement
            .assignments
            .into_iter()
            .map(|mut a| {
                if let Some(governed) = governed.get(&a.group) {
                    a.task_type = governed.type_of(a.index).clone();
                }
                a
            })
            .map(|a| (layout::assignment(&a.node, &a.group, a.index), a))
            .collect();
        for (path, assignment) in wanted.iter() {
            if view.assignments.get(path) != Some(assignment) {
                match serde_json::to_value(assignment) {
                    Ok(value) => self.push(
                        path.clone(),
                        Change::Put(value),
                        None,
                        WriteKind::Assignment,
                    ),
                    Err(error) => tracing::error!(%error, "cannot encode an assignment"),
                }
            }
        }
        for path in view.assignments.keys().filter(|p| !wanted.contains_key(*p)) {
            self.push(path.clone(), Change::Delete, None, WriteKind::Assignment);
        }
        self.report.pending = placement.pending.len();
        self.report.demand = CapacityDemand {
            pending: placement
                .pending
                .iter()
                .filter(|p| p.cause == PendingCause::Full)
                .count(),
            nodes: candidates.iter().map(|c| c.name.clone()).collect(),
        };
        placement.pending
    }

    /// Marks unplaceable instances pending (with the reason) and removes instance records that
    /// no node will clean up: instances gone from the topology whose node is dead or who never
    /// ran. Removals are CAS on the version read: a node that started the instance meanwhile (and
    /// wrote `running`) keeps its record.
    fn pending(&mut self, groups: &[GroupSpec], pending: &[Pending]) {
        let view = self.view;
        let types: BTreeMap<&str, &lathe::TaskType> = groups
            .iter()
            .map(|g| (g.name.as_str(), &g.task_type))
            .collect();
        let mut pending_paths = BTreeSet::new();
        for p in pending {
            let path = layout::instance(&p.group, p.index);
            pending_paths.insert(path.clone());
            let Some(task_type) = types.get(p.group.as_str()) else {
                continue;
            };
            let status = InstanceStatus {
                group: p.group.clone(),
                index: p.index,
                node: None,
                task_type: (*task_type).clone(),
                status: InstanceState::Pending,
                endpoint: None,
                restarts: 0,
                reason: Some(p.reason.clone()),
            };
            if view.instances.get(&path).map(|s| &s.value) != Some(&status) {
                match serde_json::to_value(&status) {
                    Ok(value) => self.push(path, Change::Put(value), None, WriteKind::Pending),
                    Err(error) => tracing::error!(%error, "cannot encode an instance record"),
                }
            }
        }
        let wanted: BTreeMap<&str, u32> =
            groups.iter().map(|g| (g.name.as_str(), g.tasks)).collect();
        let live: BTreeSet<&str> = view
            .members
            .iter()
            .filter(|m| m.status != MemberStatus::Dead)
            .map(|m| m.name.as_str())
            .collect();
        for (path, stored) in &view.instances {
            let record = &stored.value;
            let in_topology = wanted
                .get(record.group.as_str())
                .is_some_and(|n| record.index < *n);
            let orphan = match &record.node {
                None => !pending_paths.contains(path),
                Some(node) => !in_topology && !live.contains(node.as_str()),
            };
            if orphan {
                let cas = Some(stored.version);
                self.push(path.clone(), Change::Delete, cas, WriteKind::Orphan);
            }
        }
    }

    /// Deletes the endpoints of instances on nodes membership holds dead, so load balancers stop
    /// trying them before the instances run again elsewhere. CAS on the version read: a record
    /// the instance's new node wrote meanwhile stays.
    fn withdraw_dead_endpoints(&mut self) {
        let dead = self.view.dead_nodes();
        for (path, endpoint) in &self.view.dead_endpoints {
            if dead.contains(endpoint.value.node.as_str()) {
                let kind = WriteKind::DeadEndpoint(endpoint.value.clone());
                self.push(path.clone(), Change::Delete, Some(endpoint.version), kind);
            }
        }
    }
}

fn candidate(member: &MemberView) -> NodeCandidate {
    NodeCandidate {
        name: member.name.clone(),
        catalog: member.catalog.iter().cloned().collect(),
        tags: member.tags.clone(),
        max_instances: member.max_instances,
    }
}

/// Nodes that hold assignments but that membership does not list at all (not even dead), as
/// candidates that can run exactly what they were assigned.
fn unheard_of(members: &[MemberView], assignments: &[Assignment]) -> Vec<NodeCandidate> {
    let known: BTreeSet<&str> = members.iter().map(|m| m.name.as_str()).collect();
    let mut unheard: BTreeMap<&str, BTreeSet<lathe::TaskType>> = BTreeMap::new();
    for assignment in assignments
        .iter()
        .filter(|a| !known.contains(a.node.as_str()))
    {
        unheard
            .entry(assignment.node.as_str())
            .or_default()
            .insert(assignment.task_type.clone());
    }
    unheard
        .into_iter()
        .map(|(name, catalog)| NodeCandidate {
            name: name.to_string(),
            catalog,
            tags: Vec::new(),
            max_instances: None,
        })
        .collect()
}
