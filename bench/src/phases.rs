//! The bench's two set-ups and what is measured on each: ZooKeeper mode (3 `lathe-node` processes
//! and 1 ZooKeeper) and embedded mode (1 node, no ZooKeeper). Everything started here is stopped
//! when it goes out of scope (the harness kills nodes and ZooKeeper on drop).

use lathe_tests::node::{Cluster, NodeBuilder, NodeProcess};
use lathe_tests::zk::ZkServer;
use tokio::runtime::Runtime;

use crate::report::Report;
use crate::stats::thousands;
use crate::{attempt, fanout, probe, progress, rest, Plan};

const RSS_GOAL: &str = "≤ 30 MB";
const RSS_GOAL_MB: f64 = 30.0;
const NO_GOAL: &str = "—";

pub(crate) fn zookeeper_mode(runtime: &Runtime, plan: &Plan, report: &mut Report) {
    progress("starting ZooKeeper");
    let zk = match attempt(ZkServer::start) {
        Ok(zk) => zk,
        Err(why) => return zookeeper_mode_failed(report, plan, "ZooKeeper did not start", &why),
    };
    progress("starting 3 lathe-node processes with --zookeeper");
    let template = NodeBuilder::new()
        .name("bench")
        .zookeeper(zk.connect_string());
    let cluster = match attempt(|| Ok(Cluster::start(3, template))) {
        Ok(cluster) => cluster,
        Err(why) => return zookeeper_mode_failed(report, plan, "the 3 nodes did not start", &why),
    };
    let setup = "3 nodes + ZooKeeper, after start; largest of the 3";
    idle_rss(
        report,
        "5. idle RSS, ZooKeeper mode",
        setup,
        cluster.nodes(),
        plan,
    );
    let addrs = cluster.http_addrs();
    let setup = format!(
        "{} sequential PUTs (after {} warm-up) to node 0 of 3, one keep-alive connection",
        plan.writes, plan.warmup_writes
    );
    let measurement = "1. write latency, ZooKeeper mode";
    write_latency(report, measurement, &setup, &addrs[0], plan);
    read_throughput(report, &addrs, plan);
    let pids = cluster.nodes().iter().map(NodeProcess::pid).collect();
    fan_out(runtime, &zk, &addrs, pids, plan, report);
    progress("stopping the ZooKeeper-mode cluster");
}

/// Every measurement of ZooKeeper mode, as "not measured" rows, when its processes did not start.
fn zookeeper_mode_failed(report: &mut Report, plan: &Plan, what: &str, why: &str) {
    let why = format!("{what}: {why}");
    let setup = "3 nodes + ZooKeeper";
    for measurement in [
        "1. write latency, ZooKeeper mode",
        "2. read throughput, 1 node",
        "2. read throughput, 3 nodes",
    ] {
        report.failed(measurement, setup, &why, NO_GOAL);
    }
    report.failed("5. idle RSS, ZooKeeper mode", setup, &why, RSS_GOAL);
    report.note(format!(
        "fan-out not measured: {}",
        crate::report::one_line(&why)
    ));
    crate::summary::fan_out_rows(report, plan);
}

pub(crate) fn embedded_mode(plan: &Plan, report: &mut Report) {
    progress("starting 1 lathe-node with the embedded store");
    let node = match attempt(|| Ok(NodeBuilder::new().name("bench-embedded").start())) {
        Ok(node) => node,
        Err(why) => {
            let setup = "1 node, embedded store";
            let why = format!("the node did not start: {why}");
            report.failed("1. write latency, embedded mode", setup, &why, NO_GOAL);
            return report.failed("5. idle RSS, embedded mode", setup, &why, RSS_GOAL);
        }
    };
    let setup = "1 node, embedded RocksDB store, no ZooKeeper, after start";
    idle_rss(
        report,
        "5. idle RSS, embedded mode",
        setup,
        std::slice::from_ref(&node),
        plan,
    );
    let setup = format!(
        "{} sequential PUTs (after {} warm-up) to 1 node; every write synced to disk before \
         the answer",
        plan.writes, plan.warmup_writes
    );
    write_latency(
        report,
        "1. write latency, embedded mode",
        &setup,
        node.http_addr(),
        plan,
    );
    match attempt(|| probe::fsync_latency(node.scratch_dir(), 200)) {
        Ok(fsync) => report.note(format!(
            "this machine's disk: overwriting 4 KiB and fdatasync in the embedded node's \
             directory took {}",
            fsync.describe()
        )),
        Err(why) => report.note(format!("fsync latency not measured: {why}")),
    }
    progress("stopping the embedded node");
}

