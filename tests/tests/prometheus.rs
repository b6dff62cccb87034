//! Watching Lathe with a real Prometheus (Debian's 2.42): the shipped alert rules pass `promtool
//! check rules` and `promtool test rules`; a real 3-node cluster on a real ZooKeeper running the
//! seed's topology and two gossiping `lathe-agent`s is scraped through `GET
//! /v1/prometheus/targets` (http_sd: the nodes, and the agents that registered), and every PromQL
//! expression of the rules, of the console template and of the Grafana dashboard is evaluated
//! through Prometheus's HTTP API: each must be valid, and each that describes a present state
//! must return data. Then alerts fire for real (actor restarts through failure drills, a traffic
//! shift undone, a node SIGKILLed), and `/consoles/lathe.html` renders from Prometheus. And
//! `lathe up --prometheus` starts one that scrapes its nodes, and stops it with them.

#[path = "agent/support/mod.rs"]
mod agent_support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use agent_support::{free_addr, registry_list, toml_str, AgentProcess};

use lathe_tests::http;
use lathe_tests::node::{cli_binary, free_port, Cluster, NodeBuilder, NodeProcess};
use lathe_tests::prometheus::{config_dir, promtool, PrometheusServer};
use lathe_tests::promql::{console_expressions, grafana_expressions, metric_names, rule_count};
use lathe_tests::scenario::zk_cluster_with;
use lathe_tests::wait::wait_until;
use serde_json::{json, Value};

const CONVERGE: Duration = Duration::from_secs(120);
const SPLIT_KEY: &str = "/task/http/lb/backend_distribution";

/// Expressions that may legitimately return nothing on this healthy cluster, and why.
const MAY_BE_EMPTY: &[(&str, &str)] = &[
    ("sum(lathe_agent_behind)", "no lathe-agent is scraped here"),
    (
        "lathe_agent_behind{instance=~'.+', watch=~'.+'}",
        "no lathe-agent is scraped here",
    ),
    (
        "sum(increase(lathe_agent_reloads_total[1h]))",
        "no lathe-agent is scraped here",
    ),
    ("lathe_agent_watch_index", "no lathe-agent is scraped here"),
    (
        "max by (instance, watch) (lathe_agent_behind)",
        "no lathe-agent is scraped here",
    ),
    (
        "sum by (instance, result) (rate(lathe_agent_actions_total[5m]))",
        "no lathe-agent is scraped here",
    ),
    (
        "max by (group, state) (lathe_rollouts)",
        "the seed's groups have had no roll-out",
    ),
    (
        "sum by (node, kind) (lathe_actors{status='failed'}) > 0",
        "no actor failed past its intensity",
    ),
    (
        "sum by (node, kind) (lathe_actors{status=\"failed\"})",
        "no actor failed past its intensity",
    ),
];

