//! In-process tests of the task runtime: a registry on an embedded store in a temporary
//! directory, a task supervisor for one node, small test tasks, and a plain HTTP client.

mod discovery;
mod lifecycle;
mod limits;
mod restore;
mod strategies;
mod tasks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use lathe::layout::{self, Assignment, InstanceStatus};
use lathe::{Catalog, Endpoint, KeyPath, TaskType};
use lathe_store::embedded::EmbeddedStore;

use super::{start_task_supervisor, RestartPolicy, TaskSupervisorConfig, TaskSupervisorHandle};
use crate::registry::{start_registry, RegistryConfig, RegistryHandle};
use crate::tree::{ActorTree, TreeMetrics, TreeScope};

/// A node's task runtime over its own registry.
pub(super) struct TestNode {
    pub(super) name: String,
    pub(super) registry: RegistryHandle,
    pub(super) tasks: TaskSupervisorHandle,
    pub(super) metrics: prometheus::Registry,
    /// The supervision tree the task supervisor reports to (`node/tasks/...`).
    pub(super) tree: ActorTree,
    _dir: tempfile::TempDir,
}

pub(super) fn fast_policy(max_restarts: u32) -> RestartPolicy {
    RestartPolicy {
        max_restarts,
        within_seconds: 30,
        backoff_ms: 10,
        max_backoff_ms: 40,
        ..RestartPolicy::default()
    }
}

pub(super) async fn start_node(name: &str, catalog: Catalog, policy: RestartPolicy) -> TestNode {
    start_node_over(name, catalog, policy, Vec::new()).await
}

/// Starts a node over a registry that already holds `records`.
pub(super) async fn start_node_over(
    name: &str,
    catalog: Catalog,
    policy: RestartPolicy,
    records: Vec<(KeyPath, serde_json::Value)>,
) -> TestNode {
    start_node_with(name, catalog, records, |config| config.restart = policy).await
}

/// Starts a node over a registry holding `records`, with its config adjusted by `configure`.
pub(super) async fn start_node_with(
    name: &str,
    catalog: Catalog,
    records: Vec<(KeyPath, serde_json::Value)>,
    configure: impl FnOnce(&mut TaskSupervisorConfig),
) -> TestNode {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Arc::new(EmbeddedStore::open(dir.path()).expect("an embedded store"));
    let metrics = prometheus::Registry::new();
    let (registry, _) = start_registry(RegistryConfig::default(), store, &metrics, None)
        .await
        .expect("the registry starts");
    for (key, value) in records {
        registry.put(&key, value, None).await.expect("a record");
    }
    let scope = TreeScope::detached("node/tasks");
    let tree = scope.tree().clone();
    TreeMetrics::register(tree.clone(), &metrics).expect("the tree metrics");
    let mut config = TaskSupervisorConfig::new(name, "127.0.0.1".parse().unwrap()).with_tree(scope);
    configure(&mut config);
    let tasks = start_task_supervisor(config, catalog, registry.clone(), &metrics, None)
        .await
        .expect("the task supervisor starts");
    TestNode {
        name: name.to_string(),
        registry,
        tasks,
        metrics,
        tree,
        _dir: dir,
    }
}

impl TestNode {
    pub(super) async fn assign(&self, group: &str, index: u32, task_type: &TaskType) {
        let assignment = Assignment {
            group: group.into(),
            index,
            node: self.name.clone(),
            task_type: task_type.clone(),
        };
        let key = layout::assignment(&self.name, group, index);
        let value = serde_json::to_value(assignment).unwrap();
        self.registry.put(&key, value, None).await.expect("assign");
    }

    pub(super) async fn unassign(&self, group: &str, index: u32) {
        let key = layout::assignment(&self.name, group, index);
        self.registry
            .delete(&key, None, false)
            .await
            .expect("unassign");
    }

    pub(super) async fn put(&self, key: &str, value: serde_json::Value) {
        let key = KeyPath::parse(key).unwrap();
        self.registry.put(&key, value, None).await.expect("put");
    }

    pub(super) async fn delete(&self, key: &str) {
        let key = KeyPath::parse(key).unwrap();
        self.registry
            .delete(&key, None, false)
            .await
            .expect("delete");
    }

    pub(super) async fn get<T: serde::de::DeserializeOwned>(&self, key: &KeyPath) -> Option<T> {
        let (entry, _) = self.registry.get(key).await.expect("get");
        entry.map(|entry| serde_json::from_value(entry.value).expect("a well-formed record"))
    }

    pub(super) async fn status(&self, group: &str, index: u32) -> Option<InstanceStatus> {
        self.get(&layout::instance(group, index)).await
    }

    pub(super) async fn endpoint(&self, group: &str, index: u32) -> Option<Endpoint> {
        self.get(&layout::endpoint(group, index)).await
    }

    /// Waits until the instance serves and returns its HTTP address.
    pub(super) async fn serving(&self, group: &str, index: u32) -> SocketAddr {
        let endpoint = eventually("the instance's endpoint", PATIENCE, || async {
            self.endpoint(group, index)
                .await
                .filter(|e| e.http.is_some())
        })
        .await;
        endpoint.http.unwrap().parse().expect("HOST:PORT")
    }

    /// The actor at `path` in the supervision tree.
    pub(super) fn actor(&self, path: &str) -> Option<crate::tree::ActorSnapshot> {
        let roots = self.tree.snapshot();
        roots.iter().find_map(|root| root.find(path)).cloned()
    }

    /// A metric's value, by name and label values (a histogram: its number of samples).
    pub(super) fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        use prometheus::proto::MetricType;
        let families = self.metrics.gather();
        let family = families.iter().find(|family| family.name() == name)?;
        let metric = family.get_metric().iter().find(|metric| {
            labels.iter().all(|(name, value)| {
                metric
                    .get_label()
                    .iter()
                    .any(|l| l.name() == *name && l.value() == *value)
            })
        })?;
        Some(match family.get_field_type() {
            MetricType::COUNTER => metric.get_counter().get_value(),
            MetricType::HISTOGRAM => metric.get_histogram().get_sample_count() as f64,
            _ => metric.get_gauge().get_value(),
        })
    }
}

/// How long the node-level task tests wait for a condition.
pub(super) const PATIENCE: Duration = Duration::from_secs(10);

/// The shared poller, with the task tests' deadline.
pub(super) use lathe_tests::wait::eventually;

/// A response as the tests look at it.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) headers: http::HeaderMap,
    pub(super) body: String,
}

impl Answer {
    pub(super) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

pub(super) async fn http_get(addr: SocketAddr, path: &str) -> Result<Answer, String> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let request = http::Request::get(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    let (head, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Answer {
        status: head.status.as_u16(),
        headers: head.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
