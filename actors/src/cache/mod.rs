//! The node side of `ctx.cache(..)`: groupcache over a group's instances (see `lathe::cache`).
//!
//! - [`CacheHost`] (one per node) knows the caches of the instances running here, by
//!   (group, index, name), and runs the node's [`CacheServer`] actor, through which other nodes
//!   ask this node's instances for the keys they own. The server joins the process group
//!   `lathe.cache.<node>`, so a peer finds it from the owner's endpoint record (which names its
//!   node).
//! - [`GroupCache`] is one instance's cache: a main LRU for the keys it owns, a hot LRU for copies
//!   of other owners' popular keys, and single-flight loads. The owner of a key comes from a
//!   consistent-hash [`ring::Ring`] over the group's live endpoints (the node's endpoint cache,
//!   kept current by a registry subscription).
//!
//! ```text
//! get(key) ─▶ main / hot hit? ─▶ owner = ring(live instances, key)
//!               owner is me ─▶ single-flight load ─▶ main
//!               owner on this node ─▶ its GroupCache::serve
//!               owner elsewhere ─▶ CacheServer of its node (ractor_cluster call) ─▶ 1 in 10 → hot
//!               owner unreachable ─▶ single-flight load here, not kept
//! ```

mod lru;
pub(crate) mod ring;

#[cfg(test)]
pub(crate) mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use lathe::cache::{CacheBackend, CacheError, CacheLoader, CacheStats};
use lathe::{Cache, LookupError, TaskRef};
use lathe_supervisors::supervised::{
    factory, spawn_supervised, ChildSpec, KeeperMsg, SERVER_RESTARTS,
};
use lathe_supervisors::tree::{ActorKind, TreeScope};
use ractor::{pg, Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use lru::Lru;
use ring::Ring;

/// How long a peer may take to answer for a key it owns (its loader included).
const PEER_TIMEOUT: Duration = Duration::from_secs(10);
/// One answer from a peer in this many is kept in the hot cache.
const HOT_ONE_IN: u64 = 10;
/// The hot cache's share of a cache's byte budget.
const HOT_SHARE: usize = 8;

/// The process group of node `node`'s cache server.
fn server_group(node: &str) -> String {
    format!("lathe.cache.{node}")
}

/// Where an instance's cache finds the group's live instances.
#[async_trait]
pub trait Peers: Send + Sync + 'static {
    async fn live(&self, group: &str) -> Result<TaskRef, LookupError>;
}

#[async_trait]
impl Peers for crate::tasks::EndpointCache {
    async fn live(&self, group: &str) -> Result<TaskRef, LookupError> {
        self.get_ref(group).await
    }
}

type CacheKey = (String, u32, String);
/// One load in progress: its callers wait on the cell.
type Flight = Arc<OnceCell<Result<Bytes, CacheError>>>;

/// The caches of one node's instances, and the node's cache server.
pub struct CacheHost {
    node: String,
    peers: Arc<dyn Peers>,
    caches: RwLock<HashMap<CacheKey, Weak<GroupCache>>>,
    /// `lathe_cache_gets_total{group,cache,outcome}`, when the node exports it.
    gets: Option<prometheus::IntCounterVec>,
}

impl CacheHost {
    pub fn new(node: impl Into<String>, peers: Arc<dyn Peers>) -> Arc<CacheHost> {
        Self::counted(node, peers, None)
    }

    /// Like [`CacheHost::new`], counting every get in `gets`
    /// (`lathe_cache_gets_total{group,cache,outcome}`).
    pub fn counted(
        node: impl Into<String>,
        peers: Arc<dyn Peers>,
        gets: Option<prometheus::IntCounterVec>,
    ) -> Arc<CacheHost> {
        Arc::new(CacheHost {
            node: node.into(),
            peers,
            caches: RwLock::default(),
            gets,
        })
    }

