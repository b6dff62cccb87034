//! `lathe rollout status|pause|resume|undo GROUP`: the slow roll-outs (`/v1/rollouts`).

use serde_json::Value;

use super::{unexpected_answer, Output};
use crate::client::{CliError, Client};
use crate::table::{cell, field, Table};

const ROUTE: &str = "/v1/rollouts";
const SHIFTS: &str = "/v1/shifts";

/// The route of `group`: a name is passed as it is; a path (`http/frontpage/v4-2-1`, with or
/// without a leading `/`) as its segments. Anything else is refused here, before a request.
fn group_route(group: &str) -> Result<String, CliError> {
    let trimmed = group.trim_matches('/');
    let valid = !trimmed.is_empty()
        && trimmed.split('/').all(|segment| {
            !segment.is_empty()
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        });
    if !valid {
        return Err(CliError::Local(format!(
            "{group:?} is not a group: give its name (task.http.frontpage.v4-2-1) or its path \
             (http/frontpage/v4-2-1)"
        )));
    }
    Ok(format!("{ROUTE}/{trimmed}"))
}

/// `lathe rollout status [GROUP]`.
pub(super) fn status(client: &Client, out: &Output, group: Option<&str>) -> Result<(), CliError> {
    let route = match group {
        Some(group) => group_route(group)?,
        None => ROUTE.to_string(),
    };
    let reply = client.get(&route).map_err(|err| match (err, group) {
        // The group exists but never changed version: the server's message says so.
        (err @ CliError::Server { status: 404, .. }, Some(_)) => err,
        (err, _) => err.not_found_means_not_available("rollout status", "GET /v1/rollouts"),
    })?;
    if out.json {
        return out.json(&reply.body);
    }
    match &reply.body {
        Value::Array(rollouts) if rollouts.is_empty() => {
            out.line("no roll-outs: no group has changed version since it was deployed")
        }
        Value::Array(rollouts) => out.text(&table(rollouts).render()),
        one @ Value::Object(_) => out.text(&details(one).render()),
        other => Err(unexpected_answer(ROUTE, other)),
    }
}

/// `lathe rollout pause|resume|undo GROUP` (or `--shift KEY`).
pub(super) fn command(
    client: &Client,
    out: &Output,
    group: &str,
    command: &str,
    shift: bool,
) -> Result<(), CliError> {
    if shift {
        let route = format!("{}/{command}", shift_route(group)?);
        let reply = client.post(&route).map_err(|err| {
            err.not_found_means_not_available("rollout --shift", "POST /v1/shifts")
        })?;
        if out.json {
            return out.json(&reply.body);
        }
        return out.text(&shift_table(std::slice::from_ref(&reply.body)).render());
    }
    let route = format!("{}/{command}", group_route(group)?);
    let reply = client.post(&route).map_err(|err| match err {
        err @ CliError::Server { status: 404, .. } if err.one_line().contains("no group") => err,
        err @ CliError::Server { status: 404, .. } if err.one_line().contains("roll-out") => err,
        other => other.not_found_means_not_available("rollout", "POST /v1/rollouts"),
    })?;
    if out.json {
        return out.json(&reply.body);
    }
    out.text(&details(&reply.body).render())
}

/// The route of the shift of metadata key `key` (`task/http/lb/backend_distribution`).
fn shift_route(key: &str) -> Result<String, CliError> {
    let route = group_route(key).map_err(|_| {
        CliError::Local(format!(
            "{key:?} is not a metadata key such as task/http/lb/backend_distribution"
        ))
    })?;
    Ok(route.replacen(ROUTE, SHIFTS, 1))
}

/// `lathe rollout shift KEY --to GROUP`.
pub(super) fn start_shift(
    client: &Client,
    out: &Output,
    key: &str,
    to: &str,
    step: u32,
    every: u32,
) -> Result<(), CliError> {
    shift_route(key)?;
    let body = serde_json::json!({
        "key": format!("/{}", key.trim_matches('/')),
        "to": to,
        "step": step,
        "every_seconds": every,
    });
    let reply = client
        .post_json(SHIFTS, &body)
        .map_err(|err| err.not_found_means_not_available("rollout shift", "POST /v1/shifts"))?;
    if out.json {
        return out.json(&reply.body);
    }
    out.text(&shift_table(std::slice::from_ref(&reply.body)).render())
}

