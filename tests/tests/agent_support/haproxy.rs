//! A real HAProxy (Debian's 2.6) in master-worker mode, in the foreground so it is this test's
//! child: `haproxy -W -f CFG -p PID -S MASTER,level,admin`. Its admin socket tells which servers
//! a backend really serves.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lathe_tests::wait::{try_wait_until, wait_until};

use super::signal;

pub struct Haproxy {
    child: Child,
    pub admin: PathBuf,
    pub master: PathBuf,
    log: PathBuf,
}

impl Haproxy {
    /// Starts HAProxy on `config` (whose stats socket is `admin`) and waits until it answers.
    pub fn start(config: &Path, admin: &Path, dir: &Path) -> Haproxy {
        let master = dir.join("master.sock");
        let log = dir.join("haproxy.log");
        let out = File::create(&log).expect("create the haproxy log");
        let child = Command::new("haproxy")
            .arg("-W")
            .arg("-f")
            .arg(config)
            .arg("-p")
            .arg(dir.join("haproxy.pid"))
            .arg("-S")
            .arg(format!("{},level,admin", master.display()))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone the log handle"))
            .stderr(out)
            .spawn()
            .expect("spawn haproxy (apt-get install haproxy)");
        let mut haproxy = Haproxy {
            child,
            admin: admin.to_path_buf(),
            master,
            log,
        };
        let admin = haproxy.admin.clone();
        wait_until(
            "haproxy to answer on its admin socket",
            Duration::from_secs(30),
            || {
                if let Ok(Some(status)) = haproxy.child.try_wait() {
                    panic!("haproxy exited with {status}: {}", haproxy.log_text());
                }
                command(&admin, "show info").is_ok()
            },
        );
        haproxy
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The `HOST:PORT` of every server of `backend` that is not in maintenance.
    pub fn serving(&self, backend: &str) -> Result<BTreeSet<String>, String> {
        let answer = command(&self.admin, &format!("show servers state {backend}"))?;
        let header = answer
            .lines()
            .find_map(|l| l.strip_prefix("# "))
            .ok_or_else(|| format!("unexpected answer: {answer}"))?;
        let columns: Vec<&str> = header.split_whitespace().collect();
        let at = |name: &str| {
            columns
                .iter()
                .position(|c| *c == name)
                .expect("a known column")
        };
        let (addr, port, admin) = (at("srv_addr"), at("srv_port"), at("srv_admin_state"));
        Ok(answer
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|f| f.len() == columns.len())
            .filter(|f| f[admin].parse::<u32>().is_ok_and(|a| a & 0x23 == 0))
            .map(|f| format!("{}:{}", f[addr], f[port]))
            .collect())
    }

    /// How many times the master reloaded (from `show proc` on the master socket).
    pub fn reloads(&self) -> u64 {
        wait_until(
            "haproxy's master to answer show proc",
            Duration::from_secs(10),
            || {
                let answer = command(&self.master, "show proc")?;
                answer
                    .lines()
                    .find(|l| l.contains("master"))
                    .and_then(|l| l.split_whitespace().nth(2))
                    .and_then(|n| n.parse::<u64>().ok())
                    .ok_or_else(|| format!("unexpected show proc answer: {answer:?}"))
            },
        )
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- haproxy log ---\n{}\n---", self.log_text());
        }
        signal(self.child.id(), "TERM");
        let child = &mut self.child;
        let exited = try_wait_until(Duration::from_secs(10), || {
            matches!(child.try_wait(), Ok(Some(_)))
        });
        if exited.is_err() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One command on a HAProxy CLI socket.
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
