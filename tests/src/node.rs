//! Real `lathe-node` processes for tests: [`NodeBuilder`] → [`NodeProcess`] (start, kill,
//! terminate, restart on the same ports and data dir) and [`Cluster`] (n nodes joined to the first,
//! all seen alive by all).
//!
//! ```no_run
//! use lathe_tests::node::{Cluster, NodeBuilder};
//! use lathe_tests::http::get_json;
//!
//! let mut cluster = Cluster::start(3, NodeBuilder::new().cookie("secret"));
//! let reply = get_json(cluster.node(1).http_addr(), "/v1/members");
//! assert_eq!(reply.status, 200);
//! cluster.node_mut(2).kill();
//! cluster.node_mut(2).restart(); // same ports, same data dir
//! ```
//!
//! The binary is `$LATHE_NODE_BIN`, else `lathe-node` beside the test executable's `deps/` folder
//! (build it first: `cargo build --bins`). Each node gets free loopback ports, a scratch directory
//! (log file, default data dir) removed on drop unless `LATHE_TEST_KEEP_DIRS` is set, and none of
//! the test process's `LATHE_*` variables. A node is SIGKILLed when dropped; if the test is
//! panicking, the tail of its log is printed first.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use crate::http;
use crate::wait::{try_wait_until, wait_until};

/// How long a node may take to answer `GET /v1/health` after it is spawned.
pub const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long a node may take to exit after SIGTERM.
pub const STOP_DEADLINE: Duration = Duration::from_secs(30);
/// How long a cluster may take until every node sees every other alive.
pub const MEMBERSHIP_DEADLINE: Duration = Duration::from_secs(60);
/// How many log lines a failure message shows.
const LOG_TAIL_LINES: usize = 60;

/// The path of a binary of this workspace: `$env_var` if set, else `name` in the target folder of
/// the running test (`target/debug/deps/test-xxx` → `target/debug/name`).
pub fn workspace_binary(name: &str, env_var: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the path of the test executable");
    let mut dir = exe
        .parent()
        .expect("the test executable's folder")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let binary = dir.join(name);
    assert!(
        binary.exists(),
        "{} not found; build it first: cargo build --bins (or set {env_var})",
        binary.display()
    );
    binary
}

/// The `lathe-node` binary (`$LATHE_NODE_BIN`, else next to the test executable).
pub fn node_binary() -> PathBuf {
    workspace_binary("lathe-node", "LATHE_NODE_BIN")
}

/// The `lathe` CLI binary (`$LATHE_BIN`, else next to the test executable).
pub fn cli_binary() -> PathBuf {
    workspace_binary("lathe", "LATHE_BIN")
}

/// Runs `lathe --addr ADDR ARGS...` to completion (stdin closed, no inherited `LATHE_ADDR`) and
/// returns its exit status, stdout and stderr.
pub fn run_cli(addr: &str, args: &[&str]) -> std::process::Output {
    Command::new(cli_binary())
        .arg("--addr")
        .arg(addr)
        .args(args)
        .env_remove("LATHE_ADDR")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("cannot run lathe {args:?}: {err}"))
}

/// A free loopback TCP port, never the same twice in one test process.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener
            .local_addr()
            .expect("local address of a bound listener")
            .port();
        if handed_out.insert(port) {
            return port;
        }
    }
}

