//! The reference load balancer: Debian's HAProxy 2.6 started as a plain foreground process on a
//! free loopback port, from a configuration written into a temporary directory, balancing
//! round-robin over the same front-page instances as the Lathe LB, weighted like its
//! `backend_distribution`. Stopped (SIGKILL) when dropped.

use std::fmt::Write as _;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long HAProxy may take to answer through its backend after it is spawned.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// HAProxy's largest server weight.
const MAX_WEIGHT: u32 = 256;

/// One group of servers that shares `weight` of the traffic evenly.
#[derive(Debug, Clone)]
pub(crate) struct BackendGroup {
    pub(crate) name: String,
    pub(crate) weight: u32,
    /// `HOST:PORT` of each instance.
    pub(crate) servers: Vec<String>,
}

pub(crate) struct Haproxy {
    child: Child,
    port: u16,
    /// Holds the configuration and the log until the process is gone.
    dir: tempfile::TempDir,
}

impl Haproxy {
    /// Writes the configuration (`nbthread threads`), checks it with `haproxy -c`, starts
    /// HAProxy and waits until `GET check_path` through it answers 200.
    pub(crate) fn start(
        groups: &[BackendGroup],
        check_path: &str,
        threads: usize,
    ) -> anyhow::Result<Haproxy> {
        let dir = tempfile::Builder::new()
            .prefix("lathe-bench-haproxy-")
            .tempdir()
            .context("cannot create a directory for haproxy")?;
        let port = lathe_tests::node::free_port();
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(&config, configuration(port, threads, groups)?)
            .context("cannot write haproxy.cfg")?;
        let check = Command::new("haproxy")
            .arg("-c")
            .arg("-f")
            .arg(&config)
            .output()
            .map_err(|err| match err.kind() {
                std::io::ErrorKind::NotFound => anyhow::anyhow!(
                    "haproxy is not installed (Debian package haproxy; make bench installs it)"
                ),
                _ => anyhow::Error::new(err).context("cannot run haproxy -c"),
            })?;
        if !check.status.success() {
            bail!(
                "haproxy -c refused the configuration: {}",
                String::from_utf8_lossy(&check.stderr).trim()
            );
        }
        let log = File::create(dir.path().join("haproxy.log")).context("cannot create the log")?;
        let child = Command::new("haproxy")
            .arg("-db") // foreground, no daemon
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start haproxy")?;
        let mut haproxy = Haproxy { child, port, dir };
        haproxy.wait_serving(check_path)?;
        Ok(haproxy)
    }

    pub(crate) fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `HAProxy 2.6.12-1+deb12u4`, from `haproxy -v`.
    pub(crate) fn version() -> Option<String> {
        let output = Command::new("haproxy").arg("-v").output().ok()?;
        let text = String::from_utf8_lossy(&output.stdout);
        let version = text.lines().next()?.split_whitespace().nth(2)?;
        Some(format!("HAProxy {version}"))
    }

