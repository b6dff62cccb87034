//! What the agent tells the outside: the status board behind `GET /status`, its Prometheus
//! metrics, and the HTTP server that serves both (and receives gossip).

mod board;
mod metrics;
pub mod server;

pub use board::{now_ms, ActionStatus, Board, RegistryStatus, WatchStatus};
pub use metrics::Metrics;