/// The options of one `lathe-node` process; `start()` runs it and waits until it serves.
#[derive(Debug, Clone, Default)]
pub struct NodeBuilder {
    name: Option<String>,
    zookeeper: Option<String>,
    join: Vec<String>,
    cookie: Option<String>,
    data_dir: Option<PathBuf>,
    tags: Vec<String>,
    topology: Option<PathBuf>,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl NodeBuilder {
    pub fn new() -> Self {
        NodeBuilder::default()
    }

    /// `--name` (default `node-<http port>`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// `--zookeeper HOST:PORT[,...][/CHROOT]` (default: the embedded store).
    pub fn zookeeper(mut self, connect: impl Into<String>) -> Self {
        self.zookeeper = Some(connect.into());
        self
    }

    /// One more `--join CLUSTER_ADDR`.
    pub fn join(mut self, cluster_addr: impl Into<String>) -> Self {
        self.join.push(cluster_addr.into());
        self
    }

    /// `--cookie SECRET`.
    pub fn cookie(mut self, secret: impl Into<String>) -> Self {
        self.cookie = Some(secret.into());
        self
    }

    /// `--data-dir` (default: a fresh folder in the node's scratch directory).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// One more `--tag TAG`.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// `--topology FILE`.
    pub fn topology(mut self, file: impl Into<PathBuf>) -> Self {
        self.topology = Some(file.into());
        self
    }

    /// `--enable-chaos` (accept `POST /v1/actors/kill`).
    pub fn enable_chaos(self) -> Self {
        self.arg("--enable-chaos")
    }

    /// Any other argument, passed after the others.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// An environment variable of the process (e.g. `RUST_LOG`, `LATHE_COOKIE`).
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Spawns the process and waits until `GET /v1/health` answers 200 ([`START_DEADLINE`]).
    pub fn start(self) -> NodeProcess {
        let mut node = self.spawn();
        node.wait_healthy(START_DEADLINE);
        node
    }

    /// Spawns the process without waiting (e.g. to check that bad flags exit with code 2).
    pub fn spawn(self) -> NodeProcess {
        let (bind_port, http_port) = (free_port(), free_port());
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| format!("node-{http_port}"));
        let mut scratch = tempfile::Builder::new()
            .prefix(&format!("lathe-{name}-"))
            .tempdir()
            .expect("a scratch directory");
        if std::env::var_os("LATHE_TEST_KEEP_DIRS").is_some() {
            scratch.disable_cleanup(true);
            eprintln!(
                "lathe-tests: {name} keeps its files in {}",
                scratch.path().display()
            );
        }
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| scratch.path().join("data"));
        let cluster_addr = format!("127.0.0.1:{bind_port}");
        let http_addr = format!("127.0.0.1:{http_port}");
        let mut args = vec![
            "--name".to_string(),
            name.clone(),
            "--bind".into(),
            cluster_addr.clone(),
        ];
        args.extend([
            "--http".to_string(),
            http_addr.clone(),
            "--data-dir".into(),
            data_dir.display().to_string(),
        ]);
        let optional = [("--zookeeper", &self.zookeeper), ("--cookie", &self.cookie)];
        for (flag, value) in optional {
            if let Some(value) = value {
                args.extend([flag.to_string(), value.clone()]);
            }
        }
        if let Some(file) = &self.topology {
            args.extend(["--topology".to_string(), file.display().to_string()]);
        }
        self.join
            .iter()
            .for_each(|addr| args.extend(["--join".to_string(), addr.clone()]));
        self.tags
            .iter()
            .for_each(|tag| args.extend(["--tag".to_string(), tag.clone()]));
        args.extend(self.args);
        let mut node = NodeProcess {
            log_path: scratch.path().join("node.log"),
            name,
            binary: node_binary(),
            args,
            env: self.env,
            http_addr,
            cluster_addr,
            data_dir,
            scratch,
            child: None,
            starts: 0,
        };
        node.launch();
        node
    }
}

/// A running (or stopped) `lathe-node` process; killed when dropped.
#[derive(Debug)]
pub struct NodeProcess {
    name: String,
    binary: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    http_addr: String,
    cluster_addr: String,
    data_dir: PathBuf,
    log_path: PathBuf,
    scratch: tempfile::TempDir,
    child: Option<Child>,
    starts: u32,
}

impl NodeProcess {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The REST address, `127.0.0.1:PORT`.
    pub fn http_addr(&self) -> &str {
        &self.http_addr
    }

    /// The cluster (`--bind`) address, `127.0.0.1:PORT`: what other nodes `--join`.
    pub fn cluster_addr(&self) -> &str {
        &self.cluster_addr
    }

    /// The process id of the current (or last) process.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(Child::id)
            .expect("a node that was spawned")
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The scratch directory (log file, default data dir), removed on drop.
    pub fn scratch_dir(&self) -> &Path {
        self.scratch.path()
    }

    /// The command line arguments the node runs with.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Stdout and stderr of every start so far (each start is preceded by a `=== lathe-tests:`
    /// line).
    pub fn log_contents(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log_contents();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Whether the process is still running (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        self.exit_status().is_none() && self.child.is_some()
    }

    /// The exit status if the process has exited, `None` while it runs.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|child| child.try_wait().expect("waitpid on a node process"))
    }

