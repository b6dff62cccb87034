//! Tests of topology parsing and validation: the seed file, and errors with their exact positions.

use serde_json::json;

use super::*;

const SEED: &str = include_str!("../../config/my_topology.toml");

/// A valid group to build error cases from.
const LB: &str = r#"[task.http.lb]
crate = "http_loadbalancer"
version = "0.8.2"
task = "my::LoadBalancer"
tasks = 3
"#;

#[test]
fn the_seed_parses_to_three_groups() {
    let topology = parse("my_topology.toml", SEED).unwrap();
    let names: Vec<&str> = topology.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "task.http.frontpage.v4-2-1",
            "task.http.frontpage.v4-2-2",
            "task.http.lb"
        ]
    );
    assert_eq!(topology.instances(), 13);

    let lb = topology.group("task.http.lb").unwrap();
    assert_eq!(lb.path.as_str(), "/task/http/lb");
    assert_eq!(
        lb.task_type,
        TaskType::new("http_loadbalancer", "0.8.2", "my::LoadBalancer")
    );
    assert_eq!(lb.tasks, 3);
    assert_eq!(lb.tags, ["lb", "net"]);
    assert_eq!(
        lb.biases,
        [("lb".to_string(), -10), ("frontpage".to_string(), 7)]
    );
    assert_eq!(lb.restart, RestartPolicy::default());
    assert_eq!(lb.metadata.len(), 1);
    assert_eq!(
        lb.metadata["backend_distribution"],
        json!([
            ["task.http.frontpage.v4-2-1", "task.http.frontpage.v4-2-2"],
            [90, 10]
        ])
    );

    for (name, version) in [("v4-2-1", "4.2.1"), ("v4-2-2", "4.2.2")] {
        let group = topology
            .group(&format!("task.http.frontpage.{name}"))
            .unwrap();
        assert_eq!(group.path.as_str(), format!("/task/http/frontpage/{name}"));
        assert_eq!(
            group.task_type,
            TaskType::new("http_frontpage", version, "my::FrontPage")
        );
        assert_eq!(group.tasks, 5);
        assert_eq!(group.tags, ["frontpage"]);
        assert!(group.biases.is_empty());
        assert!(group.metadata.is_empty());
    }
}

#[test]
fn topologies_round_trip_through_json() {
    let topology = parse("my_topology.toml", SEED).unwrap();
    let text = serde_json::to_string(&topology).unwrap();
    assert_eq!(serde_json::from_str::<Topology>(&text).unwrap(), topology);
}

#[test]
fn restart_policies_parse_with_defaults() {
    let text = format!(
        "{LB}restart = {{ strategy = \"rest-for-one\", max_restarts = 2, backoff_ms = 9000 }}\n"
    );
    let lb = parse("t.toml", &text).unwrap().groups.remove(0);
    assert_eq!(
        lb.restart,
        RestartPolicy {
            strategy: RestartStrategy::RestForOne,
            max_restarts: 2,
            within_seconds: 10,
            backoff_ms: 9000,
            // raised to backoff_ms when not given
            max_backoff_ms: 9000,
        }
    );
    let sub_table = format!("{LB}[task.http.lb.restart]\nstrategy = \"one-for-all\"\n");
    let lb = parse("t.toml", &sub_table).unwrap().groups.remove(0);
    assert_eq!(lb.restart.strategy, RestartStrategy::OneForAll);
}

#[test]
fn rollout_policies_parse_with_defaults() {
    let lb = parse("t.toml", LB).unwrap().groups.remove(0);
    assert_eq!(lb.rollout, RolloutPolicy::default());
    let text =
        format!("{LB}rollout = {{ batch = 2, healthy_seconds = 1, on_failure = \"pause\" }}\n");
    let lb = parse("t.toml", &text).unwrap().groups.remove(0);
    assert_eq!(
        lb.rollout,
        RolloutPolicy {
            batch: 2,
            healthy_seconds: 1,
            timeout_seconds: 60,
            on_failure: OnFailure::Pause,
            ..RolloutPolicy::default()
        }
    );
    assert!(!lb.rollout.gated());
    assert!(!lb.metadata.contains_key("rollout"));
    // A topology stored before roll-outs existed reads with the default policy.
    let mut json = serde_json::to_value(&lb).unwrap();
    json.as_object_mut().unwrap().remove("rollout");
    let old: GroupSpec = serde_json::from_value(json).unwrap();
    assert_eq!(old.rollout, RolloutPolicy::default());
}

