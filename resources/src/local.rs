//! The local process backend: one `lathe-node` process per container, on this machine — what
//! `lathe up` runs a local cluster with. A container's id is its node's name.
//!
//! Each process runs in its own process group, so a Ctrl-C in the terminal reaches the caller
//! alone, which then stops the nodes in order ([`LocalProcesses::stop_all`]). Its stdout and
//! stderr are appended to `<log root>/<name>/node.log`, each start preceded by a `=== <label>:
//! start #N of <name>: <command line>` line. A process inherits the caller's settings that apply
//! to every node alike (`LATHE_WORKERS`, `LATHE_ENABLE_CHAOS`, `LATHE_LOG`, ...), but none of the
//! variables that make one node what it is ([`PER_NODE_VARIABLES`]: its name, addresses, seeds,
//! registry, data and topology, and YARN's), which the launch decides, plus the launch's own
//! environment (the cookie travels there, not on the command line where `ps` shows it).
//! Dropping the backend SIGKILLs what still runs.
//!
//! ```text
//! request(launch) ── spawn ──> Running (next poll)
//! poll ── try_wait ──> exit 0: Finished · other exit or signal: Failed ("code 3: <last log line>")
//! release ── SIGTERM ──> Killed (next poll, once it exited)
//! ```

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

use crate::{
    ContainerEvent, ContainerId, ContainerState, NodeLaunch, ResourceError, ResourceManager,
};

/// How often `stop_all` checks whether the processes have exited.
const STOP_POLL: Duration = Duration::from_millis(50);
/// The caller's variables a node does not inherit: each node's launch sets these itself, and one
/// left in the caller's environment would, e.g., make the founding node `--join` elsewhere, or
/// give a cluster without `--zookeeper` a ZooKeeper registry.
pub const PER_NODE_VARIABLES: [&str; 8] = [
    "LATHE_NAME",
    "LATHE_BIND",
    "LATHE_HTTP",
    "LATHE_JOIN",
    "LATHE_ZOOKEEPER",
    "LATHE_DATA_DIR",
    "LATHE_TOPOLOGY",
    "LATHE_COOKIE",
];

/// Whether a node started by this backend must not inherit the caller's variable `name`.
fn is_per_node(name: &str) -> bool {
    PER_NODE_VARIABLES.contains(&name) || name.starts_with("LATHE_YARN_")
}

/// One process this backend started.
struct Process {
    child: Child,
    /// Whether `poll` has reported it running.
    reported: bool,
    /// Whether `release` asked it to stop.
    released: bool,
    log: PathBuf,
}

/// The `lathe-node` processes of one machine.
pub struct LocalProcesses {
    log_root: PathBuf,
    label: String,
    processes: BTreeMap<ContainerId, Process>,
    starts: BTreeMap<String, u32>,
}

impl LocalProcesses {
    /// A backend whose node `NAME` logs to `<log_root>/NAME/node.log`; `label` starts the log's
    /// header lines (`lathe up`).
    pub fn new(log_root: impl Into<PathBuf>, label: impl Into<String>) -> Self {
        LocalProcesses {
            log_root: log_root.into(),
            label: label.into(),
            processes: BTreeMap::new(),
            starts: BTreeMap::new(),
        }
    }

    /// Where node `name` logs.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.log_root.join(name).join("node.log")
    }

    /// Whether the process of `id` runs (one that exited stays known until `poll` reports it).
    pub fn is_running(&mut self, id: &ContainerId) -> bool {
        self.processes
            .get_mut(id)
            .is_some_and(|p| matches!(p.child.try_wait(), Ok(None)))
    }

    /// The process id of `id`, until `poll` reported its end.
    pub fn pid(&self, id: &ContainerId) -> Option<u32> {
        self.processes.get(id).map(|p| p.child.id())
    }

    /// How many processes run now.
    pub fn running_count(&mut self) -> usize {
        self.processes
            .values_mut()
            .filter_map(|p| p.child.try_wait().ok())
            .filter(Option::is_none)
            .count()
    }

    /// SIGTERM to every running process, then waits up to `grace` (less if `hurry()` turns true,
    /// e.g. a second Ctrl-C) and SIGKILLs the stragglers. Forgets every process; returns the
    /// names of those that had to be killed.
    pub fn stop_all(&mut self, grace: Duration, hurry: impl Fn() -> bool) -> Vec<String> {
        for process in self.processes.values_mut() {
            if matches!(process.child.try_wait(), Ok(None)) {
                // Fails only if the process is already gone.
                let _ = kill_process(Pid::from_child(&process.child), Signal::TERM);
            }
        }
        let deadline = Instant::now() + grace;
        while self.running_count() > 0 && Instant::now() < deadline && !hurry() {
            std::thread::sleep(STOP_POLL);
        }
        let mut killed = Vec::new();
        for (id, mut process) in std::mem::take(&mut self.processes) {
            if matches!(process.child.try_wait(), Ok(None)) {
                killed.push(id.0);
                let _ = process.child.kill();
            }
            let _ = process.child.wait();
        }
        killed
    }

    fn spawn(&mut self, launch: &NodeLaunch) -> std::io::Result<Process> {
        let log_path = self.log_path(&launch.name);
        if let Some(dir) = log_path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let starts = self.starts.entry(launch.name.clone()).or_insert(0);
        *starts += 1;
        writeln!(
            log,
            "=== {}: start #{starts} of {}: {} {}",
            self.label,
            launch.name,
            launch.program.display(),
            launch.args.join(" ")
        )?;
        let mut command = Command::new(&launch.program);
        command
            .args(&launch.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        for (name, _) in std::env::vars_os() {
            let text = name.to_string_lossy();
            if is_per_node(&text) {
                command.env_remove(&name);
            }
        }
        command.envs(launch.env.iter().map(|(k, v)| (k, v)));
        let child = command.spawn().map_err(|err| {
            std::io::Error::new(
                err.kind(),
                format!("cannot run {}: {err}", launch.program.display()),
            )
        })?;
        Ok(Process {
            child,
            reported: false,
            released: false,
            log: log_path,
        })
    }
}

