//! The embedded registry store: RocksDB under `--data-dir`, for clusters without ZooKeeper.
//!
//! ```text
//! put/delete ──spawn_blocking──▶ writer lock ─▶ read, check CAS ─▶ WriteBatch (sync) ─▶ Hub
//!                                  (one writer)     record(s) + index in one batch        │
//! events() ──spawn_blocking──▶ writer lock ─▶ snapshot ─▶ Resync to the new consumer ◀──┘
//! housekeeping thread: every second re-syncs consumers that fell behind; every minute
//! removes tombstones older than TOMBSTONE_TTL
//! ```
//!
//! Every write is one synced `WriteBatch` holding the changed records and the new global index, so
//! an acknowledged write survives a crash of the process or of the machine, and the index never
//! goes back. Writes (and the events they publish) are serialized by one lock; RocksDB is only
//! ever called from blocking threads, never from the async workers.

mod record;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{mpsc as std_mpsc, Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use lathe::KeyPath;
use rocksdb::{Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use tokio::sync::mpsc;

use self::record::{Record, ENTRY_PREFIX, INDEX_KEY};
use crate::hub::Hub;
use crate::{
    encode_value, Snapshot, Store, StoreError, StoreEvent, StoredEntry, EVENT_CHANNEL_CAPACITY,
    TOMBSTONE_TTL,
};

/// How often the housekeeping thread looks for consumers to re-sync.
const HOUSEKEEPING_TICK: Duration = Duration::from_secs(1);
/// How often tombstones older than [`TOMBSTONE_TTL`] are removed.
const GC_INTERVAL: Duration = Duration::from_secs(60);

/// The RocksDB-backed registry store. Dropping it closes the database.
pub struct EmbeddedStore {
    inner: Arc<Inner>,
    housekeeping: Option<Housekeeping>,
}

struct Inner {
    db: DB,
    path: PathBuf,
    writer: Mutex<Writer>,
}

/// What only the one writer touches.
struct Writer {
    index: u64,
    hub: Hub,
}

struct Housekeeping {
    stop: std_mpsc::Sender<()>,
    thread: thread::JoinHandle<()>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store at `dir/registry`.
    pub fn open(dir: &Path) -> Result<EmbeddedStore, StoreError> {
        let path = dir.join("registry");
        std::fs::create_dir_all(&path).map_err(|err| {
            StoreError::Internal(format!("failed to create {}: {err}", path.display()))
        })?;
        let mut options = Options::default();
        options.create_if_missing(true);
        options.set_keep_log_file_num(4);
        let db = DB::open(&options, &path).map_err(|err| {
            StoreError::Internal(format!("failed to open {}: {err}", path.display()))
        })?;
        let index = recover_index(&db)?;
        tracing::info!(path = %path.display(), index, "embedded registry store opened");
        let inner = Arc::new(Inner {
            db,
            path,
            writer: Mutex::new(Writer {
                index,
                hub: Hub::default(),
            }),
        });
        let housekeeping = Housekeeping::start(&inner)?;
        Ok(EmbeddedStore {
            inner,
            housekeeping: Some(housekeeping),
        })
    }

    /// Where the database lives (`dir/registry`).
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The current global index (the version of the latest write).
    pub async fn index(&self) -> Result<u64, StoreError> {
        self.blocking(|inner| Ok(inner.lock_writer().index)).await
    }

    /// Like [`Store::events`], with a channel of `capacity` events (a consumer that lets it fill
    /// up gets a fresh `Resync` once it has room again).
    pub fn events_with_capacity(&self, capacity: usize) -> mpsc::Receiver<StoreEvent> {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let inner = Arc::clone(&self.inner);
        let subscribe = move || inner.subscribe(sender);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(subscribe)),
            Err(_) => subscribe(),
        }
        receiver
    }

    /// Removes tombstones last changed more than `older_than` ago; returns how many. Runs by
    /// itself every minute with [`TOMBSTONE_TTL`].
    pub async fn collect_garbage(&self, older_than: Duration) -> Result<usize, StoreError> {
        self.blocking(move |inner| inner.collect_garbage(older_than))
            .await
    }

    async fn blocking<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || work(&inner))
            .await
            .map_err(|err| StoreError::Internal(format!("registry store task failed: {err}")))?
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        if let Some(housekeeping) = self.housekeeping.take() {
            drop(housekeeping.stop);
            if housekeeping.thread.join().is_err() {
                tracing::error!("the embedded store's housekeeping thread panicked");
            }
        }
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        self.blocking(Inner::snapshot).await
    }

    async fn put(
        &self,
        key: &KeyPath,
        value: &serde_json::Value,
        cas: Option<u64>,
    ) -> Result<u64, StoreError> {
        let json = encode_value(value)?;
        let key = key.clone();
        let value = value.clone();
        self.blocking(move |inner| inner.put(&key, value, &json, cas))
            .await
    }

    async fn delete(
        &self,
        key: &KeyPath,
        cas: Option<u64>,
        recurse: bool,
    ) -> Result<Option<u64>, StoreError> {
        let key = key.clone();
        self.blocking(move |inner| inner.delete(&key, cas, recurse))
            .await
    }

    fn events(&self) -> mpsc::Receiver<StoreEvent> {
        self.events_with_capacity(EVENT_CHANNEL_CAPACITY)
    }
}

