//! `Scheduler`: runs on every node, acts only on the leader.
//!
//! Leadership comes from membership (the oldest ZooKeeper member node, or the node holding the
//! embedded registry), so a dead leader is replaced as soon as its ZooKeeper session ends. The
//! scheduler keeps no state of its own: each reconcile reads the deployed topology and the current
//! assignments from the registry, places what is missing with the pure [`place`] function, and
//! writes the difference. A new leader therefore just carries on.
//!
//! Reconciles run off the handler, one at a time; triggers that arrive meanwhile coalesce into one
//! more run. Triggers: the topology changed, a roll-out or traffic-shift record changed (a
//! `lathe rollout` command), membership changed, and a periodic safety net; while a roll-out
//! moves, every `rollout_tick` ([`SchedulerSettings`]); while a shift moves, when its next step is due.
//!
//! After each reconcile the leader publishes its [`CapacityDemand`] — how many instances are
//! pending because every node that can run them is full — for the node's resource manager, which
//! asks for more nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lathe::layout::{self, Assignment, InstanceState, InstanceStatus, RolloutRecord, RolloutState};
use lathe::KeyPath;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;

use super::demand::{CapacityDemand, DemandSender};
use super::deploy;
use super::error::SchedulerError;
use super::placement::{place, rebalance, NodeCandidate, PendingCause};
use super::rollout::{self, Governed, Placed};
use super::settings::SchedulerSettings;
use super::shift;
use super::traffic::{self, TrafficSource};
use crate::follow::follow;
use crate::membership::{MemberStatus, MemberView, MembershipHandle};
use crate::registry::RegistryHandle;

#[derive(RactorMessage)]
pub enum SchedulerMsg {
    MembersChanged(Vec<MemberView>),
    TopologyChanged,
    Reconcile,
    Reconciled(Result<ReconcileReport, SchedulerError>),
}

/// What one reconcile did.
#[derive(Debug, Clone, Default)]
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
}

pub struct Scheduler;

pub struct SchedulerArgs {
    pub node: String,
    pub registry: RegistryHandle,
    pub membership: MembershipHandle,
    /// Where to publish the capacity demand after each reconcile (the node's resource manager
    /// listens), if anyone listens.
    pub demand: Option<DemandSender>,
    /// Where metric gates read response counters: the nodes, or Prometheus.
    pub traffic_source: TrafficSource,
    /// Timings and limits ([`SchedulerSettings::default`] in production).
    pub settings: SchedulerSettings,
}

pub struct SchedulerState {
    node: String,
    registry: RegistryHandle,
    membership: MembershipHandle,
    members: Vec<MemberView>,
    leading: bool,
    /// When this node became leader (for the settle window).
    leading_since: Option<tokio::time::Instant>,
    running: bool,
    again: bool,
    /// Instances moved by rebalancing, held still until the instant given.
    held: BTreeMap<(String, u32), tokio::time::Instant>,
    watchers: Vec<tokio::task::JoinHandle<()>>,
    demand: Option<DemandSender>,
    traffic_source: TrafficSource,
    settings: SchedulerSettings,
}

