//! Roll-outs and traffic shifts on real nodes: slow roll-outs, metric gates, and shifts of a load
//! balancer's split.
//!
//! One test binary for these (they share their set-up), so the workspace links fewer test
//! executables.

mod gates;
mod shift;
mod slow;
