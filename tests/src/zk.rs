//! A real, standalone ZooKeeper 3.8 (Debian's `zookeeper` package) started on a free loopback port
//! for tests.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! let mut zk = lathe_tests::zk::ZkServer::start()?;
//! println!("connect to {}", zk.connect_string());
//! zk.restart()?; // same port, same data
//! # Ok(()) }
//! ```
//!
//! The server runs as a plain `java` process with its `zoo.cfg`, data and log in a temporary
//! directory that lives as long as the [`ZkServer`]; dropping it stops the process.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The classpath of Debian's ZooKeeper package (the jar's manifest pulls in the rest).
const CLASSPATH: &str = "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar";
const MAIN_CLASS: &str = "org.apache.zookeeper.server.ZooKeeperServerMain";
/// How long a start may take before it is given up (the JVM is slow on a busy machine).
const START_DEADLINE: Duration = Duration::from_secs(45);
/// How long a SIGTERM may take before the process is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(100);
/// Fresh ports tried when the one picked was taken by someone else in the meantime.
const PORT_ATTEMPTS: usize = 5;

/// A running standalone ZooKeeper server; stopped when dropped.
pub struct ZkServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Where the log of the current launch starts.
    log_offset: usize,
    /// The server's `jute.maxbuffer`: it drops the connection of a client sending a larger request.
    max_buffer: usize,
}

/// The `jute.maxbuffer` of [`ZkServer::start`]: room for any value the registry accepts.
pub const TEST_MAX_BUFFER: usize = 4 * 1024 * 1024;

impl ZkServer {
    /// Starts a server on a free loopback port and waits until it serves (`srvr` reports
    /// `Mode: standalone`).
    pub fn start() -> anyhow::Result<ZkServer> {
        Self::start_with_max_buffer(TEST_MAX_BUFFER)
    }

