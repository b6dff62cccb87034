//! The agent's configuration: one TOML file (`config/agent.toml` documents every key), unknown keys
//! rejected, errors naming the key with `file:line:col`, and `LATHE_AGENT_*` environment overrides
//! for the main keys. Everything is validated before the agent does anything.
//!
//! ```toml
//! registry = ["127.0.0.1:7500", "127.0.0.1:7501"]
//! [status]
//! listen = "127.0.0.1:7600"
//! [[watch]]
//! prefix = "/lathe/endpoints/task/http/lb"
//! wait = { min = "200ms", max = "2s" }
//! [[watch.action]]
//! type = "template"
//! source = "lb.cfg.j2"
//! destination = "/etc/lb.cfg"
//! ```

mod action;
mod load;
#[cfg(test)]
mod tests;
mod values;

use std::collections::BTreeSet;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

pub use action::{ActionConfig, ActionType};
pub use load::{load, load_str, ConfigError};
pub use values::{parse_addr, parse_duration, Addr, Dur, Prefix, ValueError, Window};

/// How the agent follows the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamMode {
    /// One Server-Sent-Events stream; blocking-query polling while SSE does not work.
    #[default]
    Auto,
    /// Only SSE.
    Sse,
    /// Only blocking queries (`?index=N&wait=...`).
    Poll,
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// This agent's name in gossip, status and logs (default: `agent-<status port>`).
    pub name: Option<String>,
    /// REST addresses of registry nodes (any of them); the agent fails over between them.
    #[serde(deserialize_with = "values::nonempty_addrs")]
    pub registry: Vec<Addr>,
    #[serde(default)]
    pub mode: StreamMode,
    /// A stream silent for this long (not even a keep-alive, sent every 15 s) counts as dead.
    #[serde(default = "default_stall_timeout")]
    pub stall_timeout: Dur,
    /// How long one blocking query waits when polling.
    #[serde(default = "default_poll_wait")]
    pub poll_wait: Dur,
    /// Back-off between reconnection attempts once every registry node failed in a row.
    #[serde(default = "default_retry")]
    pub retry: Window,
    /// Status addresses of peer agents to gossip with.
    #[serde(default)]
    pub peers: Vec<Addr>,
    #[serde(default)]
    pub gossip: GossipConfig,
    #[serde(default)]
    pub status: StatusConfig,
    #[serde(rename = "watch", deserialize_with = "nonempty_watches")]
    pub watches: Vec<WatchConfig>,
    /// The ACL token sent to registry nodes started with `--acl` (`--token` or `LATHE_TOKEN`,
    /// never from the file, so the file can be shared).
    #[serde(skip)]
    pub token: Option<String>,
}

impl AgentConfig {
    /// The headers every request to a registry node carries: the token, if any.
    pub fn registry_headers(&self) -> reqwest::header::HeaderMap {
        let mut headers = reqwest::header::HeaderMap::new();
        let token = self
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty());
        if let Some(Ok(mut value)) =
            token.map(|t| reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")))
        {
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        headers
    }

    /// The configured name, or `agent-<status port>`.
    pub fn agent_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            let port = self.status.listen.0.rsplit(':').next().unwrap_or("0");
            format!("agent-{port}")
        })
    }
}

/// `[status]`: the agent's own HTTP endpoint (`/status`, `/metrics`, gossip).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusConfig {
    pub listen: Addr,
}

impl Default for StatusConfig {
    fn default() -> Self {
        StatusConfig {
            listen: Addr("127.0.0.1:7600".to_string()),
        }
    }
}

/// `[gossip]`: how agents tell each other what they have seen.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GossipConfig {
    /// How often to send.
    #[serde(default = "default_gossip_interval")]
    pub interval: Dur,
    /// How many random peers to send to each time.
    #[serde(default = "default_fanout")]
    pub fanout: usize,
    /// How long a peer must be ahead before this agent reports itself behind and re-syncs.
    #[serde(default = "default_gossip_interval")]
    pub grace: Dur,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            interval: default_gossip_interval(),
            fanout: default_fanout(),
            grace: default_gossip_interval(),
        }
    }
}

/// `[[watch]]`: a registry subtree and what to do when it changes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// Default: the prefix.
    pub name: Option<String>,
    pub prefix: Prefix,
    /// Debounce: act `min` after the last change, at the latest `max` after the first.
    #[serde(default = "default_wait")]
    pub wait: Window,
    /// Pause before retrying an action that failed (not one whose check rejected the render).
    #[serde(default = "default_action_retry")]
    pub retry: Window,
    #[serde(rename = "action", deserialize_with = "nonempty_actions")]
    pub actions: Vec<ActionConfig>,
}

impl WatchConfig {
    pub fn watch_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.prefix.0.as_str().to_string())
    }
}

fn nonempty_watches<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<WatchConfig>, D::Error> {
    let watches = Vec::<WatchConfig>::deserialize(d)?;
    if watches.is_empty() {
        return Err(de::Error::custom("needs at least one [[watch]]"));
    }
    let mut names = BTreeSet::new();
    for watch in &watches {
        let name = watch.watch_name();
        if !names.insert(name.clone()) {
            return Err(de::Error::custom(format!(
                "two watches are named {name:?} (set distinct `name`s)"
            )));
        }
    }
    Ok(watches)
}

fn nonempty_actions<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ActionConfig>, D::Error> {
    let actions = Vec::<ActionConfig>::deserialize(d)?;
    if actions.is_empty() {
        return Err(de::Error::custom("needs at least one [[watch.action]]"));
    }
    Ok(actions)
}

fn default_stall_timeout() -> Dur {
    Dur(Duration::from_secs(40))
}

fn default_poll_wait() -> Dur {
    Dur(Duration::from_secs(30))
}

fn default_retry() -> Window {
    Window::new(Duration::from_millis(100), Duration::from_secs(2))
}

fn default_gossip_interval() -> Dur {
    Dur(Duration::from_secs(1))
}

fn default_fanout() -> usize {
    2
}

fn default_wait() -> Window {
    Window::new(Duration::from_millis(200), Duration::from_secs(2))
}

fn default_action_retry() -> Window {
    Window::new(Duration::from_millis(500), Duration::from_secs(10))
}
