//! Service discovery and forwarding: the node-local endpoint cache and `ctx.forward`.

use std::time::Duration;

use lathe::{Endpoint, TaskRef};

use super::tasks::{catalog, echo_type, relay_type, Probes};
use super::{eventually, http_get, start_node, PATIENCE};
use crate::tasks::{Forwarder, RestartPolicy};

fn endpoint(group: &str, index: u32, http: &str) -> serde_json::Value {
    serde_json::to_value(Endpoint {
        group: group.into(),
        index,
        node: "elsewhere".into(),
        http: Some(http.into()),
        version: "1.0.0".into(),
    })
    .unwrap()
}

fn indexes(task_ref: &TaskRef) -> Vec<u32> {
    task_ref.instances.iter().map(|e| e.index).collect()
}

#[tokio::test]
async fn get_ref_fills_lazily_then_follows_endpoint_changes() {
    let node = start_node(
        "disc-n1",
        catalog(&Probes::default()),
        RestartPolicy::default(),
    )
    .await;
    let cache = node.tasks.endpoints().clone();
    node.put(
        "/lathe/endpoints/t/far/0",
        endpoint("t.far", 0, "127.0.0.1:1"),
    )
    .await;
    // A subgroup's endpoints are not the group's.
    node.put(
        "/lathe/endpoints/t/far/sub/0",
        endpoint("t.far.sub", 0, "127.0.0.1:2"),
    )
    .await;
    assert_eq!(
        cache.watched_groups(),
        0,
        "nothing is watched before a lookup"
    );

    let first = cache.get_ref("t.far").await.expect("a lookup");
    assert_eq!((&*first.group, indexes(&first)), ("t.far", vec![0]));
    assert_eq!(cache.watched_groups(), 1);

    node.put(
        "/lathe/endpoints/t/far/1",
        endpoint("t.far", 1, "127.0.0.1:3"),
    )
    .await;
    eventually("the new instance", PATIENCE, || async {
        let task_ref = cache.get_ref("t.far").await.ok()?;
        (indexes(&task_ref) == vec![0, 1]).then_some(())
    })
    .await;
    node.delete("/lathe/endpoints/t/far/0").await;
    eventually("the instance to go", PATIENCE, || async {
        let task_ref = cache.get_ref("t.far").await.ok()?;
        (indexes(&task_ref) == vec![1]).then_some(())
    })
    .await;

    let nobody = cache
        .get_ref("t.nobody")
        .await
        .expect("an empty group is no error");
    assert!(nobody.is_empty());
    assert!(cache.get_ref("bad group!").await.is_err());
}

#[tokio::test]
async fn a_forwarded_response_keeps_the_headers_of_the_instance_that_produced_it() {
    let node = start_node(
        "disc-n2",
        catalog(&Probes::default()),
        RestartPolicy::default(),
    )
    .await;
    node.put("/t/front/greeting", "from the front".into()).await;
    node.put("/t/lb/target", "t.front".into()).await;
    node.assign("t.front", 0, &echo_type()).await;
    node.assign("t.lb", 0, &relay_type()).await;
    let front = node.serving("t.front", 0).await;
    let lb = node.serving("t.lb", 0).await;

    let answer = http_get(lb, "/get/index").await.expect("the relay answers");
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (200, "t.front/0 from the front")
    );
    assert_eq!(answer.header("x-lathe-task"), "t.front/0");
    assert_eq!(answer.header("x-lathe-version"), "1.0.0");

    // Once the target group is gone, the relay answers 502, stamped with its own name.
    node.unassign("t.front", 0).await;
    eventually("the relay to notice", PATIENCE, || async {
        let answer = http_get(lb, "/").await.ok()?;
        (answer.status == 502 && answer.header("x-lathe-task") == "t.lb/0").then_some(())
    })
    .await;
    eventually("the front port to close", PATIENCE, || async {
        http_get(front, "/").await.err()
    })
    .await;
}

#[tokio::test]
async fn forwarding_skips_an_instance_that_refuses_connections() {
    let node = start_node(
        "disc-n3",
        catalog(&Probes::default()),
        RestartPolicy::default(),
    )
    .await;
    node.assign("t.live", 0, &echo_type()).await;
    let live = node.serving("t.live", 0).await;
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let instance = |index, addr: std::net::SocketAddr| Endpoint {
        group: "t.live".into(),
        index,
        node: "n".into(),
        http: Some(addr.to_string()),
        version: "1.0.0".into(),
    };
    let target = TaskRef {
        group: "t.live".into(),
        instances: vec![instance(0, live), instance(1, dead)].into(),
    };
    let forwarder = Forwarder::new();
    for _ in 0..4 {
        let request = http::Request::get("/x").body(bytes::Bytes::new()).unwrap();
        let response = forwarder.forward(request, &target).await;
        assert_eq!(response.status(), 200, "{:?}", response.body());
        assert_eq!(response.headers()["x-lathe-task"], "t.live/0");
    }

    let only_dead = TaskRef {
        group: "t.live".into(),
        instances: vec![instance(1, dead)].into(),
    };
    let request = http::Request::get("/x").body(bytes::Bytes::new()).unwrap();
    let response = tokio::time::timeout(
        Duration::from_secs(5),
        forwarder.forward(request, &only_dead),
    )
    .await
    .expect("a quick answer");
    assert_eq!(response.status(), 502);
    let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("no instance of group t.live answered"));
}