#[test]
fn the_shipped_rules_pass_promtool() {
    let check = promtool(&["check", "rules", "lathe.rules.yml"]);
    let out = String::from_utf8_lossy(&check.stdout).to_string()
        + &String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "promtool check rules: {out}");
    let alerts = rule_count();
    assert!(
        out.contains(&format!("SUCCESS: {alerts} rules found")),
        "{out}"
    );

    let test = promtool(&["test", "rules", "lathe.rules.test.yml"]);
    let out =
        String::from_utf8_lossy(&test.stdout).to_string() + &String::from_utf8_lossy(&test.stderr);
    assert!(test.status.success(), "promtool test rules: {out}");

    // The unit tests can fail: one expected alert changed makes promtool say so.
    let dir = tempfile::tempdir().unwrap();
    let rules = config_dir().join("rules");
    std::fs::copy(
        rules.join("lathe.rules.yml"),
        dir.path().join("lathe.rules.yml"),
    )
    .unwrap();
    let tests = std::fs::read_to_string(rules.join("lathe.rules.test.yml")).unwrap();
    let broken = tests.replace("node: n2", "node: n9");
    assert_ne!(broken, tests);
    std::fs::write(dir.path().join("broken.test.yml"), broken).unwrap();
    let failed = std::process::Command::new("promtool")
        .args(["test", "rules", "broken.test.yml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!failed.status.success(), "a wrong expectation must fail");
}

#[test]
fn prometheus_scrapes_a_real_cluster_and_every_expression_holds() {
    let template = NodeBuilder::new().name("prom").enable_chaos();
    let (_zk, mut cluster) = zk_cluster_with(3, template);
    cluster.wait_all_alive(CONVERGE);
    let addr = cluster.node(0).http_addr().to_string();
    deploy_seed(&addr);
    let dir = tempfile::tempdir().unwrap();
    let agents = start_agents(dir.path(), &cluster.http_addrs());

    // Discovery: every member at its REST address, every agent at its status address, labelled.
    let mut expected: BTreeSet<(String, String)> = cluster
        .nodes()
        .iter()
        .map(|n| (format!("node {}", n.name()), n.http_addr().to_string()))
        .collect();
    expected.extend(
        agents
            .iter()
            .map(|a| (format!("agent {}", a.name), a.status_addr.clone())),
    );
    wait_until("the nodes and the agents in the targets", CONVERGE, || {
        let targets = http::get_json(&addr, "/v1/prometheus/targets");
        if targets.status != 200 {
            return Err(targets.text);
        }
        let listed: BTreeSet<(String, String)> = targets
            .body
            .as_array()
            .expect("an array of target groups")
            .iter()
            .map(|t| {
                let role = t["labels"]["lathe_role"].as_str().unwrap();
                let version = t["labels"]["version"].as_str().unwrap_or_default();
                assert!(
                    role != "node" || !version.is_empty(),
                    "a node without version: {t}"
                );
                let name = t["labels"][if role == "node" { "node" } else { "agent" }].as_str();
                (
                    format!("{role} {}", name.unwrap_or_default()),
                    t["targets"][0].as_str().unwrap().to_string(),
                )
            })
            .collect();
        if listed == expected {
            Ok(())
        } else {
            Err(format!(
                "{listed:?}; agent-0 says: {}",
                agents[0].log_tail(20)
            ))
        }
    });

    let prometheus = PrometheusServer::start(&addr).expect("start prometheus");
    wait_until(
        "prometheus scrapes the 3 nodes",
        CONVERGE,
        || { count(&prometheus, "up{job='lathe', lathe_role='node'} == 1") } == Some(3),
    );

    // State worth showing: requests through the load balancers, a registry change, a task
    // actor restarted 4 times (LatheActorsRestarting: more than 3 in 5 minutes), a traffic shift
    // started and undone (LatheShiftRolledBack).
    send_requests(&addr, 50);
    http::put_json(&addr, "/v1/kv/app/flag", &json!({"on": true}));
    restart_a_task_four_times(cluster.node(0));
    let shift = http::post_json(
        &addr,
        "/v1/shifts",
        &json!({"key": SPLIT_KEY, "to": "task.http.frontpage.v4-2-2", "step": 10,
                "every_seconds": 3600}),
    );
    assert_eq!(shift.status, 200, "{}", shift.text);
    let undo = http::post_json(&addr, &format!("/v1/shifts{SPLIT_KEY}/undo"), &json!({}));
    assert_eq!(undo.status, 200, "{}", undo.text);
    wait_until("the undone shift in prometheus", CONVERGE, || {
        count(&prometheus, "lathe_shifts{state='rolled-back'}").is_some_and(|n| n >= 1)
    });
    wait_until("the restarts in prometheus", CONVERGE, || {
        count(&prometheus, "lathe_actor_restarts > 0").is_some_and(|n| n >= 1)
    });

    // Every expression: valid, and with data unless listed in MAY_BE_EMPTY.
    let mut expressions = console_expressions();
    assert!(expressions.len() >= 20, "console: {expressions:?}");
    let grafana = grafana_expressions();
    assert!(grafana.len() >= 20, "grafana: {grafana:?}");
    expressions.extend(grafana);
    let rules = prometheus.rules();
    assert_eq!(rules.len(), rule_count(), "every rule loaded: {rules:?}");
    for rule in &rules {
        assert_eq!(rule["health"], "ok", "{rule}");
        let query = rule["query"].as_str().unwrap().to_string();
        // An alert's expression is empty while all is well: its metrics must exist all the same.
        for metric in metric_names(&query) {
            expressions.push(format!("count({{__name__='{metric}'}})"));
        }
    }
    let allowed: BTreeSet<&str> = MAY_BE_EMPTY.iter().map(|(e, _)| *e).collect();
    let absent_here = ["lathe_rollouts"];
    for (expr, why) in MAY_BE_EMPTY {
        assert!(
            expressions.contains(&expr.to_string()),
            "{expr} ({why}) is used nowhere"
        );
    }
    eprintln!("evaluating {} expressions", expressions.len());
    for expr in &expressions {
        if let Err(error) = prometheus.query(expr) {
            panic!("prometheus refuses {expr}: {error}");
        }
    }
    // Rates need two scrapes of a series that appeared with the restarts: wait for them.
    wait_until("data for every expression", CONVERGE, || {
        let empty: Vec<&String> = expressions
            .iter()
            .filter(|expr| {
                let legit = allowed.contains(expr.as_str())
                    || absent_here
                        .iter()
                        .any(|m| **expr == format!("count({{__name__='{m}'}})"));
                !legit && prometheus.query(expr).map_or(true, |r| r.is_empty())
            })
            .collect();
        if empty.is_empty() {
            Ok(())
        } else {
            Err(format!("expressions without data: {empty:#?}"))
        }
    });

    // Alerts for real: restarts and the undone shift.
    let firing = |name: &str| {
        prometheus
            .alerts()
            .iter()
            .any(|a| a["labels"]["alertname"] == name && a["state"] == "firing")
    };
    wait_until("LatheActorsRestarting fires", CONVERGE, || {
        firing("LatheActorsRestarting")
    });
    wait_until("LatheShiftRolledBack fires", CONVERGE, || {
        firing("LatheShiftRolledBack")
    });
    assert!(!firing("LatheNodeDown"), "{:?}", prometheus.alerts());

    // The console renders from Prometheus, with the cluster in it.
    let (status, page) = prometheus.get("/consoles/lathe.html").unwrap();
    assert_eq!(status, 200, "{page}");
    assert!(!page.contains("error executing template"), "{page}");
    for node in cluster.nodes() {
        assert!(
            page.contains(&format!("<td>{}</td>", node.name())),
            "{page}"
        );
    }
    assert!(page.contains("registry-shard"), "{page}");

    // A node SIGKILLed: its target stays listed, up = 0, and LatheNodeDown fires after 30 s.
    let dead = kill_node(&mut cluster, 2);
    wait_until("LatheNodeDown fires for the killed node", CONVERGE, || {
        prometheus.alerts().iter().any(|a| {
            a["labels"]["alertname"] == "LatheNodeDown"
                && a["labels"]["node"] == dead.as_str()
                && a["state"] == "firing"
        })
    });
    assert_eq!(
        count(&prometheus, "up{job='lathe', lathe_role='node'} == 1"),
        Some(2)
    );

    // A node that joins is scraped with no change to Prometheus's configuration.
    let joined = cluster.add_node().name().to_string();
    wait_until("prometheus scrapes the node that joined", CONVERGE, || {
        let up = format!("up{{job='lathe', node='{joined}'}} == 1");
        count(&prometheus, &up) == Some(1)
    });
}

#[test]
fn running_instances_of_a_group_with_metrics_path_are_targets() {
    let mut node = NodeBuilder::new().name("sd").start();
    let topology = r#"
[task.web]
crate = "http_frontpage"
version = "4.2.1"
task = "my::FrontPage"
tasks = 2
metrics_path = "/get/index"
"#;
    let reply = http::put_text(
        node.http_addr(),
        "/v1/topology",
        "application/toml",
        topology,
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    let addr = node.http_addr().to_string();
    let targets = wait_until("the 2 instances in the targets", CONVERGE, || {
        let reply =
            http::try_get_json(&addr, "/v1/prometheus/targets").map_err(|e| e.to_string())?;
        let tasks: Vec<Value> = reply
            .body
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["labels"]["lathe_role"] == "task")
            .cloned()
            .collect();
        if tasks.len() == 2 {
            Ok(tasks)
        } else {
            Err(reply.text)
        }
    });
    let endpoints: BTreeSet<String> = http::get_json(&addr, "/v1/services/web")
        .body
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["http"].as_str().map(str::to_string))
        .collect();
    for (index, target) in targets.iter().enumerate() {
        let labels = &target["labels"];
        assert_eq!(labels["group"], "task.web", "{target}");
        assert_eq!(labels["version"], "4.2.1", "{target}");
        assert_eq!(labels["instance"], format!("task.web/{index}"), "{target}");
        assert_eq!(labels["node"], "sd", "{target}");
        assert_eq!(labels["__metrics_path__"], "/get/index", "{target}");
        let endpoint = target["targets"][0].as_str().unwrap();
        assert!(
            endpoints.contains(endpoint),
            "{endpoint} not in {endpoints:?}"
        );
    }
    node.terminate();
}

