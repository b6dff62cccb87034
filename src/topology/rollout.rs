//! A group's roll-out policy: the reserved `rollout` key.
//!
//! ```toml
//! rollout = { batch = 1, healthy_seconds = 5, timeout_seconds = 60, on_failure = "rollback" }
//! ```
//!
//! Every key is optional; the defaults are the values above. When a redeploy changes a group's
//! task type (a new `version`), the scheduler replaces its instances `batch` at a time: each batch
//! must run for `healthy_seconds` without a restart before the next starts, and a batch that is
//! not healthy within `timeout_seconds` (or fails, or cannot be placed) ends the roll-out:
//! `on_failure = "rollback"` puts every instance back on the old version, `"pause"` stops where
//! it is for a person to look (`lathe rollout status|pause|resume|undo GROUP`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::Diagnostics;
use super::value::{bounded, described, Value};

/// What a roll-out does when a batch is not healthy in time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    /// Put every instance back on the version it ran before.
    #[default]
    Rollback,
    /// Stop replacing; keep what runs; wait for `lathe rollout resume|undo`.
    Pause,
}

impl OnFailure {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "rollback" => Some(OnFailure::Rollback),
            "pause" => Some(OnFailure::Pause),
            _ => None,
        }
    }
}

/// How a group moves to a new task type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RolloutPolicy {
    /// Instances replaced at a time.
    pub batch: u32,
    /// How long each replaced instance must run, without a restart, before the next batch.
    pub healthy_seconds: u32,
    /// How long a batch may take to be healthy before the roll-out fails.
    pub timeout_seconds: u32,
    pub on_failure: OnFailure,
}

impl Default for RolloutPolicy {
    fn default() -> Self {
        RolloutPolicy {
            batch: 1,
            healthy_seconds: 5,
            timeout_seconds: 60,
            on_failure: OnFailure::Rollback,
        }
    }
}

impl RolloutPolicy {
    /// The keys of a `rollout` table.
    pub const KEYS: [&'static str; 4] =
        ["batch", "healthy_seconds", "timeout_seconds", "on_failure"];

    pub fn healthy_for(&self) -> Duration {
        Duration::from_secs(u64::from(self.healthy_seconds))
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.timeout_seconds))
    }
}

/// Reads the `rollout` key of `group`; reports and returns `None` on errors.
pub(super) fn read(
    d: &mut Diagnostics<'_>,
    group: &str,
    value: &Value<'_>,
) -> Option<RolloutPolicy> {
    let Some(table) = value.get_ref().as_table() else {
        d.report(
            &value.span(),
            Some(group),
            format!(
                "\"rollout\" must be a table such as rollout = {{ batch = 1, healthy_seconds = 5 }}, \
                 found {}",
                described(value.get_ref())
            ),
        );
        return None;
    };
    let before = d.count();
    let mut policy = RolloutPolicy::default();
    for (key, item) in table.iter() {
        let key_name = key.get_ref().as_ref();
        match key_name {
            "batch" => {
                if let Some(n) = bounded(d, group, &format!("rollout.{key_name}"), item, 1, 10_000)
                {
                    policy.batch = n as u32;
                }
            }
            "healthy_seconds" => {
                if let Some(n) = bounded(d, group, &format!("rollout.{key_name}"), item, 0, 86_400)
                {
                    policy.healthy_seconds = n as u32;
                }
            }
            "timeout_seconds" => {
                if let Some(n) = bounded(d, group, &format!("rollout.{key_name}"), item, 1, 86_400)
                {
                    policy.timeout_seconds = n as u32;
                }
            }
            "on_failure" => match item.get_ref().as_str().and_then(OnFailure::from_name) {
                Some(on_failure) => policy.on_failure = on_failure,
                None => d.report(
                    &item.span(),
                    Some(group),
                    "\"rollout.on_failure\" must be \"rollback\" or \"pause\"",
                ),
            },
            other => d.report(
                &key.span(),
                Some(group),
                format!(
                    "unknown key \"{other}\" in \"rollout\": the keys are {}",
                    RolloutPolicy::KEYS.join(", ")
                ),
            ),
        }
    }
    if d.count() == before && policy.timeout_seconds <= policy.healthy_seconds {
        let span = table
            .get("timeout_seconds")
            .or_else(|| table.get("healthy_seconds"))
            .map_or_else(|| value.span(), |item| item.span());
        d.report(
            &span,
            Some(group),
            format!(
                "\"rollout.timeout_seconds\" ({}) must be above \"rollout.healthy_seconds\" ({}): \
                 a batch could never pass",
                policy.timeout_seconds, policy.healthy_seconds
            ),
        );
    }
    (d.count() == before).then_some(policy)
}
