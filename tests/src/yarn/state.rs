//! The double's applications and containers: the state machine of a YARN application, and a
//! NodeManager that runs AM containers as local processes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::process::{kill_process_group, Pid, Signal};
use serde_json::{json, Value};

/// How long a container may take to exit after SIGTERM on a kill before it is SIGKILLed (YARN's
/// `yarn.nodemanager.sleep-delay-before-sigkill.ms` is 250 ms).
const SIGKILL_DELAY: Duration = Duration::from_millis(250);
/// The attempts an application gets when it asks for none (`yarn.resourcemanager.am.max-attempts`).
pub(super) const DEFAULT_MAX_ATTEMPTS: u32 = 2;
/// The largest container the double grants.
pub(super) const MAX_MEMORY_MB: u64 = 8192;
pub(super) const MAX_VCORES: u64 = 8;
/// Who submits when `user.name` is not given.
const ANONYMOUS: &str = "dr.who";
/// How many lines of a failed container's stderr its diagnostics quote.
const STDERR_LINES: usize = 5;

/// One application as a test sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppView {
    pub id: String,
    pub name: String,
    pub queue: String,
    pub application_type: String,
    pub user: String,
    /// `NEW` … `KILLED`, as the API reports it.
    pub state: String,
    pub final_status: String,
    pub diagnostics: String,
    /// The AM container's command as submitted.
    pub command: String,
    /// The AM container's environment as submitted.
    pub env: BTreeMap<String, String>,
    pub memory_mb: u64,
    pub vcores: u64,
    pub max_attempts: u32,
    pub attempts: u32,
    /// The process id of the running container.
    pub pid: Option<u32>,
    /// The `<LOG_DIR>` of the latest container.
    pub log_dir: Option<PathBuf>,
}

/// What a submission asked for, validated.
pub(super) struct Submission {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) queue: String,
    pub(super) application_type: String,
    pub(super) user: String,
    pub(super) command: String,
    pub(super) env: Vec<(String, String)>,
    pub(super) memory_mb: u64,
    pub(super) vcores: u64,
    pub(super) max_attempts: u32,
}

/// A container being killed (`PUT state KILLED`): SIGTERM, then SIGKILL after [`SIGKILL_DELAY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Killing {
    since: Instant,
    sigkilled: bool,
}

struct Container {
    child: Child,
    log_dir: PathBuf,
    killing: Option<Killing>,
}

struct App {
    submission: Submission,
    cluster_timestamp: u64,
    order: u64,
    state: &'static str,
    final_status: &'static str,
    diagnostics: String,
    attempts: u32,
    started_ms: u64,
    finished_ms: u64,
    container: Option<Container>,
    last_log_dir: Option<PathBuf>,
}

/// The whole ResourceManager, behind one mutex.
pub(super) struct Rm {
    dir: PathBuf,
    addr: SocketAddr,
    pub(super) cluster_timestamp: u64,
    next_sequence: u32,
    next_order: u64,
    /// Ids handed out by new-application and not submitted yet.
    issued: BTreeSet<String>,
    apps: BTreeMap<String, App>,
    pub(super) capacity: Option<usize>,
    pub(super) queues: BTreeSet<String>,
    pub(super) unavailable: bool,
    pub(super) submissions: usize,
}

impl Rm {
    pub(super) fn new(dir: PathBuf, addr: SocketAddr) -> Rm {
        Rm {
            dir,
            addr,
            cluster_timestamp: unix_ms(),
            next_sequence: 1,
            next_order: 0,
            issued: BTreeSet::new(),
            apps: BTreeMap::new(),
            capacity: None,
            queues: BTreeSet::from(["default".to_string()]),
            unavailable: false,
            submissions: 0,
        }
    }

    /// A fresh application id (`application_<cluster timestamp>_<sequence>`).
    pub(super) fn new_application(&mut self) -> String {
        let id = format!(
            "application_{}_{:04}",
            self.cluster_timestamp, self.next_sequence
        );
        self.next_sequence += 1;
        self.issued.insert(id.clone());
        id
    }

    /// Where the API answers (for `Location` headers).
    pub(super) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(super) fn knows(&self, id: &str) -> bool {
        self.apps.contains_key(id)
    }

    pub(super) fn was_issued(&self, id: &str) -> bool {
        self.issued.contains(id)
    }