    fn wait_serving(&mut self, path: &str) -> anyhow::Result<()> {
        let url = format!("http://{}{path}", self.addr());
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(2))
            .build();
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("haproxy exited with {status}: {}", self.log_tail());
            }
            let last = match agent.get(&url).call() {
                Ok(response) if response.status() == 200 => return Ok(()),
                Ok(response) => format!("answered {}", response.status()),
                Err(err) => err.to_string(),
            };
            if started.elapsed() > START_DEADLINE {
                bail!("haproxy: GET {url} {last} after {START_DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(10)..].join(" / ")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("haproxy.log")
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The whole `haproxy.cfg`: one frontend on `127.0.0.1:port`, one round-robin backend over every
/// group's servers, keep-alive on both sides and server connections shared (`http-reuse always`).
fn configuration(port: u16, threads: usize, groups: &[BackendGroup]) -> anyhow::Result<String> {
    let weights = server_weights(groups)?;
    let mut cfg = format!(
        "global\n\
         \x20   nbthread {threads}\n\
         \x20   maxconn 4096\n\
         defaults\n\
         \x20   mode http\n\
         \x20   option http-keep-alive\n\
         \x20   http-reuse always\n\
         \x20   timeout connect 1s\n\
         \x20   timeout client 30s\n\
         \x20   timeout server 30s\n\
         \x20   timeout http-keep-alive 30s\n\
         frontend bench\n\
         \x20   bind 127.0.0.1:{port}\n\
         \x20   default_backend frontpages\n\
         backend frontpages\n\
         \x20   balance roundrobin\n"
    );
    for (group, weight) in groups.iter().zip(weights) {
        for (i, server) in group.servers.iter().enumerate() {
            let name = format!("{}-{i}", group.name.replace(['.', '/'], "_"));
            writeln!(cfg, "    server {name} {server} weight {weight}")?;
        }
    }
    Ok(cfg)
}

/// One HAProxy weight per group, for each of its servers, so that the group as a whole gets its
/// share: `weight / servers` per server, scaled by the smallest factor that makes every one a
/// whole number within HAProxy's 1..=256 (90/10 over 5 + 5 servers → 18 and 2), else rounded.
pub(crate) fn server_weights(groups: &[BackendGroup]) -> anyhow::Result<Vec<u32>> {
    let shares: Vec<(u32, u32)> = groups
        .iter()
        .map(|group| (group.weight, group.servers.len() as u32))
        .collect();
    if shares
        .iter()
        .any(|&(weight, servers)| weight == 0 || servers == 0)
    {
        bail!("every backend group needs a weight and at least one server: {groups:?}");
    }
    for factor in 1..=MAX_WEIGHT {
        let exact = shares
            .iter()
            .all(|&(weight, servers)| (weight * factor).is_multiple_of(servers));
        let weights: Vec<u32> = shares
            .iter()
            .map(|&(weight, servers)| weight * factor / servers)
            .collect();
        if exact && weights.iter().all(|&w| w <= MAX_WEIGHT) {
            return Ok(weights);
        }
    }
    let per_server = |&(weight, servers): &(u32, u32)| f64::from(weight) / f64::from(servers);
    let largest = shares.iter().map(per_server).fold(0.0, f64::max);
    Ok(shares
        .iter()
        .map(|share| (per_server(share) / largest * f64::from(MAX_WEIGHT)).round() as u32)
        .map(|weight| weight.max(1))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str, weight: u32, servers: usize) -> BackendGroup {
        BackendGroup {
            name: name.to_string(),
            weight,
            servers: (0..servers)
                .map(|i| format!("127.0.0.1:{}", 8000 + i))
                .collect(),
        }
    }

    #[test]
    fn weights_keep_the_group_shares() {
        let seed = [group("a", 90, 5), group("b", 10, 5)];
        assert_eq!(server_weights(&seed).unwrap(), vec![18, 2]);
        let uneven = [group("a", 1, 3), group("b", 1, 2)];
        assert_eq!(server_weights(&uneven).unwrap(), vec![2, 3]);
        let wide = [group("a", 1000, 1), group("b", 1, 7)];
        assert_eq!(server_weights(&wide).unwrap(), vec![256, 1]);
        assert!(server_weights(&[group("a", 0, 1)]).is_err());
        assert!(server_weights(&[group("a", 1, 0)]).is_err());
    }

    #[test]
    fn the_configuration_lists_every_server() {
        let cfg = configuration(
            9000,
            2,
            &[group("task.http.fp.v1", 90, 2), group("v2", 10, 1)],
        )
        .unwrap();
        assert!(cfg.contains("bind 127.0.0.1:9000\n"), "{cfg}");
        assert!(cfg.contains("    nbthread 2\n"), "{cfg}");
        assert!(cfg.contains("    server task_http_fp_v1-1 127.0.0.1:8001 weight 45\n"));
        assert!(cfg.contains("    server v2-0 127.0.0.1:8000 weight 10\n"));
        for line in [
            "balance roundrobin",
            "option http-keep-alive",
            "http-reuse always",
        ] {
            assert!(cfg.contains(line), "{line}: {cfg}");
        }
    }
}
