//! `make bench`: Lathe's benchmark. Starts a real ZooKeeper and real `lathe-node` processes on
//! loopback, measures, stops them, and prints a markdown table with the goals of issues 2 to 5
//! beside the numbers.
//!
//! ```text
//! lathe-bench [--quick] [--json FILE] [--only PHASE[,PHASE...]]
//! ```
//!
//! The phases, in the order they run:
//! - `zookeeper`: 3 nodes + 1 ZooKeeper: idle RSS, write latency, read throughput (1 node and
//!   3 nodes), fan-out to 10 / 100 / 1,000 SSE subscribers, and the same fan-out the naive way
//!   (a ZooKeeper session and watch per subscriber).
//! - `embedded`: 1 node, no ZooKeeper: idle RSS and write latency (every write synced to disk).
//! - `lb`: the seed's topology on 3 nodes + ZooKeeper; `wrk` through one Lathe LB instance and
//!   through HAProxy 2.6 in front of the same front pages, side by side.
//! - `placement`: instances placed per second, 1,000 instances on 50 simulated nodes.
//! - `failover`: the seed's topology on 3 nodes + ZooKeeper; SIGKILL a node, time until every
//!   instance it ran serves elsewhere; restart it, let the cluster settle, again (non-leaders,
//!   then the scheduler leader).
//! - `crash`: 1 node with `--enable-chaos`; kill a task instance's actor many times; the node's
//!   `lathe_task_restart_seconds` per restart, and the time until it answers again over HTTP.
//! - `kafka`: 1 Kafka-protocol broker (`noida-db`); flow throughput and emit → handler latency
//!   through Lathe's Kafka layer and through raw rdkafka; state puts/s without and with the
//!   changelog; restore of 1M keys from a changelog.
//! - `agent`: 1 node; a registry change → HAProxy serving the new servers through `lathe-agent`;
//!   registry requests per change with 100 agents against one blocking query per dependency.
//! - `pressure`: the seed on 3 nodes + ZooKeeper; 10,000 idle half-open connections held against
//!   the REST port, then an LB, while new connections probe them; node RSS after 100 × 1 MiB PUTs.
//!
//! The node binary is `$LATHE_NODE_BIN`, the agent's `$LATHE_AGENT_BIN` (the Makefile points them
//! at the release builds); `wrk` and `haproxy` come from Debian. A measurement that cannot be made
//! is a row saying why. `--quick` is a smaller run, for trying the bench out; `--json FILE` also
//! writes the report as JSON; `--only lb` runs one phase.

mod agent;
mod agent_follow;
mod agent_load;
mod agent_procs;
mod crash;
mod failover;
mod fanout;
mod haproxy;
mod kafka;
mod lb;
mod naive;
mod phases;
mod placement;
mod pressure;
mod probe;
mod report;
mod rest;
mod seed;
mod sse;
mod stats;
mod summary;
mod wrk;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use report::Report;

/// How big a run is.
pub(crate) struct Plan {
    /// How long a node sits idle after start before its RSS is read.
    pub(crate) idle: Duration,
    pub(crate) warmup_writes: usize,
    pub(crate) writes: usize,
    /// A write-latency run stops early after this long.
    pub(crate) write_budget: Duration,
    pub(crate) read_threads: usize,
    pub(crate) read_duration: Duration,
    /// Subscriber counts of the fan-out runs; the largest is the one the goal is about.
    pub(crate) subscribers: Vec<usize>,
    pub(crate) lathe_changes: usize,
    pub(crate) naive_changes: usize,
    /// The untimed `wrk` run against each proxy before the timed ones.
    pub(crate) lb_warmup: Duration,
    /// One timed `wrk` run.
    pub(crate) lb_duration: Duration,
    /// Timed runs per proxy.
    pub(crate) lb_runs: usize,
    pub(crate) placement_runs: usize,
    /// Failover trials killing a non-leader node, and killing the scheduler leader.
    pub(crate) failover_trials: usize,
    pub(crate) failover_leader_trials: usize,
    /// Timed kills of a task instance.
    pub(crate) crash_kills: usize,
    /// Registry changes followed into HAProxy by one agent.
    pub(crate) agent_changes: usize,
    /// Agents (and blocking-query clients) watching, and the changes they watch.
    pub(crate) agent_watchers: usize,
    pub(crate) agent_load_changes: usize,
    /// Flow messages per way (Lathe, raw rdkafka); state puts per run; keys restored.
    pub(crate) kafka_messages: usize,
    /// Idle half-open connections held against one port, and the probes sent meanwhile.
    pub(crate) pressure_connections: usize,
    pub(crate) pressure_probes: usize,
    pub(crate) state_puts: usize,
    pub(crate) restore_keys: usize,
}

impl Plan {
    fn full() -> Plan {
        Plan {
            idle: Duration::from_secs(3),
            warmup_writes: 100,
            writes: 2_000,
            write_budget: Duration::from_secs(40),
            read_threads: 16,
            read_duration: Duration::from_secs(4),
            subscribers: vec![10, 100, 1_000],
            lathe_changes: 200,
            naive_changes: 100,
            lb_warmup: Duration::from_secs(2),
            lb_duration: Duration::from_secs(10),
            lb_runs: 2,
            placement_runs: 5,
            failover_trials: 10,
            failover_leader_trials: 3,
            crash_kills: 100,
            agent_changes: 40,
            agent_watchers: 100,
            agent_load_changes: 20,
            kafka_messages: 20_000,
            pressure_connections: 10_000,
            pressure_probes: 50,
            state_puts: 200_000,
            restore_keys: 1_000_000,
        }
    }

