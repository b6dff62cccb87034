//! Reads one functional group — a table with a `crate` key — into a [`GroupSpec`].

use std::collections::BTreeMap;
use std::ops::Range;

use toml::de::{DeTable, DeValue};

use super::error::Diagnostics;
use super::flows::{self, FlowsSpec};
use super::restart::{self, RestartPolicy};
use super::rollout::{self, RolloutPolicy};
use super::state::{self, StateSpec};
use super::tags;
use super::value::{described, integer, to_json, Value};
use super::GroupSpec;
use crate::catalog::TaskType;
use crate::registry::{KeyPath, KeyPathError};

/// The most instances one group may ask for.
pub const MAX_TASKS: u32 = 10_000;

/// Keys Lathe reads itself; any other key of a group is metadata.
pub const RESERVED_KEYS: [&str; 10] = [
    "crate", "version", "task", "tasks", "tags", "biases", "restart", "rollout", "flows", "state",
];

/// Keys kept for features that are not built yet, so that they never silently become metadata.
pub const FUTURE_KEYS: [(&str, &str); 1] = [("cache", "cache")];

/// Reads the group `name` whose table starts at `header`; reports and returns `None` on errors.
pub(super) fn read(
    d: &mut Diagnostics<'_>,
    name: &str,
    path: KeyPath,
    header: &Range<usize>,
    table: &DeTable<'_>,
) -> Option<GroupSpec> {
    let before = d.count();
    let crate_name = required(
        d,
        name,
        header,
        table,
        "crate",
        "crate = \"http_frontpage\"",
    )
    .and_then(|v| {
        text(
            d,
            name,
            v,
            "crate",
            is_crate_name,
            "a crate name such as \"http_frontpage\" (letters, digits, _ and -)",
        )
    });
    let version =
        required(d, name, header, table, "version", "version = \"4.2.1\"").and_then(|v| {
            text(
                d,
                name,
                v,
                "version",
                is_crate_version,
                "a full crate version such \
            as \"4.2.1\", matched against the task crate's Cargo.toml version",
            )
        });
    let task = required(d, name, header, table, "task", "task = \"my::FrontPage\"").and_then(|v| {
        text(
            d,
            name,
            v,
            "task",
            is_task_path,
            "the task's path such as \"my::FrontPage\", as given to http_task! or task!",
        )
    });
    let tasks =
        required(d, name, header, table, "tasks", "tasks = 3").and_then(|v| task_count(d, name, v));
    let tags = table
        .get("tags")
        .map_or(Some(Vec::new()), |v| tags::read_tags(d, name, v));
    let biases = table
        .get("biases")
        .map_or(Some(Vec::new()), |v| tags::read_biases(d, name, v));
    let restart = table
        .get("restart")
        .map_or(Some(RestartPolicy::default()), |v| {
            restart::read(d, name, v)
        });
    let rollout = table
        .get("rollout")
        .map_or(Some(RolloutPolicy::default()), |v| {
            rollout::read(d, name, v)
        });
    let flows = table
        .get("flows")
        .map_or(Some(FlowsSpec::default()), |v| flows::read(d, name, v));
    let state = table
        .get("state")
        .map_or(Some(StateSpec::default()), |v| state::read(d, name, v));
    let metadata = read_metadata(d, name, &path, table);
    if d.count() != before {
        return None;
    }
    Some(GroupSpec {
        name: name.to_string(),
        path,
        task_type: TaskType::new(crate_name?, version?, task?),
        tasks: tasks?,
        tags: tags?,
        biases: biases?,
        restart: restart?,
        rollout: rollout?,
        flows: flows?,
        state: state?,
        metadata,
    })
}

fn required<'t, 'i>(
    d: &mut Diagnostics<'_>,
    group: &str,
    header: &Range<usize>,
    table: &'t DeTable<'i>,
    key: &str,
    example: &str,
) -> Option<&'t Value<'i>> {
    let value = table.get(key);
    if value.is_none() {
        d.report(
            header,
            Some(group),
            format!("missing required key \"{key}\" (add e.g. {example})"),
        );
    }
    value
}