/// Two agents gossiping with each other, following the load balancers' endpoints into a file.
fn start_agents(dir: &Path, nodes: &[String]) -> Vec<AgentProcess> {
    let addrs = [free_addr(), free_addr()];
    std::fs::write(dir.join("lb.j2"), "index = {{ index }}\n").unwrap();
    (0..2)
        .map(|i| {
            let config = format!(
                r#"
name = "agent-{i}"
registry = {registry}
peers = [{peer}]
[status]
listen = {status}
[[watch]]
name = "lb"
prefix = "/lathe/endpoints/task/http/lb"
[[watch.action]]
type = "template"
template = {template}
destination = {destination}
"#,
                registry = registry_list(nodes),
                peer = toml_str(&addrs[1 - i]),
                status = toml_str(&addrs[i]),
                template = toml_str(dir.join("lb.j2").display().to_string()),
                destination = toml_str(dir.join(format!("lb-{i}.txt")).display().to_string()),
            );
            AgentProcess::start(dir, &format!("agent-{i}"), &addrs[i], &config)
        })
        .collect()
}

fn deploy_seed(addr: &str) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/my_topology.toml");
    let source = std::fs::read_to_string(path).expect("read config/my_topology.toml");
    let reply = http::put_text(
        addr,
        "/v1/topology?file=my_topology.toml",
        "application/toml",
        &source,
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    wait_until("the seed's 13 instances running", CONVERGE, || {
        let tasks = http::try_get_json(addr, "/v1/tasks").map_err(|e| e.to_string())?;
        let running = tasks.body.as_array().map_or(0, |all| {
            all.iter().filter(|t| t["status"] == "running").count()
        });
        if running == 13 {
            Ok(())
        } else {
            Err(format!("{running} running"))
        }
    });
}

