//! State that follows its instance: a [`StateChangelog`] (Kafka, given by the node) logs every
//! write to the state of instances of groups with `state = { changelog = true }`, and restores
//! an instance's state from the log before its `start` runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lathe::StateStore;

use super::runtime::NodeServices;

/// How long an instance waits for the deployed topology to tell whether its group logs its
/// state, before it starts without a restore.
const TOPOLOGY_WAIT: Duration = Duration::from_secs(10);

/// Progress of a restore, reported as it goes.
pub type RestoreProgress = Arc<dyn Fn(u64) + Send + Sync>;

/// Replicates instance state to a log, and restores it from there.
#[async_trait::async_trait]
pub trait StateChangelog: Send + Sync + std::fmt::Debug + 'static {
    /// `local` (the instance's state on this node), with every write also logged for instance
    /// `index` of `group`: a write returns once the log acknowledged it.
    fn wrap(&self, group: &str, index: u32, local: StateStore) -> StateStore;

    /// Replaces `local` with the state the log holds for instance `index` of `group` (the
    /// last write of each key over the whole log wins; deletes included); the entries it holds.
    async fn restore(
        &self,
        group: &str,
        index: u32,
        local: &StateStore,
        progress: RestoreProgress,
    ) -> anyhow::Result<u64>;
}

/// Whether instance (`group`) logs its state: the node has a changelog and the deployed
/// topology says `state = { changelog = true }` for the group.
pub(crate) fn logs_state(services: &NodeServices, group: &str) -> bool {
    services.changelog.is_some() && services.flows.changelog(group)
}

/// Why an instance's state could not be restored from the changelog before its `start`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RestoreError {
    /// The group logs its state but this node was started without a state store.
    #[error("state changelog: this node keeps no task state")]
    NoStates,
    /// The instance's local state could not be opened.
    #[error("state changelog: {0}")]
    Local(#[source] lathe::StateError),
    /// Reading the log back into the local state failed.
    #[error("cannot restore the state from the changelog: {0:#}")]
    Read(#[source] anyhow::Error),
}

/// Before an instance's `start`: restores its state when its group logs state. `progress` is
/// told how many log records were read so far.
pub(crate) async fn restore_before_start(
    services: &NodeServices,
    group: &str,
    index: u32,
    progress: RestoreProgress,
) -> Result<(), RestoreError> {
    let Some(changelog) = &services.changelog else {
        return Ok(());
    };
    let known = Instant::now() + TOPOLOGY_WAIT;
    while !services.flows.knows(group) && Instant::now() < known {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !services.flows.changelog(group) {
        return Ok(());
    }
    let Some(states) = &services.states else {
        return Err(RestoreError::NoStates);
    };
    let local = states.instance(group, index).map_err(RestoreError::Local)?;
    let started = Instant::now();
    let entries = changelog
        .restore(group, index, &local, progress)
        .await
        .map_err(RestoreError::Read)?;
    let seconds = started.elapsed().as_secs_f64();
    services.metrics.observe_restore(group, seconds);
    tracing::info!(
        group,
        index,
        entries,
        seconds,
        "task state restored from the changelog"
    );
    Ok(())
}