impl Actor for Scheduler {
    type Msg = SchedulerMsg;
    type State = SchedulerState;
    type Arguments = SchedulerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SchedulerMsg>,
        args: SchedulerArgs,
    ) -> Result<SchedulerState, ActorProcessingErr> {
        let watchers = vec![
            follow(
                args.membership.subscribe(),
                myself.clone(),
                SchedulerMsg::MembersChanged,
            ),
            // The topology, and the records `lathe rollout` commands change: a resume or an undo
            // acts at once rather than at the next safety-net pass.
            watch(myself.clone(), args.registry.clone(), layout::TOPOLOGY),
            watch(myself.clone(), args.registry.clone(), layout::ROLLOUTS),
            watch(myself.clone(), args.registry.clone(), layout::SHIFTS),
        ];
        myself.send_interval(args.settings.safety_net, || SchedulerMsg::Reconcile);
        Ok(SchedulerState {
            node: args.node,
            registry: args.registry,
            membership: args.membership,
            members: Vec::new(),
            leading: false,
            leading_since: None,
            running: false,
            again: false,
            held: BTreeMap::new(),
            watchers,
            demand: args.demand,
            traffic_source: args.traffic_source,
            settings: args.settings,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SchedulerMsg>,
        message: SchedulerMsg,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SchedulerMsg::MembersChanged(members) => {
                let leading =
                    members.iter().any(|m| m.is_self && m.leader) && !state.membership.is_fenced();
                if leading != state.leading {
                    tracing::info!(node = %state.node, leading, "scheduler leadership changed");
                    state.leading_since = leading.then(tokio::time::Instant::now);
                    if let (false, Some(demand)) = (leading, &state.demand) {
                        // A demand counted while leading means nothing once another node leads.
                        demand.publish(CapacityDemand::default());
                    }
                    if leading {
                        // Once the settle window ends, unheard-of nodes lose their instances.
                        myself.send_after(state.settings.settle, || SchedulerMsg::Reconcile);
                    }
                }
                state.leading = leading;
                state.members = members;
                state.start_reconcile(&myself);
            }
            SchedulerMsg::TopologyChanged | SchedulerMsg::Reconcile => {
                state.start_reconcile(&myself)
            }
            SchedulerMsg::Reconciled(result) => {
                state.running = false;
                match result {
                    Ok(report) => {
                        if let (true, Some(demand)) = (state.leading, &state.demand) {
                            demand.publish(report.demand.clone());
                        }
                        if report.placed + report.removed > 0 {
                            tracing::info!(
                                placed = report.placed,
                                removed = report.removed,
                                pending = report.pending,
                                pending_for_capacity = report.demand.pending,
                                moved = report.moved.len(),
                                "assignments reconciled"
                            );
                        }
                        let settings = &state.settings;
                        if report.rolling {
                            myself.send_after(settings.rollout_tick, || SchedulerMsg::Reconcile);
                        } else if let Some(due) = report.next_shift_step {
                            let due = due.max(settings.rollout_tick);
                            myself.send_after(due, || SchedulerMsg::Reconcile);
                        }
                        if !report.moved.is_empty() {
                            let until = tokio::time::Instant::now() + settings.hold_after_move;
                            state
                                .held
                                .extend(report.moved.into_iter().map(|m| (m, until)));
                            myself.send_after(settings.next_step, || SchedulerMsg::Reconcile);
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "reconcile failed: retrying");
                        myself.send_after(state.settings.retry_after_error, || {
                            SchedulerMsg::Reconcile
                        });
                    }
                }
                if std::mem::take(&mut state.again) {
                    state.start_reconcile(&myself);
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SchedulerMsg>,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        state.watchers.iter().for_each(|w| w.abort());
        Ok(())
    }
}

impl SchedulerState {
    fn start_reconcile(&mut self, myself: &ActorRef<SchedulerMsg>) {
        if !self.leading || self.membership.is_fenced() {
            return;
        }
        if self.running {
            self.again = true;
            return;
        }
        self.running = true;
        let (registry, node, members) = (
            self.registry.clone(),
            self.node.clone(),
            self.members.clone(),
        );
        let source = self.traffic_source.clone();
        let settling = self
            .leading_since
            .is_some_and(|since| since.elapsed() < self.settings.settle);
        let now = tokio::time::Instant::now();
        self.held.retain(|_, until| *until > now);
        let held: BTreeSet<(String, u32)> = self.held.keys().cloned().collect();
        let scheduler = myself.clone();
        let settings = self.settings.clone();
        tokio::spawn(async move {
            // A panic must still report back: otherwise `running` stays set and the leader
            // schedules nothing more (failover included) until the process restarts.
            let result = crate::panics::caught(reconcile(
                &registry, &node, &members, &source, settling, &held, &settings,
            ))
            .await
            .unwrap_or_else(|panic| {
                tracing::error!(%panic, "reconcile panicked: it will run again");
                Err(SchedulerError::Panicked(panic))
            });
            let _ = scheduler.cast(SchedulerMsg::Reconciled(result));
        });
    }
}

/// Casts `TopologyChanged` on every change under `prefix` (the topology, roll-outs, shifts).
fn watch(
    scheduler: ActorRef<SchedulerMsg>,
    registry: RegistryHandle,
    prefix: &'static str,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(key) = KeyPath::parse(prefix) else {
            return;
        };
        let mut from = None;
        loop {
            let Ok(mut subscription) = registry.subscribe(&key, from).await else {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            };
            while let Some(event) = subscription.next().await {
                from = Some(event.index());
                if scheduler.cast(SchedulerMsg::TopologyChanged).is_err() {
                    return;
                }
            }
        }
    })
}

