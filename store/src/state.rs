//! The node's task-instance state: one RocksDB under `<data dir>/state`, one key space per
//! instance (`<group>/<index>/` in front of the task's own keys), behind `lathe::StateBackend`.
//!
//! Writes go through the write-ahead log without an fsync each (they survive SIGKILL of the
//! process; `sync` flushes the log to disk). Operations are short and synchronous, like the
//! task's own code around them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lathe::state::{Entries, StateBackend, StateError, StateOp};
use lathe::StateStore;
use rocksdb::{Direction, IteratorMode, Options, WriteBatch, DB};

use crate::StoreError;

/// Opens `<dir>/state` when an instance first asks for its state, so that a node whose tasks
/// keep none opens no second RocksDB. A failed open is tried again at the next ask.
#[derive(Debug)]
pub struct LazyNodeStates {
    dir: PathBuf,
    opened: std::sync::Mutex<Option<NodeStates>>,
}

impl LazyNodeStates {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LazyNodeStates {
            dir: dir.into(),
            opened: std::sync::Mutex::new(None),
        }
    }

    /// The state of instance `index` of `group`.
    pub fn instance(&self, group: &str, index: u32) -> Result<StateStore, StateError> {
        let mut opened = self.opened.lock().unwrap_or_else(|e| e.into_inner());
        if opened.is_none() {
            let states =
                NodeStates::open(&self.dir).map_err(|e| StateError::Store(e.to_string()))?;
            *opened = Some(states);
        }
        let states = opened
            .as_ref()
            .ok_or_else(|| StateError::Store("not opened".into()))?;
        Ok(states.instance(group, index))
    }
}

/// The state of every instance of one node.
#[derive(Clone)]
pub struct NodeStates {
    db: Arc<DB>,
    path: PathBuf,
}

impl std::fmt::Debug for NodeStates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeStates")
            .field("path", &self.path)
            .finish()
    }
}

impl NodeStates {
    /// Opens (or creates) `<dir>/state`.
    pub fn open(dir: &Path) -> Result<NodeStates, StoreError> {
        let path = dir.join("state");
        std::fs::create_dir_all(&path).map_err(|err| {
            StoreError::Internal(format!("cannot create {}: {err}", path.display()))
        })?;
        let mut options = Options::default();
        options.create_if_missing(true);
        options.set_keep_log_file_num(4);
        let db = DB::open(&options, &path).map_err(|err| {
            StoreError::Internal(format!(
                "cannot open the state store {}: {err}",
                path.display()
            ))
        })?;
        tracing::info!(path = %path.display(), "task state store opened");
        Ok(NodeStates {
            db: Arc::new(db),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The state of instance `index` of `group`.
    pub fn instance(&self, group: &str, index: u32) -> StateStore {
        StateStore::new(Arc::new(InstanceState {
            db: self.db.clone(),
            prefix: format!("{group}/{index}/").into_bytes(),
        }))
    }
}

/// One instance's slice of the node's state store.
struct InstanceState {
    db: Arc<DB>,
    /// `<group>/<index>/`: group names hold no `/`, so no instance's slice contains another's.
    prefix: Vec<u8>,
}

impl InstanceState {
    fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.prefix.len() + key.len());
        full.extend_from_slice(&self.prefix);
        full.extend_from_slice(key);
        full
    }
}

fn store_error(err: rocksdb::Error) -> StateError {
    StateError::Store(err.to_string())
}

impl StateBackend for InstanceState {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.db.get(self.key(key)).map_err(store_error)
    }

    fn write(&self, ops: Vec<StateOp>) -> Result<(), StateError> {
        let mut batch = WriteBatch::default();
        for op in ops {
            match op {
                StateOp::Put(key, value) => batch.put(self.key(&key), value),
                StateOp::Delete(key) => batch.delete(self.key(&key)),
            }
        }
        self.db.write(batch).map_err(store_error)
    }

    fn scan(&self, prefix: &[u8], limit: usize) -> Result<Entries, StateError> {
        let start = self.key(prefix);
        let mut found = Vec::new();
        for item in self
            .db
            .iterator(IteratorMode::From(&start, Direction::Forward))
        {
            if found.len() >= limit {
                break;
            }
            let (key, value) = item.map_err(store_error)?;
            if !key.starts_with(&start) {
                break;
            }
            found.push((key[self.prefix.len()..].to_vec(), value.to_vec()));
        }
        Ok(found)
    }

    fn sync(&self) -> Result<(), StateError> {
        self.db.flush_wal(true).map_err(store_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_have_their_own_key_spaces_and_state_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let states = NodeStates::open(dir.path()).unwrap();
            let one = states.instance("task.counter", 1);
            let ten = states.instance("task.counter", 10);
            one.put_json("count", &3u64).unwrap();
            ten.put_json("count", &30u64).unwrap();
            one.put("k/a", "1").unwrap();
            one.put("k/b", "2").unwrap();
            ten.put("k/c", "3").unwrap();
            assert_eq!(one.get_json::<u64>("count").unwrap(), Some(3));
            assert_eq!(
                one.scan("k/", 10).unwrap(),
                vec![
                    (b"k/a".to_vec(), b"1".to_vec()),
                    (b"k/b".to_vec(), b"2".to_vec())
                ]
            );
            assert_eq!(one.scan("", 10).unwrap().len(), 3);
            assert_eq!(
                states.instance("task.other", 1).scan("", 10).unwrap(),
                vec![]
            );
            one.sync().unwrap();
        }
        let states = NodeStates::open(dir.path()).unwrap();
        assert_eq!(
            states
                .instance("task.counter", 10)
                .get_json::<u64>("count")
                .unwrap(),
            Some(30)
        );
        let mut batch = states.instance("task.counter", 1).batch();
        batch.delete("k/a").unwrap().put("k/z", "9").unwrap();
        batch.commit().unwrap();
        let keys: Vec<Vec<u8>> = states
            .instance("task.counter", 1)
            .scan("k/", 10)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![b"k/b".to_vec(), b"k/z".to_vec()]);
    }
}