    /// Starts the node's [`CacheServer`] (other nodes reach this node's caches through it), kept
    /// running at `<scope>/cache-server` under `parent`.
    pub async fn serve(
        self: &Arc<Self>,
        scope: &TreeScope,
        parent: Option<ActorCell>,
    ) -> anyhow::Result<ActorRef<KeeperMsg>> {
        let spec = ChildSpec {
            scope: scope.clone(),
            name: "cache-server".to_string(),
            kind: ActorKind::CacheServer,
            limits: SERVER_RESTARTS,
            factory: factory(CacheServer, self.clone()),
        };
        Ok(spawn_supervised(spec, parent).await?)
    }

    /// The cache `name` of instance `index` of `group`; a second call (a restarted instance)
    /// replaces the first.
    pub fn register(
        self: &Arc<Self>,
        group: &str,
        index: u32,
        name: &str,
        capacity_bytes: usize,
        loader: Arc<dyn CacheLoader>,
    ) -> Result<Cache, CacheError> {
        if name.is_empty() || name.len() > 128 {
            return Err(CacheError::Unavailable(format!(
                "a cache name must be 1 to 128 bytes, got {:?}",
                name
            )));
        }
        let cache = Arc::new(GroupCache {
            group: group.to_string(),
            index,
            name: name.to_string(),
            host: Arc::downgrade(self),
            main: Mutex::new(Lru::new(capacity_bytes - capacity_bytes / HOT_SHARE)),
            hot: Mutex::new(Lru::new(capacity_bytes / HOT_SHARE)),
            flights: Mutex::new(HashMap::new()),
            loader,
            stats: Stats::default(),
        });
        let key = (group.to_string(), index, name.to_string());
        let mut caches = self.caches.write().unwrap_or_else(|e| e.into_inner());
        caches.retain(|_, cache| cache.strong_count() > 0);
        caches.insert(key, Arc::downgrade(&cache));
        Ok(Cache::new(cache))
    }

    fn find(&self, group: &str, index: u32, name: &str) -> Option<Arc<GroupCache>> {
        let caches = self.caches.read().unwrap_or_else(|e| e.into_inner());
        caches
            .get(&(group.to_string(), index, name.to_string()))
            .and_then(Weak::upgrade)
    }

    /// Answers another instance's request for a key `index` of `group` owns.
    async fn answer(&self, request: GetRequest) -> Result<Vec<u8>, AskError> {
        let cache = self
            .find(&request.group, request.index, &request.name)
            .ok_or_else(|| AskError::NoCache {
                group: request.group.clone(),
                index: request.index,
                name: request.name.clone(),
                node: self.node.clone(),
            })?;
        let value = cache.serve(&request.key).await?;
        Ok(value.to_vec())
    }
}

/// Why the owner of a key did not give its value. It crosses to the asking node as text
/// ([`CacheRequest::Get`]'s reply), which comes back as [`AskError::Remote`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum AskError {
    /// The owning instance has no cache of that name (not created yet, or dropped).
    #[error("{group}/{index} has no cache {name:?} on node {node}")]
    NoCache {
        group: String,
        index: u32,
        name: String,
        node: String,
    },
    /// The owner's cache could not serve the key (its loader failed).
    #[error(transparent)]
    Serve(#[from] CacheError),
    /// The owner's node has no cache server in the cluster's process groups.
    #[error("node {0} serves no cache")]
    NoServer(String),
    /// The owner's node did not answer within [`PEER_TIMEOUT`].
    #[error("node {0} did not answer in {PEER_TIMEOUT:?}")]
    Timeout(String),
    /// The owner's node dropped the call without answering.
    #[error("node {0} dropped the request")]
    Dropped(String),
    /// The call could not be sent to the owner's node.
    #[error("cannot reach node {node}: {error}")]
    Unreachable {
        node: String,
        error: ractor::MessagingErr<()>,
    },
    /// The owner's node answered with an error: the text it sent.
    #[error("{0}")]
    Remote(String),
}

