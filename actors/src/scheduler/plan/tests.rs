//! The plan of one reconcile, on views built by hand, at instants the tests choose.

use std::collections::BTreeMap;
use std::time::Duration;

use lathe::layout::{self, Assignment, InstanceState, InstanceStatus, RolloutState};
use lathe::layout::{ShiftRecord, ShiftState};
use lathe::topology::{GroupSpec, OnFailure, RestartPolicy, RolloutPolicy};
use lathe::{Endpoint, KeyPath, TaskType};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::*;
use crate::membership::{MemberStatus, MemberView};
use crate::scheduler::settings::SchedulerSettings;
use crate::scheduler::view::{ClusterView, Versioned};

pub(super) fn version(v: &str) -> TaskType {
    TaskType::new("http_frontpage", v, "my::FrontPage")
}

pub(super) fn group(name: &str, v: &str, tasks: u32) -> GroupSpec {
    GroupSpec {
        name: name.to_string(),
        path: KeyPath::parse(&format!("/{}", name.replace('.', "/"))).unwrap(),
        task_type: version(v),
        tasks,
        tags: Vec::new(),
        biases: Vec::new(),
        restart: RestartPolicy::default(),
        rollout: RolloutPolicy::default(),
        flows: lathe::topology::FlowsSpec::default(),
        state: lathe::topology::StateSpec::default(),
        metadata: BTreeMap::new(),
    }
}

pub(super) fn member(name: &str, status: MemberStatus, catalog: &[&str]) -> MemberView {
    MemberView {
        name: name.to_string(),
        pid: 1,
        cluster_addr: "127.0.0.1:1".parse().unwrap(),
        http_addr: "127.0.0.1:2".parse().unwrap(),
        tags: Vec::new(),
        status,
        leader: false,
        catalog: catalog.iter().map(|v| version(v)).collect(),
        max_instances: None,
        version: String::new(),
        last_heartbeat_ms_ago: None,
        is_self: false,
        incarnation: 1,
        started_at_ms: 1,
    }
}

/// A registry as the scheduler sees it, which plans can be written to.
pub(super) struct World {
    pub(super) view: ClusterView,
    pub(super) leadership: Leadership,
    pub(super) settings: SchedulerSettings,
    pub(super) start: Instant,
    versions: u64,
}

impl World {
    pub(super) fn new(groups: Vec<GroupSpec>, members: Vec<MemberView>) -> World {
        let start = Instant::now();
        World {
            view: ClusterView {
                leader: Some(json!({ "node": "n1" })),
                groups,
                members,
                traffic: Some(BTreeMap::new()),
                ..ClusterView::default()
            },
            leadership: Leadership {
                node: "n1".into(),
                // Leading for long enough that the settle window is over.
                since: start - Duration::from_secs(3600),
                held: BTreeMap::new(),
            },
            settings: SchedulerSettings::default(),
            start,
            versions: 1,
        }
    }

    /// The clock `seconds` after the test's start.
    pub(super) fn at(&self, seconds: u64) -> Clock {
        Clock {
            now: self.start + Duration::from_secs(seconds),
            unix_ms: 1_000_000 + seconds * 1000,
        }
    }

    pub(super) fn plan(&self, seconds: u64) -> Plan {
        plan(
            &self.view,
            &self.leadership,
            self.at(seconds),
            &self.settings,
        )
    }

    fn version(&mut self) -> u64 {
        self.versions += 1;
        self.versions
    }

    pub(super) fn assign(&mut self, node: &str, group: &str, index: u32, v: &str) {
        let assignment = Assignment {
            group: group.into(),
            index,
            node: node.into(),
            task_type: version(v),
        };
        let path = layout::assignment(node, group, index);
        self.view.assignments.insert(path, assignment);
    }

