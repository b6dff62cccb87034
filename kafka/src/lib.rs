//! Lathe over Kafka (rdkafka): flows as Kafka topics when `lathe-node --kafka` is given. The
//! light `lathe` crate does not depend on this crate; the node links it.
//!
//! # Layout
//! - [`settings`]: `--kafka` brokers and `--kafka-option` properties, checked before binding.
//! - [`client`]: producer, consumers, topics created on demand, the reachability check.
//! - [`flows`]: [`KafkaFlows`], the node's `FlowTransport` over Kafka.
//! - [`metrics`]: produce/consume counters and consumer lag.
//! - [`changelog`]: [`KafkaChangelog`], state written through to a compacted topic per group and
//!   restored from it before an instance starts.

pub mod changelog;
pub mod client;
pub mod flows;
pub mod metrics;
pub mod settings;

pub use changelog::KafkaChangelog;
pub use flows::KafkaFlows;
pub use settings::{KafkaSettings, SettingsError};
