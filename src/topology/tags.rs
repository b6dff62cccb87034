//! A group's `tags` and its scheduler `biases` (parallel arrays: tags, then scores).

use std::collections::BTreeSet;

use toml::de::DeValue;

use super::error::Diagnostics;
use super::value::{described, integer, Value};

/// The largest bias score, either way; keeps the scheduler's sums far from overflow.
pub const MAX_BIAS: i64 = 1_000_000;

const BIASES_SHAPE: &str =
    "\"biases\" must be two parallel arrays, tags then scores, such as biases = \
        [[\"lb\", \"frontpage\"], [-10, 7]]";

/// `tags = ["lb", "net"]`: non-empty strings, each once.
pub(super) fn read_tags(
    d: &mut Diagnostics<'_>,
    group: &str,
    value: &Value<'_>,
) -> Option<Vec<String>> {
    let Some(items) = value.get_ref().as_array() else {
        d.report(
            &value.span(),
            Some(group),
            format!(
                "\"tags\" must be an array of strings such as tags = [\"lb\", \"net\"], found {}",
                described(value.get_ref())
            ),
        );
        return None;
    };
    strings(d, group, "tags", items)
}

/// `biases = [["lb", "frontpage"], [-10, 7]]` → `[("lb", -10), ("frontpage", 7)]`.
pub(super) fn read_biases(
    d: &mut Diagnostics<'_>,
    group: &str,
    value: &Value<'_>,
) -> Option<Vec<(String, i64)>> {
    let pair = value.get_ref().as_array().filter(|a| a.len() == 2);
    let (tags, scores) = match pair.map(|p| (p[0].get_ref().as_array(), p[1].get_ref().as_array()))
    {
        Some((Some(tags), Some(scores))) => (tags, scores),
        _ => {
            d.report(&value.span(), Some(group), BIASES_SHAPE);
            return None;
        }
    };
    let before = d.count();
    let tags = strings(d, group, "biases", tags);
    let mut numbers = Vec::with_capacity(scores.len());
    for score in scores.iter() {
        match integer(score.get_ref()) {
            Some(n) if (-MAX_BIAS..=MAX_BIAS).contains(&n) => numbers.push(n),
            _ => {
                let found = match score.get_ref() {
                    DeValue::Integer(i) => i.to_string(),
                    other => described(other),
                };
                d.report(
                    &score.span(),
                    Some(group),
                    format!(
                        "a bias score must be an integer from -{MAX_BIAS} to {MAX_BIAS} \
                        (negative avoids, positive attracts), found {found}"
                    ),
                );
            }
        }
    }
    let tags = tags?;
    if d.count() != before {
        return None;
    }
    if tags.len() != numbers.len() {
        d.report(
            &value.span(),
            Some(group),
            format!(
                "\"biases\" has {} but {}: give exactly one score per tag",
                counted(tags.len(), "tag"),
                counted(numbers.len(), "score")
            ),
        );
        return None;
    }
    Some(tags.into_iter().zip(numbers).collect())
}

/// Non-empty strings without duplicates; `key` names the array in messages.
fn strings(
    d: &mut Diagnostics<'_>,
    group: &str,
    key: &str,
    items: &[Value<'_>],
) -> Option<Vec<String>> {
    let before = d.count();
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item.get_ref().as_str() {
            Some("") => d.report(
                &item.span(),
                Some(group),
                format!("a tag in \"{key}\" is empty: remove it or name it"),
            ),
            Some(tag) if !seen.insert(tag) => d.report(
                &item.span(),
                Some(group),
                format!("tag {tag:?} appears twice in \"{key}\": remove one"),
            ),
            Some(tag) => out.push(tag.to_string()),
            None => d.report(
                &item.span(),
                Some(group),
                format!(
                    "a tag in \"{key}\" must be a string, found {}",
                    described(item.get_ref())
                ),
            ),
        }
    }
    (d.count() == before).then_some(out)
}

/// `1 tag`, `2 tags`.
fn counted(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
