//! `Scheduler`: runs on every node, acts only on the leader.
//!
//! Leadership comes from membership (the oldest ZooKeeper member node, or the node holding the
//! embedded registry), so a dead leader is replaced as soon as its ZooKeeper session ends. The
//! scheduler keeps no state of its own: each reconcile reads the deployed topology and the current
//! assignments from the registry, places what is missing with the pure [`place`] function, and
//! writes the difference. A new leader therefore just carries on.
//!
//! Reconciles run off the handler, one at a time; triggers that arrive meanwhile coalesce into one
//! more run. Triggers: the topology changed, membership changed, and a periodic safety net.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lathe::layout::{self, Assignment, InstanceState, InstanceStatus};
use lathe::KeyPath;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;

use super::deploy;
use super::placement::{place, NodeCandidate};
use crate::membership::{MemberStatus, MemberView, MembershipHandle};
use crate::registry::RegistryHandle;

/// A reconcile also runs this often without a trigger, to repair failed writes.
const SAFETY_NET: Duration = Duration::from_secs(5);
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);

#[derive(RactorMessage)]
pub enum SchedulerMsg {
    MembersChanged(Vec<MemberView>),
    TopologyChanged,
    Reconcile,
    Reconciled(Result<ReconcileReport, String>),
}

/// What one reconcile did.
#[derive(Debug, Clone, Default)]
pub struct ReconcileReport {
    pub placed: usize,
    pub removed: usize,
    pub pending: usize,
}

pub struct Scheduler;

pub struct SchedulerArgs {
    pub node: String,
    pub registry: RegistryHandle,
    pub membership: MembershipHandle,
}

pub struct SchedulerState {
    node: String,
    registry: RegistryHandle,
    membership: MembershipHandle,
    members: Vec<MemberView>,
    leading: bool,
    running: bool,
    again: bool,
    watchers: Vec<tokio::task::JoinHandle<()>>,
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
            watch_members(myself.clone(), args.membership.clone()),
            watch_topology(myself.clone(), args.registry.clone()),
        ];
        myself.send_interval(SAFETY_NET, || SchedulerMsg::Reconcile);
        Ok(SchedulerState {
            node: args.node,
            registry: args.registry,
            membership: args.membership,
            members: Vec::new(),
            leading: false,
            running: false,
            again: false,
            watchers,
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
                let leading = members.iter().any(|m| m.is_self && m.leader)
                    && !state.membership.is_fenced();
                if leading != state.leading {
                    tracing::info!(node = %state.node, leading, "scheduler leadership changed");
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
                    Ok(report) if report.placed + report.removed > 0 => tracing::info!(
                        placed = report.placed,
                        removed = report.removed,
                        pending = report.pending,
                        "assignments reconciled"
                    ),
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, "reconcile failed: retrying");
                        myself.send_after(RETRY_AFTER_ERROR, || SchedulerMsg::Reconcile);
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
        let (registry, node, members) =
            (self.registry.clone(), self.node.clone(), self.members.clone());
        let scheduler = myself.clone();
        tokio::spawn(async move {
            let result = reconcile(&registry, &node, &members).await;
            let _ = scheduler.cast(SchedulerMsg::Reconciled(result));
        });
    }
}

fn watch_members(
    scheduler: ActorRef<SchedulerMsg>,
    membership: MembershipHandle,
) -> tokio::task::JoinHandle<()> {
    let mut members = membership.subscribe();
    tokio::spawn(async move {
        loop {
            let current = members.borrow_and_update().clone();
            if scheduler.cast(SchedulerMsg::MembersChanged(current)).is_err() {
                return;
            }
            if members.changed().await.is_err() {
                return;
            }
        }
    })
}

