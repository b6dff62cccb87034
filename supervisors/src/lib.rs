//! Lathe's supervision layer, below the actors: what every supervisor of a node shares.
//!
//! - [`tree`]: the node's live supervision tree (`GET /v1/tree`, the `lathe_actor_*` metrics, the
//!   failure drills of `POST /v1/actors/kill`).
//! - [`policy`]: one restart policy — intensity (at most R restarts within T, else give up) and
//!   exponential back-off — for task instances, subsystems and the agent's actors alike.
//! - [`supervised`]: `spawn_supervised`, a long-lived actor kept running by a keeper of its own:
//!   linked, in the tree, restarted by the policy and counted.
//!
//! The supervisors themselves live beside what they supervise: the node's root in `lathe-node`,
//! the registry's and the task supervisor in `lathe-actors`, the agent's in `lathe-agent`.

pub mod policy;
pub mod supervised;
pub mod tree;
