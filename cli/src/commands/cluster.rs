//! `lathe status` and `lathe members`: the node's health and the cluster's membership.

use serde_json::{json, Value};

use super::{unexpected_answer, Output};
use crate::client::{CliError, Client};
use crate::table::{cell, field, Table};

const MEMBERS_ROUTE: &str = "/v1/members";

/// `lathe members`: one row per node.
pub(super) fn members(client: &Client, out: &Output) -> Result<(), CliError> {
    let reply = client.get(MEMBERS_ROUTE)?;
    if out.json {
        return out.json(&reply.body);
    }
    let members = member_list(&reply.body)?;
    out.text(&members_table(members).render())
}

/// `lathe status`: `GET /v1/health` of the node at `--addr`, then a summary of `GET /v1/members`.
pub(super) fn status(client: &Client, out: &Output) -> Result<(), CliError> {
    let health = client.get("/v1/health").map_err(|err| match err {
        CliError::Server { message, .. } => CliError::Local(format!(
            "lathe-node at {} is not healthy: {message}",
            client.addr()
        )),
        other => other,
    })?;
    let members = client.get(MEMBERS_ROUTE)?;
    if out.json {
        return out
            .json(&json!({"addr": client.addr(), "health": health.body, "members": members.body}));
    }
    out.text(&status_table(client.addr(), &health.body, member_list(&members.body)?).render())
}

fn member_list(answer: &Value) -> Result<&Vec<Value>, CliError> {
    crate::table::items(answer, &["members"])
        .ok_or_else(|| unexpected_answer(MEMBERS_ROUTE, answer))
}

/// `NAME STATUS LEADER PID CLUSTER-ADDR HTTP-ADDR TAGS MAX CATALOG` (`MAX`: `--max-instances`,
/// `-` for no limit).
pub(crate) fn members_table(members: &[Value]) -> Table {
    let mut table = Table::with_headers(&[
        "NAME",
        "STATUS",
        "LEADER",
        "PID",
        "CLUSTER-ADDR",
        "HTTP-ADDR",
        "TAGS",
        "MAX",
        "CATALOG",
    ]);
    for member in members {
        let leader = if member
            .get("leader")
            .and_then(Value::as_bool)
            .unwrap_or(false)
        {
            "*"
        } else {
            ""
        };
        table.push_row(vec![
            field(member, "name"),
            field(member, "status"),
            leader.to_string(),
            field(member, "pid"),
            field(member, "cluster_addr"),
            field(member, "http_addr"),
            field(member, "tags"),
            field(member, "max_instances"),
            catalog_cell(member.get("catalog").unwrap_or(&Value::Null)),
        ]);
    }
    table
}

/// A node's catalog of task types as `crate@version` labels (or whatever the entries are).
fn catalog_cell(catalog: &Value) -> String {
    let Some(entries) = catalog.as_array() else {
        return cell(catalog);
    };
    let labels: Vec<Value> = entries
        .iter()
        .map(|entry| {
            match (
                entry.get("crate").and_then(Value::as_str),
                entry.get("version").and_then(Value::as_str),
            ) {
                (Some(name), Some(version)) => Value::String(format!("{name}@{version}")),
                _ => entry.clone(),
            }
        })
        .collect();
    cell(&Value::Array(labels))
}

/// The `lathe status` summary: the node, its members by status, the scheduler leader.
pub(crate) fn status_table(addr: &str, health: &Value, members: &[Value]) -> Table {
    let count = |status: &str| {
        members
            .iter()
            .filter(|m| m.get("status").and_then(Value::as_str) == Some(status))
            .count()
    };
    let node = match health.get("name").and_then(Value::as_str) {
        Some(name) => format!("{name} at {addr} (healthy)"),
        None => format!("{addr} (healthy)"),
    };
    let leader = members
        .iter()
        .find(|m| m.get("leader").and_then(Value::as_bool).unwrap_or(false))
        .map(|m| field(m, "name"))
        .unwrap_or_else(|| "none".to_string());
    let mut table = Table::without_headers();
    table.push_row(vec!["node".into(), node]);
    table.push_row(vec![
        "members".into(),
        format!(
            "{}: {} alive, {} suspect, {} dead",
            members.len(),
            count("alive"),
            count("suspect"),
            count("dead")
        ),
    ]);
    table.push_row(vec!["leader".into(), leader]);
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_members() -> Vec<Value> {
        vec![
            json!({"name": "node-0", "pid": 101, "cluster_addr": "127.0.0.1:7400",
            "http_addr": "127.0.0.1:7500", "tags": ["lb", "net"], "status": "alive",
            "leader": true, "catalog": [
                {"crate": "http_loadbalancer", "version": "0.8.2", "task": "my::LoadBalancer"}
            ]}),
            json!({"name": "node-1", "pid": 102, "cluster_addr": "127.0.0.1:7401",
                   "http_addr": "127.0.0.1:7501", "tags": [], "status": "suspect", "leader": false,
                   "catalog": [], "max_instances": 4}),
        ]
    }

    #[test]
    fn members_render_one_row_each_with_the_leader_starred() {
        let rendered = members_table(&sample_members()).render();
        let lines: Vec<&str> = rendered.lines().collect();
        assert_eq!(
            lines[0],
            "NAME    STATUS   LEADER  PID  CLUSTER-ADDR    HTTP-ADDR       TAGS    MAX  CATALOG"
        );
        assert_eq!(
            lines[1],
            "node-0  alive    *       101  127.0.0.1:7400  127.0.0.1:7500  lb,net  -    \
             http_loadbalancer@0.8.2"
        );
        assert_eq!(
            lines[2],
            "node-1  suspect          102  127.0.0.1:7401  127.0.0.1:7501  -       4    -"
        );
    }

    #[test]
    fn status_counts_members_and_names_the_leader() {
        let rendered = status_table(
            "127.0.0.1:7500",
            &json!({"name": "node-0"}),
            &sample_members(),
        )
        .render();
        assert_eq!(
            rendered,
            "node     node-0 at 127.0.0.1:7500 (healthy)\nmembers  2: 1 alive, 1 suspect, 0 dead\n\
                leader   node-0\n"
        );
        let rendered = status_table("h:1", &Value::Null, &[]).render();
        assert!(
            rendered.contains("h:1 (healthy)") && rendered.contains("leader   none"),
            "{rendered}"
        );
    }
}
