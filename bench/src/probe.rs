//! Reading what the processes say about themselves: ZooKeeper's four-letter words (`mntr`, `wchs`),
//! Lathe's `/metrics`, a process's resident memory and the machine's load.

use std::time::{Duration, Instant};

use anyhow::Context;
use lathe_tests::zk::ZkServer;

use crate::stats::Summary;

/// ZooKeeper's own counters, from `mntr`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ZkCounters {
    /// `zk_packets_received`: every request (and ping) the server read.
    pub(crate) packets_received: u64,
    /// `zk_num_alive_connections`.
    pub(crate) alive_connections: u64,
}

pub(crate) fn zk_counters(zk: &ZkServer) -> anyhow::Result<ZkCounters> {
    let answer = zk.four_letter("mntr")?;
    let field = |name: &str| {
        mntr_field(&answer, name).with_context(|| format!("no {name} in mntr: {answer:?}"))
    };
    Ok(ZkCounters {
        packets_received: field("zk_packets_received")?,
        alive_connections: field("zk_num_alive_connections")?,
    })
}

/// Waits (up to `deadline`) until ZooKeeper holds at most `connections` client connections, so
/// that sessions closing in the background do not count in the next measurement.
pub(crate) fn wait_for_connections(zk: &ZkServer, connections: u64, deadline: Duration) {
    let started = Instant::now();
    while started.elapsed() < deadline {
        match zk_counters(zk) {
            Ok(counters) if counters.alive_connections <= connections => return,
            Ok(_) => std::thread::sleep(Duration::from_millis(100)),
            Err(_) => return,
        }
    }
}

fn mntr_field(answer: &str, name: &str) -> Option<u64> {
    answer.lines().find_map(|line| {
        let (key, value) = line.split_once('\t')?;
        (key.trim() == name).then(|| value.trim().parse().ok())?
    })
}

/// What the nodes' `/metrics` say, for deltas over a run.
#[derive(Debug, Clone)]
pub(crate) struct NodeMetrics {
    /// `lathe_zookeeper_requests_total` (every `op`) summed over the nodes.
    pub(crate) zk_requests: f64,
    /// Per node: `lathe_registry_fanout_seconds` sum and count.
    pub(crate) fanout: Vec<(f64, f64)>,
}

impl NodeMetrics {
    /// Per node, the mean `lathe_registry_fanout_seconds` since `before`, in milliseconds.
    pub(crate) fn fanout_mean_ms_since(&self, before: &NodeMetrics) -> Vec<f64> {
        self.fanout
            .iter()
            .zip(&before.fanout)
            .map(|((sum, count), (sum0, count0))| (sum - sum0) * 1000.0 / (count - count0).max(1.0))
            .collect()
    }
}

pub(crate) fn node_metrics(http_addrs: &[String]) -> anyhow::Result<NodeMetrics> {
    let mut metrics = NodeMetrics {
        zk_requests: 0.0,
        fanout: Vec::new(),
    };
    for addr in http_addrs {
        let reply =
            lathe_tests::http::try_get_json(addr, "/metrics").map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            reply.status == 200,
            "GET /metrics on {addr}: {}",
            reply.status
        );
        metrics.zk_requests += metric_sum(&reply.text, "lathe_zookeeper_requests_total");
        metrics.fanout.push((
            metric_sum(&reply.text, "lathe_registry_fanout_seconds_sum"),
            metric_sum(&reply.text, "lathe_registry_fanout_seconds_count"),
        ));
    }
    Ok(metrics)
}

/// The sum of every sample of `metric` in a Prometheus text exposition.
fn metric_sum(text: &str, metric: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The time to overwrite one 4 KiB block and `fdatasync` it, in a file in `dir` (`samples`
/// times): what "synced to disk" costs on this machine, for a log whose space is preallocated.
pub(crate) fn fsync_latency(dir: &std::path::Path, samples: usize) -> anyhow::Result<Summary> {
    use std::io::{Seek, SeekFrom, Write};
    let path = dir.join(format!("lathe-bench-fsync-{}", std::process::id()));
    let mut file = std::fs::File::create(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let block = [7u8; 4096];
    file.write_all(&block)?;
    file.sync_all()?;
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&block)?;
        file.sync_data()?;
        times.push(started.elapsed());
    }
    drop(file);
    std::fs::remove_file(&path).ok();
    Summary::of(times).context("no samples")
}

/// CPU time (user + system) process `pid` has used so far, in milliseconds (`/proc/PID/stat`,
/// 100 ticks a second).
pub(crate) fn cpu_ms(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks * 10.0)
}

/// CPU time (user + system) of this process's children that have been waited for, in
/// milliseconds (`cutime` + `cstime` of `/proc/self/stat`): the CPU of a finished `wrk`.
pub(crate) fn waited_children_cpu_ms() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields.get(13)?.parse::<f64>().ok()? + fields.get(14)?.parse::<f64>().ok()?;
    Some(ticks * 10.0)
}

/// The machine's CPU ticks so far (`/proc/stat`, all CPUs): (busy, total).
pub(crate) fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8) // user nice system idle iowait irq softirq steal
        .filter_map(|field| field.parse().ok())
        .collect();
    if ticks.len() < 8 {
        return None;
    }
    let idle = ticks[3] + ticks[4];
    let total: u64 = ticks.iter().sum();
    Some((total - idle, total))
}

/// How busy the machine's CPUs were between two [`machine_ticks`] readings, in percent.
pub(crate) fn busy_percent(before: (u64, u64), after: (u64, u64)) -> f64 {
    let busy = after.0.saturating_sub(before.0) as f64;
    let total = after.1.saturating_sub(before.1).max(1) as f64;
    busy / total * 100.0
}

/// The process whose command line has `arg` among its arguments (e.g. ZooKeeper's `zoo.cfg`).
pub(crate) fn pid_with_arg(arg: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            cmdline
                .split(|&byte| byte == 0)
                .any(|word| word == arg.as_bytes())
                .then_some(pid)
        })
}

/// `VmRSS` of process `pid`, in MB (10^6 bytes).
pub(crate) fn rss_mb(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))?;
    Ok(kib * 1024.0 / 1e6)
}

/// The 1-, 5- and 15-minute load averages and the number of CPUs: `load 1.20 0.90 0.80 on 2 CPUs`.
pub(crate) fn machine_load() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let averages: Vec<&str> = load.split_whitespace().take(3).collect();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    format!("load {} on {cpus} CPUs", averages.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mntr_fields() {
        let answer = "zk_version\t3.8.0\nzk_packets_received\t1234\nzk_num_alive_connections\t7\n";
        assert_eq!(mntr_field(answer, "zk_packets_received"), Some(1234));
        assert_eq!(mntr_field(answer, "zk_num_alive_connections"), Some(7));
        assert_eq!(mntr_field(answer, "zk_missing"), None);
    }

    #[test]
    fn sums_a_metric_over_its_labels() {
        let text = "# HELP lathe_zookeeper_requests_total x\n\
                    lathe_zookeeper_requests_total{op=\"get\"} 10\n\
                    lathe_zookeeper_requests_total{op=\"set\"} 5\n\
                    lathe_zookeeper_requests_total_other 99\n";
        assert_eq!(metric_sum(text, "lathe_zookeeper_requests_total"), 15.0);
    }
}
