//! `lathe up --prometheus`: Debian's `prometheus` beside the local cluster, on a free loopback
//! port, configured from `config/prometheus/` (the scrape template filled with node 0's
//! `/v1/prometheus/targets`, the alert rules, the console templates); stopped with the nodes.
//!
//! Files: `<data-dir>/prometheus/prometheus.yml` (the rendered config), `data/` (its TSDB),
//! `prometheus.log` (its output).

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

use super::plan::is_executable;
use super::UpError;

/// Where Debian (and Prometheus's release tarballs) keep `prom.lib` and `menu.lib`.
const CONSOLE_LIBRARIES: [&str; 3] = [
    "/etc/prometheus/console_libraries",
    "/usr/share/prometheus/console_libraries",
    "/usr/share/doc/prometheus/examples/console_libraries",
];
/// How long Prometheus may take to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The values `config/prometheus/prometheus.yml`'s `{{...}}` fields take.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ScrapeSettings {
    pub(crate) targets_url: String,
    pub(crate) scrape_interval: String,
    pub(crate) evaluation_interval: String,
    pub(crate) refresh_interval: String,
    pub(crate) rules_dir: PathBuf,
}

/// Fills the template's fields; a `{{name}}` it does not know is an error naming it.
pub(crate) fn render_config(template: &str, settings: &ScrapeSettings) -> anyhow::Result<String> {
    let rules_dir = settings.rules_dir.display().to_string();
    let fields = [
        ("{{targets_url}}", settings.targets_url.as_str()),
        ("{{scrape_interval}}", settings.scrape_interval.as_str()),
        (
            "{{evaluation_interval}}",
            settings.evaluation_interval.as_str(),
        ),
        ("{{refresh_interval}}", settings.refresh_interval.as_str()),
        ("{{rules_dir}}", rules_dir.as_str()),
    ];
    let rendered = fields
        .iter()
        .fold(template.to_string(), |text, (field, value)| {
            text.replace(field, value)
        });
    match rendered.find("{{") {
        Some(at) => {
            let rest = &rendered[at..];
            let field = rest.find("}}").map_or(rest, |end| &rest[..end + 2]);
            anyhow::bail!("unknown field {field} in the prometheus.yml template")
        }
        None => Ok(rendered),
    }
}

/// A running Prometheus; stopped when dropped.
pub(crate) struct Prometheus {
    child: Child,
    pub(crate) url: String,
    pub(crate) log: PathBuf,
}

impl Prometheus {
    /// Renders the config under `<data_dir>/prometheus` for the cluster whose first node serves
    /// REST at `first_node`, and starts `binary` (default: `prometheus` on PATH).
    pub(crate) fn start(
        first_node: SocketAddr,
        data_dir: &Path,
        config_dir: &Path,
        binary: Option<&Path>,
    ) -> Result<Prometheus, UpError> {
        let usage = |what: String| UpError::Usage(format!("--prometheus: {what}"));
        let binary = find_binary(binary).ok_or_else(|| match binary {
            Some(path) => UpError::Usage(format!(
                "--prometheus-bin: {} is not an executable file",
                path.display()
            )),
            None => usage(
                "cannot find the prometheus executable on PATH (apt-get install prometheus, or \
                 pass --prometheus-bin)"
                    .into(),
            ),
        })?;
        let config_dir = config_dir.canonicalize().map_err(|e| {
            usage(format!(
                "cannot open {} ({e}): run from the Lathe checkout or pass --prometheus-config DIR",
                config_dir.display()
            ))
        })?;
        let template_path = config_dir.join("prometheus.yml");
        let template = std::fs::read_to_string(&template_path)
            .map_err(|e| usage(format!("cannot read {}: {e}", template_path.display())))?;
        let libraries = CONSOLE_LIBRARIES
            .iter()
            .map(PathBuf::from)
            .find(|dir| dir.join("prom.lib").is_file())
            .ok_or_else(|| {
                usage(format!(
                    "no Prometheus console library (prom.lib) in {}",
                    CONSOLE_LIBRARIES.join(", ")
                ))
            })?;
        let settings = ScrapeSettings {
            targets_url: format!("http://{first_node}/v1/prometheus/targets"),
            scrape_interval: "5s".into(),
            evaluation_interval: "5s".into(),
            refresh_interval: "5s".into(),
            rules_dir: config_dir.join("rules"),
        };
        let config = render_config(&template, &settings).map_err(|e| usage(format!("{e:#}")))?;
        let dir = data_dir.join("prometheus");
        std::fs::create_dir_all(dir.join("data"))
            .map_err(|e| usage(format!("cannot create {}: {e}", dir.display())))?;
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config)
            .map_err(|e| usage(format!("cannot write {}: {e}", config_path.display())))?;
        let addr = free_loopback_addr().map_err(|e| usage(format!("no free port: {e}")))?;
        let log = dir.join("prometheus.log");
        let output = File::create(&log)
            .map_err(|e| usage(format!("cannot create {}: {e}", log.display())))?;
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg(format!(
                "--web.console.templates={}",
                config_dir.join("consoles").display()
            ))
            .arg(format!("--web.console.libraries={}", libraries.display()))
            .stdin(Stdio::null())
            .stdout(output.try_clone().map_err(|e| usage(e.to_string()))?)
            .stderr(output)
            .spawn()
            .map_err(|e| usage(format!("cannot start {}: {e}", binary.display())))?;
        Ok(Prometheus {
            child,
            url: format!("http://{addr}"),
            log,
        })
    }

    /// Whether the process is still running.
    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then SIGKILL after [`STOP_GRACE`].
    pub(crate) fn stop(&mut self) {
        if !self.is_running() {
            return;
        }
        let _ = kill_process(Pid::from_child(&self.child), Signal::TERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if !self.is_running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

fn find_binary(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return is_executable(path).then(|| path.to_path_buf());
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("prometheus"))
        .find(|candidate| is_executable(candidate))
}

fn free_loopback_addr() -> std::io::Result<SocketAddr> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ScrapeSettings {
        ScrapeSettings {
            targets_url: "http://127.0.0.1:7500/v1/prometheus/targets".into(),
            scrape_interval: "5s".into(),
            evaluation_interval: "10s".into(),
            refresh_interval: "30s".into(),
            rules_dir: PathBuf::from("/repo/config/prometheus/rules"),
        }
    }

    #[test]
    fn the_shipped_template_is_filled_completely() {
        let template = include_str!("../../../config/prometheus/prometheus.yml");
        let config = render_config(template, &settings()).unwrap();
        assert!(config.contains("url: \"http://127.0.0.1:7500/v1/prometheus/targets\""));
        assert!(config.contains("scrape_interval: 5s"));
        assert!(config.contains("evaluation_interval: 10s"));
        assert!(config.contains("refresh_interval: 30s"));
        assert!(config.contains("\"/repo/config/prometheus/rules/lathe.rules.yml\""));
        assert!(!config.contains("{{"), "{config}");
    }

    #[test]
    fn an_unknown_field_is_named() {
        let error =
            render_config("a: {{targets_url}}\nb: {{colour}} x\n", &settings()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown field {{colour}} in the prometheus.yml template"
        );
    }
}
