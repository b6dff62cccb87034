//! `lathe tree [--node NAME]`: the cluster's supervision tree, drawn with one line per actor.
//!
//! The answer of `GET /v1/tree` may nest actors (`{"name", "status", "restarts", "children":
//! [...]}`), list them flat with a `parent` path (as the `lathe_actor_info` metric does), and group
//! them by node (`{"nodes": [{"name", ...}]}`); all three are drawn. Anything else is printed as
//! JSON.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::Output;
use crate::client::{CliError, Client};

/// `lathe tree`: `GET /v1/tree[?node=NAME]`.
pub(super) fn tree(client: &Client, out: &Output, node: Option<&str>) -> Result<(), CliError> {
    let route = match node {
        Some(name) => format!("/v1/tree?node={name}"),
        None => "/v1/tree".to_string(),
    };
    let reply = client.get(&route).map_err(|err| match (&err, node) {
        // a 404 naming an unknown node is the server's answer, not a missing route
        (
            CliError::Server {
                status: 404,
                message,
            },
            Some(_),
        ) if !message.starts_with("server answered") => err,
        _ => err.not_found_means_not_available("tree", "GET /v1/tree"),
    })?;
    if out.json {
        return out.json(&reply.body);
    }
    match render_tree(&reply.body) {
        Some(drawing) => out.text(&drawing),
        None => out.json(&reply.body),
    }
}

/// The drawing of a tree answer, or `None` when it has no recognizable actor or node.
pub(crate) fn render_tree(answer: &Value) -> Option<String> {
    let answer = nest_flat_lists(answer);
    let roots = if label(&answer).is_some() {
        vec![&answer]
    } else {
        visible_children(&answer)
    };
    let mut lines = Vec::new();
    for root in roots {
        draw(root, "", "", "", &mut lines);
    }
    (!lines.is_empty()).then(|| lines.iter().map(|line| format!("{line}\n")).collect())
}

fn draw(node: &Value, prefix: &str, connector: &str, continuation: &str, lines: &mut Vec<String>) {
    let Some(text) = label(node) else { return };
    lines.push(format!("{prefix}{connector}{text}"));
    let children = visible_children(node);
    let child_prefix = format!("{prefix}{continuation}");
    for (position, child) in children.iter().enumerate() {
        let last = position + 1 == children.len();
        let (connector, continuation) = if last {
            ("└─ ", "   ")
        } else {
            ("├─ ", "│  ")
        };
        draw(child, &child_prefix, connector, continuation, lines);
    }
}

fn is_actor(value: &Value) -> bool {
    value.get("children").is_some_and(Value::is_array)
        || (value.get("status").is_some()
            && (value.get("path").is_some() || value.get("name").is_some()))
}

/// The line of an actor (`name  kind  status  restarts=N`) or of a named group (a node); `None` for
/// anything that is drawn only through its children.
fn label(value: &Value) -> Option<String> {
    let name = ["name", "path", "id", "node"]
        .iter()
        .find_map(|field| value.get(*field).and_then(Value::as_str));
    if !is_actor(value) {
        return name.map(str::to_string);
    }
    let mut parts = vec![name.unwrap_or("?").to_string()];
    for field in ["kind", "status"] {
        if let Some(text) = value.get(field).and_then(Value::as_str) {
            parts.push(text.to_string());
        }
    }
    if let Some(restarts) = value.get("restarts").filter(|r| !r.is_null()) {
        parts.push(format!("restarts={restarts}"));
    }
    Some(parts.join("  "))
}

/// The nodes drawn under `value`: an actor's children, or the labelled values found in a group's
/// fields and arrays (unlabelled containers are looked through).
fn visible_children(value: &Value) -> Vec<&Value> {
    let direct: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        Value::Object(_) if is_actor(value) => value
            .get("children")
            .and_then(Value::as_array)
            .map(|c| c.iter().collect())
            .unwrap_or_default(),
        Value::Object(fields) => fields
            .values()
            .filter(|v| v.is_array() || v.is_object())
            .collect(),
        _ => Vec::new(),
    };
    direct
        .into_iter()
        .flat_map(|child| {
            if label(child).is_some() {
                vec![child]
            } else {
                visible_children(child)
            }
        })
        .collect()
}

/// Turns every array of actors that name their `parent` (and have no `children`) into nested
/// actors.
fn nest_flat_lists(value: &Value) -> Value {
    match value {
        Value::Array(items) if !items.is_empty() && items.iter().all(is_flat_actor) => nest(items),
        Value::Array(items) => Value::Array(items.iter().map(nest_flat_lists).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), nest_flat_lists(v)))
                .collect::<Map<_, _>>(),
        ),
        other => other.clone(),
    }
}

fn is_flat_actor(value: &Value) -> bool {
    value.get("path").is_some_and(Value::is_string)
        && value.get("parent").is_some()
        && value.get("children").is_none()
}

fn nest(items: &[Value]) -> Value {
    let path_of = |item: &Value| {
        item.get("path")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let known: Vec<String> = items.iter().map(path_of).collect();
    let mut children_of: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    let mut roots = Vec::new();
    for item in items {
        match item.get("parent").and_then(Value::as_str) {
            Some(parent) if known.iter().any(|p| p == parent) => children_of
                .entry(parent.to_string())
                .or_default()
                .push(item),
            _ => roots.push(item),
        }
    }
    fn build(item: &Value, children_of: &BTreeMap<String, Vec<&Value>>, depth: usize) -> Value {
        let mut node = item.clone();
        let path = item.get("path").and_then(Value::as_str).unwrap_or("");
        let children = match children_of.get(path) {
            Some(children) if depth < 64 => children
                .iter()
                .map(|c| build(c, children_of, depth + 1))
                .collect(),
            _ => Vec::new(),
        };
        node["children"] = Value::Array(children);
        node
    }
    Value::Array(
        roots
            .into_iter()
            .map(|root| build(root, &children_of, 0))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_actors_grouped_by_node_are_drawn() {
        let answer = json!({"nodes": [{"name": "node-0", "tree": {
        "name": "NodeSupervisor", "status": "running", "restarts": 0, "children": [
            {"name": "Membership", "status": "running", "restarts": 1, "children": []},
            {"name": "TaskSupervisor", "status": "running", "children": [
                {"name": "task.http.lb/0", "kind": "task", "status": "failed", "restarts": 3}
            ]}
        ]}}]});
        assert_eq!(
            render_tree(&answer).unwrap(),
            "node-0\n└─ NodeSupervisor  running  restarts=0\n   ├─ \
                Membership  running  restarts=1\n   \
             └─ TaskSupervisor  running\n      └─ task.http.lb/0  task  failed  restarts=3\n"
        );
    }

    #[test]
    fn flat_lists_with_parents_are_nested() {
        let answer = json!([
            {"path": "node-0/root", "parent": null, "status": "running"},
            {"path": "node-0/root/a", "parent": "node-0/root", "status": "running"},
            {"path": "node-0/root/b", "parent": "node-0/root", "status": "stopped"}]);
        assert_eq!(
            render_tree(&answer).unwrap(),
            "node-0/root  running\n├─ node-0/root/a  running\n└─ node-0/root/b  stopped\n"
        );
    }

    #[test]
    fn answers_without_actors_are_not_drawn() {
        assert_eq!(render_tree(&json!({"weird": 1})), None);
        assert_eq!(render_tree(&json!([])), None);
    }
}
