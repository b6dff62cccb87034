//! The LB phase (issue 3): requests per second and p50 / p99 through one Lathe LB instance of the
//! seed's topology, and through HAProxy 2.6 in front of the same 10 front pages with the same
//! 90/10 weights, driven by the same `wrk` command. Runs alternate (LB, HAProxy, LB, HAProxy)
//! after one warm-up each, so that drift in the machine's load hits both alike; the better run of
//! each (higher req/s) is reported with its own latencies. CPU per request is read from `/proc`
//! for `wrk`, the proxy and the 3 node processes, which all share the machine's CPUs.
//!
//! The load generator, the proxy and the front pages share the machine's CPUs (2 on the machines
//! this was written on). If their busy threads outnumber the CPUs, the kernel time-slices them and
//! p99 becomes the length of a time slice for whichever proxy is measured: it swung between 1 and
//! 6 ms run to run for both proxies that way. So the goal rows give `wrk` one thread (a CPU at
//! most) and each proxy one thread for the rest: the Lathe nodes run with `--workers 1`, HAProxy
//! with `nbthread 1`. That is also where HAProxy's p99 is lowest (1.0–1.1 ms in two runs, against
//! 1.3–1.5 ms with `nbthread 2` and `wrk -t2`), at a throughput within 10 % of its best.
//!
//! The phase runs three times, each on a fresh cluster: the goal setup (an LB calls the front
//! pages of its own node in-process); the same with `--no-local-forward` (every front page over
//! the network, as HAProxy reaches them); and a thread per CPU for everyone (`wrk -t2`, default
//! workers, HAProxy's `nbthread` = CPUs), to show what oversubscribing the CPUs does to both.

use serde::Serialize;

use crate::haproxy::Haproxy;
use crate::report::{Report, Verdict};
use crate::seed::{LbInstance, SeedCluster};
use crate::stats::{ms, thousands};
use crate::wrk::{Load, WrkRun};
use crate::{attempt, probe, progress, Plan};

/// The path every request asks for: the front page's 200 `:)`.
const PATH: &str = "/get/index";
const THROUGHPUT: &str = "6. LB throughput vs HAProxy";
const LATENCY: &str = "6. LB p99 latency vs HAProxy";
const NETWORK_ONLY: &str = "6. LB vs HAProxy, network forwarding only";
const THREAD_PER_CPU: &str = "6. LB vs HAProxy, a thread per CPU each";
const THROUGHPUT_GOAL: &str = "≥ HAProxy throughput";
const LATENCY_GOAL: &str = "p99 ≤ 1.5× HAProxy";
const LATENCY_FACTOR: f64 = 1.5;

/// What one timed `wrk` run measured, and what it cost in CPU.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Measured {
    pub(crate) wrk: WrkRun,
    /// CPU µs per request: `wrk`, the proxy process (HAProxy only: the Lathe LB lives in a node),
    /// and the 3 node processes (the front pages, plus the LB in Lathe's runs).
    pub(crate) cpu_us: [Option<f64>; 3],
    /// The whole machine's CPUs, busy during the run.
    pub(crate) machine_busy_percent: Option<f64>,
}

/// One proxy's runs, side by side with the other's in the report.
#[derive(Debug, Serialize)]
pub(crate) struct ProxyRow {
    pub(crate) proxy: String,
    pub(crate) target: String,
    pub(crate) runs: Vec<Measured>,
    pub(crate) goal: String,
    pub(crate) verdict: Verdict,
}

impl ProxyRow {
    /// The run with the most requests per second.
    pub(crate) fn best(&self) -> Option<&Measured> {
        self.runs.iter().max_by(|a, b| {
            let rate = |m: &Measured| m.wrk.requests_per_second;
            rate(a).total_cmp(&rate(b))
        })
    }
}

/// The side-by-side table: how it was driven, and one row per proxy.
#[derive(Debug, Serialize)]
pub(crate) struct Comparison {
    pub(crate) command: String,
    pub(crate) runs_each: usize,
    pub(crate) rows: Vec<ProxyRow>,
}

/// Something `wrk` is pointed at.
struct Target {
    proxy: String,
    addr: String,
    /// HAProxy's process; `None` for the Lathe LB, which runs inside a node process.
    pid: Option<u32>,
}

/// One run of the phase: how the Lathe LB reaches the front pages, and how many threads `wrk`,
/// the nodes and HAProxy get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// The goal rows: front pages of the LB's own node in-process, the others over the network;
    /// `wrk -t1`, `--workers 1`, `nbthread 1`.
    Goal,
    /// As [`Setup::Goal`], with `--no-local-forward`: every front page over the network, as
    /// HAProxy reaches them.
    NetworkOnly,
    /// As shipped, everyone a thread per CPU: `wrk -t<CPUs>`, default `--workers`, `nbthread`
    /// = CPUs.
    ThreadPerCpu,
}