/// `count` GET /get/index through the load balancers.
fn send_requests(addr: &str, count: usize) {
    let reply = http::get_json(addr, "/v1/services/http/lb");
    let endpoints: Vec<String> = reply
        .body
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["http"].as_str().map(str::to_string))
        .collect();
    assert!(!endpoints.is_empty(), "{}", reply.text);
    for i in 0..count {
        let url = format!("http://{}/get/index", endpoints[i % endpoints.len()]);
        let response = ureq::get(&url).timeout(Duration::from_secs(10)).call();
        assert!(response.is_ok(), "GET {url}: {response:?}");
    }
}

/// Kills one task actor of `node` through the failure drill four times, each once it runs again.
fn restart_a_task_four_times(node: &NodeProcess) {
    let tree = http::get_json(node.http_addr(), &format!("/v1/tree?node={}", node.name()));
    let path = find_task(&tree.body["tree"]).expect("a task actor in the tree");
    for restarts in 1..=4u64 {
        let reply = http::post_json(
            node.http_addr(),
            "/v1/actors/kill",
            &json!({ "path": path }),
        );
        assert_eq!(reply.status, 200, "{}", reply.text);
        wait_until(
            &format!("{path} running after {restarts} restarts"),
            CONVERGE,
            || {
                let tree =
                    http::try_get_json(node.http_addr(), &format!("/v1/tree?node={}", node.name()));
                let actor = tree.ok().and_then(|t| find_path(&t.body["tree"], &path));
                actor.is_some_and(|a| {
                    a["status"] == "running" && a["restarts"].as_u64() >= Some(restarts)
                })
            },
        );
    }
}

