//! The agent phase (issue 5), on one release `lathe-node` (embedded store): (a) a registry change
//! → a real HAProxy serving the new server set through one release `lathe-agent`
//! (`agent_follow.rs`); (b) the registry's load per change with many agents watching, side by
//! side with one blocking query per template dependency as consul-template does
//! (`agent_load.rs`).

use lathe_tests::node::NodeBuilder;

use crate::agent_follow::{follow, DEBOUNCE_MIN};
use crate::agent_load::{blocking_queries, lathe_agents, LoadWay, Registry, DEPS};
use crate::report::Report;
use crate::stats::ms;
use crate::{attempt, progress, Plan};

const FOLLOW: &str = "9. agent: registry change → HAProxy serving the new set";
const FOLLOW_GOAL: &str = "p99 ≤ 1 s incl. debounce min";
const FOLLOW_GOAL_MS: f64 = 1_000.0;
const LOAD_LATHE: &str = "10. agent: registry requests per change, lathe-agent";
const LOAD_BLOCKING: &str = "10. agent: registry requests per change, blocking queries";
const LOAD_GOAL: &str = "fewer than consul-template's way";

pub(crate) fn agent_phase(plan: &Plan, report: &mut Report) {
    progress("agent phase: starting 1 release lathe-node (embedded store)");
    let node = match attempt(|| Ok(NodeBuilder::new().name("bench-agent").start())) {
        Ok(node) => node,
        Err(why) => {
            let why = format!("the node did not start: {why}");
            report.failed(FOLLOW, "1 node", &why, FOLLOW_GOAL);
            report.failed(LOAD_LATHE, "1 node", &why, LOAD_GOAL);
            return report.failed(LOAD_BLOCKING, "1 node", &why, "— (reference)");
        }
    };
    let addr = node.http_addr().to_string();
    follow_row(plan, report, &addr);
    let registry = Registry {
        addr: &addr,
        pid: node.pid(),
    };
    load_rows(plan, report, &registry);
    progress("agent phase: stopping the node");
}

fn follow_row(plan: &Plan, report: &mut Report, addr: &str) {
    progress("agent phase: lathe-agent driving HAProxy");
    let setup = format!(
        "1 node (embedded store), 1 release lathe-agent with the haproxy action (8 slots, runtime \
         API), HAProxy 2.6 master-worker; {} changes, each one PUT or DELETE of an endpoint \
         record (add / move / remove, 2–6 servers); from just before the write until `show \
         servers state` lists exactly the new set (polled every 2 ms); debounce min {DEBOUNCE_MIN} \
         (the default)",
        plan.agent_changes
    );
    match attempt(|| follow(addr, plan.agent_changes)) {
        Ok(run) => {
            let Some(latency) = run.latency else {
                let why = run.failed.first().cloned().unwrap_or_default();
                return report.failed(FOLLOW, &setup, &why, FOLLOW_GOAL);
            };
            let mut result = latency.describe();
            if let Some(write) = run.write {
                result.push_str(&format!("; the write itself p50 {}", ms(write.p50_ms)));
            }
            if let Some(reloads) = run.reloads {
                result.push_str(&format!("; HAProxy reloads: {reloads}"));
            }
            if let Some(first) = run.failed.first() {
                result.push_str(&format!(
                    "; {} changes not served within 10 s (first: {first})",
                    run.failed.len()
                ));
            }
            let met = latency.p99_ms <= FOLLOW_GOAL_MS && run.failed.is_empty();
            report.goal(FOLLOW, &setup, result, FOLLOW_GOAL, met);
        }
        Err(why) => report.failed(FOLLOW, &setup, &why, FOLLOW_GOAL),
    }
}

fn load_rows(plan: &Plan, report: &mut Report, registry: &Registry) {
    let (agents, changes) = (plan.agent_watchers, plan.agent_load_changes);
    let lathe_setup = format!(
        "{agents} release lathe-agent processes on 1 node, each one watch of /bench/deps with a \
         template of {DEPS} keys (its dependencies); {changes} changes, one PUT each, the next \
         once every agent rendered it; lathe_api_requests_total (reads) ÷ changes"
    );
    let blocking_setup = format!(
        "{agents} clients in the bench, each one blocking query per dependency ({DEPS}: GET \
         /v1/kv/bench/deps/kN?index=I&wait=5m), re-issued after every wake, as consul-template \
         does; same {changes} changes, same count"
    );
    let lathe = attempt(|| lathe_agents(registry, agents, changes));
    let blocking = attempt(|| blocking_queries(registry, agents, changes));
    let reference = match &blocking {
        Ok(way) => {
            report.row(
                LOAD_BLOCKING,
                &blocking_setup,
                describe(way, "one per blocking query", ""),
                "— (reference)",
                crate::report::Verdict::NoGoal,
            );
            Some(way.requests_per_change)
        }
        Err(why) => {
            report.failed(LOAD_BLOCKING, &blocking_setup, why, "— (reference)");
            None
        }
    };
    match lathe {
        Ok(way) => {
            let result = describe(
                &way,
                "one SSE stream per agent",
                ", after the agents' 200 ms debounce",
            );
            match reference {
                Some(reference) => {
                    let met = way.requests_per_change < reference && way.incomplete == 0;
                    report.goal(LOAD_LATHE, &lathe_setup, result, LOAD_GOAL, met);
                }
                None => report.row(
                    LOAD_LATHE,
                    &lathe_setup,
                    result,
                    LOAD_GOAL,
                    crate::report::Verdict::Unknown,
                ),
            }
        }
        Err(why) => report.failed(LOAD_LATHE, &lathe_setup, &why, LOAD_GOAL),
    }
}

fn describe(way: &LoadWay, open: &str, latency_note: &str) -> String {
    let mut result = format!("{:.1} requests/change", way.requests_per_change);
    if let Some(connections) = way.open {
        result.push_str(&format!("; {connections} connections held open ({open})"));
    }
    if let Some(cpu) = way.node_cpu_ms {
        result.push_str(&format!("; node CPU {cpu:.1} ms/change"));
    }
    if let Some(last) = way.last {
        result.push_str(&format!(
            "; write → last of {} has it p50 {} · p99 {}{latency_note}",
            way.watchers,
            ms(last.p50_ms),
            ms(last.p99_ms)
        ));
    }
    if let Some(rss) = way.watchers_rss_mb {
        result.push_str(&format!(
            "; the {} agents' RSS {rss:.0} MB in all",
            way.watchers
        ));
    }
    if way.incomplete > 0 {
        result.push_str(&format!(
            "; {} of {} changes did not reach everyone within 30 s",
            way.incomplete, way.changes
        ));
    }
    result
}
