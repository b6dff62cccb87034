use std::collections::BTreeMap;

use lathe::layout::{
    Assignment, InstanceState, InstanceStatus, RolloutRecord, RolloutState, Traffic,
};
use lathe::topology::{GroupSpec, OnFailure, Ratio, RestartPolicy, RolloutPolicy};
use lathe::{KeyPath, TaskType};

use super::{command, step, Placed, Step};

fn version(v: &str) -> TaskType {
    TaskType::new("http_frontpage", v, "my::FrontPage")
}

fn group(v: &str, tasks: u32, rollout: RolloutPolicy) -> GroupSpec {
    GroupSpec {
        name: "task.web".into(),
        path: KeyPath::parse("/task/web").unwrap(),
        task_type: version(v),
        tasks,
        tags: Vec::new(),
        biases: Vec::new(),
        restart: RestartPolicy::default(),
        rollout,
        flows: lathe::topology::FlowsSpec::default(),
        state: lathe::topology::StateSpec::default(),
        metadata: BTreeMap::new(),
    }
}

fn policy(batch: u32) -> RolloutPolicy {
    RolloutPolicy {
        batch,
        healthy_seconds: 2,
        timeout_seconds: 10,
        on_failure: OnFailure::Rollback,
        ..RolloutPolicy::default()
    }
}

/// A cluster of `tasks` instances: `versions[i]` is what instance i is assigned.
struct World {
    assignments: Vec<Assignment>,
    statuses: Vec<InstanceStatus>,
    /// The group's response counters as the scheduler read them (`None`: not read).
    traffic: Option<Traffic>,
}

impl World {
    fn new(versions: &[&str]) -> World {
        let mut world = World {
            assignments: Vec::new(),
            statuses: Vec::new(),
            traffic: None,
        };
        for (i, v) in versions.iter().enumerate() {
            world.assign(i as u32, v, InstanceState::Running);
        }
        world
    }

    fn assign(&mut self, index: u32, v: &str, state: InstanceState) {
        self.assignments.retain(|a| a.index != index);
        self.statuses.retain(|s| s.index != index);
        self.assignments.push(Assignment {
            group: "task.web".into(),
            index,
            node: format!("n{}", index % 3),
            task_type: version(v),
        });
        self.statuses.push(InstanceStatus {
            group: "task.web".into(),
            index,
            node: Some(format!("n{}", index % 3)),
            task_type: version(v),
            status: state,
            endpoint: None,
            restarts: 0,
            reason: None,
        });
    }

    fn status(&mut self, index: u32) -> &mut InstanceStatus {
        self.statuses.iter_mut().find(|s| s.index == index).unwrap()
    }

    fn step(&self, group: &GroupSpec, record: Option<&RolloutRecord>, now_ms: u64) -> Step {
        let placed: Vec<Placed<'_>> = self
            .assignments
            .iter()
            .map(|assignment| Placed {
                assignment,
                node_can_run: true,
            })
            .collect();
        let statuses = self.statuses.iter().map(|s| (s.index, s)).collect();
        step(
            group,
            record,
            &placed,
            &statuses,
            self.traffic.as_ref(),
            now_ms,
        )
    }

    /// What the scheduler does with a step: assignments get the types it says.
    fn apply(&mut self, step: &Step, state: InstanceState) {
        if let Some(governed) = &step.governs {
            let wanted: Vec<(u32, TaskType)> = self
                .assignments
                .iter()
                .map(|a| (a.index, governed.type_of(a.index).clone()))
                .collect();
            for (index, task_type) in wanted {
                let current = &self.assignments.iter().find(|a| a.index == index).unwrap();
                if current.task_type != task_type {
                    self.assign(index, &task_type.version, state);
                }
            }
        }
    }
}

#[test]
fn no_roll_out_for_a_new_group_or_one_already_on_its_type() {
    let g = group("4.2.2", 3, policy(1));
    let empty = World::new(&[]);
    assert_eq!(empty.step(&g, None, 0).record, None);
    let current = World::new(&["4.2.2", "4.2.2", "4.2.2"]);
    let step = current.step(&g, None, 0);
    assert_eq!((step.record, step.governs), (None, None));
}

