//! `lathe up` end to end (the local process backend, `make run`): three real `lathe-node` processes
//! with the embedded store and the seed topology; the load balancer it prints answers; a node
//! SIGKILLed is restarted by `lathe up` and rejoins with a new pid; SIGTERM stops `lathe up` with
//! exit code 0 and leaves no node behind.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lathe_tests::http;
use lathe_tests::node::cli_binary;
use lathe_tests::wait::{try_wait_until, wait_until};
use serde_json::Value;

/// Three nodes, then 13 instances, on a busy two-core machine.
const UP_DEADLINE: Duration = Duration::from_secs(240);
/// A SIGKILLed node restarted and seen alive again by its peers.
const RESTART_DEADLINE: Duration = Duration::from_secs(120);
/// SIGTERM to `lathe up` until it exits (it gives its nodes 10 s to drain).
const STOP_DEADLINE: Duration = Duration::from_secs(60);
const NODES: u16 = 3;

/// A running `lathe up`, its output collected line by line; on drop (a failing test) it is stopped,
/// and any node whose pid it printed is SIGKILLed.
struct LatheUp {
    child: Child,
    output: Arc<Mutex<String>>,
}

impl LatheUp {
    fn start(args: &[String]) -> LatheUp {
        let mut command = Command::new(cli_binary());
        command
            .arg("up")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("LATHE_") {
                command.env_remove(name);
            }
        }
        let mut child = command.spawn().expect("run lathe up");
        let output = Arc::new(Mutex::new(String::new()));
        collect(child.stdout.take().expect("piped stdout"), &output);
        collect(child.stderr.take().expect("piped stderr"), &output);
        LatheUp { child, output }
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Every `(pid N)` of a "serving" line: each node process `lathe up` started.
    fn printed_pids(&self) -> Vec<u32> {
        self.output()
            .lines()
            .filter_map(|line| {
                line.split("(pid ")
                    .nth(1)?
                    .trim_end_matches(')')
                    .parse()
                    .ok()
            })
            .collect()
    }

    fn signal(&self, signal: &str) {
        signal_pid(self.child.id(), signal);
    }

    fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let child = &mut self.child;
        let outcome = try_wait_until(deadline, || child.try_wait().ok().flatten());
        outcome.unwrap_or_else(|_| panic!("lathe up still runs after {deadline:?}"))
    }
}

impl Drop for LatheUp {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- lathe up's output ---\n{}--- end ---", self.output());
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal("TERM");
            let child = &mut self.child;
            if try_wait_until(STOP_DEADLINE, || child.try_wait().ok().flatten()).is_err() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for pid in self.printed_pids() {
            if process_exists(pid) {
                signal_pid(pid, "KILL");
            }
        }
    }
}

fn collect(stream: impl Read + Send + 'static, output: &Arc<Mutex<String>>) {
    let output = output.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut output = output.lock().unwrap();
            output.push_str(&line);
            output.push('\n');
        }
    });
}

fn signal_pid(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
    assert!(
        matches!(status, Ok(s) if s.success()),
        "kill -{signal} {pid}: {status:?}"
    );
}

/// Whether `pid` is a process that has not been reaped (a zombie counts as gone).
fn process_exists(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit(')')
                .next()
                .map(str::trim_start)
                .map(|s| !s.starts_with('Z'))
        })
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// A base port where `count` consecutive loopback ports are free, below the ephemeral range (task
/// instances bind port 0, so they never take a node's fixed port) and away from `avoid`.
fn free_base(count: u16, avoid: Option<u16>) -> u16 {
    let start = 20_000 + (std::process::id() % 500) as u16 * 20;
    (0..500u16)
        .map(|step| 20_000 + (start - 20_000 + step * 20) % 10_000)
        .filter(|base| avoid.is_none_or(|other| base.abs_diff(other) >= 20))
        .find(|&base| {
            (base..base + count).all(|port| TcpListener::bind(("127.0.0.1", port)).is_ok())
        })
        .expect("a free range of loopback ports between 20000 and 30000")
}

