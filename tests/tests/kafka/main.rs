//! Flows and task state over a real Kafka-protocol broker process.
//!
//! One test binary for these (they share their set-up), so the workspace links fewer test
//! executables.

mod broker;
mod flows;
mod state;
mod support;
