//! The node's resource manager: asks a backend (YARN) for more `lathe-node`s when the cluster
//! lacks capacity, and replaces those that die.
//!
//! ```text
//! Scheduler (leader) ──CapacityDemand──> ResourceManagerActor ──Job──> [backend thread]
//!   instances pending:                     plan::decide: request /       YarnBackend: REST calls
//!   every able node full                   release; back-off        <──Outcome── (lathe-resources)
//!                                            │
//!                    /lathe/resources/<backend>/<container>   (records: a new leader adopts them)
//!
//! YARN container ── lathe-node --name yarn-<n> --join <leader> --max-instances N ──> joins the cluster;
//!                   the scheduler places the pending instances on it like on any node
//! ```
//!
//! The actor lives under the node supervisor (`node/resources` in `/v1/tree`) on every node
//! started with a backend (`--yarn-rm`), and acts only while its node is the scheduler leader.
//! Metrics: `lathe_resource_containers{state}`, `lathe_resource_container_ends_total{state}`,
//! `lathe_resource_container_requests_total{outcome}`.

mod actor;
mod metrics;
mod plan;
mod records;
mod template;
mod worker;

pub use actor::{ResourceManagerActor, ResourceManagerArgs, ResourceManagerMsg, TICK};
pub use metrics::ResourceMetrics;
pub use plan::{Sizing, JOIN_DEADLINE};
pub use records::ContainerRecord;
pub use template::{ContainerTemplate, CONTAINER_HOST};
pub use worker::{BackendFactory, Outcome};

/// Everything a resource manager is made of, kept by the node supervisor to start it and to
/// start it again after a crash.
#[derive(Clone)]
pub struct ResourceManagerSpec {
    /// The backend's name (`yarn`): its registry folder, and the prefix of its nodes' names.
    pub backend: &'static str,
    /// Makes the backend (on its own thread).
    pub factory: BackendFactory,
    /// How container nodes are started.
    pub template: ContainerTemplate,
    pub sizing: Sizing,
    pub metrics: ResourceMetrics,
}