#[test]
fn a_new_version_replaces_a_batch_at_a_time_once_each_is_healthy() {
    let g = group("4.2.2", 3, policy(1));
    let mut world = World::new(&["4.2.1", "4.2.1", "4.2.1"]);
    let first = world.step(&g, None, 1_000);
    let record = first.record.clone().unwrap();
    assert_eq!(
        (record.state, record.from.clone(), record.batch.clone()),
        (RolloutState::Rolling, version("4.2.1"), vec![0])
    );
    let governed = first.governs.clone().unwrap();
    assert_eq!(governed.base, version("4.2.1"));
    assert_eq!(governed.type_of(0), &version("4.2.2"));
    assert_eq!(governed.type_of(1), &version("4.2.1"));
    world.apply(&first, InstanceState::Starting);

    // Starting: waiting, the health clock not started.
    let waiting = world.step(&g, Some(&record), 1_500);
    let record = waiting.record.unwrap();
    assert_eq!(
        (record.batch.clone(), record.healthy_since_ms),
        (vec![0], None)
    );
    world.status(0).status = InstanceState::Running;
    let record = world.step(&g, Some(&record), 2_000).record.unwrap();
    assert_eq!(record.healthy_since_ms, Some(2_000));
    // 1.9 s healthy: not yet.
    let record = world.step(&g, Some(&record), 3_900).record.unwrap();
    assert_eq!(record.batch, vec![0]);
    // 2 s: the next batch.
    let next = world.step(&g, Some(&record), 4_000);
    let record = next.record.clone().unwrap();
    assert_eq!(
        (record.batch.clone(), record.batch_started_ms),
        (vec![1], Some(4_000))
    );
    world.apply(&next, InstanceState::Running);
    let record = world.step(&g, Some(&record), 5_000).record.unwrap();
    let next = world.step(&g, Some(&record), 7_000);
    let record = next.record.clone().unwrap();
    assert_eq!(record.batch, vec![2]);
    world.apply(&next, InstanceState::Running);
    let record = world.step(&g, Some(&record), 7_500).record.unwrap();
    let done = world.step(&g, Some(&record), 9_500);
    assert_eq!(done.record.as_ref().unwrap().state, RolloutState::Done);
    assert_eq!(done.governs, None, "a done roll-out governs nothing");
    assert!(world
        .assignments
        .iter()
        .all(|a| a.task_type == version("4.2.2")));
}

#[test]
fn batches_take_several_instances() {
    let g = group("4.2.2", 5, policy(2));
    let world = World::new(&["4.2.1"; 5]);
    let step = world.step(&g, None, 0);
    assert_eq!(step.record.unwrap().batch, vec![0, 1]);
    assert_eq!(step.governs.unwrap().types.len(), 2);
}

#[test]
fn a_restart_in_the_health_window_starts_the_clock_over() {
    let g = group("4.2.2", 2, policy(1));
    let mut world = World::new(&["4.2.1", "4.2.1"]);
    let first = world.step(&g, None, 0);
    world.apply(&first, InstanceState::Running);
    let record = world.step(&g, first.record.as_ref(), 100).record.unwrap();
    assert_eq!(record.healthy_since_ms, Some(100));
    world.status(0).restarts = 1;
    let record = world.step(&g, Some(&record), 1_500).record.unwrap();
    assert_eq!(record.healthy_since_ms, Some(1_500));
    let record = world.step(&g, Some(&record), 2_200).record.unwrap();
    assert_eq!(
        record.batch,
        vec![0],
        "2.1 s since the start, 0.7 s since the restart"
    );
}

#[test]
fn a_batch_not_healthy_in_time_rolls_everything_back() {
    let g = group("4.2.2", 3, policy(1));
    let mut world = World::new(&["4.2.1"; 3]);
    let first = world.step(&g, None, 0);
    world.apply(&first, InstanceState::Restarting);
    let record = world.step(&g, first.record.as_ref(), 9_000).record.unwrap();
    assert_eq!(record.state, RolloutState::Rolling);
    let failed = world.step(&g, Some(&record), 10_000);
    let record = failed.record.clone().unwrap();
    assert_eq!(record.state, RolloutState::RollingBack);
    let reason = record.reason.clone().unwrap();
    assert!(
        reason.contains("not healthy for 2 s within 10 s") && reason.contains("task.web/0"),
        "{reason}"
    );
    let governed = failed.governs.clone().unwrap();
    assert_eq!(governed.type_of(0), &version("4.2.1"));
    world.apply(&failed, InstanceState::Running);
    let back = world.step(&g, Some(&record), 10_500);
    assert_eq!(back.record.unwrap().state, RolloutState::RolledBack);
    assert_eq!(back.governs.unwrap().type_of(0), &version("4.2.1"));
}