#[test]
fn rollout_metric_gates_parse() {
    let text = format!(
        "{LB}rollout = {{ max_error_ratio = 0.05, max_p99_ms = 250, min_requests = 50 }}\n"
    );
    let lb = parse("t.toml", &text).unwrap().groups.remove(0);
    assert_eq!(lb.rollout.max_error_ratio.map(|r| r.get()), Some(0.05));
    assert_eq!(lb.rollout.max_p99_ms, Some(250));
    assert_eq!(lb.rollout.min_requests, 50);
    assert!(lb.rollout.gated());
    // A ratio of 0 (no 5xx at all) or 1 (an integer) is fine too.
    let text = format!("{LB}rollout = {{ max_error_ratio = 0 }}\n");
    let lb = parse("t.toml", &text).unwrap().groups.remove(0);
    assert_eq!(lb.rollout.max_error_ratio.map(|r| r.get()), Some(0.0));
    // A policy stored before the gates existed reads without them.
    let mut json = serde_json::to_value(&lb.rollout).unwrap();
    for key in ["max_error_ratio", "max_p99_ms", "min_requests"] {
        json.as_object_mut().unwrap().remove(key);
    }
    let old: RolloutPolicy = serde_json::from_value(json).unwrap();
    assert_eq!(old, RolloutPolicy::default());
}

#[test]
fn flows_name_the_streams_a_group_consumes() {
    let lb = parse("t.toml", LB).unwrap().groups.remove(0);
    assert!(lb.flows.inputs.is_empty());
    let text = format!("{LB}flows = {{ inputs = [\"clicks\", \"orders\", \"clicks\"] }}\n");
    let lb = parse("t.toml", &text).unwrap().groups.remove(0);
    assert_eq!(lb.flows.inputs, vec!["clicks", "orders"]);
    assert!(!lb.metadata.contains_key("flows"));
    assert!(!lb.state.changelog);
    let text = format!("{LB}state = {{ changelog = true }}\n");
    let lb = parse("t.toml", &text).unwrap().groups.remove(0);
    assert!(lb.state.changelog);
    assert!(!lb.metadata.contains_key("state"));
}

#[test]
fn metadata_of_every_type_becomes_json() {
    let text = format!(
        "{LB}weights = [1, 2.5, \"x\", true]\nsince = 1979-05-27T07:32:00Z\n\
            nested = {{ a = {{ b = [] }} }}\n"
    );
    let lb = parse("t.toml", &text).unwrap().groups.remove(0);
    assert_eq!(lb.metadata["weights"], json!([1, 2.5, "x", true]));
    assert_eq!(lb.metadata["since"], json!("1979-05-27T07:32:00Z"));
    assert_eq!(lb.metadata["nested"], json!({"a": {"b": []}}));
}

