//! Instances start from assignments, serve, stop when unassigned, restart, fail, and drain.

use std::sync::atomic::Ordering;
use std::time::Duration;

use lathe::layout::InstanceState;

use super::tasks::{catalog, crashing_type, echo_type, echo_v2_type, ticker_type, Probes};
use super::{eventually, fast_policy, http_get, start_node, start_node_over, PATIENCE};
use crate::tasks::RestartPolicy;

#[tokio::test]
async fn an_assigned_instance_serves_registers_and_goes_away_when_unassigned() {
    let node = start_node(
        "life-n1",
        catalog(&Probes::default()),
        RestartPolicy::default(),
    )
    .await;
    node.put("/t/echo/greeting", "hi".into()).await;
    node.assign("t.echo", 0, &echo_type()).await;
    let addr = node.serving("t.echo", 0).await;

    let answer = http_get(addr, "/anything")
        .await
        .expect("the instance answers");
    assert_eq!((answer.status, answer.body.as_str()), (200, "t.echo/0 hi"));
    assert_eq!(answer.header("x-lathe-task"), "t.echo/0");
    assert_eq!(answer.header("x-lathe-version"), "1.0.0");
    let status = eventually("a running record", PATIENCE, || async {
        node.status("t.echo", 0)
            .await
            .filter(|s| s.status == InstanceState::Running)
    })
    .await;
    assert_eq!(status.endpoint, Some(addr.to_string()));
    assert_eq!(status.node.as_deref(), Some("life-n1"));
    let running = [
        ("group", "t.echo"),
        ("version", "1.0.0"),
        ("status", "running"),
    ];
    assert_eq!(node.metric("lathe_task_instances", &running), Some(1.0));
    let answered = [("group", "t.echo"), ("code", "200")];
    assert_eq!(
        node.metric("lathe_http_requests_total", &answered),
        Some(1.0)
    );

    // The group's metadata is followed without a restart.
    node.put("/t/echo/greeting", "hello".into()).await;
    eventually("the new greeting", PATIENCE, || async {
        let answer = http_get(addr, "/").await.ok()?;
        (answer.body == "t.echo/0 hello").then_some(())
    })
    .await;

    // A panicking handler answers 500, stamped and counted; the instance keeps serving.
    let answer = http_get(addr, "/panic").await.expect("an answer");
    assert_eq!(
        (answer.status, answer.header("x-lathe-task")),
        (500, "t.echo/0")
    );
    let panics = [("group", "t.echo")];
    assert_eq!(
        node.metric("lathe_task_handler_panics_total", &panics),
        Some(1.0)
    );
    assert_eq!(
        http_get(addr, "/").await.expect("still serving").status,
        200
    );

    node.unassign("t.echo", 0).await;
    eventually("the endpoint and the record to go", PATIENCE, || async {
        let gone =
            node.endpoint("t.echo", 0).await.is_none() && node.status("t.echo", 0).await.is_none();
        gone.then_some(())
    })
    .await;
    eventually("the port to close", PATIENCE, || async {
        http_get(addr, "/").await.err()
    })
    .await;
    assert_eq!(node.metric("lathe_task_instances", &running), None);
}

