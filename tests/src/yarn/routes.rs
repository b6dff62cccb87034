//! The double's REST API: the documented paths of the ResourceManager, with its validation and its
//! `RemoteException` errors.

use std::collections::BTreeSet;
use std::sync::Mutex;

use serde_json::{json, Value};

use super::http::{Answer, Request};
use super::lock;
use super::state::{Rm, Submission, DEFAULT_MAX_ATTEMPTS, MAX_MEMORY_MB, MAX_VCORES};

const APPS: &str = "/ws/v1/cluster/apps";
const STATES: [&str; 8] = [
    "NEW",
    "NEW_SAVING",
    "SUBMITTED",
    "ACCEPTED",
    "RUNNING",
    "FINISHED",
    "FAILED",
    "KILLED",
];

pub(super) fn handle(rm: &Mutex<Rm>, request: Request) -> Answer {
    let mut rm = lock(rm);
    if rm.unavailable {
        return Answer::error(
            503,
            "ServiceUnavailableException",
            "org.apache.hadoop.yarn.webapp.ServiceUnavailableException",
            "The ResourceManager is not available (restarting)",
        );
    }
    let path = request.path.trim_end_matches('/');
    let method = request.method.as_str();
    let rest = path.strip_prefix(APPS);
    match (method, path, rest) {
        ("GET", "/ws/v1/cluster" | "/ws/v1/cluster/info", _) => cluster_info(&rm),
        ("POST", _, Some("/new-application")) => new_application(&mut rm),
        ("POST", _, Some("")) => submit(&mut rm, &request),
        ("GET", _, Some("")) => list(&rm, &request),
        (_, _, Some("" | "/new-application")) => method_not_allowed(method, path),
        (_, _, Some(rest)) => match rest.trim_start_matches('/').split_once('/') {
            None => match method {
                "GET" => app(&rm, rest.trim_start_matches('/')),
                _ => method_not_allowed(method, path),
            },
            Some((id, "state")) => match method {
                "GET" => state(&rm, id),
                "PUT" => put_state(&mut rm, id, &request),
                _ => method_not_allowed(method, path),
            },
            Some(_) => Answer::not_found(&format!("no resource at {path}")),
        },
        _ => Answer::not_found(&format!("no resource at {path}")),
    }
}

fn cluster_info(rm: &Rm) -> Answer {
    Answer::json(
        200,
        json!({"clusterInfo": {
            "id": rm.cluster_timestamp,
            "startedOn": rm.cluster_timestamp,
            "state": "STARTED",
            "haState": "ACTIVE",
            "resourceManagerVersion": "lathe-tests-double",
            "hadoopVersion": "lathe-tests-double",
        }}),
    )
}

fn new_application(rm: &mut Rm) -> Answer {
    let id = rm.new_application();
    Answer::json(
        200,
        json!({
            "application-id": id,
            "maximum-resource-capability": {"memory": MAX_MEMORY_MB, "vCores": MAX_VCORES},
        }),
    )
}

fn submit(rm: &mut Rm, request: &Request) -> Answer {
    let user = request
        .query
        .get("user.name")
        .cloned()
        .unwrap_or_else(|| "dr.who".to_string());
    let submission = match parse_submission(&request.body, user) {
        Ok(submission) => submission,
        Err(answer) => return answer,
    };
    let location = format!("http://{}{APPS}/{}", rm.addr(), submission.id);
    if rm.knows(&submission.id) {
        // Submissions are idempotent: a client retrying after a lost answer is not an error.
        return accepted(location);
    }
    if !rm.was_issued(&submission.id) {
        return Answer::bad_request(&format!(
            "Invalid application id {}: not obtained from new-application",
            submission.id
        ));
    }
    rm.submit(submission);
    accepted(location)
}

fn accepted(location: String) -> Answer {
    Answer {
        status: 202,
        body: Value::Null,
        headers: vec![("Location".to_string(), location)],
    }
}

