//! Agent phase, part (b): the load of many watchers on the registry, per change. The same
//! template with [`DEPS`] dependencies (keys `/bench/deps/k1..k5`) is followed two ways:
//! - Lathe: N release `lathe-agent` processes, each with one watch on `/bench/deps` and a
//!   `template` action rendering all five keys to a file — one registry stream per agent;
//! - consul-template's way: N clients in the bench process, each holding one blocking query
//!   (`GET /v1/kv/bench/deps/kD?index=I&wait=5m`) per dependency, re-issued after every wake
//!   (one thread per query, keep-alive connections).
//!
//! Each change is one PUT to one of the keys; the next one waits until every watcher has it. The
//! node's `lathe_api_requests_total` (read routes: kv, kv-blocking, watch) over the changes,
//! divided by the changes, is the requests per change; the TCP connections established to the
//! node's REST port (`/proc/net/tcp`) beyond those before the watchers came are the streams and
//! parked queries the watchers hold open.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use serde::Serialize;

use crate::agent_procs::{agent_binary, toml_str, AgentProc};
use crate::stats::Summary;
use crate::{probe, progress};

/// The template's dependencies: keys `/bench/deps/k1` … `k5`.
pub(crate) const DEPS: usize = 5;
const PREFIX: &str = "bench/deps";
const TEMPLATE: &str = "{% for e in entries %}{{ e.key }} {{ e.value.seq }}\n{% endfor %}";
/// The longest every watcher may take to see one change.
const CHANGE_DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(5);
/// A blocking query's wait (consul-template's default is 5 minutes as well).
const BLOCKING_WAIT: &str = "5m";

/// What one way measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LoadWay {
    pub(crate) watchers: usize,
    pub(crate) changes: usize,
    pub(crate) requests_per_change: f64,
    /// Connections the watchers hold open to the node (streams, parked blocking queries).
    pub(crate) open: Option<i64>,
    /// Node CPU per change, ms.
    pub(crate) node_cpu_ms: Option<f64>,
    /// Write → the last watcher has the change.
    pub(crate) last: Option<Summary>,
    pub(crate) incomplete: usize,
    /// The watcher processes' RSS, all together (agents only: the other way runs in the bench).
    pub(crate) watchers_rss_mb: Option<f64>,
}

/// The node being watched.
pub(crate) struct Registry<'a> {
    pub(crate) addr: &'a str,
    pub(crate) pid: u32,
}

/// Node metrics read before and after the changes.
struct Counters {
    reads: f64,
    cpu_ms: Option<f64>,
    /// Established TCP connections to the node's REST port.
    connections: Option<i64>,
}

fn counters(registry: &Registry) -> anyhow::Result<Counters> {
    let reply =
        lathe_tests::http::try_get_json(registry.addr, "/metrics").map_err(anyhow::Error::msg)?;
    ensure!(
        reply.status == 200,
        "GET /metrics answered {}",
        reply.status
    );
    let reads = reply
        .text
        .lines()
        .filter(|line| line.starts_with("lathe_api_requests_total{"))
        .filter(|line| {
            ["\"kv\"", "\"kv-blocking\"", "\"watch\""]
                .iter()
                .any(|route| line.contains(&format!("route={route}")))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    ensure!(
        reply.text.contains("lathe_api_requests_total"),
        "the node has no lathe_api_requests_total (an older lathe-node?)"
    );
    Ok(Counters {
        reads,
        cpu_ms: probe::cpu_ms(registry.pid),
        connections: established_to(registry.addr),
    })
}

/// The connections in state ESTABLISHED whose local end is `addr`'s port (`/proc/net/tcp`: the
/// server side of each loopback connection to the node).
fn established_to(addr: &str) -> Option<i64> {
    let port: u16 = addr.rsplit(':').next()?.parse().ok()?;
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let count = table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields
                .get(1)
                .and_then(|local| local.rsplit(':').next())
                .and_then(|hex| u16::from_str_radix(hex, 16).ok());
            local_port == Some(port) && fields.get(3) == Some(&"01")
        })
        .count();
    i64::try_from(count).ok()
}

