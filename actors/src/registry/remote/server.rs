//! `StoreServer`: serves the founding node's embedded store to the nodes that joined it.

use std::sync::Arc;

use lathe::KeyPath;
use lathe_store::{Snapshot, Store, StoreError, StoreEvent};
use lathe_supervisors::supervised::{
    factory, spawn_supervised, ChildSpec, KeeperMsg, SERVER_RESTARTS,
};
use lathe_supervisors::tree::{ActorKind, TreeScope};
use ractor::{pg, Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};

use super::follower::FollowerMsg;
use super::{FOLLOWER_GROUP, STORE_SERVER_GROUP};
use crate::acl::writer::{WriteGate, Writer};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PutRequest {
    pub(crate) key: KeyPath,
    pub(crate) value: serde_json::Value,
    pub(crate) cas: Option<u64>,
    /// The REST caller the joined node wrote for, checked again here (`acl::writer`).
    #[serde(default)]
    pub(crate) writer: Option<Writer>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DeleteRequest {
    pub(crate) key: KeyPath,
    pub(crate) cas: Option<u64>,
    pub(crate) recurse: bool,
    #[serde(default)]
    pub(crate) writer: Option<Writer>,
}

/// What joined nodes ask the founding node's store.
#[derive(RactorClusterMessage)]
pub(crate) enum StoreRequest {
    #[rpc]
    Snapshot(RpcReplyPort<Result<Snapshot, StoreError>>),
    #[rpc]
    Put(PutRequest, RpcReplyPort<Result<u64, StoreError>>),
    #[rpc]
    Delete(DeleteRequest, RpcReplyPort<Result<Option<u64>, StoreError>>),
}

#[derive(Clone)]
pub(crate) struct StoreServer;

pub(crate) struct ServerState {
    store: Arc<dyn Store>,
    gate: WriteGate,
    pusher: tokio::task::JoinHandle<()>,
}

/// Starts the store server for `store` on the founding node, kept running at
/// `<scope>/store-server` under `parent`; returns its keeper. A restarted server rejoins its
/// process group, and the followers re-sync from a snapshot when it does. Writes joined nodes
/// make for a REST caller are checked against `gate` (see `acl::writer`).
pub async fn start_store_server(
    store: Arc<dyn Store>,
    gate: WriteGate,
    scope: &TreeScope,
    parent: Option<ActorCell>,
) -> anyhow::Result<ActorRef<KeeperMsg>> {
    let spec = ChildSpec {
        scope: scope.clone(),
        name: "store-server".to_string(),
        kind: ActorKind::StoreServer,
        limits: SERVER_RESTARTS,
        factory: factory(StoreServer, (store, gate)),
    };
    Ok(spawn_supervised(spec, parent).await?)
}

impl Actor for StoreServer {
    type Msg = StoreRequest;
    type State = ServerState;
    type Arguments = (Arc<dyn Store>, WriteGate);

    async fn pre_start(
        &self,
        myself: ActorRef<StoreRequest>,
        (store, gate): (Arc<dyn Store>, WriteGate),
    ) -> Result<ServerState, ActorProcessingErr> {
        let mut events = store.events();
        // Followers re-sync from a snapshot on their own, so only changes are pushed.
        let pusher = tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if let StoreEvent::Changes(changes) = event {
                    push_to_followers(&changes);
                }
            }
        });
        pg::join(STORE_SERVER_GROUP.to_string(), vec![myself.get_cell()]);
        Ok(ServerState {
            store,
            gate,
            pusher,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<StoreRequest>,
        request: StoreRequest,
        state: &mut ServerState,
    ) -> Result<(), ActorProcessingErr> {
        let (store, gate) = (state.store.clone(), state.gate.clone());
        let refused = move |key: &KeyPath, writer: Option<&Writer>| {
            let refusal = gate.check(key, writer).err()?;
            tracing::warn!(%key, %refusal, "refused a write forwarded by a joined node");
            Some(StoreError::Forbidden(refusal.to_string()))
        };
        // Store calls run off the handler: RocksDB syncs to disk on every write.
        tokio::spawn(async move {
            match request {
                StoreRequest::Snapshot(reply) => {
                    let _ = reply.send(store.snapshot().await);
                }
                StoreRequest::Put(put, reply) => {
                    let result = match refused(&put.key, put.writer.as_ref()) {
                        Some(refusal) => Err(refusal),
                        None => store.put(&put.key, &put.value, put.cas).await,
                    };
                    let _ = reply.send(result);
                }
                StoreRequest::Delete(delete, reply) => {
                    let result = match refused(&delete.key, delete.writer.as_ref()) {
                        Some(refusal) => Err(refusal),
                        None => store.delete(&delete.key, delete.cas, delete.recurse).await,
                    };
                    let _ = reply.send(result);
                }
            }
        });
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<StoreRequest>,
        state: &mut ServerState,
    ) -> Result<(), ActorProcessingErr> {
        state.pusher.abort();
        Ok(())
    }
}

fn push_to_followers(changes: &[lathe_store::StoredEntry]) {
    for cell in pg::get_members(&FOLLOWER_GROUP.to_string()) {
        if cell.get_id().is_local() {
            continue;
        }
        let follower: ActorRef<FollowerMsg> = cell.into();
        let _ = follower.cast(FollowerMsg::Push(changes.to_vec()));
    }
}
