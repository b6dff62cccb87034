//! The crash phase (issue 4): how fast the task supervisor gets a crashed instance running again.
//! One release node with `--enable-chaos` (embedded store) runs one front page with a generous
//! `restart` table; the bench kills its task actor many times through `POST /v1/actors/kill`
//! (as if it had crashed), one kill at a time.
//!
//! Two numbers per kill: the node's own `lathe_task_restart_seconds` (from the supervisor seeing
//! the crash to the new instance serving on its port), read exactly as the change of the
//! histogram's `_sum` across that one kill; and end to end over HTTP, from sending the kill
//! request until `/v1/tasks` shows the instance running again and its new endpoint answers.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use lathe_tests::http;
use lathe_tests::node::{NodeBuilder, NodeProcess};
use serde_json::json;

use crate::report::Report;
use crate::stats::Summary;
use crate::{attempt, progress, Plan};

const GROUP: &str = "task.http.frontpage.v4-2-1";
const PATH: &str = "node/tasks/task.http.frontpage.v4-2-1/0";
/// One front page that may restart without limit in practice, at once (no back-off): the bench
/// measures the restart path, not the policy's waits.
const TOPOLOGY: &str = "[task.http.frontpage.v4-2-1]\ncrate = \"http_frontpage\"\n\
     version = \"4.2.1\"\ntask = \"my::FrontPage\"\ntasks = 1\n\
     restart = { max_restarts = 1000, within_seconds = 600, backoff_ms = 0, max_backoff_ms = 0 }\n";
const SUPERVISOR: &str = "8. task crash → running again (supervisor)";
const END_TO_END: &str = "8. task crash → answering again, seen over HTTP";
const GOAL: &str = "p99 ≤ 5 ms";
const GOAL_MS: f64 = 5.0;
/// Kills before the timed ones (caches, allocator, first restarts).
const WARMUP: usize = 3;
/// Between two checks of `/v1/tasks` while waiting for the restart.
const POLL: Duration = Duration::from_millis(2);
/// The longest one restart may take.
const RESTART_DEADLINE: Duration = Duration::from_secs(20);

/// What one kill measured.
struct Restart {
    /// The node's `lathe_task_restart_seconds` for this restart.
    supervisor: Option<Duration>,
    end_to_end: Duration,
}

pub(crate) fn crash_restart(plan: &Plan, report: &mut Report) {
    let setup = format!(
        "1 release node (--enable-chaos, embedded store), 1 front page with restart = {{ \
         max_restarts = 1000, backoff_ms = 0 }}; {} kills of its task actor by POST \
         /v1/actors/kill, one at a time (after {WARMUP} untimed)",
        plan.crash_kills
    );
    let mut restarts = Vec::new();
    let outcome = attempt(|| kill_many(plan.crash_kills, &mut restarts));
    if let Err(why) = &outcome {
        if restarts.is_empty() {
            report.failed(SUPERVISOR, &setup, why, GOAL);
            return report.failed(END_TO_END, &setup, why, "—");
        }
        report.note(format!(
            "crash phase stopped after {} kills: {}",
            restarts.len(),
            crate::report::one_line(why)
        ));
    }
    let supervisor: Vec<Duration> = restarts.iter().filter_map(|r| r.supervisor).collect();
    let missing = restarts.len() - supervisor.len();
    match Summary::of(supervisor) {
        Some(summary) => {
            let mut result = format!(
                "{} (lathe_task_restart_seconds per restart)",
                summary.describe()
            );
            if missing > 0 {
                result.push_str(&format!("; {missing} restarts not in the histogram"));
            }
            let met = summary.p99_ms <= GOAL_MS && missing == 0;
            report.goal(SUPERVISOR, &setup, result, GOAL, met);
        }
        None => report.failed(
            SUPERVISOR,
            &setup,
            "lathe_task_restart_seconds did not move (a node without the metric?)",
            GOAL,
        ),
    }
    if let Some(summary) = Summary::of(restarts.iter().map(|r| r.end_to_end).collect()) {
        let result = format!(
            "{}; includes the kill request, the instance record written to the embedded store \
             (synced), /v1/tasks polled every {} ms, and one GET",
            summary.describe(),
            POLL.as_millis()
        );
        report.info(END_TO_END, &setup, result);
    }
}