    /// Accepts a validated submission: ACCEPTED (a container starts when there is room), or
    /// FAILED at once for an unknown queue, as YARN's scheduler rejects it.
    pub(super) fn submit(&mut self, submission: Submission) {
        self.issued.remove(&submission.id);
        self.submissions += 1;
        let unknown_queue = !self.queues.contains(&submission.queue);
        let mut app = App {
            cluster_timestamp: self.cluster_timestamp,
            order: self.next_order,
            state: "ACCEPTED",
            final_status: "UNDEFINED",
            diagnostics: String::new(),
            attempts: 0,
            started_ms: unix_ms(),
            finished_ms: 0,
            container: None,
            last_log_dir: None,
            submission,
        };
        self.next_order += 1;
        if unknown_queue {
            app.diagnostics = format!(
                "Application {} submitted by user {} to unknown queue: {}",
                app.submission.id, app.submission.user, app.submission.queue
            );
            app.end("FAILED", "FAILED");
        }
        self.apps.insert(app.submission.id.clone(), app);
        self.launch_waiting();
    }

    /// `PUT .../state KILLED`: returns the status and state to answer with.
    pub(super) fn kill(&mut self, id: &str) -> Option<(u16, &'static str)> {
        let app = self.apps.get_mut(id)?;
        if app.is_final() {
            return Some((200, app.state));
        }
        match app.container.as_mut() {
            Some(container) => {
                if container.killing.is_none() {
                    container.killing = Some(Killing {
                        since: Instant::now(),
                        sigkilled: false,
                    });
                    signal(&container.child, Signal::TERM);
                }
                Some((202, app.state))
            }
            None => {
                app.diagnostics = format!("Application {id} was killed by user {ANONYMOUS}");
                app.end("KILLED", "KILLED");
                Some((200, app.state))
            }
        }
    }

    pub(super) fn signal_container(&mut self, id: &str, signal_to_send: Signal) -> bool {
        match self.apps.get(id).and_then(|app| app.container.as_ref()) {
            Some(container) => {
                signal(&container.child, signal_to_send);
                true
            }
            None => false,
        }
    }

    pub(super) fn forget(&mut self, id: &str) {
        if let Some(mut app) = self.apps.remove(id) {
            if let Some(container) = app.container.as_mut() {
                kill_now(container);
            }
        }
    }

    /// What the NodeManager side does every few milliseconds: reap containers that ended,
    /// SIGKILL those that ignore a kill, start waiting applications while there is room.
    pub(super) fn monitor(&mut self) {
        for app in self.apps.values_mut() {
            app.check_container();
        }
        self.launch_waiting();
    }

    /// Starts ACCEPTED applications, oldest first, while fewer than `capacity` containers run.
    fn launch_waiting(&mut self) {
        loop {
            let running = self
                .apps
                .values()
                .filter(|app| app.container.is_some())
                .count();
            if self.capacity.is_some_and(|capacity| running >= capacity) {
                return;
            }
            let next = self
                .apps
                .values()
                .filter(|app| app.state == "ACCEPTED" && app.container.is_none())
                .min_by_key(|app| app.order)
                .map(|app| app.submission.id.clone());
            let Some(id) = next else { return };
            let (dir, addr) = (self.dir.clone(), self.addr);
            let app = self.apps.get_mut(&id).expect("the app just found");
            app.launch(&dir, addr);
        }
    }

    pub(super) fn views(&self) -> Vec<AppView> {
        let mut apps: Vec<&App> = self.apps.values().collect();
        apps.sort_by_key(|app| app.order);
        apps.into_iter().map(App::view).collect()
    }

    /// The `app` object of the API.
    pub(super) fn app_json(&self, id: &str) -> Option<Value> {
        self.apps.get(id).map(|app| app.json(self.addr))
    }

    /// The `app` objects matching the `GET /ws/v1/cluster/apps` filters.
    pub(super) fn list_json(
        &self,
        states: Option<&BTreeSet<String>>,
        types: Option<&BTreeSet<String>>,
        queue: Option<&str>,
        limit: Option<usize>,
    ) -> Vec<Value> {
        let mut apps: Vec<&App> = self
            .apps
            .values()
            .filter(|app| states.is_none_or(|s| s.contains(app.state)))
            .filter(|app| {
                types.is_none_or(|t| t.contains(&app.submission.application_type.to_lowercase()))
            })
            .filter(|app| queue.is_none_or(|q| q == app.submission.queue))
            .collect();
        apps.sort_by_key(|app| app.order);
        apps.into_iter()
            .take(limit.unwrap_or(usize::MAX))
            .map(|app| app.json(self.addr))
            .collect()
    }

