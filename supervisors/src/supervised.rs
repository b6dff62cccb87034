//! [`spawn_supervised`]: one long-lived actor kept running by a small supervisor of its own.
//!
//! ```text
//! parent (optional) ── linked ── Keeper ── linked ── child (made by the factory)
//!                                  │  dies → RestartBudget: restart after the back-off,
//!                                  │         counted in the tree (`restarting`, `started`)
//!                                  └─ past the intensity → the keeper fails: its parent decides
//! ```
//!
//! For the node's servers that have no supervisor of their own (the embedded registry's server
//! and followers, the cache and flow servers): each is linked, registered in the node's
//! [`ActorTree`](crate::tree::ActorTree) at `<scope>/<name>` (so `GET /v1/tree` shows it and a
//! failure drill can kill it) and restarted with its restarts counted. The keeper itself is not
//! in the tree: it is part of its child's entry, as a task's restart logic is part of its
//! instance's.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SpawnErr, SupervisionEvent};
use ractor_cluster::RactorMessage;

use crate::policy::{AfterCrash, RestartBudget, RestartLimits};
use crate::tree::{ActorKind, TreeScope};

/// What a factory returns: the new child, linked to the keeper cell it was given.
pub type SpawnFuture = Pin<Box<dyn Future<Output = Result<ActorCell, SpawnErr>> + Send>>;

/// Starts the child: called with the keeper's cell, to which it must link the child
/// (`Actor::spawn_linked(None, actor, args, keeper)`), once at start and again after each crash.
pub type Factory = Arc<dyn Fn(ActorCell) -> SpawnFuture + Send + Sync>;

/// A factory that spawns `actor` with a clone of `args`, linked to the keeper.
pub fn factory<A>(actor: A, args: A::Arguments) -> Factory
where
    A: Actor + Clone,
    A::Arguments: Clone + Sync,
{
    Arc::new(move |keeper| {
        let (actor, args) = (actor.clone(), args.clone());
        Box::pin(async move {
            let (child, _) = Actor::spawn_linked(None, actor, args, keeper).await?;
            Ok(child.get_cell())
        })
    })
}

/// How the node's servers without a supervisor of their own are restarted: at once, at most
/// 10 times a minute.
pub const SERVER_RESTARTS: RestartLimits =
    RestartLimits::immediate(10, std::time::Duration::from_secs(60));

/// Where a supervised child sits and how it is restarted.
#[derive(Clone)]
pub struct ChildSpec {
    /// The scope of its supervisor in the tree; the child is `<scope>/<name>`.
    pub scope: TreeScope,
    pub name: String,
    pub kind: ActorKind,
    pub limits: RestartLimits,
    pub factory: Factory,
}

/// Starts `spec`'s child under a keeper (linked to `parent` when given) and returns the keeper.
/// The child has started when this returns; stopping the keeper stops the child.
pub async fn spawn_supervised(
    spec: ChildSpec,
    parent: Option<ActorCell>,
) -> Result<ActorRef<KeeperMsg>, SpawnErr> {
    let (keeper, _) = match parent {
        Some(parent) => Actor::spawn_linked(None, Keeper, spec, parent).await?,
        None => Actor::spawn(None, Keeper, spec).await?,
    };
    Ok(keeper)
}

/// The keeper's own messages.
#[derive(Debug, RactorMessage)]
pub enum KeeperMsg {
    /// The back-off after a crash is over: start the child again.
    Respawn,
}

/// The supervisor of one child.
pub struct Keeper;

pub struct KeeperState {
    spec: ChildSpec,
    budget: RestartBudget,
    child: Option<ActorCell>,
}

impl Actor for Keeper {
    type Msg = KeeperMsg;
    type State = KeeperState;
    type Arguments = ChildSpec;

    async fn pre_start(
        &self,
        myself: ActorRef<KeeperMsg>,
        spec: ChildSpec,
    ) -> Result<KeeperState, ActorProcessingErr> {
        let child = (spec.factory)(myself.get_cell()).await?;
        spec.scope.started(&spec.name, spec.kind, &child);
        Ok(KeeperState {
            budget: RestartBudget::new(spec.limits),
            spec,
            child: Some(child),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<KeeperMsg>,
        message: KeeperMsg,
        state: &mut KeeperState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            KeeperMsg::Respawn if state.child.is_none() => {
                match (state.spec.factory)(myself.get_cell()).await {
                    Ok(child) => {
                        state
                            .spec
                            .scope
                            .started(&state.spec.name, state.spec.kind, &child);
                        state.child = Some(child);
                        Ok(())
                    }
                    Err(error) => state.crashed(&myself, &format!("restart failed: {error}")),
                }
            }
            KeeperMsg::Respawn => Ok(()),
        }
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<KeeperMsg>,
        event: SupervisionEvent,
        state: &mut KeeperState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match event {
            SupervisionEvent::ActorFailed(cell, error) => (cell, format!("failed: {error}")),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell,
                format!(
                    "stopped: {}",
                    reason.as_deref().unwrap_or("no reason given")
                ),
            ),
            _ => return Ok(()),
        };
        if state.child.as_ref().map(ActorCell::get_id) != Some(cell.get_id()) {
            return Ok(());
        }
        state.child = None;
        state.crashed(&myself, &why)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<KeeperMsg>,
        state: &mut KeeperState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(child) = state.child.take() {
            child.stop(Some("its supervisor stopped".into()));
        }
        state.spec.scope.removed(&state.spec.name);
        Ok(())
    }
}

impl KeeperState {
    /// The child died (or could not start): restart it after its back-off, or give up.
    fn crashed(
        &mut self,
        myself: &ActorRef<KeeperMsg>,
        why: &str,
    ) -> Result<(), ActorProcessingErr> {
        let (name, kind) = (&self.spec.name, self.spec.kind);
        match self.budget.on_crash(Instant::now()) {
            AfterCrash::RestartAfter(wait) => {
                tracing::warn!(
                    actor = %self.spec.scope.child_path(name),
                    kind = kind.name(),
                    reason = %why,
                    wait_ms = wait.as_millis() as u64,
                    "supervised actor died: restarting it"
                );
                self.spec.scope.restarting(name, kind, why);
                if wait.is_zero() {
                    myself.cast(KeeperMsg::Respawn)?;
                } else {
                    myself.send_after(wait, || KeeperMsg::Respawn);
                }
                Ok(())
            }
            AfterCrash::GiveUp => {
                let limits = self.budget.limits();
                Err(format!(
                    "{} restarted {} times within {:?}: giving up (last: {why})",
                    self.spec.scope.child_path(name),
                    limits.max_restarts,
                    limits.window
                )
                .into())
            }
        }
    }
}
