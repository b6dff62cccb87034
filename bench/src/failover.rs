//! The failover phase (issue 4): the seed's topology on 3 release nodes + ZooKeeper; per trial,
//! SIGKILL a node that hosts instances and time until every instance that was on it is `running`
//! on a live node in `/v1/tasks` and its new endpoint answers `GET /get/index` with 200. Then the
//! node is started again (same name, ports and data dir), rejoins, and the cluster settles before
//! the next trial. Non-leader nodes make the main row; the scheduler leader gets a row of its own.
//!
//! Polling runs every [`POLL`] against a surviving node, so the resolution is a few milliseconds
//! plus one `/v1/tasks` request; each moved instance is checked on its own and the trial ends
//! when the last one answers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use lathe_tests::http;
use lathe_tests::node::{Cluster, NodeBuilder};
use lathe_tests::zk::ZkServer;
use serde_json::Value;

use crate::report::Report;
use crate::stats::{ms, Summary};
use crate::{attempt, progress, Plan};

/// 3 LBs + 5 + 5 front pages.
const INSTANCES: usize = 13;
const GOAL: &str = "p99 ≤ 2 s (Storm and Erlang defaults detect in 30–60 s)";
const GOAL_MS: f64 = 2_000.0;
const NON_LEADER: &str = "7. failover: SIGKILL of a node → its instances serving elsewhere";
const LEADER: &str =
    "7. failover: SIGKILL of the scheduler leader → its instances serving elsewhere";
/// Between two checks of a trial.
const POLL: Duration = Duration::from_millis(5);
/// The longest one trial may take before it counts as failed.
const TRIAL_DEADLINE: Duration = Duration::from_secs(60);
/// The longest the cluster may take to settle after a node came back.
const SETTLE_DEADLINE: Duration = Duration::from_secs(240);
/// "Settled": the instances' placement did not change for this long.
const STABLE_FOR: Duration = Duration::from_secs(2);

/// One instance of `/v1/tasks`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Instance {
    node: String,
    status: String,
    endpoint: Option<String>,
}

type Instances = BTreeMap<(String, u64), Instance>;

/// What one trial measured.
struct Trial {
    /// SIGKILL → every moved instance serving.
    serving: Duration,
    /// SIGKILL → the victim `dead` in the survivor's `/v1/members`.
    dead: Option<Duration>,
    moved: usize,
}

pub(crate) fn failover(plan: &Plan, report: &mut Report) {
    let setup = format!(
        "seed topology (13 instances) on 3 release nodes + ZooKeeper; per trial SIGKILL one node, \
         poll a survivor every {} ms until each of its instances is running on a live node in \
         /v1/tasks and GET /get/index on its new endpoint answers 200; then restart the node and \
         wait until the cluster settles",
        POLL.as_millis()
    );
    let (mut non_leader, mut leader) = (Trials::default(), Trials::default());
    if let Err(why) = attempt(|| run_trials(plan, &mut non_leader, &mut leader)) {
        report.note(format!(
            "failover phase stopped early: {}",
            crate::report::one_line(&why)
        ));
        non_leader.failed.push(why.clone());
        leader.failed.push(why);
    }
    row(report, NON_LEADER, &setup, "non-leader nodes", &non_leader);
    row(report, LEADER, &setup, "the leader", &leader);
}

/// Which node a trial kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    /// A node hosting instances that is not the scheduler leader (in turn).
    NonLeader,
    Leader,
}

impl Victim {
    fn role(self) -> &'static str {
        match self {
            Victim::Leader => "leader",
            Victim::NonLeader => "non-leader",
        }
    }
}

/// The trials of one kind: those measured, and why the others were not.
#[derive(Default)]
struct Trials {
    done: Vec<Trial>,
    failed: Vec<String>,
}

fn run_trials(plan: &Plan, non_leader: &mut Trials, leader: &mut Trials) -> anyhow::Result<()> {
    progress("failover phase: starting ZooKeeper and 3 release lathe-node processes");
    let zk = ZkServer::start().context("zookeeper did not start")?;
    let template = NodeBuilder::new()
        .name("bench-fo")
        .zookeeper(zk.connect_string());
    let mut cluster = Cluster::start(3, template);
    let addr = cluster.node(0).http_addr().to_string();
    progress("failover phase: deploying config/my_topology.toml");
    crate::seed::deploy(&addr)?;
    settle(&mut cluster)?;
    for trial in 0..plan.failover_trials {
        let trials = plan.failover_trials;
        one_trial(&mut cluster, Victim::NonLeader, trial, trials, non_leader)?;
    }
    for trial in 0..plan.failover_leader_trials {
        let trials = plan.failover_leader_trials;
        one_trial(&mut cluster, Victim::Leader, trial, trials, leader)?;
    }
    progress("failover phase: stopping the nodes and ZooKeeper");
    drop(cluster);
    drop(zk);
    Ok(())
}

