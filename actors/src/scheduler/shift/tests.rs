//! The traffic shift's step function: splits, steps on time and health, roll-backs, commands
//! and metric gates.

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
    assert!(again.to_string().contains("already back"), "{again}");
    assert!(command(&record(), "jump", None, 0)
        .unwrap_err()
        .to_string()
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

#[test]
fn a_start_is_checked_against_the_split_and_the_last_shift() {
    let key = shift_key("task/http/lb/backend_distribution").unwrap();
    let request = |to: &str, step: u32| StartShift {
        key: key.clone(),
        to: to.into(),
        step,
        every_seconds: 30,
    };
    let started = start_record(&request("task.v422", 10), Some(&seed()), None, 5).unwrap();
    assert_eq!(
        (started.percent, started.state, started.last_step_ms),
        (10, ShiftState::Shifting, 5)
    );
    let refused = |r: Result<ShiftRecord, ShiftError>| r.unwrap_err().to_string();
    assert!(refused(start_record(
        &request("task.v422", 0),
        Some(&seed()),
        None,
        5
    ))
    .contains("step must be"));
    assert!(
        refused(start_record(&request("task.x", 10), Some(&seed()), None, 5))
            .contains("is not one of them")
    );
    assert!(
        refused(start_record(&request("task.v422", 10), None, None, 5)).contains("no value at")
    );
    assert!(refused(start_record(
        &request("task.v422", 10),
        Some(&seed()),
        Some(&record()),
        5
    ))
    .contains("already shifting"));
    assert!(matches!(
        shift_key("lathe/shifts"),
        Err(ShiftError::NotMetadata(_))
    ));
}