fn watch_topology(
    scheduler: ActorRef<SchedulerMsg>,
    registry: RegistryHandle,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(key) = KeyPath::parse(layout::TOPOLOGY) else {
            return;
        };
        let mut from = None;
        loop {
            let Ok(mut subscription) = registry.subscribe(&key, from).await else {
                tokio::time::sleep(RETRY_AFTER_ERROR).await;
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
async fn reconcile(
    registry: &RegistryHandle,
    node: &str,
    members: &[MemberView],
) -> Result<ReconcileReport, String> {
    let leader_key = key(layout::SCHEDULER_LEADER)?;
    let leader_value = serde_json::json!({ "node": node });
    if registry.get(&leader_key).await.map_err(|e| e.to_string())?.0.map(|e| e.value)
        != Some(leader_value.clone())
    {
        registry
            .put(&leader_key, leader_value, None)
            .await
            .map_err(|e| e.to_string())?;
    }
    let topology = deploy::current(registry)
        .await
        .map_err(|e| e.to_string())?
        .map(|(record, _)| record.topology)
        .unwrap_or_default();
    let current = read_records::<Assignment>(registry, layout::ASSIGNMENTS).await?;
    let candidates: Vec<NodeCandidate> = members
        .iter()
        .filter(|m| m.status != MemberStatus::Dead)
        .map(|m| NodeCandidate {
            name: m.name.clone(),
            catalog: m.catalog.iter().cloned().collect(),
            tags: m.tags.clone(),
        })
        .collect();
    let current_assignments: Vec<Assignment> = current.values().cloned().collect();
    let placement = place(&topology.groups, &candidates, &current_assignments);

    let mut report = ReconcileReport::default();
    let wanted: BTreeMap<KeyPath, Assignment> = placement
        .assignments
        .into_iter()
        .map(|a| (layout::assignment(&a.node, &a.group, a.index), a))
        .collect();
    for (path, assignment) in &wanted {
        if current.get(path) != Some(assignment) {
            let value = serde_json::to_value(assignment).map_err(|e| e.to_string())?;
            registry.put(path, value, None).await.map_err(|e| e.to_string())?;
            report.placed += 1;
        }
    }
    for path in current.keys().filter(|p| !wanted.contains_key(*p)) {
        registry.delete(path, None, false).await.map_err(|e| e.to_string())?;
        report.removed += 1;
    }
    report.pending = placement.pending.len();
    write_pending(registry, &topology.groups, &placement.pending, members).await?;
    Ok(report)
}

/// Marks unplaceable instances pending (with the reason) and removes instance records that no
/// node will clean up: instances gone from the topology whose node is dead or who never ran.
async fn write_pending(
    registry: &RegistryHandle,
    groups: &[lathe::topology::GroupSpec],
    pending: &[super::placement::Pending],
    members: &[MemberView],
) -> Result<(), String> {
    let records = read_records::<InstanceStatus>(registry, layout::INSTANCES).await?;
    let types: BTreeMap<&str, &lathe::TaskType> =
        groups.iter().map(|g| (g.name.as_str(), &g.task_type)).collect();
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
            let value = serde_json::to_value(&status).map_err(|e| e.to_string())?;
            registry.put(&path, value, None).await.map_err(|e| e.to_string())?;
        }
    }
    let wanted: BTreeMap<&str, u32> = groups.iter().map(|g| (g.name.as_str(), g.tasks)).collect();
    let live: BTreeSet<&str> = members
        .iter()
        .filter(|m| m.status != MemberStatus::Dead)
        .map(|m| m.name.as_str())
        .collect();
    for (path, record) in &records {
        let in_topology = wanted.get(record.group.as_str()).is_some_and(|n| record.index < *n);
        let orphan = match &record.node {
            None => !pending_paths.contains(path),
            Some(node) => !in_topology && !live.contains(node.as_str()),
        };
        if orphan {
            registry.delete(path, None, false).await.map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Every record under `prefix` that parses as a `T`, by path.
async fn read_records<T: serde::de::DeserializeOwned>(
    registry: &RegistryHandle,
    prefix: &str,
) -> Result<BTreeMap<KeyPath, T>, String> {
    let (entries, _) = registry.list(&key(prefix)?).await.map_err(|e| e.to_string())?;
    Ok(entries
        .into_iter()
        .filter_map(|e| Some((e.key, serde_json::from_value(e.value).ok()?)))
        .collect())
}

fn key(path: &str) -> Result<KeyPath, String> {
    KeyPath::parse(path).map_err(|e| e.to_string())
}
