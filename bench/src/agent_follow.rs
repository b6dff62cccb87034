//! Agent phase, part (a): a registry change → HAProxy serving the new server set. One release
//! `lathe-agent` runs its built-in `haproxy` action (the repository's template, runtime API, 8
//! server slots) for a watch on `/bench/agent/endpoints`, where the bench writes endpoint
//! records shaped like the ones nodes write under `/lathe/endpoints` (which only nodes may
//! write). Each change is one PUT or DELETE: an endpoint added, removed, or moved to another
//! port; the set stays between 2 and 6 servers, so no reload is needed. Timed from just before
//! the write until `show servers state` on HAProxy's admin socket lists exactly the new set,
//! polled every [`POLL`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;

use crate::agent_procs::{agent_binary, toml_str, AgentProc};
use crate::stats::Summary;
use lathe_tests::haproxy::MasterWorker;

const TEMPLATE: &str = include_str!("../../config/agent-templates/haproxy.cfg.j2");
const PREFIX: &str = "bench/agent/endpoints";
const GROUP: &str = "bench.pool";
const BACKEND: &str = "pool";
/// The debounce of the watch: the agent's defaults.
pub(crate) const DEBOUNCE_MIN: &str = "200ms";
const DEBOUNCE_MAX: &str = "2s";
const SLOTS: usize = 8;
const POLL: Duration = Duration::from_millis(2);
/// The longest one change may take to reach HAProxy before it counts as failed.
const CHANGE_DEADLINE: Duration = Duration::from_secs(10);
/// The longest the first render and HAProxy's start may take.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// What part (a) measured.
pub(crate) struct FollowRun {
    pub(crate) latency: Option<Summary>,
    /// The writes' own latency (PUT/DELETE answered).
    pub(crate) write: Option<Summary>,
    pub(crate) failed: Vec<String>,
    pub(crate) reloads: Option<u64>,
}

/// The endpoint set the bench drives: index → port.
struct Pool {
    servers: BTreeMap<u32, u16>,
    ports: Vec<u16>,
    next_index: u32,
}

impl Pool {
    fn new() -> Pool {
        Pool {
            servers: BTreeMap::new(),
            ports: (0..16).map(|_| lathe_tests::node::free_port()).collect(),
            next_index: 0,
        }
    }

    fn unused_port(&self, change: usize) -> u16 {
        let used: BTreeSet<u16> = self.servers.values().copied().collect();
        let free: Vec<u16> = self
            .ports
            .iter()
            .copied()
            .filter(|p| !used.contains(p))
            .collect();
        free[change % free.len()]
    }

    fn expected(&self) -> BTreeSet<String> {
        self.servers
            .values()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect()
    }

    /// The next change: add when small, remove when large, else add / move / remove in turn.
    /// Returns the key written and the value (`None`: deleted).
    fn next(&mut self, change: usize) -> (u32, Option<u16>) {
        let op = match self.servers.len() {
            0..=2 => 0,
            6.. => 2,
            _ => change % 3,
        };
        match op {
            0 => {
                let index = self.next_index;
                self.next_index += 1;
                let port = self.unused_port(change);
                self.servers.insert(index, port);
                (index, Some(port))
            }
            1 => {
                let index = *self.servers.keys().next_back().expect("a server to move");
                let port = self.unused_port(change);
                self.servers.insert(index, port);
                (index, Some(port))
            }
            _ => {
                let index = *self.servers.keys().next().expect("a server to remove");
                self.servers.remove(&index);
                (index, None)
            }
        }
    }
}

fn write(client: &ureq::Agent, node: &str, index: u32, port: Option<u16>) -> anyhow::Result<()> {
    let url = format!("http://{node}/v1/kv/{PREFIX}/{index}");
    let result = match port {
        Some(port) => {
            let endpoint = json!({
                "group": GROUP, "index": index, "node": "bench",
                "http": format!("127.0.0.1:{port}"), "version": "1.0.0",
            });
            client
                .put(&url)
                .set("Content-Type", "application/json")
                .send_string(&endpoint.to_string())
        }
        None => client.delete(&url).call(),
    };
    let response = result.with_context(|| format!("write {url}"))?;
    response.into_string().ok(); // read to the end so the connection is reused
    Ok(())
}

fn agent_config(node: &str, dir: &std::path::Path, status: &str, listen: &str) -> String {
    let path = |name: &str| toml_str(dir.join(name).display().to_string());
    format!(
        r#"name = "bench-edge"
registry = [{node}]
[status]
listen = {status}
[[watch]]
name = "pool"
prefix = "/{PREFIX}"
wait = {{ min = "{DEBOUNCE_MIN}", max = "{DEBOUNCE_MAX}" }}
[[watch.action]]
type = "haproxy"
template = {template}
destination = {destination}
admin_socket = {admin}
master_socket = {master}
slots = {SLOTS}
backends = {{ {BACKEND} = "{GROUP}" }}
vars = {{ listen = {listen} }}
"#,
        node = toml_str(node),
        status = toml_str(status),
        template = path("haproxy.cfg.j2"),
        destination = path("haproxy.cfg"),
        admin = path("admin.sock"),
        master = path("master.sock"),
        listen = toml_str(listen),
    )
}

