//! Fan-out: the time from a write to the LAST of N subscribers holding the new value, and what each
//! change costs ZooKeeper — through Lathe (SSE watchers spread over the nodes, one PUT to node 0)
//! and the naive way (a ZooKeeper session and watch per subscriber, see [`crate::naive`]).
//!
//! Every change writes the next sequence number; each subscriber reports a [`Receipt`] when it has
//! it. Changes are spaced out: the next is written once the last subscriber has the previous one.

use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use lathe_tests::zk::ZkServer;
use serde::Serialize;
use tokio::runtime::Runtime;

use crate::naive::{NaiveSubscribers, NaiveWriter, NAIVE_ROOT};
use crate::probe;
use crate::rest;
use crate::sse::SseSubscribers;
use crate::stats::Summary;

/// One subscriber has the value of change `seq` since `at`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Receipt {
    pub(crate) subscriber: usize,
    pub(crate) seq: u64,
    pub(crate) at: Instant,
}

/// Untimed changes first: they also prove every subscriber is listening.
const WARMUP_CHANGES: u64 = 3;
/// How long a change may take to reach every subscriber before it counts as incomplete.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(5);
/// How long the subscribers may take to report the initial value (naive way).
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// The pause between the end of one change and the next write.
const SPACING: Duration = Duration::from_millis(20);

/// What the cluster and ZooKeeper under test are.
pub(crate) struct Setup<'a> {
    pub(crate) runtime: &'a Runtime,
    pub(crate) zk: &'a ZkServer,
    pub(crate) http_addrs: &'a [String],
    /// The nodes' and ZooKeeper's processes, for CPU time.
    pub(crate) node_pids: Vec<u32>,
    pub(crate) zk_pid: Option<u32>,
}

impl Setup<'_> {
    /// CPU used so far (ms): the nodes together, ZooKeeper, this bench process.
    fn cpu(&self) -> [Option<f64>; 3] {
        let nodes: Option<f64> = self.node_pids.iter().map(|&pid| probe::cpu_ms(pid)).sum();
        let zookeeper = self.zk_pid.and_then(probe::cpu_ms);
        [nodes, zookeeper, probe::cpu_ms(std::process::id())]
    }
}

/// CPU time per timed change, in milliseconds (10 ms resolution over the whole run).
#[derive(Debug, Serialize)]
pub(crate) struct CpuPerChange {
    pub(crate) nodes: Option<f64>,
    pub(crate) zookeeper: Option<f64>,
    pub(crate) bench_client: Option<f64>,
}

/// One row of the fan-out table.
#[derive(Debug, Serialize)]
pub(crate) struct FanoutRow {
    pub(crate) way: &'static str,
    pub(crate) subscribers: usize,
    pub(crate) changes: usize,
    /// Write → last subscriber, over the changes every subscriber got in time.
    pub(crate) latency: Option<Summary>,
    /// Write → first subscriber.
    pub(crate) first: Option<Summary>,
    /// Write → the writer's answer (PUT or set_data).
    pub(crate) write_ack: Option<Summary>,
    /// Changes that did not reach every subscriber within [`DELIVERY_DEADLINE`].
    pub(crate) incomplete: usize,
    /// `zk_packets_received` (mntr) per timed change.
    pub(crate) zk_packets_per_change: f64,
    /// `lathe_zookeeper_requests_total` summed over the nodes, per timed change (Lathe only).
    pub(crate) lathe_zk_requests_per_change: Option<f64>,
    /// ZooKeeper's total watch count (wchs) while subscribed.
    pub(crate) zk_watches: Option<usize>,
    /// Lathe only: per node, how many changes reached a subscriber of that node last.
    pub(crate) last_on_node: Option<Vec<usize>>,
    /// Lathe only: per node, the mean of `lathe_registry_fanout_seconds` over the timed changes.
    pub(crate) node_fanout_mean_ms: Option<Vec<f64>>,
    pub(crate) cpu: CpuPerChange,
}

/// Lathe: `subscribers` SSE watchers of one key, spread over the nodes; PUTs to the first node.
pub(crate) fn lathe(
    setup: &Setup,
    subscribers: usize,
    changes: usize,
) -> anyhow::Result<FanoutRow> {
    let key = format!("bench/fanout-{subscribers}/key");
    let agent = rest::agent();
    let writer = &setup.http_addrs[0];
    rest::put(&agent, writer, &key, "0")?;
    let (sender, receipts) = mpsc::channel();
    let path = format!("/v1/watch/{key}");
    let _subscribers =
        SseSubscribers::connect(setup.runtime, setup.http_addrs, &path, subscribers, &sender)?;
    let write = |seq: u64| rest::put(&agent, writer, &key, &seq.to_string());
    let nodes = || probe::node_metrics(setup.http_addrs);
    let (mut row, deliveries) = measure(
        setup,
        "lathe",
        subscribers,
        changes,
        &receipts,
        write,
        Some(&nodes),
    )?;
    let mut last_on_node = vec![0; setup.http_addrs.len()];
    for delivery in &deliveries {
        last_on_node[delivery.last_subscriber % setup.http_addrs.len()] += 1; // round-robin
    }
    row.last_on_node = Some(last_on_node);
    Ok(row)
}

