//! Traffic shifts: a weighted split (`[[groups], [weights]]`, the seed's `backend_distribution`)
//! moves its traffic to one group `step` percentage points at a time — the other half of slow
//! roll-outs, for versions deployed side by side as groups (DESIGN.md). Pure functions; the
//! scheduler leader runs [`step`] for each shift on every reconcile and writes what it says.
//!
//! Each step waits `every_seconds` and for the target group to be healthy: at least one instance,
//! every instance running, no restart since the step began. When it is not, the original split
//! is put back (rolled back). A split changed by someone else meanwhile pauses the shift.
//!
//! Under a metric gate in the target group's `rollout` table (`max_error_ratio`, `max_p99_ms`),
//! a step also waits for `min_requests` answers of the target since the last step, and a figure
//! over its threshold rolls the shift back ([`gate::judge`]).

use lathe::layout::{InstanceState, InstanceStatus, ShiftRecord, ShiftState, Traffic};
use lathe::topology::RolloutPolicy;
use serde_json::{json, Value};

use super::gate::{self, Judgement};

mod commands;

pub use commands::{list, read, shift_key, start, start_record, steer, ShiftError, StartShift};

/// The shape of a split, for the messages of [`SplitError`].
const SHAPE: &str = "a split must be [[\"group\", ...], [weight, ...]]";

/// What is wrong with a value that should be a split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// Not an array of two arrays.
    #[error("{SHAPE}")]
    Shape,
    /// No group, or not as many weights as groups.
    #[error("{SHAPE}, as many weights as groups")]
    Counts,
    /// A group name that is not a string.
    #[error("group names are strings")]
    GroupName,
    /// A weight that is not a finite number of at least 0.
    #[error("weights are numbers of at least 0")]
    Weight,
}

/// A split's groups and weights; `Err` says what is wrong with the value.
pub fn parse_split(value: &Value) -> Result<Vec<(String, f64)>, SplitError> {
    let parts = value.as_array().ok_or(SplitError::Shape)?;
    let [groups, weights] = parts.as_slice() else {
        return Err(SplitError::Shape);
    };
    let (groups, weights) = (
        groups.as_array().ok_or(SplitError::Shape)?,
        weights.as_array().ok_or(SplitError::Shape)?,
    );
    if groups.is_empty() || groups.len() != weights.len() {
        return Err(SplitError::Counts);
    }
    groups
        .iter()
        .zip(weights)
        .map(|(group, weight)| {
            let group = group.as_str().ok_or(SplitError::GroupName)?;
            let weight = weight
                .as_f64()
                .filter(|w| w.is_finite() && *w >= 0.0)
                .ok_or(SplitError::Weight)?;
            Ok((group.to_string(), weight))
        })
        .collect()
}

/// `to`'s share of `split`, in whole percent.
pub fn percent_of(split: &[(String, f64)], to: &str) -> u32 {
    let total: f64 = split.iter().map(|(_, w)| w).sum();
    if total <= 0.0 {
        return 0;
    }
    let share: f64 = split.iter().filter(|(g, _)| g == to).map(|(_, w)| w).sum();
    (share / total * 100.0).round() as u32
}

/// `split` with `percent` for `to` and the rest shared by the other groups as their weights
/// were, in whole percents adding up to 100.
pub fn with_percent(split: &[(String, f64)], to: &str, percent: u32) -> Value {
    let percent = percent.min(100);
    let others: f64 = split.iter().filter(|(g, _)| g != to).map(|(_, w)| w).sum();
    let rest = 100 - percent;
    let others_count = split.iter().filter(|(g, _)| g != to).count().max(1) as f64;
    let mut weights: Vec<u32> = split
        .iter()
        .map(|(group, weight)| {
            if group == to {
                percent
            } else if others > 0.0 {
                (weight / others * f64::from(rest)).floor() as u32
            } else {
                (f64::from(rest) / others_count).floor() as u32
            }
        })
        .collect();
    // Hand what rounding down left to the other groups, largest first.
    let mut missing = 100u32.saturating_sub(weights.iter().sum());
    let mut order: Vec<usize> = (0..split.len()).filter(|&i| split[i].0 != to).collect();
    order.sort_by(|&a, &b| split[b].1.total_cmp(&split[a].1));
    for i in order.iter().cycle().take(order.len() * 2) {
        if missing == 0 {
            break;
        }
        weights[*i] += 1;
        missing -= 1;
    }
    let groups: Vec<&str> = split.iter().map(|(g, _)| g.as_str()).collect();
    json!([groups, weights])
}