fn kill_many(kills: usize, into: &mut Vec<Restart>) -> anyhow::Result<()> {
    progress("crash phase: starting 1 release lathe-node with --enable-chaos");
    let node = NodeBuilder::new()
        .name("bench-crash")
        .enable_chaos()
        .start();
    let reply = http::put_text(
        node.http_addr(),
        "/v1/topology",
        "application/toml",
        TOPOLOGY,
    );
    ensure!(
        reply.status == 200,
        "deploy answered {}: {}",
        reply.status,
        reply.text
    );
    let client = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(2))
        .build();
    let mut restarts = wait_running(&node, &client, None, Instant::now())?.0;
    progress(&format!("crash phase: {WARMUP} + {kills} kills of {PATH}"));
    for kill in 0..WARMUP + kills {
        let before = histogram(&node)?;
        let sent = kill_instance(&node)?;
        let (now, end_to_end) = wait_running(&node, &client, Some(restarts), sent)?;
        restarts = now;
        let after = histogram(&node)?;
        let supervisor = (after.1 == before.1 + 1.0)
            .then(|| Duration::from_secs_f64((after.0 - before.0).max(0.0)));
        if kill >= WARMUP {
            into.push(Restart {
                supervisor,
                end_to_end,
            });
        }
    }
    Ok(())
}

/// Kills the instance's actor; returns when the kill request was sent. The tree may still show
/// the previous restart as under way for a moment (409): then the kill is sent again.
fn kill_instance(node: &NodeProcess) -> anyhow::Result<Instant> {
    let started = Instant::now();
    loop {
        let sent = Instant::now();
        let body = json!({ "path": PATH });
        let reply = http::post_json(node.http_addr(), "/v1/actors/kill", &body);
        match reply.status {
            200 => return Ok(sent),
            409 if started.elapsed() < RESTART_DEADLINE => std::thread::sleep(POLL),
            status => bail!("kill {PATH} answered {status}: {}", reply.text),
        }
    }
}

/// Waits until instance 0 runs with more than `after` restarts (any, at first) and its endpoint
/// answers `GET /get/index` with 200; returns its restarts and the time since `since`.
fn wait_running(
    node: &NodeProcess,
    client: &ureq::Agent,
    after: Option<u64>,
    since: Instant,
) -> anyhow::Result<(u64, Duration)> {
    let mut last = String::new();
    while since.elapsed() < RESTART_DEADLINE {
        match instance(node) {
            Ok((status, restarts, endpoint)) => {
                let restarted = after.is_none_or(|before| restarts > before);
                if status == "running" && restarted {
                    if let Some(endpoint) = &endpoint {
                        let url = format!("http://{endpoint}/get/index");
                        if client.get(&url).call().is_ok_and(|r| r.status() == 200) {
                            return Ok((restarts, since.elapsed()));
                        }
                    }
                }
                last = format!("{status}, {restarts} restarts, endpoint {endpoint:?}");
            }
            Err(err) => last = format!("{err:#}"),
        }
        std::thread::sleep(POLL);
    }
    bail!("{GROUP}/0 not answering again after {RESTART_DEADLINE:?}: {last}")
}

/// Instance 0's status, restarts and endpoint from `/v1/tasks`.
fn instance(node: &NodeProcess) -> anyhow::Result<(String, u64, Option<String>)> {
    let reply = http::try_get_json(node.http_addr(), "/v1/tasks").map_err(anyhow::Error::msg)?;
    let task = reply
        .body
        .as_array()
        .and_then(|tasks| {
            tasks
                .iter()
                .find(|t| t["group"] == GROUP && t["index"] == 0)
        })
        .ok_or_else(|| anyhow::anyhow!("{GROUP}/0 not in /v1/tasks: {}", reply.text))?;
    Ok((
        task["status"].as_str().unwrap_or_default().to_string(),
        task["restarts"].as_u64().unwrap_or_default(),
        task["endpoint"].as_str().map(str::to_string),
    ))
}

/// `lathe_task_restart_seconds` `_sum` and `_count` of the group.
fn histogram(node: &NodeProcess) -> anyhow::Result<(f64, f64)> {
    let reply = http::try_get_json(node.http_addr(), "/metrics").map_err(anyhow::Error::msg)?;
    ensure!(
        reply.status == 200,
        "GET /metrics answered {}",
        reply.status
    );
    let value = |name: &str| {
        reply
            .text
            .lines()
            .filter(|line| line.starts_with(name) && line.contains(&format!("group=\"{GROUP}\"")))
            .find_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let sum = value("lathe_task_restart_seconds_sum");
    let count = value("lathe_task_restart_seconds_count");
    Ok((sum, count))
}