#[derive(Default)]
struct Stats {
    gets: AtomicU64,
    hits: AtomicU64,
    hot_hits: AtomicU64,
    peer_gets: AtomicU64,
    loads: AtomicU64,
    served: AtomicU64,
}

/// One instance's cache of one name.
pub struct GroupCache {
    group: String,
    index: u32,
    name: String,
    host: Weak<CacheHost>,
    main: Mutex<Lru>,
    hot: Mutex<Lru>,
    /// Loads in progress: every caller of a key waits on the same cell.
    flights: Mutex<HashMap<String, Flight>>,
    loader: Arc<dyn CacheLoader>,
    stats: Stats,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl GroupCache {
    /// A key this instance owns: the main cache, else one load however many ask.
    async fn serve(&self, key: &str) -> Result<Bytes, CacheError> {
        self.stats.served.fetch_add(1, Ordering::Relaxed);
        if let Some(value) = lock(&self.main).get(key) {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(value);
        }
        self.load(key, true).await
    }

    /// Loads `key` once for every concurrent caller; `keep`: into the main cache (only for keys
    /// this instance owns: a value loaded for want of its owner is not kept, or this instance
    /// would go on answering its own copy after the owner is back).
    async fn load(&self, key: &str, keep: bool) -> Result<Bytes, CacheError> {
        let cell = lock(&self.flights)
            .entry(key.to_string())
            .or_insert_with(|| Arc::new(OnceCell::new()))
            .clone();
        let result = cell
            .get_or_init(|| async {
                // Another flight may have finished between the caller's miss and now.
                if let Some(value) = lock(&self.main).get(key) {
                    return Ok(value);
                }
                self.stats.loads.fetch_add(1, Ordering::Relaxed);
                match self.loader.load(key).await {
                    Ok(value) => {
                        let value = Bytes::from(value);
                        if keep {
                            lock(&self.main).insert(key, value.clone());
                        }
                        Ok(value)
                    }
                    Err(reason) => Err(CacheError::Load {
                        key: key.to_string(),
                        reason,
                    }),
                }
            })
            .await
            .clone();
        let mut flights = lock(&self.flights);
        if flights.get(key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            flights.remove(key);
        }
        result
    }

    /// Asks the owner `owner` of `key` (another instance).
    async fn ask(
        &self,
        host: &CacheHost,
        owner: &lathe::Endpoint,
        key: &str,
    ) -> Result<Bytes, AskError> {
        let request = GetRequest {
            group: self.group.clone(),
            index: owner.index,
            name: self.name.clone(),
            key: key.to_string(),
        };
        if owner.node == host.node {
            return host.answer(request).await.map(Bytes::from);
        }
        let node = || owner.node.clone();
        let server = pg::get_members(&server_group(&owner.node))
            .into_iter()
            .next()
            .ok_or_else(|| AskError::NoServer(node()))?;
        let server: ActorRef<CacheRequest> = server.into();
        match server
            .call(
                |reply| CacheRequest::Get(request, reply),
                Some(PEER_TIMEOUT),
            )
            .await
        {
            Ok(ractor::rpc::CallResult::Success(answer)) => {
                answer.map(Bytes::from).map_err(AskError::Remote)
            }
            Ok(ractor::rpc::CallResult::Timeout) => Err(AskError::Timeout(node())),
            Ok(ractor::rpc::CallResult::SenderError) => Err(AskError::Dropped(node())),
            Err(error) => Err(AskError::Unreachable {
                node: node(),
                error: error.map(|_| ()),
            }),
        }
    }
}

impl GroupCache {
    /// One get, and how it was answered (the `outcome` label of `lathe_cache_gets_total`).
    async fn get_from(
        &self,
        host: &CacheHost,
        key: &str,
    ) -> (Result<Bytes, CacheError>, &'static str) {
        if let Some(value) = lock(&self.main).get(key) {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return (Ok(value), "hit");
        }
        if let Some(value) = lock(&self.hot).get(key) {
            self.stats.hot_hits.fetch_add(1, Ordering::Relaxed);
            return (Ok(value), "hot");
        }
        let live = host.peers.live(&self.group).await;
        let owner = live.ok().and_then(|live| {
            let ring = Ring::new(&self.group, live.instances.iter().map(|e| e.index));
            let index = ring.owner(key)?;
            live.instances.iter().find(|e| e.index == index).cloned()
        });
        match owner {
            Some(owner) if owner.index != self.index => match self.ask(host, &owner, key).await {
                Ok(value) => {
                    let peer_gets = self.stats.peer_gets.fetch_add(1, Ordering::Relaxed);
                    if peer_gets.is_multiple_of(HOT_ONE_IN) {
                        lock(&self.hot).insert(key, value.clone());
                    }
                    (Ok(value), "peer")
                }
                Err(reason) => {
                    tracing::warn!(
                        group = %self.group,
                        cache = %self.name,
                        owner = owner.index,
                        %reason,
                        "cache owner out of reach: loading here"
                    );
                    (self.load(key, false).await, "fallback")
                }
            },
            Some(_) => (self.load(key, true).await, "load"),
            // The group's instances are not known (yet): no owner to keep it for.
            None => (self.load(key, false).await, "fallback"),
        }
    }
}

#[async_trait]
impl CacheBackend for GroupCache {
    async fn get(&self, key: &str) -> Result<Bytes, CacheError> {
        self.stats.gets.fetch_add(1, Ordering::Relaxed);
        let Some(host) = self.host.upgrade() else {
            // The node is shutting down.
            return self.load(key, false).await;
        };
        let (result, outcome) = self.get_from(&host, key).await;
        if let Some(gets) = &host.gets {
            let outcome = if result.is_ok() { outcome } else { "error" };
            gets.with_label_values(&[self.group.as_str(), self.name.as_str(), outcome])
                .inc();
        }
        result
    }