    fn quick() -> Plan {
        Plan {
            idle: Duration::from_secs(1),
            warmup_writes: 10,
            writes: 200,
            write_budget: Duration::from_secs(10),
            read_threads: 4,
            read_duration: Duration::from_secs(1),
            subscribers: vec![10, 100],
            lathe_changes: 20,
            naive_changes: 10,
            lb_warmup: Duration::from_secs(1),
            lb_duration: Duration::from_secs(3),
            lb_runs: 1,
            placement_runs: 3,
            failover_trials: 2,
            failover_leader_trials: 1,
            crash_kills: 20,
            agent_changes: 10,
            agent_watchers: 20,
            agent_load_changes: 5,
            kafka_messages: 2_000,
            pressure_connections: 2_000,
            pressure_probes: 10,
            state_puts: 20_000,
            restore_keys: 50_000,
        }
    }
}

/// A part of the bench that can run alone (`--only NAME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Zookeeper,
    Embedded,
    Lb,
    Placement,
    Failover,
    Crash,
    Agent,
    Kafka,
    Pressure,
}

impl Phase {
    const ALL: [(Phase, &'static str); 9] = [
        (Phase::Zookeeper, "zookeeper"),
        (Phase::Embedded, "embedded"),
        (Phase::Lb, "lb"),
        (Phase::Placement, "placement"),
        (Phase::Failover, "failover"),
        (Phase::Crash, "crash"),
        (Phase::Agent, "agent"),
        (Phase::Kafka, "kafka"),
        (Phase::Pressure, "pressure"),
    ];

    fn parse_list(list: &str) -> anyhow::Result<Vec<Phase>> {
        list.split(',')
            .map(|name| {
                Phase::ALL
                    .iter()
                    .find(|(_, known)| *known == name.trim())
                    .map(|(phase, _)| *phase)
                    .ok_or_else(|| {
                        anyhow::anyhow!("unknown phase {name:?} (phases: {})", Phase::names())
                    })
            })
            .collect()
    }

    fn names() -> String {
        Phase::ALL.map(|(_, name)| name).join(", ")
    }
}

struct Options {
    quick: bool,
    json: Option<PathBuf>,
    phases: Vec<Phase>,
}

const USAGE: &str = "usage: lathe-bench [--quick] [--json FILE] [--only PHASE[,PHASE...]]";

fn parse_args() -> anyhow::Result<Options> {
    let mut options = Options {
        quick: false,
        json: None,
        phases: Phase::ALL.map(|(phase, _)| phase).to_vec(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--json" => {
                let file = args.next().context("--json needs a file name")?;
                options.json = Some(PathBuf::from(file));
            }
            "--only" => {
                let list = args.next().context("--only needs phase names")?;
                options.phases = Phase::parse_list(&list)?;
            }
            "-h" | "--help" => bail!("{USAGE}\nphases: {}", Phase::names()),
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(options)
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("lathe-bench: {message:#}");
            return ExitCode::from(2);
        }
    };
    let plan = if options.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    let started = *STARTED.get_or_init(Instant::now);
    let load_at_start = probe::machine_load();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("lathe-bench: cannot start a tokio runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut report = Report::default();
    let runs = |phase| options.phases.contains(&phase);
    if runs(Phase::Zookeeper) {
        phases::zookeeper_mode(&runtime, &plan, &mut report);
    }
    if runs(Phase::Embedded) {
        phases::embedded_mode(&plan, &mut report);
    }
    if runs(Phase::Lb) {
        lb::lb_vs_haproxy(&plan, &mut report);
    }
    if runs(Phase::Placement) {
        placement::placement_rate(&plan, &mut report);
    }
    if runs(Phase::Failover) {
        failover::failover(&plan, &mut report);
    }
    if runs(Phase::Crash) {
        crash::crash_restart(&plan, &mut report);
    }
    if runs(Phase::Agent) {
        agent::agent_phase(&plan, &mut report);
    }
    if runs(Phase::Kafka) {
        kafka::kafka_phase(&runtime, &plan, &mut report);
    }
    if runs(Phase::Pressure) {
        pressure::pressure_phase(&plan, &mut report);
    }
    report.note(format!(
        "machine: {load_at_start} at the start, {} at the end; the bench took {:.0} s",
        probe::machine_load(),
        started.elapsed().as_secs_f64()
    ));
    println!("{}", report.markdown());
    if let Some(path) = options.json {
        if let Err(err) = report.write_json(&path) {
            eprintln!("lathe-bench: {err:#}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// Runs one step; an error, or a panic (the harness panics when a process does not start), becomes
/// `Err(why)`, for a row saying why the measurement is missing.
pub(crate) fn attempt<T>(step: impl FnOnce() -> anyhow::Result<T>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(step)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(format!("{err:#}")),
        Err(panic) => Err(panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panicked".to_string())),
    }
}

/// When the bench started, for progress lines.
static STARTED: OnceLock<Instant> = OnceLock::new();

/// A progress line on stderr (the table goes to stdout).
pub(crate) fn progress(what: &str) {
    let started = STARTED.get_or_init(Instant::now);
    eprintln!(
        "lathe-bench [{:>5.1} s] {what}",
        started.elapsed().as_secs_f64()
    );
}

#[cfg(test)]
mod tests {
    use super::Phase;

    #[test]
    fn phases_by_name() {
        assert_eq!(Phase::parse_list("lb").unwrap(), vec![Phase::Lb]);
        assert_eq!(
            Phase::parse_list("placement, zookeeper").unwrap(),
            vec![Phase::Placement, Phase::Zookeeper]
        );
        let error = Phase::parse_list("lb,nope").unwrap_err().to_string();
        assert!(
            error.contains("\"nope\"") && error.contains("embedded"),
            "{error}"
        );
    }
}
