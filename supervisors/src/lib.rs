//! Lathe's supervision trees. The root is [`node::NodeSupervisor`], one per `lathe-node` process:
//!
//! ```text
//! NodeSupervisor             node                     restarts scheduler, resources, tasks; else fails
//! ├── Membership             node/membership          NodeServer, heartbeats, ZooKeeper
//! ├── RegistrySupervisor     node/registry            rest-for-one from the feed
//! │   ├── RegistryFeed       node/registry/feed
//! │   └── RegistryShard × k  node/registry/shard-N    one-for-one, re-attaches to the feed
//! ├── Scheduler              node/scheduler           places instances (leader only)
//! ├── ResourceManagerActor   node/resources           asks YARN for nodes (leader only; --yarn-rm)
//! ├── TaskSupervisor         node/tasks               runs this node's assignments
//! │   └── TaskActor × n      node/tasks/<group>/<i>   the group's topology `restart` policy
//! └── HTTP server            (not an actor)           REST API, /v1/tree, /metrics
//! ```
//!
//! The second column is each actor's path in the node's supervision tree (`GET /v1/tree`, the
//! `lathe_actor_*` metrics, `POST /v1/actors/kill` with `--enable-chaos`); the actors live in
//! `lathe-actors` (`membership`, `registry`, `scheduler`, `tasks`, `http`). A subsystem's own
//! supervisor lives beside its actors; this crate holds the root and decides what a failed
//! subsystem means for the node: one that rebuilds its state from the registry (the scheduler,
//! the resource manager, the task supervisor) is restarted, anything else fails the node, whose process then exits
//! non-zero so that its resource manager (`lathe up`, YARN) replaces it.

pub mod node;
mod startup;