impl ResourceManager for LocalProcesses {
    fn backend(&self) -> &'static str {
        "local"
    }

    fn request(&mut self, launch: &NodeLaunch) -> Result<ContainerId, ResourceError> {
        let id = ContainerId(launch.name.clone());
        if self.processes.contains_key(&id) {
            return Err(ResourceError::Launch {
                name: launch.name.clone(),
                reason: "its previous process has not been reported ended yet".into(),
            });
        }
        let process = self.spawn(launch).map_err(|err| ResourceError::Launch {
            name: launch.name.clone(),
            reason: err.to_string(),
        })?;
        self.processes.insert(id.clone(), process);
        Ok(id)
    }

    fn release(&mut self, id: &ContainerId) -> Result<(), ResourceError> {
        let process = self
            .processes
            .get_mut(id)
            .ok_or_else(|| ResourceError::UnknownContainer(id.clone()))?;
        process.released = true;
        if matches!(process.child.try_wait(), Ok(None)) {
            let _ = kill_process(Pid::from_child(&process.child), Signal::TERM);
        }
        Ok(())
    }

    fn poll(&mut self) -> Result<Vec<ContainerEvent>, ResourceError> {
        let mut events = Vec::new();
        let mut ended = Vec::new();
        for (id, process) in &mut self.processes {
            let status = match process.child.try_wait() {
                Ok(Some(status)) => status,
                _ => {
                    if !process.reported {
                        process.reported = true;
                        events.push(ContainerEvent {
                            id: id.clone(),
                            state: ContainerState::Running,
                        });
                    }
                    continue;
                }
            };
            let diagnostics = describe_end(status, &process.log);
            let state = if process.released {
                ContainerState::Killed { diagnostics }
            } else if status.success() {
                ContainerState::Finished { diagnostics }
            } else {
                ContainerState::Failed { diagnostics }
            };
            events.push(ContainerEvent {
                id: id.clone(),
                state,
            });
            ended.push(id.clone());
        }
        for id in ended {
            self.processes.remove(&id);
        }
        Ok(events)
    }
}

impl Drop for LocalProcesses {
    /// An error path or a panic never leaves a node behind.
    fn drop(&mut self) {
        for process in self.processes.values_mut() {
            let _ = process.child.kill();
            let _ = process.child.wait();
        }
    }
}

/// `signal 9`, or `code 1: <the last line of its log>`: how a process ended, for people.
fn describe_end(status: ExitStatus, log: &Path) -> String {
    let how = describe_exit(status);
    match (status.code(), last_log_line(log)) {
        (Some(_), Some(line)) => format!("{how}: {line}"),
        _ => how,
    }
}

/// `signal 9` or `code 1`: how a process ended.
pub fn describe_exit(status: ExitStatus) -> String {
    match (status.signal(), status.code()) {
        (Some(signal), _) => format!("signal {signal}"),
        (None, Some(code)) => format!("code {code}"),
        (None, None) => status.to_string(),
    }
}

