//! The agent against real nodes, a real ZooKeeper, HAProxy and Varnish: its config, gossip,
//! polling, templates and actions, and what happens when its registry node dies.
//!
//! One test binary for these (they share their set-up), so the workspace links fewer test
//! executables.

mod config;
mod failover;
mod gossip;
mod haproxy;
mod poll;
mod support;
mod template;
mod varnish;
