//! Multi-process membership tests: this test binary re-runs itself as membership nodes.
//!
//! ```text
//! test (parent) ──spawns──▶ <this exe> --exact membership_child_node   env LATHE_MEMBERSHIP_CHILD={spec}
//!      ▲                        │ stdout: "LATHE-MEMBERS {json}" every 100 ms
//!      └────── reads ───────────┘ stderr: tracing log; stdin: "leave" = graceful shutdown, EOF = exit
//! ```
//!
//! ractor process groups are per process, so real membership needs real processes. Every wait is
//! a condition with a generous deadline; nothing sleeps a fixed time.

use std::time::{Duration, Instant};

use lathe_actors::membership::MemberStatus;
use support::{free_port, run_child_if_requested, serial, Node, Spec};

const CONVERGE: Duration = Duration::from_secs(60);
/// The default `dead_after` (3 s) plus slack for a loaded 2-core machine.
const DEAD_WITHIN: Duration = Duration::from_secs(3 + 12);

/// Not a test on its own: the body of a child node when `LATHE_MEMBERSHIP_CHILD` is set.
#[test]
fn membership_child_node() {
    run_child_if_requested();
}

fn seed(port: u16) -> Vec<String> {
    vec![format!("127.0.0.1:{port}")]
}

#[test]
fn membership_three_nodes_then_a_killed_one_goes_suspect_then_dead_and_rejoins() {
    let _serial = serial();
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let a = Node::start(Spec::new("a", pa, "secret", vec![]));
    let b = Node::start(Spec::new("b", pb, "secret", seed(pa)));
    let mut c = Node::start(Spec::new("c", pc, "secret", seed(pa)));
    for node in [&a, &b, &c] {
        node.wait_for("3 alive", CONVERGE, |s| s.count(MemberStatus::Alive) == 3);
    }
    let old_pid = a.latest().status_view("c").map(|v| v.pid);

    let killed_at = Instant::now();
    c.kill();
    for node in [&a, &b] {
        node.wait_for("c not alive", DEAD_WITHIN, |s| {
            s.status("c") != Some(MemberStatus::Alive)
        });
        node.wait_for("c dead", DEAD_WITHIN, |s| {
            s.status("c") == Some(MemberStatus::Dead)
        });
        let history = node.history();
        let first = |st| {
            history
                .iter()
                .position(|s| s.at > killed_at && s.status("c") == Some(st))
        };
        let (suspect, dead) = (first(MemberStatus::Suspect), first(MemberStatus::Dead));
        assert!(
            suspect.is_some() && suspect < dead,
            "{}: c went dead without being suspect first",
            node.name
        );
        assert!(killed_at.elapsed() < DEAD_WITHIN + Duration::from_secs(5));
        assert_eq!(
            node.latest().count(MemberStatus::Alive),
            2,
            "{}: a and b stay alive",
            node.name
        );
    }

    // A restarted node with the same name and address rejoins with a newer incarnation.
    let c = Node::start(Spec::new("c", pc, "secret", seed(pa)));
    for node in [&a, &b, &c] {
        node.wait_for("3 alive after restart", CONVERGE, |s| {
            s.count(MemberStatus::Alive) == 3
        });
    }
    let new_pid = a.latest().status_view("c").map(|v| v.pid);
    assert_ne!(old_pid, new_pid, "a should list the new process of c");
}

#[test]
fn membership_peers_reconnect_a_restarted_node_that_has_no_seeds() {
    let _serial = serial();
    let (pa, pb) = (free_port(), free_port());
    let mut a = Node::start(Spec::new("a", pa, "secret", vec![]));
    let b = Node::start(Spec::new("b", pb, "secret", seed(pa)));
    b.wait_for("a alive", CONVERGE, |s| {
        s.status("a") == Some(MemberStatus::Alive)
    });

    // a founds again with no seeds: only b reconnecting to it can bring them together.
    a.kill();
    b.wait_for("a not alive", DEAD_WITHIN, |s| {
        s.status("a") != Some(MemberStatus::Alive)
    });
    let a = Node::start(Spec::new("a", pa, "secret", vec![]));
    a.wait_for("b alive at a", CONVERGE, |s| {
        s.status("b") == Some(MemberStatus::Alive)
    });
    b.wait_for("a alive again", CONVERGE, |s| {
        s.status("a") == Some(MemberStatus::Alive)
    });
}