    /// What a node writes once the instance runs (or fails).
    pub(super) fn status(
        &mut self,
        node: &str,
        group: &str,
        index: u32,
        v: &str,
        state: InstanceState,
    ) {
        let status = InstanceStatus {
            group: group.into(),
            index,
            node: Some(node.into()),
            task_type: version(v),
            status: state,
            endpoint: None,
            restarts: 0,
            reason: None,
        };
        let version = self.version();
        let path = layout::instance(group, index);
        self.view.instances.insert(
            path,
            Versioned {
                value: status,
                version,
            },
        );
    }

    /// Every assignment runs, as its node would report.
    pub(super) fn run_all(&mut self) {
        let assignments: Vec<Assignment> = self.view.assignments.values().cloned().collect();
        for a in assignments {
            self.status(
                &a.node,
                &a.group,
                a.index,
                &a.task_type.version,
                InstanceState::Running,
            );
        }
    }

    /// Writes `plan` as `apply` would against a registry holding this view (compare-and-sets
    /// included); returns how many writes lost one.
    pub(super) fn apply(&mut self, plan: &Plan) -> usize {
        let mut conflicts = 0;
        for write in &plan.writes {
            let current = self.version_of(&write.key);
            if write.expect.is_some_and(|expect| expect != current) {
                conflicts += 1;
                if write.kind.stops_on_conflict() {
                    break;
                }
                continue;
            }
            let version = self.version();
            self.write(write, version);
        }
        conflicts
    }

    fn version_of(&self, key: &KeyPath) -> u64 {
        let view = &self.view;
        let versioned = view
            .instances
            .get(key)
            .map(|r| r.version)
            .or_else(|| view.rollouts.get(key).map(|r| r.version))
            .or_else(|| view.shifts.get(key).map(|r| r.version))
            .or_else(|| view.dead_endpoints.get(key).map(|r| r.version))
            .or_else(|| view.splits.get(key.as_str()).map(|r| r.version));
        versioned.unwrap_or(0)
    }

    fn write(&mut self, write: &Write, version: u64) {
        let key = write.key.clone();
        let value = match &write.change {
            Change::Put(value) => Some(value.clone()),
            Change::Delete => None,
        };
        let view = &mut self.view;
        match &write.kind {
            WriteKind::Leader => view.leader = value,
            WriteKind::Rollout(_) => match value {
                Some(value) => {
                    _ = view.rollouts.insert(
                        key,
                        Versioned {
                            value: parse(value),
                            version,
                        },
                    )
                }
                None => _ = view.rollouts.remove(&key),
            },
            WriteKind::ShiftRecord => {
                let value = parse(value.unwrap());
                view.shifts.insert(key, Versioned { value, version });
            }
            WriteKind::Split(_) => {
                let split = Versioned { value, version };
                view.splits.insert(key.as_str().to_string(), split);
            }
            WriteKind::Assignment => match value {
                Some(value) => _ = view.assignments.insert(key, parse(value)),
                None => _ = view.assignments.remove(&key),
            },
            WriteKind::Pending | WriteKind::Orphan => match value {
                Some(value) => {
                    _ = view.instances.insert(
                        key,
                        Versioned {
                            value: parse(value),
                            version,
                        },
                    )
                }
                None => _ = view.instances.remove(&key),
            },
            WriteKind::DeadEndpoint(_) => _ = view.dead_endpoints.remove(&key),
        }
    }

    /// The (node, index) of each assignment of `group`, by index.
    pub(super) fn nodes_of(&self, group: &str) -> Vec<(String, u32)> {
        let mut nodes: Vec<(String, u32)> = self
            .view
            .assignments
            .values()
            .filter(|a| a.group == group)
            .map(|a| (a.node.clone(), a.index))
            .collect();
        nodes.sort_by_key(|(_, index)| *index);
        nodes
    }

    pub(super) fn types_of(&self, group: &str) -> Vec<String> {
        let mut types: Vec<(u32, String)> = self
            .view
            .assignments
            .values()
            .filter(|a| a.group == group)
            .map(|a| (a.index, a.task_type.version.clone()))
            .collect();
        types.sort();
        types.into_iter().map(|(_, v)| v).collect()
    }
}