    pub(super) fn state_of(&self, id: &str) -> Option<&'static str> {
        self.apps.get(id).map(|app| app.state)
    }

    /// Every application with its state, diagnostics and the tail of its container's stderr.
    pub(super) fn report(&self) -> String {
        let mut text = String::from("--- YARN double: applications ---\n");
        for view in self.views() {
            text.push_str(&format!(
                "{} {} {} attempts {} diagnostics: {}\n",
                view.id, view.name, view.state, view.attempts, view.diagnostics
            ));
            if let Some(dir) = &view.log_dir {
                text.push_str(&tail(&dir.join("stderr"), 15));
                text.push('\n');
            }
        }
        text
    }

    pub(super) fn kill_all(&mut self) {
        for app in self.apps.values_mut() {
            if let Some(container) = app.container.as_mut() {
                kill_now(container);
            }
        }
    }
}

impl App {
    fn is_final(&self) -> bool {
        matches!(self.state, "FINISHED" | "FAILED" | "KILLED")
    }

    fn end(&mut self, state: &'static str, final_status: &'static str) {
        self.state = state;
        self.final_status = final_status;
        self.finished_ms = unix_ms();
        self.container = None;
    }

    /// `0001` of `application_1700000000000_0001`.
    fn sequence(&self) -> &str {
        self.submission.id.rsplit('_').next().unwrap_or("0000")
    }

    fn attempt_id(&self) -> String {
        format!(
            "appattempt_{}_{}_{:06}",
            self.cluster_timestamp,
            self.sequence(),
            self.attempts
        )
    }

    /// Runs the AM container: `bash -c COMMAND` in a fresh container directory, in a process group
    /// of its own, with the submitted environment over a NodeManager's minimal one.
    fn launch(&mut self, root: &std::path::Path, addr: SocketAddr) {
        self.attempts += 1;
        let container_id = format!(
            "container_{}_{}_{:02}_000001",
            self.cluster_timestamp,
            self.sequence(),
            self.attempts
        );
        let work_dir = root.join(&self.submission.id).join(&container_id);
        let log_dir = work_dir.join("logs");
        self.last_log_dir = Some(log_dir.clone());
        if let Err(e) = std::fs::create_dir_all(&log_dir) {
            let reason = format!("cannot create {}: {e}", log_dir.display());
            return self.attempt_failed(&reason);
        }
        let command = self
            .submission
            .command
            .replace("<LOG_DIR>", &log_dir.display().to_string())
            .replace("<CPS>", ":")
            .replace("{{", "$")
            .replace("}}", "");
        let launch_err = std::fs::File::create(work_dir.join("launch_container.err"));
        let mut process = Command::new("bash");
        process
            .arg("-c")
            .arg(&command)
            .current_dir(&work_dir)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .process_group(0);
        if let Ok(file) = launch_err {
            process.stderr(file);
        }
        for name in ["PATH", "HOME", "LANG", "RUST_BACKTRACE"] {
            if let Some(value) = std::env::var_os(name) {
                process.env(name, value);
            }
        }
        process
            .env("CONTAINER_ID", &container_id)
            .env("USER", &self.submission.user)
            .env("LOG_DIRS", &log_dir)
            .env("PWD", &work_dir)
            .env("NM_HOST", addr.ip().to_string())
            .envs(self.submission.env.iter().map(|(k, v)| (k, v)));
        match process.spawn() {
            Ok(child) => {
                self.state = "RUNNING";
                self.container = Some(Container {
                    child,
                    log_dir,
                    killing: None,
                });
            }
            Err(e) => self.attempt_failed(&format!("container launch failed: {e}")),
        }
    }

    /// Reaps an ended container, SIGKILLs one that ignores a kill.
    fn check_container(&mut self) {
        let Some(container) = self.container.as_mut() else {
            return;
        };
        match container.child.try_wait() {
            Ok(None) => {
                if let Some(killing) = &mut container.killing {
                    if !killing.sigkilled && killing.since.elapsed() >= SIGKILL_DELAY {
                        signal(&container.child, Signal::KILL);
                        killing.sigkilled = true;
                    }
                }
            }
            Ok(Some(status)) => {
                let killed = container.killing.is_some();
                let log_dir = container.log_dir.clone();
                self.container_ended(status, killed, &log_dir);
            }
            Err(_) => {}
        }
    }