#[test]
fn membership_graceful_leave_is_dead_at_once() {
    let _serial = serial();
    let (pa, pb) = (free_port(), free_port());
    let a = Node::start(Spec::new("a", pa, "secret", vec![]));
    let mut b = Node::start(Spec::new("b", pb, "secret", seed(pa)));
    a.wait_for("b alive", CONVERGE, |s| {
        s.status("b") == Some(MemberStatus::Alive)
    });
    b.wait_for("a alive", CONVERGE, |s| {
        s.status("a") == Some(MemberStatus::Alive)
    });

    b.leave();
    b.wait_for_exit(CONVERGE);
    a.wait_for("b dead", DEAD_WITHIN, |s| {
        s.status("b") == Some(MemberStatus::Dead)
    });
    a.wait_for_log("b dead because it left", CONVERGE, |line| {
        line.contains("member dead") && line.contains("Left")
    });
    assert!(
        b.stdout_contains("\"left\":true"),
        "b should confirm it left"
    );
}

#[test]
fn membership_wrong_cookie_is_refused_and_logged_on_both_sides() {
    let _serial = serial();
    let (pa, pd) = (free_port(), free_port());
    let a = Node::start(Spec::new("a", pa, "right-cookie", vec![]));
    a.wait_for("a up", CONVERGE, |s| s.count(MemberStatus::Alive) == 1);
    let d = Node::start(Spec::new("d", pd, "wrong-cookie", seed(pa)));

    let refused = d.wait_for("d refused", CONVERGE, |s| s.join.starts_with("Refused"));
    assert!(refused.refusals >= 1);
    let seed_addr = format!("127.0.0.1:{pa}");
    d.wait_for_log("refusal logged by the joiner", CONVERGE, |l| {
        l.contains("ERROR")
            && l.contains("refused")
            && l.contains("cookie")
            && l.contains(&seed_addr)
    });
    a.wait_for_log("refusal logged by the seed", CONVERGE, |l| {
        l.contains("ERROR") && l.contains("refused") && l.contains("cookie")
    });
    assert_eq!(d.latest().members.len(), 1, "d sees only itself");
    assert!(a.latest().status("d").is_none(), "a never lists d");
}

#[test]
fn membership_zookeeper_discovers_members_without_seeds_and_survives_its_loss() {
    let _serial = serial();
    // `make test` installs ZooKeeper: a missing one is a failure, not a skip.
    let mut zk =
        lathe_tests::zk::ZkServer::start().expect("start zookeeper (apt-get install zookeeper)");
    let connect = format!("{}/lathe-membership-test", zk.connect_string());
    let (pa, pb) = (free_port(), free_port());
    let a = Node::start(Spec::new("a", pa, "secret", vec![]).zookeeper(&connect));
    let mut b = Node::start(Spec::new("b", pb, "secret", vec![]).zookeeper(&connect));
    for node in [&a, &b] {
        node.wait_for("2 alive through zookeeper", CONVERGE, |s| {
            s.count(MemberStatus::Alive) == 2
        });
    }
    support::wait_for_zookeeper_members(&connect, &["a", "b"], CONVERGE);

    zk.stop().expect("stop zookeeper");
    let seen = a.history().len();
    a.wait_for("a keeps running without zookeeper", CONVERGE, |s| {
        s.seq > seen + 20
    });
    assert!(a.history()[seen..]
        .iter()
        .all(|s| s.status("b") == Some(MemberStatus::Alive)));

    b.kill();
    a.wait_for("b dead on heartbeats alone", DEAD_WITHIN, |s| {
        s.status("b") == Some(MemberStatus::Dead)
    });
}