/// Kills a node (the leader, or a non-leader hosting instances), measures, restarts it and waits
/// until the cluster settles. A trial that times out is recorded as failed; a cluster that does
/// not settle again ends the phase.
fn one_trial(
    cluster: &mut Cluster,
    kind: Victim,
    trial: usize,
    trials: usize,
    into: &mut Trials,
) -> anyhow::Result<()> {
    let victim = pick_victim(cluster, kind, trial)?;
    let victim_name = cluster.node(victim).name().to_string();
    let survivor = cluster
        .node((victim + 1) % cluster.len())
        .http_addr()
        .to_string();
    let before = instances(&survivor)?;
    let moved: BTreeSet<(String, u64)> = before
        .iter()
        .filter(|(_, i)| i.node == victim_name && i.status == "running")
        .map(|(key, _)| key.clone())
        .collect();
    let role = kind.role();
    progress(&format!(
        "failover phase: trial {} of {trials}: SIGKILL {victim_name} ({role}, {} instances)",
        trial + 1,
        moved.len()
    ));
    let killed_at = Instant::now();
    cluster.node_mut(victim).kill();
    match watch_failover(&survivor, &victim_name, &moved, killed_at) {
        Ok(measured) => into.done.push(measured),
        Err(why) => into.failed.push(format!("{why:#}")),
    }
    cluster.node_mut(victim).restart();
    settle(cluster)
}

/// The node to kill: the leader, or the non-leaders hosting instances in turn.
fn pick_victim(cluster: &Cluster, kind: Victim, trial: usize) -> anyhow::Result<usize> {
    let addr = cluster.node(0).http_addr();
    let leader = leader(addr).context("no leader named in /v1/members")?;
    let hosts: BTreeSet<String> = instances(addr)?
        .into_values()
        .filter(|i| i.status == "running")
        .map(|i| i.node)
        .collect();
    let candidates: Vec<usize> = (0..cluster.len())
        .filter(|&i| {
            let name = cluster.node(i).name();
            (name == leader) == (kind == Victim::Leader) && hosts.contains(name)
        })
        .collect();
    match candidates.len() {
        0 => bail!("no {} node hosts an instance", kind.role()),
        n => Ok(candidates[trial % n]),
    }
}

/// Polls `survivor` until every instance in `moved` runs on another node and answers.
fn watch_failover(
    survivor: &str,
    victim: &str,
    moved: &BTreeSet<(String, u64)>,
    killed_at: Instant,
) -> anyhow::Result<Trial> {
    let client = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(1))
        .build();
    let mut serving: BTreeMap<(String, u64), Duration> = BTreeMap::new();
    let mut dead = None;
    let mut last = String::new();
    while killed_at.elapsed() < TRIAL_DEADLINE {
        if dead.is_none() && member_status(survivor, victim).as_deref() == Some("dead") {
            dead = Some(killed_at.elapsed());
        }
        match instances(survivor) {
            Ok(now) => {
                let waiting: Vec<&(String, u64)> = moved
                    .iter()
                    .filter(|key| !serving.contains_key(*key))
                    .collect();
                for key in waiting {
                    let Some(instance) = now.get(key) else {
                        continue;
                    };
                    let elsewhere = instance.node != victim && instance.status == "running";
                    let answers = elsewhere
                        && instance
                            .endpoint
                            .as_ref()
                            .is_some_and(|endpoint| answers_200(&client, endpoint));
                    if answers {
                        serving.insert(key.clone(), killed_at.elapsed());
                    } else {
                        last = format!("{}/{}: {instance:?}", key.0, key.1);
                    }
                }
            }
            Err(err) => last = format!("{err:#}"),
        }
        if serving.len() == moved.len() {
            return Ok(Trial {
                serving: serving.values().copied().max().unwrap_or_default(),
                dead,
                moved: moved.len(),
            });
        }
        std::thread::sleep(POLL);
    }
    bail!(
        "{} of {} instances serving elsewhere after {TRIAL_DEADLINE:?} (last seen {last})",
        serving.len(),
        moved.len()
    )
}

fn answers_200(client: &ureq::Agent, endpoint: &str) -> bool {
    match client.get(&format!("http://{endpoint}/get/index")).call() {
        Ok(response) => {
            let ok = response.status() == 200;
            response.into_string().ok(); // read to the end so the connection is reused
            ok
        }
        Err(_) => false,
    }
}

