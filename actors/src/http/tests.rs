//! The REST server in-process: a handler that panics answers 500 with a JSON error, is counted,
//! and leaves the server answering everything else; a too-long shift key is a 400; writes past
//! the registry quota are a 507 (a 413 for a value over the whole quota).

use std::sync::Arc;

use lathe_store::embedded::EmbeddedStore;
use lathe_tests::http;

use super::{serve, ApiContext, MemberDirectory};
use crate::registry::{start_registry, RegistryConfig};
use crate::tree::ActorTree;

/// A member directory that fails the way a bug would.
struct PanickingMembers;

#[async_trait::async_trait]
impl MemberDirectory for PanickingMembers {
    async fn members_json(&self) -> serde_json::Value {
        panic!("members directory bug")
    }
}

/// GETs `path` from `addr` off the runtime (the test client blocks).
async fn get(addr: &str, path: impl Into<String>) -> http::Reply {
    let (addr, path) = (addr.to_string(), path.into());
    tokio::task::spawn_blocking(move || http::get_json(&addr, &path))
        .await
        .expect("the request thread")
}

#[tokio::test]
async fn a_panicking_handler_answers_500_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Arc::new(EmbeddedStore::open(dir.path()).expect("an embedded store"));
    let metrics = prometheus::Registry::new();
    let (registry, _) = start_registry(RegistryConfig::default(), store, &metrics, None)
        .await
        .expect("the registry starts");
    let context = ApiContext {
        node_name: "n1".to_string(),
        registry,
        members: Arc::new(PanickingMembers),
        metrics: metrics.clone(),
        max_value_bytes: 1024,
        tree: ActorTree::new("n1"),
        enable_chaos: false,
        limits: super::ApiLimits::default(),
        acl: crate::acl::Acl::disabled(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, context, async {
        let _ = stopped.await;
    }));

    for _ in 0..2 {
        let reply = get(&addr, "/v1/members").await;
        assert_eq!(reply.status, 500, "{}", reply.text);
        let error = reply.error().unwrap_or_default();
        assert!(error.contains("GET /v1/members"), "{}", reply.text);
    }
    let health = get(&addr, "/v1/health").await;
    assert_eq!(health.status, 200, "{}", health.text);
    let panics = metrics
        .gather()
        .into_iter()
        .find(|family| family.name() == "lathe_api_panics_total")
        .map(|family| family.get_metric()[0].get_counter().get_value());
    assert_eq!(panics, Some(2.0));

    // A shift key just under the old key limit used to panic `layout::shift`.
    let long = get(&addr, format!("/v1/shifts/{}", "k".repeat(1015))).await;
    assert_eq!(long.status, 400, "{}", long.text);
    assert!(
        long.error()
            .unwrap_or_default()
            .contains("limit of 768 bytes"),
        "{}",
        long.text
    );

    let _ = stop.send(());
    server.await.expect("the server stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_past_the_registry_quota_are_refused() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Arc::new(EmbeddedStore::open(dir.path()).expect("an embedded store"));
    let metrics = prometheus::Registry::new();
    let (registry, _) = start_registry(RegistryConfig::default(), store, &metrics, None)
        .await
        .expect("the registry starts");
    let context = ApiContext {
        node_name: "n1".to_string(),
        registry,
        members: Arc::new(PanickingMembers),
        metrics,
        max_value_bytes: 1 << 20,
        tree: ActorTree::new("n1"),
        enable_chaos: false,
        limits: super::ApiLimits::default().with_quota(2, 1000),
        acl: crate::acl::Acl::disabled(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(serve(listener, context, std::future::pending()));
    let put = |path: &str, value: serde_json::Value| {
        let (addr, path) = (addr.clone(), format!("/v1/kv{path}"));
        tokio::task::spawn_blocking(move || http::put_json(&addr, &path, &value))
    };
    assert_eq!(put("/a", serde_json::json!(1)).await.unwrap().status, 200);
    assert_eq!(put("/b", serde_json::json!(2)).await.unwrap().status, 200);
    let full = put("/c", serde_json::json!(3)).await.unwrap();
    assert_eq!(full.status, 507, "{}", full.text);
    assert!(
        full.error().unwrap_or_default().contains("--max-keys"),
        "{}",
        full.text
    );
    // Overwriting a key adds none.
    assert_eq!(put("/a", serde_json::json!(10)).await.unwrap().status, 200);
    let huge = put("/a", serde_json::json!("h".repeat(2000)))
        .await
        .unwrap();
    assert_eq!(huge.status, 413, "{}", huge.text);
    // About 516 + 616 bytes of values would pass 1000; 516 + 416 do not.
    let a = put("/a", serde_json::json!("a".repeat(500))).await.unwrap();
    assert_eq!(a.status, 200, "{}", a.text);
    let bytes = put("/b", serde_json::json!("b".repeat(600))).await.unwrap();
    assert_eq!(bytes.status, 507, "{}", bytes.text);
    let message = bytes.error().unwrap_or_default();
    assert!(message.contains("--max-registry-bytes"), "{message}");
    let fits = put("/b", serde_json::json!("b".repeat(400))).await.unwrap();
    assert_eq!(fits.status, 200, "{}", fits.text);
}
