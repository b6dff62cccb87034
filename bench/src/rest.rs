//! REST workloads over keep-alive connections: sequential `PUT /v1/kv/...` latency and
//! `GET /v1/kv/...` throughput with concurrent clients.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::stats::Summary;

/// One request's limit (a bench, not a test: generous).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A keep-alive HTTP client for one thread.
pub(crate) fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(REQUEST_TIMEOUT)
        .max_idle_connections_per_host(4)
        .build()
}

/// `PUT /v1/kv/{key}` with a JSON body; `Err` with the status and body unless it answers 200.
pub(crate) fn put(agent: &ureq::Agent, addr: &str, key: &str, body: &str) -> anyhow::Result<()> {
    let url = format!("http://{addr}/v1/kv/{key}");
    match agent
        .put(&url)
        .set("Content-Type", "application/json")
        .send_string(body)
    {
        Ok(response) => {
            response.into_string().ok(); // read to the end so the connection is reused
            Ok(())
        }
        Err(ureq::Error::Status(status, response)) => {
            let text = response.into_string().unwrap_or_default();
            bail!("PUT {url} answered {status}: {}", text.trim())
        }
        Err(err) => Err(err).with_context(|| format!("PUT {url} failed")),
    }
}

/// Sequential writes: what a timed run gave.
#[derive(Debug)]
pub(crate) struct WriteRun {
    pub(crate) latency: Option<Summary>,
    pub(crate) errors: usize,
    pub(crate) first_error: Option<String>,
}

/// `warmup` untimed writes, then up to `writes` timed ones (stopping early after `budget`), one at
/// a time over one keep-alive connection, to 100 keys under `/bench/write`.
pub(crate) fn write_latency(
    addr: &str,
    warmup: usize,
    writes: usize,
    budget: Duration,
) -> anyhow::Result<WriteRun> {
    let agent = agent();
    for i in 0..warmup {
        put(&agent, addr, &write_key(i), &i.to_string()).context("warm-up write failed")?;
    }
    let started = Instant::now();
    let mut samples = Vec::with_capacity(writes);
    let (mut errors, mut first_error) = (0, None);
    for i in 0..writes {
        if started.elapsed() > budget {
            break;
        }
        let sent = Instant::now();
        match put(&agent, addr, &write_key(i), &format!("{{\"i\":{i}}}")) {
            Ok(()) => samples.push(sent.elapsed()),
            Err(err) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("{err:#}"));
            }
        }
    }
    Ok(WriteRun {
        latency: Summary::of(samples),
        errors,
        first_error,
    })
}

fn write_key(i: usize) -> String {
    format!("bench/write/k{}", i % 100)
}

/// Concurrent reads: how many answered 200, and how long the run took.
#[derive(Debug)]
pub(crate) struct ReadRun {
    pub(crate) ok: u64,
    /// Per node (in the order of the addresses), the reads that answered 200.
    pub(crate) ok_per_node: Vec<u64>,
    pub(crate) errors: u64,
    pub(crate) elapsed: Duration,
}

impl ReadRun {
    pub(crate) fn per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

/// `threads` clients, each with its own keep-alive connection to `addrs[thread % addrs.len()]`,
/// reading `key` in a loop for `duration`.
pub(crate) fn read_throughput(
    addrs: &[String],
    key: &str,
    threads: usize,
    duration: Duration,
) -> anyhow::Result<ReadRun> {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|thread| {
            let url = format!("http://{}/v1/kv/{key}", addrs[thread % addrs.len()]);
            let stop = stop.clone();
            std::thread::spawn(move || read_loop(&url, &stop))
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let mut run = ReadRun {
        ok: 0,
        ok_per_node: vec![0; addrs.len()],
        errors: 0,
        elapsed: Duration::ZERO,
    };
    for (thread, worker) in workers.into_iter().enumerate() {
        let (ok, errors) = worker
            .join()
            .map_err(|_| anyhow::anyhow!("a reader thread panicked"))?;
        run.ok += ok;
        run.ok_per_node[thread % addrs.len()] += ok;
        run.errors += errors;
    }
    run.elapsed = started.elapsed();
    Ok(run)
}

fn read_loop(url: &str, stop: &AtomicBool) -> (u64, u64) {
    let agent = agent();
    let (mut ok, mut errors) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        let answered = agent.get(url).call().map(|response| response.into_string());
        match answered {
            Ok(Ok(_)) => ok += 1,
            Ok(Err(_)) | Err(_) => errors += 1,
        }
    }
    (ok, errors)
}