/// `(name, pid, status)` of every member node `addr` lists.
fn members(addr: &str) -> Result<Vec<(String, u64, String)>, String> {
    let reply = http::try_get_json(addr, "/v1/members")?;
    let members = reply.body["members"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    Ok(members
        .iter()
        .map(|m| {
            let text = |key: &str| m[key].as_str().unwrap_or_default().to_string();
            (text("name"), m["pid"].as_u64().unwrap_or(0), text("status"))
        })
        .collect())
}

/// The URLs of the `task.http.lb: http://... http://...` line `lathe up` printed last (or of the
/// last `task.http.lb moved: ...` line).
fn printed_lb_urls(output: &str) -> Option<Vec<String>> {
    let urls = output.lines().rev().find_map(|line| {
        line.strip_prefix("task.http.lb: ")
            .or_else(|| line.strip_prefix("task.http.lb moved: "))
    })?;
    let urls: Vec<String> = urls.split_whitespace().map(str::to_string).collect();
    (!urls.is_empty()).then_some(urls)
}

fn get_index(url: &str) -> Result<(u16, String), String> {
    let addr = url.trim_start_matches("http://");
    http::try_get_json(addr, "/get/index").map(|reply| (reply.status, reply.text))
}

#[test]
fn lathe_up_serves_the_seed_restarts_a_killed_node_and_stops_cleanly() {
    let topology = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/my_topology.toml");
    let data_dir = tempfile::tempdir().expect("a data dir");
    let http_base = free_base(NODES, None);
    let cluster_base = free_base(NODES, Some(http_base));
    let addr = |i: u16| format!("127.0.0.1:{}", http_base + i);
    let args: Vec<String> = [
        "--nodes",
        &NODES.to_string(),
        "--topology",
        &topology.display().to_string(),
        "--http-base",
        &http_base.to_string(),
        "--cluster-base",
        &cluster_base.to_string(),
        "--data-dir",
        &data_dir.path().display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut up = LatheUp::start(&args);

    // The LB endpoints are printed once the 13 instances run, and the LB answers.
    let lb_urls = wait_until("lathe up to print the LB endpoints", UP_DEADLINE, || {
        printed_lb_urls(&up.output())
    });
    assert_eq!(lb_urls.len(), 3, "{}", up.output());
    assert_eq!(get_index(&lb_urls[0]), Ok((200, ":)".to_string())));
    let output = up.output();
    assert!(
        output.contains("lathe up: 13 of 13 instances running"),
        "{output}"
    );
    assert!(
        output.contains("entry point task.http.lb: curl http://"),
        "{output}"
    );
    let log = data_dir.path().join("local-1/node.log");
    assert!(log.exists(), "no {}", log.display());

    // SIGKILL local-1 (its pid from local-0's /v1/members): lathe up restarts it and it rejoins.
    let before = members(&addr(0)).expect("members on local-0");
    let old_pid = before
        .iter()
        .find(|(name, _, _)| name == "local-1")
        .map(|(_, pid, _)| *pid)
        .expect("local-1 in /v1/members");
    assert!(
        process_exists(old_pid as u32),
        "pid {old_pid} of local-1 runs"
    );
    signal_pid(old_pid as u32, "KILL");
    wait_until(
        "local-1 back with a new pid, all 3 alive",
        RESTART_DEADLINE,
        || {
            let members = members(&addr(0))?;
            let alive = members
                .iter()
                .filter(|(_, _, status)| status == "alive")
                .count();
            let local1 = members.iter().find(|(name, _, _)| name == "local-1");
            match local1 {
                Some((_, pid, status)) if *pid != old_pid && status == "alive" && alive == 3 => {
                    Ok(())
                }
                _ => Err(format!("{members:?}")),
            }
        },
    );
    wait_until("lathe up to report the restart", RESTART_DEADLINE, || {
        let output = up.output();
        output.contains("local-1 exited (signal 9): restarting")
            && output.contains("local-1 serving again at http://")
    });

    // The LB still answers (through wherever its instances run now).
    wait_until(
        "an LB endpoint to answer GET /get/index",
        RESTART_DEADLINE,
        || {
            let reply = http::try_get_json(&addr(0), "/v1/services/http/lb")?;
            let endpoints: Vec<Value> = reply.body.as_array().cloned().unwrap_or_default();
            let answers: Vec<_> = endpoints
                .iter()
                .filter_map(|e| e["http"].as_str())
                .map(|http| get_index(&format!("http://{http}")))
                .collect();
            if !answers.is_empty() && answers.iter().all(|a| a == &Ok((200, ":)".to_string()))) {
                Ok(())
            } else {
                Err(format!("{answers:?}"))
            }
        },
    );

    // SIGTERM: exit 0, every node process gone, every port free again.
    let pids = up.printed_pids();
    assert!(pids.len() >= 4, "3 starts and 1 restart: {}", up.output());
    up.signal("TERM");
    let status = up.wait_exit(STOP_DEADLINE);
    assert!(
        status.success(),
        "lathe up exited with {status}\n{}",
        up.output()
    );
    for pid in pids {
        assert!(!process_exists(pid), "node pid {pid} still runs");
    }
    for port in (http_base..http_base + NODES).chain(cluster_base..cluster_base + NODES) {
        TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|err| panic!("port {port} still taken after lathe up stopped: {err}"));
    }
    assert!(
        up.output().contains("lathe up: every node stopped"),
        "{}",
        up.output()
    );
    // The nodes stopped together, and none waited out its leave for peers that were leaving too.
    for i in 0..NODES {
        let log = std::fs::read_to_string(data_dir.path().join(format!("local-{i}/node.log")))
            .expect("the node's log");
        assert!(
            !log.contains("left without every acknowledgement"),
            "local-{i} waited for a leaving peer:\n{log}"
        );
    }
}

#[test]
fn lathe_up_refuses_a_busy_port_before_starting_anything() {
    // An ephemeral port held here: node 0's REST port, the first one checked.
    let taken = TcpListener::bind("127.0.0.1:0").expect("take a port");
    let port = taken.local_addr().expect("its address").port();
    let data_dir = tempfile::tempdir().expect("a data dir");
    let output = Command::new(cli_binary())
        .args(["up", "--nodes", "3", "--http-base", &port.to_string()])
        .args(["--cluster-base", &(port + 10).to_string(), "--data-dir"])
        .arg(data_dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run lathe up");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("port {port} is not free")),
        "{stderr}"
    );
    assert!(
        !data_dir.path().join("local-0").exists(),
        "nothing may start before the ports are checked"
    );
}