    fn container_ended(&mut self, status: ExitStatus, killed: bool, log_dir: &std::path::Path) {
        if killed {
            self.diagnostics = format!(
                "Application {} was killed by user {ANONYMOUS}",
                self.submission.id
            );
            return self.end("KILLED", "KILLED");
        }
        if status.success() {
            self.diagnostics = String::new();
            return self.end("FINISHED", "SUCCEEDED");
        }
        let exit_code = status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .unwrap_or(-1);
        let stderr = tail(&log_dir.join("stderr"), STDERR_LINES);
        let reason = format!(
            "AM Container for {} exited with exitCode: {exit_code}\nFailing this attempt. \
             Diagnostics: Exception from container-launch.\nLast {STDERR_LINES} lines of stderr:\n\
                 {stderr}",
            self.attempt_id()
        );
        self.attempt_failed(&reason);
    }

    /// An attempt failed: a new one (ACCEPTED, waiting for room) if any is left, else FAILED.
    fn attempt_failed(&mut self, reason: &str) {
        self.container = None;
        if self.attempts < self.submission.max_attempts {
            self.state = "ACCEPTED";
            self.diagnostics = reason.to_string();
        } else {
            self.diagnostics = format!(
                "Application {} failed {} times due to {reason}. Failing the application.",
                self.submission.id, self.attempts
            );
            self.end("FAILED", "FAILED");
        }
    }

    fn view(&self) -> AppView {
        AppView {
            id: self.submission.id.clone(),
            name: self.submission.name.clone(),
            queue: self.submission.queue.clone(),
            application_type: self.submission.application_type.clone(),
            user: self.submission.user.clone(),
            state: self.state.to_string(),
            final_status: self.final_status.to_string(),
            diagnostics: self.diagnostics.clone(),
            command: self.submission.command.clone(),
            env: self.submission.env.iter().cloned().collect(),
            memory_mb: self.submission.memory_mb,
            vcores: self.submission.vcores,
            max_attempts: self.submission.max_attempts,
            attempts: self.attempts,
            pid: self.container.as_ref().map(|c| c.child.id()),
            log_dir: self.last_log_dir.clone(),
        }
    }

    /// The documented `app` object.
    fn json(&self, addr: SocketAddr) -> Value {
        let s = &self.submission;
        let now = unix_ms();
        let end = if self.finished_ms > 0 {
            self.finished_ms
        } else {
            now
        };
        let running = self.container.is_some();
        json!({
            "id": s.id,
            "user": s.user,
            "name": s.name,
            "queue": s.queue,
            "state": self.state,
            "finalStatus": self.final_status,
            "progress": if self.is_final() { 100.0 } else { 0.0 },
            "trackingUI": if self.is_final() { "History" } else { "ApplicationMaster" },
            "trackingUrl": format!("http://{addr}/proxy/{}/", s.id),
            "diagnostics": self.diagnostics,
            "clusterId": self.cluster_timestamp,
            "applicationType": s.application_type,
            "applicationTags": "",
            "startedTime": self.started_ms,
            "finishedTime": self.finished_ms,
            "elapsedTime": end.saturating_sub(self.started_ms),
            "amContainerLogs": format!("http://{addr}/node/containerlogs/{}", s.id),
            "amHostHttpAddress": addr.to_string(),
            "allocatedMB": if running { s.memory_mb } else { 0 },
            "allocatedVCores": if running { s.vcores } else { 0 },
            "runningContainers": u32::from(running),
            "memorySeconds": 0,
            "vcoreSeconds": 0,
            "unmanagedApplication": false,
            "applicationPriority": 0,
            "appNodeLabelExpression": "",
            "amNodeLabelExpression": "",
        })
    }
}

/// Signals a container's whole process group (its shell and whatever it started).
fn signal(child: &Child, signal: Signal) {
    if let Some(pid) = Pid::from_raw(child.id() as i32) {
        let _ = kill_process_group(pid, signal);
    }
}

fn kill_now(container: &mut Container) {
    signal(&container.child, Signal::KILL);
    let _ = container.child.kill();
    let _ = container.child.wait();
}

fn tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
