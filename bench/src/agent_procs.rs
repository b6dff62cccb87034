//! The processes of the agent phase: release `lathe-agent` processes ([`AgentProc`]) and a real
//! HAProxy 2.6 in master-worker mode ([`MasterWorker`]) whose admin socket tells which servers a
//! backend really has. Both are stopped when dropped.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long an agent may take to answer `GET /v1/health` (100 start at once on 2 cores).
const AGENT_START: Duration = Duration::from_secs(60);
/// How long HAProxy may take to answer on its admin socket.
const HAPROXY_START: Duration = Duration::from_secs(30);

/// The `lathe-agent` binary: `$LATHE_AGENT_BIN` (the Makefile sets it), else beside the bench.
pub(crate) fn agent_binary() -> PathBuf {
    lathe_tests::node::workspace_binary("lathe-agent", "LATHE_AGENT_BIN")
}

/// A TOML string literal.
pub(crate) fn toml_str(value: impl AsRef<str>) -> String {
    serde_json::Value::String(value.as_ref().to_string()).to_string()
}

/// A running `lathe-agent`; killed when dropped.
pub(crate) struct AgentProc {
    pub(crate) status_addr: String,
    child: Child,
    log: PathBuf,
}

impl AgentProc {
    /// Writes `config` to `dir/<name>.toml` and starts the agent on it, without waiting.
    pub(crate) fn spawn(
        binary: &Path,
        dir: &Path,
        name: &str,
        status_addr: &str,
        config: &str,
    ) -> anyhow::Result<AgentProc> {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config).context("cannot write an agent config")?;
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).context("cannot create an agent log")?;
        let mut command = Command::new(binary);
        command
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        for (key, _) in std::env::vars() {
            if key.starts_with("LATHE_AGENT_") {
                command.env_remove(key);
            }
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot run {}", binary.display()))?;
        Ok(AgentProc {
            status_addr: status_addr.to_string(),
            child,
            log,
        })
    }

    /// Waits until the agent's status endpoint answers; `Err` with its log if it exits first.
    pub(crate) fn wait_healthy(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        while started.elapsed() < AGENT_START {
            if let Some(status) = self.child.try_wait()? {
                bail!("lathe-agent exited with {status}: {}", self.log_tail());
            }
            if lathe_tests::http::is_healthy(&self.status_addr) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "lathe-agent did not serve {} within {AGENT_START:?}: {}",
            self.status_addr,
            self.log_tail()
        )
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// HAProxy as the agent expects it: `haproxy -W -f CFG -p PID -S MASTER,level,admin`.
pub(crate) struct MasterWorker {
    child: Child,
    admin: PathBuf,
    master: PathBuf,
    log: PathBuf,
}

impl MasterWorker {
    /// Starts HAProxy on `config` (whose stats socket is `admin`) and waits until it answers.
    pub(crate) fn start(config: &Path, admin: &Path, dir: &Path) -> anyhow::Result<MasterWorker> {
        let master = dir.join("master.sock");
        let log = dir.join("haproxy.log");
        let out = File::create(&log).context("cannot create the haproxy log")?;
        let child = Command::new("haproxy")
            .arg("-W")
            .arg("-f")
            .arg(config)
            .arg("-p")
            .arg(dir.join("haproxy.pid"))
            .arg("-S")
            .arg(format!("{},level,admin", master.display()))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("cannot start haproxy (Debian package haproxy)")?;
        let mut haproxy = MasterWorker {
            child,
            admin: admin.to_path_buf(),
            master,
            log,
        };
        let started = Instant::now();
        while command(&haproxy.admin, "show info").is_err() {
            if let Some(status) = haproxy.child.try_wait()? {
                let log = std::fs::read_to_string(&haproxy.log).unwrap_or_default();
                bail!("haproxy exited with {status}: {}", log.trim());
            }
            if started.elapsed() > HAPROXY_START {
                bail!("haproxy did not answer on its admin socket within {HAPROXY_START:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(haproxy)
    }

    /// `HOST:PORT` of every server of `backend` not in maintenance (`show servers state`).
    pub(crate) fn serving(&self, backend: &str) -> Result<BTreeSet<String>, String> {
        let answer = command(&self.admin, &format!("show servers state {backend}"))?;
        let header = answer
            .lines()
            .find_map(|line| line.strip_prefix("# "))
            .ok_or_else(|| format!("unexpected answer: {answer}"))?;
        let columns: Vec<&str> = header.split_whitespace().collect();
        let at = |name: &str| {
            columns
                .iter()
                .position(|column| *column == name)
                .ok_or_else(|| format!("no column {name} in {header}"))
        };
        let (addr, port, admin) = (at("srv_addr")?, at("srv_port")?, at("srv_admin_state")?);
        Ok(answer
            .lines()
            .filter(|line| !line.starts_with('#'))
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .filter(|fields| fields.len() == columns.len())
            .filter(|fields| fields[admin].parse::<u32>().is_ok_and(|a| a & 0x23 == 0))
            .map(|fields| format!("{}:{}", fields[addr], fields[port]))
            .collect())
    }

    /// How many times the master reloaded (`show proc` on the master socket).
    pub(crate) fn reloads(&self) -> Option<u64> {
        let answer = command(&self.master, "show proc").ok()?;
        answer
            .lines()
            .find(|line| line.contains("master"))
            .and_then(|line| line.split_whitespace().nth(2))
            .and_then(|reloads| reloads.parse().ok())
    }
}

impl Drop for MasterWorker {
    /// SIGTERM (the master stops its workers), SIGKILL if it is still there after a while.
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        Command::new("kill").arg("-TERM").arg(&pid).status().ok();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// One command on a HAProxy CLI socket.
fn command(socket: &Path, line: &str) -> Result<String, String> {
    let mut stream =
        UnixStream::connect(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(format!("{line}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    stream
        .shutdown(std::net::Shutdown::Write)
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| e.to_string())?;
    Ok(answer)
}
