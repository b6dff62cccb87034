//! What an attacker who reaches the ports can hold, measured on the seed's deployment (3 release
//! nodes, ZooKeeper, config/my_topology.toml):
//!
//! - **Idle half-open connections.** 10,000 connections that each send part of a request head
//!   and then nothing (slowloris), first to node 0's REST port, then to a load balancer instance:
//!   `GET /v1/health` and `GET /get/index` through the LB, each on a new connection, before and
//!   while they are held — how many answered, and how fast.
//! - **Memory.** Node RSS after 100 PUTs of a value just under the 1 MiB limit (one node with the
//!   embedded store).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Context;
use lathe_tests::http;
use lathe_tests::node::NodeBuilder;
use lathe_tests::wait::try_wait_until;

use crate::report::Report;
use crate::seed::SeedCluster;
use crate::stats::Summary;
use crate::{attempt, probe, progress, rest, Plan};

/// A request head that never ends: the server waits for the rest until its header timeout.
const PARTIAL_HEAD: &[u8] = b"GET /v1/health HTTP/1.1\r\nHost: bench\r\nX-Slow: ";
const RSS_GOAL: &str = "< 300 MB";
const RSS_GOAL_MB: f64 = 300.0;
const ANSWER_GOAL: &str = "every probe answered";

pub(crate) fn pressure_phase(plan: &Plan, report: &mut Report) {
    let seed = match attempt(|| SeedCluster::start(true, None)) {
        Ok(seed) => seed,
        Err(why) => {
            let setup = "the seed's example on 3 nodes + ZooKeeper";
            report.failed("11. idle connections, REST", setup, &why, ANSWER_GOAL);
            report.failed("11. idle connections, LB", setup, &why, ANSWER_GOAL);
            return report.failed("11. RSS after 100 × 1 MiB PUTs", setup, &why, RSS_GOAL);
        }
    };
    let rest_addr = seed.http_addrs()[0].clone();
    let lb_addr = seed.lbs[0].addr.clone();
    let held = plan.pressure_connections;
    for (measurement, target, path) in [
        ("11. idle connections, REST", &rest_addr, "/v1/health"),
        ("11. idle connections, LB", &lb_addr, "/get/index"),
    ] {
        let setup = format!(
            "{held} connections to {target} each sent part of a request head, then nothing; \
             {} `GET {path}` probes, each on a new connection",
            plan.pressure_probes
        );
        match attempt(|| held_while_probing(target, path, held, plan.pressure_probes)) {
            Ok(result) => {
                let met = result.during_answered == plan.pressure_probes
                    && result.before_answered == plan.pressure_probes;
                report.goal(measurement, &setup, result.describe(), ANSWER_GOAL, met);
            }
            Err(why) => report.failed(measurement, &setup, &why, ANSWER_GOAL),
        }
    }
    drop(seed);
    // One node with the embedded store: the node's own memory, without a ZooKeeper in the way
    // (the harness's ZooKeeper, -Xmx256m, lost its client connections around the 49th 1 MiB
    // write in this phase's first runs).
    let setup = "1 node, embedded store: 100 PUTs of a JSON string value just under the 1 MiB \
                 limit, different keys; VmRSS";
    progress("pressure phase: starting 1 lathe-node with the embedded store");
    let measured = attempt(|| {
        let node = NodeBuilder::new().name("bench-rss").start();
        let addr = node.http_addr().to_string();
        rss_after_large_puts(&addr, std::slice::from_ref(&addr), &[node.pid()])
    });
    match measured {
        Ok((before, after)) => report.goal(
            "11. RSS after 100 × 1 MiB PUTs",
            setup,
            format!("{after:.0} MB (before the PUTs {before:.0} MB)"),
            RSS_GOAL,
            after < RSS_GOAL_MB,
        ),
        Err(why) => report.failed("11. RSS after 100 × 1 MiB PUTs", setup, &why, RSS_GOAL),
    }
}

struct Held {
    opened: usize,
    before: Option<Summary>,
    before_answered: usize,
    /// What the first probe before the connections were opened got, if not a 200.
    before_other: Option<String>,
    during: Option<Summary>,
    during_answered: usize,
    probes: usize,
    /// What the first unanswered probe got, if any did not get a 200.
    refusal: Option<String>,
    still_open: usize,
}

