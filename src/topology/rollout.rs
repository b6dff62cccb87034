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
//!
//! Metric gates (optional, as Flagger or Argo Rollouts do): with `max_error_ratio` (5xx answers /
//! all answers, 0 to 1) and/or `max_p99_ms` (99th percentile of the answer time), a batch goes
//! ahead only once its group answered at least `min_requests` (default 20) requests since it
//! became healthy and both stay under their thresholds; over a threshold fails the batch. The
//! figures are the group's own response counters on every node
//! (`lathe_http_requests_total{group,code}`, `lathe_http_request_duration_seconds{group}`).
//! A traffic shift to a group applies the gates of that group's `rollout` table to each of its
//! steps (the answers since the previous step), and rolls back over a threshold.
//!
//! ```toml
//! rollout = { batch = 1, healthy_seconds = 10, max_error_ratio = 0.05, max_p99_ms = 250 }
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::Diagnostics;
use super::value::{bounded, described, integer, Value};
use toml::de::DeValue;

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

/// A ratio from 0 to 1, kept in millionths so that policies compare and hash exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ratio(u32);

impl Ratio {
    /// The ratio nearest `value` (clamped to 0..=1).
    pub fn new(value: f64) -> Self {
        Ratio((value.clamp(0.0, 1.0) * 1e6).round() as u32)
    }

    pub fn get(self) -> f64 {
        f64::from(self.0) / 1e6
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
    /// Metric gate: the most 5xx answers / all answers a batch may show.
    #[serde(default)]
    pub max_error_ratio: Option<Ratio>,
    /// Metric gate: the longest 99th percentile answer time a batch may show, in milliseconds.
    #[serde(default)]
    pub max_p99_ms: Option<u32>,
    /// How many answers a metric gate needs before it judges.
    #[serde(default = "default_min_requests")]
    pub min_requests: u32,
}

fn default_min_requests() -> u32 {
    20
}

impl Default for RolloutPolicy {
    fn default() -> Self {
        RolloutPolicy {
            batch: 1,
            healthy_seconds: 5,
            timeout_seconds: 60,
            on_failure: OnFailure::Rollback,
            max_error_ratio: None,
            max_p99_ms: None,
            min_requests: default_min_requests(),
        }
    }
}

impl RolloutPolicy {
    /// The keys of a `rollout` table.
    pub const KEYS: [&'static str; 7] = [
        "batch",
        "healthy_seconds",
        "timeout_seconds",
        "on_failure",
        "max_error_ratio",
        "max_p99_ms",
        "min_requests",
    ];

    /// Whether a metric gate is set.
    pub fn gated(&self) -> bool {
        self.max_error_ratio.is_some() || self.max_p99_ms.is_some()
    }

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
                "\"rollout\" must be a table such as rollout = {{ batch = 1, healthy_seconds = 5 \
                    }}, \
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
            "max_error_ratio" => {
                let ratio = match item.get_ref() {
                    DeValue::Float(f) => f.as_str().parse::<f64>().ok(),
                    value @ DeValue::Integer(_) => integer(value).map(|n| n as f64),
                    _ => None,
                };
                match ratio.filter(|r| (0.0..=1.0).contains(r)) {
                    Some(ratio) => policy.max_error_ratio = Some(Ratio::new(ratio)),
                    None => d.report(
                        &item.span(),
                        Some(group),
                        format!(
                            "\"rollout.max_error_ratio\" must be a number from 0 to 1 (5xx answers \
                                / all \
                             answers, e.g. 0.05), found {}",
                            ratio.map_or_else(|| described(item.get_ref()), |r| r.to_string())
                        ),
                    ),
                }
            }
            "max_p99_ms" => {
                if let Some(n) =
                    bounded(d, group, &format!("rollout.{key_name}"), item, 1, 3_600_000)
                {
                    policy.max_p99_ms = Some(n as u32);
                }
            }
            "min_requests" => {
                if let Some(n) =
                    bounded(d, group, &format!("rollout.{key_name}"), item, 1, 1_000_000)
                {
                    policy.min_requests = n as u32;
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
