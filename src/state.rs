//! Persistent state of a task instance: `ctx.state()`.
//!
//! Each instance has its own key space (keys and values are bytes; JSON helpers on top), kept by
//! the node in a local RocksDB under `--data-dir`. A crashed instance restarted by its supervisor,
//! and a node restarted with the same `--data-dir`, find their state again. Writes go to
//! RocksDB's write-ahead log before they return: they survive the process being killed (SIGKILL);
//! [`StateStore::sync`] also flushes the log to disk, for data that must survive the machine
//! losing power.
//!
//! The state stays on the node: an instance placed on another node (its node died, or the
//! scheduler moved it) starts there with an empty state.
//!
//! ```
//! # fn demo(ctx: &lathe::TaskContext) -> Result<(), lathe::StateError> {
//! let state = ctx.state()?;
//! let seen: u64 = state.get_json("seen")?.unwrap_or(0);
//! state.put_json("seen", &(seen + 1))?;
//! # Ok(()) }
//! ```
//!
//! [`MemoryState`] keeps a state in memory, for unit tests of tasks.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The largest key, in bytes.
pub const MAX_KEY_BYTES: usize = 4 * 1024;
/// The largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 16 * 1024 * 1024;

/// Why a state operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The node keeps no state for this instance.
    #[error("no state store: {0}")]
    Unavailable(String),
    #[error("state key of {len} bytes is over the {MAX_KEY_BYTES}-byte limit")]
    KeyTooLarge { len: usize },
    #[error("state value of {len} bytes at key {key:?} is over the {MAX_VALUE_BYTES}-byte limit")]
    ValueTooLarge { key: String, len: usize },
    #[error("state key must not be empty")]
    EmptyKey,
    /// The value at `key` is not the JSON of the type asked for.
    #[error("state value at key {key:?} is not a {expected}: {reason}")]
    Decode {
        key: String,
        expected: &'static str,
        reason: String,
    },
    #[error("cannot encode the value for state key {key:?}: {reason}")]
    Encode { key: String, reason: String },
    /// The store itself failed (disk full, I/O error).
    #[error("state store error: {0}")]
    Store(String),
}

/// Key-value pairs, in key order, as [`StateStore::scan`] returns them.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// One change of an atomic [`StateBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateOp {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

/// What keeps one instance's state; the node implements it over RocksDB.
pub trait StateBackend: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError>;
    /// Applies every op, all or none.
    fn write(&self, ops: Vec<StateOp>) -> Result<(), StateError>;
    /// Keys starting with `prefix`, in key order, at most `limit`.
    fn scan(&self, prefix: &[u8], limit: usize) -> Result<Entries, StateError>;
    /// Flushes what was written to disk.
    fn sync(&self) -> Result<(), StateError>;
}

/// One instance's persistent state (see the [module doc](self)).
#[derive(Clone)]
pub struct StateStore {
    backend: Arc<dyn StateBackend>,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore").finish_non_exhaustive()
    }
}

impl StateStore {
    pub fn new(backend: Arc<dyn StateBackend>) -> Self {
        StateStore { backend }
    }

    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, StateError> {
        let key = key.as_ref();
        check_key(key)?;
        self.backend.get(key)
    }

    pub fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<(), StateError> {
        let mut batch = self.batch();
        batch.put(key, value)?;
        batch.commit()
    }

    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<(), StateError> {
        let mut batch = self.batch();
        batch.delete(key)?;
        batch.commit()
    }

    /// Changes applied together or not at all: `batch.put(..)?; batch.delete(..)?; batch.commit()`.
    pub fn batch(&self) -> StateBatch {
        StateBatch {
            backend: self.backend.clone(),
            ops: Vec::new(),
        }
    }

    /// Every key starting with `prefix` (all keys for an empty prefix), in key order, at most
    /// `limit`.
    pub fn scan(&self, prefix: impl AsRef<[u8]>, limit: usize) -> Result<Entries, StateError> {
        self.backend.scan(prefix.as_ref(), limit)
    }

    /// The value at `key`, read as JSON into a `T`.
    pub fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StateError> {
        let Some(bytes) = self.get(key)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StateError::Decode {
                key: key.to_string(),
                expected: std::any::type_name::<T>(),
                reason: e.to_string(),
            })
    }

    /// Stores `value` as JSON at `key`.
    pub fn put_json<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), StateError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StateError::Encode {
            key: key.to_string(),
            reason: e.to_string(),
        })?;
        self.put(key, bytes)
    }

    /// Flushes every write so far to disk (writes already survive the process being killed).
    pub fn sync(&self) -> Result<(), StateError> {
        self.backend.sync()
    }
}

