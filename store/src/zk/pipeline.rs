//! The event pipeline of a ZooKeeper store: one task, one persistent recursive watch on the
//! registry's base znode, any number of consumers.
//!
//! ```text
//! ZooKeeper ──notifications──▶ PersistentWatcher ──▶ Pipeline ──Changes / Resync──▶ Hub ──▶ consumers
//!     ▲                                                 │
//!     └───────────── get_data / get_children ───────────┘ (zxid −1 in 3.8 events: read mzxid)
//! ```
//!
//! **Ordering.** ZooKeeper sends a notification before any read response that shows its effect,
//! and zookeeper-client queues notifications before it completes the reads that follow them on
//! the wire. So the pipeline takes the queued notifications, reads their znodes (pipelined), and
//! drains again; once a drain after the reads comes back empty, every change at or below the
//! highest version read has been captured. It then sorts by version, keeps the newest read per
//! znode, drops what it already sent and emits one `Changes` batch. A full listing
//! (`snapshot()`, a new consumer, a reconnect) goes through the same "drain until quiescent" step,
//! so its index is exact too.
//!
//! **Gaps.** Persistent watches can miss events across a reconnect (ZOOKEEPER-4698): after
//! `Disconnected` the pipeline re-lists once connected again and sends every consumer
//! `Resync(snapshot)`. An expired session is final: the pipeline opens a new session (with
//! back-off until ZooKeeper answers), installs its client for the writers, re-creates the watch
//! and re-syncs everyone.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use zookeeper_client::{AddWatchMode, Client, Error as ZkError, EventType, PersistentWatcher};
use zookeeper_client::{SessionState, WatchedEvent};

use super::session::{Op, Shared};
use super::tree::{list_tree, read_nodes, Node};
use crate::hub::Hub;
use crate::{Snapshot, StoreError, StoreEvent, StoredEntry};

/// How often the pipeline looks again at work it could not do (a failed listing, a consumer
/// without room).
const RETRY_TICK: Duration = Duration::from_millis(500);
/// The longest pause between attempts to open a new session.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);

/// What the store asks of its pipeline.
pub(super) enum Command {
    /// A new consumer: it gets `Resync(snapshot)` first.
    Subscribe(mpsc::Sender<StoreEvent>),
    /// A consistent snapshot for `Store::snapshot`.
    Snapshot(oneshot::Sender<Result<Snapshot, StoreError>>),
}

/// Why a read-and-drain round stopped early.
enum Interrupt {
    /// The watch reported a session change: handled by the caller.
    Session(SessionState),
    /// A read failed: what was drained is lost, so everyone needs a re-sync.
    Failed(ZkError),
}

/// How serving one session ended.
enum SessionEnd {
    Expired,
    StoreDropped,
}

pub(super) struct Pipeline {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedReceiver<Command>,
    hub: Hub,
    /// The highest version sent to consumers (or covered by a snapshot they got).
    emitted: u64,
    waiting: Vec<Waiter>,
}

/// A `snapshot()` caller. A disconnect or a failed listing does not fail it at once: ZooKeeper
/// restarts and connection blips are usually over within a session timeout, so the caller waits
/// for the next listing until its deadline and only then gets the error.
struct Waiter {
    deadline: Instant,
    reply: oneshot::Sender<Result<Snapshot, StoreError>>,
}

/// Where one session stands.
struct SessionView {
    connected: bool,
    /// Consumers may have missed changes: everyone gets a `Resync` at the next listing.
    gap: bool,
    /// No listing before this instant (after a failed one).
    next_listing: Instant,
}

impl Pipeline {
    pub(super) fn new(shared: Arc<Shared>, commands: mpsc::UnboundedReceiver<Command>) -> Self {
        Pipeline {
            shared,
            commands,
            hub: Hub::default(),
            emitted: 0,
            waiting: Vec::new(),
        }
    }

    /// Runs until the store is dropped, starting with the session the store opened.
    pub(super) async fn run(mut self, first: Client) {
        let mut client = Some(first);
        loop {
            let current = match client.take() {
                Some(current) => current,
                None => match self.reconnect().await {
                    Some(current) => current,
                    None => return,
                },
            };
            match self.serve(current).await {
                SessionEnd::Expired => {
                    tracing::warn!("zookeeper session expired; opening a new one")
                }
                SessionEnd::StoreDropped => return,
            }
        }
    }

    /// Opens a new session, retrying with back-off until ZooKeeper answers.
    async fn reconnect(&mut self) -> Option<Client> {
        let mut delay = Duration::from_millis(100);
        loop {
            let shared = Arc::clone(&self.shared);
            match self
                .alongside_commands(async move { shared.open_session().await })
                .await?
            {
                Ok(client) => {
                    tracing::info!(session = %client.session_id(), "new zookeeper session");
                    self.shared.replace_client(client.clone());
                    return Some(client);
                }
                Err(err) => {
                    tracing::warn!(error = %err, "zookeeper unavailable; retrying");
                    let why = format!("no zookeeper session: {err}");
                    self.fail_overdue(&StoreError::Unavailable(why));
                }
            }
            self.alongside_commands(tokio::time::sleep(delay)).await?;
            delay = (delay * 2).min(MAX_RECONNECT_DELAY);
        }
    }