#[test]
/// A paused node's session expires; it comes back with a new session and a newer incarnation.
/// (Whether it fences meanwhile depends on timing: see tests/tests/failovers/fencing.rs for a
/// node that stays cut off.)
fn membership_zookeeper_session_expiry_is_followed_by_a_new_session_and_member_node() {
    let _serial = serial();
    // `make test` installs ZooKeeper: a missing one is a failure, not a skip.
    let zk =
        lathe_tests::zk::ZkServer::start().expect("start zookeeper (apt-get install zookeeper)");
    let connect = format!("{}/lathe-fencing-test", zk.connect_string());
    let (pa, pb) = (free_port(), free_port());
    let a = Node::start(Spec::new("a", pa, "secret", vec![]).zookeeper(&connect));
    let b = Node::start(Spec::new("b", pb, "secret", seed(pa)).zookeeper(&connect));
    for node in [&a, &b] {
        node.wait_for("2 alive", CONVERGE, |s| s.count(MemberStatus::Alive) == 2);
    }
    support::wait_for_zookeeper_members(&connect, &["a", "b"], CONVERGE);

    // Frozen past its session timeout, b loses its member node: dead for a.
    b.signal("STOP");
    a.wait_for("b dead", CONVERGE, |s| {
        s.status("b") == Some(MemberStatus::Dead)
    });
    support::wait_for_zookeeper_members(&connect, &["a"], CONVERGE);
    b.signal("CONT");

    b.wait_for_log("expiry logged", CONVERGE, |l| {
        l.contains("zookeeper session expired")
    });
    support::wait_for_zookeeper_members(&connect, &["a", "b"], CONVERGE);
    a.wait_for("b alive again", CONVERGE, |s| {
        s.status("b") == Some(MemberStatus::Alive)
    });
    b.wait_for("b unfenced", CONVERGE, |s| {
        !s.fenced && s.count(MemberStatus::Alive) == 2
    });
}