/// Waits until every node sees the 3 alive, all 13 instances run on live nodes and answer, and
/// the placement stayed the same for [`STABLE_FOR`].
fn settle(cluster: &mut Cluster) -> anyhow::Result<()> {
    cluster.wait_all_alive(SETTLE_DEADLINE);
    let addr = cluster.node(0).http_addr().to_string();
    let names: BTreeSet<String> = cluster
        .nodes()
        .iter()
        .map(|n| n.name().to_string())
        .collect();
    let client = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(2))
        .build();
    let started = Instant::now();
    let mut stable: Option<(Instances, Instant)> = None;
    let mut last = String::new();
    while started.elapsed() < SETTLE_DEADLINE {
        match instances(&addr) {
            Ok(now) => {
                let running = now
                    .values()
                    .filter(|i| i.status == "running" && names.contains(&i.node))
                    .count();
                if running != INSTANCES {
                    last = format!("{running} of {INSTANCES} running");
                    stable = None;
                } else if stable.as_ref().is_none_or(|(seen, _)| *seen != now) {
                    stable = Some((now, Instant::now()));
                } else if stable
                    .as_ref()
                    .is_some_and(|(_, since)| since.elapsed() >= STABLE_FOR)
                {
                    let all_answer = now.values().all(|i| {
                        i.endpoint
                            .as_ref()
                            .is_some_and(|endpoint| answers_200(&client, endpoint))
                    });
                    if all_answer {
                        return Ok(());
                    }
                    last = "an instance does not answer GET /get/index".into();
                }
            }
            Err(err) => last = format!("{err:#}"),
        }
        // Pacing of a settle check (not a measurement).
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("the cluster did not settle within {SETTLE_DEADLINE:?}: {last}")
}

/// `/v1/tasks` by (group, index).
fn instances(addr: &str) -> anyhow::Result<Instances> {
    let reply = http::try_get_json(addr, "/v1/tasks").map_err(anyhow::Error::msg)?;
    let list = reply
        .body
        .as_array()
        .ok_or_else(|| anyhow::anyhow!(reply.text.clone()))?;
    Ok(list
        .iter()
        .map(|task| {
            let key = (
                task["group"].as_str().unwrap_or_default().to_string(),
                task["index"].as_u64().unwrap_or(u64::MAX),
            );
            let text = |field: &str| task[field].as_str().map(str::to_string);
            let instance = Instance {
                node: text("node").unwrap_or_default(),
                status: text("status").unwrap_or_default(),
                endpoint: text("endpoint"),
            };
            (key, instance)
        })
        .collect())
}

fn members(addr: &str) -> Option<Vec<Value>> {
    let reply = http::try_get_json(addr, "/v1/members").ok()?;
    reply.body["members"].as_array().cloned()
}

/// The alive member marked `"leader": true`.
fn leader(addr: &str) -> Option<String> {
    members(addr)?
        .iter()
        .find(|m| m["leader"] == true && m["status"] == "alive")
        .and_then(|m| m["name"].as_str().map(str::to_string))
}

fn member_status(addr: &str, name: &str) -> Option<String> {
    members(addr)?
        .iter()
        .find(|m| m["name"] == name)
        .and_then(|m| m["status"].as_str().map(str::to_string))
}

fn row(report: &mut Report, measurement: &str, setup: &str, whom: &str, trials: &Trials) {
    let (failed, trials) = (&trials.failed, &trials.done);
    let setup = format!("{setup}; killing {whom}");
    let Some(serving) = Summary::of(trials.iter().map(|t| t.serving).collect()) else {
        let why = failed
            .first()
            .cloned()
            .unwrap_or_else(|| "no trial ran".to_string());
        return report.failed(measurement, &setup, &why, GOAL);
    };
    let mut result = serving.describe();
    if let Some(dead) = Summary::of(trials.iter().filter_map(|t| t.dead).collect()) {
        result.push_str(&format!(
            "; of which detection (dead in /v1/members) p50 {}",
            ms(dead.p50_ms)
        ));
    }
    let moved: Vec<String> = trials.iter().map(|t| t.moved.to_string()).collect();
    result.push_str(&format!(
        "; instances moved per trial: {}",
        moved.join(" / ")
    ));
    if let Some(first) = failed.first() {
        result.push_str(&format!(
            "; {} trial(s) did not finish (first: {first})",
            failed.len()
        ));
    }
    let met = serving.p99_ms <= GOAL_MS && failed.is_empty();
    report.goal(measurement, &setup, result, GOAL, met);
}
