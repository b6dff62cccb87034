//! `RemoteStore` and its `StoreFollower`: a joined node's view of the founding node's store.
//!
//! Reads and writes are RPCs to the `StoreServer`. Changes arrive as pushes; the follower turns
//! them into the ordered event stream of the `Store` contract: whenever the server (re)appears it
//! takes a snapshot, emits `Resync(snapshot)`, then only changes newer than the snapshot, with the
//! pushes that raced the snapshot buffered and filtered rather than lost.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use lathe::KeyPath;
use lathe_store::{Snapshot, Store, StoreError, StoreEvent, StoredEntry};
use lathe_supervisors::supervised::{
    spawn_supervised, ChildSpec, Factory, KeeperMsg, SERVER_RESTARTS,
};
use lathe_supervisors::tree::{ActorKind, TreeScope};
use ractor::rpc::CallResult;
use ractor::{pg, Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use ractor_cluster::RactorClusterMessage;
use tokio::sync::mpsc;

use super::server::{DeleteRequest, PutRequest, StoreRequest};
use super::{FOLLOWER_GROUP, STORE_SERVER_GROUP};

/// How long a call to the founding node may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an unsynced follower retries.
const RETRY: Duration = Duration::from_millis(500);
/// A consumer that falls this far behind is dropped; its stream ends and it re-opens with a
/// fresh snapshot.
const EVENT_QUEUE: usize = 65_536;

type Consumers = Arc<Mutex<Vec<mpsc::Sender<StoreEvent>>>>;

#[derive(RactorClusterMessage)]
pub(crate) enum FollowerMsg {
    /// Changes pushed by the server, in order.
    Push(Vec<StoredEntry>),
    /// This follower's own snapshot came back.
    Synced(Snapshot),
    /// Take a fresh snapshot now (the server appeared, a consumer joined).
    Resync,
    /// Taking the snapshot failed; the next tick retries.
    SyncFailed,
    /// Periodic: re-sync if not synced.
    Tick,
}

/// The registry store of a node that joined a cluster without ZooKeeper.
pub struct RemoteStore {
    /// The follower running now (a restarted one replaces it).
    follower: Arc<Mutex<Option<ActorRef<FollowerMsg>>>>,
    consumers: Consumers,
    keeper: ActorRef<KeeperMsg>,
}

impl RemoteStore {
    /// Starts the follower, kept running at `<scope>/store-follower` under `parent`; the store
    /// is usable once the founding node is reachable. A restarted follower re-syncs from a
    /// snapshot, which its consumers take as a `Resync`.
    pub async fn start(
        scope: &TreeScope,
        parent: Option<ActorCell>,
    ) -> anyhow::Result<RemoteStore> {
        let consumers: Consumers = Arc::default();
        let follower: Arc<Mutex<Option<ActorRef<FollowerMsg>>>> = Arc::default();
        let (slot, args) = (follower.clone(), consumers.clone());
        let factory: Factory = Arc::new(move |keeper| {
            let (slot, args) = (slot.clone(), args.clone());
            Box::pin(async move {
                let (actor, _) = Actor::spawn_linked(None, StoreFollower, args, keeper).await?;
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(actor.clone());
                Ok(actor.get_cell())
            })
        });
        let spec = ChildSpec {
            scope: scope.clone(),
            name: "store-follower".to_string(),
            kind: ActorKind::StoreFollower,
            limits: SERVER_RESTARTS,
            factory,
        };
        let keeper = spawn_supervised(spec, parent).await?;
        Ok(RemoteStore {
            follower,
            consumers,
            keeper,
        })
    }

    /// The follower's keeper (to link it under the node's supervisor once that runs).
    pub fn keeper(&self) -> ActorCell {
        self.keeper.get_cell()
    }
}

fn unavailable() -> StoreError {
    StoreError::Unavailable(
        "the founding node that holds the embedded registry is unreachable".to_string(),
    )
}

fn server() -> Result<ActorRef<StoreRequest>, StoreError> {
    pg::get_members(&STORE_SERVER_GROUP.to_string())
        .into_iter()
        .find(|cell| !cell.get_id().is_local())
        .map(ActorRef::from)
        .ok_or_else(unavailable)
}

async fn call<T: Send + 'static>(
    build: impl FnOnce(ractor::RpcReplyPort<Result<T, StoreError>>) -> StoreRequest,
) -> Result<T, StoreError> {
    match server()?.call(build, Some(CALL_TIMEOUT)).await {
        Ok(CallResult::Success(result)) => result,
        Ok(CallResult::Timeout) => Err(StoreError::Unavailable(format!(
            "the founding node did not answer within {CALL_TIMEOUT:?}"
        ))),
        Ok(CallResult::SenderError) | Err(_) => Err(unavailable()),
    }
}

