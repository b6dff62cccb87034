//! Metric gates of roll-outs and traffic shifts, pure: read a group's response counters out of a
//! node's `/metrics` text ([`parse_metrics`]), sum them over the nodes ([`add`]), take the window
//! since a baseline ([`since`]), and judge it against the group's `rollout.max_error_ratio` and
//! `rollout.max_p99_ms` ([`judge`]). With a Prometheus, the same counters come from PromQL
//! answers ([`parse_prometheus`]). The p99 is read from the histogram's buckets as Prometheus's
//! `histogram_quantile` does (linear within the bucket it falls in).

use std::collections::{BTreeMap, BTreeSet};

use lathe::layout::Traffic;
use lathe::topology::RolloutPolicy;

const REQUESTS: &str = "lathe_http_requests_total";
const BUCKETS: &str = "lathe_http_request_duration_seconds_bucket";

/// The counters of each of `groups` in one node's Prometheus text (a group without a series is
/// absent).
pub fn parse_metrics(text: &str, groups: &BTreeSet<String>) -> BTreeMap<String, Traffic> {
    let mut found: BTreeMap<String, Traffic> = BTreeMap::new();
    for line in text.lines() {
        let Some((name, labels, value)) = series(line) else {
            continue;
        };
        if name != REQUESTS && name != BUCKETS {
            continue;
        }
        let Some(group) = label(labels, "group").filter(|g| groups.contains(*g)) else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let count = value.max(0.0) as u64;
        let traffic = found.entry(group.to_string()).or_default();
        if name == REQUESTS {
            traffic.requests += count;
            if label(labels, "code").is_some_and(|code| code.starts_with('5')) {
                traffic.errors += count;
            }
        } else if let Some(bound) = label(labels, "le").and_then(bound_us) {
            add_bucket(&mut traffic.buckets, bound, count);
        }
    }
    found
}

/// The PromQL label matcher of `groups`: `{group=~"a|b"}` (group names hold no regex specials
/// but `.`, which matches itself among others; [`parse_prometheus`] keeps exact names only).
pub fn promql_selector(groups: &BTreeSet<String>) -> String {
    let names: Vec<&str> = groups.iter().map(String::as_str).collect();
    format!("{{group=~\"{}\"}}", names.join("|"))
}

/// The counters of `groups` from the answers of Prometheus's `/api/v1/query` to
/// `sum by (group, code) (lathe_http_requests_total{..})` and
/// `sum by (group, le) (lathe_http_request_duration_seconds_bucket{..})`.
pub fn parse_prometheus(
    requests: &serde_json::Value,
    buckets: &serde_json::Value,
    groups: &BTreeSet<String>,
) -> Result<BTreeMap<String, Traffic>, AnswerError> {
    let mut found: BTreeMap<String, Traffic> = BTreeMap::new();
    for (labels, count) in vector(requests)? {
        let Some(group) = labels.get("group").filter(|g| groups.contains(**g)) else {
            continue;
        };
        let traffic = found.entry(group.to_string()).or_default();
        traffic.requests += count;
        if labels.get("code").is_some_and(|code| code.starts_with('5')) {
            traffic.errors += count;
        }
    }
    for (labels, count) in vector(buckets)? {
        let Some(group) = labels.get("group").filter(|g| groups.contains(**g)) else {
            continue;
        };
        let Some(bound) = labels.get("le").and_then(|le| bound_us(le)) else {
            continue;
        };
        add_bucket(
            &mut found.entry(group.to_string()).or_default().buckets,
            bound,
            count,
        );
    }
    Ok(found)
}

/// What is wrong with an answer of Prometheus's `/api/v1/query`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnswerError {
    /// Its `status` is not `success`: the whole answer.
    #[error("prometheus answered {0}")]
    NotSuccess(serde_json::Value),
    /// Its `data.result` is not an array: the whole answer.
    #[error("not an instant vector: {0}")]
    NotVector(serde_json::Value),
    /// A sample whose `value` has no number: the sample.
    #[error("a sample without a value: {0}")]
    NoValue(serde_json::Value),
}

/// One sample of an instant vector: its labels and value.
type Sample<'a> = (BTreeMap<&'a str, &'a str>, u64);

/// The samples of an instant-vector answer.
fn vector(answer: &serde_json::Value) -> Result<Vec<Sample<'_>>, AnswerError> {
    if answer["status"] != "success" {
        return Err(AnswerError::NotSuccess(answer.clone()));
    }
    let results = answer["data"]["result"]
        .as_array()
        .ok_or_else(|| AnswerError::NotVector(answer.clone()))?;
    results
        .iter()
        .map(|sample| {
            let labels = sample["metric"]
                .as_object()
                .map(|labels| {
                    labels
                        .iter()
                        .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
                        .collect()
                })
                .unwrap_or_default();
            let value = sample["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| AnswerError::NoValue(sample.clone()))?;
            Ok((labels, value.max(0.0).round() as u64))
        })
        .collect()
}

