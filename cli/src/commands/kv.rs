//! `lathe kv get|put|delete|list`: the registry's keys and JSON values.

use serde_json::Value;

use super::{unexpected_answer, Output};
use crate::client::{key_route, CliError, Client};
use crate::table::{json_cell, Table};

/// `lathe kv get PATH`: the value as JSON (`--json`: the whole entry `{"key","value","version"}`).
pub(super) fn get(client: &Client, out: &Output, path: &str) -> Result<(), CliError> {
    let route = key_route("/v1/kv", path);
    let reply = client.get(&route)?;
    if out.json {
        return out.json(&reply.body);
    }
    let value = reply
        .body
        .get("value")
        .ok_or_else(|| unexpected_answer(&route, &reply.body))?;
    out.json(value)
}

/// `lathe kv put PATH VALUE [--cas V]`.
pub(super) fn put(
    client: &Client,
    out: &Output,
    path: &str,
    value: &str,
    cas: Option<u64>,
) -> Result<(), CliError> {
    let route = with_query(
        &key_route("/v1/kv", path),
        &[("cas", cas.map(|v| v.to_string()))],
    );
    let reply = client.put_json(&route, &parse_value(value))?;
    if out.json {
        return out.json(&reply.body);
    }
    out.line(&format!(
        "stored {} at version {}",
        display_key(path),
        version_of(&reply.body)
    ))
}

/// `lathe kv delete PATH [--recurse] [--cas V]`.
pub(super) fn delete(
    client: &Client,
    out: &Output,
    path: &str,
    recurse: bool,
    cas: Option<u64>,
) -> Result<(), CliError> {
    let query = [
        ("recurse", recurse.then(|| "true".to_string())),
        ("cas", cas.map(|v| v.to_string())),
    ];
    let reply = client.delete(&with_query(&key_route("/v1/kv", path), &query))?;
    if out.json {
        return out.json(&reply.body);
    }
    match reply.body.get("version") {
        Some(version) if !version.is_null() => out.line(&format!(
            "deleted {} at version {version}",
            display_key(path)
        )),
        _ => out.line(&format!("nothing to delete at {}", display_key(path))),
    }
}

/// `lathe kv list PATH`: every entry under PATH as a table.
pub(super) fn list(client: &Client, out: &Output, path: &str) -> Result<(), CliError> {
    let route = format!("{}?recurse=true", key_route("/v1/kv", path));
    let reply = client.get(&route)?;
    if out.json {
        return out.json(&reply.body);
    }
    let entries = reply
        .body
        .as_array()
        .ok_or_else(|| unexpected_answer(&route, &reply.body))?;
    out.text(&entries_table(entries).render())
}

/// The value given on the command line: JSON if it parses as JSON, else the text as a JSON string.
pub(crate) fn parse_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// Registry entries `{"key","value","version"}` as a `KEY VERSION VALUE` table.
pub(crate) fn entries_table(entries: &[Value]) -> Table {
    let mut table = Table::with_headers(&["KEY", "VERSION", "VALUE"]);
    for entry in entries {
        table.push_row(vec![
            crate::table::field(entry, "key"),
            crate::table::field(entry, "version"),
            entry
                .get("value")
                .map(json_cell)
                .unwrap_or_else(|| "-".to_string()),
        ]);
    }
    table
}

/// `route?name=value&...` with the parameters that are set.
pub(crate) fn with_query(route: &str, params: &[(&str, Option<String>)]) -> String {
    let set: Vec<String> = params
        .iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name}={v}")))
        .collect();
    if set.is_empty() {
        route.to_string()
    } else {
        format!("{route}?{}", set.join("&"))
    }
}

/// The key as users write it: with one leading `/`.
fn display_key(path: &str) -> String {
    format!("/{}", path.trim_matches('/'))
}

fn version_of(answer: &Value) -> String {
    answer
        .get("version")
        .map(Value::to_string)
        .unwrap_or_else(|| "-".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_that_parse_as_json_are_json() {
        assert_eq!(parse_value("{\"a\": [1, 2]}"), json!({"a": [1, 2]}));
        assert_eq!(parse_value("42"), json!(42));
        assert_eq!(parse_value("true"), json!(true));
        assert_eq!(parse_value("null"), json!(null));
        assert_eq!(parse_value("\"quoted\""), json!("quoted"));
        assert_eq!(parse_value(" [90, 10] "), json!([90, 10]));
    }

    #[test]
    fn other_values_are_json_strings() {
        assert_eq!(parse_value("hello"), json!("hello"));
        assert_eq!(parse_value(""), json!(""));
        assert_eq!(parse_value("{not json"), json!("{not json"));
        assert_eq!(parse_value("1.2.3"), json!("1.2.3"));
    }

    #[test]
    fn queries_only_carry_set_parameters() {
        assert_eq!(with_query("/v1/kv/a", &[("cas", None)]), "/v1/kv/a");
        assert_eq!(
            with_query(
                "/v1/kv/a",
                &[("recurse", Some("true".into())), ("cas", Some("3".into()))]
            ),
            "/v1/kv/a?recurse=true&cas=3"
        );
    }

    #[test]
    fn entries_render_as_a_table_with_json_values() {
        let entries = [
            json!({"key": "/a", "value": "x", "version": 3}),
            json!({"key": "/task/http/lb/tasks", "value": 3, "version": 12}),
        ];
        assert_eq!(
            entries_table(&entries).render(),
            "KEY                  VERSION  VALUE\n/a                   3        \"x\"\n\
                /task/http/lb/tasks  12       3\n"
        );
        assert_eq!(display_key("a/b/"), "/a/b");
    }
}