/// The last non-empty line of a node's log that is not a start header (what a node that fails to
/// start says about it).
pub fn last_log_line(log: &Path) -> Option<String> {
    let text = std::fs::read(log).ok()?;
    let text = String::from_utf8_lossy(&text);
    text.lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with("=== "))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A "node" that is `sh -c SCRIPT`.
    fn launch(name: &str, script: &str) -> NodeLaunch {
        NodeLaunch {
            name: name.to_string(),
            program: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), script.to_string()],
            env: vec![("LATHE_COOKIE".into(), "secret".into())],
        }
    }

    #[test]
    fn nodes_inherit_shared_settings_but_not_what_makes_each_node_itself() {
        for shared in [
            "LATHE_WORKERS",
            "LATHE_ENABLE_CHAOS",
            "LATHE_LOG",
            "LATHE_KAFKA",
        ] {
            assert!(!is_per_node(shared), "{shared}");
        }
        for own in [
            "LATHE_JOIN",
            "LATHE_ZOOKEEPER",
            "LATHE_HTTP",
            "LATHE_YARN_RM",
        ] {
            assert!(is_per_node(own), "{own}");
        }
    }

    /// Polls until `count` terminal events came (10 s at most).
    fn ends(backend: &mut LocalProcesses, count: usize) -> Vec<ContainerEvent> {
        let started = Instant::now();
        let mut ends = Vec::new();
        while ends.len() < count {
            assert!(started.elapsed() < Duration::from_secs(10), "{ends:?}");
            ends.extend(
                backend
                    .poll()
                    .unwrap()
                    .into_iter()
                    .filter(|e| e.state.is_terminal()),
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        ends
    }

    #[test]
    fn ends_are_reported_once_with_the_log_and_the_cookie() {
        let dir = tempfile::tempdir().unwrap();
        let mut backend = LocalProcesses::new(dir.path(), "lathe up");
        let id = backend
            .request(&launch("local-0", "echo cookie=$LATHE_COOKIE; exit 3"))
            .unwrap();
        assert_eq!(id.as_str(), "local-0");
        let ended = ends(&mut backend, 1);
        assert_eq!(
            ended[0].state,
            ContainerState::Failed {
                diagnostics: "code 3: cookie=secret".into()
            }
        );
        assert!(backend.poll().unwrap().is_empty());
        assert!(!backend.is_running(&id));
        let log = std::fs::read_to_string(backend.log_path("local-0")).unwrap();
        assert!(
            log.starts_with("=== lathe up: start #1 of local-0: /bin/sh -c"),
            "{log}"
        );
        // The same name again, once its end was reported.
        backend.request(&launch("local-0", "exit 0")).unwrap();
        let ended = ends(&mut backend, 1);
        assert_eq!(ended[0].state.name(), "finished");
        let log = std::fs::read_to_string(backend.log_path("local-0")).unwrap();
        assert!(log.contains("=== lathe up: start #2 of local-0"), "{log}");
    }

    #[test]
    fn a_running_process_is_reported_running_once_and_released_as_killed() {
        let dir = tempfile::tempdir().unwrap();
        let mut backend = LocalProcesses::new(dir.path(), "test");
        let id = backend
            .request(&launch(
                "n",
                "trap 'exit 0' TERM; while true; do sleep 0.05; done",
            ))
            .unwrap();
        assert!(matches!(
            backend.request(&launch("n", "true")),
            Err(ResourceError::Launch { .. })
        ));
        let first = backend.poll().unwrap();
        assert_eq!(
            first,
            vec![ContainerEvent {
                id: id.clone(),
                state: ContainerState::Running
            }]
        );
        assert!(backend.poll().unwrap().is_empty());
        backend.release(&id).unwrap();
        let ended = ends(&mut backend, 1);
        assert_eq!(ended[0].state.name(), "killed", "{ended:?}");
        assert!(matches!(
            backend.release(&id),
            Err(ResourceError::UnknownContainer(_))
        ));
    }

    #[test]
    fn stop_all_terminates_then_kills_stragglers() {
        let dir = tempfile::tempdir().unwrap();
        let polite = "trap 'exit 0' TERM; echo ready; while true; do sleep 0.05; done";
        let stubborn = "trap '' TERM; echo ready; while true; do sleep 0.05; done";
        let mut backend = LocalProcesses::new(dir.path(), "test");
        let ids = [
            backend.request(&launch("local-0", polite)).unwrap(),
            backend.request(&launch("local-1", stubborn)).unwrap(),
        ];
        let pids: Vec<u32> = ids.iter().map(|id| backend.pid(id).unwrap()).collect();
        let started = Instant::now();
        while ["local-0", "local-1"]
            .iter()
            .any(|n| last_log_line(&backend.log_path(n)).as_deref() != Some("ready"))
        {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the traps are set"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let killed = backend.stop_all(Duration::from_secs(2), || false);
        assert_eq!(killed, vec!["local-1".to_string()]);
        assert_eq!(backend.running_count(), 0);
        for pid in pids {
            assert!(!Path::new(&format!("/proc/{pid}")).exists());
        }
    }

    #[test]
    fn describes_signals() {
        assert_eq!(describe_exit(ExitStatus::from_raw(9)), "signal 9");
        assert_eq!(describe_exit(ExitStatus::from_raw(1 << 8)), "code 1");
    }
}
