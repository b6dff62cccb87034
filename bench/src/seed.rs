//! The seed's example deployed for the LB phase: a real ZooKeeper, 3 release `lathe-node`
//! processes, `config/my_topology.toml` deployed and all 13 instances running; then where its
//! load balancers answer and which front pages they balance over (endpoints and weights, for
//! HAProxy). Everything is stopped when a [`SeedCluster`] is dropped.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context};
use lathe_tests::http;
use lathe_tests::node::{Cluster, NodeBuilder};
use lathe_tests::wait::try_wait_until;
use lathe_tests::zk::ZkServer;
use serde_json::Value;

use crate::haproxy::BackendGroup;

/// The seed's topology, as deployed by `make run`.
const TOPOLOGY: &str = include_str!("../../config/my_topology.toml");
/// The load balancer group, and where its metadata says how to split the traffic.
const LB_GROUP: &str = "task.http.lb";
const DISTRIBUTION_KEY: &str = "/task/http/lb/backend_distribution";
/// How many instances the seed runs: 3 LBs + 5 + 5 front pages.
const INSTANCES: usize = 13;
/// How long the deployment may take to have every instance running and registered.
const CONVERGE: Duration = Duration::from_secs(60);

/// One load-balancer instance: `HOST:PORT`, `group/index`, node name.
#[derive(Debug, Clone)]
pub(crate) struct LbInstance {
    pub(crate) addr: String,
    pub(crate) instance: String,
    pub(crate) node: String,
    /// How many front pages run in the same node process.
    pub(crate) frontpages_beside: usize,
}

/// `PUT /v1/topology` of the seed's topology on the node at `addr`.
pub(crate) fn deploy(addr: &str) -> anyhow::Result<()> {
    let reply = http::put_text(
        addr,
        "/v1/topology?file=my_topology.toml",
        "application/toml",
        TOPOLOGY,
    );
    ensure!(
        reply.status == 200,
        "deploy answered {}: {}",
        reply.status,
        reply.text
    );
    Ok(())
}

pub(crate) struct SeedCluster {
    // Declared (and so dropped) before ZooKeeper: the nodes go first.
    cluster: Cluster,
    _zk: ZkServer,
    pub(crate) lbs: Vec<LbInstance>,
    /// The LB's backends: the groups of `backend_distribution` with their weights and endpoints.
    pub(crate) backends: Vec<BackendGroup>,
}

impl SeedCluster {
    /// `local_forward: false` starts the nodes with `--no-local-forward`: the LBs reach even the
    /// front pages of their own node over the network. `workers`: their `--workers`, if any.
    pub(crate) fn start(
        local_forward: bool,
        workers: Option<usize>,
    ) -> anyhow::Result<SeedCluster> {
        crate::progress("LB phase: starting ZooKeeper and 3 release lathe-node processes");
        let zk = ZkServer::start().context("zookeeper did not start")?;
        let mut template = NodeBuilder::new()
            .name("bench-lb")
            .zookeeper(zk.connect_string());
        if !local_forward {
            template = template.arg("--no-local-forward");
        }
        if let Some(workers) = workers {
            template = template.arg("--workers").arg(workers.to_string());
        }
        let cluster = Cluster::start(3, template);
        let addr = cluster.node(0).http_addr().to_string();
        crate::progress("LB phase: deploying config/my_topology.toml");
        deploy(&addr)?;
        // The condition's error as text: try_wait_until quotes it the way it always did.
        let running = || running_tasks(&addr).map_err(|e| format!("{e:#}"));
        let tasks = try_wait_until(CONVERGE, running).map_err(|seen| {
            anyhow::anyhow!("not all {INSTANCES} running after {CONVERGE:?}: {seen}")
        })?;
        let backends = backends(&addr, &tasks)?;
        let lbs = lb_instances(&addr, &tasks)?;
        Ok(SeedCluster {
            cluster,
            _zk: zk,
            lbs,
            backends,
        })
    }

    pub(crate) fn http_addrs(&self) -> Vec<String> {
        self.cluster.http_addrs()
    }

    pub(crate) fn node_pids(&self) -> Vec<u32> {
        self.cluster.nodes().iter().map(|node| node.pid()).collect()
    }
}

/// One instance of `/v1/tasks`: group, index, node, status.
#[derive(Debug, Clone)]
struct Task {
    group: String,
    index: u64,
    node: String,
}