fn find_task(actor: &Value) -> Option<String> {
    if actor["kind"] == "task" && actor["status"] == "running" {
        return actor["path"].as_str().map(str::to_string);
    }
    actor["children"].as_array()?.iter().find_map(find_task)
}

fn find_path(actor: &Value, path: &str) -> Option<Value> {
    if actor["path"] == path {
        return Some(actor.clone());
    }
    actor["children"]
        .as_array()?
        .iter()
        .find_map(|c| find_path(c, path))
}

/// SIGKILLs node `i`; returns its name.
fn kill_node(cluster: &mut Cluster, i: usize) -> String {
    let node = cluster.node_mut(i);
    node.kill();
    node.name().to_string()
}

/// The number of series `expr` returns (`None` when Prometheus refuses it or does not answer).
fn count(prometheus: &PrometheusServer, expr: &str) -> Option<usize> {
    prometheus.query(expr).ok().map(|r| r.len())
}

#[test]
fn lathe_up_starts_prometheus_scraping_its_nodes_and_stops_it() {
    let data = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(cli_binary())
        .args(["up", "--nodes", "1", "--http-base"])
        .arg(free_port().to_string())
        .arg("--cluster-base")
        .arg(free_port().to_string())
        .arg("--data-dir")
        .arg(data.path())
        .arg("--prometheus")
        .arg("--prometheus-config")
        .arg(config_dir())
        .env_remove("LATHE_COOKIE")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("run lathe up");
    let (lines, output) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = String::new();
    let url = wait_until("lathe up prints Prometheus's URL", CONVERGE, || {
        printed.extend(output.try_iter().map(|l| l + "\n"));
        printed
            .lines()
            .find_map(|l| l.trim().strip_prefix("Prometheus: "))
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string)
            .ok_or_else(|| printed.clone())
    });
    let addr = url.trim_start_matches("http://").to_string();
    let up = |node: &str| {
        let query = format!("up{{job='lathe', node='{node}'}} == 1");
        ureq::get(&format!("http://{addr}/api/v1/query"))
            .query("query", &query)
            .call()
            .ok()
            .and_then(|r| r.into_json::<Value>().ok())
            .is_some_and(|body| {
                body["data"]["result"]
                    .as_array()
                    .is_some_and(|r| r.len() == 1)
            })
    };
    wait_until("Prometheus scrapes local-0", CONVERGE, || up("local-0"));
    let console = ureq::get(&format!("http://{addr}/consoles/lathe.html")).call();
    assert!(console.is_ok_and(|r| r.status() == 200));

    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let status = wait_until("lathe up exits", CONVERGE, || {
        child.try_wait().ok().flatten()
    });
    assert!(status.success(), "{status:?}");
    printed.extend(output.try_iter().map(|l| l + "\n"));
    assert!(
        printed.contains("lathe up: Prometheus stopped"),
        "{printed}"
    );
    let gone = std::net::TcpStream::connect(&addr).is_err();
    assert!(gone, "Prometheus still answers at {addr}");
}

#[test]
fn lathe_up_refuses_a_missing_prometheus_before_starting_anything() {
    let data = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        std::process::Command::new(cli_binary())
            .args(["up", "--nodes", "1", "--http-base"])
            .arg(free_port().to_string())
            .arg("--cluster-base")
            .arg(free_port().to_string())
            .arg("--data-dir")
            .arg(data.path())
            .arg("--prometheus")
            .args(extra)
            .output()
            .expect("run lathe up")
    };
    let missing_bin = run(&["--prometheus-bin", "/nonexistent/prometheus"]);
    assert_eq!(missing_bin.status.code(), Some(2));
    let error = String::from_utf8_lossy(&missing_bin.stderr);
    assert_eq!(
        error.trim(),
        "lathe up: --prometheus-bin: /nonexistent/prometheus is not an executable file"
    );
    let missing_config = run(&["--prometheus-config", "/nonexistent/config"]);
    assert_eq!(missing_config.status.code(), Some(2));
    let error = String::from_utf8_lossy(&missing_config.stderr);
    assert!(
        error
            .trim()
            .starts_with("lathe up: --prometheus: cannot open /nonexistent/config"),
        "{error}"
    );
    assert!(
        !data.path().join("local-0").exists(),
        "a node was started before the refusal"
    );
}