impl Inner {
    fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        // A panic mid-write leaves nothing half-done: the batch either committed (and the index
        // moved with it) or it did not.
        self.writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn read(&self, key: &KeyPath) -> Result<Option<Record>, StoreError> {
        let bytes = self
            .db
            .get_pinned(record::entry_key(key))
            .map_err(|err| StoreError::Internal(format!("failed to read {key}: {err}")))?;
        bytes
            .map(|bytes| record::decode(key.as_str(), &bytes))
            .transpose()
    }

    /// Every record at or below `key`, in key order.
    fn read_subtree(&self, key: &KeyPath) -> Result<Vec<(KeyPath, Record)>, StoreError> {
        let mut found = Vec::new();
        if let Some(record) = self.read(key)? {
            found.push((key.clone(), record));
        }
        let mut prefix = record::entry_key(key);
        if !key.is_root() {
            prefix.push(b'/');
        }
        let iterator = self
            .db
            .iterator(IteratorMode::From(&prefix, Direction::Forward));
        for item in iterator {
            let (raw_key, bytes) = item.map_err(|err| {
                StoreError::Internal(format!("failed to list the keys under {key}: {err}"))
            })?;
            if !raw_key.starts_with(&prefix) {
                break;
            }
            let child = record::parse_entry_key(&raw_key)?;
            if &child == key {
                continue;
            }
            let record = record::decode(child.as_str(), &bytes)?;
            found.push((child, record));
        }
        Ok(found)
    }

    /// Commits `changes` (all at `version`) as one synced batch and publishes them.
    fn commit(
        &self,
        writer: &mut Writer,
        version: u64,
        changes: Vec<(KeyPath, Option<serde_json::Value>, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        for (key, _, bytes) in &changes {
            batch.put(record::entry_key(key), bytes);
        }
        batch.put(INDEX_KEY, version.to_be_bytes());
        self.db
            .write_opt(batch, &synced())
            .map_err(|err| StoreError::Internal(format!("failed to write the registry: {err}")))?;
        writer.index = version;
        let entries: Vec<StoredEntry> = changes
            .into_iter()
            .map(|(key, value, _)| StoredEntry {
                key,
                value,
                version,
            })
            .collect();
        writer.hub.publish(&entries);
        Ok(())
    }

    fn put(
        &self,
        key: &KeyPath,
        value: serde_json::Value,
        json: &[u8],
        cas: Option<u64>,
    ) -> Result<u64, StoreError> {
        let mut writer = self.lock_writer();
        if let Some(expected) = cas {
            let live_version = self.read(key)?.filter(Record::is_live).map(|r| r.version);
            check_cas(key, expected, live_version)?;
        }
        let version = writer.index + 1;
        let bytes = record::encode(Some(json), version, now_ms());
        self.commit(
            &mut writer,
            version,
            vec![(key.clone(), Some(value), bytes)],
        )?;
        Ok(version)
    }

    fn delete(
        &self,
        key: &KeyPath,
        cas: Option<u64>,
        recurse: bool,
    ) -> Result<Option<u64>, StoreError> {
        let mut writer = self.lock_writer();
        let live_version = match self.read(key) {
            Ok(record) => record.filter(Record::is_live).map(|r| r.version),
            // Without CAS a damaged record may be deleted: that is how it gets repaired.
            Err(err) if cas.is_none() && !recurse => {
                tracing::warn!(%key, error = %err, "deleting a damaged registry record");
                Some(0)
            }
            Err(err) => return Err(err),
        };
        if let Some(expected) = cas {
            check_cas(key, expected, live_version)?;
        }
        let doomed: Vec<KeyPath> = if recurse {
            self.read_subtree(key)?
                .into_iter()
                .filter(|(_, record)| record.is_live())
                .map(|(key, _)| key)
                .collect()
        } else {
            live_version.map(|_| key.clone()).into_iter().collect()
        };
        if doomed.is_empty() {
            return Ok(None);
        }
        let version = writer.index + 1;
        let modified = now_ms();
        let changes = doomed
            .into_iter()
            .map(|key| (key, None, record::encode(None, version, modified)))
            .collect();
        self.commit(&mut writer, version, changes)?;
        Ok(Some(version))
    }

    /// Every record and the index, read from one RocksDB snapshot.
    fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let view = self.db.snapshot();
        let index = view
            .get(INDEX_KEY)
            .map_err(|err| StoreError::Internal(format!("failed to read the index: {err}")))?
            .map(|bytes| record::decode_index(&bytes))
            .transpose()?
            .unwrap_or(0);
        let mut entries = Vec::new();
        for item in view.iterator(IteratorMode::From(ENTRY_PREFIX, Direction::Forward)) {
            let (raw_key, bytes) = item.map_err(|err| {
                StoreError::Internal(format!("failed to list the registry: {err}"))
            })?;
            if !raw_key.starts_with(ENTRY_PREFIX) {
                break;
            }
            let key = record::parse_entry_key(&raw_key)?;
            let record = record::decode(key.as_str(), &bytes)?;
            entries.push(record.into_entry(key));
        }
        Ok(Snapshot { entries, index })
    }

