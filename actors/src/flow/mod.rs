//! The node side of flows without Kafka: messages travel as actor messages (see `lathe::flow`).
//!
//! [`FlowHost`] (one per node) follows the deployed topology for which groups consume which
//! stream, keeps the handlers of this node's consuming instances, and runs the node's
//! [`FlowServer`] actor (process group `lathe.flow.<node>`), through which other nodes hand
//! messages to them.
//!
//! With a [`FlowTransport`] (Kafka, given by the node), `emit` and `consume` go through it
//! instead; the topology still says which groups consume which stream.
//!
//! ```text
//! emit(stream, key) ─▶ consuming groups of stream (deployed topology)
//!     └─ per group: instance = ring(live endpoints, key)
//!          ├─ on this node ─▶ its handler
//!          └─ elsewhere ─▶ FlowServer of its node (ractor_cluster call) ─▶ its handler
//!     ◀── Ok once every group's instance returned Ok; else the first group that did not
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use lathe::flow::{Delivery, FlowError, FlowHandler, FlowMessage};
use lathe::topology::Topology;
use lathe::{layout, KeyPath};
use lathe_supervisors::supervised::{factory, spawn_supervised, ChildSpec, SERVER_RESTARTS};
use lathe_supervisors::tree::{ActorKind, TreeScope};
use ractor::{pg, Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};

use crate::cache::ring::Ring;
use crate::cache::Peers;
use crate::registry::RegistryHandle;
use crate::scheduler::deploy::TopologyRecord;
use crate::tasks::mirror::{spawn_mirror, AbortOnDrop};

/// How long a consuming instance on another node may take to take a message.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

fn server_group(node: &str) -> String {
    format!("lathe.flow.{node}")
}

/// A consuming instance's handler, while the instance runs.
struct Consumer {
    handler: Arc<dyn FlowHandler>,
    stopping: Arc<AtomicBool>,
}

/// Flows through an external log (Kafka) instead of actor messages.
#[async_trait::async_trait]
pub trait FlowTransport: Send + Sync + std::fmt::Debug + 'static {
    /// Stores `message` for `groups` (the consuming groups of its stream, never empty); `Ok`
    /// once the log acknowledged it.
    /// `partitions` is the most instances of those groups.
    async fn emit(
        &self,
        message: FlowMessage,
        groups: Vec<String>,
        partitions: u32,
    ) -> Result<Delivery, FlowError>;
    /// Instance `index` of `group` takes its share of its group's input streams with `handler`
    /// until `stopping` is set; `inputs` tells them (and the group's instance count) as the
    /// deployed topology says when asked (empty until it is known).
    fn consume(
        &self,
        group: &str,
        index: u32,
        inputs: Arc<dyn Fn() -> GroupInputs + Send + Sync>,
        handler: Arc<dyn FlowHandler>,
        stopping: Arc<AtomicBool>,
    ) -> Result<(), FlowError>;
}

/// The input streams of a group and how many instances it has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupInputs {
    pub streams: Vec<String>,
    pub instances: u32,
}

/// Flows of one node.
pub struct FlowHost {
    node: String,
    peers: Arc<dyn Peers>,
    transport: Option<Arc<dyn FlowTransport>>,
    /// Stream → the groups consuming it, from the deployed topology.
    consumers: RwLock<HashMap<String, Vec<String>>>,
    /// Group → its instance count, from the deployed topology.
    instances: RwLock<HashMap<String, u32>>,
    /// Groups whose state has a changelog (`state = { changelog = true }`).
    changelogs: RwLock<std::collections::HashSet<String>>,
    handlers: RwLock<HashMap<(String, u32), Consumer>>,
    mirror: Mutex<Option<AbortOnDrop>>,
}

impl FlowHost {
    pub fn new(node: impl Into<String>, peers: Arc<dyn Peers>) -> Arc<FlowHost> {
        FlowHost::with_transport(node, peers, None)
    }

