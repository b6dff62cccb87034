//! A double of a YARN ResourceManager (and its NodeManager) for tests: no YARN can be installed
//! here, so Lathe's YARN backend is tested against this.
//!
//! It serves the documented REST API (Hadoop, "ResourceManager REST API's") on a free loopback
//! port — `POST /ws/v1/cluster/apps/new-application`, `POST /ws/v1/cluster/apps` (submit),
//! `GET /ws/v1/cluster/apps` (`states`, `applicationTypes`, `queue`, `limit`),
//! `GET /ws/v1/cluster/apps/{id}`, `GET|PUT /ws/v1/cluster/apps/{id}/state`,
//! `GET /ws/v1/cluster/info` — with its JSON shapes and `RemoteException` errors, and it really
//! runs what is submitted: like a NodeManager, it launches the AM container's command with
//! `bash -c` in a container directory of its own, with the submitted environment (and nothing of
//! the test's), `<LOG_DIR>` pointing at the container's log folder.
//!
//! ```text
//! submit ──> ACCEPTED ──(a slot of `capacity` free)──> RUNNING ──exit 0──────────> FINISHED
//!    │          │                                        ├──exit ≠ 0 / signal──> FAILED (or a new
//!    │          └──PUT state KILLED──> KILLED            │                        attempt, up to
//!    └──unknown queue──> FAILED                          └──PUT state KILLED──> KILLED  max-app-attempts)
//! ```
//!
//! Tests steer it: [`ResourceManagerDouble::set_capacity`] (how many containers run at once; the
//! others wait ACCEPTED), [`ResourceManagerDouble::fail_container`] (SIGKILL: the attempt fails
//! with exit code 137), [`ResourceManagerDouble::stop_container`] (SIGTERM: a lathe-node drains and
//! exits 0, the application FINISHES), [`ResourceManagerDouble::forget`] (an RM restarted without
//! recovery: 404 from then on), [`ResourceManagerDouble::set_unavailable`] (503 to everything).
//! Dropping it kills every container it started.

mod http;
mod routes;
mod state;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

pub use state::AppView;
use state::Rm;

/// How often the NodeManager side looks at its containers.
const MONITOR_INTERVAL: Duration = Duration::from_millis(20);

/// A running ResourceManager double; stops (and kills its containers) when dropped.
pub struct ResourceManagerDouble {
    addr: SocketAddr,
    rm: Arc<Mutex<Rm>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl ResourceManagerDouble {
    /// Starts a double with room for any number of containers, one queue (`default`) and
    /// containers of at most 8192 MB and 8 vcores.
    pub fn start() -> ResourceManagerDouble {
        let mut dir = tempfile::Builder::new()
            .prefix("lathe-yarn-")
            .tempdir()
            .expect("a directory for the containers");
        if std::env::var_os("LATHE_TEST_KEEP_DIRS").is_some() {
            dir.disable_cleanup(true);
            eprintln!(
                "lathe-tests: the YARN double keeps its containers in {}",
                dir.path().display()
            );
        }
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the RM double");
        let addr = listener.local_addr().expect("the RM double's address");
        let rm = Arc::new(Mutex::new(Rm::new(dir.path().to_path_buf(), addr)));
        let stop = Arc::new(AtomicBool::new(false));
        let server = {
            let (rm, stop) = (rm.clone(), stop.clone());
            std::thread::spawn(move || {
                http::serve(listener, stop, |request| routes::handle(&rm, request))
            })
        };
        let monitor = {
            let (rm, stop) = (rm.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    lock(&rm).monitor();
                    std::thread::sleep(MONITOR_INTERVAL);
                }
            })
        };
        ResourceManagerDouble {
            addr,
            rm,
            stop,
            threads: vec![server, monitor],
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:PORT`: what `--yarn-rm` takes.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many containers may run at once (`None`: any number). Applications beyond wait in
    /// ACCEPTED, and start, oldest first, when a container ends or room is made.
    pub fn set_capacity(&self, containers: Option<usize>) {
        lock(&self.rm).capacity = containers;
    }

    /// The queues submissions may name (others fail the application, as YARN does).
    pub fn set_queues(&self, queues: &[&str]) {
        lock(&self.rm).queues = queues.iter().map(|q| q.to_string()).collect();
    }

    /// While `true`, every request is answered 503 (an RM restarting, a failover under way).
    pub fn set_unavailable(&self, unavailable: bool) {
        lock(&self.rm).unavailable = unavailable;
    }

    /// Every application, in submission order.
    pub fn apps(&self) -> Vec<AppView> {
        lock(&self.rm).views()
    }

    /// One application.
    pub fn app(&self, id: &str) -> Option<AppView> {
        self.apps().into_iter().find(|app| app.id == id)
    }

    /// How many submissions were accepted (`POST /ws/v1/cluster/apps` answered 202, repeats
    /// included).
    pub fn submissions(&self) -> usize {
        lock(&self.rm).submissions
    }

    /// SIGKILLs the container of a running application, as a machine failure would: the attempt
    /// fails with exit code 137. Returns whether a container ran.
    pub fn fail_container(&self, id: &str) -> bool {
        lock(&self.rm).signal_container(id, rustix::process::Signal::KILL)
    }

    /// SIGTERMs the container of a running application (a lathe-node drains and exits 0, so the
    /// application FINISHES). Returns whether a container ran.
    pub fn stop_container(&self, id: &str) -> bool {
        lock(&self.rm).signal_container(id, rustix::process::Signal::TERM)
    }

    /// Forgets an application and kills its container, as an RM restarted without state recovery
    /// would: the API answers 404 for it from then on.
    pub fn forget(&self, id: &str) {
        lock(&self.rm).forget(id);
    }

    /// Kills an application through the REST API (`PUT .../state {"state":"KILLED"}`), as an
    /// operator would; returns the HTTP status.
    pub fn kill_through_api(&self, id: &str) -> u16 {
        let url = format!("{}/ws/v1/cluster/apps/{id}/state", self.url());
        match ureq::put(&url).send_json(serde_json::json!({"state": "KILLED"})) {
            Ok(response) => response.status(),
            Err(ureq::Error::Status(status, _)) => status,
            Err(e) => panic!("PUT {url}: {e}"),
        }
    }

    /// The stdout and stderr of an application's latest container.
    pub fn container_output(&self, id: &str) -> String {
        let dir = self.app(id).and_then(|app| app.log_dir);
        let read = |name: &str| {
            dir.as_ref()
                .and_then(|dir| std::fs::read(dir.join(name)).ok())
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .unwrap_or_default()
        };
        format!("{}{}", read("stdout"), read("stderr"))
    }

    /// Where the double keeps its containers.
    pub fn dir(&self) -> PathBuf {
        self._dir.path().to_path_buf()
    }
}

impl Drop for ResourceManagerDouble {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the server's blocked accept so it sees the flag.
        let _ = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        let mut rm = lock(&self.rm);
        if std::thread::panicking() {
            eprintln!("{}", rm.report());
        }
        rm.kill_all();
    }
}

fn lock(rm: &Mutex<Rm>) -> MutexGuard<'_, Rm> {
    rm.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