/// Waits until HAProxy serves exactly `expected`.
fn wait_serving(
    haproxy: &MasterWorker,
    expected: &BTreeSet<String>,
    deadline: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let serving = haproxy.serving(BACKEND);
        if serving.as_ref() == Ok(expected) {
            return Ok(());
        }
        if started.elapsed() > deadline {
            bail!("haproxy serves {serving:?}, expected {expected:?}");
        }
        std::thread::sleep(POLL);
    }
}

/// Waits until the agent's `/status` shows the watch's action applied at the watch's index, with
/// nothing pending (HAProxy was not running at the agent's first try: that action is retried).
fn wait_applied(status: &str, deadline: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let reply = lathe_tests::http::try_get_json(status, "/status");
        let last = match &reply {
            Ok(reply) => {
                let watch = &reply.body["watches"]["pool"];
                let action = &watch["actions"][0];
                let done = action["ok"] == true
                    && watch["pending"] == false
                    && action["applied_index"] == watch["index"];
                if done {
                    return Ok(());
                }
                watch.to_string()
            }
            Err(err) => err.clone(),
        };
        if started.elapsed() > deadline {
            bail!("the agent did not apply the change within {deadline:?}: {last}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub(crate) fn follow(node: &str, changes: usize) -> anyhow::Result<FollowRun> {
    let dir = tempfile::Builder::new()
        .prefix("lathe-bench-agent-")
        .tempdir()
        .context("cannot create a directory for the agent")?;
    std::fs::write(dir.path().join("haproxy.cfg.j2"), TEMPLATE)?;
    let client = crate::rest::agent();
    let mut pool = Pool::new();
    for change in 0..3 {
        let (index, port) = pool.next(change);
        write(&client, node, index, port)?;
    }
    let free_addr = || format!("127.0.0.1:{}", lathe_tests::node::free_port());
    let (status, listen) = (free_addr(), free_addr());
    let config = agent_config(node, dir.path(), &status, &listen);
    let mut agent = AgentProc::spawn(&agent_binary(), dir.path(), "edge", &status, &config)?;
    agent.wait_healthy()?;
    let rendered = dir.path().join("haproxy.cfg");
    let started = Instant::now();
    while !rendered.exists() {
        if started.elapsed() > START_DEADLINE {
            bail!("the agent did not render haproxy.cfg within {START_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let haproxy = MasterWorker::start(&rendered, &dir.path().join("admin.sock"), dir.path())?;
    wait_serving(&haproxy, &pool.expected(), START_DEADLINE)?;
    wait_applied(&status, START_DEADLINE)?;
    let reloads_before = haproxy.reloads().ok();
    let (mut latency, mut writes, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    for change in 3..3 + changes {
        let (index, port) = pool.next(change);
        let sent = Instant::now();
        write(&client, node, index, port)?;
        writes.push(sent.elapsed());
        match wait_serving(&haproxy, &pool.expected(), CHANGE_DEADLINE) {
            Ok(()) => latency.push(sent.elapsed()),
            Err(why) => failed.push(format!("{why:#}")),
        }
        // Untimed: the action has finished with this change before the next one comes.
        wait_applied(&status, CHANGE_DEADLINE)?;
    }
    let reloads = haproxy
        .reloads()
        .ok()
        .zip(reloads_before)
        .map(|(after, before)| after - before);
    drop(agent);
    drop(haproxy);
    Ok(FollowRun {
        latency: Summary::of(latency),
        write: Summary::of(writes),
        failed,
        reloads,
    })
}

#[cfg(test)]
mod tests {
    use super::Pool;

    #[test]
    fn changes_add_move_and_remove_within_2_to_6_servers() {
        let mut pool = Pool::new();
        let (mut adds, mut moves, mut removes) = (0, 0, 0);
        for change in 0..60 {
            let before = pool.servers.clone();
            let (index, port) = pool.next(change);
            match (before.get(&index), port) {
                (None, Some(_)) => adds += 1,
                (Some(old), Some(new)) => {
                    assert_ne!(*old, new, "a move changes the port");
                    moves += 1;
                }
                (Some(_), None) => removes += 1,
                (None, None) => panic!("removed an absent server"),
            }
            if change >= 3 {
                assert!((2..=6).contains(&pool.servers.len()), "{:?}", pool.servers);
            }
            assert_eq!(
                pool.expected().len(),
                pool.servers.len(),
                "ports are distinct"
            );
        }
        assert!(
            adds > 0 && moves > 0 && removes > 0,
            "{adds} {moves} {removes}"
        );
    }
}