fn put_seq(client: &ureq::Agent, addr: &str, dep: usize, seq: u64) -> anyhow::Result<()> {
    let key = format!("{PREFIX}/k{}", dep + 1);
    crate::rest::put(client, addr, &key, &format!("{{\"seq\":{seq}}}"))
}

/// Makes `changes` changes (sequence numbers from `first_seq`), each once `has(dep, seq)` holds
/// for every watcher; returns the way's numbers.
fn measure(
    registry: &Registry,
    watchers: usize,
    changes: usize,
    first_seq: u64,
    baseline_connections: Option<i64>,
    all_have: impl Fn(usize, u64) -> bool,
) -> anyhow::Result<LoadWay> {
    let client = crate::rest::agent();
    let before = counters(registry)?;
    let (mut last, mut incomplete) = (Vec::new(), 0);
    for change in 0..changes {
        let (dep, seq) = (change % DEPS, first_seq + change as u64);
        let sent = Instant::now();
        put_seq(&client, registry.addr, dep, seq)?;
        loop {
            if all_have(dep, seq) {
                last.push(sent.elapsed());
                break;
            }
            if sent.elapsed() > CHANGE_DEADLINE {
                incomplete += 1;
                break;
            }
            std::thread::sleep(POLL);
        }
    }
    let after = counters(registry)?;
    Ok(LoadWay {
        watchers,
        changes,
        requests_per_change: (after.reads - before.reads) / changes.max(1) as f64,
        open: before
            .connections
            .zip(baseline_connections)
            .map(|(now, baseline)| now - baseline),
        node_cpu_ms: after
            .cpu_ms
            .zip(before.cpu_ms)
            .map(|(after, before)| (after - before) / changes.max(1) as f64),
        last: Summary::of(last),
        incomplete,
        watchers_rss_mb: None,
    })
}

/// Part (b) with `agents` lathe-agent processes.
pub(crate) fn lathe_agents(
    registry: &Registry,
    agents: usize,
    changes: usize,
) -> anyhow::Result<LoadWay> {
    let dir = tempfile::Builder::new()
        .prefix("lathe-bench-agents-")
        .tempdir()
        .context("cannot create a directory for the agents")?;
    let client = crate::rest::agent();
    for dep in 0..DEPS {
        put_seq(&client, registry.addr, dep, 0)?;
    }
    let baseline = counters(registry)?.connections;
    let template = dir.path().join("deps.j2");
    std::fs::write(&template, TEMPLATE)?;
    progress(&format!(
        "agent phase: starting {agents} lathe-agent processes"
    ));
    let binary = agent_binary();
    let mut procs = Vec::with_capacity(agents);
    let mut outputs = Vec::with_capacity(agents);
    for i in 0..agents {
        let status = format!("127.0.0.1:{}", lathe_tests::node::free_port());
        let output = dir.path().join(format!("out-{i}.txt"));
        let config = agent_config(registry.addr, &status, &template, &output);
        procs.push(AgentProc::spawn(
            &binary,
            dir.path(),
            &format!("agent-{i}"),
            &status,
            &config,
        )?);
        outputs.push(output);
    }
    for agent in &mut procs {
        agent.wait_healthy()?;
    }
    let rss: Option<f64> = procs.iter().map(|a| probe::rss_mb(a.pid()).ok()).sum();
    if let Some(rss) = rss {
        progress(&format!(
            "agent phase: {agents} agents use {rss:.0} MB RSS in all"
        ));
    }
    let has = |dep: usize, seq: u64| {
        let line = format!("/{PREFIX}/k{} {seq}\n", dep + 1);
        outputs.iter().all(|path| rendered_has(path, &line))
    };
    let started = Instant::now();
    while !(0..DEPS).all(|dep| has(dep, 0)) {
        if started.elapsed() > CHANGE_DEADLINE {
            bail!("not every agent rendered the {DEPS} keys within {CHANGE_DEADLINE:?}");
        }
        std::thread::sleep(POLL);
    }
    progress(&format!(
        "agent phase: {changes} changes watched by {agents} agents"
    ));
    let mut way = measure(registry, agents, changes, 1, baseline, has)?;
    way.watchers_rss_mb = procs.iter().map(|a| probe::rss_mb(a.pid()).ok()).sum();
    drop(procs);
    Ok(way)
}