fn parse<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap()
}

fn kinds(plan: &Plan) -> Vec<&'static str> {
    plan.writes.iter().map(|w| w.kind.name()).collect()
}

#[test]
fn an_empty_cluster_plans_nothing_but_the_leader_record() {
    let mut world = World::new(Vec::new(), vec![member("n1", MemberStatus::Alive, &[])]);
    world.view.leader = None;
    let plan = world.plan(0);
    assert_eq!(kinds(&plan), ["leader"]);
    assert_eq!(plan.writes[0].change, Change::Put(json!({ "node": "n1" })));
    world.apply(&plan);
    assert_eq!(world.plan(0).writes, Vec::new());
}

#[test]
fn a_dead_nodes_instances_move_to_a_live_one_and_its_endpoints_are_withdrawn() {
    let mut world = World::new(
        vec![group("task.web", "1.0.0", 2)],
        vec![
            member("n1", MemberStatus::Alive, &["1.0.0"]),
            member("n2", MemberStatus::Dead, &["1.0.0"]),
        ],
    );
    world.assign("n1", "task.web", 0, "1.0.0");
    world.assign("n2", "task.web", 1, "1.0.0");
    world.run_all();
    let endpoint = Endpoint {
        group: "task.web".into(),
        index: 1,
        node: "n2".into(),
        http: Some("127.0.0.1:9".into()),
        version: "1.0.0".into(),
    };
    let endpoint_path = KeyPath::parse("/lathe/endpoints/task.web/1").unwrap();
    world.view.dead_endpoints.insert(
        endpoint_path.clone(),
        Versioned {
            value: endpoint,
            version: 7,
        },
    );
    let plan = world.plan(0);
    assert_eq!((plan.report.placed, plan.report.removed), (1, 1));
    let withdraw = plan.writes.last().unwrap();
    assert_eq!(
        (&withdraw.key, &withdraw.change, withdraw.expect),
        (&endpoint_path, &Change::Delete, Some(7))
    );
    assert_eq!(world.apply(&plan), 0);
    assert_eq!(
        world.nodes_of("task.web"),
        [("n1".to_string(), 0), ("n1".to_string(), 1)]
    );
    assert!(world.view.dead_endpoints.is_empty());
}

#[test]
fn while_settling_an_unheard_of_node_keeps_its_instances_and_after_it_loses_them() {
    let mut world = World::new(
        vec![group("task.web", "1.0.0", 2)],
        vec![member("n1", MemberStatus::Alive, &["1.0.0"])],
    );
    world.assign("n1", "task.web", 0, "1.0.0");
    world.assign("n2", "task.web", 1, "1.0.0");
    world.settings.settle = Duration::from_secs(5);
    world.leadership.since = world.start;
    let settling = world.plan(2);
    assert_eq!(kinds(&settling), Vec::<&str>::new());
    // It comes back when the window ends.
    assert_eq!(settling.report.wake_after, Some(Duration::from_secs(3)));
    let settled = world.plan(5);
    assert_eq!((settled.report.placed, settled.report.removed), (1, 1));
    assert_eq!(settled.report.wake_after, None);
    world.apply(&settled);
    assert_eq!(
        world.nodes_of("task.web"),
        [("n1".to_string(), 0), ("n1".to_string(), 1)]
    );
}

/// Four instances crowded on n1 while n2 was away; n2 is back.
fn crowded() -> World {
    let mut world = World::new(
        vec![group("task.web", "1.0.0", 4)],
        vec![
            member("n1", MemberStatus::Alive, &["1.0.0"]),
            member("n2", MemberStatus::Alive, &["1.0.0"]),
        ],
    );
    for index in 0..4 {
        world.assign("n1", "task.web", index, "1.0.0");
    }
    world
}

