//! `make bench`: Lathe's benchmark. Starts a real ZooKeeper and real `lathe-node` processes on
//! loopback, measures, stops them, and prints a markdown table with the goals of issue 2 beside
//! the numbers.
//!
//! ```text
//! lathe-bench [--quick] [--json FILE]
//! ```
//!
//! - ZooKeeper mode, 3 nodes + 1 ZooKeeper: idle RSS, write latency, read throughput (1 node and
//!   3 nodes), fan-out to 10 / 100 / 1,000 SSE subscribers, and the same fan-out the naive way
//!   (a ZooKeeper session and watch per subscriber).
//! - Embedded mode, 1 node, no ZooKeeper: idle RSS and write latency (every write synced to disk).
//!
//! The node binary is `$LATHE_NODE_BIN` (the Makefile points it at the release build). A
//! measurement that cannot be made is a row saying why. `--quick` is a smaller run, for trying the
//! bench out; `--json FILE` also writes the report as JSON.

mod fanout;
mod naive;
mod phases;
mod probe;
mod report;
mod rest;
mod sse;
mod stats;
mod summary;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

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
        }
    }
}

struct Options {
    quick: bool,
    json: Option<PathBuf>,
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        quick: false,
        json: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--json" => {
                let file = args.next().ok_or("--json needs a file name")?;
                options.json = Some(PathBuf::from(file));
            }
            "-h" | "--help" => return Err("usage: lathe-bench [--quick] [--json FILE]".into()),
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(options)
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("lathe-bench: {message}");
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
    phases::zookeeper_mode(&runtime, &plan, &mut report);
    phases::embedded_mode(&plan, &mut report);
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
