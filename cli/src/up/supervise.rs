//! Keeps the local cluster's node processes running: restarts a node whose process exits (crash,
//! SIGKILL) with the same arguments, backing off while it keeps dying, and prints each node's REST
//! address once it answers `GET /v1/health` (again after every restart). The processes are started
//! and watched through the resource manager trait, by its local process backend
//! (`lathe_resources::local`).
//!
//! ```text
//! Supervisor ──tick──> LocalProcesses::poll ──ended──> Backoff ──due──> LocalProcesses::request(local-<i>)
//!     └──────tick──> GET /v1/health on nodes not serving yet ──> "local-1 serving http://..."
//! ```

use std::time::{Duration, Instant};

use lathe_resources::local::LocalProcesses;
use lathe_resources::{ContainerId, NodeLaunch, ResourceError, ResourceManager};

use super::plan::ClusterPlan;
use super::UpError;
use crate::client::Client;

/// What `lathe up` writes before each start in a node's log.
const LOG_LABEL: &str = "lathe up";

/// The first restart delay; it doubles on every exit in a row, up to [`RESTART_DELAY_MAX`].
const RESTART_DELAY_MIN: Duration = Duration::from_millis(500);
const RESTART_DELAY_MAX: Duration = Duration::from_secs(10);
/// A process that ran this long before exiting starts the back-off over.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// A node that exits this many times in a row without ever serving is given up on (a bad flag, a
/// data dir locked by another process...): `lathe up` stops and says why.
const MAX_STARTS_WITHOUT_SERVING: u32 = 3;
/// Health checks of a starting node: loopback, so short.
const HEALTH_CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

/// Exponential back-off between restarts of one node.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff {
            next: RESTART_DELAY_MIN,
        }
    }

    /// How long to wait before restarting a process that ran for `ran_for` and exited.
    pub(crate) fn delay_after(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= STABLE_AFTER {
            self.next = RESTART_DELAY_MIN;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(RESTART_DELAY_MAX);
        delay
    }
}

/// What the supervisor knows about one node.
struct NodeState {
    /// The node's container while its process runs (until its end is polled).
    container: Option<ContainerId>,
    backoff: Backoff,
    started_at: Option<Instant>,
    restart_at: Option<Instant>,
    /// Answered `GET /v1/health` since its last start.
    serving: bool,
    ever_served: bool,
    starts_without_serving: u32,
    health: Client,
}

/// The supervision loop's state; [`Supervisor::tick`] is called every few hundred milliseconds.
pub(crate) struct Supervisor {
    plan: ClusterPlan,
    backend: LocalProcesses,
    nodes: Vec<NodeState>,
}

impl Supervisor {
    /// Node `local-<i>` logs to `<data dir>/local-<i>/node.log`, the data dir of its plan.
    pub(crate) fn new(plan: ClusterPlan) -> Self {
        let log_root = plan
            .nodes
            .first()
            .and_then(|spec| spec.data_dir.parent())
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        let backend = LocalProcesses::new(log_root, LOG_LABEL);
        let nodes = plan
            .nodes
            .iter()
            .map(|spec| NodeState {
                container: None,
                backoff: Backoff::new(),
                started_at: None,
                restart_at: None,
                serving: false,
                ever_served: false,
                starts_without_serving: 0,
                health: Client::with_timeouts(
                    &spec.http_addr.to_string(),
                    HEALTH_CONNECT_TIMEOUT,
                    HEALTH_TIMEOUT,
                ),
            })
            .collect();
        Supervisor {
            plan,
            backend,
            nodes,
        }
    }

    pub(crate) fn plan(&self) -> &ClusterPlan {
        &self.plan
    }

    /// Starts node `i` for the first time.
    pub(crate) fn start(&mut self, i: usize) -> Result<(), UpError> {
        self.launch(i)
    }

    /// Whether node `i` has answered `GET /v1/health` at least once.
    pub(crate) fn has_served(&self, i: usize) -> bool {
        self.nodes[i].ever_served
    }

    /// Whether every node has answered `GET /v1/health` at least once.
    pub(crate) fn all_served(&self) -> bool {
        self.nodes.iter().all(|n| n.ever_served)
    }

