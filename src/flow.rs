//! Asynchronous flows between functional groups: `ctx.emit(stream, key, payload)` and
//! `ctx.consume(handler)`.
//!
//! A group consumes the streams its topology names (`flows = { inputs = ["clicks"] }`). A message
//! emitted to a stream goes to one instance of every group that consumes it, the same instance
//! for the same key as long as the group's instances stay (consistent hashing over the live
//! instances, as for the cache), so an instance can keep per-key state. Without Kafka, messages
//! travel as actor messages: `emit` returns once every consuming instance's handler has taken
//! the message (returned `Ok`), and an error names the group that did not. Nothing is stored on
//! the way: a message whose `emit` failed may have reached some groups, and the producer decides
//! whether to send it again (at-least-once when it retries). A plain, blocking task consumes by
//! handing messages from its handler to its own thread (a channel).
//!
//! With Kafka (`lathe-node --kafka`), each stream is a topic and each consuming group a consumer
//! group: `emit` returns once Kafka acknowledged the message (its [`FlowPosition`] in
//! [`Delivery::position`]), and each consuming group's instances take their partitions' messages
//! in order, at least once: a message is taken again after a crash or a partition move until
//! its handler returned `Ok`. A handler made idempotent by the message's
//! [`FlowMessage::position`] (kept in its state) counts every message exactly once.

use async_trait::async_trait;
use bytes::Bytes;

/// The longest stream name.
pub const MAX_STREAM_BYTES: usize = 128;
/// The longest key.
pub const MAX_KEY_BYTES: usize = 1024;
/// The largest payload.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// One message of a stream, as its consumer receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowMessage {
    pub stream: String,
    pub key: String,
    pub payload: Bytes,
    /// `<group>/<index>` of the instance that emitted it.
    pub from: String,
    /// Where the message is in its stream, when the stream is a Kafka topic.
    pub position: Option<FlowPosition>,
}

/// A message's place in a Kafka-backed stream: partition and offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowPosition {
    pub partition: i32,
    pub offset: i64,
}

/// What a consuming instance does with each message of its group's input streams.
#[async_trait]
pub trait FlowHandler: Send + Sync + 'static {
    /// `Ok` acknowledges the message; an `Err` is returned to the producer's `emit`.
    async fn handle(&self, message: FlowMessage) -> Result<(), String>;
}

/// Which instances took an emitted message: `<group>/<index>`, one per consuming group. With
/// Kafka, the consuming groups (they take it later) and where Kafka stored it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    pub taken_by: Vec<String>,
    pub position: Option<FlowPosition>,
}

/// Why a message was not delivered to every consuming group.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    #[error("no flows: {0}")]
    Unavailable(String),
    #[error("stream name {0:?} must be 1 to 128 characters of A-Z a-z 0-9 . _ -")]
    BadStream(String),
    #[error("key of {len} bytes is over the {MAX_KEY_BYTES}-byte limit")]
    KeyTooLarge { len: usize },
    #[error("payload of {len} bytes is over the {MAX_PAYLOAD_BYTES}-byte limit")]
    PayloadTooLarge { len: usize },
    /// The deployed topology has no group with the stream among its `flows.inputs`.
    #[error(
        "no group consumes stream {stream:?} (add it to a group's flows = {{ inputs = [...] }})"
    )]
    NoConsumer { stream: String },
    /// A consuming group could not take it: no live instance, unreachable, or its handler
    /// refused it.
    #[error("group {group} did not take the message: {reason}")]
    NotTaken { group: String, reason: String },
    /// Kafka did not acknowledge the message (brokers down, timeout, refused). Like any Kafka
    /// producer error after a timeout, it may still have been written: re-emitting relies on
    /// idempotent handling.
    #[error("kafka did not acknowledge the message to stream {stream:?}: {reason}")]
    NotAcknowledged { stream: String, reason: String },
}

/// Checks an emitted message's stream, key and payload.
pub fn check(stream: &str, key: &str, payload: &[u8]) -> Result<(), FlowError> {
    if !is_stream_name(stream) {
        return Err(FlowError::BadStream(stream.to_string()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(FlowError::KeyTooLarge { len: key.len() });
    }
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(FlowError::PayloadTooLarge { len: payload.len() });
    }
    Ok(())
}

/// A stream name: 1 to 128 characters of `A-Z a-z 0-9 . _ -`.
pub fn is_stream_name(name: &str) -> bool {
    (1..=MAX_STREAM_BYTES).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_keys_and_payloads_are_checked() {
        assert!(check("clicks", "user-1", b"{}").is_ok());
        assert!(
            check("clicks.v2", "", b"").is_ok(),
            "an empty key is one key"
        );
        for bad in ["", "a b", "a/b", &"s".repeat(129)] {
            assert_eq!(
                check(bad, "k", b""),
                Err(FlowError::BadStream(bad.to_string()))
            );
        }
        assert!(matches!(
            check("s", &"k".repeat(1025), b""),
            Err(FlowError::KeyTooLarge { .. })
        ));
        assert!(matches!(
            check("s", "k", &vec![0; MAX_PAYLOAD_BYTES + 1]),
            Err(FlowError::PayloadTooLarge { .. })
        ));
    }
}