/// `lathe rollout shifts`.
pub(super) fn shifts(client: &Client, out: &Output) -> Result<(), CliError> {
    let reply = client
        .get(SHIFTS)
        .map_err(|err| err.not_found_means_not_available("rollout shifts", "GET /v1/shifts"))?;
    if out.json {
        return out.json(&reply.body);
    }
    match reply.body.as_array() {
        Some(shifts) if shifts.is_empty() => out.line("no traffic shifts"),
        Some(shifts) => out.text(&shift_table(shifts).render()),
        None => Err(unexpected_answer(SHIFTS, &reply.body)),
    }
}

/// `KEY TO SHARE STEP STATE REASON`.
fn shift_table(shifts: &[Value]) -> Table {
    let mut table = Table::with_headers(&["KEY", "TO", "SHARE", "STEP", "STATE", "REASON"]);
    for shift in shifts {
        table.push_row(vec![
            field(shift, "key"),
            field(shift, "to"),
            format!("{}%", cell(&shift["percent"])),
            format!(
                "+{} every {} s",
                cell(&shift["step"]),
                cell(&shift["every_seconds"])
            ),
            field(shift, "state"),
            field(shift, "reason"),
        ]);
    }
    table
}

fn versions(rollout: &Value) -> (String, String) {
    let version = |side: &str| cell(&rollout[side]["version"]);
    (version("from"), version("to"))
}

/// `GROUP FROM TO STATE UPDATED BATCH REASON`.
fn table(rollouts: &[Value]) -> Table {
    let mut table =
        Table::with_headers(&["GROUP", "FROM", "TO", "STATE", "UPDATED", "BATCH", "REASON"]);
    for rollout in rollouts {
        let (from, to) = versions(rollout);
        table.push_row(vec![
            field(rollout, "group"),
            from,
            to,
            field(rollout, "state"),
            progress(rollout),
            batch(rollout),
            field(rollout, "reason"),
        ]);
    }
    table
}

fn details(rollout: &Value) -> Table {
    let (from, to) = versions(rollout);
    let mut table = Table::without_headers();
    table.push_row(vec!["group".into(), field(rollout, "group")]);
    table.push_row(vec![
        "from".into(),
        format!("{} {}", cell(&rollout["from"]["crate"]), from),
    ]);
    table.push_row(vec![
        "to".into(),
        format!("{} {}", cell(&rollout["to"]["crate"]), to),
    ]);
    table.push_row(vec!["state".into(), field(rollout, "state")]);
    table.push_row(vec!["updated".into(), progress(rollout)]);
    table.push_row(vec!["batch".into(), batch(rollout)]);
    if !rollout["reason"].is_null() {
        table.push_row(vec!["reason".into(), field(rollout, "reason")]);
    }
    table
}

/// `3/5 (2 running)`: instances assigned the new version, of the group's, and how many run.
fn progress(rollout: &Value) -> String {
    format!(
        "{}/{} ({} running)",
        cell(&rollout["updated"]),
        cell(&rollout["tasks"]),
        cell(&rollout["updated_running"])
    )
}

fn batch(rollout: &Value) -> String {
    match rollout["batch"].as_array() {
        Some(batch) if !batch.is_empty() => batch.iter().map(cell).collect::<Vec<_>>().join(","),
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_names_or_paths() {
        assert_eq!(
            group_route("task.http.frontpage.v4-2-1").unwrap(),
            "/v1/rollouts/task.http.frontpage.v4-2-1"
        );
        assert_eq!(
            group_route("/http/frontpage/v4-2-1/").unwrap(),
            "/v1/rollouts/http/frontpage/v4-2-1"
        );
        for bad in ["", "/", "a b", "a//b", "a?b"] {
            assert!(group_route(bad).is_err(), "{bad:?}");
        }
    }
}
