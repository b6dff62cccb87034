//! The ZooKeeper registry store, for multi-machine clusters.
//!
//! ```text
//! ZkStore ──put/delete──▶ current Client ──▶ ZooKeeper  {chroot}/lathe/registry/kv/...
//!    │ events()/snapshot()                        │ one persistent recursive watch per store
//!    └──Command──▶ Pipeline task ◀────────────────┘ (see `pipeline`): Changes / Resync to consumers
//!                  └ opens a new session after expiry and installs its client for the writers
//! GC task: every minute deletes tombstones and leaf placeholders older than TOMBSTONE_TTL
//! ```
//!
//! A value is its JSON in the znode's data; the version is the znode's `mzxid`, so the global
//! index is ZooKeeper's zxid. A delete writes empty data (a tombstone); a recursive delete
//! tombstones the whole subtree in one `multi` with version checks. Every call is bounded by the
//! session timeout: while ZooKeeper is away, writes fail with [`StoreError::Unavailable`] and
//! resume by themselves once it is back (on the same session if it survived, on a new one
//! otherwise).

mod auth;
mod pipeline;
mod session;
mod tree;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::future::join_all;
use futures::FutureExt;
use lathe::KeyPath;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use zookeeper_client::{
    Client, CreateMode, Error as ZkError, MultiWriteResult, SessionState, Stat,
};

pub use self::auth::{acls, connector, ZkAuth, ZkAuthError};
use self::pipeline::{Command, Pipeline};
use self::session::{is_unavailable, store_error, Op, Shared};
use self::tree::{list_tree, split_ensemble, Layout, Node};
use crate::{
    encode_value, Snapshot, Store, StoreError, StoreEvent, EVENT_CHANNEL_CAPACITY, TOMBSTONE_TTL,
};

/// How often old tombstones and placeholders are removed.
const GC_INTERVAL: Duration = Duration::from_secs(60);
/// How many times a write retries after losing a race (a concurrent create, a tombstone GC).
const MAX_ATTEMPTS: usize = 32;
/// The least time `connect` keeps trying to reach ZooKeeper.
const MIN_CONNECT_PATIENCE: Duration = Duration::from_secs(10);
/// Operations per `multi` in a recursive delete (ZooKeeper bounds a request's size).
const MULTI_MAX_OPS: usize = 1000;
const MULTI_MAX_BYTES: usize = 256 * 1024;
/// ZooKeeper's default `jute.maxbuffer`: a bigger request makes the server drop the connection.
pub const ZK_DEFAULT_MAX_PACKET: usize = 0xfffff;
/// What a write request carries besides its value and its path. The largest is a create:
/// header 8, path and data lengths 8, the open ACL 27, flags 4, a TTL 8 (a set needs 20).
const REQUEST_FRAMING: usize = 64;
/// Room for the request's header and path within a packet.
const PACKET_OVERHEAD: usize = 2048;

/// Where a store's ZooKeeper session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZkConnection {
    /// Connected: calls are answered.
    Connected,
    /// Connection lost; the session may still be resumed (within the session timeout).
    Reconnecting,
    /// The session is over; the store is opening a new one (calls fail until it has).
    Expired,
}

/// The ZooKeeper-backed registry store. Dropping it stops its tasks and closes its session.
pub struct ZkStore {
    shared: Arc<Shared>,
    /// The ensemble's `jute.maxbuffer`: no request is sent whose encoding is larger.
    max_request_bytes: usize,
    commands: mpsc::UnboundedSender<Command>,
    /// Dropped with the store: tells the garbage collector to stop.
    _stop: watch::Sender<()>,
}

impl ZkStore {
    /// Connects to `HOST:PORT[,HOST:PORT...][/CHROOT]` and creates the registry's base znode if
    /// missing (the chroot too). Keeps trying for the session timeout (at least 10 s) before
    /// giving up with [`StoreError::Unavailable`]. Must be called within a tokio runtime.
    pub async fn connect(ensemble: &str, session_timeout: Duration) -> Result<ZkStore, StoreError> {
        ZkStore::connect_with_auth(ensemble, None, session_timeout).await
    }