/// The naive way: `subscribers` sessions each watching and re-reading one znode; a writer session
/// sets it.
pub(crate) fn naive(
    setup: &Setup,
    subscribers: usize,
    changes: usize,
) -> anyhow::Result<FanoutRow> {
    let baseline = probe::zk_counters(setup.zk)?.alive_connections;
    let path = format!("{NAIVE_ROOT}/fanout-{subscribers}");
    let ensemble = setup.zk.connect_string();
    let row = {
        let writer = NaiveWriter::create(setup.runtime, &ensemble, &path)?;
        let (sender, receipts) = mpsc::channel();
        let _subscribers =
            NaiveSubscribers::connect(setup.runtime, &ensemble, &path, subscribers, &sender)?;
        if await_all(subscribers, 0, Instant::now(), READY_DEADLINE, &receipts).is_none() {
            bail!("not every naive subscriber read the znode within {READY_DEADLINE:?}");
        }
        let write = |seq: u64| writer.write(setup.runtime, seq);
        measure(setup, "naive", subscribers, changes, &receipts, write, None)?.0
    };
    // The sessions close in the background: let them go before anything else is counted.
    probe::wait_for_connections(setup.zk, baseline, Duration::from_secs(30));
    Ok(row)
}

type NodeProbe<'a> = &'a dyn Fn() -> anyhow::Result<probe::NodeMetrics>;

/// How one change reached the subscribers.
struct Delivery {
    ack: Duration,
    first: Duration,
    last: Duration,
    last_subscriber: usize,
}

fn measure(
    setup: &Setup,
    way: &'static str,
    subscribers: usize,
    changes: usize,
    receipts: &Receiver<Receipt>,
    mut write: impl FnMut(u64) -> anyhow::Result<()>,
    nodes: Option<NodeProbe>,
) -> anyhow::Result<(FanoutRow, Vec<Delivery>)> {
    for seq in 1..=WARMUP_CHANGES {
        if change(subscribers, seq, &mut write, receipts)?.is_none() {
            let within = DELIVERY_DEADLINE;
            bail!("warm-up change {seq} did not reach all {subscribers} subscribers in {within:?}");
        }
    }
    let zk_watches = setup.zk.watch_count().ok();
    let packets_before = probe::zk_counters(setup.zk)?.packets_received;
    let nodes_before = nodes.map(|read| read()).transpose()?;
    let cpu_before = setup.cpu();
    let (mut deliveries, mut incomplete) = (Vec::with_capacity(changes), 0);
    for seq in WARMUP_CHANGES + 1..=WARMUP_CHANGES + changes as u64 {
        match change(subscribers, seq, &mut write, receipts)? {
            Some(delivery) => deliveries.push(delivery),
            None => incomplete += 1,
        }
        std::thread::sleep(SPACING);
    }
    let packets_after = probe::zk_counters(setup.zk)?.packets_received;
    let cpu_after = setup.cpu();
    let nodes_after = nodes.map(|read| read()).transpose()?;
    let per_change = |delta: f64| delta / changes as f64;
    let summary =
        |pick: fn(&Delivery) -> Duration| Summary::of(deliveries.iter().map(pick).collect());
    let nodes = nodes_before.zip(nodes_after);
    let cpu = |i: usize| Some(per_change(cpu_after[i]? - cpu_before[i]?));
    let row = FanoutRow {
        way,
        subscribers,
        changes,
        latency: summary(|d| d.last),
        first: summary(|d| d.first),
        write_ack: summary(|d| d.ack),
        incomplete,
        zk_packets_per_change: per_change(packets_after.saturating_sub(packets_before) as f64),
        lathe_zk_requests_per_change: nodes
            .as_ref()
            .map(|(b, a)| per_change(a.zk_requests - b.zk_requests)),
        zk_watches,
        last_on_node: None,
        node_fanout_mean_ms: nodes.as_ref().map(|(b, a)| a.fanout_mean_ms_since(b)),
        cpu: CpuPerChange {
            nodes: cpu(0),
            zookeeper: cpu(1),
            bench_client: cpu(2),
        },
    };
    Ok((row, deliveries))
}

/// Writes `seq` and waits for every subscriber to have it; `None` if some did not get it within
/// [`DELIVERY_DEADLINE`].
fn change(
    subscribers: usize,
    seq: u64,
    write: &mut impl FnMut(u64) -> anyhow::Result<()>,
    receipts: &Receiver<Receipt>,
) -> anyhow::Result<Option<Delivery>> {
    while receipts.try_recv().is_ok() {} // late receipts of an incomplete change
    let sent = Instant::now();
    write(seq).with_context(|| format!("write of change {seq} failed"))?;
    let ack = sent.elapsed();
    let delivery = await_all(subscribers, seq, sent, DELIVERY_DEADLINE, receipts);
    Ok(delivery.map(|delivery| Delivery { ack, ..delivery }))
}

/// Waits until every subscriber reported `seq`: times are since `since` (`ack` is left zero).
fn await_all(
    subscribers: usize,
    seq: u64,
    since: Instant,
    deadline: Duration,
    receipts: &Receiver<Receipt>,
) -> Option<Delivery> {
    let deadline = since + deadline;
    let mut seen = vec![false; subscribers];
    let (mut missing, mut first, mut last) = (subscribers, None, (since, 0));
    while missing > 0 {
        let receipt = receipts
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .ok()?;
        let unseen = seen.get_mut(receipt.subscriber).filter(|seen| !**seen);
        if let (true, Some(seen)) = (receipt.seq == seq, unseen) {
            *seen = true;
            missing -= 1;
            first = Some(first.map_or(receipt.at, |first: Instant| first.min(receipt.at)));
            if receipt.at >= last.0 {
                last = (receipt.at, receipt.subscriber);
            }
        }
    }
    Some(Delivery {
        ack: Duration::ZERO,
        first: first.unwrap_or(since).saturating_duration_since(since),
        last: last.0.saturating_duration_since(since),
        last_subscriber: last.1,
    })
}