    /// Restarts what exited (when its back-off is over) and notices nodes that started serving.
    pub(crate) fn tick(&mut self) -> Result<(), UpError> {
        let now = Instant::now();
        let events = self
            .backend
            .poll()
            .map_err(|err| UpError::Failed(err.to_string()))?;
        for event in events {
            // "signal 9", "code 1: <the last line of its log>".
            let Some(how) = event.state.diagnostics().map(str::to_string) else {
                continue;
            };
            let Some(i) = self
                .nodes
                .iter()
                .position(|n| n.container.as_ref() == Some(&event.id))
            else {
                continue;
            };
            let spec = &self.plan.nodes[i];
            let node = &mut self.nodes[i];
            node.container = None;
            let ran_for = node.started_at.map_or(Duration::ZERO, |t| now - t);
            if !node.serving && node.starts_without_serving >= MAX_STARTS_WITHOUT_SERVING {
                return Err(UpError::Failed(format!(
                    "{} exited ({how}) {} times in a row before serving: giving up; see {}",
                    spec.name,
                    node.starts_without_serving,
                    spec.log_path().display()
                )));
            }
            let delay = node.backoff.delay_after(ran_for);
            say!(
                "{} exited ({how}): restarting in {:.1} s",
                spec.name,
                delay.as_secs_f64()
            );
            node.serving = false;
            node.restart_at = Some(now + delay);
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].restart_at.is_some_and(|at| at <= now) {
                self.launch(i)?;
            }
        }
        self.check_health();
        Ok(())
    }

    /// How many node processes run now.
    pub(crate) fn running_count(&mut self) -> usize {
        self.backend.running_count()
    }

    /// Stops every node (SIGTERM, then SIGKILL after `grace` or once `hurry()`); returns the killed
    /// ones.
    pub(crate) fn stop_all(&mut self, grace: Duration, hurry: impl Fn() -> bool) -> Vec<String> {
        self.nodes.iter_mut().for_each(|n| n.restart_at = None);
        self.backend.stop_all(grace, hurry)
    }

    fn launch(&mut self, i: usize) -> Result<(), UpError> {
        let node = &mut self.nodes[i];
        node.restart_at = None;
        node.serving = false;
        node.started_at = Some(Instant::now());
        if !node.ever_served {
            node.starts_without_serving += 1;
        }
        let spec = &self.plan.nodes[i];
        let launch = NodeLaunch {
            name: spec.name.clone(),
            program: self.plan.binary.clone(),
            args: spec.args.clone(),
            env: vec![("LATHE_COOKIE".to_string(), self.plan.cookie.clone())],
        };
        match self.backend.request(&launch) {
            Ok(id) => {
                self.nodes[i].container = Some(id);
                Ok(())
            }
            // A binary being rebuilt can be missing for a moment: retry later, unless it never ran.
            Err(err) if self.nodes[i].ever_served => {
                let delay = self.nodes[i].backoff.delay_after(Duration::ZERO);
                say!(
                    "{}: retrying in {:.1} s",
                    launch_error(err),
                    delay.as_secs_f64()
                );
                self.nodes[i].restart_at = Some(Instant::now() + delay);
                Ok(())
            }
            Err(err) => Err(UpError::Failed(launch_error(err))),
        }
    }

    /// Whether node `i`'s process runs.
    fn is_running(&mut self, i: usize) -> bool {
        match &self.nodes[i].container {
            Some(id) => self.backend.is_running(id),
            None => false,
        }
    }

    fn check_health(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].serving || !self.is_running(i) {
                continue;
            }
            if self.nodes[i].health.get("/v1/health").is_err() {
                continue;
            }
            let spec = &self.plan.nodes[i];
            let again = if self.nodes[i].ever_served {
                " again"
            } else {
                ""
            };
            let pid = self.nodes[i]
                .container
                .as_ref()
                .and_then(|id| self.backend.pid(id))
                .unwrap_or_default();
            say!(
                "{} serving{again} at http://{} (pid {pid})",
                spec.name,
                spec.http_addr
            );
            let node = &mut self.nodes[i];
            node.serving = true;
            node.ever_served = true;
            node.starts_without_serving = 0;
        }
    }
}

/// `local-1: cannot run /path/lathe-node: No such file or directory`.
fn launch_error(err: ResourceError) -> String {
    match err {
        ResourceError::Launch { name, reason } => format!("{name}: {reason}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets_after_a_stable_run() {
        let mut backoff = Backoff::new();
        let quick = Duration::from_secs(1);
        let delays: Vec<u64> = (0..7)
            .map(|_| backoff.delay_after(quick).as_millis() as u64)
            .collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 10000, 10000]);
        assert_eq!(
            backoff.delay_after(STABLE_AFTER),
            Duration::from_millis(500)
        );
        assert_eq!(backoff.delay_after(quick), Duration::from_secs(1));
    }
}
