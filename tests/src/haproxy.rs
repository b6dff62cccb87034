//! A real HAProxy (Debian's 2.6) in master-worker mode, as `lathe-agent` expects it, in the
//! foreground so it is the caller's child: `haproxy -W -f CFG -p PID -S MASTER,level,admin`. Its
//! admin socket tells which servers a backend really serves; its master socket how often it
//! reloaded. Used by the agent tests and by `make bench`; stopped (SIGTERM, then SIGKILL) on drop.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::wait::try_wait_until;

/// How long HAProxy may take to answer on its admin socket.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long it may take to stop after SIGTERM before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

pub struct MasterWorker {
    child: Child,
    /// The stats (admin) socket named in the configuration.
    pub admin: PathBuf,
    /// The master CLI socket (`-S`).
    pub master: PathBuf,
    log: PathBuf,
}

impl MasterWorker {
    /// Starts HAProxy on `config` (whose stats socket is `admin`), with its pid file, master
    /// socket and log in `dir`, and waits until it answers on the admin socket.
    pub fn start(config: &Path, admin: &Path, dir: &Path) -> anyhow::Result<MasterWorker> {
        let master = dir.join("master.sock");
        let log = dir.join("haproxy.log");
        let out = File::create(&log).context("cannot create the haproxy log")?;
        let child = Command::new("haproxy")
            .arg("-W")
            .arg("-f")
            .arg(config)
            .arg("-p")
            .arg(dir.join("haproxy.pid"))
            .arg("-S")
            .arg(format!("{},level,admin", master.display()))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("cannot start haproxy (Debian package haproxy)")?;
        let mut haproxy = MasterWorker {
            child,
            admin: admin.to_path_buf(),
            master,
            log,
        };
        // Done when it answers or when it exited (a bad configuration, a busy port).
        let settled = try_wait_until(START_DEADLINE, || {
            matches!(haproxy.child.try_wait(), Ok(Some(_)))
                || command(&haproxy.admin, "show info").is_ok()
        });
        if let Ok(Some(status)) = haproxy.child.try_wait() {
            bail!(
                "haproxy exited with {status}: {}",
                haproxy.log_text().trim()
            );
        }
        if settled.is_err() {
            bail!(
                "haproxy did not answer on its admin socket within {START_DEADLINE:?}: {}",
                haproxy.log_text().trim()
            );
        }
        Ok(haproxy)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The `HOST:PORT` of every server of `backend` not in maintenance (`show servers state`).
    pub fn serving(&self, backend: &str) -> Result<BTreeSet<String>, String> {
        let answer = command(&self.admin, &format!("show servers state {backend}"))?;
        let header = answer
            .lines()
            .find_map(|line| line.strip_prefix("# "))
            .ok_or_else(|| format!("unexpected answer: {answer}"))?;
        let columns: Vec<&str> = header.split_whitespace().collect();
        let at = |name: &str| {
            columns
                .iter()
                .position(|column| *column == name)
                .ok_or_else(|| format!("no column {name} in {header}"))
        };
        let (addr, port, admin) = (at("srv_addr")?, at("srv_port")?, at("srv_admin_state")?);
        Ok(answer
            .lines()
            .filter(|line| !line.starts_with('#'))
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .filter(|fields| fields.len() == columns.len())
            .filter(|fields| fields[admin].parse::<u32>().is_ok_and(|a| a & 0x23 == 0))
            .map(|fields| format!("{}:{}", fields[addr], fields[port]))
            .collect())
    }

    /// How many times the master reloaded (`show proc` on the master socket).
    pub fn reloads(&self) -> Result<u64, String> {
        let answer = command(&self.master, "show proc")?;
        answer
            .lines()
            .find(|line| line.contains("master"))
            .and_then(|line| line.split_whitespace().nth(2))
            .and_then(|reloads| reloads.parse().ok())
            .ok_or_else(|| format!("unexpected show proc answer: {answer:?}"))
    }
}

impl Drop for MasterWorker {
    /// SIGTERM (the master stops its workers), SIGKILL if it is still there after a while.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- haproxy log ---\n{}\n---", self.log_text());
        }
        let pid = self.child.id().to_string();
        Command::new("kill").arg("-TERM").arg(&pid).status().ok();
        let child = &mut self.child;
        let exited = try_wait_until(STOP_DEADLINE, || matches!(child.try_wait(), Ok(Some(_))));
        if exited.is_err() {
            self.child.kill().ok();
            self.child.wait().ok();
        }
    }
}

/// One command on a HAProxy CLI socket (stats or master).
pub fn command(socket: &Path, line: &str) -> Result<String, String> {
    let mut stream =
        UnixStream::connect(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(format!("{line}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    stream
        .shutdown(std::net::Shutdown::Write)
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| e.to_string())?;
    Ok(answer)
}
