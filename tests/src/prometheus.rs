//! A real Prometheus (Debian's `prometheus` 2.42) for tests: the shipped `config/prometheus/`
//! rendered for a cluster's service discovery with short intervals, started on a free loopback
//! port, queried through its HTTP API, stopped (SIGTERM) when dropped. Also the shipped files'
//! paths and `promtool`.
//!
//! ```no_run
//! use lathe_tests::prometheus::PrometheusServer;
//!
//! let prometheus = PrometheusServer::start("127.0.0.1:7500").unwrap();
//! let up = prometheus.query("up").unwrap();
//! ```

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use rustix::process::{kill_process, Pid, Signal};
use serde_json::Value;

use crate::node::free_port;
use crate::wait::{try_wait_until, wait_until};

/// Where Debian keeps Prometheus's console library (`prom.lib`, `menu.lib`).
pub const CONSOLE_LIBRARIES: [&str; 3] = [
    "/etc/prometheus/console_libraries",
    "/usr/share/prometheus/console_libraries",
    "/usr/share/doc/prometheus/examples/console_libraries",
];

/// `config/prometheus` of this checkout.
pub fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/prometheus")
}

/// `config/grafana/lathe.json` of this checkout.
pub fn grafana_dashboard() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/grafana/lathe.json")
}

/// Runs `promtool ARGS` in `config/prometheus/rules`.
pub fn promtool(args: &[&str]) -> Output {
    Command::new("promtool")
        .args(args)
        .current_dir(config_dir().join("rules"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run promtool (apt-get install prometheus): {e}"))
}

/// A Prometheus process scraping one cluster.
pub struct PrometheusServer {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl PrometheusServer {
    /// Starts Prometheus with `config/prometheus/prometheus.yml` filled in for the node whose
    /// REST API is `node_addr`: scrape, rule evaluation and target refresh every second.
    pub fn start(node_addr: &str) -> anyhow::Result<PrometheusServer> {
        let dir = tempfile::tempdir()?;
        let config_dir = config_dir().canonicalize()?;
        let template = std::fs::read_to_string(config_dir.join("prometheus.yml"))?;
        let config = template
            .replace(
                "{{targets_url}}",
                &format!("http://{node_addr}/v1/prometheus/targets"),
            )
            .replace("{{scrape_interval}}", "1s")
            .replace("{{evaluation_interval}}", "1s")
            .replace("{{refresh_interval}}", "1s")
            .replace(
                "{{rules_dir}}",
                &config_dir.join("rules").display().to_string(),
            );
        anyhow::ensure!(!config.contains("{{"), "unfilled field in prometheus.yml");
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let libraries = CONSOLE_LIBRARIES
            .iter()
            .map(PathBuf::from)
            .find(|d| d.join("prom.lib").is_file())
            .ok_or_else(|| anyhow::anyhow!("no prom.lib in {CONSOLE_LIBRARIES:?}"))?;
        let addr = format!("127.0.0.1:{}", free_port());
        let log = File::create(dir.path().join("prometheus.log"))?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg(format!(
                "--web.console.templates={}",
                config_dir.join("consoles").display()
            ))
            .arg(format!("--web.console.libraries={}", libraries.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!("cannot start prometheus (apt-get install prometheus): {e}")
            })?;
        let mut server = PrometheusServer { child, addr, dir };
        let ready = try_wait_until(Duration::from_secs(60), || {
            server.is_running()
                && server
                    .get("/-/ready")
                    .is_ok_and(|(status, _)| status == 200)
        });
        if ready.is_err() {
            anyhow::bail!("prometheus did not become ready: {}", server.log());
        }
        Ok(server)
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Prometheus's own output.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET path`: (status, body), whatever the status.
    pub fn get(&self, path: &str) -> Result<(u16, String), String> {
        let url = format!("http://{}{path}", self.addr);
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(20))
            .build();
        match agent.get(&url).call() {
            Ok(response) => Ok((
                response.status(),
                response.into_string().unwrap_or_default(),
            )),
            Err(ureq::Error::Status(status, response)) => {
                Ok((status, response.into_string().unwrap_or_default()))
            }
            Err(e) => Err(format!("GET {url}: {e}")),
        }
    }

    /// `GET /api/v1/<path>`'s `data`, or the error Prometheus gave.
    pub fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let url = format!("http://{}/api/v1/{path}", self.addr);
        let mut request = ureq::get(&url).timeout(Duration::from_secs(20));
        for (name, value) in params {
            request = request.query(name, value);
        }
        let body: Value = match request.call() {
            Ok(response) => response.into_json().map_err(|e| e.to_string())?,
            Err(ureq::Error::Status(status, response)) => {
                let text = response.into_string().unwrap_or_default();
                return Err(format!("{status}: {text}"));
            }
            Err(e) => return Err(format!("GET {url}: {e}")),
        };
        match body["status"].as_str() {
            Some("success") => Ok(body["data"].clone()),
            _ => Err(format!("{body}")),
        }
    }

    /// The result vector (or scalar) of an instant query; `Err` when the expression is refused.
    pub fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.api("query", &[("query", expr)])?;
        Ok(match &data["result"] {
            Value::Array(samples) => samples.clone(),
            Value::Null => Vec::new(),
            scalar => vec![scalar.clone()],
        })
    }

    /// The active targets of the `lathe` job, as Prometheus sees them.
    pub fn active_targets(&self) -> Vec<Value> {
        self.api("targets", &[("state", "active")])
            .map(|data| {
                data["activeTargets"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .unwrap_or_default()
    }

    /// Every rule Prometheus loaded: (name, query, state, health).
    pub fn rules(&self) -> Vec<Value> {
        let data = wait_until("prometheus's rules", Duration::from_secs(30), || {
            self.api("rules", &[])
        });
        data["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// Alerts now pending or firing: (alertname, state, labels).
    pub fn alerts(&self) -> Vec<Value> {
        self.api("alerts", &[])
            .map(|data| data["alerts"].as_array().cloned().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = kill_process(Pid::from_child(&self.child), Signal::TERM);
            if try_wait_until(Duration::from_secs(10), || !self.is_running()).is_err() {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
    }
}
