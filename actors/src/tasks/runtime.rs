//! The node side of `TaskContext`: what every instance on a node shares ([`NodeServices`]) and the
//! per-instance [`InstanceRuntime`] that implements `lathe::TaskRuntime` over it.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use lathe::http::{Request, Response};
use lathe::{LookupError, TaskRef, TaskRuntime};
use tokio::sync::watch;

use super::endpoints::EndpointCache;
use super::forward::Forwarder;
use super::http_server::TaskHttpLimits;
use super::local::LocalInstances;
use super::metadata::{GroupMetadata, MetadataCache};
use super::metrics::TaskMetrics;
use super::status::StatusWriter;
use crate::cache::CacheHost;
use crate::flow::FlowHost;
use crate::registry::RegistryHandle;
use lathe_store::state::LazyNodeStates;

/// Everything the instances of one node share.
pub(crate) struct NodeServices {
    pub(crate) node: String,
    /// The IP HTTP instances bind (the node's `--http` IP).
    pub(crate) http_ip: IpAddr,
    /// The host other nodes reach those instances at.
    pub(crate) advertised_host: String,
    pub(crate) registry: RegistryHandle,
    pub(crate) metadata: MetadataCache,
    pub(crate) endpoints: Arc<EndpointCache>,
    pub(crate) forwarder: Forwarder,
    /// The HTTP instances serving in this process, for in-process forwarding.
    pub(crate) local: Arc<LocalInstances>,
    pub(crate) status: StatusWriter,
    pub(crate) metrics: TaskMetrics,
    /// Where instances keep their state, if this node keeps any.
    pub(crate) states: Option<Arc<LazyNodeStates>>,
    /// The instances' distributed caches (`ctx.cache`).
    pub(crate) caches: Arc<CacheHost>,
    /// Flows between groups (`ctx.emit`, `ctx.consume`).
    pub(crate) flows: Arc<FlowHost>,
    /// Where the state of groups with `state = { changelog = true }` is logged (Kafka).
    pub(crate) changelog: Option<Arc<dyn super::changelog::StateChangelog>>,
    /// What HTTP instances' servers let clients do.
    pub(crate) http_limits: TaskHttpLimits,
}

impl NodeServices {
    /// The services of the node `config` describes.
    pub(crate) fn new(
        config: &super::TaskSupervisorConfig,
        registry: RegistryHandle,
        metrics: TaskMetrics,
    ) -> Self {
        let node = config.node.clone();
        let (http_ip, local_forward) = (config.http_ip, config.local_forward);
        let states = config.states.clone();
        let flow_transport = config.flow_transport.clone();
        let changelog = config.changelog.clone();
        let http_limits = config.http_limits;
        let local = Arc::new(LocalInstances::default());
        let endpoints = Arc::new(EndpointCache::new(registry.clone()));
        let local_node = local_forward.then(|| (node.clone(), local.clone()));
        let flows = FlowHost::with_transport(node.clone(), endpoints.clone(), flow_transport);
        let caches = CacheHost::counted(
            node.clone(),
            endpoints.clone(),
            Some(metrics.cache_gets.clone()),
        );
        NodeServices {
            advertised_host: advertised_host(http_ip),
            forwarder: Forwarder::counted(local_node, &metrics.forwarded),
            local,
            node,
            http_ip,
            metadata: MetadataCache::new(registry.clone()),
            caches,
            flows,
            endpoints,
            status: StatusWriter::start(registry.clone()),
            registry,
            metrics,
            states,
            changelog,
            http_limits,
        }
    }
}

/// The bind IP, or the machine's hostname when bound to the unspecified address.
fn advertised_host(ip: IpAddr) -> String {
    if !ip.is_unspecified() {
        return ip.to_string();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// One instance's runtime: its group's metadata, the node's discovery and forwarding, and its
/// stop flag.
pub(crate) struct InstanceRuntime {
    pub(crate) metadata: Arc<GroupMetadata>,
    pub(crate) services: Arc<NodeServices>,
    pub(crate) stopping: Arc<AtomicBool>,
    /// The instance's (group, index), for its state.
    pub(crate) instance: (String, u32),
}

#[async_trait]
impl TaskRuntime for InstanceRuntime {
    fn state(&self) -> Result<lathe::StateStore, lathe::StateError> {
        let (group, index) = &self.instance;
        match &self.services.states {
            Some(states) => {
                let local = states.instance(group, *index)?;
                match &self.services.changelog {
                    Some(log) if super::changelog::logs_state(&self.services, group) => {
                        Ok(log.wrap(group, *index, local))
                    }
                    _ => Ok(local),
                }
            }
            None => Err(lathe::StateError::Unavailable(format!(
                "node {} keeps no task state",
                self.services.node
            ))),
        }
    }

    async fn emit(
        &self,
        stream: &str,
        key: &str,
        payload: bytes::Bytes,
    ) -> Result<lathe::Delivery, lathe::FlowError> {
        let (group, index) = &self.instance;
        self.services
            .flows
            .emit(lathe::FlowMessage {
                stream: stream.to_string(),
                key: key.to_string(),
                payload,
                from: format!("{group}/{index}"),
                position: None,
            })
            .await
    }

    fn consume(&self, handler: Arc<dyn lathe::FlowHandler>) -> Result<(), lathe::FlowError> {
        let (group, index) = &self.instance;
        self.services
            .flows
            .consume(group, *index, handler, self.stopping.clone())
    }

    fn cache(
        &self,
        name: &str,
        capacity_bytes: usize,
        loader: Arc<dyn lathe::CacheLoader>,
    ) -> Result<lathe::Cache, lathe::CacheError> {
        let (group, index) = &self.instance;
        self.services
            .caches
            .register(group, *index, name, capacity_bytes, loader)
    }

    fn lookup(&self, key: &str) -> Option<serde_json::Value> {
        self.metadata.lookup(key)
    }

    fn metadata_changed(&self) -> watch::Receiver<u64> {
        self.metadata.changed()
    }

    async fn get_ref(&self, group: &str) -> Result<TaskRef, LookupError> {
        self.services.endpoints.get_ref(group).await
    }

    async fn forward(&self, request: Request, target: &TaskRef) -> Response {
        self.services.forwarder.forward(request, target).await
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}

/// Sets the stop flag when dropped: a plain task's thread learns that its actor is gone even
/// when the actor was killed rather than stopped.
pub(crate) struct StopOnDrop(pub(crate) Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}