/// A string value that passes `valid`; `what` says what it should be.
fn text(
    d: &mut Diagnostics<'_>,
    group: &str,
    value: &Value<'_>,
    key: &str,
    valid: fn(&str) -> bool,
    what: &str,
) -> Option<String> {
    let found = match value.get_ref() {
        DeValue::String(s) if valid(s) => return Some(s.to_string()),
        DeValue::String(s) => format!("{s:?}"),
        other => described(other),
    };
    d.report(
        &value.span(),
        Some(group),
        format!("\"{key}\" must be {what}, found {found}"),
    );
    None
}

fn task_count(d: &mut Diagnostics<'_>, group: &str, value: &Value<'_>) -> Option<u32> {
    let found = match value.get_ref() {
        v @ DeValue::Integer(_) => match integer(v) {
            Some(n) if (1..=i64::from(MAX_TASKS)).contains(&n) => return Some(n as u32),
            Some(n) => n.to_string(),
            None => "a huge integer".to_string(),
        },
        other => described(other),
    };
    d.report(
        &value.span(),
        Some(group),
        format!(
            "\"tasks\" must be a positive integer up to {MAX_TASKS} (how many instances to \
            run), found {found}"
        ),
    );
    None
}

/// Every non-reserved key, converted to JSON; reports keys that cannot be registry paths, keys
/// reserved for later features, and groups nested inside this one.
fn read_metadata(
    d: &mut Diagnostics<'_>,
    group: &str,
    path: &KeyPath,
    table: &DeTable<'_>,
) -> BTreeMap<String, serde_json::Value> {
    let mut metadata = BTreeMap::new();
    for (key, value) in table.iter() {
        let key_name = key.get_ref().as_ref();
        if RESERVED_KEYS.contains(&key_name) {
            continue;
        }
        if let Some((_, feature)) = FUTURE_KEYS.iter().find(|(k, _)| *k == key_name) {
            d.report(
                &key.span(),
                Some(group),
                format!(
                    "key \"{key_name}\" is reserved for Lathe's {feature} settings, which this \
                    version does not support yet: rename it to keep it as metadata"
                ),
            );
            continue;
        }
        if let Some((nested, span)) = nested_group(&format!("{group}.{key_name}"), value) {
            d.report(
                &span,
                Some(group),
                format!(
                    "table {nested} has a \"crate\" key, but a group cannot contain another \
                    group: move it out of [{group}], or remove its \"crate\" key to keep it as \
                        metadata"
                ),
            );
            continue;
        }
        if let (true, Err(error @ KeyPathError::TooLong { .. })) =
            (is_metadata_key(key_name), path.child(key_name))
        {
            d.report(
                &key.span(),
                Some(group),
                format!(
                    "metadata key {key_name:?} is too long for this group: its registry path \
                    {error}"
                ),
            );
            continue;
        }
        if !is_metadata_key(key_name) || path.child(key_name).is_err() {
            d.report(
                &key.span(),
                Some(group),
                format!(
                    "metadata key {key_name:?} cannot be a registry path segment: use only A-Z \
                    a-z 0-9 . _ - (and not \".\" or \"..\")"
                ),
            );
            continue;
        }
        if let Some(json) = to_json(d, group, value) {
            metadata.insert(key_name.to_string(), json);
        }
    }
    metadata
}

/// The dotted name and span of the first table with a `crate` key inside `value`.
fn nested_group(name: &str, value: &Value<'_>) -> Option<(String, Range<usize>)> {
    match value.get_ref() {
        DeValue::Table(table) => {
            if let Some((key, _)) = table.get_key_value("crate") {
                return Some((name.to_string(), key.span()));
            }
            table
                .iter()
                .find_map(|(key, child)| nested_group(&format!("{name}.{}", key.get_ref()), child))
        }
        DeValue::Array(items) => items.iter().find_map(|item| nested_group(name, item)),
        _ => None,
    }
}

pub(super) fn is_segment(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn is_metadata_key(s: &str) -> bool {
    s != "."
        && s != ".."
        && !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn is_crate_name(s: &str) -> bool {
    is_segment(s)
}

fn is_task_path(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(char::is_whitespace)
}

/// `MAJOR.MINOR.PATCH`, optionally followed by `-pre` and/or `+build`.
fn is_crate_version(s: &str) -> bool {
    let core_end = s.find(['-', '+']).unwrap_or(s.len());
    let (core, suffix) = s.split_at(core_end);
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        && (suffix.is_empty()
            || (suffix.len() > 1
                && suffix
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))))
}
