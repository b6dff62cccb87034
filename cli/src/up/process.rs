//! The local process backend: one `lathe-node` process per [`NodeSpec`] on this machine. It starts, watches and
//! stops processes and nothing else; when to restart is the supervisor's call (`supervise.rs`). Its methods are
//! the operations of a resource manager (`start_node`, `is_alive`, `stop_all`), for the trait of issue 4.
//!
//! Each node runs in its own process group, so a Ctrl-C in the terminal reaches `lathe up` alone, which then
//! stops the nodes in order. Its stdout and stderr are appended to `<data-dir>/local-<i>/node.log`. The node gets
//! none of `lathe up`'s `LATHE_*` variables (they would override its flags) except `LATHE_LOG`, and the cookie in
//! `LATHE_COOKIE` (not on the command line, where `ps` shows it). Dropping the backend SIGKILLs what still runs.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

use super::plan::{ClusterPlan, NodeSpec};

/// How often `stop_all` checks whether the processes have exited.
const STOP_POLL: Duration = Duration::from_millis(50);
/// The environment variable a node may keep from `lathe up`'s environment.
const KEPT_VARIABLES: [&str; 1] = ["LATHE_LOG"];

/// The `lathe-node` processes of one local cluster.
pub(crate) struct ProcessBackend {
    plan: ClusterPlan,
    children: Vec<Option<Child>>,
    starts: Vec<u32>,
}

impl ProcessBackend {
    pub(crate) fn new(plan: ClusterPlan) -> Self {
        let count = plan.nodes.len();
        ProcessBackend {
            plan,
            children: (0..count).map(|_| None).collect(),
            starts: vec![0; count],
        }
    }

    pub(crate) fn plan(&self) -> &ClusterPlan {
        &self.plan
    }

    pub(crate) fn node(&self, i: usize) -> &NodeSpec {
        &self.plan.nodes[i]
    }

    pub(crate) fn len(&self) -> usize {
        self.plan.nodes.len()
    }