    /// Like [`ZkServer::start`], with the server's `jute.maxbuffer` set to `bytes` (ZooKeeper's
    /// own default is 1048575).
    pub fn start_with_max_buffer(bytes: usize) -> anyhow::Result<ZkServer> {
        let dir = tempfile::Builder::new()
            .prefix("lathe-zk-")
            .tempdir()
            .context("failed to create a temporary directory for zookeeper")?;
        let mut server = ZkServer {
            port: 0,
            dir,
            child: None,
            log_offset: 0,
            max_buffer: bytes,
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            server.port = crate::node::free_port();
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(err) => {
                    server.kill_quietly();
                    // A port taken between picking and binding: try another one.
                    let taken = server.log_tail().contains("Address already in use");
                    if !taken || attempts >= PORT_ATTEMPTS {
                        return Err(err);
                    }
                }
            }
        }
    }

    /// `127.0.0.1:PORT`, for clients.
    pub fn connect_string(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding `zoo.cfg`, `data/` and `zookeeper.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Sends a four-letter word (`srvr`, `stat`, `mntr`, `cons`, `wchs`, `wchc`, `ruok`, `conf`)
    /// and returns the answer.
    pub fn four_letter(&self, word: &str) -> anyhow::Result<String> {
        four_letter_word(self.port, word)
    }

    /// The total number of watches the server holds (from `wchs`).
    pub fn watch_count(&self) -> anyhow::Result<usize> {
        let answer = self.four_letter("wchs")?;
        parse_total_watches(&answer)
            .with_context(|| format!("unexpected wchs answer from zookeeper: {answer:?}"))
    }

    /// Stops the server with SIGTERM and waits for it to exit (SIGKILL after a deadline).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(child) = self.child.take() else {
            return Ok(());
        };
        crate::process::terminate(child, "zookeeper", STOP_DEADLINE)
    }

    /// Stops the server, then starts it again on the same port with the same data.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            match self.launch() {
                Ok(()) => return Ok(()),
                Err(err) => {
                    self.kill_quietly();
                    // The old socket may linger for a moment: retry while the port is busy.
                    let busy = self.log_tail().contains("Address already in use");
                    if !busy || Instant::now() >= deadline {
                        return Err(err);
                    }
                    thread::sleep(POLL);
                }
            }
        }
    }

    /// True while the server process runs.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("zoo.cfg")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("zookeeper.log")
    }

    /// Writes `zoo.cfg`, spawns the JVM and waits until the server serves.
    fn launch(&mut self) -> anyhow::Result<()> {
        let data = self.dir.path().join("data");
        fs::create_dir_all(&data).context("failed to create the zookeeper data directory")?;
        let config = format!(
            "tickTime=2000\n\
             dataDir={}\n\
             clientPort={}\n\
             clientPortAddress=127.0.0.1\n\
             maxClientCnxns=0\n\
             admin.enableServer=false\n\
             4lw.commands.whitelist=ruok,srvr,stat,mntr,cons,wchs,wchc,conf\n",
            data.display(),
            self.port
        );
        fs::write(self.config_path(), config).context("failed to write zoo.cfg")?;
        self.log_offset = fs::read(self.log_path()).map(|log| log.len()).unwrap_or(0);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("failed to open the zookeeper log")?;
        let child = Command::new("java")
            .arg("-Xmx256m")
            .arg(format!("-Djute.maxbuffer={}", self.max_buffer))
            .arg("-cp")
            .arg(CLASSPATH)
            .arg(MAIN_CLASS)
            .arg(self.config_path())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .context("failed to share the zookeeper log")?,
            )
            .stderr(log)
            .spawn()
            .context("failed to run java (is Debian's zookeeper package installed?)")?;
        self.child = Some(child);
        self.wait_until_serving()
    }

    fn wait_until_serving(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "zookeeper exited with {status} while starting on port {}; log tail:\n{}",
                        self.port,
                        self.log_tail()
                    );
                }
            }
            if self.serves() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "zookeeper did not serve on port {} within {:?}; log tail:\n{}",
                    self.port,
                    START_DEADLINE,
                    self.log_tail()
                );
            }
            thread::sleep(POLL);
        }
    }

    /// True when the server on our port is up and is ours (its `conf` names our data directory:
    /// a server of another test that grabbed the port in the meantime is not).
    fn serves(&self) -> bool {
        let standalone = self
            .four_letter("srvr")
            .is_ok_and(|answer| answer.contains("Mode: standalone"));
        let data = self.dir.path().join("data");
        standalone
            && self
                .four_letter("conf")
                .is_ok_and(|answer| answer.contains(&*data.to_string_lossy()))
    }

    fn kill_quietly(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// The last lines the current launch wrote to the server's log, for error messages.
    fn log_tail(&self) -> String {
        let log = fs::read(self.log_path()).unwrap_or_default();
        let text = String::from_utf8_lossy(log.get(self.log_offset..).unwrap_or_default());
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for ZkServer {
    fn drop(&mut self) {
        if let Err(err) = self.stop() {
            eprintln!("failed to stop zookeeper on port {}: {err:#}", self.port);
        }
    }
}

fn four_letter_word(port: u16, word: &str) -> anyhow::Result<String> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&address, timeout)
        .with_context(|| format!("failed to connect to zookeeper on port {port}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(word.as_bytes())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .with_context(|| format!("failed to read zookeeper's answer to {word}"))?;
    Ok(answer)
}

/// Reads `Total watches:N` from a `wchs` answer.
fn parse_total_watches(answer: &str) -> Option<usize> {
    answer
        .lines()
        .find_map(|line| line.trim().strip_prefix("Total watches:"))
        .and_then(|count| count.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wchs() {
        let answer = "2 connections watching 1 paths\nTotal watches:2\n";
        assert_eq!(parse_total_watches(answer), Some(2));
        assert_eq!(parse_total_watches("nonsense"), None);
    }
}
