//! The load generator of the LB phase: runs `wrk --latency` (Debian's `wrk`) as a child process
//! and reads its report: requests per second, p50 / p99 / max latency, errors.

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;

/// One `wrk` invocation's shape: the same for every target, so the comparison is fair.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load {
    pub(crate) threads: usize,
    pub(crate) connections: usize,
    pub(crate) duration: Duration,
}

impl Load {
    /// The command line, as shown in the report: `wrk -t2 -c32 -d10s --latency URL`.
    pub(crate) fn command(&self, url: &str) -> String {
        format!("wrk {} {url}", self.args().join(" "))
    }

    fn args(&self) -> Vec<String> {
        vec![
            format!("-t{}", self.threads),
            format!("-c{}", self.connections),
            format!("-d{}s", self.duration.as_secs().max(1)),
            "--latency".to_string(),
        ]
    }
}

/// What one `wrk` run reported.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct WrkRun {
    pub(crate) requests: u64,
    pub(crate) requests_per_second: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
    /// connect + read + write + timeout errors.
    pub(crate) socket_errors: u64,
    /// Responses that were not 2xx or 3xx.
    pub(crate) non_2xx: u64,
}

impl WrkRun {
    pub(crate) fn errors(&self) -> u64 {
        self.socket_errors + self.non_2xx
    }
}

/// Runs `wrk` with `load` against `url` to completion and parses its report.
pub(crate) fn run(load: &Load, url: &str) -> anyhow::Result<WrkRun> {
    let output = Command::new("wrk")
        .args(load.args())
        .arg(url)
        .output()
        .map_err(|err| match err.kind() {
            std::io::ErrorKind::NotFound => {
                anyhow::anyhow!("wrk is not installed (Debian package wrk; make bench installs it)")
            }
            _ => anyhow::Error::new(err).context("cannot run wrk"),
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!(
            "wrk exited with {}: {}{}",
            output.status,
            stdout.trim(),
            stderr.trim()
        );
    }
    parse(&stdout).with_context(|| format!("cannot read wrk's report: {stdout:?}"))
}

/// Reads the report `wrk --latency` prints.
pub(crate) fn parse(report: &str) -> anyhow::Result<WrkRun> {
    let mut run = WrkRun {
        requests: 0,
        requests_per_second: f64::NAN,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        max_ms: f64::NAN,
        socket_errors: 0,
        non_2xx: 0,
    };
    for line in report.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Latency", _avg, _stdev, max, ..] => run.max_ms = duration_ms(max).unwrap_or(f64::NAN),
            ["50%", value] => run.p50_ms = duration_ms(value).context("bad p50")?,
            ["99%", value] => run.p99_ms = duration_ms(value).context("bad p99")?,
            ["Requests/sec:", value] => run.requests_per_second = value.parse()?,
            [count, "requests", "in", ..] => run.requests = count.parse()?,
            ["Non-2xx", "or", "3xx", "responses:", count] => run.non_2xx = count.parse()?,
            ["Socket", "errors:", rest @ ..] => {
                run.socket_errors = rest
                    .iter()
                    .filter_map(|word| word.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
            }
            _ => {}
        }
    }
    for (name, value) in [
        ("Requests/sec", run.requests_per_second),
        ("the 50% latency", run.p50_ms),
        ("the 99% latency", run.p99_ms),
    ] {
        if value.is_nan() {
            bail!("no {name} line");
        }
    }
    Ok(run)
}

/// `850.00us`, `1.23ms`, `1.02s`, `2.00m` → milliseconds.
fn duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1_000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return None,
    };
    Some(number * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 10s test @ http://127.0.0.1:41234/get/index
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.05ms    1.10ms  41.27ms   88.12%
    Req/Sec     8.01k   512.33     9.10k    71.00%
  Latency Distribution
     50%  850.00us
     75%    2.31ms
     90%    3.05ms
     99%    1.02s
  159321 requests in 10.00s, 17.93MB read
  Socket errors: connect 0, read 2, write 1, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:  15929.77
Transfer/sec:      1.79MB
";

    #[test]
    fn reads_a_latency_report() {
        let run = parse(REPORT).unwrap();
        assert_eq!(run.requests, 159_321);
        assert_eq!(run.requests_per_second, 15_929.77);
        assert!((run.p50_ms - 0.85).abs() < 1e-9);
        assert_eq!((run.p99_ms, run.max_ms), (1_020.0, 41.27));
        assert_eq!((run.socket_errors, run.non_2xx, run.errors()), (6, 7, 13));
    }

    #[test]
    fn a_report_without_latencies_is_refused() {
        let cut: String = REPORT
            .lines()
            .filter(|line| !line.contains("99%"))
            .map(|line| format!("{line}\n"))
            .collect();
        assert!(parse(&cut).is_err());
        assert!(parse("unable to connect to 127.0.0.1:1 Connection refused").is_err());
    }

    #[test]
    fn units() {
        assert_eq!(duration_ms("2.00m"), Some(120_000.0));
        assert_eq!(duration_ms("12ms"), Some(12.0));
        assert_eq!(duration_ms("12"), None);
        assert_eq!(duration_ms("3.0xs"), None);
    }

    #[test]
    fn the_command_line() {
        let load = Load {
            threads: 2,
            connections: 32,
            duration: Duration::from_secs(10),
        };
        assert_eq!(
            load.command("http://h/get/index"),
            "wrk -t2 -c32 -d10s --latency http://h/get/index"
        );
    }
}