    fn stats(&self) -> CacheStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        CacheStats {
            gets: read(&self.stats.gets),
            hits: read(&self.stats.hits),
            hot_hits: read(&self.stats.hot_hits),
            peer_gets: read(&self.stats.peer_gets),
            loads: read(&self.stats.loads),
            served: read(&self.stats.served),
        }
    }
}

/// A request for a key its owner holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetRequest {
    pub group: String,
    pub index: u32,
    pub name: String,
    pub key: String,
}

/// What other nodes ask this node's cache server. The reply's error is text: the wire protocol
/// between nodes.
#[derive(RactorClusterMessage)]
pub enum CacheRequest {
    #[rpc]
    Get(GetRequest, RpcReplyPort<Result<Vec<u8>, String>>),
}

/// Serves the keys this node's instances own to the other nodes.
#[derive(Clone)]
pub struct CacheServer;

impl Actor for CacheServer {
    type Msg = CacheRequest;
    type State = Arc<CacheHost>;
    type Arguments = Arc<CacheHost>;

    async fn pre_start(
        &self,
        myself: ActorRef<CacheRequest>,
        host: Arc<CacheHost>,
    ) -> Result<Arc<CacheHost>, ActorProcessingErr> {
        pg::join(server_group(&host.node), vec![myself.get_cell()]);
        Ok(host)
    }

    async fn handle(
        &self,
        _myself: ActorRef<CacheRequest>,
        request: CacheRequest,
        host: &mut Arc<CacheHost>,
    ) -> Result<(), ActorProcessingErr> {
        let host = host.clone();
        // A load may take a while: never in the handler, which serves every other request.
        tokio::spawn(async move {
            match request {
                CacheRequest::Get(request, reply) => {
                    let _ = reply.send(host.answer(request).await.map_err(|e| e.to_string()));
                }
            }
        });
        Ok(())
    }
}
