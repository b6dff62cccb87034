//! An instance of a group with `state = { changelog = true }` restores its state before `start`
//! runs, and shows how far the restore got in its instance record (what `/v1/tasks` lists). The
//! changelog here is a gate the test opens; the Kafka changelog itself is tested against a real
//! broker in tests/tests/kafka/state.rs.

use std::sync::Arc;

use lathe::layout::InstanceState;
use lathe::StateStore;
use tokio::sync::Notify;

use super::tasks::{catalog, counted_type, Probes};
use super::{eventually, start_node_with, PATIENCE};
use crate::scheduler::deploy;
use crate::tasks::{RestoreProgress, StateChangelog};

/// A changelog whose restore reports two steps of progress, then waits for the test.
#[derive(Debug, Default)]
struct GatedChangelog {
    open: Notify,
}

#[async_trait::async_trait]
impl StateChangelog for GatedChangelog {
    fn wrap(&self, _group: &str, _index: u32, local: StateStore) -> StateStore {
        local
    }

    async fn restore(
        &self,
        _group: &str,
        _index: u32,
        local: &StateStore,
        progress: RestoreProgress,
    ) -> anyhow::Result<u64> {
        progress(0);
        progress(5000);
        self.open.notified().await;
        local.put("restored", "yes")?;
        progress(5001);
        Ok(1)
    }
}

#[tokio::test]
async fn a_restoring_instance_shows_its_progress_and_starts_once_restored() {
    let states = tempfile::tempdir().expect("a state directory");
    let changelog = Arc::new(GatedChangelog::default());
    let probes = Probes::default();
    let node = start_node_with("restore-n1", catalog(&probes), Vec::new(), |config| {
        config.states = Some(Arc::new(lathe_store::state::LazyNodeStates::new(
            states.path(),
        )));
        config.changelog = Some(changelog.clone());
    })
    .await;
    let topology = "[t.g]\ncrate = \"test_tasks\"\nversion = \"1.0.0\"\ntask = \"t::Counted\"\n\
                    tasks = 1\nstate = { changelog = true }\n";
    deploy::deploy(&node.registry, "t.toml", topology)
        .await
        .expect("a deploy");
    node.assign("t.g", 0, &counted_type()).await;

    let restoring = eventually("the restore's progress in the record", PATIENCE, || async {
        let status = node.status("t.g", 0).await?;
        let reason = status.reason.clone().unwrap_or_default();
        reason.contains("5000 records read").then_some(status)
    })
    .await;
    assert_eq!(restoring.status, InstanceState::Starting);
    assert_eq!(
        restoring.reason.as_deref(),
        Some("restoring state from the changelog: 5000 records read")
    );
    assert_eq!(
        node.metric("lathe_state_restore_seconds", &[("group", "t.g")]),
        None,
        "no restore time before the restore finished"
    );

    changelog.open.notify_one();
    let running = eventually(
        "the instance running after its restore",
        PATIENCE,
        || async {
            let status = node.status("t.g", 0).await?;
            (status.status == InstanceState::Running).then_some(status)
        },
    )
    .await;
    assert_eq!(running.reason, None);
    assert_eq!(
        node.metric("lathe_state_restore_seconds", &[("group", "t.g")]),
        Some(1.0)
    );
}
