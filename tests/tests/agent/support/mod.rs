//! Shared pieces of the `agent_*` tests: a real `lathe-agent` process ([`AgentProcess`]), and in
//! the sub-modules real HAProxy and Varnish processes, the seed topology with scaling and a request
//! loop (the TCP proxy that cuts an agent off is the harness's `lathe_tests::proxy`). Every
//! process is stopped when dropped.
#![allow(dead_code, unreachable_pub)] // each test module uses a part; test-only items

pub mod haproxy;
pub mod seed;
pub mod varnish;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lathe_tests::http;
use lathe_tests::node::{free_port, workspace_binary};
use lathe_tests::scenario::metric_value;
use lathe_tests::wait::wait_until;
use serde_json::Value;

/// How long an agent may take to serve its status endpoint.
pub const AGENT_START: Duration = Duration::from_secs(30);

/// The `lathe-agent` binary (`$LATHE_AGENT_BIN`, else next to the test executable).
pub fn agent_binary() -> PathBuf {
    workspace_binary("lathe-agent", "LATHE_AGENT_BIN")
}

/// A file of the repository (`config/agent-templates/haproxy.cfg.j2`).
pub fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

/// A TOML string literal.
pub fn toml_str(value: impl AsRef<str>) -> String {
    Value::String(value.as_ref().to_string()).to_string()
}

/// A running `lathe-agent`; killed when dropped (its log is printed if the test panics).
pub struct AgentProcess {
    pub name: String,
    pub status_addr: String,
    child: Child,
    log: PathBuf,
}

impl AgentProcess {
    /// Writes `config` (which must listen on `status_addr`) to `dir/<name>.toml`, starts the agent
    /// and waits until its status endpoint answers.
    pub fn start(dir: &Path, name: &str, status_addr: &str, config: &str) -> AgentProcess {
        AgentProcess::start_with_args(dir, name, status_addr, config, &[])
    }

    /// [`AgentProcess::start`] with more command line arguments (e.g. `--ca`).
    pub fn start_with_args(
        dir: &Path,
        name: &str,
        status_addr: &str,
        config: &str,
        args: &[&str],
    ) -> AgentProcess {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config).expect("write the agent config");
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).expect("create the agent log");
        let mut command = Command::new(agent_binary());
        command
            .arg("--config")
            .arg(&path)
            .args(args)
            .env("RUST_LOG", "info,lathe_agent=debug")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone the log handle"))
            .stderr(out);
        for (key, _) in std::env::vars() {
            if key.starts_with("LATHE_AGENT_") {
                command.env_remove(key);
            }
        }
        let child = command.spawn().expect("spawn lathe-agent");
        let mut agent = AgentProcess {
            name: name.to_string(),
            status_addr: status_addr.to_string(),
            child,
            log,
        };
        let addr = agent.status_addr.clone();
        wait_until(
            &format!("agent {name} to serve /v1/health"),
            AGENT_START,
            || {
                if let Ok(Some(status)) = agent.child.try_wait() {
                    panic!("agent {name} exited with {status}:\n{}", agent.log_tail(40));
                }
                http::is_healthy(&addr)
            },
        );
        agent
    }

    /// `GET /status`.
    pub fn status(&self) -> Value {
        let reply = http::get_json(&self.status_addr, "/status");
        assert_eq!(reply.status, 200, "GET /status: {}", reply.text);
        reply.body
    }

    /// The status of watch `name`.
    pub fn watch(&self, name: &str) -> Value {
        self.status()["watches"][name].clone()
    }

    /// A metric's value (summed over its labels), 0 when absent.
    pub fn metric(&self, name: &str) -> f64 {
        metric_value(&self.status_addr, name).unwrap_or(0.0)
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- agent {} log ---\n{}\n---",
                self.name,
                self.log_tail(80)
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sum of a metric's series whose labels contain `labels` (e.g. `kind="sse"`), 0 when absent.
pub fn metric_with(addr: &str, name: &str, labels: &str) -> f64 {
    let text = http::try_get_json(addr, "/metrics")
        .map(|r| r.text)
        .unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split('{').next() == Some(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// `127.0.0.1:<free port>`.
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// The `registry = [...]` value for these node addresses.
pub fn registry_list(addrs: &[String]) -> String {
    let quoted: Vec<String> = addrs.iter().map(toml_str).collect();
    format!("[{}]", quoted.join(", "))
}

/// Sends SIGTERM (or another signal) to a process id.
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}
