//! `RegistrySupervisor`: keeps the feed and the shards running.
//!
//! ```text
//! RegistrySupervisor
//! ├── RegistryFeed          if it dies, everything below restarts (rest-for-one from the feed)
//! └── RegistryShard × k     if one dies, it alone restarts and re-attaches to the feed
//! ```
//!
//! More than [`MAX_RESTARTS`] restarts within [`RESTART_WINDOW`] means something is wrong beyond
//! one actor: the supervisor then fails itself and lets its own supervisor decide. It reports its
//! children to the node's supervision tree (`node/registry/feed`, `node/registry/shard-N`).

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use lathe_store::Store;
use lathe_supervisors::policy::{RestartBudget, RestartLimits};
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use ractor_cluster::RactorMessage;
use tokio::sync::watch;

use super::feed::{FeedArgs, FeedMsg, RegistryFeed, ShardTable};
use super::metrics::RegistryMetrics;
use super::shard::{RegistryShard, ShardArgs, ShardMsg};
use super::slice::SliceMap;
use super::RegistryHandle;
use crate::tree::{ActorKind, TreeScope};

const MAX_RESTARTS: u32 = 20;
const RESTART_WINDOW: Duration = Duration::from_secs(10);

/// How the registry of one node is laid out.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Number of shards (slices of the key space) on this node.
    pub shards: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig { shards: 4 }
    }
}

/// Starts the registry under `parent` (or unsupervised) and returns its handle and supervisor.
pub async fn start_registry(
    config: RegistryConfig,
    store: Arc<dyn Store>,
    metrics: &prometheus::Registry,
    parent: Option<ActorCell>,
) -> anyhow::Result<(RegistryHandle, ActorRef<RegistrySupervisorMsg>)> {
    let tree = TreeScope::detached("node/registry");
    start_registry_in(config, store, metrics, parent, tree).await
}

/// Like [`start_registry`], reporting the feed and the shards under `tree` (the registry's place
/// in the node's supervision tree, `node/registry`).
pub async fn start_registry_in(
    config: RegistryConfig,
    store: Arc<dyn Store>,
    metrics: &prometheus::Registry,
    parent: Option<ActorCell>,
    tree: TreeScope,
) -> anyhow::Result<(RegistryHandle, ActorRef<RegistrySupervisorMsg>)> {
    let slices = SliceMap::new(config.shards);
    let (index_tx, index_rx) = watch::channel(0);
    let feed_slot = Arc::new(RwLock::new(None));
    let table: ShardTable = Arc::new(RwLock::new(vec![None; slices.shards()]));
    let args = SupervisorArgs {
        store: store.clone(),
        slices,
        table: table.clone(),
        feed_slot: feed_slot.clone(),
        index: index_tx,
        metrics: RegistryMetrics::register(metrics)?,
        tree,
    };
    let (supervisor, _) = match parent {
        Some(parent) => Actor::spawn_linked(None, RegistrySupervisor, args, parent).await?,
        None => Actor::spawn(None, RegistrySupervisor, args).await?,
    };
    let handle = RegistryHandle {
        feed: feed_slot,
        shards: table,
        slices,
        index: index_rx,
        next_subscription: Arc::new(AtomicU64::new(1)),
        store_kind: store.kind(),
    };
    Ok((handle, supervisor))
}

#[derive(RactorMessage)]
pub enum RegistrySupervisorMsg {}

pub(crate) struct RegistrySupervisor;

pub(crate) struct SupervisorArgs {
    store: Arc<dyn Store>,
    slices: SliceMap,
    table: ShardTable,
    feed_slot: Arc<RwLock<Option<ActorRef<FeedMsg>>>>,
    index: watch::Sender<u64>,
    metrics: RegistryMetrics,
    tree: TreeScope,
}

pub(crate) struct SupervisorState {
    args: SupervisorArgs,
    feed: ActorRef<FeedMsg>,
    shards: Vec<ActorRef<ShardMsg>>,
    expected_stops: HashSet<ActorId>,
    restarts: RestartBudget,
}