#[test]
fn a_failed_or_unplaceable_instance_fails_the_batch_at_once() {
    let g = group("4.2.2", 2, policy(1));
    let mut world = World::new(&["4.2.1", "4.2.1"]);
    let first = world.step(&g, None, 0);
    world.apply(&first, InstanceState::Failed);
    world.status(0).reason = Some("beyond 5 restarts in 10 s".into());
    let record = world.step(&g, first.record.as_ref(), 100).record.unwrap();
    assert_eq!(record.state, RolloutState::RollingBack);
    assert!(record
        .reason
        .unwrap()
        .contains("task.web/0 failed on http_frontpage 4.2.2"));

    let first = World::new(&["4.2.1", "4.2.1"]).step(&g, None, 0);
    assert_eq!(first.record.as_ref().unwrap().batch, vec![0]);
    let placed = [Placed {
        assignment: &Assignment {
            group: "task.web".into(),
            index: 0,
            node: "old-node".into(),
            task_type: version("4.2.2"),
        },
        node_can_run: false,
    }];
    let statuses = BTreeMap::new();
    let step = step(&g, first.record.as_ref(), &placed, &statuses, None, 50);
    let reason = step.record.unwrap().reason.unwrap();
    assert!(reason.contains("on a node that cannot run"), "{reason}");
}

#[test]
fn on_failure_pause_stops_where_it_is() {
    let mut g = group("4.2.2", 3, policy(1));
    g.rollout.on_failure = OnFailure::Pause;
    let mut world = World::new(&["4.2.1"; 3]);
    let first = world.step(&g, None, 0);
    world.apply(&first, InstanceState::Starting);
    let paused = world.step(&g, first.record.as_ref(), 10_000);
    assert_eq!(paused.record.as_ref().unwrap().state, RolloutState::Paused);
    let governed = paused.governs.unwrap();
    assert_eq!(
        governed.type_of(0),
        &version("4.2.2"),
        "what runs keeps running"
    );
    assert_eq!(governed.type_of(1), &version("4.2.1"));
}

#[test]
fn a_third_version_mid_roll_out_starts_over_from_what_most_run() {
    let g = group("4.2.3", 3, policy(1));
    let world = World::new(&["4.2.1", "4.2.2", "4.2.1"]);
    let old = RolloutRecord {
        group: "task.web".into(),
        from: version("4.2.1"),
        to: version("4.2.2"),
        state: RolloutState::Rolling,
        batch: vec![1],
        batch_started_ms: Some(0),
        healthy_since_ms: None,
        healthy_restarts: 0,
        reason: None,
        started_ms: 0,
        updated_ms: 0,
        gate_baseline: None,
    };
    let record = world.step(&g, Some(&old), 5).record.unwrap();
    assert_eq!(
        (record.from, record.to, record.batch),
        (version("4.2.1"), version("4.2.3"), vec![0])
    );
}

#[test]
fn commands_move_between_states_or_say_why_not() {
    let g = group("4.2.2", 3, policy(1));
    let world = World::new(&["4.2.1"; 3]);
    let rolling = world.step(&g, None, 0).record.unwrap();
    let paused = command(&rolling, "pause", 10).unwrap();
    assert_eq!(paused.state, RolloutState::Paused);
    let error = command(&paused, "pause", 11).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("is paused: only a rolling roll-out can pause"),
        "{error}"
    );
    let resumed = command(&paused, "resume", 20).unwrap();
    assert_eq!(
        (resumed.state, resumed.batch_started_ms),
        (RolloutState::Rolling, Some(20))
    );
    let undone = command(&resumed, "undo", 30).unwrap();
    assert_eq!(undone.state, RolloutState::RollingBack);
    assert!(command(&undone, "undo", 31).is_err());
    assert!(command(&undone, "resume", 31).is_err());
    let mut rolled_back = undone.clone();
    rolled_back.state = RolloutState::RolledBack;
    let retried = command(&rolled_back, "resume", 40).unwrap();
    assert_eq!(
        (retried.state, retried.batch.is_empty(), retried.started_ms),
        (RolloutState::Rolling, true, 40)
    );
    let mut done = rolling.clone();
    done.state = RolloutState::Done;
    assert_eq!(
        command(&done, "undo", 50).unwrap().state,
        RolloutState::RollingBack
    );
    assert!(command(&done, "fast-forward", 50)
        .unwrap_err()
        .to_string()
        .contains("use pause, resume or undo"));
}

/// `requests` answers so far, `errors` of them 5xx, every one within 1 ms (the buckets of 1 ms,
/// 250 ms and +Inf).
fn answered(requests: u64, errors: u64) -> Option<Traffic> {
    Some(Traffic {
        requests,
        errors,
        buckets: vec![(1_000, requests), (250_000, requests), (u64::MAX, requests)],
    })
}