    /// Flows through `transport` (Kafka) when given, else as actor messages.
    pub fn with_transport(
        node: impl Into<String>,
        peers: Arc<dyn Peers>,
        transport: Option<Arc<dyn FlowTransport>>,
    ) -> Arc<FlowHost> {
        Arc::new(FlowHost {
            node: node.into(),
            peers,
            transport,
            consumers: RwLock::default(),
            instances: RwLock::default(),
            changelogs: RwLock::default(),
            handlers: RwLock::default(),
            mirror: Mutex::new(None),
        })
    }

    /// Follows the deployed topology's `flows.inputs` and starts the node's [`FlowServer`], kept
    /// running at `<scope>/flow-server` under `parent`.
    pub async fn start(
        self: &Arc<Self>,
        registry: RegistryHandle,
        scope: &TreeScope,
        parent: Option<ActorCell>,
    ) -> anyhow::Result<()> {
        let key = KeyPath::parse(layout::TOPOLOGY)?;
        let host = Arc::downgrade(self);
        let mirror = spawn_mirror(registry, key.clone(), move |entries| {
            let Some(host) = host.upgrade() else {
                return false;
            };
            if let Some(entry) = entries.get(&key) {
                match serde_json::from_value::<TopologyRecord>(entry.value.clone()) {
                    Ok(record) => host.set_topology(&record.topology),
                    Err(error) => {
                        tracing::warn!(%error,
                            "the deployed topology is unreadable: flows unchanged")
                    }
                }
            }
            true
        });
        *self.mirror.lock().unwrap_or_else(|e| e.into_inner()) = Some(mirror);
        let spec = ChildSpec {
            scope: scope.clone(),
            name: "flow-server".to_string(),
            kind: ActorKind::FlowServer,
            limits: SERVER_RESTARTS,
            factory: factory(FlowServer, self.clone()),
        };
        spawn_supervised(spec, parent).await?;
        Ok(())
    }

    /// Which groups consume which stream, their instance counts, which log their state.
    pub fn set_topology(&self, topology: &Topology) {
        let mut consumers: HashMap<String, Vec<String>> = HashMap::new();
        let mut instances = HashMap::new();
        for group in &topology.groups {
            instances.insert(group.name.clone(), group.tasks);
            for stream in &group.flows.inputs {
                consumers
                    .entry(stream.clone())
                    .or_default()
                    .push(group.name.clone());
            }
        }
        *self.consumers.write().unwrap_or_else(|e| e.into_inner()) = consumers;
        *self.instances.write().unwrap_or_else(|e| e.into_inner()) = instances;
        *self.changelogs.write().unwrap_or_else(|e| e.into_inner()) = topology
            .groups
            .iter()
            .filter(|g| g.state.changelog)
            .map(|g| g.name.clone())
            .collect();
    }

    /// Instance `index` of `group` takes its share of its group's input streams with `handler`
    /// until `stopping` is set (a restarted instance replaces its previous handler).
    pub fn consume(
        self: &Arc<Self>,
        group: &str,
        index: u32,
        handler: Arc<dyn FlowHandler>,
        stopping: Arc<AtomicBool>,
    ) -> Result<(), FlowError> {
        if let Some(transport) = &self.transport {
            let host = Arc::downgrade(self);
            let name = group.to_string();
            let inputs = Arc::new(move || {
                host.upgrade()
                    .map(|host| host.inputs_of(&name))
                    .unwrap_or_default()
            });
            return transport.consume(group, index, inputs, handler, stopping);
        }
        let mut handlers = self.handlers.write().unwrap_or_else(|e| e.into_inner());
        handlers.retain(|_, consumer| !consumer.stopping.load(Ordering::Acquire));
        handlers.insert((group.to_string(), index), Consumer { handler, stopping });
        Ok(())
    }