    /// Registers a consumer: under the writer lock, so that no write falls between its snapshot
    /// and its first `Changes`.
    fn subscribe(&self, sender: mpsc::Sender<StoreEvent>) {
        let mut writer = self.lock_writer();
        match self.snapshot() {
            Ok(snapshot) => {
                writer.hub.add(sender);
                writer.hub.resync(&snapshot);
            }
            // Dropping the sender ends the consumer's stream: it sees the store failed.
            Err(err) => tracing::error!(error = %err, "cannot open a registry event stream"),
        }
    }

    /// Sends a fresh snapshot to consumers that fell behind and have room again.
    fn resync_lagging(&self) {
        let mut writer = self.lock_writer();
        if !writer.hub.wants_snapshot() {
            return;
        }
        match self.snapshot() {
            Ok(snapshot) => writer.hub.resync(&snapshot),
            Err(err) => tracing::error!(error = %err, "cannot re-sync a registry consumer"),
        }
    }

    fn collect_garbage(&self, older_than: Duration) -> Result<usize, StoreError> {
        let _writer = self.lock_writer();
        let cutoff = now_ms().saturating_sub(older_than.as_millis() as u64);
        let mut batch = WriteBatch::default();
        let mut removed = 0;
        for (key, record) in self.read_subtree(&KeyPath::root())? {
            if !record.is_live() && record.modified_ms <= cutoff {
                batch.delete(record::entry_key(&key));
                removed += 1;
            }
        }
        if removed > 0 {
            self.db.write_opt(batch, &synced()).map_err(|err| {
                StoreError::Internal(format!("failed to remove old tombstones: {err}"))
            })?;
            tracing::debug!(removed, "removed old registry tombstones");
        }
        Ok(removed)
    }
}

impl Housekeeping {
    fn start(inner: &Arc<Inner>) -> Result<Housekeeping, StoreError> {
        let (stop, stopped) = std_mpsc::channel::<()>();
        let inner = Arc::clone(inner);
        let thread = thread::Builder::new()
            .name("registry-housekeeping".to_string())
            .spawn(move || {
                let mut since_gc = Duration::ZERO;
                // Nothing is ever sent: the loop ends when the store drops the sender.
                while let Err(std_mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(HOUSEKEEPING_TICK)
                {
                    inner.resync_lagging();
                    since_gc += HOUSEKEEPING_TICK;
                    if since_gc >= GC_INTERVAL {
                        since_gc = Duration::ZERO;
                        if let Err(err) = inner.collect_garbage(TOMBSTONE_TTL) {
                            tracing::error!(error = %err, "registry tombstone collection failed");
                        }
                    }
                }
            })
            .map_err(|err| {
                StoreError::Internal(format!("failed to start the housekeeping thread: {err}"))
            })?;
        Ok(Housekeeping { stop, thread })
    }
}

/// The stored index, never below the newest record's version (a damaged index cannot make the
/// store hand out a version twice).
fn recover_index(db: &DB) -> Result<u64, StoreError> {
    let stored = db
        .get(INDEX_KEY)
        .map_err(|err| StoreError::Internal(format!("failed to read the index: {err}")))?
        .map(|bytes| record::decode_index(&bytes))
        .transpose()?
        .unwrap_or(0);
    let mut newest = 0;
    for item in db.iterator(IteratorMode::From(ENTRY_PREFIX, Direction::Forward)) {
        let (raw_key, bytes) = item
            .map_err(|err| StoreError::Internal(format!("failed to scan the registry: {err}")))?;
        if !raw_key.starts_with(ENTRY_PREFIX) {
            break;
        }
        // A damaged record is reported when read (naming its key), not here: the store still
        // opens, so the record can be overwritten or deleted.
        let version = record::parse_entry_key(&raw_key)
            .and_then(|key| record::decode(key.as_str(), &bytes))
            .map(|record| record.version);
        match version {
            Ok(version) => newest = newest.max(version),
            Err(err) => tracing::error!(error = %err, "damaged registry record"),
        }
    }
    if newest > stored {
        tracing::warn!(
            stored,
            newest,
            "registry index behind its records; using the newest"
        );
    }
    Ok(stored.max(newest))
}

/// `cas = Some(0)`: the key must hold no value; `Some(v)`: its live value must have version `v`.
fn check_cas(key: &KeyPath, expected: u64, live_version: Option<u64>) -> Result<(), StoreError> {
    let found = live_version.unwrap_or(0);
    if found == expected {
        Ok(())
    } else {
        Err(StoreError::CasMismatch {
            key: key.to_string(),
            expected,
            found,
        })
    }
}

fn synced() -> WriteOptions {
    let mut options = WriteOptions::default();
    options.set_sync(true);
    options
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}