/// `/v1/tasks` once all [`INSTANCES`] are running; `Err(what is seen)` before.
fn running_tasks(addr: &str) -> anyhow::Result<Vec<Task>> {
    let reply = http::try_get_json(addr, "/v1/tasks").map_err(anyhow::Error::msg)?;
    let all = reply
        .body
        .as_array()
        .ok_or_else(|| anyhow!(reply.text.clone()))?;
    let running: Vec<Task> = all
        .iter()
        .filter(|task| task["status"] == "running")
        .map(|task| Task {
            group: task["group"].as_str().unwrap_or_default().to_string(),
            index: task["index"].as_u64().unwrap_or(u64::MAX),
            node: task["node"].as_str().unwrap_or_default().to_string(),
        })
        .collect();
    ensure!(
        running.len() == INSTANCES,
        "{} of {} running",
        running.len(),
        all.len()
    );
    Ok(running)
}

/// `/v1/services/{group as a path}` once it lists an HTTP endpoint for every running instance.
fn endpoints(addr: &str, group: &str, tasks: &[Task]) -> anyhow::Result<Vec<Value>> {
    let expected = tasks.iter().filter(|task| task.group == group).count();
    ensure!(expected > 0, "no running instance of {group}");
    let path = format!("/v1/services/{}", group.replace('.', "/"));
    try_wait_until(CONVERGE, || {
        let reply = http::try_get_json(addr, &path)?;
        let listed: Vec<Value> = reply
            .body
            .as_array()
            .ok_or(format!("{path}: {}", reply.text))?
            .iter()
            .filter(|endpoint| endpoint["http"].is_string())
            .cloned()
            .collect();
        if listed.len() == expected {
            Ok(listed)
        } else {
            Err(format!("{path} lists {} of {expected}", listed.len()))
        }
    })
    .map_err(anyhow::Error::msg)
}

/// The groups and weights of the LB's `backend_distribution`, with their endpoints.
fn backends(addr: &str, tasks: &[Task]) -> anyhow::Result<Vec<BackendGroup>> {
    let reply = http::try_get_json(addr, &format!("/v1/kv{DISTRIBUTION_KEY}"))
        .map_err(anyhow::Error::msg)?;
    let value = &reply.body["value"];
    let (Some(groups), Some(weights)) = (value[0].as_array(), value[1].as_array()) else {
        bail!(
            "{DISTRIBUTION_KEY} is not [[groups], [weights]]: {}",
            reply.text
        );
    };
    ensure!(
        groups.len() == weights.len(),
        "{DISTRIBUTION_KEY}: {}",
        reply.text
    );
    groups
        .iter()
        .zip(weights)
        .map(|(group, weight)| {
            let name = group.as_str().context("a group name")?.to_string();
            let weight = weight.as_u64().context("a whole weight")? as u32;
            let servers = endpoints(addr, &name, tasks)?
                .iter()
                .filter_map(|endpoint| endpoint["http"].as_str().map(str::to_string))
                .collect();
            Ok(BackendGroup {
                name,
                weight,
                servers,
            })
        })
        .collect()
}

/// The LB instances by index, each with its node and how many front pages share that node.
fn lb_instances(addr: &str, tasks: &[Task]) -> anyhow::Result<Vec<LbInstance>> {
    let mut by_index = BTreeMap::new();
    for endpoint in endpoints(addr, LB_GROUP, tasks)? {
        let node = endpoint["node"].as_str().unwrap_or_default().to_string();
        let frontpages_beside = tasks
            .iter()
            .filter(|task| task.node == node && task.group.starts_with("task.http.frontpage"))
            .count();
        let index = endpoint["index"].as_u64().unwrap_or(u64::MAX);
        by_index.insert(
            index,
            LbInstance {
                addr: endpoint["http"].as_str().unwrap_or_default().to_string(),
                instance: format!("{LB_GROUP}/{index}"),
                node,
                frontpages_beside,
            },
        );
    }
    let lbs: Vec<LbInstance> = by_index.into_values().collect();
    ensure!(
        tasks.iter().filter(|task| task.group == LB_GROUP).count() == lbs.len(),
        "LB instances and endpoints differ: {lbs:?}; tasks {:?}",
        tasks
            .iter()
            .map(|task| (&task.group, task.index))
            .collect::<Vec<_>>()
    );
    Ok(lbs)
}