/// What one step decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub record: ShiftRecord,
    /// The split to write to the key, if it changes.
    pub write: Option<Value>,
}

/// How `to`'s instances are doing.
enum Health {
    /// Every instance runs; their restarts.
    Ready(u32),
    /// Some are starting or restarting: no step yet.
    Waiting,
    /// None at all, or one failed or cannot be placed: put the original split back.
    Failed(String),
}

fn health(to: &str, statuses: &[&InstanceStatus]) -> Health {
    if statuses.is_empty() {
        return Health::Failed(format!("{to} has no instance"));
    }
    let bad = statuses
        .iter()
        .find(|s| matches!(s.status, InstanceState::Failed | InstanceState::Pending));
    if let Some(bad) = bad {
        let state = serde_json::to_value(bad.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let reason = bad
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        return Health::Failed(format!("{to}/{} is {state}{reason}", bad.index));
    }
    if statuses.iter().any(|s| s.status != InstanceState::Running) {
        return Health::Waiting;
    }
    Health::Ready(statuses.iter().map(|s| s.restarts).sum())
}

/// One step of `record` at `now_ms`, with the key's `current` value and `to`'s instance records;
/// `policy` is `to`'s roll-out policy (its metric gate) and `traffic` its counters summed over the
/// cluster now (`None`: not read, so a gated step waits).
pub fn step(
    record: &ShiftRecord,
    current: Option<&Value>,
    statuses: &[&InstanceStatus],
    policy: Option<&RolloutPolicy>,
    traffic: Option<&Traffic>,
    now_ms: u64,
) -> Step {
    let mut next = record.clone();
    if record.state != ShiftState::Shifting {
        return Step {
            record: next,
            write: None,
        };
    }
    if current != Some(&record.written) && current == Some(&record.previous) {
        // The last step's write has not reached this node's replica yet, or was lost: write it
        // (again). The caller writes with CAS on the version it read, so a stale read loses.
        return Step {
            record: next,
            write: Some(record.written.clone()),
        };
    }
    if current != Some(&record.written) {
        next.state = ShiftState::Paused;
        next.reason = Some(format!(
            "{} was changed by someone else: resume to go on from its new value, or undo",
            record.key
        ));
        next.updated_ms = now_ms;
        return Step {
            record: next,
            write: None,
        };
    }
    let restarts = match health(&record.to, statuses) {
        // Before the first step, the restarts seen now are the baseline.
        Health::Ready(restarts) if record.last_step_ms == record.started_ms => restarts,
        Health::Ready(restarts) if restarts <= record.restarts => restarts,
        Health::Ready(restarts) => {
            return roll_back(
                next,
                format!("{} restarted ({restarts} restarts)", record.to),
                now_ms,
            )
        }
        Health::Waiting => {
            return Step {
                record: next,
                write: None,
            }
        }
        Health::Failed(why) => return roll_back(next, format!("{why}: not healthy"), now_ms),
    };
    let gated = policy.filter(|policy| policy.gated());
    if let Some(policy) = gated {
        let window = traffic.and_then(|now| {
            let window = next
                .gate_baseline
                .as_ref()
                .and_then(|b| gate::since(now, b));
            if window.is_none() {
                next.gate_baseline = Some(now.clone());
            }
            window
        });
        match window.map(|window| gate::judge(policy, &window)) {
            Some(Judgement::Pass) => {}
            Some(Judgement::Over(why)) => {
                let reason = format!("{}: {why} since the last step", record.to);
                return roll_back(next, reason, now_ms);
            }
            Some(Judgement::TooFew(_)) | None => {
                return Step {
                    record: next,
                    write: None,
                }
            }
        }
    }
    if now_ms.saturating_sub(record.last_step_ms) < u64::from(record.every_seconds) * 1000 {
        return Step {
            record: next,
            write: None,
        };
    }
    let Ok(split) = parse_split(&record.written) else {
        return roll_back(next, "the split became unreadable".into(), now_ms);
    };
    let percent = (record.percent + record.step).min(100);
    let value = with_percent(&split, &record.to, percent);
    next.percent = percent;
    next.previous = std::mem::replace(&mut next.written, value.clone());
    next.restarts = restarts;
    next.last_step_ms = now_ms;
    if gated.is_some() {
        next.gate_baseline = traffic.cloned();
    }
    next.updated_ms = now_ms;
    if percent >= 100 {
        next.state = ShiftState::Done;
        next.reason = None;
    }
    Step {
        record: next,
        write: Some(value),
    }
}

fn roll_back(mut record: ShiftRecord, reason: String, now_ms: u64) -> Step {
    record.state = ShiftState::RolledBack;
    record.gate_baseline = None;
    record.reason = Some(reason);
    record.previous = std::mem::replace(&mut record.written, record.original.clone());
    record.percent = parse_split(&record.original)
        .map(|split| percent_of(&split, &record.to))
        .unwrap_or(0);
    record.updated_ms = now_ms;
    let write = Some(record.original.clone());
    Step { record, write }
}

/// Why a shift command does not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The command does not apply in the shift's state: which state, and why not.
    #[error("the shift of {key} to {to} is {state}: {why}")]
    NotNow {
        key: String,
        to: String,
        state: &'static str,
        why: &'static str,
    },
    /// A resume found no value at the shift's key.
    #[error("{0} is gone")]
    Gone(String),
    /// A resume found a value at the shift's key that is not a split.
    #[error(transparent)]
    BadSplit(#[from] SplitError),
    /// A resume found a split that no longer names the group the traffic moves to.
    #[error("{key} no longer names {to}")]
    NotInSplit { key: String, to: String },
    /// Not `pause`, `resume` or `undo`.
    #[error("unknown shift command {0:?}: use pause, resume or undo")]
    Unknown(String),
}

/// `pause`, `resume` or `undo` of a shift: the record after it and the split to write, or why
/// the command does not apply. `current` is the key's value now (a resume goes on from it).
pub fn command(
    record: &ShiftRecord,
    command: &str,
    current: Option<&Value>,
    now_ms: u64,
) -> Result<Step, CommandError> {
    let refuse = |why: &'static str| {
        Err(CommandError::NotNow {
            key: record.key.clone(),
            to: record.to.clone(),
            state: record.state.name(),
            why,
        })
    };
    let mut next = record.clone();
    next.updated_ms = now_ms;
    match (command, record.state) {
        ("pause", ShiftState::Shifting) => {
            next.state = ShiftState::Paused;
            next.reason = Some("paused by a person".into());
            Ok(Step {
                record: next,
                write: None,
            })
        }
        ("pause", _) => refuse("only a shifting shift can pause"),
        ("resume", ShiftState::Paused) => {
            let current = current.ok_or_else(|| CommandError::Gone(record.key.clone()))?;
            let split = parse_split(current)?;
            if !split.iter().any(|(g, _)| *g == record.to) {
                return Err(CommandError::NotInSplit {
                    key: record.key.clone(),
                    to: record.to.clone(),
                });
            }
            next.state = ShiftState::Shifting;
            next.reason = None;
            next.written = current.clone();
            next.previous = current.clone();
            next.percent = percent_of(&split, &record.to);
            next.last_step_ms = now_ms;
            Ok(Step {
                record: next,
                write: None,
            })
        }
        ("resume", _) => refuse("only a paused shift can resume"),
        ("undo", ShiftState::Shifting | ShiftState::Paused | ShiftState::Done) => {
            Ok(roll_back(next, "undone by a person".into(), now_ms))
        }
        ("undo", _) => refuse("the original split is already back"),
        (other, _) => Err(CommandError::Unknown(other.to_string())),
    }
}

#[cfg(test)]
mod tests;
