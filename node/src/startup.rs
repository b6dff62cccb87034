//! What the `NodeSupervisor` does once while it starts: wait until a `--join` seed accepted the
//! node, deploy `--topology`, and give the REST API its view of the members.

use std::time::Duration;

use lathe_actors::http::MemberDirectory;
use lathe_actors::membership::{JoinState, MembershipHandle};
use lathe_actors::registry::RegistryHandle;
use lathe_actors::scheduler::deploy::{self, DeployError};
use ractor::ActorProcessingErr;

/// How long a joining node waits to hear from its seeds before carrying on without them
/// (membership keeps retrying; with ZooKeeper the node finds its peers there).
const JOIN_WAIT: Duration = Duration::from_secs(10);
/// How long a node keeps trying to deploy its `--topology` (the registry may still be syncing).
const TOPOLOGY_DEPLOY_WAIT: Duration = Duration::from_secs(60);

/// Deploys `--topology` once the registry takes writes, unless that very topology is already
/// deployed (every node of a cluster may be started with the same file).
pub(crate) async fn deploy_on_start(registry: RegistryHandle, file: String, source: String) {
    let deadline = tokio::time::Instant::now() + TOPOLOGY_DEPLOY_WAIT;
    loop {
        let attempt = async {
            if let Some((record, _)) = deploy::current(&registry).await? {
                if record.source == source {
                    return Ok(None);
                }
            }
            deploy::deploy(&registry, &file, &source).await.map(Some)
        };
        match attempt.await {
            Ok(Some(outcome)) => {
                return tracing::info!(%file, groups = outcome.groups, "--topology deployed")
            }
            Ok(None) => return tracing::info!(%file, "--topology is already deployed"),
            Err(DeployError::Invalid(error)) => {
                return tracing::error!(%error, "--topology refused")
            }
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(%error, "--topology not deployed yet: retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return tracing::error!(%error, "--topology could not be deployed"),
        }
    }
}

/// Waits until a seed accepted this node; a refusal (wrong cookie) fails the start-up with a
/// message saying so, rather than leaving a node that can never join.
pub(crate) async fn wait_for_join(membership: &MembershipHandle) -> Result<(), ActorProcessingErr> {
    let mut state = membership.join_state();
    let outcome = tokio::time::timeout(
        JOIN_WAIT,
        state.wait_for(|s| matches!(s, JoinState::Joined | JoinState::Refused(_))),
    )
    .await;
    match outcome {
        Ok(Ok(state)) => match &*state {
            JoinState::Refused(refusal) => Err(format!(
                "--join: the cluster at {} refused this node (check --cookie)",
                refusal.peer_addr
            )
            .into()),
            _ => Ok(()),
        },
        Ok(Err(_)) => Err("membership stopped while joining".into()),
        Err(_) => {
            tracing::warn!(
                wait = ?JOIN_WAIT,
                "no --join seed answered yet: carrying on, membership keeps trying"
            );
            Ok(())
        }
    }
}

pub(crate) struct Members(pub(crate) MembershipHandle);

#[async_trait::async_trait]
impl MemberDirectory for Members {
    async fn members_json(&self) -> serde_json::Value {
        serde_json::json!({ "members": self.0.members().await })
    }
}
