//! Lathe's supervision trees. The root is [`node::NodeSupervisor`], one per `lathe-node` process:
//!
//! ```text
//! NodeSupervisor
//! ├── Membership            (actors/membership) NodeServer, heartbeats, ZooKeeper member node
//! ├── RegistrySupervisor    (actors/registry)   RegistryFeed + RegistryShard × k
//! ├── Scheduler             (actors/scheduler)  places instances; acts only on the leader
//! ├── TaskSupervisor        (actors/tasks)      reconciles this node's assignments
//! │   └── TaskActor × n                          one per instance (HttpTask or Task)
//! └── HTTP server           (actors/http)       REST API, /metrics
//! ```
//!
//! A subsystem's own supervisor lives beside its actors; this crate holds the root and decides
//! what a failed subsystem means for the node: it fails the node, whose process then exits
//! non-zero so that its resource manager (`lathe up`, YARN) replaces it.

pub mod node;
