//! Lathe's task-author API: the light crate a task crate depends on.
//!
//! It holds the types every part of Lathe shares — registry keys, entries and changes — and must
//! never pull in RocksDB, librdkafka, ZooKeeper or warp (those live in `store/` and `actors/`).
//!
//! # Layout
//! - [`registry`]: registry paths ([`KeyPath`]), entries, changes and the errors of the registry API.
//! - [`supervision`]: restart policies shared by supervisors.

pub mod registry;
pub mod supervision;

pub use registry::{Change, ChangeOp, Entry, KeyPath, KeyPathError};
