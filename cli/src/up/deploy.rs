//! `lathe up --topology FILE`, once every node serves: wait until node 0 lists them all alive,
//! deploy the file (`PUT /v1/topology`), wait until every instance runs (or say which do not, and
//! why), then hand over to `endpoints.rs` (print them, and report the entry points that move). Runs
//! on its own thread, so the supervisor keeps restarting nodes meanwhile; `stop` ends it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use serde_json::Value;

use super::endpoints::Endpoints;
use super::topology::{self, GroupInfo};
use super::UpError;
use crate::client::{CliError, Client};
use crate::commands::topology::located_message;

/// The pause between two polls of the REST API.
const POLL: Duration = Duration::from_millis(200);
/// How long the cluster may take to see every node alive, and to accept the deploy.
const CLUSTER_DEADLINE: Duration = Duration::from_secs(120);

/// Everything the deploy thread needs.
pub(crate) struct Deployer {
    /// Node 0's REST API.
    pub(crate) client: Client,
    /// The names every node goes by (`local-<i>`).
    pub(crate) names: Vec<String>,
    pub(crate) file: PathBuf,
    pub(crate) source: String,
    /// How long to wait for every instance to run before printing the ones that do not.
    pub(crate) tasks_deadline: Duration,
    /// The path of the `curl` line printed for entry points (the seed's front page: `/get/index`).
    pub(crate) try_path: String,
    pub(crate) stop: Arc<AtomicBool>,
}

impl Deployer {
    /// Deploys, calls `ready` with the entry points' `curl` lines, then reports entry points that
    /// move until the stop flag is raised (`Err(Interrupted)`).
    pub(crate) fn run(self, ready: impl FnOnce(&[String])) -> Result<(), UpError> {
        self.wait_all_alive()?;
        self.deploy()?;
        let groups = topology::groups(&self.source).unwrap_or_default();
        let wanted: u64 = groups.iter().map(|g| g.tasks).sum();
        say!(
            "lathe up: deployed {} ({} groups); waiting for {wanted} instances to run",
            self.file.display(),
            groups.len()
        );
        self.wait_running(&groups)?;
        let endpoints = Endpoints {
            client: &self.client,
            stop: &self.stop,
            groups: &groups,
            try_path: &self.try_path,
        };
        let shown = endpoints.print_all()?;
        ready(&endpoints.curl_lines(&shown));
        endpoints.watch_entry_points(shown)
    }

    fn poll<T>(
        &self,
        deadline: Duration,
        check: impl FnMut() -> anyhow::Result<T>,
    ) -> Result<anyhow::Result<T>, UpError> {
        poll(&self.stop, deadline, check)
    }

    fn wait_all_alive(&self) -> Result<(), UpError> {
        let outcome = self.poll(CLUSTER_DEADLINE, || {
            let reply = self
                .client
                .get("/v1/members")
                .map_err(|e| anyhow!(e.one_line()))?;
            let members = crate::table::items(&reply.body, &["members"]).cloned();
            let alive: Vec<&str> = members
                .iter()
                .flatten()
                .filter(|m| m["status"] == "alive")
                .filter_map(|m| m["name"].as_str())
                .collect();
            let missing: Vec<&str> = self
                .names
                .iter()
                .map(String::as_str)
                .filter(|name| !alive.contains(name))
                .collect();
            if !missing.is_empty() {
                bail!("not alive yet: {}", missing.join(", "));
            }
            Ok(())
        })?;
        outcome.map_err(|observed| {
            UpError::Failed(format!(
                "the nodes did not all see each other alive within {} s ({observed:#})",
                CLUSTER_DEADLINE.as_secs()
            ))
        })?;
        say!(
            "lathe up: {} of {} nodes alive; deploying {}",
            self.names.len(),
            self.names.len(),
            self.file.display()
        );
        Ok(())
    }