    /// [`ZkStore::connect`], authenticating every session with `auth` (digest scheme); the
    /// znodes it creates are then readable and writable by that identity only.
    pub async fn connect_with_auth(
        ensemble: &str,
        auth: Option<ZkAuth>,
        session_timeout: Duration,
    ) -> Result<ZkStore, StoreError> {
        let (hosts, chroot) = split_ensemble(ensemble)?;
        let layout = Layout::new(&chroot);
        let deadline = Instant::now() + session_timeout.max(MIN_CONNECT_PATIENCE);
        let mut delay = Duration::from_millis(100);
        let client = loop {
            match session::open_session(&hosts, auth.as_ref(), session_timeout, &layout).await {
                Ok(client) => break client,
                Err(err) if is_unavailable(&err) && Instant::now() + delay < deadline => {
                    tracing::debug!(error = %err, ensemble, "zookeeper not reachable yet");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(err) => {
                    return Err(match store_error(err) {
                        StoreError::Unavailable(why) => StoreError::Unavailable(format!(
                            "cannot reach zookeeper at {ensemble}: {why}"
                        )),
                        other => other,
                    })
                }
            }
        };
        tracing::info!(ensemble, session = %client.session_id(), base = layout.base(),
            "connected to zookeeper");
        let shared = Arc::new(Shared::new(
            hosts,
            auth,
            layout,
            session_timeout,
            client.clone(),
        ));
        let (commands, requests) = mpsc::unbounded_channel();
        tokio::spawn(Pipeline::new(Arc::clone(&shared), requests).run(client));
        let (stop, stopped) = watch::channel(());
        tokio::spawn(collect_garbage_periodically(Arc::clone(&shared), stopped));
        Ok(ZkStore {
            shared,
            max_request_bytes: ZK_DEFAULT_MAX_PACKET,
            commands,
            _stop: stop,
        })
    }

    /// Refuses writes whose request would be larger than `bytes`, the ensemble's
    /// `jute.maxbuffer` (default [`ZK_DEFAULT_MAX_PACKET`]): ZooKeeper drops the connection of a
    /// client sending a larger one, failing every call in flight on it.
    pub fn with_max_request_bytes(mut self, bytes: usize) -> Self {
        self.max_request_bytes = bytes;
        self
    }

    /// ZooKeeper requests sent so far, per operation (`get`, `set`, `create`, `delete`, `multi`,
    /// `list`, `watch`), for `lathe_zookeeper_requests_total{op}`.
    pub fn request_counts(&self) -> Vec<(&'static str, u64)> {
        self.shared.request_counts()
    }

    /// The id of the current ZooKeeper session (it changes after an expiry).
    pub fn session_id(&self) -> i64 {
        self.shared.client().session_id().0
    }

    /// Where the current session stands.
    pub fn connection(&self) -> ZkConnection {
        match self.shared.client().state() {
            SessionState::SyncConnected | SessionState::ConnectedReadOnly => {
                ZkConnection::Connected
            }
            SessionState::Disconnected => ZkConnection::Reconnecting,
            SessionState::Expired | SessionState::Closed | SessionState::AuthFailed => {
                ZkConnection::Expired
            }
        }
    }

    /// Like [`Store::events`], with a channel of `capacity` events (a consumer that lets it fill
    /// up gets a fresh `Resync` once it has room again).
    pub fn events_with_capacity(&self, capacity: usize) -> mpsc::Receiver<StoreEvent> {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        // If the pipeline is gone the sender is dropped and the stream ends at once.
        let _ = self.commands.send(Command::Subscribe(sender));
        receiver
    }

    /// Deletes tombstones and never-written leaf znodes last changed more than `older_than` ago;
    /// returns how many. Runs by itself every minute with [`TOMBSTONE_TTL`].
    pub async fn collect_garbage(&self, older_than: Duration) -> Result<usize, StoreError> {
        collect_garbage(&self.shared, older_than).await
    }

    async fn read(&self, client: &Client, path: &str) -> Result<Option<Node>, ZkError> {
        match self.shared.call(Op::Get, client.get_data(path)).await {
            Ok((data, stat)) => Ok(Some(Node {
                path: path.to_string(),
                data,
                stat,
            })),
            Err(ZkError::NoNode) => Ok(None),
            Err(err) => Err(err),
        }
    }

    async fn set(
        &self,
        client: &Client,
        path: &str,
        data: &[u8],
        data_version: Option<i32>,
    ) -> Result<Stat, ZkError> {
        let request = client.set_data(path, data, data_version);
        self.shared.call(Op::Set, request).await
    }

    /// Creates the znode of `key`, creating missing parents as placeholders first.
    async fn create(
        &self,
        client: &Client,
        key: &KeyPath,
        path: &str,
        data: &[u8],
    ) -> Result<Stat, ZkError> {
        let options = CreateMode::Persistent.with_acls(self.shared.acls());
        match self
            .shared
            .call(Op::Create, client.create(path, data, &options))
            .await
        {
            Err(ZkError::NoNode) => {}
            other => return other.map(|(stat, _)| stat),
        }
        let layout = &self.shared.layout;
        let mut parents: Vec<String> = key
            .ancestors_inclusive()
            .skip(1)
            .filter(|parent| !parent.is_root())
            .map(|parent| layout.znode(&parent))
            .collect();
        parents.reverse();
        // Sent in order, so ZooKeeper creates each parent before its child.
        let creates = parents.iter().map(|parent| {
            self.shared
                .call(Op::Create, client.create(parent, &[], &options))
        });
        for created in join_all(creates).await {
            match created {
                Ok(_) | Err(ZkError::NodeExists) => {}
                Err(ZkError::NoNode) => {
                    // The base znode itself is gone: put it back and let the caller retry.
                    let mkdir = client.mkdir(layout.base(), &options);
                    self.shared.call(Op::Create, mkdir).await?;
                    return Err(ZkError::NoNode);
                }
                Err(err) => return Err(err),
            }
        }
        let request = client.create(path, data, &options);
        self.shared
            .call(Op::Create, request)
            .await
            .map(|(stat, _)| stat)
    }

    /// `put` without CAS: overwrite whatever is there.
    async fn put_any(
        &self,
        client: &Client,
        key: &KeyPath,
        path: &str,
        data: &[u8],
    ) -> Result<u64, StoreError> {
        for _ in 0..MAX_ATTEMPTS {
            match self.set(client, path, data, None).await {
                Ok(stat) => return Ok(version(&stat)),
                Err(ZkError::NoNode) => {}
                Err(err) => return Err(write_error(err, data.len())),
            }
            match self.create(client, key, path, data).await {
                Ok(stat) => return Ok(version(&stat)),
                Err(ZkError::NodeExists | ZkError::NoNode) => continue,
                Err(err) => return Err(write_error(err, data.len())),
            }
        }
        Err(contended(key))
    }

    /// `put` with `cas = Some(0)`: only where the key holds no value (absent, tombstone or
    /// placeholder).
    async fn put_new(
        &self,
        client: &Client,
        key: &KeyPath,
        path: &str,
        data: &[u8],
    ) -> Result<u64, StoreError> {
        for _ in 0..MAX_ATTEMPTS {
            let written = match self.read(client, path).await.map_err(store_error)? {
                None => self.create(client, key, path, data).await,
                Some(node) if node.is_live() => return Err(mismatch(key, 0, node.version())),
                Some(node) => self.set(client, path, data, Some(node.stat.version)).await,
            };
            match written {
                Ok(stat) => return Ok(version(&stat)),
                Err(ZkError::NodeExists | ZkError::NoNode | ZkError::BadVersion) => continue,
                Err(err) => return Err(write_error(err, data.len())),
            }
        }
        Err(contended(key))
    }

    /// `put` with `cas = Some(expected)`: only over a live value of that version.
    async fn put_over(
        &self,
        client: &Client,
        key: &KeyPath,
        path: &str,
        data: &[u8],
        expected: u64,
    ) -> Result<u64, StoreError> {
        let current = self.read(client, path).await.map_err(store_error)?;
        let Some(node) = current.filter(|node| node.is_live() && node.version() == expected) else {
            return Err(self.mismatch_now(client, key, path, expected).await);
        };
        match self.set(client, path, data, Some(node.stat.version)).await {
            Ok(stat) => Ok(version(&stat)),
            Err(ZkError::BadVersion | ZkError::NoNode) => {
                Err(self.mismatch_now(client, key, path, expected).await)
            }
            Err(err) => Err(write_error(err, data.len())),
        }
    }

    /// The CAS error for `key` with the version it holds now.
    async fn mismatch_now(
        &self,
        client: &Client,
        key: &KeyPath,
        path: &str,
        expected: u64,
    ) -> StoreError {
        match self.read(client, path).await {
            Ok(node) => {
                let found = node.filter(Node::is_live).map_or(0, |node| node.version());
                mismatch(key, expected, found)
            }
            Err(err) => store_error(err),
        }
    }

    async fn delete_one(
        &self,
        client: &Client,
        key: &KeyPath,
        path: &str,
        cas: Option<u64>,
    ) -> Result<Option<u64>, StoreError> {
        for _ in 0..MAX_ATTEMPTS {
            let live = self
                .read(client, path)
                .await
                .map_err(store_error)?
                .filter(Node::is_live);
            if let Some(expected) = cas {
                check_cas(key, expected, live.as_ref().map(Node::version))?;
            }
            let Some(node) = live else {
                return Ok(None);
            };
            match self.set(client, path, &[], Some(node.stat.version)).await {
                Ok(stat) => return Ok(Some(version(&stat))),
                Err(ZkError::BadVersion | ZkError::NoNode) => continue,
                Err(err) => return Err(store_error(err)),
            }
        }
        Err(contended(key))
    }

    async fn delete_tree(
        &self,
        client: &Client,
        key: &KeyPath,
        path: &str,
        cas: Option<u64>,
    ) -> Result<Option<u64>, StoreError> {
        for _ in 0..MAX_ATTEMPTS {
            let nodes = list_tree(&self.shared, client, path)
                .await
                .map_err(store_error)?;
            let top = nodes.iter().find(|node| node.path == path);
            // With CAS the top key's data version joins the transaction's checks.
            let mut guard = None;
            if let Some(expected) = cas {
                let live = top.filter(|node| node.is_live());
                check_cas(key, expected, live.map(Node::version))?;
                guard = top.map(|node| (node.path.as_str(), node.stat.version));
            }
            let live: Vec<&Node> = nodes.iter().filter(|node| node.is_live()).collect();
            if live.is_empty() {
                return Ok(None);
            }
            match self.tombstone_all(client, guard, &live).await {
                Ok(version) => return Ok(Some(version)),
                Err(ZkError::BadVersion | ZkError::NoNode) => continue,
                Err(err) => return Err(store_error(err)),
            }
        }
        Err(contended(key))
    }

    /// Tombstones `nodes` with version checks in as few `multi` transactions as ZooKeeper
    /// allows (one unless the subtree is huge); returns the zxid of the last one.
    async fn tombstone_all(
        &self,
        client: &Client,
        guard: Option<(&str, i32)>,
        nodes: &[&Node],
    ) -> Result<u64, ZkError> {
        let mut zxid = 0;
        let mut rest = nodes;
        let mut first = true;
        while !rest.is_empty() {
            let mut writer = client.new_multi_writer();
            if first {
                if let Some((path, data_version)) = guard {
                    writer.add_check_version(path, data_version)?;
                }
            }
            let mut taken = 0;
            let mut bytes = 0;
            for node in rest {
                if taken == MULTI_MAX_OPS
                    || (taken > 0 && bytes + node.path.len() > MULTI_MAX_BYTES)
                {
                    break;
                }
                writer.add_set_data(&node.path, &[], Some(node.stat.version))?;
                taken += 1;
                bytes += node.path.len() + 32;
            }
            let commit = writer.commit().map(|done| done.map_err(ZkError::from));
            for result in self.shared.call(Op::Multi, commit).await? {
                if let MultiWriteResult::SetData { stat } = result {
                    zxid = zxid.max(version(&stat));
                }
            }
            rest = &rest[taken..];
            first = false;
        }
        Ok(zxid)
    }
}

#[async_trait]
impl Store for ZkStore {
    fn kind(&self) -> &'static str {
        "zookeeper"
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let (reply, answer) = oneshot::channel();
        let stopped =
            || StoreError::Unavailable("the zookeeper event pipeline stopped".to_string());
        self.commands
            .send(Command::Snapshot(reply))
            .map_err(|_| stopped())?;
        let patience = self.shared.call_timeout * 2;
        match tokio::time::timeout(patience, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(stopped()),
            Err(_) => Err(StoreError::Unavailable(format!(
                "no consistent listing of the registry from zookeeper within {patience:?}"
            ))),
        }
    }

