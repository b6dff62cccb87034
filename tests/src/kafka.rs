//! A real Kafka-protocol broker process for tests: the `noida-db` binary of the pinned PyPI
//! package `noida-db==0.2.3` (installed by `make deps`), serving only Kafka on a free loopback
//! port.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! let mut broker = lathe_tests::kafka::KafkaBroker::new()?;
//! println!("bootstrap servers: {}", broker.bootstrap());
//! broker.stop()?; // down (SIGTERM: it saves its data)
//! broker.start()?; // up again on the same port with the same data
//! # Ok(()) }
//! ```
//!
//! The binary inside the package is run directly, never the package's Python wrapper: killing
//! the wrapper would leave the broker running. It keeps its data in a temporary directory that
//! lives as long as the [`KafkaBroker`]; dropping it stops the process. The broker does not
//! compact topics. Set `LATHE_KAFKA_BROKER_BIN` to use another copy of the binary.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::node::free_port;
use crate::wait::try_wait_until;

/// The package `make deps` installs, and the binary inside it.
pub const PACKAGE: &str = "noida-db==0.2.3";
const PACKAGE_DIR: &str = "noida_db";
const BINARY: &str = "noida-db";
/// How long a start may take before it is given up.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long a SIGTERM may take before the process is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(15);
/// Fresh ports tried when the one picked was taken in the meantime.
const PORT_ATTEMPTS: usize = 5;

/// A running broker; stopped when dropped.
pub struct KafkaBroker {
    binary: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl KafkaBroker {
    /// Starts a broker on a free loopback port and waits until it answers an ApiVersions
    /// request.
    pub fn new() -> anyhow::Result<KafkaBroker> {
        let dir = tempfile::Builder::new()
            .prefix("lathe-kafka-")
            .tempdir()
            .context("failed to create a temporary directory for the kafka broker")?;
        let mut broker = KafkaBroker {
            binary: broker_binary()?,
            port: 0,
            dir,
            child: None,
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            broker.port = free_port();
            match broker.run_process() {
                Ok(()) => return Ok(broker),
                Err(error) if attempts >= PORT_ATTEMPTS => return Err(error),
                Err(_) => broker.kill_quietly(),
            }
        }
    }

    /// `127.0.0.1:PORT`: what `--kafka` and `bootstrap.servers` take.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The broker's data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// True while the broker process runs.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Takes the broker down: SIGTERM (it saves its data), SIGKILL after a deadline.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(child) = self.child.take() else {
            return Ok(());
        };
        crate::process::terminate(child, "the kafka broker", STOP_DEADLINE)
    }

    /// Brings a stopped broker back (a running one is stopped first) on the same port with the same
    /// data.
    pub fn start(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        // The old socket may linger a moment: retry while the port is busy.
        try_wait_until(START_DEADLINE, || {
            self.run_process().map_err(|error| {
                self.kill_quietly();
                format!("{error:#}")
            })
        })
        .map_err(|error| anyhow::anyhow!(error))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("broker.log")
    }

    fn run_process(&mut self) -> anyhow::Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("failed to open the kafka broker log")?;
        let child = Command::new(&self.binary)
            .args(["start", "--only", "kafka", "--host", "127.0.0.1"])
            .arg("--kafka-port")
            .arg(self.port.to_string())
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("failed to share the broker log")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("failed to run {}", self.binary.display()))?;
        self.child = Some(child);
        // Answering, or exited (then waiting longer is useless).
        let started = try_wait_until(START_DEADLINE, || {
            match self.child.as_mut().and_then(|c| c.try_wait().ok()?) {
                Some(status) => Some(Err(status)),
                None => api_versions(self.port).is_ok().then_some(Ok(())),
            }
        });
        match started {
            Ok(Ok(())) => Ok(()),
            Ok(Err(status)) => bail!(
                "the kafka broker exited with {status} while starting on port {}; log:\n{}",
                self.port,
                self.log_tail()
            ),
            Err(_) => bail!(
                "the kafka broker did not answer on port {} within {START_DEADLINE:?}; log:\n{}",
                self.port,
                self.log_tail()
            ),
        }
    }

    fn kill_quietly(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// The broker log's last lines, for error messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        self.stop().ok();
    }
}

/// The broker binary: `$LATHE_KAFKA_BROKER_BIN`, else the one inside the installed package.
pub fn broker_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("LATHE_KAFKA_BROKER_BIN") {
        return Ok(PathBuf::from(path));
    }
    let output = Command::new("python3")
        .args([
            "-c",
            &format!("import {PACKAGE_DIR}, os; print(os.path.dirname({PACKAGE_DIR}.__file__))"),
        ])
        .output()
        .context("failed to run python3 to find the kafka broker package")?;
    if !output.status.success() {
        bail!("the kafka broker package is not installed: pip install {PACKAGE} (make deps does)");
    }
    let binary = Path::new(String::from_utf8_lossy(&output.stdout).trim()).join(BINARY);
    if !binary.is_file() {
        bail!("no broker binary at {}", binary.display());
    }
    Ok(binary)
}

/// Sends one ApiVersions (v0) request and checks the answer: the broker serves Kafka.
pub fn api_versions(port: u16) -> anyhow::Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let client = b"lathe-tests";
    let correlation: i32 = 0x1a7e;
    let mut body = Vec::new();
    body.extend_from_slice(&18i16.to_be_bytes()); // ApiVersions
    body.extend_from_slice(&0i16.to_be_bytes()); // version 0
    body.extend_from_slice(&correlation.to_be_bytes());
    body.extend_from_slice(&(client.len() as i16).to_be_bytes());
    body.extend_from_slice(client);
    let mut request = (body.len() as i32).to_be_bytes().to_vec();
    request.extend_from_slice(&body);
    stream.write_all(&request)?;
    let mut header = [0u8; 10];
    stream.read_exact(&mut header)?;
    let answered = i32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    let error = i16::from_be_bytes([header[8], header[9]]);
    if answered != correlation || error != 0 {
        bail!("unexpected ApiVersions answer (correlation {answered}, error {error})");
    }
    Ok(())
}
