//! The scheduler: which node runs each task instance.

pub mod actor;
pub mod apply;
pub mod demand;
pub mod deploy;
pub mod error;
pub mod gate;
pub mod metrics;
pub mod placement;
pub mod plan;
pub mod rollout;
pub mod settings;
pub mod shift;
pub mod traffic;
pub mod view;

pub use error::SchedulerError;
pub use metrics::SchedulerMetrics;
pub use settings::SchedulerSettings;