    /// Starts node `i` with its planned arguments (creating its data dir) and returns the process id.
    pub(crate) fn start_node(&mut self, i: usize) -> io::Result<u32> {
        let spec = &self.plan.nodes[i];
        std::fs::create_dir_all(&spec.data_dir)?;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(spec.log_path())?;
        self.starts[i] += 1;
        writeln!(
            log,
            "=== lathe up: start #{} of {}: {} {}",
            self.starts[i],
            spec.name,
            self.plan.binary.display(),
            spec.args.join(" ")
        )?;
        let mut command = Command::new(&self.plan.binary);
        command
            .args(&spec.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        for (name, _) in std::env::vars_os() {
            let name_text = name.to_string_lossy();
            if name_text.starts_with("LATHE_") && !KEPT_VARIABLES.contains(&name_text.as_ref()) {
                command.env_remove(&name);
            }
        }
        command.env("LATHE_COOKIE", &self.plan.cookie);
        let child = command.spawn().map_err(|err| {
            io::Error::new(
                err.kind(),
                format!("cannot run {}: {err}", self.plan.binary.display()),
            )
        })?;
        let pid = child.id();
        self.children[i] = Some(child);
        Ok(pid)
    }

    /// Whether node `i`'s process runs (a process that exited stays reported by [`ProcessBackend::reap_exits`]).
    pub(crate) fn is_alive(&mut self, i: usize) -> bool {
        match self.children[i].as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The process id of node `i` while it runs.
    pub(crate) fn pid(&self, i: usize) -> Option<u32> {
        self.children[i].as_ref().map(Child::id)
    }

    /// The nodes whose process exited since the last call, with how it ended; each exit is reported once.
    pub(crate) fn reap_exits(&mut self) -> Vec<(usize, ExitStatus)> {
        let mut exits = Vec::new();
        for (i, slot) in self.children.iter_mut().enumerate() {
            let status = match slot.as_mut().map(Child::try_wait) {
                Some(Ok(Some(status))) => status,
                _ => continue,
            };
            *slot = None;
            exits.push((i, status));
        }
        exits
    }

    /// SIGTERM to every running node, then waits up to `grace` (less if `hurry()` turns true, e.g. a second
    /// Ctrl-C) and SIGKILLs the stragglers. Returns the names of the nodes that had to be killed.
    pub(crate) fn stop_all(&mut self, grace: Duration, hurry: impl Fn() -> bool) -> Vec<String> {
        for child in self.children.iter_mut().flatten() {
            if matches!(child.try_wait(), Ok(None)) {
                // Fails only if the process is already gone.
                let _ = kill_process(Pid::from_child(child), Signal::TERM);
            }
        }
        let deadline = Instant::now() + grace;
        while self.any_running() && Instant::now() < deadline && !hurry() {
            std::thread::sleep(STOP_POLL);
        }
        let mut killed = Vec::new();
        for (i, slot) in self.children.iter_mut().enumerate() {
            if let Some(mut child) = slot.take() {
                if matches!(child.try_wait(), Ok(None)) {
                    killed.push(self.plan.nodes[i].name.clone());
                    let _ = child.kill();
                }
                let _ = child.wait();
            }
        }
        killed
    }

    fn any_running(&mut self) -> bool {
        (0..self.len()).any(|i| self.is_alive(i))
    }
}

impl Drop for ProcessBackend {
    /// An error path or a panic never leaves a node behind.
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `signal 9` or `code 1`: how a process ended, for log lines.
pub(crate) fn describe_exit(status: ExitStatus) -> String {
    match (status.signal(), status.code()) {
        (Some(signal), _) => format!("signal {signal}"),
        (None, Some(code)) => format!("code {code}"),
        (None, None) => status.to_string(),
    }
}

/// The last non-empty line of a node's log (what a node that fails to start says about it).
pub(crate) fn last_log_line(spec: &NodeSpec) -> Option<String> {
    let text = std::fs::read(spec.log_path()).ok()?;
    let text = String::from_utf8_lossy(&text);
    text.lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with("=== lathe up:"))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A backend whose "nodes" are `sh -c SCRIPT`.
    fn backend(dir: &std::path::Path, scripts: &[&str]) -> ProcessBackend {
        let nodes = scripts
            .iter()
            .enumerate()
            .map(|(i, script)| NodeSpec {
                name: format!("local-{i}"),
                http_addr: "127.0.0.1:1".parse().unwrap(),
                cluster_addr: "127.0.0.1:2".parse().unwrap(),
                data_dir: dir.join(format!("local-{i}")),
                args: vec!["-c".into(), script.to_string()],
            })
            .collect();
        ProcessBackend::new(ClusterPlan {
            binary: PathBuf::from("/bin/sh"),
            cookie: "secret".into(),
            nodes,
            zookeeper: false,
        })
    }

    #[test]
    fn exits_are_reported_once_with_the_log_and_the_cookie() {
        let dir = tempfile::tempdir().unwrap();
        let mut backend = backend(dir.path(), &["echo cookie=$LATHE_COOKIE; exit 3"]);
        backend.start_node(0).unwrap();
        let started = Instant::now();
        let mut exits = Vec::new();
        while exits.is_empty() && started.elapsed() < Duration::from_secs(10) {
            exits = backend.reap_exits();
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(exits.len(), 1);
        assert_eq!(describe_exit(exits[0].1), "code 3");
        assert!(backend.reap_exits().is_empty());
        assert!(!backend.is_alive(0));
        let spec = backend.node(0).clone();
        assert_eq!(last_log_line(&spec).as_deref(), Some("cookie=secret"));
        let log = std::fs::read_to_string(spec.log_path()).unwrap();
        assert!(
            log.starts_with("=== lathe up: start #1 of local-0: /bin/sh -c"),
            "{log}"
        );
    }

    #[test]
    fn stop_all_terminates_then_kills_stragglers() {
        let dir = tempfile::tempdir().unwrap();
        let polite = "trap 'exit 0' TERM; echo ready; while true; do sleep 0.05; done";
        let stubborn = "trap '' TERM; echo ready; while true; do sleep 0.05; done";
        let mut backend = backend(dir.path(), &[polite, stubborn]);
        let pids = [
            backend.start_node(0).unwrap(),
            backend.start_node(1).unwrap(),
        ];
        assert!(backend.is_alive(0) && backend.is_alive(1));
        let started = Instant::now();
        while (0..2).any(|i| last_log_line(backend.node(i)).as_deref() != Some("ready")) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the traps are set"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let killed = backend.stop_all(Duration::from_secs(2), || false);
        assert_eq!(killed, vec!["local-1".to_string()]);
        assert!(!backend.is_alive(0) && !backend.is_alive(1));
        for pid in pids {
            assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
        }
    }

    #[test]
    fn describes_signals() {
        assert_eq!(describe_exit(ExitStatus::from_raw(9)), "signal 9");
        assert_eq!(describe_exit(ExitStatus::from_raw(1 << 8)), "code 1");
    }
}