    /// Awaits `work` while still taking commands; `None` when the store was dropped.
    async fn alongside_commands<T>(&mut self, work: impl Future<Output = T>) -> Option<T> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return Some(out),
                command = self.commands.recv() => self.take(command?),
            }
        }
    }

    fn take(&mut self, command: Command) {
        match command {
            Command::Subscribe(sender) => self.hub.add(sender),
            Command::Snapshot(reply) => self.waiting.push(Waiter {
                deadline: Instant::now() + self.shared.call_timeout,
                reply,
            }),
        }
    }

    /// Answers `err` to the `snapshot()` callers whose deadline has passed; the others keep
    /// waiting for the next listing.
    fn fail_overdue(&mut self, err: &StoreError) {
        let now = Instant::now();
        let (overdue, patient) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|waiter| waiter.deadline <= now);
        self.waiting = patient;
        for waiter in overdue {
            let _ = waiter.reply.send(Err(err.clone()));
        }
    }

    /// Serves one session until it expires or the store is dropped.
    async fn serve(&mut self, client: Client) -> SessionEnd {
        let Some(mut watcher) = self.watch(&client).await else {
            return if client.state().is_terminated() {
                SessionEnd::Expired
            } else {
                SessionEnd::StoreDropped
            };
        };
        let mut view = SessionView {
            connected: true,
            gap: true,
            next_listing: Instant::now(),
        };
        let mut retry = tokio::time::interval(RETRY_TICK);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if !view.connected {
                let why = "disconnected from zookeeper".to_string();
                self.fail_overdue(&StoreError::Unavailable(why));
            }
            let wanted = view.gap || !self.waiting.is_empty() || self.hub.wants_snapshot();
            if wanted && view.connected && Instant::now() >= view.next_listing {
                match self.relist(&client, &mut watcher, view.gap).await {
                    Ok(()) => view.gap = false,
                    Err(Interrupt::Session(state)) => {
                        let change = self.on_session(&client, &mut watcher, &mut view, state);
                        if let Some(end) = change.await {
                            return end;
                        }
                    }
                    Err(Interrupt::Failed(err)) => {
                        tracing::warn!(error = %err, "listing the registry in zookeeper failed");
                        // Notifications drained while listing are lost with it.
                        view.gap = true;
                        self.fail_overdue(&super::session::store_error(err));
                        view.next_listing = Instant::now() + RETRY_TICK;
                    }
                }
            }
            tokio::select! {
                event = watcher.changed() => {
                    // While a gap is open, consumers wait for the re-list, which reads every
                    // znode as it is now: publishing a live change before it would put newer
                    // changes ahead of the older ones the re-list finds. Only session events
                    // matter then.
                    if view.gap && event.event_type != EventType::Session {
                        continue;
                    }
                    match self.on_event(&client, &mut watcher, event).await {
                        Ok(()) => {}
                        Err(Interrupt::Session(state)) => {
                            let change = self.on_session(&client, &mut watcher, &mut view, state);
                            if let Some(end) = change.await {
                                return end;
                            }
                        }
                        Err(Interrupt::Failed(err)) => {
                            // The notifications drained for this batch are lost.
                            tracing::warn!(error = %err,
                                "reading registry changes failed; re-syncing");
                            view.gap = true;
                        }
                    }
                }
                command = self.commands.recv() => match command {
                    Some(command) => self.take(command),
                    None => return SessionEnd::StoreDropped,
                },
                _ = retry.tick() => {}
            }
        }
    }

    /// Takes in a session change; `Some` when serving this session is over.
    async fn on_session(
        &mut self,
        client: &Client,
        watcher: &mut PersistentWatcher,
        view: &mut SessionView,
        state: SessionState,
    ) -> Option<SessionEnd> {
        match state {
            SessionState::Disconnected => {
                tracing::info!("zookeeper disconnected; will re-sync after reconnecting");
                view.connected = false;
                view.gap = true;
                None
            }
            SessionState::SyncConnected | SessionState::ConnectedReadOnly => {
                // zookeeper-client 0.11.2 re-registers watches on reconnect with `SetWatches`,
                // which has no room for persistent watches (its `resend_watches` never picks
                // `SetWatches2`): the server forgets ours. Set it again (adding it is idempotent
                // on the server) before re-listing.
                tracing::info!("zookeeper reconnected; re-syncing");
                view.gap = true;
                match self.watch(client).await {
                    Some(fresh) => {
                        *watcher = fresh;
                        view.connected = true;
                        None
                    }
                    None if client.state().is_terminated() => Some(SessionEnd::Expired),
                    None => Some(SessionEnd::StoreDropped),
                }
            }
            SessionState::Expired | SessionState::Closed | SessionState::AuthFailed => {
                Some(SessionEnd::Expired)
            }
        }
    }

    /// Sets the session's one persistent recursive watch; `None` when the session expired or the
    /// store was dropped first.
    async fn watch(&mut self, client: &Client) -> Option<PersistentWatcher> {
        loop {
            let base = self.shared.layout.base().to_string();
            let request = client.watch(&base, AddWatchMode::PersistentRecursive);
            let watching = self.shared.call(Op::Watch, request);
            match self.alongside_commands(watching).await? {
                Ok(watcher) => return Some(watcher),
                Err(_) if client.state().is_terminated() => return None,
                Err(err) => tracing::warn!(error = %err, "cannot watch the registry; retrying"),
            }
            self.alongside_commands(tokio::time::sleep(RETRY_TICK))
                .await?;
        }
    }

    /// Handles one event from the watch: a session change comes back as an interruption; a node
    /// change starts a batch.
    async fn on_event(
        &mut self,
        client: &Client,
        watcher: &mut PersistentWatcher,
        event: WatchedEvent,
    ) -> Result<(), Interrupt> {
        if event.event_type == EventType::Session {
            return Err(Interrupt::Session(event.session_state));
        }
        let mut reads = BTreeMap::new();
        self.catch_up(client, watcher, BTreeSet::from([event.path]), &mut reads)
            .await?;
        let mut entries: Vec<StoredEntry> = reads
            .values()
            .flatten()
            .filter_map(|node| node.entry(&self.shared.layout))
            .filter(|entry| entry.version > self.emitted)
            .collect();
        entries.sort_by_key(|entry| entry.version);
        if let Some(last) = entries.last() {
            self.emitted = last.version;
            self.hub.publish(&entries);
        }
        Ok(())
    }

    /// Reads the znodes of `pending` and of every queued notification, again and again until a
    /// drain after the reads finds nothing new. `reads` keeps the newest read of each znode
    /// (`None`: the znode is gone).
    async fn catch_up(
        &self,
        client: &Client,
        watcher: &mut PersistentWatcher,
        mut pending: BTreeSet<String>,
        reads: &mut BTreeMap<String, Option<Node>>,
    ) -> Result<(), Interrupt> {
        loop {
            drain(watcher, &mut pending)?;
            if pending.is_empty() {
                return Ok(());
            }
            let paths: Vec<String> = std::mem::take(&mut pending).into_iter().collect();
            let read = read_nodes(&self.shared, client, paths)
                .await
                .map_err(Interrupt::Failed)?;
            reads.extend(read);
        }
    }

    /// Lists the whole registry consistently with the watch, then serves the snapshot: to
    /// consumers waiting for one (everyone after a gap), to `snapshot()` callers, and as
    /// `Changes` to consumers that are in sync.
    async fn relist(
        &mut self,
        client: &Client,
        watcher: &mut PersistentWatcher,
        gap: bool,
    ) -> Result<(), Interrupt> {
        let base = self.shared.layout.base().to_string();
        let nodes = list_tree(&self.shared, client, &base)
            .await
            .map_err(Interrupt::Failed)?;
        let mut reads: BTreeMap<String, Option<Node>> = nodes
            .into_iter()
            .map(|node| (node.path.clone(), Some(node)))
            .collect();
        self.catch_up(client, watcher, BTreeSet::new(), &mut reads)
            .await?;

        let mut index = self.emitted;
        let mut entries = Vec::with_capacity(reads.len());
        for node in reads.values().flatten() {
            index = index.max(node.version()).max(node.stat.pzxid.max(0) as u64);
            entries.extend(node.entry(&self.shared.layout));
        }
        let snapshot = Snapshot { entries, index };
        if gap {
            self.hub.unsync_all();
        } else {
            let mut changes: Vec<StoredEntry> = snapshot
                .entries
                .iter()
                .filter(|entry| entry.version > self.emitted)
                .cloned()
                .collect();
            changes.sort_by_key(|entry| entry.version);
            self.hub.publish(&changes);
        }
        self.hub.resync(&snapshot);
        self.emitted = index;
        tracing::debug!(index, entries = snapshot.entries.len(), "registry listed");
        for waiter in self.waiting.drain(..) {
            let _ = waiter.reply.send(Ok(snapshot.clone()));
        }
        Ok(())
    }
}

/// Takes every queued notification without waiting. Safe to poll once and drop: the watcher's
/// `changed()` only takes an event from its channel when it returns it. Never called after a
/// terminal session event (the channel closes then and `changed()` would panic).
fn drain(watcher: &mut PersistentWatcher, pending: &mut BTreeSet<String>) -> Result<(), Interrupt> {
    while let Some(event) = watcher.changed().now_or_never() {
        if event.event_type == EventType::Session {
            return Err(Interrupt::Session(event.session_state));
        }
        pending.insert(event.path);
    }
    Ok(())
}
