//! The embedded registry shared over the cluster, for clusters without ZooKeeper.
//!
//! The founding node keeps the registry in its embedded RocksDB store and runs a [`StoreServer`];
//! every node that `--join`s it uses a [`RemoteStore`], which implements the same `Store` trait
//! over actor messages, so the rest of the registry (feed, shards, REST) is the same in both modes.
//!
//! ```text
//! founding node                                  joined node
//! EmbeddedStore ◀── StoreServer ◀──RPC── RemoteStore ◀── RegistryFeed/Shards
//!                       └──── pushes every change ──▶ StoreFollower ──▶ RemoteStore events
//! ```
//!
//! When the founding node is down, joined nodes keep serving reads from their replicas and answer
//! writes with 503; when it is back (same `--bind`, same `--data-dir`), they re-sync from a
//! snapshot and carry on, so watchers see every change.

mod follower;
mod server;

pub use follower::RemoteStore;
pub use server::start_store_server;

/// The process group of the founding node's store server.
pub const STORE_SERVER_GROUP: &str = "lathe.registry.store";
/// The process group of the followers the server pushes changes to.
pub const FOLLOWER_GROUP: &str = "lathe.registry.followers";
