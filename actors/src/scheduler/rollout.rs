//! Slow roll-outs: a pure step function the scheduler leader runs for every group on each
//! reconcile.
//!
//! When a deploy changes a group's task type (a new `version`) while instances of the old one run,
//! a [`RolloutRecord`] starts. Each step:
//!
//! - **rolling**: the current batch (`rollout.batch` instances, lowest indices first) runs the new
//!   type. Once every instance of it has run for `healthy_seconds` without a restart, the next
//!   batch starts; when none is left the roll-out is **done**. A batch that fails (an instance
//!   `failed` or `pending`, or placed on a node that cannot run the new type) or is not healthy
//!   within `timeout_seconds` ends it: **rolling-back** (every instance back to the old type, then
//!   **rolled-back**) or **paused**, as `on_failure` says.
//! - **paused**: nothing more is replaced; what runs keeps running.
//!
//! Under a metric gate (`rollout.max_error_ratio`, `rollout.max_p99_ms`) a healthy batch also
//! needs `min_requests` answers of the group since it became healthy, with the error ratio and
//! p99 of those under the thresholds ([`gate::judge`]); over a threshold fails the batch at once.
//! `traffic` is the group's counters summed over the cluster now (`None`: not read, so a gated
//! batch waits).
//!
//! While a roll-out governs a group, placement sees the group with its *old* type (so running
//! instances stay valid and where they are) and [`Step::types`] then says, per index, which type
//! each assignment carries. A done roll-out governs nothing: the group's type is the topology's.

use std::collections::BTreeMap;

use lathe::layout::{
    Assignment, InstanceState, InstanceStatus, RolloutRecord, RolloutState, Traffic,
};
use lathe::topology::{GroupSpec, OnFailure};
use lathe::TaskType;

use super::gate::{self, Judgement};

/// What a step decided for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The record to store (`None`: no roll-out for this group).
    pub record: Option<RolloutRecord>,
    /// While a roll-out governs the group: the type placement sees the group with, and the type
    /// of each index. `None`: the group is placed with the topology's type.
    pub governs: Option<Governed>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Governed {
    pub base: TaskType,
    pub types: BTreeMap<u32, TaskType>,
}

impl Governed {
    /// The type instance `index` is to run.
    pub fn type_of(&self, index: u32) -> &TaskType {
        self.types.get(&index).unwrap_or(&self.base)
    }
}

/// The node a current assignment of the group is on, and whether that node can run `to`.
pub struct Placed<'a> {
    pub assignment: &'a Assignment,
    pub node_can_run: bool,
}