fn rendered_has(path: &Path, line: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|text| text.contains(line))
}

fn agent_config(node: &str, status: &str, template: &Path, output: &Path) -> String {
    format!(
        r#"registry = [{node}]
[status]
listen = {status}
[[watch]]
name = "deps"
prefix = "/{PREFIX}"
[[watch.action]]
type = "template"
template = {template}
destination = {output}
"#,
        node = toml_str(node),
        status = toml_str(status),
        template = toml_str(template.display().to_string()),
        output = toml_str(output.display().to_string()),
    )
}

/// Part (b) the consul-template way: `clients` × [`DEPS`] blocking queries.
pub(crate) fn blocking_queries(
    registry: &Registry,
    clients: usize,
    changes: usize,
) -> anyhow::Result<LoadWay> {
    let client = crate::rest::agent();
    // Sequence numbers go on from the Lathe run's; every key starts at a fresh one.
    let first = 1_000_000;
    for dep in 0..DEPS {
        put_seq(&client, registry.addr, dep, first)?;
    }
    let baseline = counters(registry)?.connections;
    progress(&format!(
        "agent phase: {clients} clients × {DEPS} blocking queries in the bench"
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Vec<AtomicU64>> =
        Arc::new((0..clients * DEPS).map(|_| AtomicU64::new(0)).collect());
    let mut threads = Vec::with_capacity(clients * DEPS);
    for slot in 0..clients * DEPS {
        let (stop, seen, addr) = (stop.clone(), seen.clone(), registry.addr.to_string());
        let thread = std::thread::Builder::new()
            .name(format!("blocking-{slot}"))
            .stack_size(256 * 1024)
            .spawn(move || follow_key(&addr, slot % DEPS, &seen[slot], &stop))
            .context("cannot start a client thread")?;
        threads.push(thread);
    }
    let has = |dep: usize, seq: u64| {
        (0..clients).all(|c| seen[c * DEPS + dep].load(Ordering::Acquire) == seq)
    };
    let connected = |expected: i64| -> anyhow::Result<()> {
        let started = Instant::now();
        let open = || -> anyhow::Result<i64> {
            let now = counters(registry)?.connections;
            Ok(now
                .zip(baseline)
                .map_or(expected, |(now, baseline)| now - baseline))
        };
        while open()? < expected {
            if started.elapsed() > CHANGE_DEADLINE {
                bail!("not every blocking query connected within {CHANGE_DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    };
    let result = (|| {
        let started = Instant::now();
        while !(0..DEPS).all(|dep| has(dep, first)) {
            if started.elapsed() > CHANGE_DEADLINE {
                bail!("not every client read the {DEPS} keys within {CHANGE_DEADLINE:?}");
            }
            std::thread::sleep(POLL);
        }
        connected(i64::try_from(clients * DEPS)?)?;
        progress(&format!(
            "agent phase: {changes} changes watched by {} blocking queries",
            clients * DEPS
        ));
        measure(registry, clients, changes, first + 1, baseline, has)
    })();
    stop.store(true, Ordering::Release);
    for dep in 0..DEPS {
        put_seq(&client, registry.addr, dep, u64::MAX).ok(); // wakes every query
    }
    for thread in threads {
        thread.join().ok();
    }
    result
}

/// One client's blocking query on one key, as consul-template runs it: a plain read, then
/// `?index=` of the last answer, re-issued after every wake.
fn follow_key(addr: &str, dep: usize, seen: &AtomicU64, stop: &AtomicBool) {
    let client = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(400))
        .build();
    let base = format!("http://{addr}/v1/kv/{PREFIX}/k{}", dep + 1);
    let mut index: Option<u64> = None;
    while !stop.load(Ordering::Acquire) {
        let url = match index {
            Some(index) => format!("{base}?index={index}&wait={BLOCKING_WAIT}"),
            None => base.clone(),
        };
        let Ok(response) = client.get(&url).call() else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        index = response
            .header("X-Lathe-Index")
            .and_then(|value| value.parse().ok())
            .or(index);
        let body: serde_json::Value = response.into_json().unwrap_or_default();
        if let Some(seq) = body["value"]["seq"].as_u64() {
            seen.store(seq, Ordering::Release);
        }
    }
}