/// Validates an `ApplicationSubmissionContext` as the RM does.
fn parse_submission(body: &[u8], user: String) -> Result<Submission, Answer> {
    let context: Value = serde_json::from_slice(body)
        .map_err(|e| Answer::bad_request(&format!("The submission is not valid JSON: {e}")))?;
    let text = |key: &str| context.get(key).and_then(Value::as_str).map(str::to_string);
    let id = text("application-id")
        .filter(|id| !id.is_empty())
        .ok_or_else(|| Answer::bad_request("application-id is missing"))?;
    let spec = context
        .get("am-container-spec")
        .ok_or_else(|| Answer::bad_request("am-container-spec is missing"))?;
    let command = match spec.pointer("/commands/command") {
        Some(Value::String(command)) => command.clone(),
        Some(Value::Array(commands)) => commands
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    };
    if command.trim().is_empty() {
        return Err(Answer::bad_request(
            "am-container-spec.commands.command is missing or empty",
        ));
    }
    let env = match spec.pointer("/environment/entry") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(entries)) => entries
            .iter()
            .map(|entry| {
                let key = entry.get("key").and_then(Value::as_str);
                let value = entry.get("value").and_then(Value::as_str);
                match (key, value) {
                    (Some(key), Some(value)) if !key.is_empty() => {
                        Ok((key.to_string(), value.to_string()))
                    }
                    _ => Err(Answer::bad_request(&format!(
                        "bad environment entry {entry}"
                    ))),
                }
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(Answer::bad_request(&format!(
                "am-container-spec.environment.entry must be a list, not {other}"
            )))
        }
    };
    let number = |pointer: &str| -> Result<Option<i64>, Answer> {
        match context.pointer(pointer) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value
                .as_i64()
                .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
                .map(Some)
                .ok_or_else(|| Answer::bad_request(&format!("{pointer} is not a number"))),
        }
    };
    let memory = number("/resource/memory")?.unwrap_or(1024);
    let vcores = number("/resource/vCores")?.unwrap_or(1);
    if memory <= 0 || vcores <= 0 || memory as u64 > MAX_MEMORY_MB || vcores as u64 > MAX_VCORES {
        return Err(Answer::error(
            400,
            "InvalidResourceRequestException",
            "org.apache.hadoop.yarn.exceptions.InvalidResourceRequestException",
            &format!(
                "Invalid resource request, requested resource <memory:{memory}, vCores:{vcores}> \
                 is not within <memory:1..{MAX_MEMORY_MB}, vCores:1..{MAX_VCORES}>"
            ),
        ));
    }
    let max_attempts = number("/max-app-attempts")?
        .filter(|n| *n > 0)
        .map(|n| n as u32)
        .unwrap_or(DEFAULT_MAX_ATTEMPTS);
    Ok(Submission {
        id,
        name: text("application-name").unwrap_or_else(|| "N/A".to_string()),
        queue: text("queue").unwrap_or_else(|| "default".to_string()),
        application_type: text("application-type").unwrap_or_else(|| "YARN".to_string()),
        user,
        command,
        env,
        memory_mb: memory as u64,
        vcores: vcores as u64,
        max_attempts,
    })
}

fn list(rm: &Rm, request: &Request) -> Answer {
    let set = |name: &str, upper: bool| -> Option<BTreeSet<String>> {
        request.query.get(name).map(|value| {
            value
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(|v| {
                    if upper {
                        v.to_uppercase()
                    } else {
                        v.to_lowercase()
                    }
                })
                .collect()
        })
    };
    let mut states = set("states", true);
    if states.is_none() {
        states = set("state", true);
    }
    if let Some(bad) = states
        .iter()
        .flatten()
        .find(|s| !STATES.contains(&s.as_str()))
    {
        return Answer::bad_request(&format!(
            "Invalid application-state {bad} specified. It should be one of {}",
            STATES.join(", ")
        ));
    }
    let types = set("applicationTypes", false);
    let limit = match request.query.get("limit").map(|l| l.parse::<usize>()) {
        None => None,
        Some(Ok(limit)) => Some(limit),
        Some(Err(_)) => return Answer::bad_request("limit must be a number"),
    };
    let apps = rm.list_json(
        states.as_ref(),
        types.as_ref(),
        request.query.get("queue").map(String::as_str),
        limit,
    );
    if apps.is_empty() {
        // What the RM answers when nothing matches.
        return Answer::json(200, json!({"apps": null}));
    }
    Answer::json(200, json!({"apps": {"app": apps}}))
}

fn app(rm: &Rm, id: &str) -> Answer {
    match rm.app_json(id) {
        Some(app) => Answer::json(200, json!({ "app": app })),
        None => Answer::not_found(&format!("app with id: {id} not found")),
    }
}

fn state(rm: &Rm, id: &str) -> Answer {
    match rm.state_of(id) {
        Some(state) => Answer::json(200, json!({ "state": state })),
        None => Answer::not_found(&format!("app with id: {id} not found")),
    }
}

fn put_state(rm: &mut Rm, id: &str, request: &Request) -> Answer {
    let wanted = serde_json::from_slice::<Value>(&request.body)
        .ok()
        .and_then(|body| {
            body.get("state")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
    if wanted.as_deref() != Some("KILLED") {
        return Answer::bad_request("Only 'KILLED' is allowed as a target state.");
    }
    match rm.kill(id) {
        Some((status, state)) => {
            let mut answer = Answer::json(status, json!({ "state": state }));
            if status == 202 {
                let location = format!("http://{}{APPS}/{id}", rm.addr());
                answer.headers.push(("Location".to_string(), location));
            }
            answer
        }
        None => Answer::not_found(&format!("app with id: {id} not found")),
    }
}

fn method_not_allowed(method: &str, path: &str) -> Answer {
    Answer::error(
        405,
        "WebApplicationException",
        "javax.ws.rs.WebApplicationException",
        &format!("{method} is not supported on {path}"),
    )
}
