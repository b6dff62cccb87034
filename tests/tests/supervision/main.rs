//! Supervision on real nodes: every actor kind killed and restarted, the registry's actors,
//! and the tree `/v1/tree` shows.
//!
//! One test binary for these (they share their set-up), so the workspace links fewer test
//! executables.

mod drills;
mod registry;
mod tree;
