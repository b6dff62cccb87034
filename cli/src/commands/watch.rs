//! `lathe kv watch PATH [--index N]`: follows the Server-Sent Events of `GET /v1/watch/PATH`, one
//! line per change, resuming after the last seen index when the stream breaks (e.g. the node
//! restarted).

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use serde_json::Value;

use super::kv::with_query;
use super::Output;
use crate::client::{key_route, CliError, Client};
use crate::sse::SseParser;
use crate::table::json_cell;

/// How many times in a row a broken stream is reconnected before giving up.
const RECONNECT_ATTEMPTS: u32 = 10;
/// The pause between two reconnection attempts.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// Prints every change under `path` until interrupted; with `--json`, each event's JSON on one
/// line.
pub(super) fn watch(
    client: &Client,
    out: &Output,
    path: &str,
    index: Option<u64>,
) -> Result<(), CliError> {
    let mut last_index = index;
    let mut connected_once = false;
    let mut failed_attempts = 0;
    loop {
        let route = with_query(
            &key_route("/v1/watch", path),
            &[("index", last_index.map(|i| i.to_string()))],
        );
        match client.stream(&route) {
            Ok(body) => {
                connected_once = true;
                failed_attempts = 0;
                follow(body, out, &mut last_index)?;
                eprintln!(
                    "lathe: the watch stream from {} ended; reconnecting",
                    client.addr()
                );
                std::thread::sleep(RECONNECT_DELAY);
            }
            Err(CliError::Unreachable { .. })
                if connected_once && failed_attempts < RECONNECT_ATTEMPTS =>
            {
                failed_attempts += 1;
                std::thread::sleep(RECONNECT_DELAY);
            }
            Err(err) => return Err(err),
        }
    }
}

/// Prints the events of one stream until it ends; `last_index` follows the newest index seen.
fn follow(
    body: Box<dyn Read + Send + Sync>,
    out: &Output,
    last_index: &mut Option<u64>,
) -> Result<(), CliError> {
    let mut reader = BufReader::new(body);
    let mut parser = SseParser::default();
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return Ok(()),
            Ok(_) => {}
        }
        let Some(event) = parser.push_line(&String::from_utf8_lossy(&line)) else {
            continue;
        };
        match serde_json::from_str::<Value>(&event.data) {
            Ok(change) => {
                advance(last_index, &change);
                if out.json {
                    out.line(&change.to_string())?;
                } else {
                    for text in event_lines(&change) {
                        out.line(&text)?;
                    }
                }
            }
            Err(_) => out.line(&event.data)?,
        }
    }
}

/// The human lines of one event: `VERSION OP KEY VALUE`; a snapshot gives one line per entry.
pub(crate) fn event_lines(change: &Value) -> Vec<String> {
    let op = change.get("op").and_then(Value::as_str).unwrap_or("change");
    if op == "snapshot" {
        let entries = change
            .get("entries")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if entries.is_empty() {
            return vec![change_line(
                change.get("index"),
                "snapshot",
                &Value::Null,
                None,
            )];
        }
        return entries
            .iter()
            .map(|entry| {
                change_line(
                    entry.get("version"),
                    "snapshot",
                    &entry["key"],
                    entry.get("value"),
                )
            })
            .collect();
    }
    let value = if op == "delete" {
        None
    } else {
        change.get("value")
    };
    vec![change_line(
        change.get("version"),
        op,
        &change["key"],
        value,
    )]
}

fn change_line(version: Option<&Value>, op: &str, key: &Value, value: Option<&Value>) -> String {
    let version = version
        .filter(|v| !v.is_null())
        .map(Value::to_string)
        .unwrap_or_else(|| "-".into());
    let key = key
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| "(empty)".into());
    let mut line = format!("{version:>6} {op:<8} {key}");
    if let Some(value) = value {
        line.push(' ');
        line.push_str(&json_cell(value));
    }
    line.trim_end().to_string()
}

/// Moves `last_index` to the newest index an event carries (its `version`, or a snapshot's
/// `index`).
fn advance(last_index: &mut Option<u64>, change: &Value) {
    let seen = ["version", "index"]
        .iter()
        .filter_map(|field| change.get(*field).and_then(Value::as_u64))
        .max();
    if let Some(seen) = seen {
        *last_index = Some(last_index.map_or(seen, |last| last.max(seen)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn puts_and_deletes_make_one_line_each() {
        let put = json!({"key": "/a/b", "value": {"x": 1}, "version": 12, "op": "put"});
        assert_eq!(event_lines(&put), ["    12 put      /a/b {\"x\":1}"]);
        let delete = json!({"key": "/a/b", "value": null, "version": 13, "op": "delete"});
        assert_eq!(event_lines(&delete), ["    13 delete   /a/b"]);
    }

    #[test]
    fn snapshots_list_their_entries() {
        let snapshot = json!({"op": "snapshot", "index": 20, "entries": [
            {"key": "/a", "value": 1, "version": 4}, {"key": "/b", "value": "x", "version": 9}]});
        assert_eq!(
            event_lines(&snapshot),
            ["     4 snapshot /a 1", "     9 snapshot /b \"x\""]
        );
        let empty = json!({"op": "snapshot", "index": 20, "entries": []});
        assert_eq!(event_lines(&empty), ["    20 snapshot (empty)"]);
    }

    #[test]
    fn the_resume_index_only_moves_forward() {
        let mut last = Some(10);
        advance(&mut last, &json!({"version": 12}));
        assert_eq!(last, Some(12));
        advance(&mut last, &json!({"version": 11}));
        assert_eq!(last, Some(12));
        advance(
            &mut last,
            &json!({"op": "snapshot", "index": 30, "entries": []}),
        );
        assert_eq!(last, Some(30));
        let mut none = None;
        advance(&mut none, &json!({"op": "put"}));
        assert_eq!(none, None);
    }
}