    /// Waits until `GET /v1/health` answers 200; panics with the log tail if the process exits
    /// first or the deadline passes.
    pub fn wait_healthy(&mut self, deadline: Duration) {
        let http_addr = self.http_addr.clone();
        let outcome = try_wait_until(deadline, || {
            if let Some(status) = self.exit_status() {
                return Ok(Err(status));
            }
            if http::is_healthy(&http_addr) {
                Ok(Ok(()))
            } else {
                Err("no 200 from GET /v1/health")
            }
        });
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(status)) => panic!(
                "{} exited ({status}) before serving GET /v1/health\n{}",
                self.name,
                self.log_note()
            ),
            Err(observed) => panic!(
                "{} did not serve within {deadline:?} ({observed})\n{}",
                self.name,
                self.log_note()
            ),
        }
    }

    /// Waits until the process exits by itself and returns its status; panics with the log tail on
    /// timeout.
    pub fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let name = self.name.clone();
        match try_wait_until(deadline, || self.exit_status()) {
            Ok(status) => status,
            Err(_) => panic!("{name} still runs after {deadline:?}\n{}", self.log_note()),
        }
    }

    /// SIGKILL, then reaps the process; does nothing if it is not running.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if child.try_wait().ok().flatten().is_none() {
                child.kill().ok();
                child.wait().ok();
            }
        }
    }

    /// SIGTERM (graceful drain) and waits for the exit ([`STOP_DEADLINE`]); returns the exit
    /// status. On timeout the process is killed and the call panics with the log tail.
    pub fn terminate(&mut self) -> ExitStatus {
        if let Some(status) = self.exit_status() {
            return status;
        }
        self.signal("TERM");
        let name = self.name.clone();
        match try_wait_until(STOP_DEADLINE, || self.exit_status()) {
            Ok(status) => status,
            Err(_) => {
                let note = self.log_note();
                self.kill();
                panic!("{name} did not exit within {STOP_DEADLINE:?} of SIGTERM\n{note}")
            }
        }
    }

    /// SIGSTOP: the process freezes (its peers stop hearing from it) until [`NodeProcess::resume`].
    pub fn pause(&mut self) {
        self.signal("STOP");
    }

    /// SIGCONT after [`NodeProcess::pause`].
    pub fn resume(&mut self) {
        self.signal("CONT");
    }

    /// Sends a signal by name (`TERM`, `INT`, `STOP`, ...) with `kill(1)`.
    pub fn signal(&mut self, signal: &str) {
        let pid = self.pid().to_string();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(&pid)
            .status();
        assert!(
            matches!(status, Ok(s) if s.success()),
            "kill -{signal} {pid} ({}) failed: {status:?}",
            self.name
        );
    }

    /// Starts the node again with the same arguments, ports and data dir (killing it first if it
    /// still runs) and waits until it serves.
    pub fn restart(&mut self) {
        self.respawn();
        self.wait_healthy(START_DEADLINE);
    }

    /// Like [`NodeProcess::restart`], without waiting.
    pub fn respawn(&mut self) {
        self.kill();
        self.launch();
    }

    /// `GET path` on this node.
    pub fn get_json(&self, path: &str) -> http::Reply {
        http::get_json(&self.http_addr, path)
    }

    /// The entries of `GET /v1/members`.
    pub fn members(&self) -> Result<Vec<Value>, String> {
        let reply = http::try_get_json(&self.http_addr, "/v1/members")?;
        let members = reply
            .body
            .get("members")
            .or(Some(&reply.body))
            .and_then(Value::as_array);
        match members {
            Some(members) if reply.status == 200 => Ok(members.clone()),
            _ => Err(format!(
                "GET /v1/members on {} answered {}: {}",
                self.name, reply.status, reply.text
            )),
        }
    }

    /// The names of the members this node lists as `alive`, sorted.
    pub fn alive_member_names(&self) -> Result<Vec<String>, String> {
        let mut names: Vec<String> = self
            .members()?
            .iter()
            .filter(|m| m.get("status").and_then(Value::as_str) == Some("alive"))
            .filter_map(|m| m.get("name").and_then(Value::as_str).map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    fn launch(&mut self) {
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open the node log");
        let command_line = format!("{} {}", self.binary.display(), self.args.join(" "));
        writeln!(
            log,
            "=== lathe-tests: start #{} of {}: {command_line}",
            self.starts, self.name
        )
        .ok();
        let mut command = Command::new(&self.binary);
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(clone_file(&log))
            .stderr(log);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("LATHE_") {
                command.env_remove(name);
            }
        }
        if std::env::var_os("RUST_BACKTRACE").is_none() {
            command.env("RUST_BACKTRACE", "1");
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run {command_line}: {err}"));
        self.child = Some(child);
    }

    fn log_note(&self) -> String {
        format!(
            "--- last {LOG_TAIL_LINES} lines of {} ({}) ---\n{}\n--- end of log ---",
            self.name,
            self.log_path.display(),
            self.log_tail(LOG_TAIL_LINES)
        )
    }
}

fn clone_file(file: &File) -> File {
    file.try_clone().expect("duplicate the log file handle")
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_note());
        }
        self.kill();
    }
}

