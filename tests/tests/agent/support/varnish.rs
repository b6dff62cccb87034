//! A real Varnish (Debian's 7.1) in the foreground (`varnishd -F`) with its own work dir, admin
//! port and secret; `backends()` reads the addresses the VCL in use sends requests to.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lathe_tests::wait::{try_wait_until, wait_until};

use super::{free_addr, signal};

pub struct Varnish {
    child: Child,
    pub http: String,
    pub admin: String,
    pub secret: PathBuf,
    log: PathBuf,
}

impl Varnish {
    /// Starts varnishd on `vcl` (a file the test or the agent rendered).
    pub fn start(vcl: &Path, dir: &Path) -> Varnish {
        let (http, admin) = (free_addr(), free_addr());
        let secret = dir.join("secret");
        std::fs::write(&secret, "lathe-agent-test-secret\n").expect("write the varnish secret");
        let log = dir.join("varnishd.log");
        let out = File::create(&log).expect("create the varnish log");
        let child = Command::new("varnishd")
            .args(["-F", "-a", &http, "-T", &admin, "-S"])
            .arg(&secret)
            .arg("-f")
            .arg(vcl)
            .arg("-n")
            .arg(dir.join("work"))
            .args(["-s", "malloc,32m", "-p", "vcl_cooldown=1"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone the log handle"))
            .stderr(out)
            .spawn()
            .expect("spawn varnishd (apt-get install varnish)");
        let mut varnish = Varnish {
            child,
            http,
            admin,
            secret,
            log,
        };
        wait_until(
            "varnish to answer varnishadm ping",
            Duration::from_secs(60),
            || {
                if let Ok(Some(status)) = varnish.child.try_wait() {
                    panic!("varnishd exited with {status}: {}", varnish.log_text());
                }
                varnish.adm(&["ping"]).is_ok()
            },
        );
        varnish
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `varnishadm -T ADMIN -S SECRET ARGS...`: stdout, or the error output.
    pub fn adm(&self, args: &[&str]) -> Result<String, String> {
        let output = Command::new("varnishadm")
            .args(["-T", &self.admin, "-S"])
            .arg(&self.secret)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            Ok(text)
        } else {
            Err(format!("{text}{}", String::from_utf8_lossy(&output.stderr)))
        }
    }

    /// The name of the VCL in use.
    pub fn active_vcl(&self) -> Result<String, String> {
        let list = self.adm(&["vcl.list"])?;
        list.lines()
            .find(|l| l.starts_with("active"))
            .and_then(|l| l.split_whitespace().last())
            .map(str::to_string)
            .ok_or_else(|| format!("no active VCL in {list}"))
    }

    /// `HOST:PORT` of every backend of the VCL in use (read from its source).
    pub fn backends(&self) -> Result<BTreeSet<String>, String> {
        let source = self.adm(&["vcl.show", &self.active_vcl()?])?;
        let mut backends = BTreeSet::new();
        let mut host = None;
        for line in source.lines().map(str::trim) {
            let value = |l: &str| l.split('"').nth(1).map(str::to_string);
            if line.starts_with(".host") {
                host = value(line);
            } else if line.starts_with(".port") {
                if let (Some(h), Some(p)) = (host.take(), value(line)) {
                    backends.insert(format!("{h}:{p}"));
                }
            }
        }
        backends.remove("127.0.0.1:1");
        Ok(backends)
    }

    /// The names of every loaded VCL.
    pub fn vcl_names(&self) -> Vec<String> {
        self.adm(&["vcl.list"])
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().last().map(str::to_string))
            .collect()
    }
}

impl Drop for Varnish {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- varnishd log ---\n{}\n---", self.log_text());
        }
        signal(self.child.id(), "TERM");
        let child = &mut self.child;
        if try_wait_until(Duration::from_secs(10), || {
            matches!(child.try_wait(), Ok(Some(_)))
        })
        .is_err()
        {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