#[async_trait]
impl Store for RemoteStore {
    fn kind(&self) -> &'static str {
        "remote"
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        call(StoreRequest::Snapshot).await
    }

    async fn put(
        &self,
        key: &KeyPath,
        value: &serde_json::Value,
        cas: Option<u64>,
    ) -> Result<u64, StoreError> {
        let request = PutRequest {
            key: key.clone(),
            value: value.clone(),
            cas,
            writer: crate::acl::writer::current(),
        };
        call(|reply| StoreRequest::Put(request, reply)).await
    }

    async fn delete(
        &self,
        key: &KeyPath,
        cas: Option<u64>,
        recurse: bool,
    ) -> Result<Option<u64>, StoreError> {
        let request = DeleteRequest {
            key: key.clone(),
            cas,
            recurse,
            writer: crate::acl::writer::current(),
        };
        call(|reply| StoreRequest::Delete(request, reply)).await
    }

    fn events(&self) -> mpsc::Receiver<StoreEvent> {
        let (sender, receiver) = mpsc::channel(EVENT_QUEUE);
        if let Ok(mut consumers) = self.consumers.lock() {
            consumers.push(sender);
        }
        // The new stream must open with a snapshot: take a fresh one for everybody.
        let follower = self
            .follower
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(follower) = follower {
            let _ = follower.cast(FollowerMsg::Resync);
        }
        receiver
    }
}

#[derive(Clone)]
pub(crate) struct StoreFollower;

pub(crate) struct FollowerState {
    consumers: Consumers,
    /// The index emitted last; `None` until synced with the current server.
    synced: Option<u64>,
    syncing: bool,
    buffered: Vec<StoredEntry>,
}

impl Actor for StoreFollower {
    type Msg = FollowerMsg;
    type State = FollowerState;
    type Arguments = Consumers;

    async fn pre_start(
        &self,
        myself: ActorRef<FollowerMsg>,
        consumers: Consumers,
    ) -> Result<FollowerState, ActorProcessingErr> {
        pg::join(FOLLOWER_GROUP.to_string(), vec![myself.get_cell()]);
        pg::monitor(STORE_SERVER_GROUP.to_string(), myself.get_cell());
        myself.send_interval(RETRY, || FollowerMsg::Tick);
        Ok(FollowerState {
            consumers,
            synced: None,
            syncing: false,
            buffered: Vec::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<FollowerMsg>,
        message: FollowerMsg,
        state: &mut FollowerState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            FollowerMsg::Push(changes) => match state.synced {
                Some(last) => state.emit_changes(changes, last),
                None => state.buffered.extend(changes),
            },
            FollowerMsg::Synced(snapshot) => {
                state.syncing = false;
                let index = snapshot.index;
                state.emit(StoreEvent::Resync(snapshot));
                let buffered = std::mem::take(&mut state.buffered);
                state.synced = Some(index);
                state.emit_changes(buffered, index);
            }
            FollowerMsg::Resync => state.start_sync(&myself),
            FollowerMsg::Tick if state.synced.is_none() => state.start_sync(&myself),
            FollowerMsg::Tick => {}
            FollowerMsg::SyncFailed => state.syncing = false,
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<FollowerMsg>,
        event: SupervisionEvent,
        state: &mut FollowerState,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ProcessGroupChanged(change) = event {
            match change {
                pg::GroupChangeMessage::Join(..) => {
                    tracing::info!("the founding node's registry is reachable: re-syncing");
                    state.synced = None;
                    state.buffered.clear();
                    myself.cast(FollowerMsg::Resync)?;
                }
                pg::GroupChangeMessage::Leave(..) => {
                    tracing::warn!(
                        "lost the founding node's registry: serving reads from the replica"
                    );
                    state.synced = None;
                    state.syncing = false;
                    state.buffered.clear();
                }
            }
        }
        Ok(())
    }
}

impl FollowerState {
    fn emit(&mut self, event: StoreEvent) {
        if let Ok(mut consumers) = self.consumers.lock() {
            consumers.retain(|c| c.try_send(event.clone()).is_ok());
        }
    }

    fn emit_changes(&mut self, changes: Vec<StoredEntry>, last: u64) {
        let fresh: Vec<StoredEntry> = changes.into_iter().filter(|c| c.version > last).collect();
        if let Some(newest) = fresh.last() {
            self.synced = Some(newest.version);
            self.emit(StoreEvent::Changes(fresh));
        }
    }

    fn start_sync(&mut self, myself: &ActorRef<FollowerMsg>) {
        if self.syncing {
            return;
        }
        if let Err(e) = server() {
            tracing::debug!(error = %e, "cannot sync the embedded registry yet");
            return;
        }
        tracing::debug!("taking a snapshot of the embedded registry");
        self.syncing = true;
        self.synced = None;
        let follower = myself.clone();
        tokio::spawn(async move {
            let message = match call(StoreRequest::Snapshot).await {
                Ok(snapshot) => FollowerMsg::Synced(snapshot),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot snapshot the embedded registry");
                    FollowerMsg::SyncFailed
                }
            };
            let _ = follower.cast(message);
        });
    }
}
