//! The agent tests' HAProxy: the harness's master-worker HAProxy ([`MasterWorker`]), started or
//! the test fails, with its reload count read once the master answers.

use std::path::Path;
use std::time::Duration;

use lathe_tests::haproxy::MasterWorker;
use lathe_tests::wait::wait_until;

pub struct Haproxy(MasterWorker);

impl Haproxy {
    /// Starts HAProxy on `config` (whose stats socket is `admin`) and waits until it answers.
    pub fn start(config: &Path, admin: &Path, dir: &Path) -> Haproxy {
        Haproxy(MasterWorker::start(config, admin, dir).unwrap_or_else(|e| panic!("{e:#}")))
    }

    /// The `HOST:PORT` of every server of `backend` that is not in maintenance.
    pub fn serving(&self, backend: &str) -> Result<std::collections::BTreeSet<String>, String> {
        self.0.serving(backend)
    }

    /// How many times the master reloaded (from `show proc` on the master socket).
    pub fn reloads(&self) -> u64 {
        wait_until(
            "haproxy's master to answer show proc",
            Duration::from_secs(10),
            || self.0.reloads(),
        )
    }
}