/// One step of the roll-out of `group` at `now_ms`: `record` is the stored one, `current` the
/// group's current assignments, `statuses` its instance records by index.
pub fn step(
    group: &GroupSpec,
    record: Option<&RolloutRecord>,
    current: &[Placed<'_>],
    statuses: &BTreeMap<u32, &InstanceStatus>,
    traffic: Option<&Traffic>,
    now_ms: u64,
) -> Step {
    let to = &group.task_type;
    let record = match record {
        Some(record) if &record.to == to => record.clone(),
        _ => match start(group, current, now_ms) {
            Some(record) => record,
            None => {
                return Step {
                    record: None,
                    governs: None,
                }
            }
        },
    };
    let mut record = record;
    let on_new: BTreeMap<u32, bool> = current
        .iter()
        .filter(|p| p.assignment.index < group.tasks)
        .map(|p| (p.assignment.index, &p.assignment.task_type == to))
        .collect();
    match record.state {
        RolloutState::Rolling => roll(
            group,
            &mut record,
            current,
            &on_new,
            statuses,
            traffic,
            now_ms,
        ),
        RolloutState::RollingBack => {
            if on_new.values().all(|new| !new) {
                record.state = RolloutState::RolledBack;
                record.batch.clear();
                record.updated_ms = now_ms;
            }
        }
        RolloutState::Paused | RolloutState::Done | RolloutState::RolledBack => {}
    }
    let governs = match record.state {
        RolloutState::Done => None,
        RolloutState::RollingBack | RolloutState::RolledBack => Some(Governed {
            base: record.from.clone(),
            types: BTreeMap::new(),
        }),
        RolloutState::Rolling | RolloutState::Paused => Some(Governed {
            base: record.from.clone(),
            types: (0..group.tasks)
                .filter(|i| on_new.get(i).copied().unwrap_or(false) || record.batch.contains(i))
                .map(|i| (i, to.clone()))
                .collect(),
        }),
    };
    Step {
        record: Some(record),
        governs,
    }
}

/// A new roll-out when instances of another type than the topology's run; `None` when every
/// instance already runs it (or none runs at all: a new group starts on its type directly).
fn start(group: &GroupSpec, current: &[Placed<'_>], now_ms: u64) -> Option<RolloutRecord> {
    let mut others: BTreeMap<&TaskType, usize> = BTreeMap::new();
    for placed in current {
        if placed.assignment.task_type != group.task_type {
            *others.entry(&placed.assignment.task_type).or_default() += 1;
        }
    }
    // The type most instances run is what a roll-back returns to (ties: the first by order).
    let from = others
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
        .map(|(task_type, _)| (*task_type).clone())?;
    Some(RolloutRecord {
        group: group.name.clone(),
        from,
        to: group.task_type.clone(),
        state: RolloutState::Rolling,
        batch: Vec::new(),
        batch_started_ms: None,
        healthy_since_ms: None,
        healthy_restarts: 0,
        reason: None,
        started_ms: now_ms,
        updated_ms: now_ms,
        gate_baseline: None,
    })
}

/// One step of a rolling roll-out: judge the current batch, then start the next one.
fn roll(
    group: &GroupSpec,
    record: &mut RolloutRecord,
    current: &[Placed<'_>],
    on_new: &BTreeMap<u32, bool>,
    statuses: &BTreeMap<u32, &InstanceStatus>,
    traffic: Option<&Traffic>,
    now_ms: u64,
) {
    let policy = &group.rollout;
    let to = &group.task_type;
    // Instances beyond `tasks` (a redeploy that also shrank the group) are no longer waited for.
    record.batch.retain(|&i| i < group.tasks);
    if !record.batch.is_empty() {
        match judge(group, record, current, statuses, traffic, now_ms) {
            Verdict::Failed(reason) => {
                record.reason = Some(reason);
                record.state = match policy.on_failure {
                    OnFailure::Rollback => RolloutState::RollingBack,
                    OnFailure::Pause => RolloutState::Paused,
                };
                record.updated_ms = now_ms;
                return;
            }
            Verdict::Waiting => return,
            Verdict::Passed => {
                record.batch.clear();
                record.batch_started_ms = None;
                record.healthy_since_ms = None;
                record.healthy_restarts = 0;
                record.gate_baseline = None;
                record.updated_ms = now_ms;
            }
        }
    }
    let remaining: Vec<u32> = (0..group.tasks)
        .filter(|i| !on_new.get(i).copied().unwrap_or(false))
        .collect();
    if remaining.is_empty() {
        record.state = RolloutState::Done;
        record.reason = None;
        record.updated_ms = now_ms;
        return;
    }
    record.batch = remaining
        .into_iter()
        .take(policy.batch.max(1) as usize)
        .collect();
    record.batch_started_ms = Some(now_ms);
    record.healthy_since_ms = None;
    record.healthy_restarts = 0;
    record.updated_ms = now_ms;
    tracing::info!(group = %group.name, to = %to, batch = ?record.batch, "roll-out: next batch");
}

enum Verdict {
    Passed,
    Waiting,
    Failed(String),
}

/// Whether the current batch has run the new type for `healthy_seconds` without a restart.
/// Updates the health clock in `record`.
fn judge(
    group: &GroupSpec,
    record: &mut RolloutRecord,
    current: &[Placed<'_>],
    statuses: &BTreeMap<u32, &InstanceStatus>,
    traffic: Option<&Traffic>,
    now_ms: u64,
) -> Verdict {
    let policy = &group.rollout;
    let to = &group.task_type;
    let instance = |i: u32| format!("{}/{i}", group.name);
    for &i in &record.batch {
        let on_unable_node = current
            .iter()
            .any(|p| p.assignment.index == i && &p.assignment.task_type == to && !p.node_can_run);
        if on_unable_node {
            return Verdict::Failed(format!("{} is on a node that cannot run {to}", instance(i)));
        }
        if let Some(status) = statuses.get(&i).filter(|s| &s.task_type == to) {
            let why = status.reason.as_deref().unwrap_or("no reason given");
            match status.status {
                InstanceState::Failed => {
                    return Verdict::Failed(format!("{} failed on {to}: {why}", instance(i)))
                }
                InstanceState::Pending => {
                    return Verdict::Failed(format!("{} is pending on {to}: {why}", instance(i)))
                }
                _ => {}
            }
        }
    }
    let healthy = record.batch.iter().all(|i| {
        statuses
            .get(i)
            .is_some_and(|s| &s.task_type == to && s.status == InstanceState::Running)
    });
    let restarts: u32 = record
        .batch
        .iter()
        .filter_map(|i| statuses.get(i))
        .map(|s| s.restarts)
        .sum();
    if !healthy {
        record.healthy_since_ms = None;
        record.gate_baseline = None;
    } else if record.healthy_since_ms.is_none() || restarts != record.healthy_restarts {
        record.healthy_since_ms = Some(now_ms);
        record.healthy_restarts = restarts;
        record.gate_baseline = None;
    }
    let metrics = if record.healthy_since_ms.is_some() {
        match metric_gate(group, record, traffic) {
            Gate::Over(over) => {
                return Verdict::Failed(format!("{over} since the batch became healthy"))
            }
            Gate::Waiting(why) => Some(why),
            Gate::Open => None,
        }
    } else {
        None
    };
    let healthy_for = policy.healthy_for().as_millis() as u64;
    if let (Some(since), None) = (record.healthy_since_ms, &metrics) {
        if now_ms.saturating_sub(since) >= healthy_for {
            return Verdict::Passed;
        }
    }
    let started = record.batch_started_ms.unwrap_or(now_ms);
    if now_ms.saturating_sub(started) >= policy.timeout().as_millis() as u64 {
        let waiting: Vec<String> = record
            .batch
            .iter()
            .map(|&i| match statuses.get(&i).filter(|s| &s.task_type == to) {
                Some(s) => format!("{} {:?}", instance(i), s.status).to_lowercase(),
                None => format!("{} not started", instance(i)),
            })
            .collect();
        let metrics = metrics.map(|m| format!("; {m}")).unwrap_or_default();
        return Verdict::Failed(format!(
            "batch not healthy for {} s within {} s ({}{metrics})",
            policy.healthy_seconds,
            policy.timeout_seconds,
            waiting.join(", ")
        ));
    }
    Verdict::Waiting
}

/// What the metric gate of a healthy batch says.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Gate {
    /// The batch passes (or the group has no gate).
    Open,
    /// It cannot pass yet: why.
    Waiting(String),
    /// A figure is over its threshold: which, by how much.
    Over(String),
}

/// The metric gate of a healthy batch. Sets the baseline the first time it sees the counters,
/// and again when they went down.
fn metric_gate(group: &GroupSpec, record: &mut RolloutRecord, traffic: Option<&Traffic>) -> Gate {
    let policy = &group.rollout;
    if !policy.gated() {
        return Gate::Open;
    }
    let Some(now) = traffic else {
        return Gate::Waiting(format!(
            "the response counters of {} are not read",
            group.name
        ));
    };
    let window = record
        .gate_baseline
        .as_ref()
        .and_then(|baseline| gate::since(now, baseline));
    let Some(window) = window else {
        record.gate_baseline = Some(now.clone());
        return Gate::Waiting(format!("0 of {} answers", policy.min_requests));
    };
    match gate::judge(policy, &window) {
        Judgement::Pass => Gate::Open,
        Judgement::TooFew(n) => Gate::Waiting(format!("{n} of {} answers", policy.min_requests)),
        Judgement::Over(why) => Gate::Over(why),
    }
}

/// Why a roll-out command does not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The command does not apply in the roll-out's state: which state, and why not.
    #[error("the roll-out of {group} to {to} is {state}: {why}")]
    NotNow {
        group: String,
        to: String,
        state: &'static str,
        why: &'static str,
    },
    /// Not `pause`, `resume` or `undo`.
    #[error("unknown roll-out command {0:?}: use pause, resume or undo")]
    Unknown(String),
}

/// `lathe rollout pause|resume|undo`: the record after `command`, or why it does not apply.
pub fn command(
    record: &RolloutRecord,
    command: &str,
    now_ms: u64,
) -> Result<RolloutRecord, CommandError> {
    let mut next = record.clone();
    let state = record.state;
    let refuse = |why: &'static str| {
        Err(CommandError::NotNow {
            group: record.group.clone(),
            to: record.to.to_string(),
            state: state.name(),
            why,
        })
    };
    match (command, state) {
        ("pause", RolloutState::Rolling) => {
            next.state = RolloutState::Paused;
            next.reason = Some("paused by lathe rollout pause".into());
        }
        ("pause", _) => return refuse("only a rolling roll-out can pause"),
        ("resume", RolloutState::Paused) => {
            next.state = RolloutState::Rolling;
            next.reason = None;
            // The batch gets its whole time again.
            next.batch_started_ms = Some(now_ms);
            next.healthy_since_ms = None;
        }
        ("resume", RolloutState::RolledBack) => {
            next.state = RolloutState::Rolling;
            next.reason = None;
            next.batch.clear();
            next.batch_started_ms = None;
            next.healthy_since_ms = None;
            next.started_ms = now_ms;
        }
        ("resume", _) => return refuse("only a paused or rolled-back roll-out can resume"),
        ("undo", RolloutState::Rolling | RolloutState::Paused | RolloutState::Done) => {
            next.state = RolloutState::RollingBack;
            next.reason = Some(format!(
                "undone by lathe rollout undo: back to {}",
                record.from
            ));
        }
        ("undo", _) => return refuse("it is already going back"),
        (other, _) => return Err(CommandError::Unknown(other.to_string())),
    }
    next.updated_ms = now_ms;
    Ok(next)
}

/// Wall-clock milliseconds since the Unix epoch: roll-out records outlive a leader.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests;