#[tokio::test]
async fn a_task_that_panics_in_start_is_restarted_then_failed_with_the_reason() {
    let probes = Probes::default();
    let node = start_node("life-n2", catalog(&probes), fast_policy(2)).await;
    node.assign("t.crash", 0, &crashing_type()).await;
    let status = eventually("a failed record", PATIENCE, || async {
        node.status("t.crash", 0)
            .await
            .filter(|s| s.status == InstanceState::Failed)
    })
    .await;
    let reason = status.reason.unwrap_or_default();
    assert!(
        reason.contains("start panicked: cannot start, on purpose"),
        "{reason}"
    );
    assert!(reason.contains("not restarted"), "{reason}");
    assert_eq!(status.restarts, 2);
    // The failed record comes from the third start's panic, so every start has happened.
    assert_eq!(
        probes.crashing_starts.load(Ordering::SeqCst),
        3,
        "1 start + 2 restarts"
    );
    let failed = [("group", "t.crash"), ("status", "failed")];
    assert_eq!(node.metric("lathe_task_instances", &failed), Some(1.0));
    assert!(node.endpoint("t.crash", 0).await.is_none());

    // Rewriting the assignment retries it (with a fresh restart budget).
    node.assign("t.crash", 0, &crashing_type()).await;
    eventually("a retry", PATIENCE, || async {
        (probes.crashing_starts.load(Ordering::SeqCst) > 3).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_task_type_missing_from_the_catalog_fails_with_the_reason() {
    let node = start_node(
        "life-n3",
        catalog(&Probes::default()),
        RestartPolicy::default(),
    )
    .await;
    let missing = lathe::TaskType::new("nowhere", "0.1.0", "my::Missing");
    node.assign("t.missing", 0, &missing).await;
    let status = eventually("a failed record", PATIENCE, || async {
        node.status("t.missing", 0)
            .await
            .filter(|s| s.status == InstanceState::Failed)
    })
    .await;
    assert_eq!(
        status.reason.as_deref(),
        Some("task type nowhere 0.1.0 my::Missing not in this node's catalog")
    );
    let instances = node.tasks.instances().await;
    assert_eq!(instances.len(), 1);
}

#[tokio::test]
async fn a_changed_task_type_replaces_the_instance() {
    let node = start_node(
        "life-n4",
        catalog(&Probes::default()),
        RestartPolicy::default(),
    )
    .await;
    node.assign("t.swap", 0, &echo_type()).await;
    let first = node.serving("t.swap", 0).await;
    assert_eq!(
        http_get(first, "/")
            .await
            .unwrap()
            .header("x-lathe-version"),
        "1.0.0"
    );
    node.assign("t.swap", 0, &echo_v2_type()).await;
    eventually("version 2 to serve", PATIENCE, || async {
        let endpoint = node.endpoint("t.swap", 0).await?;
        (endpoint.version == "2.0.0").then_some(())
    })
    .await;
    let second = node.serving("t.swap", 0).await;
    let answer = http_get(second, "/").await.unwrap();
    assert_eq!(answer.header("x-lathe-version"), "2.0.0");
    // An unchanged rewrite leaves the running instance alone. Assignments reach the supervisor
    // in order: once a later one serves, the rewrite has been handled.
    node.assign("t.swap", 0, &echo_v2_type()).await;
    node.assign("t.swap", 1, &echo_v2_type()).await;
    node.serving("t.swap", 1).await;
    assert_eq!(node.serving("t.swap", 0).await, second);
}

#[tokio::test]
async fn a_plain_task_runs_on_its_own_thread_and_drains_when_the_node_stops() {
    let probes = Probes::default();
    let node = start_node("life-n5", catalog(&probes), RestartPolicy::default()).await;
    node.assign("t.tick", 0, &ticker_type()).await;
    eventually("ticks", PATIENCE, || async {
        (probes.ticks.load(Ordering::SeqCst) > 3).then_some(())
    })
    .await;
    let endpoint = eventually("a plain endpoint", PATIENCE, || node.endpoint("t.tick", 0)).await;
    assert_eq!((endpoint.http, endpoint.node.as_str()), (None, "life-n5"));

    node.tasks.shutdown(Duration::from_secs(10)).await;
    assert!(
        probes.ticker_stopped.load(Ordering::SeqCst),
        "stop() was called"
    );
    let status = node.status("t.tick", 0).await.expect("a record");
    assert_eq!(status.status, InstanceState::Stopped);
    assert!(node.endpoint("t.tick", 0).await.is_none());
}

#[tokio::test]
async fn unassigning_a_plain_task_stops_it() {
    let probes = Probes::default();
    let node = start_node("life-n6", catalog(&probes), RestartPolicy::default()).await;
    node.assign("t.tick", 0, &ticker_type()).await;
    eventually("a running record", PATIENCE, || async {
        node.status("t.tick", 0)
            .await
            .filter(|s| s.status == InstanceState::Running)
    })
    .await;
    node.unassign("t.tick", 0).await;
    eventually("stop() to run", PATIENCE, || async {
        probes.ticker_stopped.load(Ordering::SeqCst).then_some(())
    })
    .await;
    // stop() runs on the task's thread after run() returned: the count is final now, and stays
    // so while the supervisor removes the record.
    let ticks = probes.ticks.load(Ordering::SeqCst);
    eventually("the record to go", PATIENCE, || async {
        node.status("t.tick", 0).await.is_none().then_some(())
    })
    .await;
    assert_eq!(
        probes.ticks.load(Ordering::SeqCst),
        ticks,
        "the thread ended"
    );
}

#[tokio::test]
async fn records_left_by_a_previous_run_of_the_node_are_cleared_at_start() {
    let record = |node: &str, index: u32| {
        let endpoint = lathe::Endpoint {
            group: "t.old".into(),
            index,
            node: node.into(),
            http: Some("127.0.0.1:1".into()),
            version: "1.0.0".into(),
        };
        (
            lathe::layout::endpoint("t.old", index),
            serde_json::to_value(endpoint).unwrap(),
        )
    };
    let records = vec![record("life-n7", 0), record("another-node", 1)];
    let node = start_node_over(
        "life-n7",
        catalog(&Probes::default()),
        RestartPolicy::default(),
        records,
    )
    .await;
    assert!(
        node.endpoint("t.old", 0).await.is_none(),
        "this node's stale endpoint is gone"
    );
    assert!(
        node.endpoint("t.old", 1).await.is_some(),
        "another node's endpoint stays"
    );
}