/// `name{labels} value` (or `name value`): its parts; `None` for comments and other lines.
fn series(line: &str) -> Option<(&str, &str, &str)> {
    if line.starts_with('#') {
        return None;
    }
    let (head, value) = line.trim_end().rsplit_once(' ')?;
    match head.split_once('{') {
        Some((name, labels)) => Some((name, labels.strip_suffix('}')?, value)),
        None => Some((head, "", value)),
    }
}

/// The value of label `name` in `a="x",b="y"` (values without escapes, as Lathe's labels are).
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    labels.split("\",").find_map(|pair| {
        let (key, value) = pair.split_once("=\"")?;
        (key.trim_start_matches(',') == name).then(|| value.trim_end_matches('"'))
    })
}

/// A bucket's `le` in microseconds; +Inf is `u64::MAX`.
fn bound_us(le: &str) -> Option<u64> {
    if le == "+Inf" {
        return Some(u64::MAX);
    }
    let seconds: f64 = le.parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| (seconds * 1e6).round() as u64)
}

fn add_bucket(buckets: &mut Vec<(u64, u64)>, bound: u64, count: u64) {
    match buckets.binary_search_by_key(&bound, |(b, _)| *b) {
        Ok(at) => buckets[at].1 += count,
        Err(at) => buckets.insert(at, (bound, count)),
    }
}

/// `into` plus `other` (another node's counters of the same group).
pub fn add(into: &mut Traffic, other: &Traffic) {
    into.requests += other.requests;
    into.errors += other.errors;
    for &(bound, count) in &other.buckets {
        add_bucket(&mut into.buckets, bound, count);
    }
}

/// What was answered between `then` and `now`; `None` when a counter went down (a node restarted
/// or left: the window starts over).
pub fn since(now: &Traffic, then: &Traffic) -> Option<Traffic> {
    let bucket = |bound: u64, buckets: &[(u64, u64)]| {
        buckets
            .iter()
            .find(|(b, _)| *b == bound)
            .map_or(0, |(_, c)| *c)
    };
    let buckets = now
        .buckets
        .iter()
        .map(|&(bound, count)| Some((bound, count.checked_sub(bucket(bound, &then.buckets))?)))
        .collect::<Option<Vec<_>>>()?;
    let lost_bucket = then
        .buckets
        .iter()
        .any(|(b, c)| *c > 0 && !now.buckets.iter().any(|(nb, _)| nb == b));
    if lost_bucket {
        return None;
    }
    Some(Traffic {
        requests: now.requests.checked_sub(then.requests)?,
        errors: now.errors.checked_sub(then.errors)?,
        buckets,
    })
}

/// The `q` quantile (0 to 1) of the answer times in `window`, in milliseconds; `None` without
/// answers. Within a bucket it interpolates linearly; in the +Inf bucket it is the highest finite
/// bound (as Prometheus's `histogram_quantile`).
pub fn quantile_ms(q: f64, window: &Traffic) -> Option<f64> {
    let total = window.buckets.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let (mut lower_bound, mut lower_count) = (0u64, 0u64);
    for &(bound, count) in &window.buckets {
        if count as f64 >= rank && count > lower_count {
            if bound == u64::MAX {
                return Some(lower_bound as f64 / 1000.0);
            }
            let share = (rank - lower_count as f64) / (count - lower_count) as f64;
            let us = lower_bound as f64 + (bound - lower_bound) as f64 * share;
            return Some(us / 1000.0);
        }
        (lower_bound, lower_count) = (bound, count);
    }
    Some(lower_bound as f64 / 1000.0)
}

/// What a metric gate says about a window.
#[derive(Debug, Clone, PartialEq)]
pub enum Judgement {
    /// Enough answers, every figure under its threshold.
    Pass,
    /// Fewer answers than `rollout.min_requests` so far.
    TooFew(u64),
    /// A figure over its threshold: which, by how much.
    Over(String),
}

/// Judges `window` against `policy`'s gates (a policy without gates passes everything).
pub fn judge(policy: &RolloutPolicy, window: &Traffic) -> Judgement {
    if !policy.gated() {
        return Judgement::Pass;
    }
    if window.requests < u64::from(policy.min_requests) {
        return Judgement::TooFew(window.requests);
    }
    if let Some(max) = policy.max_error_ratio {
        let ratio = window.errors as f64 / window.requests as f64;
        if ratio > max.get() {
            return Judgement::Over(format!(
                "error ratio {ratio:.3} over max_error_ratio {} ({} of {} answers 5xx)",
                max.get(),
                window.errors,
                window.requests
            ));
        }
    }
    if let Some(max) = policy.max_p99_ms {
        if let Some(p99) = quantile_ms(0.99, window).filter(|p99| *p99 > f64::from(max)) {
            return Judgement::Over(format!(
                "p99 {p99:.1} ms over max_p99_ms {max} ({} answers)",
                window.requests
            ));
        }
    }
    Judgement::Pass
}

#[cfg(test)]
mod tests;