fn idle_rss(
    report: &mut Report,
    measurement: &str,
    setup: &str,
    nodes: &[NodeProcess],
    plan: &Plan,
) {
    progress(&format!("idle for {:?}, then VmRSS", plan.idle));
    let cpu = || -> Option<f64> { nodes.iter().map(|node| probe::cpu_ms(node.pid())).sum() };
    let cpu_before = cpu();
    std::thread::sleep(plan.idle);
    let idle_cpu = cpu().zip(cpu_before).map(|(after, before)| {
        let per_node = (after - before) / nodes.len() as f64;
        format!(
            "; idle CPU {:.1} % of a core per node",
            per_node / plan.idle.as_millis() as f64 * 100.0
        )
    });
    let setup = format!("{setup}, idle {} s", plan.idle.as_secs());
    let read = attempt(|| nodes.iter().map(|node| probe::rss_mb(node.pid())).collect());
    match read {
        Ok(rss) => {
            let rss: Vec<f64> = rss;
            let largest = rss.iter().copied().fold(0.0, f64::max);
            let each: Vec<String> = rss.iter().map(|mb| format!("{mb:.1}")).collect();
            let mut result = format!("{largest:.1} MB (each: {} MB)", each.join(" / "));
            result.push_str(&idle_cpu.unwrap_or_default());
            report.goal(
                measurement,
                &setup,
                result,
                RSS_GOAL,
                largest <= RSS_GOAL_MB,
            );
        }
        Err(why) => report.failed(measurement, &setup, &why, RSS_GOAL),
    }
}

fn write_latency(report: &mut Report, measurement: &str, setup: &str, addr: &str, plan: &Plan) {
    progress(measurement);
    let run =
        attempt(|| rest::write_latency(addr, plan.warmup_writes, plan.writes, plan.write_budget));
    match run {
        Ok(run) => match run.latency {
            Some(latency) => {
                let mut result = latency.describe();
                if let Some(first) = &run.first_error {
                    result.push_str(&format!("; {} failed (first: {first})", run.errors));
                }
                if latency.count < plan.writes {
                    result.push_str(&format!("; stopped after {:?}", plan.write_budget));
                }
                report.info(measurement, setup, result);
            }
            None => {
                let why = format!(
                    "no write succeeded: {}",
                    run.first_error.unwrap_or_default()
                );
                report.failed(measurement, setup, &why, NO_GOAL);
            }
        },
        Err(why) => report.failed(measurement, setup, &why, NO_GOAL),
    }
}

fn read_throughput(report: &mut Report, addrs: &[String], plan: &Plan) {
    let key = "bench/read/key";
    let value = r#"{"backends":["127.0.0.1:8080","127.0.0.1:8081"],"weights":[90,10]}"#;
    let written = attempt(|| rest::put(&rest::agent(), &addrs[0], key, value));
    for (measurement, targets) in [
        ("2. read throughput, 1 node", &addrs[..1]),
        ("2. read throughput, 3 nodes", addrs),
    ] {
        progress(measurement);
        let setup = format!(
            "GET /v1/kv/{key}: {} keep-alive clients (threads) × {} s over {} node(s); clients \
             share the CPUs",
            plan.read_threads,
            plan.read_duration.as_secs(),
            targets.len()
        );
        let run = written.clone().and_then(|()| {
            attempt(|| rest::read_throughput(targets, key, plan.read_threads, plan.read_duration))
        });
        match run {
            Ok(run) => {
                let rate = thousands(run.per_second() as u64);
                let mut result = format!("{rate} req/s ({} errors)", run.errors);
                if targets.len() > 1 {
                    let seconds = run.elapsed.as_secs_f64();
                    let each: Vec<String> = run
                        .ok_per_node
                        .iter()
                        .map(|ok| thousands((*ok as f64 / seconds) as u64))
                        .collect();
                    result.push_str(&format!("; per node {}", each.join(" / ")));
                }
                report.info(measurement, &setup, result);
            }
            Err(why) => report.failed(measurement, &setup, &why, NO_GOAL),
        }
    }
}

fn fan_out(
    runtime: &Runtime,
    zk: &ZkServer,
    addrs: &[String],
    node_pids: Vec<u32>,
    plan: &Plan,
    report: &mut Report,
) {
    let config = zk.dir().join("zoo.cfg");
    let setup = fanout::Setup {
        runtime,
        zk,
        http_addrs: addrs,
        node_pids,
        zk_pid: probe::pid_with_arg(&config.to_string_lossy()),
    };
    if let Ok(watches) = zk.watch_count() {
        report.note(format!(
            "ZooKeeper held {watches} watches before any subscriber (the 3 nodes' own)"
        ));
    }
    for &subscribers in &plan.subscribers {
        progress(&format!(
            "fan-out through Lathe to {subscribers} SSE subscribers"
        ));
        match attempt(|| fanout::lathe(&setup, subscribers, plan.lathe_changes)) {
            Ok(row) => report.fanout.push(row),
            Err(why) => report.note(format!(
                "Lathe fan-out to {subscribers} subscribers not measured: {}",
                crate::report::one_line(&why)
            )),
        }
    }
    for &subscribers in &plan.subscribers {
        progress(&format!(
            "fan-out the naive way to {subscribers} ZooKeeper watchers"
        ));
        match attempt(|| fanout::naive(&setup, subscribers, plan.naive_changes)) {
            Ok(row) => report.fanout.push(row),
            Err(why) => report.note(format!(
                "naive fan-out to {subscribers} subscribers not measured: {}",
                crate::report::one_line(&why)
            )),
        }
    }
    crate::summary::fan_out_rows(report, plan);
}
