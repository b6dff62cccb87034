//! Walks the TOML tree: tables with a `crate` key are groups, the tables above them namespaces.

use std::ops::Range;

use toml::de::{DeTable, DeValue};

use super::error::Diagnostics;
use super::group::{self, is_segment, RESERVED_KEYS};
use super::GroupSpec;
use crate::registry::{KeyPath, RESERVED_PREFIX};

/// One segment of a table path and where its key is written.
type Segment = (String, Range<usize>);

/// Every valid group of the document; errors go to `d`.
pub(super) fn groups(d: &mut Diagnostics<'_>, root: &DeTable<'_>) -> Vec<GroupSpec> {
    let mut groups = Vec::new();
    namespace(d, &mut Vec::new(), root, &mut groups);
    if groups.is_empty() && d.count() == 0 {
        d.report(
            &(0..0),
            None,
            "the topology has no groups: add a table such as [task.http.lb] with crate, version, \
                task and tasks",
        );
    }
    groups
}

fn namespace(
    d: &mut Diagnostics<'_>,
    path: &mut Vec<Segment>,
    table: &DeTable<'_>,
    groups: &mut Vec<GroupSpec>,
) {
    for (key, value) in table.iter() {
        let key_name = key.get_ref().as_ref();
        let DeValue::Table(child) = value.get_ref() else {
            not_a_table(d, path, key_name, &key.span(), value.get_ref());
            continue;
        };
        path.push((key_name.to_string(), key.span()));
        let name = dotted(names(path));
        // A table with some group keys but no `crate` is a group missing its `crate`.
        if RESERVED_KEYS.iter().any(|k| child.contains_key(*k)) {
            if let Some(group_path) = group_path(d, &name, path) {
                if let Some(group) = group::read(d, &name, group_path, &value.span(), child) {
                    groups.push(group);
                }
            }
        } else if child.is_empty() {
            d.report(
                &value.span(),
                None,
                format!("table {name} is empty: a group needs crate, version, task and tasks"),
            );
        } else {
            namespace(d, path, child, groups);
        }
        path.pop();
    }
}

/// A value that is not a table, where only tables belong (the root or a namespace).
fn not_a_table(
    d: &mut Diagnostics<'_>,
    path: &[Segment],
    key: &str,
    span: &Range<usize>,
    value: &DeValue<'_>,
) {
    let full = dotted(names(path).chain([key]));
    let is_array_of_tables = value
        .as_array()
        .is_some_and(|items| !items.is_empty() && items.iter().all(|i| i.get_ref().is_table()));
    let message = if is_array_of_tables {
        format!("[[{full}]] is an array of tables, but a group is one table: write [{full}]")
    } else if path.is_empty() {
        format!("top-level key \"{key}\" is outside any group: move it into its group's table")
    } else {
        format!(
            "namespace {} has key \"{key}\" but no crate: is it missing `crate`? (only a table \
                with a crate key is a group)",
            dotted(names(path))
        )
    };
    d.report(span, None, message);
}

/// The registry path of a group, once every segment of its name is valid.
fn group_path(d: &mut Diagnostics<'_>, name: &str, path: &[Segment]) -> Option<KeyPath> {
    let before = d.count();
    for (segment, span) in path {
        if !is_segment(segment) {
            d.report(
                span,
                Some(name),
                format!(
                    "table name {segment:?} cannot be part of a registry path: use only A-Z \
                    a-z 0-9 _ - in table names (a dot inside a quoted key would break the name to \
                        path mapping)"
                ),
            );
        }
    }
    if let Some((first, span)) = path
        .first()
        .filter(|(s, _)| format!("/{s}") == RESERVED_PREFIX)
    {
        d.report(
            span,
            Some(name),
            format!(
                "the top-level table \"{first}\" is reserved for Lathe's own state \
                ({RESERVED_PREFIX}): rename it"
            ),
        );
    }
    if d.count() != before {
        return None;
    }
    match KeyPath::parse(&names(path).collect::<Vec<_>>().join("/")) {
        Ok(path) => Some(path),
        Err(e) => {
            d.report(
                &path[0].1,
                Some(name),
                format!("the group's registry path is invalid: {e}"),
            );
            None
        }
    }
}

fn dotted<'s>(segments: impl Iterator<Item = &'s str>) -> String {
    segments.collect::<Vec<_>>().join(".")
}

fn names(path: &[Segment]) -> impl Iterator<Item = &str> {
    path.iter().map(|(s, _)| s.as_str())
}