    /// The streams `group` consumes and its instance count, per the deployed topology.
    pub fn inputs_of(&self, group: &str) -> GroupInputs {
        let consumers = self.consumers.read().unwrap_or_else(|e| e.into_inner());
        let mut streams: Vec<String> = consumers
            .iter()
            .filter(|(_, groups)| groups.iter().any(|g| g == group))
            .map(|(stream, _)| stream.clone())
            .collect();
        streams.sort();
        let instances = self.instances_of(group);
        GroupInputs { streams, instances }
    }

    /// Whether the deployed topology has `group`.
    pub fn knows(&self, group: &str) -> bool {
        self.instances_of(group) > 0
    }

    /// Whether the deployed topology gives `group` a state changelog.
    pub fn changelog(&self, group: &str) -> bool {
        let changelogs = self.changelogs.read().unwrap_or_else(|e| e.into_inner());
        changelogs.contains(group)
    }

    fn instances_of(&self, group: &str) -> u32 {
        let instances = self.instances.read().unwrap_or_else(|e| e.into_inner());
        instances.get(group).copied().unwrap_or(0)
    }

    /// Sends `message` to one instance of every group consuming its stream.
    pub async fn emit(&self, message: FlowMessage) -> Result<Delivery, FlowError> {
        let groups = self
            .consumers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&message.stream)
            .cloned()
            .unwrap_or_default();
        if groups.is_empty() {
            return Err(FlowError::NoConsumer {
                stream: message.stream,
            });
        }
        if let Some(transport) = &self.transport {
            let partitions = groups.iter().map(|g| self.instances_of(g)).max();
            return transport
                .emit(message, groups, partitions.unwrap_or(1).max(1))
                .await;
        }
        let deliveries = groups
            .iter()
            .map(|group| self.deliver_to_group(group, &message));
        let mut delivery = Delivery::default();
        for result in futures::future::join_all(deliveries).await {
            delivery.taken_by.push(result?);
        }
        Ok(delivery)
    }

    /// Hands `message` to the instance of `group` its key maps to; `<group>/<index>` of it.
    async fn deliver_to_group(
        &self,
        group: &str,
        message: &FlowMessage,
    ) -> Result<String, FlowError> {
        let not_taken = |reason: String| FlowError::NotTaken {
            group: group.to_string(),
            reason,
        };
        let live = self
            .peers
            .live(group)
            .await
            .map_err(|e| not_taken(e.to_string()))?;
        let ring = Ring::new(group, live.instances.iter().map(|e| e.index));
        let owner = ring
            .owner(&message.key)
            .and_then(|index| live.instances.iter().find(|e| e.index == index))
            .ok_or_else(|| not_taken("it has no live instance".into()))?;
        let request = DeliverRequest {
            group: group.to_string(),
            index: owner.index,
            stream: message.stream.clone(),
            key: message.key.clone(),
            payload: message.payload.to_vec(),
            from: message.from.clone(),
        };
        let taken_by = format!("{group}/{}", owner.index);
        let result = if owner.node == self.node {
            self.take(request).await
        } else {
            remote(&owner.node, request).await
        };
        result
            .map(|()| taken_by)
            .map_err(|e| not_taken(e.to_string()))
    }

    /// Gives a message to this node's consuming instance.
    async fn take(&self, request: DeliverRequest) -> Result<(), DeliverError> {
        let handler = {
            let handlers = self.handlers.read().unwrap_or_else(|e| e.into_inner());
            handlers
                .get(&(request.group.clone(), request.index))
                .filter(|c| !c.stopping.load(Ordering::Acquire))
                .map(|c| c.handler.clone())
        };
        let handler = handler.ok_or_else(|| DeliverError::NotConsuming {
            group: request.group.clone(),
            index: request.index,
            node: self.node.clone(),
        })?;
        handler
            .handle(FlowMessage {
                stream: request.stream,
                key: request.key,
                payload: Bytes::from(request.payload),
                from: request.from,
                position: None,
            })
            .await
            .map_err(|reason| DeliverError::Refused {
                group: request.group,
                index: request.index,
                reason,
            })
    }
}