    async fn put(
        &self,
        key: &KeyPath,
        value: &serde_json::Value,
        cas: Option<u64>,
    ) -> Result<u64, StoreError> {
        let data = encode_value(value)?;
        let path = self.shared.layout.znode(key);
        let limit = value_limit(self.max_request_bytes, &path);
        if data.len() > limit {
            return Err(StoreError::TooLarge {
                size: data.len(),
                limit,
            });
        }
        let client = self.shared.client();
        match cas {
            None => self.put_any(&client, key, &path, &data).await,
            Some(0) => self.put_new(&client, key, &path, &data).await,
            Some(expected) => self.put_over(&client, key, &path, &data, expected).await,
        }
    }

    async fn delete(
        &self,
        key: &KeyPath,
        cas: Option<u64>,
        recurse: bool,
    ) -> Result<Option<u64>, StoreError> {
        let client = self.shared.client();
        let path = self.shared.layout.znode(key);
        if recurse {
            self.delete_tree(&client, key, &path, cas).await
        } else {
            self.delete_one(&client, key, &path, cas).await
        }
    }

    fn events(&self) -> mpsc::Receiver<StoreEvent> {
        self.events_with_capacity(EVENT_CHANNEL_CAPACITY)
    }
}

async fn collect_garbage_periodically(shared: Arc<Shared>, mut stop: watch::Receiver<()>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(GC_INTERVAL) => {}
            _ = stop.changed() => return,
        }
        match collect_garbage(&shared, TOMBSTONE_TTL).await {
            Ok(0) => {}
            Ok(removed) => tracing::debug!(removed, "removed old registry tombstones"),
            Err(err) => tracing::warn!(error = %err, "registry tombstone collection failed"),
        }
    }
}

