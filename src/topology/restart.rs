//! A group's restart policy: the reserved `restart` key.
//!
//! ```toml
//! restart = { strategy = "one-for-one", max_restarts = 5, within_seconds = 10, backoff_ms = 100, max_backoff_ms = 5000 }
//! ```
//!
//! Every key is optional; the defaults are the values above. See the [module doc](super) for what
//! each one means.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::de::DeTable;

use super::error::Diagnostics;
use super::value::{bounded, described, Value};

/// Which instances restart when one instance of the group crashes, among the group's instances on
/// one node (OTP's strategies).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartStrategy {
    /// Only the crashed instance.
    #[default]
    OneForOne,
    /// Every instance of the group on the node.
    OneForAll,
    /// The crashed instance and those of the group on the node with a higher index.
    RestForOne,
}

impl RestartStrategy {
    const NAMES: [(&'static str, RestartStrategy); 3] = [
        ("one-for-one", RestartStrategy::OneForOne),
        ("one-for-all", RestartStrategy::OneForAll),
        ("rest-for-one", RestartStrategy::RestForOne),
    ];

    pub fn from_name(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| *s)
    }

    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, s)| *s == self)
            .map(|(n, _)| *n)
            .unwrap_or_default()
    }
}

/// How a group's instances are restarted when they crash.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RestartPolicy {
    pub strategy: RestartStrategy,
    /// At most this many restarts within `within_seconds`; one more marks the instance `failed`.
    pub max_restarts: u32,
    pub within_seconds: u32,
    /// The wait before the second restart in a window; it doubles for each further restart.
    pub backoff_ms: u64,
    /// The longest wait between restarts.
    pub max_backoff_ms: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            strategy: RestartStrategy::OneForOne,
            max_restarts: 5,
            within_seconds: 10,
            backoff_ms: 100,
            max_backoff_ms: 5000,
        }
    }
}

impl RestartPolicy {
    /// The keys of a `restart` table.
    pub const KEYS: [&'static str; 5] = [
        "strategy",
        "max_restarts",
        "within_seconds",
        "backoff_ms",
        "max_backoff_ms",
    ];

    pub fn window(&self) -> Duration {
        Duration::from_secs(u64::from(self.within_seconds))
    }

    pub fn backoff(&self) -> Duration {
        Duration::from_millis(self.backoff_ms)
    }

    pub fn max_backoff(&self) -> Duration {
        Duration::from_millis(self.max_backoff_ms)
    }
}

/// Reads the `restart` key of `group`; reports and returns `None` on errors.
pub(super) fn read(
    d: &mut Diagnostics<'_>,
    group: &str,
    value: &Value<'_>,
) -> Option<RestartPolicy> {
    let Some(table) = value.get_ref().as_table() else {
        d.report(
            &value.span(),
            Some(group),
            format!(
                "\"restart\" must be a table such as restart = {{ strategy = \"one-for-one\", \
                 max_restarts = 5, within_seconds = 10 }}, found {}",
                described(value.get_ref())
            ),
        );
        return None;
    };
    let before = d.count();
    let mut policy = RestartPolicy::default();
    for (key, item) in table.iter() {
        let key_name = key.get_ref().as_ref();
        match key_name {
            "strategy" => match item.get_ref().as_str().and_then(RestartStrategy::from_name) {
                Some(strategy) => policy.strategy = strategy,
                None => d.report(
                    &item.span(),
                    Some(group),
                    "\"restart.strategy\" must be \"one-for-one\", \"one-for-all\" \
                        or \"rest-for-one\"",
                ),
            },
            "max_restarts" => {
                if let Some(n) = bounded(d, group, &format!("restart.{key_name}"), item, 0, 1000) {
                    policy.max_restarts = n as u32;
                }
            }
            "within_seconds" => {
                if let Some(n) = bounded(d, group, &format!("restart.{key_name}"), item, 1, 86_400)
                {
                    policy.within_seconds = n as u32;
                }
            }
            "backoff_ms" => {
                if let Some(n) = bounded(d, group, &format!("restart.{key_name}"), item, 0, 600_000)
                {
                    policy.backoff_ms = n as u64;
                }
            }
            "max_backoff_ms" => {
                if let Some(n) =
                    bounded(d, group, &format!("restart.{key_name}"), item, 0, 3_600_000)
                {
                    policy.max_backoff_ms = n as u64;
                }
            }
            other => d.report(
                &key.span(),
                Some(group),
                format!(
                    "unknown key \"{other}\" in \"restart\": the keys are {}",
                    RestartPolicy::KEYS.join(", ")
                ),
            ),
        }
    }
    check_backoff_cap(d, group, table, &mut policy);
    (d.count() == before).then_some(policy)
}

/// Without an explicit cap, a large `backoff_ms` raises it; an explicit cap below it is an error.
fn check_backoff_cap(
    d: &mut Diagnostics<'_>,
    group: &str,
    table: &DeTable<'_>,
    policy: &mut RestartPolicy,
) {
    match table.get("max_backoff_ms") {
        None => policy.max_backoff_ms = policy.max_backoff_ms.max(policy.backoff_ms),
        Some(cap) if policy.max_backoff_ms < policy.backoff_ms => d.report(
            &cap.span(),
            Some(group),
            format!(
                "\"restart.max_backoff_ms\" ({}) is below \"restart.backoff_ms\" ({}): raise it or \
                    lower backoff_ms",
                policy.max_backoff_ms, policy.backoff_ms
            ),
        ),
        Some(_) => {}
    }
}
