//! [`TaskContext`]: what a running instance knows and can ask of Lathe.
//!
//! Its identity (group, index, node, task type); its group's metadata from the registry
//! (`ctx.lookup("backend_distribution")`), kept current by a registry subscription and announced
//! through [`TaskContext::metadata_changed`]; live instances of any group (`ctx.get_ref(group)`),
//! served from a node-local cache that is filled on a miss and refreshed by subscriptions;
//! forwarding of HTTP requests; and whether the instance is being stopped.
//!
//! The context is implemented by the node (`TaskRuntime`), so this crate stays free of the HTTP
//! client, the registry and the actor system.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::catalog::TaskType;
use crate::http::{Request, Response};

/// Who this instance is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskIdentity {
    /// The functional group's name, its TOML table path: `task.http.lb`.
    pub group: String,
    /// This instance's index in the group, `0..tasks`.
    pub index: u32,
    /// The node running it.
    pub node: String,
    pub task_type: TaskType,
}

/// One live instance of a group, as service discovery knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub group: String,
    pub index: u32,
    pub node: String,
    /// `HOST:PORT` of an HTTP instance.
    pub http: Option<String>,
    /// The crate version of the instance.
    pub version: String,
}

/// The live instances of one group. Cheap to clone (shared, immutable), since a load balancer
/// asks for one on every request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRef {
    pub group: Arc<str>,
    pub instances: Arc<[Endpoint]>,
}

impl TaskRef {
    pub fn new(group: impl Into<Arc<str>>, instances: Vec<Endpoint>) -> Self {
        TaskRef {
            group: group.into(),
            instances: instances.into(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }
}

/// Why a lookup failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("no group named {0}")]
    NoSuchGroup(String),
    #[error("metadata key {key} of group {group} is not a {expected}: {reason}")]
    WrongType {
        group: String,
        key: String,
        expected: &'static str,
        reason: String,
    },
    #[error("registry unavailable: {0}")]
    Unavailable(String),
}

/// What the node provides behind a [`TaskContext`].
#[async_trait]
pub trait TaskRuntime: Send + Sync + 'static {
    /// The group's metadata key, as JSON.
    fn lookup(&self, key: &str) -> Option<serde_json::Value>;
    /// Bumps whenever the group's metadata changes.
    fn metadata_changed(&self) -> watch::Receiver<u64>;
    /// The live instances of `group` (a name like `task.http.frontpage.v4-2-1`).
    async fn get_ref(&self, group: &str) -> Result<TaskRef, LookupError>;
    /// Sends `request` to one live instance of `target`.
    async fn forward(&self, request: Request, target: &TaskRef) -> Response;
    /// True once the instance is asked to stop.
    fn is_stopping(&self) -> bool;
    /// The instance's persistent state.
    fn state(&self) -> Result<crate::StateStore, crate::StateError> {
        Err(crate::StateError::Unavailable(
            "this runtime keeps no state".into(),
        ))
    }
    /// Sends a message to one instance of every group consuming `stream`.
    async fn emit(
        &self,
        _stream: &str,
        _key: &str,
        _payload: bytes::Bytes,
    ) -> Result<crate::Delivery, crate::FlowError> {
        Err(crate::FlowError::Unavailable(
            "this runtime has no flows".into(),
        ))
    }
    /// Hands this instance's share of its group's input streams to `handler`.
    fn consume(&self, _handler: Arc<dyn crate::FlowHandler>) -> Result<(), crate::FlowError> {
        Err(crate::FlowError::Unavailable(
            "this runtime has no flows".into(),
        ))
    }
    /// The instance's handle on the group's cache `name`.
    fn cache(
        &self,
        _name: &str,
        _capacity_bytes: usize,
        _loader: Arc<dyn crate::CacheLoader>,
    ) -> Result<crate::Cache, crate::CacheError> {
        Err(crate::CacheError::Unavailable(
            "this runtime has no cache".into(),
        ))
    }
}

/// The context handed to every task method.
#[derive(Clone)]
pub struct TaskContext {
    identity: Arc<TaskIdentity>,
    runtime: Arc<dyn TaskRuntime>,
}

impl TaskContext {
    pub fn new(identity: TaskIdentity, runtime: Arc<dyn TaskRuntime>) -> Self {
        TaskContext {
            identity: Arc::new(identity),
            runtime,
        }
    }

    pub fn identity(&self) -> &TaskIdentity {
        &self.identity
    }

    /// The group's metadata key as JSON (`None` when absent).
    pub fn lookup_value(&self, key: &str) -> Option<serde_json::Value> {
        self.runtime.lookup(key)
    }

    /// The group's metadata key as a `T` (`None` when absent).
    pub fn lookup<T: DeserializeOwned>(&self, key: &str) -> Option<Result<T, LookupError>> {
        let value = self.runtime.lookup(key)?;
        Some(
            serde_json::from_value(value).map_err(|e| LookupError::WrongType {
                group: self.identity.group.clone(),
                key: key.to_string(),
                expected: std::any::type_name::<T>(),
                reason: e.to_string(),
            }),
        )
    }

    /// A receiver that changes whenever the group's metadata changes.
    pub fn metadata_changed(&self) -> watch::Receiver<u64> {
        self.runtime.metadata_changed()
    }

    /// The live instances of `group`.
    pub async fn get_ref(&self, group: &str) -> Result<TaskRef, LookupError> {
        self.runtime.get_ref(group).await
    }

    /// Forwards `request` to one live instance of `target` and returns its response (502 when
    /// no instance answers).
    pub async fn forward(&self, request: Request, target: &TaskRef) -> Response {
        self.runtime.forward(request, target).await
    }

    /// True once Lathe asks the instance to stop.
    pub fn is_stopping(&self) -> bool {
        self.runtime.is_stopping()
    }

    /// This instance's handle on its group's distributed cache `name` (see [`crate::cache`]),
    /// keeping at most `capacity_bytes` of values here. Create it once (in `start`) and keep it.
    pub fn cache(
        &self,
        name: &str,
        capacity_bytes: usize,
        loader: Arc<dyn crate::CacheLoader>,
    ) -> Result<crate::Cache, crate::CacheError> {
        self.runtime.cache(name, capacity_bytes, loader)
    }

    /// Sends `payload` under `key` to one instance of every group that consumes `stream` (see
    /// [`crate::flow`]); returns once each has taken it.
    pub async fn emit(
        &self,
        stream: &str,
        key: &str,
        payload: impl Into<bytes::Bytes>,
    ) -> Result<crate::Delivery, crate::FlowError> {
        let payload = payload.into();
        crate::flow::check(stream, key, &payload)?;
        self.runtime.emit(stream, key, payload).await
    }

    /// Hands the messages of this instance's share of its group's input streams
    /// (`flows = { inputs = [...] }`) to `handler`, from now until the instance stops. Call it
    /// in `start`.
    pub fn consume(&self, handler: Arc<dyn crate::FlowHandler>) -> Result<(), crate::FlowError> {
        self.runtime.consume(handler)
    }

    /// This instance's persistent state, kept by its node (see [`crate::state`]).
    pub fn state(&self) -> Result<crate::StateStore, crate::StateError> {
        self.runtime.state()
    }
}

impl fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskContext")
            .field("identity", &self.identity)
            .finish()
    }
}