/// The child-process harness: specs, spawning, parsing snapshots, waiting with deadlines.
mod support {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Child, ChildStdin, Command, Stdio};
    use std::sync::{Arc, Mutex, MutexGuard};
    use std::time::{Duration, Instant};

    use lathe_actors::membership::{start_membership, MemberStatus, MemberView, MembershipConfig};
    use serde::{Deserialize, Serialize};

    const CHILD_ENV: &str = "LATHE_MEMBERSHIP_CHILD";
    const MARK: &str = "LATHE-MEMBERS ";

    /// Multi-process tests run one at a time: a 2-core machine is busy enough with one cluster.
    pub(crate) fn serial() -> MutexGuard<'static, ()> {
        static SERIAL: Mutex<()> = Mutex::new(());
        SERIAL
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) use lathe_tests::node::free_port;

    /// What a child node runs with.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub(crate) struct Spec {
        name: String,
        cluster_port: u16,
        cookie: String,
        join: Vec<String>,
        zookeeper: Option<String>,
    }

    impl Spec {
        pub(crate) fn new(name: &str, cluster_port: u16, cookie: &str, join: Vec<String>) -> Spec {
            Spec {
                name: name.into(),
                cluster_port,
                cookie: cookie.into(),
                join,
                zookeeper: None,
            }
        }

        pub(crate) fn zookeeper(mut self, connect: &str) -> Spec {
            self.zookeeper = Some(connect.to_string());
            self
        }
    }

    /// One line a child prints every 100 ms.
    #[derive(Debug, Clone, Deserialize)]
    pub(crate) struct Snapshot {
        #[serde(skip, default = "Instant::now")]
        pub(crate) at: Instant,
        #[serde(skip)]
        pub(crate) seq: usize,
        pub(crate) members: Vec<MemberView>,
        pub(crate) join: String,
        pub(crate) refusals: usize,
        pub(crate) fenced: bool,
    }

    impl Snapshot {
        pub(crate) fn status_view(&self, name: &str) -> Option<&MemberView> {
            self.members.iter().find(|m| m.name == name)
        }

        pub(crate) fn status(&self, name: &str) -> Option<MemberStatus> {
            self.status_view(name).map(|m| m.status)
        }

        pub(crate) fn count(&self, status: MemberStatus) -> usize {
            self.members.iter().filter(|m| m.status == status).count()
        }
    }

    /// A child node process; killed when dropped.
    pub(crate) struct Node {
        pub(crate) name: String,
        child: Child,
        stdin: Option<ChildStdin>,
        snapshots: Arc<Mutex<Vec<Snapshot>>>,
        stdout: Arc<Mutex<Vec<String>>>,
        stderr: Arc<Mutex<Vec<String>>>,
    }

    impl Node {
        pub(crate) fn start(spec: Spec) -> Node {
            let exe = std::env::current_exe().expect("current test executable");
            let mut child = Command::new(exe)
                .args([
                    "membership_child_node",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, serde_json::to_string(&spec).expect("spec json"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn a child node");
            let snapshots = Arc::new(Mutex::new(Vec::new()));
            let (stdout, stderr) = (
                Arc::new(Mutex::new(Vec::new())),
                Arc::new(Mutex::new(Vec::new())),
            );
            let out = BufReader::new(child.stdout.take().expect("child stdout"));
            let (snaps, lines) = (snapshots.clone(), stdout.clone());
            std::thread::spawn(move || {
                for line in out.lines().map_while(Result::ok) {
                    if let Some(json) = line.strip_prefix(MARK) {
                        if let Ok(mut snapshot) = serde_json::from_str::<Snapshot>(json) {
                            let mut snaps = snaps.lock().unwrap();
                            snapshot.seq = snaps.len();
                            snaps.push(snapshot);
                            continue;
                        }
                    }
                    lines.lock().unwrap().push(line);
                }
            });
            let err = BufReader::new(child.stderr.take().expect("child stderr"));
            let lines = stderr.clone();
            std::thread::spawn(move || {
                for line in err.lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
            let stdin = child.stdin.take();
            Node {
                name: spec.name,
                child,
                stdin,
                snapshots,
                stdout,
                stderr,
            }
        }

        pub(crate) fn history(&self) -> Vec<Snapshot> {
            self.snapshots.lock().unwrap().clone()
        }

        pub(crate) fn latest(&self) -> Snapshot {
            self.history()
                .pop()
                .unwrap_or_else(|| panic!("{}: no snapshot yet", self.name))
        }

        /// Waits until the latest snapshot satisfies `condition`; panics with the child's log.
        pub(crate) fn wait_for(
            &self,
            what: &str,
            deadline: Duration,
            condition: impl Fn(&Snapshot) -> bool,
        ) -> Snapshot {
            let found = poll(deadline, || self.history().pop().filter(|s| condition(s)));
            found.unwrap_or_else(|| self.fail(what))
        }

        pub(crate) fn wait_for_log(
            &self,
            what: &str,
            deadline: Duration,
            condition: impl Fn(&str) -> bool,
        ) {
            let found = poll(deadline, || {
                self.stderr
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|l| condition(l))
                    .then_some(())
            });
            found.unwrap_or_else(|| self.fail(what))
        }

        pub(crate) fn wait_for_exit(&mut self, deadline: Duration) {
            let exited = poll(deadline, || self.child.try_wait().ok().flatten());
            exited.unwrap_or_else(|| self.fail("exit"));
        }

        pub(crate) fn stdout_contains(&self, text: &str) -> bool {
            self.stdout.lock().unwrap().iter().any(|l| l.contains(text))
        }

        pub(crate) fn kill(&mut self) {
            self.signal_quietly("CONT");
            let _ = self.child.kill();
            let _ = self.child.wait();
        }

        /// Freezes (`STOP`) or thaws (`CONT`) the child, as a long GC pause or a partition would.
        pub(crate) fn signal(&self, signal: &str) {
            let status = Command::new("kill")
                .args([&format!("-{signal}"), &self.child.id().to_string()])
                .status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "kill -{signal} {}",
                self.child.id()
            );
        }

        pub(crate) fn leave(&mut self) {
            let stdin = self.stdin.as_mut().expect("child stdin");
            writeln!(stdin, "leave").expect("tell the child to leave");
        }

        fn signal_quietly(&self, signal: &str) {
            let _ = Command::new("kill")
                .args([&format!("-{signal}"), &self.child.id().to_string()])
                .stderr(Stdio::null())
                .status();
        }

        fn fail(&self, what: &str) -> ! {
            let log = self.stderr.lock().unwrap();
            let tail = log
                .iter()
                .rev()
                .take(60)
                .rev()
                .cloned()
                .collect::<Vec<_>>()
                .join("\n");
            let latest = self
                .history()
                .pop()
                .map(|s| serde_json::to_string(&s.members).unwrap_or_default());
            panic!(
                "{}: timed out waiting for {what}\nlatest members: {latest:?}\nlog tail:\n{tail}",
                self.name
            )
        }
    }

    impl Drop for Node {
        fn drop(&mut self) {
            self.kill();
        }
    }

    fn poll<T>(deadline: Duration, probe: impl FnMut() -> Option<T>) -> Option<T> {
        lathe_tests::wait::try_wait_until(deadline, probe).ok()
    }

    /// The member node names registered under `connect` (with its chroot).
    pub(crate) fn zookeeper_members(connect: &str) -> Vec<String> {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let client = zookeeper_client::Client::connect(connect)
                .await
                .expect("connect to zookeeper");
            let mut names = client
                .list_children("/lathe/members")
                .await
                .expect("list members");
            names.sort();
            names
        })
    }

    pub(crate) fn wait_for_zookeeper_members(connect: &str, expected: &[&str], deadline: Duration) {
        let found = poll(deadline, || {
            (zookeeper_members(connect) == expected).then_some(())
        });
        assert!(
            found.is_some(),
            "zookeeper members never became {expected:?}: {:?}",
            zookeeper_members(connect)
        );
    }

    /// Runs a membership node until stdin closes, if this process is a child.
    pub(crate) fn run_child_if_requested() {
        let Ok(spec) = std::env::var(CHILD_ENV) else {
            return;
        };
        let spec: Spec = serde_json::from_str(&spec).expect("child spec");
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .init();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build();
        runtime.expect("child runtime").block_on(child(spec));
    }

    async fn child(spec: Spec) {
        let cluster_addr = ([127, 0, 0, 1], spec.cluster_port).into();
        let http_addr = ([127, 0, 0, 1], 1).into();
        let mut config = MembershipConfig::new(&spec.name, cluster_addr, http_addr, &spec.cookie);
        config.join = spec.join;
        config.zookeeper = spec.zookeeper;
        config.tags = vec!["test".to_string()];
        let handle = start_membership(config, prometheus::Registry::new(), None)
            .await
            .expect("start membership");
        let (commands, mut received) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::stdin().lines().map_while(Result::ok) {
                let _ = commands.send(line);
            }
        });
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let snapshot = serde_json::json!({
                        "members": handle.members().await,
                        "join": format!("{:?}", *handle.join_state().borrow()),
                        "refusals": handle.refusals().len(),
                        "fenced": handle.is_fenced(),
                    });
                    println!("{MARK}{snapshot}");
                }
                command = received.recv() => match command.as_deref() {
                    Some("leave") => {
                        handle.shutdown().await;
                        println!("{{\"left\":true}}");
                        std::process::exit(0);
                    }
                    Some(_) => {}
                    None => std::process::exit(0),
                },
            }
        }
    }
}
