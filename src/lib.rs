//! Lathe's task-author API: the light crate a task crate depends on.
//!
//! It holds the types every part of Lathe shares — registry keys, entries and changes — and must
//! never pull in RocksDB, librdkafka, ZooKeeper or warp (those live in `store/` and `actors/`).
//!
//! # Layout
//! - [`registry`]: registry paths ([`KeyPath`]), entries, changes and the errors of the registry
//!   API.
//! - [`task`]: the plain [`Task`] (may block; runs on its own thread).
//! - [`http`]: [`HttpTask`], requests, responses and the `X-Lathe-*` headers.
//! - [`context`]: [`TaskContext`]: identity, group metadata, service discovery, forwarding.
//! - [`catalog`]: task types (crate, version, task path) and the [`http_task!`] / [`task!`] macros.
//! - [`layout`]: where Lathe keeps its own state in the registry, and those records.
//! - [`state`]: an instance's persistent state ([`TaskContext::state`]).
//! - [`cache`]: a distributed cache over a group's instances ([`TaskContext::cache`]).
//! - [`flow`]: asynchronous flows between groups ([`TaskContext::emit`], [`TaskContext::consume`]).
//! - [`topology`]: the topology TOML, parsed and validated into groups, and diffs between two.

pub mod cache;
pub mod catalog;
pub mod context;
pub mod flow;
pub mod http;
pub mod layout;
pub mod registry;
pub mod state;
pub mod task;
pub mod topology;

/// Re-exported so task crates can write `#[lathe::async_trait]` on their `HttpTask` impls.
pub use async_trait::async_trait;
pub use cache::{Cache, CacheError, CacheLoader};
pub use catalog::{Catalog, TaskDescriptor, TaskType};
pub use context::{Endpoint, LookupError, TaskContext, TaskIdentity, TaskRef, TaskRuntime};
pub use flow::{Delivery, FlowError, FlowHandler, FlowMessage, FlowPosition};
pub use http::{HttpTask, Request, RequestExt, Response};
pub use registry::{Change, ChangeOp, Entry, KeyPath, KeyPathError};
pub use state::{StateError, StateStore};
pub use task::{Task, TaskError, TaskResult};