/// (what, file text, expected first error as displayed).
const ERROR_CASES: &[(&str, &str, &str)] = &[
    (
        "broken toml",
        "[task.http.lb\ncrate = \"x\"\n",
        "t.toml:1:14: unclosed table, expected `]`",
    ),
    (
        "a group defined twice",
        "[a]\ncrate = \"c\"\n[a]\n",
        "t.toml:3:2: duplicate key",
    ),
    (
        "missing tasks",
        "\n\n[task.http.lb]\ncrate = \"http_loadbalancer\"\nversion = \"0.8.2\"\n\
            task = \"my::LoadBalancer\"\n",
        "t.toml:3:1: group task.http.lb: missing required key \"tasks\"",
    ),
    (
        "tasks zero",
        "[task.http.lb]\ncrate = \"http_loadbalancer\"\nversion = \"0.8.2\"\n\
            task = \"my::LoadBalancer\"\n\n\n\n\ntasks =   0\n",
        "t.toml:9:11: group task.http.lb: \"tasks\" must be a positive integer",
    ),
    (
        "tasks too many",
        "[a]\ncrate = \"c\"\nversion = \"1.0.0\"\ntask = \"t\"\ntasks = 10001\n",
        "t.toml:5:9: group a: \"tasks\" must be a positive integer up to 10000",
    ),
    (
        "tasks a string",
        "[a]\ncrate = \"c\"\nversion = \"1.0.0\"\ntask = \"t\"\ntasks = \"3\"\n",
        "t.toml:5:9: group a: \"tasks\" must be a positive integer up to 10000 (how many instances \
            to run), found a string",
    ),
    (
        "empty version",
        "[a]\ncrate = \"c\"\nversion = \"\"\ntask = \"t\"\ntasks = 1\n",
        "t.toml:3:11: group a: \"version\" must be a full crate version",
    ),
    (
        "short version",
        "[a]\ncrate = \"c\"\nversion = \"4.2\"\ntask = \"t\"\ntasks = 1\n",
        "t.toml:3:11: group a: \"version\" must be a full crate version such as \"4.2.1\"",
    ),
    (
        "no crate but group keys",
        "[a.b]\nversion = \"1.0.0\"\ntask = \"t\"\ntasks = 1\n",
        "t.toml:1:1: group a.b: missing required key \"crate\"",
    ),
    (
        "namespace with a stray key",
        "[task.http]\nport = 80\n",
        "t.toml:2:1: namespace task.http has key \"port\" but no crate: is it missing `crate`?",
    ),
    (
        "top-level key",
        "name = \"x\"\n",
        "t.toml:1:1: top-level key \"name\" is outside any group",
    ),
    (
        "nested group",
        "[a]\ncrate = \"c\"\nversion = \"1.0.0\"\ntask = \"t\"\ntasks = 1\n[a.b]\ncrate = \"d\"\n",
        "t.toml:7:1: group a: table a.b has a \"crate\" key, but a group cannot contain another \
            group",
    ),
    (
        "dot in a quoted table name",
        "[task.\"http.lb\"]\ncrate = \"c\"\nversion = \"1.0.0\"\ntask = \"t\"\ntasks = 1\n",
        "t.toml:1:7: group task.http.lb: table name \"http.lb\" cannot be part of a registry path",
    ),
    (
        "reserved lathe table",
        "[lathe.x]\ncrate = \"c\"\nversion = \"1.0.0\"\ntask = \"t\"\ntasks = 1\n",
        "t.toml:1:2: group lathe.x: the top-level table \"lathe\" is reserved",
    ),
    (
        "duplicate tag",
        "[a]\ncrate = \"c\"\nversion = \"1.0.0\"\ntask = \"t\"\ntasks = 1\n\
            tags = [\"lb\", \"lb\"]\n",
        "t.toml:6:15: group a: tag \"lb\" appears twice in \"tags\": remove one",
    ),
    (
        "biases lengths differ",
        "[a]\ncrate = \"c\"\nversion = \"1.0.0\"\ntask = \"t\"\ntasks = 1\n\
            biases = [[\"lb\", \"x\"], [-10]]\n",
        "t.toml:6:10: group a: \"biases\" has 2 tags but 1 score: give exactly one score per tag",
    ),
    (
        "bias score a float",
        "[a]\ncrate = \"c\"\nversion = \"1.0.0\"\ntask = \"t\"\ntasks = 1\n\
            biases = [[\"lb\"], [1.5]]\n",
        "t.toml:6:20: group a: a bias score must be an integer",
    ),
    (
        "biases not parallel arrays",
        "[a]\ncrate = \"c\"\nversion = \"1.0.0\"\ntask = \"t\"\ntasks = 1\nbiases = [\"lb\", -10]\n\
            ",
        "t.toml:6:10: group a: \"biases\" must be two parallel arrays",
    ),
    (
        "unknown restart key",
        "[a]\ncrate = \"c\"\nversion = \"1.0.0\"\ntask = \"t\"\ntasks = 1\n\
            restart = { max_restart = 3 }\n",
        "t.toml:6:13: group a: unknown key \"max_restart\" in \"restart\": the keys are strategy,",
    ),
    (
        "bad restart strategy",
        "[a]\ncrate = \"c\"\nversion = \"1.0.0\"\ntask = \"t\"\ntasks = 1\n\
            restart = { strategy = \"always\" }\n",
        "t.toml:6:24: group a: \"restart.strategy\" must be \"one-for-one\", \"one-for-all\" \
            or \"rest-for-one\"",
    ),
    (
        "backoff cap below backoff",
        "[a]\ncrate = \"c\"\nversion = \"1.0.0\"\ntask = \"t\"\ntasks = 1\n\
            restart = { backoff_ms = 10, max_backoff_ms = 5 }\n",
        "t.toml:6:47: group a: \"restart.max_backoff_ms\" (5) is below \"restart.backoff_ms\" (10)",
    ),
    (
        "reserved future key",
        "[a]\ncrate = \"c\"\nversion = \"1.0.0\"\ntask = \"t\"\ntasks = 1\ncache = 1\n",
        "t.toml:6:1: group a: key \"cache\" is reserved for Lathe's cache settings",
    ),
    (
        "state that is no table",
        "[a]\ncrate = \"c\"\nversion = \"1.0.0\"\ntask = \"t\"\ntasks = 1\nstate = 1\n",
        "t.toml:6:9: group a: \"state\" must be a table such as state = { changelog = true }, \
            found",
    ),
    (
        "state changelog that is no bool",
        "[a]\ncrate = \"c\"\nversion = \"1.0.0\"\ntask = \"t\"\ntasks = 1\n\
            state = { changelog = \"yes\" }\n",
        "t.toml:6:23: group a: \"state.changelog\" must be true or false, found",
    ),
    (
        "unknown state key",
        "[a]\ncrate = \"c\"\nversion = \"1.0.0\"\ntask = \"t\"\ntasks = 1\n\
            state = { standby = 1 }\n",
        "t.toml:6:11: group a: unknown key \"standby\" in \"state\": the keys are changelog",
    ),
    (
        "flows that is no table",
        "[a]\ncrate = \"c\"\nversion = \"1.0.0\"\ntask = \"t\"\ntasks = 1\nflows = [\"x\"]\n",
        "t.toml:6:9: group a: \"flows\" must be a table such as flows = { inputs = [\"clicks\"] }",
    ),
    (
        "flows with a bad stream name",
        "[a]\ncrate = \"c\"\nversion = \"1.0.0\"\ntask = \"t\"\ntasks = 1\n\
            flows = { inputs = [\"ok\", \"not ok\"] }\n",
        "t.toml:6:27: group a: a stream name is 1 to 128 characters of A-Z a-z 0-9 . _ -",
    ),
    (
        "rollout that is no table",
        "[a]\ncrate = \"c\"\nversion = \"1.0.0\"\ntask = \"t\"\ntasks = 1\nrollout = 1\n",
        "t.toml:6:11: group a: \"rollout\" must be a table such as rollout = { batch = 1, \
            healthy_seconds = 5 }, found an integer",
    ),
    (
        "rollout batch zero",
        "[a]\ncrate = \"c\"\nversion = \"1.0.0\"\ntask = \"t\"\ntasks = 1\n\
            rollout = { batch = 0 }\n",
        "t.toml:6:21: group a: \"rollout.batch\" must be an integer from 1 to 10000, found 0",
    ),
    (
        "rollout unknown key",
        "[a]\ncrate = \"c\"\nversion = \"1.0.0\"\ntask = \"t\"\ntasks = 1\n\
            rollout = { speed = 2 }\n",
        "t.toml:6:13: group a: unknown key \"speed\" in \"rollout\": the keys are batch, \
            healthy_seconds, timeout_seconds, on_failure, max_error_ratio, max_p99_ms, \
                min_requests",
    ),
    (
        "rollout error ratio over 1",
        "[a]\ncrate = \"c\"\nversion = \"1.0.0\"\ntask = \"t\"\ntasks = 1\n\
            rollout = { max_error_ratio = 1.5 }\n",
        "t.toml:6:31: group a: \"rollout.max_error_ratio\" must be a number from 0 to 1 (5xx \
            answers / all answers, e.g. 0.05), found 1.5",
    ),
    (
        "rollout error ratio as text",
        "[a]\ncrate = \"c\"\nversion = \"1.0.0\"\ntask = \"t\"\ntasks = 1\n\
            rollout = { max_error_ratio = \"5%\" }\n",
        "t.toml:6:31: group a: \"rollout.max_error_ratio\" must be a number from 0 to 1 (5xx \
            answers / all answers, e.g. 0.05), found a string",
    ),
    (
        "rollout p99 zero",
        "[a]\ncrate = \"c\"\nversion = \"1.0.0\"\ntask = \"t\"\ntasks = 1\n\
            rollout = { max_p99_ms = 0 }\n",
        "t.toml:6:26: group a: \"rollout.max_p99_ms\" must be an integer from 1 to 3600000, found \
            0",
    ),
    (
        "rollout bad on_failure",
        "[a]\ncrate = \"c\"\nversion = \"1.0.0\"\ntask = \"t\"\ntasks = 1\n\
            rollout = { on_failure = \"retry\" }\n",
        "t.toml:6:26: group a: \"rollout.on_failure\" must be \"rollback\" or \"pause\"",
    ),
    (
        "rollout timeout not above healthy",
        "[a]\ncrate = \"c\"\nversion = \"1.0.0\"\ntask = \"t\"\ntasks = 1\n\
            rollout = { healthy_seconds = 30, timeout_seconds = 30 }\n",
        "t.toml:6:53: group a: \"rollout.timeout_seconds\" (30) must be \
            above \"rollout.healthy_seconds\" (30)",
    ),
    (
        "metadata key that is no path segment",
        "[a]\ncrate = \"c\"\nversion = \"1.0.0\"\ntask = \"t\"\ntasks = 1\n\"my key\" = 1\n",
        "t.toml:6:1: group a: metadata key \"my key\" cannot be a registry path segment",
    ),
    (
        "metadata nan",
        "[a]\ncrate = \"c\"\nversion = \"1.0.0\"\ntask = \"t\"\ntasks = 1\nratio = nan\n",
        "t.toml:6:9: group a: metadata cannot hold nan",
    ),
    (
        "array of tables",
        "[[task.lb]]\ncrate = \"c\"\n",
        "t.toml:1:8: [[task.lb]] is an array of tables, but a group is one table: write [task.lb]",
    ),
    (
        "empty table",
        "[task.http.lb]\n# crate = \"c\"\n",
        "t.toml:1:1: table task.http.lb is empty",
    ),
    (
        "no groups at all",
        "# nothing yet\n",
        "t.toml:1:1: the topology has no groups",
    ),
    (
        "column counts characters, not bytes",
        "[a]\ncrate = \"c\"\nversion = \"1.0.0\"\ntask = \"t\"\ntasks = 1\ntags = [\"é\", \"é\"]\n",
        "t.toml:6:14: group a: tag \"é\" appears twice",
    ),
];

