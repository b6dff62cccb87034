//! `lathe deploy FILE` and `lathe tasks`: the topology and the task instances it scheduled.

use std::path::Path;

use serde_json::Value;

use super::{unexpected_answer, Output};
use crate::client::{CliError, Client};
use crate::table::{cell, field, Table};

const TOPOLOGY_ROUTE: &str = "/v1/topology";
const TASKS_ROUTE: &str = "/v1/tasks";

/// `lathe deploy FILE`: `PUT /v1/topology` with the file's TOML; errors are prefixed with the
/// file's name.
pub(super) fn deploy(client: &Client, out: &Output, file: &Path) -> Result<(), CliError> {
    let toml = std::fs::read_to_string(file)
        .map_err(|err| CliError::Local(format!("cannot read {}: {err}", file.display())))?;
    let name = file.display().to_string();
    // The server names the file in its errors (file:line:column); a path it can take verbatim
    // in the query is passed on, any other is put in front of the server's message.
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    let route = if plain {
        format!("{TOPOLOGY_ROUTE}?file={name}")
    } else {
        TOPOLOGY_ROUTE.to_string()
    };
    let reply = client
        .put_text(&route, "application/toml", &toml)
        .map_err(|err| match err {
            CliError::Server { status: 404, .. } => {
                err.not_found_means_not_available("deploy", "PUT /v1/topology")
            }
            CliError::Server { status, message } if plain => CliError::Server { status, message },
            CliError::Server { status, message } => CliError::Server {
                status,
                message: located_message(&name, &message),
            },
            other => other,
        })?;
    if out.json {
        return out.json(&reply.body);
    }
    let mut summary = Table::without_headers();
    summary.push_row(vec!["deployed".into(), file.display().to_string()]);
    if let Value::Object(fields) = &reply.body {
        for (name, value) in fields {
            summary.push_row(vec![name.clone(), summary_cell(value)]);
        }
    }
    out.text(&summary.render())
}

/// `lathe tasks`: one row per task instance.
pub(super) fn tasks(client: &Client, out: &Output) -> Result<(), CliError> {
    let reply = client
        .get(TASKS_ROUTE)
        .map_err(|err| err.not_found_means_not_available("tasks", "GET /v1/tasks"))?;
    if out.json {
        return out.json(&reply.body);
    }
    let instances = crate::table::items(&reply.body, &["tasks", "instances"])
        .ok_or_else(|| unexpected_answer(TASKS_ROUTE, &reply.body))?;
    out.text(&tasks_table(instances).render())
}

/// `GROUP INDEX NODE CRATE VERSION STATUS ENDPOINT RESTARTS`.
pub(crate) fn tasks_table(instances: &[Value]) -> Table {
    let columns = [
        "group", "index", "node", "crate", "version", "status", "endpoint", "restarts",
    ];
    let headers: Vec<String> = columns.iter().map(|c| c.to_uppercase()).collect();
    let mut table = Table::with_headers(&headers.iter().map(String::as_str).collect::<Vec<_>>());
    for instance in instances {
        table.push_row(
            columns
                .iter()
                .map(|column| field(instance, column))
                .collect(),
        );
    }
    table
}

/// A server message about the file, located compiler-style: `FILE:LINE:COLUMN: ...` when the
/// message starts with `LINE:COLUMN`, else `FILE: ...`.
pub(crate) fn located_message(file: &str, message: &str) -> String {
    let starts_with_position = message
        .split(':')
        .take(2)
        .filter(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_digit()))
        .count()
        == 2;
    if starts_with_position {
        format!("{file}:{message}")
    } else {
        format!("{file}: {message}")
    }
}

/// A field of the deploy answer: counts for lists and maps, the value itself otherwise.
fn summary_cell(value: &Value) -> String {
    match value {
        Value::Array(items) if !items.iter().all(|v| v.is_string() || v.is_number()) => {
            format!("{} items", items.len())
        }
        Value::Object(fields) => format!("{} entries", fields.len()),
        other => cell(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tasks_render_one_row_per_instance() {
        let instances = [
            json!({"group": "task.http.lb", "index": 0, "node": "node-0",
            "crate": "http_loadbalancer", "version": "0.8.2", "status": "running",
            "endpoint": "127.0.0.1:8000", "restarts": 0}),
        ];
        let rendered = tasks_table(&instances).render();
        let lines: Vec<&str> = rendered.lines().collect();
        assert_eq!(
            lines[0],
            "GROUP         INDEX  NODE    CRATE              VERSION  STATUS   ENDPOINT        \
             RESTARTS"
        );
        assert_eq!(
            lines[1],
            "task.http.lb  0      node-0  http_loadbalancer  0.8.2    running  127.0.0.1:8000  0"
        );
    }

    #[test]
    fn errors_are_located_in_the_file() {
        assert_eq!(
            located_message("t.toml", "3:7: unknown key `x`"),
            "t.toml:3:7: unknown key `x`"
        );
        assert_eq!(
            located_message("t.toml", "group task.a: tasks must be > 0"),
            "t.toml: group task.a: tasks must be > 0"
        );
        assert_eq!(located_message("t.toml", "12: odd"), "t.toml: 12: odd");
    }

    #[test]
    fn deploy_summaries_count_collections() {
        assert_eq!(summary_cell(&json!([{"a": 1}, {"b": 2}])), "2 items");
        assert_eq!(summary_cell(&json!(["a", "b"])), "a,b");
        assert_eq!(summary_cell(&json!({"a": 1})), "1 entries");
        assert_eq!(summary_cell(&json!(7)), "7");
    }
}
