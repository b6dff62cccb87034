//! Lathe's actors: the metadata registry (feed and shards), cluster membership, the task runtime
//! (task supervisor and task instances), the REST server, and the supervision tree they report to.
//!
//! Each actor lives in its own file beside its message enum; callers use the typed handles
//! ([`registry::RegistryHandle`], [`membership::MembershipHandle`]) rather than messages.

pub mod acl;
pub mod cache;
pub mod flow;
mod follow;
pub mod http;
pub mod membership;
mod panics;
pub mod registry;
pub mod resources;
pub mod scheduler;
pub mod tasks;
/// The supervision tree lives in `lathe-supervisors`, the layer below the actors.
pub use lathe_supervisors::tree;