#[test]
fn rebalancing_moves_at_most_max_moves_and_comes_back_soon() {
    let mut world = crowded();
    world.settings.max_moves = 1;
    let plan = world.plan(0);
    assert_eq!(plan.report.moved.len(), 1);
    assert_eq!((plan.report.placed, plan.report.removed), (1, 1));
    assert_eq!(plan.report.wake_after, Some(world.settings.next_step));
}

#[test]
fn an_instance_held_after_its_move_stays_until_the_hold_ends() {
    let mut world = crowded();
    world.settings.max_moves = 4;
    let all: Vec<(String, u32)> = (0..4).map(|i| ("task.web".to_string(), i)).collect();
    let until = world.start + Duration::from_secs(60);
    world.leadership.held = all.iter().map(|m| (m.clone(), until)).collect();
    assert_eq!(world.plan(59).report.moved, Vec::new());
    assert_eq!(world.plan(60).report.moved.len(), 1);
}

#[test]
fn a_new_version_rolls_one_batch_at_a_time_with_its_record_written_first() {
    let mut world = World::new(
        vec![group("task.web", "1.0.1", 2)],
        vec![member("n1", MemberStatus::Alive, &["1.0.0", "1.0.1"])],
    );
    world.view.groups[0].rollout = RolloutPolicy {
        batch: 1,
        healthy_seconds: 2,
        timeout_seconds: 10,
        on_failure: OnFailure::Rollback,
        ..RolloutPolicy::default()
    };
    world.assign("n1", "task.web", 0, "1.0.0");
    world.assign("n1", "task.web", 1, "1.0.0");
    world.run_all();
    let plan = world.plan(0);
    assert_eq!(kinds(&plan), ["rollout", "assignment"]);
    assert_eq!(plan.writes[0].expect, Some(0));
    assert!(plan.report.rolling);
    assert_eq!(plan.report.wake_after, Some(world.settings.rollout_tick));
    world.apply(&plan);
    assert_eq!(world.types_of("task.web"), ["1.0.1", "1.0.0"]);
    // The batch runs and stays healthy: the next batch follows.
    world.run_all();
    world.apply(&world.plan(1));
    assert_eq!(world.types_of("task.web"), ["1.0.1", "1.0.0"]);
    world.apply(&world.plan(4));
    assert_eq!(world.types_of("task.web"), ["1.0.1", "1.0.1"]);
    // The second batch fails: every instance goes back.
    world.status("n1", "task.web", 1, "1.0.1", InstanceState::Failed);
    let plan = world.plan(5);
    world.apply(&plan);
    let record = &world.view.rollouts[&layout::rollout("task.web")].value;
    assert_eq!(record.state, RolloutState::RollingBack);
    assert_eq!(world.types_of("task.web"), ["1.0.0", "1.0.0"]);
}

#[test]
fn a_roll_out_record_that_changed_meanwhile_stops_the_apply_before_any_assignment() {
    let mut world = World::new(
        vec![group("task.web", "1.0.1", 1)],
        vec![member("n1", MemberStatus::Alive, &["1.0.0", "1.0.1"])],
    );
    world.assign("n1", "task.web", 0, "1.0.0");
    let plan = world.plan(0);
    assert_eq!(kinds(&plan), ["rollout", "assignment"]);
    // A `lathe rollout` command stored a record meanwhile.
    let mut stale = plan.clone();
    stale.writes[0].expect = Some(99);
    assert_eq!(world.apply(&stale), 1);
    assert_eq!(world.types_of("task.web"), ["1.0.0"]);
    assert!(WriteKind::Rollout(None).stops_on_conflict());
    assert!(WriteKind::ShiftRecord.stops_on_conflict());
    assert!(!WriteKind::Orphan.stops_on_conflict());
}