#[test]
fn errors_name_file_line_column_and_group() {
    for (what, text, expected) in ERROR_CASES {
        let error = parse("t.toml", text).expect_err(what);
        let shown = error.to_string();
        assert!(
            shown.starts_with(expected),
            "{what}:\n  got      {shown}\n  expected {expected}"
        );
        assert_eq!(shown.trim(), shown, "{what}: {shown}");
    }
}

#[test]
fn every_error_of_a_file_is_reported_in_file_order() {
    let text = "[b]\ncrate = \"c\"\nversion = \"1\"\ntask = \"t\"\n[a]\ncrate = \"c\"\n\
        version = \"1.0.0\"\ntask = \"t\"\ntasks = 0\n";
    let errors = parse_all("t.toml", text).unwrap_err();
    let shown: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(errors.len(), 3, "{shown:#?}");
    assert!(shown[0].starts_with("t.toml:1:1: group b: missing required key \"tasks\""));
    assert!(shown[1].starts_with("t.toml:3:11: group b: \"version\""));
    assert!(shown[2].starts_with("t.toml:9:9: group a: \"tasks\""));
    let first = &errors.first();
    assert_eq!(
        (first.line, first.column, first.group.as_deref()),
        (1, 1, Some("b"))
    );
}

/// A group name just under the old 1024-byte key limit used to pass and then panic the
/// scheduler (`/lathe/rollouts/<group>` was longer than any key may be): the one length rule
/// refuses it where the topology is read, naming the limit and the group.
#[test]
fn group_names_too_long_for_their_derived_paths_are_refused() {
    use crate::registry::MAX_USER_KEY_LEN;
    for len in [MAX_USER_KEY_LEN, 1009, 1015, 1023] {
        let name = format!("task.{}", "g".repeat(len - 5));
        let source = LB.replace("task.http.lb", &name);
        let error = parse("long.toml", &source).expect_err(&format!("a {len}-byte group name"));
        let message = error.to_string();
        assert!(
            message.contains(&format!("limit of {MAX_USER_KEY_LEN} bytes")),
            "{message}"
        );
        assert!(message.contains("long.toml:1:"), "{message}");
    }
    // The longest name that fits is accepted.
    let name = format!("task.{}", "g".repeat(MAX_USER_KEY_LEN - 6));
    let topology = parse("long.toml", &LB.replace("task.http.lb", &name)).unwrap();
    assert_eq!(topology.groups[0].path.as_str().len(), MAX_USER_KEY_LEN);
    // A metadata key that would take the group's path over the limit is named.
    let source = format!(
        "{}long_key = 1\n",
        LB.replace(
            "task.http.lb",
            &format!("task.{}", "g".repeat(MAX_USER_KEY_LEN - 10))
        )
    );
    let message = parse("long.toml", &source).unwrap_err().to_string();
    assert!(
        message.contains("metadata key \"long_key\" is too long"),
        "{message}"
    );
}
