//! The processes of the agent phase: release `lathe-agent` processes ([`AgentProc`]), stopped
//! when dropped. HAProxy is the harness's (`lathe_tests::haproxy::MasterWorker`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long an agent may take to answer `GET /v1/health` (100 start at once on 2 cores).
const AGENT_START: Duration = Duration::from_secs(60);

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
