//! Where a deployed topology answers: the HTTP endpoints of every group (`GET /v1/services/...`), a
//! `curl` line for each entry point (an HTTP group no other group names in its metadata: the seed's
//! load balancer), and, while `lathe up` runs, the entry points again whenever they move (instances
//! re-placed after a node died).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::deploy::poll;
use super::topology::{self, GroupInfo};
use super::UpError;
use crate::client::Client;

/// How long the endpoints of running instances may take to show in `/v1/services`.
const REGISTER_DEADLINE: Duration = Duration::from_secs(10);
/// How often the entry points are re-read after the deploy.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// URLs (`http://HOST:PORT`) by group name.
type Urls = BTreeMap<String, Vec<String>>;

/// The endpoints of the groups of one deployed topology, read from one node.
pub(crate) struct Endpoints<'a> {
    pub(crate) client: &'a Client,
    pub(crate) stop: &'a AtomicBool,
    pub(crate) groups: &'a [GroupInfo],
    /// The path of the `curl` lines (`/get/index` for the seed).
    pub(crate) try_path: &'a str,
}

impl Endpoints<'_> {
    /// Prints `group: http://a http://b ...` for every HTTP group (waiting briefly until each
    /// wanted instance is registered) and returns what it printed.
    pub(crate) fn print_all(&self) -> Result<Urls, UpError> {
        let mut shown = Urls::new();
        for group in self.groups {
            let mut urls = Vec::new();
            let _ = poll(self.stop, REGISTER_DEADLINE, || {
                urls = self.urls(group).unwrap_or_default();
                if (urls.len() as u64) < group.tasks {
                    anyhow::bail!("{} of {} registered", urls.len(), group.tasks);
                }
                Ok(())
            })?;
            if !urls.is_empty() {
                say!("{}: {}", group.name, urls.join(" "));
                shown.insert(group.name.clone(), urls);
            }
        }
        Ok(shown)
    }

    /// `entry point GROUP: curl URL/PATH` for every entry point among the HTTP groups of `shown`.
    pub(crate) fn curl_lines(&self, shown: &Urls) -> Vec<String> {
        self.entry_points(shown)
            .into_iter()
            .filter_map(|name| shown.get(name).map(|urls| self.curl_line(name, urls)))
            .collect()
    }

    /// Until the stop flag rises (`Err(Interrupted)`): re-reads the entry points every
    /// [`WATCH_INTERVAL`] and prints them again once they changed and read the same twice in a row.
    pub(crate) fn watch_entry_points(&self, mut shown: Urls) -> Result<(), UpError> {
        let entries: Vec<String> = self
            .entry_points(&shown)
            .into_iter()
            .map(str::to_string)
            .collect();
        let mut last_read = shown.clone();
        loop {
            let _ = poll(self.stop, WATCH_INTERVAL, || {
                Err::<(), _>(anyhow::anyhow!("waiting for the next read"))
            })?;
            for name in &entries {
                let Some(group) = self.groups.iter().find(|g| &g.name == name) else {
                    continue;
                };
                let Some(urls) = self.urls(group) else {
                    continue;
                };
                let settled = last_read.get(name) == Some(&urls);
                if settled && !urls.is_empty() && shown.get(name) != Some(&urls) {
                    say!("{name} moved: {}", urls.join(" "));
                    say!("  {}", self.curl_line(name, &urls));
                    shown.insert(name.clone(), urls.clone());
                }
                last_read.insert(name.clone(), urls);
            }
        }
    }

    fn entry_points<'s>(&self, shown: &'s Urls) -> Vec<&'s str> {
        let names: Vec<&str> = shown.keys().map(String::as_str).collect();
        topology::entry_points(self.groups, &names)
    }

    fn curl_line(&self, name: &str, urls: &[String]) -> String {
        format!("entry point {name}: curl {}{}", urls[0], self.try_path)
    }

    /// `http://HOST:PORT` of every HTTP endpoint of `group`, sorted; `None` if the node does not
    /// answer.
    fn urls(&self, group: &GroupInfo) -> Option<Vec<String>> {
        let reply = self.client.get(&group.services_route()).ok()?;
        let mut urls: Vec<String> = reply
            .body
            .as_array()?
            .iter()
            .filter_map(|e| e["http"].as_str().map(|http| format!("http://{http}")))
            .collect();
        urls.sort();
        Some(urls)
    }
}