/// Deletes tombstones and placeholders without children whose last change is older than
/// `older_than`, each with its expected data version: a writer racing with it just retries.
async fn collect_garbage(shared: &Shared, older_than: Duration) -> Result<usize, StoreError> {
    let client = shared.client();
    let base = shared.layout.base();
    let nodes = list_tree(shared, &client, base)
        .await
        .map_err(store_error)?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64);
    let cutoff = now_ms.saturating_sub(older_than.as_millis() as i64);
    let doomed: Vec<&Node> = nodes
        .iter()
        .filter(|node| {
            node.path != base
                && !node.is_live()
                && node.stat.num_children == 0
                && node.stat.mtime <= cutoff
        })
        .collect();
    let mut removed = 0;
    for wave in doomed.chunks(256) {
        let deletes = wave.iter().map(|node| {
            let request = client.delete(&node.path, Some(node.stat.version));
            shared.call(Op::Delete, request)
        });
        for deleted in join_all(deletes).await {
            match deleted {
                Ok(()) => removed += 1,
                Err(ZkError::NoNode | ZkError::BadVersion | ZkError::NotEmpty) => {}
                Err(err) => return Err(store_error(err)),
            }
        }
    }
    Ok(removed)
}

fn version(stat: &Stat) -> u64 {
    stat.mzxid.max(0) as u64
}