/// Why a message was not taken by the consuming instance it was handed to. It crosses to the
/// sending node as text ([`FlowRequest::Deliver`]'s reply), which comes back as
/// [`DeliverError::Remote`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeliverError {
    /// The instance is not consuming on its node (not started, stopping, or never consumed).
    #[error(
        "{group}/{index} on node {node} does not consume (not started, stopped, or its task \
         never called ctx.consume)"
    )]
    NotConsuming {
        group: String,
        index: u32,
        node: String,
    },
    /// The instance's handler returned an error: its text.
    #[error("{group}/{index} refused it: {reason}")]
    Refused {
        group: String,
        index: u32,
        reason: String,
    },
    /// The node has no flow server in the cluster's process groups.
    #[error("node {0} takes no flows (not reachable)")]
    NoServer(String),
    /// The node did not answer within [`DELIVERY_TIMEOUT`].
    #[error("node {0} did not answer in {DELIVERY_TIMEOUT:?}")]
    Timeout(String),
    /// The node's flow server dropped the call without answering.
    #[error("node {0} dropped the message")]
    Dropped(String),
    /// The call could not be sent to the node's flow server.
    #[error("cannot reach node {node}: {error}")]
    Unreachable {
        node: String,
        error: ractor::MessagingErr<()>,
    },
    /// The other node answered that its instance did not take it: the text it sent.
    #[error("{0}")]
    Remote(String),
}

async fn remote(node: &str, request: DeliverRequest) -> Result<(), DeliverError> {
    let server = pg::get_members(&server_group(node))
        .into_iter()
        .next()
        .ok_or_else(|| DeliverError::NoServer(node.to_string()))?;
    let server: ActorRef<FlowRequest> = server.into();
    match server
        .call(
            |reply| FlowRequest::Deliver(request, reply),
            Some(DELIVERY_TIMEOUT),
        )
        .await
    {
        Ok(ractor::rpc::CallResult::Success(answer)) => answer.map_err(DeliverError::Remote),
        Ok(ractor::rpc::CallResult::Timeout) => Err(DeliverError::Timeout(node.to_string())),
        Ok(ractor::rpc::CallResult::SenderError) => Err(DeliverError::Dropped(node.to_string())),
        Err(error) => Err(DeliverError::Unreachable {
            node: node.to_string(),
            error: error.map(|_| ()),
        }),
    }
}

/// One message for one consuming instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliverRequest {
    pub group: String,
    pub index: u32,
    pub stream: String,
    pub key: String,
    pub payload: Vec<u8>,
    pub from: String,
}

/// What other nodes send this node's flow server. The reply's error is text: the wire protocol
/// between nodes.
#[derive(RactorClusterMessage)]
pub enum FlowRequest {
    #[rpc]
    Deliver(DeliverRequest, RpcReplyPort<Result<(), String>>),
}

/// Hands messages from other nodes to this node's consuming instances.
#[derive(Clone)]
pub struct FlowServer;

impl Actor for FlowServer {
    type Msg = FlowRequest;
    type State = Arc<FlowHost>;
    type Arguments = Arc<FlowHost>;

    async fn pre_start(
        &self,
        myself: ActorRef<FlowRequest>,
        host: Arc<FlowHost>,
    ) -> Result<Arc<FlowHost>, ActorProcessingErr> {
        pg::join(server_group(&host.node), vec![myself.get_cell()]);
        Ok(host)
    }

    async fn handle(
        &self,
        _myself: ActorRef<FlowRequest>,
        request: FlowRequest,
        host: &mut Arc<FlowHost>,
    ) -> Result<(), ActorProcessingErr> {
        let host = host.clone();
        // A handler may take a while: never in the actor's handler.
        tokio::spawn(async move {
            match request {
                FlowRequest::Deliver(request, reply) => {
                    let _ = reply.send(host.take(request).await.map_err(|e| e.to_string()));
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests;