/// Changes to apply atomically; nothing happens until [`StateBatch::commit`].
pub struct StateBatch {
    backend: Arc<dyn StateBackend>,
    ops: Vec<StateOp>,
}

impl std::fmt::Debug for StateBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateBatch")
            .field("ops", &self.ops.len())
            .finish()
    }
}

impl StateBatch {
    pub fn put(
        &mut self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<&mut Self, StateError> {
        let (key, value) = (key.as_ref(), value.as_ref());
        check_key(key)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(StateError::ValueTooLarge {
                key: String::from_utf8_lossy(key).into_owned(),
                len: value.len(),
            });
        }
        self.ops.push(StateOp::Put(key.to_vec(), value.to_vec()));
        Ok(self)
    }

    pub fn delete(&mut self, key: impl AsRef<[u8]>) -> Result<&mut Self, StateError> {
        let key = key.as_ref();
        check_key(key)?;
        self.ops.push(StateOp::Delete(key.to_vec()));
        Ok(self)
    }

    pub fn commit(self) -> Result<(), StateError> {
        if self.ops.is_empty() {
            return Ok(());
        }
        self.backend.write(self.ops)
    }
}

fn check_key(key: &[u8]) -> Result<(), StateError> {
    if key.is_empty() {
        return Err(StateError::EmptyKey);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(StateError::KeyTooLarge { len: key.len() });
    }
    Ok(())
}

/// A state kept in memory: for unit tests of tasks
/// (`StateStore::new(Arc::new(MemoryState::default()))`).
#[derive(Debug, Default)]
pub struct MemoryState {
    entries: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl StateBackend for MemoryState {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.lock().get(key).cloned())
    }

    fn write(&self, ops: Vec<StateOp>) -> Result<(), StateError> {
        let mut entries = self.lock();
        for op in ops {
            match op {
                StateOp::Put(key, value) => {
                    entries.insert(key, value);
                }
                StateOp::Delete(key) => {
                    entries.remove(&key);
                }
            }
        }
        Ok(())
    }

    fn scan(&self, prefix: &[u8], limit: usize) -> Result<Entries, StateError> {
        Ok(self
            .lock()
            .range(prefix.to_vec()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn sync(&self) -> Result<(), StateError> {
        Ok(())
    }
}

impl MemoryState {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        // A panic while holding the lock leaves a map that is still whole: keep using it.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> StateStore {
        StateStore::new(Arc::new(MemoryState::default()))
    }

    #[test]
    fn bytes_json_batches_and_scans() {
        let state = store();
        assert_eq!(state.get("a").unwrap(), None);
        state.put("a", b"1").unwrap();
        state.put_json("n", &41u64).unwrap();
        assert_eq!(state.get("a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(state.get_json::<u64>("n").unwrap(), Some(41));
        let error = state.get_json::<Vec<String>>("n").unwrap_err();
        assert!(
            matches!(error, StateError::Decode { ref key, .. } if key == "n"),
            "{error}"
        );
        let mut batch = state.batch();
        batch
            .put("user/1", "ann")
            .unwrap()
            .put("user/2", "bob")
            .unwrap();
        batch.delete("a").unwrap();
        batch.commit().unwrap();
        assert_eq!(state.get("a").unwrap(), None);
        let users = state.scan("user/", 10).unwrap();
        assert_eq!(
            users,
            vec![
                (b"user/1".to_vec(), b"ann".to_vec()),
                (b"user/2".to_vec(), b"bob".to_vec())
            ]
        );
        assert_eq!(state.scan("user/", 1).unwrap().len(), 1);
        assert_eq!(state.scan("", 100).unwrap().len(), 3);
    }

    #[test]
    fn bad_keys_and_values_are_refused_before_anything_is_written() {
        let state = store();
        assert_eq!(state.put("", "x").unwrap_err(), StateError::EmptyKey);
        let long = vec![b'k'; MAX_KEY_BYTES + 1];
        assert!(matches!(
            state.put(&long, "x").unwrap_err(),
            StateError::KeyTooLarge { .. }
        ));
        let mut batch = state.batch();
        batch.put("ok", "1").unwrap();
        let huge = vec![0u8; MAX_VALUE_BYTES + 1];
        assert!(matches!(
            batch.put("big", &huge).unwrap_err(),
            StateError::ValueTooLarge { .. }
        ));
        // The batch was not committed: nothing written.
        assert_eq!(state.get("ok").unwrap(), None);
    }
}
