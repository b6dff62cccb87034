//! The scheduler: which node runs each task instance.

pub mod actor;
pub mod demand;
pub mod deploy;
pub mod error;
pub mod gate;
pub mod placement;
pub mod rollout;
pub mod settings;
pub mod shift;
pub mod traffic;

pub use error::SchedulerError;
pub use settings::SchedulerSettings;
