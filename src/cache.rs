//! A distributed cache over a group's instances, with groupcache's semantics: `ctx.cache(..)`.
//!
//! Every instance of a group that creates a cache of the same name shares one key space. Each key
//! has one *owner* among the group's live instances (consistent hashing over `group/index`): only
//! the owner calls the [`CacheLoader`] for it, once however many ask at the same time
//! (single-flight), and keeps the value in its main cache. Other instances ask the owner over the
//! cluster and keep about one answer in ten in a small *hot* cache, so a very popular key is
//! served locally everywhere. When the owner cannot be reached, the asking instance loads the
//! value itself. Values are never updated in place: a key's value is whatever its loader returns
//! (put a version in the key to change it). Both caches evict the least recently used values
//! beyond their byte budget.
//!
//! ```
//! # async fn demo(ctx: &lathe::TaskContext) -> Result<(), lathe::CacheError> {
//! use std::sync::Arc;
//!
//! struct Thumbnails;
//!
//! #[lathe::async_trait]
//! impl lathe::CacheLoader for Thumbnails {
//!     async fn load(&self, key: &str) -> Result<Vec<u8>, String> {
//!         Ok(format!("thumbnail of {key}").into_bytes())
//!     }
//! }
//!
//! let cache = ctx.cache("thumbnails", 64 << 20, Arc::new(Thumbnails))?;
//! let thumbnail = cache.get("cat.jpg").await?;
//! # let _ = thumbnail; Ok(()) }
//! ```

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

/// The longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// Loads the value of a key that no instance holds: runs on the key's owner.
#[async_trait]
pub trait CacheLoader: Send + Sync + 'static {
    async fn load(&self, key: &str) -> Result<Vec<u8>, String>;
}

/// Why a cache operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    #[error("no cache: {0}")]
    Unavailable(String),
    #[error("cache key must be 1 to {MAX_KEY_BYTES} bytes, got {len}")]
    BadKey { len: usize },
    /// The loader failed (on the owner, or here when the owner was out of reach).
    #[error("cannot load {key:?}: {reason}")]
    Load { key: String, reason: String },
}

/// Counters of one instance's cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// `get` calls.
    pub gets: u64,
    /// Answered from the main cache (keys this instance owns).
    pub hits: u64,
    /// Answered from the hot cache (copies of other owners' keys).
    pub hot_hits: u64,
    /// Answered by the key's owner, another instance.
    pub peer_gets: u64,
    /// Loader calls made by this instance.
    pub loads: u64,
    /// Requests other instances sent to this one as the owner of a key.
    pub served: u64,
}

/// What the node provides behind a [`Cache`].
#[async_trait]
pub trait CacheBackend: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Bytes, CacheError>;
    fn stats(&self) -> CacheStats;
}

/// One instance's handle on a named cache of its group (see the [module doc](self)). Keep it for
/// the instance's life: dropping the last handle withdraws the instance as an owner.
#[derive(Clone)]
pub struct Cache {
    backend: Arc<dyn CacheBackend>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("stats", &self.backend.stats())
            .finish()
    }
}

impl Cache {
    pub fn new(backend: Arc<dyn CacheBackend>) -> Self {
        Cache { backend }
    }

    /// The value of `key`: from this instance's caches, from the key's owner, or loaded.
    pub async fn get(&self, key: &str) -> Result<Bytes, CacheError> {
        check_key(key)?;
        self.backend.get(key).await
    }

    pub fn stats(&self) -> CacheStats {
        self.backend.stats()
    }
}

/// Refuses empty and oversized keys.
pub fn check_key(key: &str) -> Result<(), CacheError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(CacheError::BadKey { len: key.len() });
    }
    Ok(())
}