/// `n` nodes: node 0 founds the cluster, the others `--join` it.
#[derive(Debug)]
pub struct Cluster {
    nodes: Vec<NodeProcess>,
    template: NodeBuilder,
    prefix: String,
}

impl Cluster {
    /// Starts `n` nodes named `<template name or "node">-<i>` from `template` (a template data dir
    /// becomes one sub-folder per node) and waits until every node lists all `n` as alive
    /// ([`MEMBERSHIP_DEADLINE`]).
    pub fn start(n: usize, template: NodeBuilder) -> Cluster {
        assert!(n > 0, "a cluster has at least one node");
        let prefix = template.name.clone().unwrap_or_else(|| "node".to_string());
        let mut cluster = Cluster {
            nodes: Vec::with_capacity(n),
            template,
            prefix,
        };
        let founder = cluster.builder(0, None).start();
        let seed = founder.cluster_addr().to_string();
        cluster.nodes.push(founder);
        let mut joiners: Vec<NodeProcess> = (1..n)
            .map(|i| cluster.builder(i, Some(&seed)).spawn())
            .collect();
        joiners
            .iter_mut()
            .for_each(|node| node.wait_healthy(START_DEADLINE));
        cluster.nodes.extend(joiners);
        cluster.wait_all_alive(MEMBERSHIP_DEADLINE);
        cluster
    }

    /// Adds one node that joins a running node, and waits until all running nodes see each other
    /// alive.
    pub fn add_node(&mut self) -> &mut NodeProcess {
        let seed = self
            .nodes
            .iter_mut()
            .find_map(|n| n.is_running().then(|| n.cluster_addr.clone()));
        let seed = seed.expect("a running node to join");
        let node = self.builder(self.nodes.len(), Some(&seed)).start();
        self.nodes.push(node);
        self.wait_all_alive(MEMBERSHIP_DEADLINE);
        self.nodes.last_mut().expect("the node just added")
    }