/// Maps a failed write. Values over ZooKeeper's default packet limit only get here when the
/// operator raised `--zookeeper-max-request-bytes`; a connection dropped on one may be a server
/// whose `jute.maxbuffer` is lower after all, or the server failing for another reason: the
/// error says both, and stays a 503 (not a 413 that would blame the value).
fn write_error(err: ZkError, value_len: usize) -> StoreError {
    let limit = ZK_DEFAULT_MAX_PACKET - PACKET_OVERHEAD;
    if matches!(err, ZkError::ConnectionLoss) && value_len > limit {
        return StoreError::Unavailable(format!(
            "zookeeper dropped the connection during a write of a {value_len}-byte value; \
             that is over zookeeper's default jute.maxbuffer ({ZK_DEFAULT_MAX_PACKET}), so check \
             that the servers' jute.maxbuffer is at least --zookeeper-max-request-bytes"
        ));
    }
    store_error(err)
}

/// The largest value a write of `path` can carry within requests of `max_request` bytes.
fn value_limit(max_request: usize, path: &str) -> usize {
    max_request.saturating_sub(REQUEST_FRAMING + path.len())
}

fn check_cas(key: &KeyPath, expected: u64, live_version: Option<u64>) -> Result<(), StoreError> {
    let found = live_version.unwrap_or(0);
    if found == expected {
        Ok(())
    } else {
        Err(mismatch(key, expected, found))
    }
}

fn mismatch(key: &KeyPath, expected: u64, found: u64) -> StoreError {
    StoreError::CasMismatch {
        key: key.to_string(),
        expected,
        found,
    }
}

fn contended(key: &KeyPath) -> StoreError {
    StoreError::Unavailable(format!(
        "gave up writing {key} after {MAX_ATTEMPTS} conflicting attempts"
    ))
}