fn gated(max_error_ratio: f64) -> RolloutPolicy {
    RolloutPolicy {
        max_error_ratio: Some(Ratio::new(max_error_ratio)),
        max_p99_ms: Some(100),
        min_requests: 20,
        ..policy(1)
    }
}

/// One instance rolled to 4.2.2 and running: the record once the batch is healthy at 2 s, with
/// the counters at `baseline`.
fn healthy_batch(world: &mut World, g: &GroupSpec, baseline: Option<Traffic>) -> RolloutRecord {
    let first = world.step(g, None, 1_000);
    world.apply(&first, InstanceState::Running);
    world.traffic = baseline;
    world.step(g, first.record.as_ref(), 2_000).record.unwrap()
}

#[test]
fn a_gated_batch_waits_for_enough_answers_under_the_thresholds() {
    let g = group("4.2.2", 2, gated(0.05));
    let mut world = World::new(&["4.2.1", "4.2.1"]);
    let record = healthy_batch(&mut world, &g, answered(500, 100));
    assert_eq!(record.healthy_since_ms, Some(2_000));
    assert_eq!(
        record.gate_baseline,
        answered(500, 100),
        "the counters when it became healthy"
    );
    // Healthy long enough, 10 answers since: not yet.
    world.traffic = answered(510, 100);
    let record = world.step(&g, Some(&record), 4_500).record.unwrap();
    assert_eq!(
        (record.state, record.batch.clone()),
        (RolloutState::Rolling, vec![0])
    );
    // 40 answers, 1 error (2.5 %): the next batch, with a baseline of its own later.
    world.traffic = answered(540, 101);
    let record = world.step(&g, Some(&record), 5_000).record.unwrap();
    assert_eq!(
        (record.batch.clone(), record.gate_baseline),
        (vec![1], None)
    );
}

#[test]
fn a_batch_over_the_error_ratio_rolls_back_at_once() {
    let g = group("4.2.2", 2, gated(0.05));
    let mut world = World::new(&["4.2.1", "4.2.1"]);
    let record = healthy_batch(&mut world, &g, answered(500, 100));
    // 0.5 s later, 50 answers, 10 of them 5xx: 20 %.
    world.traffic = answered(550, 110);
    let step = world.step(&g, Some(&record), 2_500);
    let record = step.record.unwrap();
    assert_eq!(record.state, RolloutState::RollingBack);
    assert_eq!(
        record.reason.as_deref(),
        Some(
            "error ratio 0.200 over max_error_ratio 0.05 (10 of 50 answers 5xx) since the batch \
             became healthy"
        )
    );
    assert_eq!(step.governs.unwrap().type_of(0), &version("4.2.1"));
}

#[test]
fn a_batch_over_the_p99_fails_and_counters_that_went_down_start_over() {
    let g = group("4.2.2", 2, gated(0.05));
    let mut world = World::new(&["4.2.1", "4.2.1"]);
    let record = healthy_batch(&mut world, &g, answered(500, 0));
    // A node restarted: its counters went down; the window starts over from there.
    world.traffic = answered(100, 0);
    let record = world.step(&g, Some(&record), 3_000).record.unwrap();
    assert_eq!(record.gate_baseline, answered(100, 0));
    // 30 answers since, all slower than 250 ms.
    world.traffic = Some(Traffic {
        requests: 130,
        errors: 0,
        buckets: vec![(1_000, 100), (250_000, 100), (u64::MAX, 130)],
    });
    let record = world.step(&g, Some(&record), 3_500).record.unwrap();
    assert_eq!(record.state, RolloutState::RollingBack);
    let reason = record.reason.unwrap();
    assert!(
        reason.starts_with("p99 250.0 ms over max_p99_ms 100"),
        "{reason}"
    );
}

#[test]
fn a_gated_batch_without_counters_or_traffic_times_out_saying_so() {
    let g = group("4.2.2", 2, gated(0.05));
    let mut world = World::new(&["4.2.1", "4.2.1"]);
    let record = healthy_batch(&mut world, &g, None);
    let record = world.step(&g, Some(&record), 5_000).record.unwrap();
    assert_eq!(
        record.state,
        RolloutState::Rolling,
        "no counters read: it waits"
    );
    world.traffic = answered(7, 0);
    let record = world.step(&g, Some(&record), 6_000).record.unwrap();
    world.traffic = answered(12, 0);
    let record = world.step(&g, Some(&record), 11_000).record.unwrap();
    assert_eq!(record.state, RolloutState::RollingBack);
    let reason = record.reason.unwrap();
    assert!(
        reason.ends_with("(task.web/0 running; 5 of 20 answers)"),
        "{reason}"
    );
}