fn shifting(world: &mut World, every_seconds: u32, last_step_ms: u64) -> KeyPath {
    let split = json!([["task.a", "task.b"], [90, 10]]);
    let record = ShiftRecord {
        key: "/task/lb/split".into(),
        to: "task.b".into(),
        step: 30,
        every_seconds,
        original: split.clone(),
        written: split.clone(),
        previous: split.clone(),
        percent: 10,
        state: ShiftState::Shifting,
        restarts: 0,
        reason: None,
        last_step_ms,
        started_ms: 0,
        updated_ms: 0,
        gate_baseline: None,
    };
    let key = KeyPath::parse("/task/lb/split").unwrap();
    let path = layout::shift(&key);
    world.view.shifts.insert(
        path.clone(),
        Versioned {
            value: record,
            version: 3,
        },
    );
    world.view.splits.insert(
        "/task/lb/split".into(),
        Versioned {
            value: Some(split),
            version: 4,
        },
    );
    path
}

#[test]
fn a_shift_steps_when_its_time_has_come_and_says_when_that_is() {
    let mut world = World::new(
        vec![group("task.a", "1.0.0", 1), group("task.b", "1.0.0", 1)],
        vec![member("n1", MemberStatus::Alive, &["1.0.0"])],
    );
    world.assign("n1", "task.a", 0, "1.0.0");
    world.assign("n1", "task.b", 0, "1.0.0");
    world.run_all();
    let started = world.at(0).unix_ms;
    let path = shifting(&mut world, 30, started);
    // Ten seconds in, the step is twenty seconds away.
    let early = world.plan(10);
    assert_eq!(kinds(&early), Vec::<&str>::new());
    assert_eq!(early.report.next_shift_step, Some(Duration::from_secs(20)));
    assert_eq!(early.report.wake_after, Some(Duration::from_secs(20)));
    let due = world.plan(30);
    assert_eq!(kinds(&due), ["shift", "split"]);
    assert_eq!(due.writes[0].expect, Some(3));
    assert_eq!(due.writes[1].expect, Some(4));
    assert_eq!(
        due.writes[1].change,
        Change::Put(json!([["task.a", "task.b"], [60, 40]]))
    );
    world.apply(&due);
    assert_eq!(world.view.shifts[&path].value.percent, 40);
    // The next step is a whole period later again.
    assert_eq!(
        world.plan(31).report.next_shift_step,
        Some(Duration::from_secs(29))
    );
}

#[test]
fn a_full_cluster_leaves_instances_pending_for_capacity() {
    let mut capped = member("n1", MemberStatus::Alive, &["1.0.0"]);
    capped.max_instances = Some(1);
    let mut world = World::new(vec![group("task.web", "1.0.0", 3)], vec![capped]);
    let plan = world.plan(0);
    assert_eq!(plan.report.placed, 1);
    assert_eq!(plan.report.pending, 2);
    assert_eq!(plan.report.demand.pending, 2);
    assert_eq!(plan.report.demand.nodes, ["n1".to_string()].into());
    world.apply(&plan);
    let pending: Vec<&InstanceStatus> = world
        .view
        .instances
        .values()
        .map(|s| &s.value)
        .filter(|s| s.status == InstanceState::Pending)
        .collect();
    assert_eq!(pending.len(), 2);
    let reason = pending[0].reason.as_deref().unwrap_or_default();
    assert!(reason.contains("is full"), "{reason}");
    assert_eq!(world.plan(0).writes, Vec::new());
}

#[test]
fn instance_records_nobody_will_clean_up_are_removed_with_their_version() {
    let mut world = World::new(
        vec![group("task.web", "1.0.0", 1)],
        vec![
            member("n1", MemberStatus::Alive, &["1.0.0"]),
            member("n2", MemberStatus::Dead, &["1.0.0"]),
        ],
    );
    world.assign("n1", "task.web", 0, "1.0.0");
    world.run_all();
    // Index 3 is gone from the topology and its node is dead.
    world.status("n2", "task.web", 3, "1.0.0", InstanceState::Running);
    let plan = world.plan(0);
    assert_eq!(kinds(&plan), ["orphan"]);
    let orphan = &world.view.instances[&layout::instance("task.web", 3)];
    assert_eq!(plan.writes[0].expect, Some(orphan.version));
}