/// One pass: place what the topology asks for on the live nodes and write the difference.
/// While `settling`, nodes with assignments that membership has not listed yet count as live and
/// nothing is rebalanced; otherwise up to `max_moves` instances not `held` may move between
/// alive nodes.
async fn reconcile(
    registry: &RegistryHandle,
    node: &str,
    members: &[MemberView],
    source: &TrafficSource,
    settling: bool,
    held: &BTreeSet<(String, u32)>,
    settings: &SchedulerSettings,
) -> Result<ReconcileReport, SchedulerError> {
    let leader_key = key(layout::SCHEDULER_LEADER)?;
    let leader_value = serde_json::json!({ "node": node });
    if registry.get(&leader_key).await?.0.map(|e| e.value) != Some(leader_value.clone()) {
        registry.put(&leader_key, leader_value, None).await?;
    }
    // A deploy that stopped after storing its record still owes its group metadata.
    deploy::complete_pending(registry)
        .await
        .map_err(SchedulerError::CompleteDeploy)?;
    let topology = deploy::current(registry)
        .await
        .map_err(SchedulerError::Topology)?
        .map(|(record, _)| record.topology)
        .unwrap_or_default();
    let current = read_records::<Assignment>(registry, layout::ASSIGNMENTS).await?;
    let mut report = ReconcileReport::default();
    let (groups, governed) = roll_outs(
        registry,
        &topology.groups,
        &current,
        members,
        source,
        &mut report,
    )
    .await?;
    shifts(
        registry,
        &topology.groups,
        members,
        source,
        settings,
        &mut report,
    )
    .await?;
    // Placement sees a group under roll-out with the type it rolls from, so that instances
    // already replaced stay valid and in place; `governed` then gives each index its type.
    let current_assignments: Vec<Assignment> = current
        .values()
        .cloned()
        .map(|mut a| {
            if let Some(governed) = governed.get(&a.group) {
                a.task_type = governed.base.clone();
            }
            a
        })
        .collect();
    let mut candidates: Vec<NodeCandidate> = members
        .iter()
        .filter(|m| m.status != MemberStatus::Dead)
        .map(|m| NodeCandidate {
            name: m.name.clone(),
            catalog: m.catalog.iter().cloned().collect(),
            tags: m.tags.clone(),
            max_instances: m.max_instances,
        })
        .collect();
    if settling {
        candidates.extend(unheard_of(members, &current_assignments));
    }
    let mut placement = place(&groups, &candidates, &current_assignments);
    if !settling {
        let alive: Vec<NodeCandidate> = candidates
            .iter()
            .filter(|c| {
                members
                    .iter()
                    .any(|m| m.name == c.name && m.status == MemberStatus::Alive)
            })
            .cloned()
            .collect();
        let (rebalanced, _) = rebalance(
            &groups,
            &alive,
            &placement.assignments,
            held,
            settings.max_moves,
        );
        report.moved = placement
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
    for (path, assignment) in &wanted {
        if current.get(path) != Some(assignment) {
            let value = encode(path, assignment)?;
            registry.put(path, value, None).await?;
            report.placed += 1;
        }
    }
    for path in current.keys().filter(|p| !wanted.contains_key(*p)) {
        registry.delete(path, None, false).await?;
        report.removed += 1;
    }
    report.pending = placement.pending.len();
    report.demand = CapacityDemand {
        pending: placement
            .pending
            .iter()
            .filter(|p| p.cause == PendingCause::Full)
            .count(),
        nodes: candidates.iter().map(|c| c.name.clone()).collect(),
    };
    write_pending(registry, &groups, &placement.pending, members).await?;
    withdraw_dead_endpoints(registry, members).await?;
    Ok(report)
}

/// Runs one step of every group's roll-out ([`rollout::step`]) and stores the records that
/// changed, before any assignment is written: a record that cannot be stored (a `lathe rollout`
/// command changed it meanwhile) fails the reconcile, which retries, so no instance is replaced
/// without its batch on record. Returns the groups as placement should see them, and the groups
/// a roll-out governs.
async fn roll_outs(
    registry: &RegistryHandle,
    groups: &[lathe::topology::GroupSpec],
    current: &BTreeMap<KeyPath, Assignment>,
    members: &[MemberView],
    source: &TrafficSource,
    report: &mut ReconcileReport,
) -> Result<(Vec<lathe::topology::GroupSpec>, BTreeMap<String, Governed>), SchedulerError> {
    let stored = read_versioned::<RolloutRecord>(registry, layout::ROLLOUTS).await?;
    let statuses = read_records::<InstanceStatus>(registry, layout::INSTANCES).await?;
    let catalogs: BTreeMap<&str, &Vec<lathe::TaskType>> = members
        .iter()
        .filter(|m| m.status != MemberStatus::Dead)
        .map(|m| (m.name.as_str(), &m.catalog))
        .collect();
    let now_ms = rollout::unix_ms();
    // The response counters of the groups whose batch a metric gate judges, read off every node.
    let gated: BTreeSet<String> = groups
        .iter()
        .filter(|group| group.rollout.gated())
        .filter(|group| {
            stored
                .get(&layout::rollout(&group.name))
                .is_some_and(|(r, _)| {
                    r.state == RolloutState::Rolling
                        && !r.batch.is_empty()
                        && r.to == group.task_type
                })
        })
        .map(|group| group.name.clone())
        .collect();
    let traffic = traffic::read(source, members, &gated).await;
    let mut placed_groups = groups.to_vec();
    let mut governed = BTreeMap::new();
    let mut writes: Vec<(KeyPath, Option<RolloutRecord>, u64)> = Vec::new();
    for group in &mut placed_groups {
        let path = layout::rollout(&group.name);
        let record = stored.get(&path);
        let placed: Vec<Placed<'_>> = current
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
        let group_statuses: BTreeMap<u32, &InstanceStatus> = statuses
            .values()
            .filter(|s| s.group == group.name)
            .map(|s| (s.index, s))
            .collect();
        let group_traffic = traffic
            .as_ref()
            .filter(|_| gated.contains(&group.name))
            .map(|all| all.get(&group.name).cloned().unwrap_or_default());
        let step = rollout::step(
            group,
            record.map(|(r, _)| r),
            &placed,
            &group_statuses,
            group_traffic.as_ref(),
            now_ms,
        );
        let cas = record.map_or(0, |(_, version)| *version);
        match (&step.record, record) {
            (Some(new), Some((old, _))) if new == old => {}
            (None, None) => {}
            (new, _) => writes.push((path, new.clone(), cas)),
        }
        if let Some(record) = &step.record {
            report.rolling |= record.state.is_moving();
        }
        if let Some(rule) = step.governs {
            group.task_type = rule.base.clone();
            governed.insert(group.name.clone(), rule);
        }
    }
    // Roll-outs of groups no longer deployed.
    for (path, (record, version)) in &stored {
        if !groups.iter().any(|g| g.name == record.group) {
            writes.push((path.clone(), None, *version));
        }
    }
    for (path, record, cas) in writes {
        let result = match &record {
            Some(record) => {
                let value = encode(&path, record)?;
                registry.put(&path, value, Some(cas)).await.map(|_| ())
            }
            None => registry.delete(&path, Some(cas), false).await.map(|_| ()),
        };
        result.map_err(|source| SchedulerError::Write {
            key: path.to_string(),
            source,
        })?;
        if let Some(record) = record {
            tracing::info!(
                group = %record.group,
                from = %record.from,
                to = %record.to,
                state = record.state.name(),
                batch = ?record.batch,
                reason = record.reason.as_deref().unwrap_or(""),
                "roll-out"
            );
        }
    }
    Ok((placed_groups, governed))
}

/// Runs one step of every traffic shift ([`shift::step`]): the record first (CAS on the version
/// read, so a concurrent `pause` or `undo` wins and the step is retried), then the split (CAS on
/// the key's version, so a change by hand is never overwritten: the next step sees it and
/// pauses).
async fn shifts(
    registry: &RegistryHandle,
    groups: &[lathe::topology::GroupSpec],
    members: &[MemberView],
    source: &TrafficSource,
    settings: &SchedulerSettings,
    report: &mut ReconcileReport,
) -> Result<(), SchedulerError> {
    let records = read_versioned::<lathe::layout::ShiftRecord>(registry, layout::SHIFTS).await?;
    if records.is_empty() {
        return Ok(());
    }
    let policy_of = |name: &str| groups.iter().find(|g| g.name == name).map(|g| &g.rollout);
    // The response counters of the targets under a metric gate, read off every node.
    let gated: BTreeSet<String> = records
        .values()
        .map(|(record, _)| record)
        .filter(|record| record.state == lathe::layout::ShiftState::Shifting)
        .filter(|record| policy_of(&record.to).is_some_and(|policy| policy.gated()))
        .map(|record| record.to.clone())
        .collect();
    let traffic = traffic::read(source, members, &gated).await;
    let statuses = read_records::<InstanceStatus>(registry, layout::INSTANCES).await?;
    let now_ms = rollout::unix_ms();
    for (path, (record, version)) in records {
        if record.state != lathe::layout::ShiftState::Shifting {
            continue;
        }
        let key = key(&record.key)?;
        let (entry, _) = registry.get(&key).await?;
        let (current, key_version) = match &entry {
            Some(entry) => (Some(&entry.value), entry.version),
            None => (None, 0),
        };
        let to: Vec<&InstanceStatus> = statuses.values().filter(|s| s.group == record.to).collect();
        let to_traffic = traffic
            .as_ref()
            .filter(|_| gated.contains(&record.to))
            .map(|all| all.get(&record.to).cloned().unwrap_or_default());
        let policy = policy_of(&record.to);
        let step = shift::step(&record, current, &to, policy, to_traffic.as_ref(), now_ms);
        if step.record.state == lathe::layout::ShiftState::Shifting {
            let due_ms = (step.record.last_step_ms + u64::from(step.record.every_seconds) * 1000)
                .saturating_sub(now_ms);
            let mut due = Duration::from_millis(due_ms);
            if gated.contains(&record.to) {
                // A gate watches the target between steps too: a figure over its threshold
                // rolls the shift back without waiting for the step.
                due = due.min(settings.gate_watch);
            }
            report.next_shift_step = Some(report.next_shift_step.map_or(due, |d| d.min(due)));
        }
        if step.record != record {
            let value = encode(&path, &step.record)?;
            registry
                .put(&path, value, Some(version))
                .await
                .map_err(|source| SchedulerError::Write {
                    key: path.to_string(),
                    source,
                })?;
        }
        if let Some(split) = step.write {
            match registry.put(&key, split.clone(), Some(key_version)).await {
                Ok(_) => tracing::info!(
                    key = %record.key,
                    to = %record.to,
                    percent = step.record.percent,
                    state = step.record.state.name(),
                    reason = step.record.reason.as_deref().unwrap_or(""),
                    %split,
                    "traffic shift"
                ),
                // Read from a replica that had not caught up: the next pass reads it again.
                Err(crate::registry::RegistryError::Store(
                    lathe_store::StoreError::CasMismatch { .. },
                )) => {}
                Err(source) => {
                    return Err(SchedulerError::Write {
                        key: key.to_string(),
                        source,
                    })
                }
            }
        }
    }
    Ok(())
}

/// Deletes the endpoints of instances on nodes membership holds dead, so load balancers stop
/// trying them before the instances run again elsewhere. CAS on the version read: a record the
/// instance's new node wrote meanwhile stays.
async fn withdraw_dead_endpoints(
    registry: &RegistryHandle,
    members: &[MemberView],
) -> Result<(), SchedulerError> {
    let dead: BTreeSet<&str> = members
        .iter()
        .filter(|m| m.status == MemberStatus::Dead)
        .map(|m| m.name.as_str())
        .collect();
    if dead.is_empty() {
        return Ok(());
    }
    let (entries, _) = registry.list(&key(layout::ENDPOINTS)?).await?;
    for entry in entries {
        let Ok(endpoint) = serde_json::from_value::<lathe::Endpoint>(entry.value) else {
            continue;
        };
        if dead.contains(endpoint.node.as_str()) {
            match registry
                .delete(&entry.key, Some(entry.version), false)
                .await
            {
                Ok(_) => tracing::info!(
                    group = %endpoint.group,
                    index = endpoint.index,
                    node = %endpoint.node,
                    "endpoint of a dead node withdrawn"
                ),
                Err(crate::registry::RegistryError::Store(
                    lathe_store::StoreError::CasMismatch { .. },
                )) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
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

/// Marks unplaceable instances pending (with the reason) and removes instance records that no
/// node will clean up: instances gone from the topology whose node is dead or who never ran.
/// Removals are CAS on the version read: a node that started the instance meanwhile (and wrote
/// `running`) keeps its record.
async fn write_pending(
    registry: &RegistryHandle,
    groups: &[lathe::topology::GroupSpec],
    pending: &[super::placement::Pending],
    members: &[MemberView],
) -> Result<(), SchedulerError> {
    let versioned = read_versioned::<InstanceStatus>(registry, layout::INSTANCES).await?;
    let records: BTreeMap<KeyPath, InstanceStatus> = versioned
        .iter()
        .map(|(path, (record, _))| (path.clone(), record.clone()))
        .collect();
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
        if records.get(&path) != Some(&status) {
            let value = encode(&path, &status)?;
            registry.put(&path, value, None).await?;
        }
    }
    let wanted: BTreeMap<&str, u32> = groups.iter().map(|g| (g.name.as_str(), g.tasks)).collect();
    let live: BTreeSet<&str> = members
        .iter()
        .filter(|m| m.status != MemberStatus::Dead)
        .map(|m| m.name.as_str())
        .collect();
    for (path, record) in &records {
        let in_topology = wanted
            .get(record.group.as_str())
            .is_some_and(|n| record.index < *n);
        let orphan = match &record.node {
            None => !pending_paths.contains(path),
            Some(node) => !in_topology && !live.contains(node.as_str()),
        };
        if orphan {
            let version = versioned.get(path).map(|(_, version)| *version);
            match registry.delete(path, version, false).await {
                Ok(_)
                | Err(crate::registry::RegistryError::Store(
                    lathe_store::StoreError::CasMismatch { .. },
                )) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Like [`read_records`], with each record's version.
async fn read_versioned<T: serde::de::DeserializeOwned>(
    registry: &RegistryHandle,
    prefix: &str,
) -> Result<BTreeMap<KeyPath, (T, u64)>, SchedulerError> {
    let (entries, _) = registry.list(&key(prefix)?).await?;
    Ok(entries
        .into_iter()
        .filter_map(|e| Some((e.key, (serde_json::from_value(e.value).ok()?, e.version))))
        .collect())
}

/// Every record under `prefix` that parses as a `T`, by path.
async fn read_records<T: serde::de::DeserializeOwned>(
    registry: &RegistryHandle,
    prefix: &str,
) -> Result<BTreeMap<KeyPath, T>, SchedulerError> {
    let (entries, _) = registry.list(&key(prefix)?).await?;
    Ok(entries
        .into_iter()
        .filter_map(|e| Some((e.key, serde_json::from_value(e.value).ok()?)))
        .collect())
}

fn key(path: &str) -> Result<KeyPath, SchedulerError> {
    KeyPath::parse(path).map_err(|source| SchedulerError::Path {
        path: path.to_string(),
        source,
    })
}

fn encode<T: serde::Serialize>(
    key: &KeyPath,
    value: &T,
) -> Result<serde_json::Value, SchedulerError> {
    serde_json::to_value(value).map_err(|source| SchedulerError::Encode {
        key: key.to_string(),
        source,
    })
}
