//! The registry through the REST API of real nodes: keys, watches, and failures.
//!
//! One test binary for these (they share their set-up), so the workspace links fewer test
//! executables.

mod api;
mod failures;
mod watch;
