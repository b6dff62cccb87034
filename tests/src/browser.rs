//! Headless Chromium for page tests, driven through chromedriver's W3C WebDriver HTTP API (plain
//! JSON over HTTP): open a page, run a script in it, read the browser's console errors, save
//! screenshots.
//!
//! ```no_run
//! use lathe_tests::browser::Browser;
//!
//! let browser = Browser::start("dashboard");
//! browser.open("http://127.0.0.1:7501/ui");
//! let title = browser.eval("return document.title");
//! assert!(browser.console_errors().is_empty());
//! browser.screenshot("loaded"); // <artifacts>/dashboard/loaded.png
//! ```
//!
//! Needs Debian's `chromium` and `chromium-driver` (`make deps`). Screenshots go to
//! `$LATHE_TEST_ARTIFACTS`, else to `test-artifacts/` in the target folder of the running test.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use crate::http;
use crate::node::free_port;
use crate::wait::wait_until;

/// chromedriver's binary (Debian `chromium-driver`).
const DRIVER: &str = "/usr/bin/chromedriver";
/// Chromium itself, not Debian's `/usr/bin/chromium` wrapper script (which adds flags of its own).
const CHROMIUM: &str = "/usr/lib/chromium/chromium";
/// chromedriver answering `/status`, and Chromium starting, on a busy machine.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// The window: wide enough for the dashboard's tables.
const WINDOW: (u64, u64) = (1400, 900);

/// One chromedriver process and its Chromium session, with a fresh profile; both end when dropped.
pub struct Browser {
    driver: Child,
    addr: String,
    session: String,
    artifacts: PathBuf,
    profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless Chromium session whose console
    /// messages of level SEVERE are kept; screenshots go to `<artifacts>/<name>/`.
    pub fn start(name: &str) -> Browser {
        let profile = tempfile::Builder::new()
            .prefix("lathe-chromium-")
            .tempdir()
            .expect("a profile directory");
        let port = free_port();
        let log = File::create(profile.path().join("chromedriver.log")).expect("a driver log");
        let driver = Command::new(DRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::from(log.try_clone().expect("the driver log")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {DRIVER} (make deps installs it): {e}"));
        let addr = format!("127.0.0.1:{port}");
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
            artifacts: artifacts_dir().join(name),
            profile,
        };
        wait_until("chromedriver ready", START_DEADLINE, || {
            let status = http::try_get_json(&browser.addr, "/status")?;
            (status.body["value"]["ready"] == true)
                .then_some(())
                .ok_or(status.text)
        });
        browser.session = browser.new_session();
        browser
    }

    fn new_session(&self) -> String {
        let profile = self.profile.path().join("profile");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            &format!("--window-size={},{}", WINDOW.0, WINDOW.1),
            &format!("--user-data-dir={}", profile.display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
            "goog:loggingPrefs": {"browser": "SEVERE"},
        }}});
        let reply = self.command("POST", "/session", Some(capabilities));
        reply["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id from chromedriver: {reply}"))
            .to_string()
    }

    /// One WebDriver command; its `value`. Panics on an error answer, with the driver's message.
    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string());
        let reply = http::request(method, &self.addr, path, body.as_deref());
        assert_eq!(
            reply.status, 200,
            "webdriver {method} {path}: {}",
            reply.text
        );
        reply.body["value"].clone()
    }

    fn session_command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.command(method, &path, body)
    }

    /// Navigates to `url` and returns once the page has loaded (its `load` event).
    pub fn open(&self, url: &str) {
        self.session_command("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body: `return ...`) in the page; its return value as JSON.
    pub fn eval(&self, script: &str) -> Value {
        let body = json!({ "script": script, "args": [] });
        self.session_command("POST", "/execute/sync", Some(body))
    }

    /// The console messages of level SEVERE (errors, failed loads, uncaught exceptions) since the
    /// last call.
    pub fn console_errors(&self) -> Vec<Value> {
        let logs = self.session_command("POST", "/se/log", Some(json!({"type": "browser"})));
        let entries = logs.as_array().cloned().unwrap_or_default();
        entries
            .into_iter()
            .filter(|entry| entry["level"] == "SEVERE")
            .collect()
    }

    /// Saves a PNG of the whole page, beyond the window, as `<artifacts>/<name>/<file>.png`; prints
    /// and returns its path. (WebDriver's own screenshot stops at the window: this one is
    /// Chromium's, through chromedriver's DevTools pass-through.)
    pub fn screenshot(&self, file: &str) -> PathBuf {
        let size = self.eval(
            "const e = document.documentElement; return [Math.max(e.scrollWidth, e.clientWidth), \
                e.scrollHeight]",
        );
        let (width, height) = (
            size[0].as_u64().unwrap_or(WINDOW.0),
            size[1].as_u64().unwrap_or(WINDOW.1),
        );
        let capture = json!({"cmd": "Page.captureScreenshot", "params": {
            "format": "png",
            "captureBeyondViewport": true,
            "clip": {"x": 0, "y": 0, "width": width, "height": height.min(16_000), "scale": 1},
        }});
        let png = self.session_command("POST", "/goog/cdp/execute", Some(capture));
        let png = base64::engine::general_purpose::STANDARD
            .decode(png["data"].as_str().expect("a base64 screenshot"))
            .expect("a base64 screenshot");
        std::fs::create_dir_all(&self.artifacts).expect("the artifacts folder");
        let path = self.artifacts.join(format!("{file}.png"));
        std::fs::write(&path, png).expect("write a screenshot");
        eprintln!("lathe-tests: screenshot {}", path.display());
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            // Quits Chromium; the driver goes next.
            let path = format!("/session/{}", self.session);
            http::try_request("DELETE", &self.addr, &path, None).ok();
        }
        self.driver.kill().ok();
        self.driver.wait().ok();
    }
}

/// Where tests keep what they leave for people to look at: `$LATHE_TEST_ARTIFACTS`, else
/// `test-artifacts/` in the target folder of the running test (`target/debug/deps/test-xxx` →
/// `target/test-artifacts`).
pub fn artifacts_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LATHE_TEST_ARTIFACTS") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the path of the test executable");
    let target = exe
        .ancestors()
        .find(|dir| {
            dir.file_name()
                .is_some_and(|n| n == "debug" || n == "release")
        })
        .and_then(Path::parent)
        .map(Path::to_path_buf);
    target
        .unwrap_or_else(std::env::temp_dir)
        .join("test-artifacts")
}
