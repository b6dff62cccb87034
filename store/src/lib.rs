//! Registry storage backends behind one trait: ZooKeeper ([`zk::ZkStore`]) for clusters and an
//! embedded RocksDB store ([`embedded::EmbeddedStore`]) for one-machine use.
//!
//! A store is the source of truth; the registry actors (in `actors/`) keep in-memory replicas and
//! fan changes out. The contract every backend keeps:
//!
//! - **One global index.** Every change (put or delete) gets a version from one monotonically
//!   increasing index; in ZooKeeper mode it is the zxid of the write.
//! - **Tombstones.** A delete leaves a tombstone (an entry with `value: None` and the version of
//!   the delete), so replicas that re-list can tell "deleted at v" from "never existed". Backends
//!   may garbage-collect tombstones older than [`TOMBSTONE_TTL`].
//! - **CAS.** `cas = Some(0)` means "create only" (fails if the key holds a value; a tombstone
//!   holds none); `cas = Some(v)` means "only if the key holds a value of version v"; a mismatch
//!   is [`StoreError::CasMismatch`] (with `found: 0` when the key holds no value) and changes
//!   nothing.
//! - **Ordered events.** Every stream from [`Store::events`] opens with
//!   [`StoreEvent::Resync`]`(snapshot)` and then carries [`StoreEvent::Changes`]: every change
//!   made by anyone (this process or others) once it is durable, in version order. After a
//!   `Resync` whose snapshot has index `I`, every following entry has a version above `I`, and
//!   versions never go down: they strictly increase from one write to the next, and the entries
//!   of one atomic write (a recursive delete) share its version and arrive in the same batch.
//!   Whenever a backend cannot vouch for a gap (reconnect, new ZooKeeper session, a consumer too
//!   slow to keep up with its channel) it sends a new `Resync(snapshot)`: the consumer replaces
//!   its state with the snapshot (diffing if it wants to tell its own subscribers what changed).
//!   Events for the same key may be coalesced (only the newest value of a burst delivered), never
//!   reordered.
//!
//! # Layout
//! - [`zk`]: [`zk::ZkStore`], znodes under `{chroot}/lathe/registry/kv`, one persistent
//!   recursive watch per store feeding an ordered event pipeline.
//! - [`embedded`]: [`embedded::EmbeddedStore`], RocksDB under `--data-dir`, synced batches.
//! - `hub`: the fan-out both share (a consumer that falls behind is re-synced, never waited for).

use std::time::Duration;

use async_trait::async_trait;
use lathe::KeyPath;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// The Store contract as checks every backend's tests run (feature `contract`).
#[cfg(any(test, feature = "contract"))]
pub mod contract;
pub mod embedded;
mod hub;
pub mod state;
pub mod zk;

/// How long a tombstone is kept before a backend may remove it.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(600);

/// The largest value (serialized JSON) a store accepts, in bytes.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1024 * 1024;

/// How many events a consumer's channel holds before the consumer counts as fallen behind (it
/// then gets a fresh `Resync` once it has room again).
pub const EVENT_CHANNEL_CAPACITY: usize = 1024;

/// Serializes a value for storage, refusing values over [`DEFAULT_MAX_VALUE_BYTES`].
pub(crate) fn encode_value(value: &serde_json::Value) -> Result<Vec<u8>, StoreError> {
    let bytes = serde_json::to_vec(value)
        .map_err(|err| StoreError::Internal(format!("failed to serialize a value: {err}")))?;
    if bytes.len() > DEFAULT_MAX_VALUE_BYTES {
        return Err(StoreError::TooLarge {
            size: bytes.len(),
            limit: DEFAULT_MAX_VALUE_BYTES,
        });
    }
    Ok(bytes)
}

/// One key as a store holds it: a live value or a tombstone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEntry {
    pub key: KeyPath,
    /// `None` for a tombstone (the key was deleted at `version`).
    pub value: Option<serde_json::Value>,
    pub version: u64,
}

/// Every entry (live and tombstones) and the index the listing is consistent with: no change with
/// a version above `index` is reflected, every change at or below it is (except tombstones
/// garbage-collected after [`TOMBSTONE_TTL`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub entries: Vec<StoredEntry>,
    pub index: u64,
}

/// What a store's event stream carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StoreEvent {
    /// Changes in strictly increasing version order. Tombstones have `value: None`.
    Changes(Vec<StoredEntry>),
    /// The store may have missed events (reconnect, new session): re-list with `snapshot()`.
    Resync(Snapshot),
}

/// Errors a caller can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum StoreError {
    #[error("cas failed for {key}: expected version {expected}, found {found}")]
    CasMismatch {
        key: String,
        expected: u64,
        found: u64,
    },
    #[error("value of {size} bytes is over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("registry store unavailable: {0}")]
    Unavailable(String),
    #[error("registry store failed: {0}")]
    Internal(String),
    /// The store's owner refused the write (a joined node's write whose caller the ACL denies).
    #[error("{0}")]
    Forbidden(String),
}

/// A registry backend. Implementations are cheap to share (`Arc<dyn Store>`).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short name for logs and `/v1/members` (`zookeeper`, `embedded`, `remote`).
    fn kind(&self) -> &'static str;

    /// Every entry, tombstones included, with the index the listing is consistent with (used to
    /// re-list a slice after an actor restart; event streams carry their own snapshots).
    async fn snapshot(&self) -> Result<Snapshot, StoreError>;

    /// Writes `value` at `key` (creating parents as needed); returns the new version. Values
    /// whose JSON is over [`DEFAULT_MAX_VALUE_BYTES`] are [`StoreError::TooLarge`].
    async fn put(
        &self,
        key: &KeyPath,
        value: &serde_json::Value,
        cas: Option<u64>,
    ) -> Result<u64, StoreError>;

    /// Deletes `key` (and with `recurse`, everything below it) by writing tombstones. Returns the
    /// version of the delete, or `None` when nothing held a value. With `cas = Some(v)` the key's
    /// current version must be `v` (`Some(0)`: the key must hold no value). A recursive delete is
    /// one atomic write with one version (ZooKeeper splits a subtree of thousands of keys into
    /// several transactions).
    async fn delete(
        &self,
        key: &KeyPath,
        cas: Option<u64>,
        recurse: bool,
    ) -> Result<Option<u64>, StoreError>;

    /// A new ordered change stream: it opens with `Resync(snapshot)`, then carries every change
    /// after the snapshot's index. May be called any number of times; each stream is independent
    /// (ZooKeeper still holds a single watch per store). Must be called within a tokio runtime.
    fn events(&self) -> mpsc::Receiver<StoreEvent>;
}
