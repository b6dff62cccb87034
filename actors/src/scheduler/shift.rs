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

/// A split's groups and weights; `Err` says what is wrong with the value.
pub fn parse_split(value: &Value) -> Result<Vec<(String, f64)>, String> {
    let shape = "a split must be [[\"group\", ...], [weight, ...]]";
    let parts = value.as_array().ok_or(shape)?;
    let [groups, weights] = parts.as_slice() else {
        return Err(shape.into());
    };
    let (groups, weights) = (
        groups.as_array().ok_or(shape)?,
        weights.as_array().ok_or(shape)?,
    );
    if groups.is_empty() || groups.len() != weights.len() {
        return Err(format!("{shape}, as many weights as groups"));
    }
    groups
        .iter()
        .zip(weights)
        .map(|(group, weight)| {
            let group = group.as_str().ok_or("group names are strings")?;
            let weight = weight
                .as_f64()
                .filter(|w| w.is_finite() && *w >= 0.0)
                .ok_or("weights are numbers of at least 0")?;
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

/// `pause`, `resume` or `undo` of a shift: the record after it and the split to write, or why
/// the command does not apply. `current` is the key's value now (a resume goes on from it).
pub fn command(
    record: &ShiftRecord,
    command: &str,
    current: Option<&Value>,
    now_ms: u64,
) -> Result<Step, String> {
    let refuse = |what: &str| {
        Err(format!(
            "the shift of {} to {} is {}: {what}",
            record.key,
            record.to,
            record.state.name()
        ))
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
            let current = current.ok_or_else(|| format!("{} is gone", record.key))?;
            let split = parse_split(current)?;
            if !split.iter().any(|(g, _)| *g == record.to) {
                return Err(format!("{} no longer names {}", record.key, record.to));
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
        (other, _) => Err(format!(
            "unknown shift command {other:?}: use pause, resume or undo"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lathe::TaskType;

    fn seed() -> Value {
        json!([["task.v421", "task.v422"], [90, 10]])
    }

    fn record() -> ShiftRecord {
        ShiftRecord {
            key: "/task/http/lb/backend_distribution".into(),
            to: "task.v422".into(),
            step: 30,
            every_seconds: 1,
            original: seed(),
            written: seed(),
            previous: seed(),
            percent: 10,
            state: ShiftState::Shifting,
            restarts: 0,
            reason: None,
            last_step_ms: 0,
            started_ms: 0,
            updated_ms: 0,
            gate_baseline: None,
        }
    }

    fn running(index: u32, restarts: u32) -> InstanceStatus {
        InstanceStatus {
            group: "task.v422".into(),
            index,
            node: Some("n".into()),
            task_type: TaskType::new("c", "4.2.2", "t"),
            status: InstanceState::Running,
            endpoint: None,
            restarts,
            reason: None,
        }
    }

    #[test]
    fn splits_parse_and_move_in_whole_percents_that_add_up() {
        let split = parse_split(&seed()).unwrap();
        assert_eq!(percent_of(&split, "task.v422"), 10);
        assert_eq!(
            with_percent(&split, "task.v422", 40),
            json!([["task.v421", "task.v422"], [60, 40]])
        );
        assert_eq!(
            with_percent(&split, "task.v422", 100),
            json!([["task.v421", "task.v422"], [0, 100]])
        );
        let three = parse_split(&json!([["a", "b", "c"], [1, 1, 1]])).unwrap();
        assert_eq!(
            with_percent(&three, "c", 50),
            json!([["a", "b", "c"], [25, 25, 50]])
        );
        let odd = with_percent(&three, "c", 0);
        let weights: u64 = odd[1]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_u64().unwrap())
            .sum();
        assert_eq!(weights, 100);
        for bad in [
            json!(1),
            json!([["a"]]),
            json!([["a"], [-1]]),
            json!([["a", "b"], [1]]),
        ] {
            assert!(parse_split(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn each_step_waits_its_time_and_a_healthy_target() {
        let healthy = [running(0, 0), running(1, 0)];
        let statuses: Vec<&InstanceStatus> = healthy.iter().collect();
        let early = step(&record(), Some(&seed()), &statuses, None, None, 500);
        assert_eq!(early.write, None);
        let first = step(&record(), Some(&seed()), &statuses, None, None, 1_000);
        assert_eq!(
            first.write,
            Some(json!([["task.v421", "task.v422"], [60, 40]]))
        );
        assert_eq!(first.record.percent, 40);
        let written = first.write.clone().unwrap();
        let second = step(&first.record, Some(&written), &statuses, None, None, 2_000);
        let third = step(
            &second.record,
            second.write.as_ref(),
            &statuses,
            None,
            None,
            3_000,
        );
        assert_eq!(
            third.record.state,
            ShiftState::Done,
            "10 -> 40 -> 70 -> 100"
        );
        assert_eq!(
            third.write,
            Some(json!([["task.v421", "task.v422"], [0, 100]]))
        );
        let after = step(
            &third.record,
            third.write.as_ref(),
            &statuses,
            None,
            None,
            9_000,
        );
        assert_eq!(after.write, None, "a done shift writes nothing more");
    }

    #[test]
    fn an_unhealthy_target_puts_the_original_split_back() {
        let restarted = [running(0, 2)];
        let first = step(
            &record(),
            Some(&seed()),
            &[&running(0, 0)],
            None,
            None,
            1_000,
        );
        let later = step(
            &first.record,
            first.write.as_ref(),
            &restarted.iter().collect::<Vec<_>>(),
            None,
            None,
            1_500,
        );
        assert_eq!(later.record.state, ShiftState::RolledBack);
        assert_eq!(later.write, Some(seed()));
        assert!(later.record.reason.unwrap().contains("restarted"));
        let none = step(&record(), Some(&seed()), &[], None, None, 1_000);
        assert!(none.record.reason.unwrap().contains("has no instance"));
        let mut failed = running(0, 0);
        failed.status = InstanceState::Failed;
        failed.reason = Some("boom".into());
        let failing = step(&record(), Some(&seed()), &[&failed], None, None, 1_000);
        assert!(failing
            .record
            .reason
            .unwrap()
            .contains("task.v422/0 is failed: boom"));
    }

    #[test]
    fn a_target_still_starting_is_waited_for_not_rolled_back() {
        let mut starting = running(0, 0);
        starting.status = InstanceState::Starting;
        let wait = step(&record(), Some(&seed()), &[&starting], None, None, 5_000);
        assert_eq!((wait.record, wait.write), (record(), None));
    }

    #[test]
    fn a_step_not_yet_visible_is_written_again_not_taken_for_a_change_by_hand() {
        let first = step(
            &record(),
            Some(&seed()),
            &[&running(0, 0)],
            None,
            None,
            1_000,
        );
        // The replica still shows the split before the step.
        let lagging = step(
            &first.record,
            Some(&seed()),
            &[&running(0, 0)],
            None,
            None,
            1_100,
        );
        assert_eq!(lagging.record, first.record, "no pause, no new step");
        assert_eq!(lagging.write, Some(first.record.written.clone()));
    }

    #[test]
    fn a_split_changed_by_hand_pauses_and_commands_steer() {
        let by_hand = json!([["task.v421", "task.v422"], [50, 50]]);
        let paused = step(
            &record(),
            Some(&by_hand),
            &[&running(0, 0)],
            None,
            None,
            1_000,
        );
        assert_eq!(
            (paused.record.state, paused.write),
            (ShiftState::Paused, None)
        );
        let resumed = command(&paused.record, "resume", Some(&by_hand), 2_000).unwrap();
        assert_eq!(
            (resumed.record.state, resumed.record.percent),
            (ShiftState::Shifting, 50)
        );
        assert!(command(&resumed.record, "resume", Some(&by_hand), 2_000).is_err());
        let undone = command(&resumed.record, "undo", Some(&by_hand), 3_000).unwrap();
        assert_eq!(
            (undone.record.state, undone.write),
            (ShiftState::RolledBack, Some(seed()))
        );
        let again = command(&undone.record, "undo", None, 3_000).unwrap_err();
        assert!(again.contains("already back"), "{again}");
        assert!(command(&record(), "jump", None, 0)
            .unwrap_err()
            .contains("use pause"));
    }

    /// `requests` answers of the target so far, `errors` of them 5xx, all within 1 ms.
    fn answered(requests: u64, errors: u64) -> Traffic {
        Traffic {
            requests,
            errors,
            buckets: vec![(1_000, requests), (u64::MAX, requests)],
        }
    }

    fn gated() -> RolloutPolicy {
        RolloutPolicy {
            max_error_ratio: Some(lathe::topology::Ratio::new(0.05)),
            min_requests: 20,
            ..RolloutPolicy::default()
        }
    }

    #[test]
    fn a_gated_step_waits_for_enough_good_answers_since_the_last_one() {
        let policy = gated();
        let target = [&running(0, 0)];
        let step_at = |record: &ShiftRecord, current: &Value, traffic: Option<Traffic>, at: u64| {
            step(
                record,
                Some(current),
                &target,
                Some(&policy),
                traffic.as_ref(),
                at,
            )
        };
        // Counters not read: no step, even when due.
        let waiting = step_at(&record(), &seed(), None, 2_000);
        assert_eq!((waiting.write, waiting.record.percent), (None, 10));
        // The first read is the baseline.
        let first = step_at(&record(), &seed(), Some(answered(100, 0)), 2_000);
        assert_eq!(first.record.gate_baseline, Some(answered(100, 0)));
        assert_eq!(first.write, None);
        // 10 answers since: too few.
        let few = step_at(&first.record, &seed(), Some(answered(110, 0)), 2_500);
        assert_eq!(few.write, None);
        // 30 answers, 1 error: the step, and a new baseline for the next one.
        let stepped = step_at(&few.record, &seed(), Some(answered(130, 1)), 3_000);
        assert_eq!(stepped.record.percent, 40);
        assert_eq!(stepped.record.gate_baseline, Some(answered(130, 1)));
        let written = stepped.write.unwrap();
        // 40 answers since, 4 of them 5xx: 10 %, rolled back.
        let over = step_at(&stepped.record, &written, Some(answered(170, 5)), 3_500);
        assert_eq!(over.record.state, ShiftState::RolledBack);
        assert_eq!(over.write, Some(seed()));
        assert_eq!(
            over.record.reason.as_deref(),
            Some(
                "task.v422: error ratio 0.100 over max_error_ratio 0.05 (4 of 40 answers 5xx) \
                 since the last step"
            )
        );
    }

    #[test]
    fn a_target_without_a_gate_steps_on_time_alone() {
        let policy = RolloutPolicy::default();
        let first = step(
            &record(),
            Some(&seed()),
            &[&running(0, 0)],
            Some(&policy),
            None,
            1_000,
        );
        assert_eq!(first.record.percent, 40);
        assert_eq!(first.record.gate_baseline, None);
    }
}
