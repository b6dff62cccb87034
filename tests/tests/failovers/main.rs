//! Failover with real processes: a SIGKILLed node's instances, a SIGKILLed leader, and a node cut
//! off from ZooKeeper that fences itself.
//!
//! One test binary for these (they share their set-up), so the workspace links fewer test
//! executables.

mod fencing;
mod leader;
mod nodes;
