//! Following the registry: one session at a time with one node (SSE, or blocking queries as the
//! fallback), the events it carries, and the `RegistryWatcher` actor that fails over between nodes
//! and routes events to the watch actors.

pub mod route;
pub mod session;
pub mod sse;
mod watcher;

#[cfg(test)]
mod tests;

pub use route::{common_prefix, Route};
pub use sse::StreamEvent;
pub use watcher::{RegistryWatcher, WatcherArgs, WatcherMsg};
