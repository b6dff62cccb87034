//! What `lathe up` needs to know about the topology it deploys, read from the TOML itself (the
//! server validates it): the functional groups (tables with a `crate` key), how many instances each
//! wants, and which groups other groups name in their metadata (the LB's `backend_distribution`
//! names the front pages), so the groups nobody names are the entry points a user sends requests
//! to.

use std::collections::BTreeSet;

/// Keys of a group that are not its metadata (CONTRACT.md, "Topology TOML").
const RESERVED_KEYS: [&str; 6] = ["crate", "version", "task", "tasks", "tags", "biases"];

/// One functional group of a topology file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupInfo {
    /// The table path, e.g. `task.http.frontpage.v4-2-1`.
    pub(crate) name: String,
    /// How many instances it wants.
    pub(crate) tasks: u64,
    /// Every string in its metadata (the names of the groups it sends to, among others).
    pub(crate) mentions: BTreeSet<String>,
}

impl GroupInfo {
    /// `GET /v1/services/task/http/lb` for group `task.http.lb`.
    pub(crate) fn services_route(&self) -> String {
        format!("/v1/services/{}", self.name.replace('.', "/"))
    }
}

/// The groups of a topology file, sorted by name.
pub(crate) fn groups(source: &str) -> anyhow::Result<Vec<GroupInfo>> {
    let table: toml::Table = toml::from_str(source)?;
    let mut groups = Vec::new();
    collect(&table, "", &mut groups);
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(groups)
}

fn collect(table: &toml::Table, prefix: &str, groups: &mut Vec<GroupInfo>) {
    for (key, value) in table {
        let Some(child) = value.as_table() else {
            continue;
        };
        let name = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        if child.contains_key("crate") {
            let tasks = child
                .get("tasks")
                .and_then(toml::Value::as_integer)
                .unwrap_or(0);
            let mut mentions = BTreeSet::new();
            child
                .iter()
                .filter(|(key, _)| !RESERVED_KEYS.contains(&key.as_str()))
                .for_each(|(_, value)| strings_in(value, &mut mentions));
            groups.push(GroupInfo {
                name,
                tasks: u64::try_from(tasks).unwrap_or(0),
                mentions,
            });
        } else {
            collect(child, &name, groups);
        }
    }
}

fn strings_in(value: &toml::Value, out: &mut BTreeSet<String>) {
    match value {
        toml::Value::String(text) => {
            out.insert(text.clone());
        }
        toml::Value::Array(items) => items.iter().for_each(|item| strings_in(item, out)),
        toml::Value::Table(table) => table.values().for_each(|item| strings_in(item, out)),
        _ => {}
    }
}

/// The groups among `candidates` that no other group names in its metadata.
pub(crate) fn entry_points<'a>(groups: &[GroupInfo], candidates: &[&'a str]) -> Vec<&'a str> {
    candidates
        .iter()
        .copied()
        .filter(|name| {
            !groups
                .iter()
                .any(|g| g.name != *name && g.mentions.contains(*name))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = include_str!("../../../config/my_topology.toml");

    #[test]
    fn the_seed_has_three_groups_and_the_lb_is_its_entry_point() {
        let groups = groups(SEED).unwrap();
        let summary: Vec<(&str, u64)> = groups.iter().map(|g| (g.name.as_str(), g.tasks)).collect();
        assert_eq!(
            summary,
            [
                ("task.http.frontpage.v4-2-1", 5),
                ("task.http.frontpage.v4-2-2", 5),
                ("task.http.lb", 3)
            ]
        );
        assert_eq!(groups[2].services_route(), "/v1/services/task/http/lb");
        let all: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(entry_points(&groups, &all), ["task.http.lb"]);
    }

    #[test]
    fn reserved_keys_are_not_mentions_and_broken_toml_is_an_error() {
        let groups = groups("[a]\ncrate = \"b\"\ntags = [\"c\"]\nnote = { to = \"d\" }\n").unwrap();
        assert_eq!(groups[0].mentions, BTreeSet::from(["d".to_string()]));
        assert!(super::groups("[a\n").is_err());
    }
}
