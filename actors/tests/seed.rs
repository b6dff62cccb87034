//! The seed's example on one in-process node: the real `http_loadbalancer` and both
//! `http_frontpage` versions, run by the task runtime from assignments written in the registry
//! (the scheduler's job in a cluster). The multi-process version lives in `tests/`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use lathe::layout::{self, Assignment, InstanceStatus};
use lathe::{Catalog, Endpoint, KeyPath, TaskType};
use lathe_actors::registry::{start_registry, RegistryConfig, RegistryHandle};
use lathe_actors::tasks::{start_task_supervisor, TaskSupervisorConfig};
use lathe_store::embedded::EmbeddedStore;
use serde_json::json;

const NODE: &str = "seed-node";
const LB: &str = "task.http.lb";
const V421: &str = "task.http.frontpage.v4-2-1";
const V422: &str = "task.http.frontpage.v4-2-2";

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn put(registry: &RegistryHandle, key: &str, value: serde_json::Value) {
    let key = KeyPath::parse(key).unwrap();
    registry.put(&key, value, None).await.expect("put");
}

async fn assign(registry: &RegistryHandle, group: &str, tasks: u32, task_type: TaskType) {
    for index in 0..tasks {
        let assignment = Assignment {
            group: group.into(),
            index,
            node: NODE.into(),
            task_type: task_type.clone(),
        };
        let key = layout::assignment(NODE, group, index);
        let value = serde_json::to_value(assignment).unwrap();
        registry.put(&key, value, None).await.expect("assign");
    }
}

async fn endpoints(registry: &RegistryHandle, group: &str) -> Vec<Endpoint> {
    let (entries, _) = registry
        .list(&layout::group_endpoints(group))
        .await
        .unwrap();
    entries
        .into_iter()
        .filter_map(|e| serde_json::from_value(e.value).ok())
        .filter(|e: &Endpoint| e.group == group)
        .collect()
}

async fn wait_for_endpoints(registry: &RegistryHandle, group: &str, count: usize) -> Vec<Endpoint> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = endpoints(registry, group).await;
        if found.len() == count {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{group}: {} of {count} endpoints",
            found.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Reply {
    status: u16,
    task: String,
    version: String,
    body: String,
}

async fn get(client: &HttpClient, lb: &str, path: &str) -> Reply {
    let request = http::Request::get(format!("http://{lb}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.request(request).await.expect("the LB answers");
    let header = |name: &str| {
        let value = response.headers().get(name);
        value
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (status, task, version) = (
        response.status().as_u16(),
        header("x-lathe-task"),
        header("x-lathe-version"),
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        task,
        version,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Sends `count` requests, 8 at a time; checks each is a front page's `:)` and returns the share
/// that version 4.2.2 answered.
async fn share_of_v422(client: &HttpClient, lb: &str, count: usize) -> f64 {
    let mut v422 = 0;
    for _ in 0..count / 8 {
        let batch = (0..8).map(|_| get(client, lb, "/get/index"));
        for reply in futures::future::join_all(batch).await {
            assert_eq!((reply.status, reply.body.as_str()), (200, ":)"));
            let group = reply.task.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
            match reply.version.as_str() {
                "4.2.1" => assert_eq!(group, V421),
                "4.2.2" => {
                    assert_eq!(group, V422);
                    v422 += 1;
                }
                other => panic!("unexpected X-Lathe-Version {other:?} from {:?}", reply.task),
            }
        }
    }
    v422 as f64 / (count / 8 * 8) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_load_balancer_splits_by_backend_distribution_and_follows_changes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let metrics = prometheus::Registry::new();
    let (registry, _) = start_registry(RegistryConfig::default(), store, &metrics, None)
        .await
        .unwrap();
    let catalog = Catalog::new()
        .with(http_loadbalancer::tasks())
        .with(http_frontpage_4_2_1::tasks())
        .with(http_frontpage_4_2_2::tasks());
    let config = TaskSupervisorConfig::new(NODE, "127.0.0.1".parse().unwrap());
    let _tasks = start_task_supervisor(config, catalog, registry.clone(), &metrics, None)
        .await
        .unwrap();

    let distribution = "/task/http/lb/backend_distribution";
    put(&registry, distribution, json!([[V421, V422], [90, 10]])).await;
    let frontpage = |version: &str| TaskType::new("http_frontpage", version, "my::FrontPage");
    assign(&registry, V421, 5, frontpage("4.2.1")).await;
    assign(&registry, V422, 5, frontpage("4.2.2")).await;
    assign(
        &registry,
        LB,
        1,
        TaskType::new("http_loadbalancer", "0.8.2", "my::LoadBalancer"),
    )
    .await;
    wait_for_endpoints(&registry, V421, 5).await;
    wait_for_endpoints(&registry, V422, 5).await;
    let lb = wait_for_endpoints(&registry, LB, 1).await[0]
        .http
        .clone()
        .unwrap();
    let client: HttpClient = Client::builder(TokioExecutor::new()).build(HttpConnector::new());

    let share = share_of_v422(&client, &lb, 2000).await;
    assert!((share - 0.10).abs() < 0.03, "v4.2.2 answered {share}");
    let other = get(&client, &lb, "/other").await;
    assert_eq!(
        (other.status, other.body.as_str()),
        (400, "invalid request")
    );
    assert!(
        other.task.starts_with("task.http.frontpage.v4-2-"),
        "{}",
        other.task
    );

    // 50/50 through the registry: the split follows within a second, nothing restarts.
    let changed = Instant::now();
    put(&registry, distribution, json!([[V421, V422], [50, 50]])).await;
    loop {
        let share = share_of_v422(&client, &lb, 200).await;
        if (share - 0.5).abs() < 0.15 {
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_secs(1),
            "the split did not follow"
        );
    }
    let share = share_of_v422(&client, &lb, 1000).await;
    assert!(
        (share - 0.5).abs() < 0.06,
        "v4.2.2 answered {share} after 50/50"
    );
    assert_eq!(
        endpoints(&registry, LB).await[0].http.as_deref(),
        Some(lb.as_str())
    );
    let (records, _) = registry
        .list(&KeyPath::parse(layout::INSTANCES).unwrap())
        .await
        .unwrap();
    assert_eq!(records.len(), 11);
    for record in records {
        let status: InstanceStatus = serde_json::from_value(record.value).unwrap();
        assert_eq!(status.restarts, 0, "{status:?}");
    }

    // A broken distribution answers 503 with the reason, and a fix brings the LB back.
    put(&registry, distribution, json!([[V421, V422], [0, 0]])).await;
    let deadline = Instant::now() + Duration::from_secs(2);
    let broken = loop {
        let reply = get(&client, &lb, "/get/index").await;
        if reply.status == 503 || Instant::now() > deadline {
            break reply;
        }
    };
    assert_eq!(broken.status, 503);
    assert!(
        broken.body.contains("weights add up to 0"),
        "{}",
        broken.body
    );
    assert_eq!(broken.task, "task.http.lb/0");
    put(&registry, distribution, json!([[V421], [1]])).await;
    let deadline = Instant::now() + Duration::from_secs(2);
    while get(&client, &lb, "/get/index").await.status != 200 {
        assert!(Instant::now() < deadline, "the LB did not recover");
    }
}