    /// `PUT /v1/topology?file=NAME`: a 400 is final (the file is wrong); anything else is retried.
    fn deploy(&self) -> Result<(), UpError> {
        let name = self
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "topology.toml".into());
        let route = format!("/v1/topology?file={}", query_value(&name));
        let outcome = self.poll(CLUSTER_DEADLINE, || {
            match self
                .client
                .put_text(&route, "application/toml", &self.source)
            {
                Ok(_) => Ok(Ok(())),
                Err(CliError::Server {
                    status: 400,
                    message,
                }) => Ok(Err(message)),
                Err(err) => Err(anyhow!(err.one_line())),
            }
        })?;
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(UpError::Refused(refusal(&self.file, &name, &message))),
            Err(observed) => Err(UpError::Failed(format!(
                "cannot deploy {}: {observed:#}",
                self.file.display()
            ))),
        }
    }

    /// Waits until every wanted instance runs; after the deadline prints those that do not, and
    /// goes on.
    fn wait_running(&self, groups: &[GroupInfo]) -> Result<(), UpError> {
        let wanted: u64 = groups.iter().map(|g| g.tasks).sum();
        let outcome = self.poll(self.tasks_deadline, || {
            let reply = self
                .client
                .get("/v1/tasks")
                .map_err(|e| anyhow!(e.one_line()))?;
            let instances = reply.body.as_array().cloned().unwrap_or_default();
            let not_running = not_running(groups, &instances);
            if !not_running.is_empty() {
                bail!(not_running.join("\n"));
            }
            Ok(())
        })?;
        match outcome {
            Ok(()) => say!("lathe up: {wanted} of {wanted} instances running"),
            Err(observed) => {
                let observed = format!("{observed:#}");
                let count = observed.lines().count();
                say!(
                    "lathe up: after {} s, {count} of {wanted} instances are not running (going \
                        on):",
                    self.tasks_deadline.as_secs()
                );
                observed.lines().for_each(|line| say!("  {line}"));
            }
        }
        Ok(())
    }
}

/// Polls `check` every [`POLL`] until it gives `Ok`, the deadline passes (`Ok(Err(last observed))`)
/// or `stop` is raised (`Err(Interrupted)`). `check`'s `Err` says what it saw instead.
pub(crate) fn poll<T>(
    stop: &AtomicBool,
    deadline: Duration,
    mut check: impl FnMut() -> anyhow::Result<T>,
) -> Result<anyhow::Result<T>, UpError> {
    let started = Instant::now();
    loop {
        if stop.load(Ordering::SeqCst) {
            return Err(UpError::Interrupted);
        }
        let observed = match check() {
            Ok(value) => return Ok(Ok(value)),
            Err(observed) => observed,
        };
        if started.elapsed() >= deadline {
            return Ok(Err(observed));
        }
        std::thread::sleep(POLL);
    }
}

/// `group/index status: reason` for every wanted instance that does not run.
fn not_running(groups: &[GroupInfo], instances: &[Value]) -> Vec<String> {
    let mut lines = Vec::new();
    for group in groups {
        for index in 0..group.tasks {
            let instance = instances
                .iter()
                .find(|i| i["group"] == group.name.as_str() && i["index"].as_u64() == Some(index));
            let (status, reason) = match instance {
                Some(i) => (
                    i["status"].as_str().unwrap_or("unknown").to_string(),
                    i["reason"].as_str().map(str::to_string),
                ),
                None => ("not scheduled yet".to_string(), None),
            };
            if status != "running" {
                let reason = reason.map(|r| format!(": {r}")).unwrap_or_default();
                lines.push(format!("{}/{index} {status}{reason}", group.name));
            }
        }
    }
    lines
}

/// The server's refusal of `file`, sent as `name`: its errors start with `name:` (then
/// line:column), which becomes the path the user gave.
fn refusal(file: &Path, name: &str, message: &str) -> String {
    let path = file.display().to_string();
    match message
        .strip_prefix(name)
        .and_then(|rest| rest.strip_prefix(':'))
    {
        Some(rest) => format!("{path}:{rest}"),
        None => located_message(&path, message),
    }
}

/// A file name as a query value: anything but `[A-Za-z0-9._-]` percent-encoded.
fn query_value(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn instances_that_do_not_run_are_listed_with_their_reason() {
        let groups = topology::groups("[g]\ncrate = \"c\"\ntasks = 3\n").unwrap();
        let instances = [
            json!({"group": "g", "index": 0, "status": "running"}),
            json!({"group": "g", "index": 1, "status": "pending", "reason": "no node runs c 1.0"}),
        ];
        assert_eq!(
            not_running(&groups, &instances),
            ["g/1 pending: no node runs c 1.0", "g/2 not scheduled yet"]
        );
    }

    #[test]
    fn refusals_name_the_path_the_user_gave() {
        let file = Path::new("config/t.toml");
        assert_eq!(
            refusal(file, "t.toml", "t.toml:3:7: group a: missing key"),
            "config/t.toml:3:7: group a: missing key"
        );
        assert_eq!(
            refusal(file, "t.toml", "3:7: bad"),
            "config/t.toml:3:7: bad"
        );
        assert_eq!(refusal(file, "t.toml", "odd"), "config/t.toml: odd");
    }

    #[test]
    fn file_names_are_encoded_in_the_query() {
        assert_eq!(query_value("my_topology.toml"), "my_topology.toml");
        assert_eq!(query_value("a b&c.toml"), "a%20b%26c.toml");
    }
}