impl Held {
    fn describe(&self) -> String {
        let summary = |s: &Option<Summary>| s.map(|s| s.describe()).unwrap_or("—".into());
        let mut text = format!(
            "{} held ({} still open after the probes); before: {}/{} answered 200, {}; while \
             held: {}/{} answered 200, {}",
            self.opened,
            self.still_open,
            self.before_answered,
            self.probes,
            summary(&self.before),
            self.during_answered,
            self.probes,
            summary(&self.during)
        );
        if let Some(other) = &self.before_other {
            text.push_str(&format!("; first other answer before: {other}"));
        }
        if let Some(refusal) = &self.refusal {
            text.push_str(&format!("; first other answer while held: {refusal}"));
        }
        text
    }
}

fn held_while_probing(
    addr: &str,
    path: &str,
    connections: usize,
    probes: usize,
) -> anyhow::Result<Held> {
    let target: SocketAddr = addr.parse().context("an address")?;
    let before = probe_many(target, path, probes)?;
    progress(&format!(
        "pressure phase: opening {connections} idle connections to {addr}"
    ));
    let mut held = Vec::with_capacity(connections);
    for _ in 0..connections {
        match TcpStream::connect_timeout(&target, Duration::from_secs(2)) {
            Ok(mut stream) => {
                let _ = stream.write_all(PARTIAL_HEAD);
                held.push(stream);
            }
            Err(error) => {
                anyhow::ensure!(!held.is_empty(), "the first connection failed: {error}");
                break;
            }
        }
    }
    let opened = held.len();
    let during = probe_many(target, path, probes)?;
    let still_open = held.iter_mut().map(is_open).filter(|open| *open).count();
    Ok(Held {
        opened,
        before_answered: before.answered.len(),
        before: Summary::of(before.answered),
        before_other: before.other,
        during_answered: during.answered.len(),
        during: Summary::of(during.answered),
        probes,
        refusal: during.other,
        still_open,
    })
}

struct Probed {
    /// How long each probe answered with 200 took.
    answered: Vec<Duration>,
    other: Option<String>,
}

/// `GET path` on a new connection, `count` times, one after the other.
fn probe_many(target: SocketAddr, path: &str, count: usize) -> anyhow::Result<Probed> {
    let mut probed = Probed {
        answered: Vec::new(),
        other: None,
    };
    for _ in 0..count {
        let started = Instant::now();
        match get_once(target, path) {
            Ok(status) if status.starts_with("HTTP/1.1 200") => {
                probed.answered.push(started.elapsed())
            }
            Ok(status) => {
                probed.other.get_or_insert(status);
            }
            Err(error) => {
                probed.other.get_or_insert(error.to_string());
            }
        }
    }
    Ok(probed)
}

/// The status line of `GET path` on a new connection (5 s to answer).
fn get_once(target: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    Ok(text.lines().next().unwrap_or("no answer").to_string())
}

/// Whether the server has not closed `stream` (a read would block rather than see the end).
fn is_open(stream: &mut TcpStream) -> bool {
    let _ = stream.set_nonblocking(true);
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => false,
        Ok(_) => true,
        Err(error) => error.kind() == std::io::ErrorKind::WouldBlock,
    }
}

/// Largest node RSS before and after 100 PUTs of a value just under 1 MiB.
fn rss_after_large_puts(addr: &str, nodes: &[String], pids: &[u32]) -> anyhow::Result<(f64, f64)> {
    let largest = || -> anyhow::Result<f64> {
        let rss: anyhow::Result<Vec<f64>> = pids.iter().map(|pid| probe::rss_mb(*pid)).collect();
        Ok(rss?.into_iter().fold(0.0, f64::max))
    };
    let before = largest()?;
    progress("pressure phase: 100 PUTs of 1 MiB");
    // A JSON string: its encoding is the text plus two quotes. The limit counts the stored record
    // (and in ZooKeeper mode the whole request), a little more than the value: 8 KiB under it.
    let body = serde_json::to_string(&"x".repeat(1024 * 1024 - 8 * 1024))?;
    let agent = rest::agent();
    for i in 0..100 {
        rest::put(&agent, addr, &format!("bench/large/{i}"), &body)?;
    }
    // The other nodes hold the last value too before their RSS is read.
    for node in nodes {
        try_wait_until(Duration::from_secs(30), || {
            let reply = http::try_get_json(node, "/v1/kv/bench/large/99")?;
            (reply.status == 200)
                .then_some(())
                .ok_or(format!("answered {}", reply.status))
        })
        .map_err(|seen| anyhow::anyhow!("{node} has no /bench/large/99: {seen}"))?;
    }
    Ok((before, largest()?))
}
