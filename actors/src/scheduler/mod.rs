//! The scheduler: which node runs each task instance.

pub mod actor;
pub mod demand;
pub mod deploy;
pub mod gate;
pub mod placement;
pub mod rollout;
pub mod shift;
pub mod traffic;