    /// Waits until every running node lists exactly the running nodes as alive.
    pub fn wait_all_alive(&mut self, deadline: Duration) {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_running())
            .collect();
        let mut expected: Vec<String> = running
            .iter()
            .map(|&i| self.nodes[i].name.clone())
            .collect();
        expected.sort();
        let what = format!("every running node to list {expected:?} as alive");
        let nodes = &self.nodes;
        wait_until(&what, deadline, || {
            let views: Vec<String> = running
                .iter()
                .filter_map(|&i| match nodes[i].alive_member_names() {
                    Ok(names) if names == expected => None,
                    Ok(names) => Some(format!("{} sees {names:?}", nodes[i].name)),
                    Err(err) => Some(err),
                })
                .collect();
            if views.is_empty() {
                Ok(())
            } else {
                Err(views.join("; "))
            }
        });
    }

    pub fn nodes(&self) -> &[NodeProcess] {
        &self.nodes
    }

    pub fn node(&self, i: usize) -> &NodeProcess {
        &self.nodes[i]
    }

    pub fn node_mut(&mut self, i: usize) -> &mut NodeProcess {
        &mut self.nodes[i]
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The REST addresses of all nodes, in order.
    pub fn http_addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.http_addr.clone()).collect()
    }

    fn builder(&self, index: usize, seed: Option<&str>) -> NodeBuilder {
        let name = format!("{}-{index}", self.prefix);
        let mut builder = self.template.clone().name(&name);
        if let Some(dir) = &self.template.data_dir {
            builder = builder.data_dir(dir.join(&name));
        }
        match seed {
            Some(seed) => builder.join(seed),
            None => builder,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_and_bindable() {
        let ports: HashSet<u16> = (0..20).map(|_| free_port()).collect();
        assert_eq!(ports.len(), 20);
        let port = *ports.iter().next().unwrap();
        TcpListener::bind(("127.0.0.1", port)).expect("a free port binds");
    }

    #[test]
    fn missing_binaries_say_how_to_build_them() {
        let panic = std::panic::catch_unwind(|| {
            workspace_binary("no-such-binary", "LATHE_TESTS_NO_SUCH_VAR")
        });
        let message = panic
            .unwrap_err()
            .downcast_ref::<String>()
            .cloned()
            .unwrap();
        assert!(
            message.contains("build it first: cargo build --bins"),
            "{message}"
        );
    }

    #[test]
    fn cluster_builders_name_nodes_split_data_dirs_and_join_the_seed() {
        let cluster = Cluster {
            nodes: Vec::new(),
            template: NodeBuilder::new().name("zk").data_dir("/tmp/d").tag("lb"),
            prefix: "zk".to_string(),
        };
        let builder = cluster.builder(2, Some("127.0.0.1:9"));
        assert_eq!(builder.name.as_deref(), Some("zk-2"));
        assert_eq!(builder.data_dir, Some(PathBuf::from("/tmp/d/zk-2")));
        assert_eq!(
            (builder.join, builder.tags),
            (vec!["127.0.0.1:9".to_string()], vec!["lb".to_string()])
        );
    }

    /// A stand-in for lathe-node (`sh -c`): exercises spawn, the log, exit statuses, SIGTERM and
    /// restart.
    fn fake_node(script: &str) -> NodeProcess {
        let scratch = tempfile::tempdir().unwrap();
        let mut node = NodeProcess {
            name: "fake".into(),
            binary: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), script.into()],
            env: vec![("LATHE_FAKE".into(), "from-builder".into())],
            http_addr: format!("127.0.0.1:{}", free_port()),
            cluster_addr: format!("127.0.0.1:{}", free_port()),
            data_dir: scratch.path().join("data"),
            log_path: scratch.path().join("node.log"),
            scratch,
            child: None,
            starts: 0,
        };
        node.launch();
        node
    }

    #[test]
    fn processes_log_exit_and_restart() {
        let mut node = fake_node("echo started $LATHE_FAKE; echo oops >&2; exit 3");
        assert_eq!(node.wait_exit(Duration::from_secs(10)).code(), Some(3));
        node.respawn();
        node.wait_exit(Duration::from_secs(10));
        let log = node.log_contents();
        assert_eq!(log.matches("started from-builder").count(), 2, "{log}");
        assert!(
            log.contains("oops") && log.contains("=== lathe-tests: start #2 of fake"),
            "{log}"
        );
    }

    #[test]
    fn terminate_sends_sigterm_and_returns_the_status() {
        let mut node =
            fake_node("trap 'exit 0' TERM; echo trapped; while true; do sleep 0.05; done");
        // A line of its own: the log's first line, the command line, contains the word too.
        wait_until("the trap", Duration::from_secs(10), || {
            node.log_contents().lines().any(|line| line == "trapped")
        });
        assert!(node.is_running());
        let status = node.terminate();
        assert_eq!(status.code(), Some(0), "{status:?}");
        assert!(!node.is_running());
        node.respawn();
        node.kill();
        assert!(!node.is_running());
    }

    #[test]
    fn nodes_that_exit_before_serving_fail_with_their_log() {
        let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut node = fake_node("echo 'error: --bind: address in use'; exit 2");
            node.wait_healthy(Duration::from_secs(10));
        }));
        let message = panic
            .unwrap_err()
            .downcast_ref::<String>()
            .cloned()
            .unwrap();
        assert!(
            message.contains("fake exited (exit status: 2) before serving"),
            "{message}"
        );
        assert!(
            message.contains("error: --bind: address in use"),
            "{message}"
        );
    }
}