impl Setup {
    fn local_forward(self) -> bool {
        self != Setup::NetworkOnly
    }

    /// Threads of `wrk`, and `--workers` of the nodes (`None`: their default, one per CPU).
    fn threads(self) -> (usize, Option<usize>) {
        match self {
            Setup::Goal | Setup::NetworkOnly => (1, Some(1)),
            Setup::ThreadPerCpu => (cpus(), None),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Setup::Goal => "goal setup",
            Setup::NetworkOnly => "--no-local-forward",
            Setup::ThreadPerCpu => "a thread per CPU",
        }
    }

    /// HAProxy's `nbthread`.
    fn haproxy_threads(self) -> usize {
        self.threads().1.unwrap_or_else(cpus)
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The phase: the goal setup against HAProxy (the goal rows and the side-by-side table), then
/// the reference setups.
pub(crate) fn lb_vs_haproxy(plan: &Plan, report: &mut Report) {
    lb_run(plan, report, Setup::Goal);
    lb_run(plan, report, Setup::NetworkOnly);
    lb_run(plan, report, Setup::ThreadPerCpu);
}

fn lb_run(plan: &Plan, report: &mut Report, setup: Setup) {
    let (wrk_threads, workers) = setup.threads();
    let load = Load {
        threads: wrk_threads,
        connections: 32,
        duration: plan.lb_duration,
    };
    let load_before = probe::machine_load();
    let seed = match attempt(|| SeedCluster::start(setup.local_forward(), workers)) {
        Ok(seed) => seed,
        Err(why) => {
            let why = format!("the seed did not deploy: {why}");
            return not_measured(report, setup, &why);
        }
    };
    let Some(lb) = seed.lbs.first().cloned() else {
        return not_measured(report, setup, "no LB instance");
    };
    progress("LB phase: starting HAProxy in front of the same front pages");
    let haproxy = attempt(|| Haproxy::start(&seed.backends, PATH, setup.haproxy_threads()));
    let how = match setup {
        Setup::Goal => String::new(),
        Setup::NetworkOnly => ", --no-local-forward".into(),
        Setup::ThreadPerCpu => format!(", {} workers", cpus()),
    };
    let mut targets = vec![Target {
        proxy: format!("Lathe LB ({}{how})", lb.instance),
        addr: lb.addr.clone(),
        pid: None,
    }];
    match &haproxy {
        Ok(haproxy) => targets.push(Target {
            proxy: Haproxy::version().unwrap_or_else(|| "HAProxy".to_string()),
            addr: haproxy.addr(),
            pid: Some(haproxy.pid()),
        }),
        Err(why) => report.note(format!(
            "HAProxy not measured: {}",
            crate::report::one_line(why)
        )),
    }
    let node_pids = seed.node_pids();
    let mut runs: Vec<Vec<Measured>> = targets.iter().map(|_| Vec::new()).collect();
    let warmup = Load {
        duration: plan.lb_warmup,
        ..load
    };
    for target in &targets {
        progress(&format!(
            "LB phase: warming up {} for {:?}",
            target.proxy, plan.lb_warmup
        ));
        if let Err(why) = attempt(|| crate::wrk::run(&warmup, &url(&target.addr))) {
            report.note(format!(
                "warm-up of {} failed: {}",
                target.proxy,
                crate::report::one_line(&why)
            ));
        }
    }
    for run in 1..=plan.lb_runs {
        for (target, measured) in targets.iter().zip(&mut runs) {
            progress(&format!(
                "LB phase: run {run} of {}: {}",
                plan.lb_runs, target.proxy
            ));
            match attempt(|| measure(&load, target, &node_pids)) {
                Ok(run) => measured.push(run),
                Err(why) => report.note(format!(
                    "{} run {run} failed: {}",
                    target.proxy,
                    crate::report::one_line(&why)
                )),
            }
        }
    }
    let mut rows: Vec<ProxyRow> = targets
        .into_iter()
        .zip(runs)
        .map(|(target, runs)| ProxyRow {
            proxy: target.proxy,
            target: target.addr,
            runs,
            goal: "— (reference)".into(),
            verdict: Verdict::NoGoal,
        })
        .collect();
    if setup != Setup::Goal {
        reference_rows(report, &rows, setup, &load, plan);
        notes(report, setup, &lb, &rows, &load_before);
        return;
    }
    goal_rows(report, &mut rows, &load, plan);
    notes(report, setup, &lb, &rows, &load_before);
    report.lb = Some(Comparison {
        command: load.command(&format!("http://<proxy>{PATH}")),
        runs_each: plan.lb_runs,
        rows,
    });
    progress("LB phase: stopping HAProxy, the nodes and ZooKeeper");
}

fn url(addr: &str) -> String {
    format!("http://{addr}{PATH}")
}

/// One timed `wrk` run against `target`, with the CPU the processes used meanwhile.
fn measure(load: &Load, target: &Target, node_pids: &[u32]) -> anyhow::Result<Measured> {
    let nodes = || -> Option<f64> { node_pids.iter().map(|&pid| probe::cpu_ms(pid)).sum() };
    let proxy = || target.pid.and_then(probe::cpu_ms);
    let before = (probe::waited_children_cpu_ms(), proxy(), nodes());
    let ticks_before = probe::machine_ticks();
    let wrk = crate::wrk::run(load, &url(&target.addr))?;
    let ticks_after = probe::machine_ticks();
    let after = (probe::waited_children_cpu_ms(), proxy(), nodes());
    let requests = wrk.requests.max(1) as f64;
    let per_request =
        |after: Option<f64>, before: Option<f64>| Some((after? - before?) * 1000.0 / requests);
    Ok(Measured {
        wrk,
        cpu_us: [
            per_request(after.0, before.0),
            per_request(after.1, before.1),
            per_request(after.2, before.2),
        ],
        machine_busy_percent: ticks_before
            .zip(ticks_after)
            .map(|(before, after)| probe::busy_percent(before, after)),
    })
}

/// The two goal rows of the main table, and the LB row's verdict in the side-by-side table.
fn goal_rows(report: &mut Report, rows: &mut [ProxyRow], load: &Load, plan: &Plan) {
    let setup = format!(
        "{} to 1 Lathe LB instance vs to HAProxy, both over the seed's 10 front pages (90/10); \
         better of {} interleaved runs each; wrk, proxy and front pages share the machine's CPUs: \
         wrk gets 1 thread, the nodes --workers 1, HAProxy nbthread 1",
        load.command(&format!("http://<proxy>{PATH}")),
        plan.lb_runs
    );
    let (lathe, haproxy) = match rows {
        [lathe, haproxy, ..] => (lathe.best().copied(), haproxy.best().copied()),
        _ => (None, None),
    };
    let (Some(lathe), Some(haproxy)) = (lathe, haproxy) else {
        let why = "not measured: a proxy has no successful run (see the notes)";
        report.row(
            THROUGHPUT,
            &setup,
            why.into(),
            THROUGHPUT_GOAL,
            Verdict::Unknown,
        );
        report.row(LATENCY, &setup, why.into(), LATENCY_GOAL, Verdict::Unknown);
        return;
    };
    let (l, h) = (lathe.wrk, haproxy.wrk);
    let clean = l.errors() == 0;
    let errors = if clean {
        String::new()
    } else {
        format!("; the LB run had {} errors", l.errors())
    };
    let rate_met = clean && l.requests_per_second >= h.requests_per_second;
    let result = format!(
        "Lathe {} req/s vs HAProxy {} req/s ({:.2}×){errors}",
        thousands(l.requests_per_second as u64),
        thousands(h.requests_per_second as u64),
        l.requests_per_second / h.requests_per_second
    );
    report.goal(THROUGHPUT, &setup, result, THROUGHPUT_GOAL, rate_met);
    let latency_met = clean && l.p99_ms <= LATENCY_FACTOR * h.p99_ms;
    let result = format!(
        "Lathe p99 {} (p50 {}) vs HAProxy p99 {} (p50 {}) ({:.2}×){errors}",
        ms(l.p99_ms),
        ms(l.p50_ms),
        ms(h.p99_ms),
        ms(h.p50_ms),
        l.p99_ms / h.p99_ms
    );
    report.goal(LATENCY, &setup, result, LATENCY_GOAL, latency_met);
    rows[0].goal = format!("{THROUGHPUT_GOAL}, {LATENCY_GOAL}");
    rows[0].verdict = if rate_met && latency_met {
        Verdict::Met
    } else {
        Verdict::Missed
    };
}

/// The reference row of a run that is not the goal's: the same comparison, no goal.
fn reference_rows(report: &mut Report, rows: &[ProxyRow], setup: Setup, load: &Load, plan: &Plan) {
    let (name, how) = match setup {
        Setup::NetworkOnly => (
            NETWORK_ONLY,
            format!(
                "as above, nodes started with --no-local-forward: the LB reaches every front \
                 page over the network, as HAProxy does; better of {} interleaved runs each",
                plan.lb_runs
            ),
        ),
        _ => (
            THREAD_PER_CPU,
            format!(
                "{}, nodes with their default --workers ({}), HAProxy nbthread {}: more busy \
                 threads than CPUs; better of {} interleaved runs each",
                load.command(&format!("http://<proxy>{PATH}")),
                cpus(),
                setup.haproxy_threads(),
                plan.lb_runs
            ),
        ),
    };
    let (lathe, haproxy) = match rows {
        [lathe, haproxy, ..] => (lathe.best().copied(), haproxy.best().copied()),
        _ => (None, None),
    };
    let result = match (lathe, haproxy) {
        (Some(l), Some(h)) => format!(
            "Lathe {} req/s, p99 {} vs HAProxy {} req/s, p99 {} ({:.2}×, {:.2}×)",
            thousands(l.wrk.requests_per_second as u64),
            ms(l.wrk.p99_ms),
            thousands(h.wrk.requests_per_second as u64),
            ms(h.wrk.p99_ms),
            l.wrk.requests_per_second / h.wrk.requests_per_second,
            l.wrk.p99_ms / h.wrk.p99_ms
        ),
        _ => "not measured: a proxy has no successful run (see the notes)".into(),
    };
    report.row(name, &how, result, "— (reference)", Verdict::NoGoal);
}

/// Every LB row of `setup` "not measured", when the cluster did not come up.
fn not_measured(report: &mut Report, setup: Setup, why: &str) {
    let how = "3 nodes + ZooKeeper, the seed's topology, wrk against 1 LB instance and HAProxy";
    let reference = match setup {
        Setup::Goal => None,
        Setup::NetworkOnly => Some(NETWORK_ONLY),
        Setup::ThreadPerCpu => Some(THREAD_PER_CPU),
    };
    if let Some(name) = reference {
        return report.row(name, how, why.into(), "— (reference)", Verdict::Unknown);
    }
    let setup = how;
    report.failed(THROUGHPUT, setup, why, THROUGHPUT_GOAL);
    report.failed(LATENCY, setup, why, LATENCY_GOAL);
}

fn notes(report: &mut Report, setup: Setup, lb: &LbInstance, rows: &[ProxyRow], load_before: &str) {
    let (wrk_threads, workers) = setup.threads();
    let workers = workers.map_or_else(|| format!("default ({})", cpus()), |w| w.to_string());
    report.note(format!(
        "LB phase, {}: ZooKeeper mode (1 ZooKeeper, 3 release lathe-node processes with \
         --workers {workers}), seed topology, 13 instances running. wrk -t{wrk_threads} hits {} \
         at {} on node {}, a node process that also runs {} of the 10 front pages; HAProxy runs \
         with nbthread {}, roundrobin, http-keep-alive, http-reuse always. Each proxy is warmed \
         up once, then runs alternate; the table shows the better run of each (higher req/s) \
         with that run's latencies",
        setup.label(),
        lb.instance,
        lb.addr,
        lb.node,
        lb.frontpages_beside,
        setup.haproxy_threads()
    ));
    let nodes_cpu = |row: &ProxyRow| row.best().and_then(|best| best.cpu_us[2]);
    let total_cpu = |row: &ProxyRow| {
        let cpu = row.best()?.cpu_us;
        Some(cpu[0]? + cpu[1].unwrap_or(0.0) + cpu[2]?)
    };
    if let [lathe, haproxy, ..] = rows {
        if let (Some(lathe_total), Some(haproxy_total)) = (total_cpu(lathe), total_cpu(haproxy)) {
            report.note(format!(
                "CPU per request, whole machine (wrk + proxy + the 3 nodes with the front pages): \
                 {lathe_total:.0} µs through the Lathe LB{}, {haproxy_total:.0} µs through HAProxy",
                if setup.local_forward() {
                    " (co-located front pages called in-process)"
                } else {
                    " (--no-local-forward)"
                }
            ));
        }
        let proxy_cpu = haproxy.best().and_then(|best| best.cpu_us[1]);
        if let (Setup::NetworkOnly, Some(with_lb), Some(without), Some(haproxy_cpu)) =
            (setup, nodes_cpu(lathe), nodes_cpu(haproxy), proxy_cpu)
        {
            report.note(format!(
                "CPU per request: the Lathe LB's own share ≈ the nodes' CPU with the LB in the \
                 path minus without it = {with_lb:.0} − {without:.0} = {:.0} µs, vs HAProxy's \
                 {haproxy_cpu:.0} µs",
                with_lb - without
            ));
        }
    }
    report.note(format!(
        "LB phase machine load: {load_before} before, {} after",
        probe::machine_load()
    ));
}