impl Actor for RegistrySupervisor {
    type Msg = RegistrySupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let feed = spawn_feed(&myself, &args).await?;
        let mut shards = Vec::with_capacity(args.slices.shards());
        for number in 0..args.slices.shards() {
            shards.push(spawn_shard(&myself, &args, &feed, number).await?);
        }
        Ok(SupervisorState {
            args,
            feed,
            shards,
            expected_stops: HashSet::new(),
            restarts: RestartBudget::new(RestartLimits::immediate(MAX_RESTARTS, RESTART_WINDOW)),
        })
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match event {
            SupervisionEvent::ActorFailed(cell, error) => (cell, error.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "stopped".to_string()))
            }
            _ => return Ok(()),
        };
        if state.expected_stops.remove(&cell.get_id()) {
            return Ok(());
        }
        state.count_restart()?;
        if cell.get_id() == state.feed.get_id() {
            tracing::warn!(%reason, "registry feed died: restarting the feed and every shard");
            if let Ok(mut slot) = state.args.feed_slot.write() {
                *slot = None;
            }
            let tree = &state.args.tree;
            tree.restarting("feed", ActorKind::RegistryFeed, &reason);
            for (number, shard) in state.shards.iter().enumerate() {
                state.expected_stops.insert(shard.get_id());
                shard.stop(Some("registry feed restarting".into()));
                let name = shard_name(number);
                tree.restarting(&name, ActorKind::RegistryShard, "registry feed restarting");
            }
            state.feed = spawn_feed(&myself, &state.args).await?;
            for number in 0..state.shards.len() {
                state.shards[number] =
                    spawn_shard(&myself, &state.args, &state.feed, number).await?;
            }
        } else if let Some(number) = state
            .shards
            .iter()
            .position(|s| s.get_id() == cell.get_id())
        {
            tracing::warn!(shard = number, %reason, "registry shard died: restarting it");
            let name = shard_name(number);
            state
                .args
                .tree
                .restarting(&name, ActorKind::RegistryShard, &reason);
            state.shards[number] = spawn_shard(&myself, &state.args, &state.feed, number).await?;
        }
        Ok(())
    }
}

impl SupervisorState {
    fn count_restart(&mut self) -> Result<(), ActorProcessingErr> {
        if self.restarts.allow(Instant::now()) {
            return Ok(());
        }
        Err(
            format!("registry restarted {MAX_RESTARTS} times within {RESTART_WINDOW:?}: giving up")
                .into(),
        )
    }
}

async fn spawn_feed(
    supervisor: &ActorRef<RegistrySupervisorMsg>,
    args: &SupervisorArgs,
) -> Result<ActorRef<FeedMsg>, ActorProcessingErr> {
    let feed_args = FeedArgs {
        store: args.store.clone(),
        slices: args.slices,
        table: args.table.clone(),
        index: args.index.clone(),
        metrics: args.metrics.clone(),
    };
    let (feed, _) =
        Actor::spawn_linked(None, RegistryFeed, feed_args, supervisor.get_cell()).await?;
    args.tree
        .started("feed", ActorKind::RegistryFeed, &feed.get_cell());
    if let Ok(mut slot) = args.feed_slot.write() {
        *slot = Some(feed.clone());
    }
    Ok(feed)
}

async fn spawn_shard(
    supervisor: &ActorRef<RegistrySupervisorMsg>,
    args: &SupervisorArgs,
    feed: &ActorRef<FeedMsg>,
    number: usize,
) -> Result<ActorRef<ShardMsg>, ActorProcessingErr> {
    let shard_args = ShardArgs {
        number,
        feed: feed.clone(),
        store: args.store.clone(),
        metrics: args.metrics.clone(),
    };
    let (shard, _) =
        Actor::spawn_linked(None, RegistryShard, shard_args, supervisor.get_cell()).await?;
    args.tree.started(
        &shard_name(number),
        ActorKind::RegistryShard,
        &shard.get_cell(),
    );
    Ok(shard)
}

/// A shard's name in the supervision tree: `shard-2`.
fn shard_name(number: usize) -> String {
    format!("shard-{number}")
}
