//! The restart policies of the deployed topology, followed: `/lathe/topology` (the record
//! `scheduler::deploy` writes and `deploy::current` reads) is mirrored — listed, then followed by
//! a registry subscription that resumes after any gap — and each deployed topology's `restart`
//! tables are handed to the `TaskSupervisor` as policies by group.

use std::collections::HashMap;

use lathe::layout;
use lathe::topology::Topology;
use lathe::KeyPath;
use ractor::ActorRef;

use super::mirror::{spawn_mirror, AbortOnDrop};
use super::policy::RestartPolicy;
use super::supervisor::TaskSupervisorMsg;
use crate::registry::RegistryHandle;
use crate::scheduler::deploy::TopologyRecord;

/// Follows the deployed topology until the guard is dropped. While no topology is deployed, the
/// supervisor keeps the policies it has (its default, or those set by hand).
pub(crate) fn follow_topology_policies(
    registry: RegistryHandle,
    supervisor: ActorRef<TaskSupervisorMsg>,
) -> Option<AbortOnDrop> {
    let key = KeyPath::parse(layout::TOPOLOGY).ok()?;
    let mut sent: Option<HashMap<String, RestartPolicy>> = None;
    Some(spawn_mirror(registry, key.clone(), move |entries| {
        let Some(entry) = entries.get(&key) else {
            return true;
        };
        let policies = match serde_json::from_value::<TopologyRecord>(entry.value.clone()) {
            Ok(record) => policies_of(&record.topology),
            Err(error) => {
                tracing::warn!(%error,
                    "the deployed topology is unreadable: restart policies unchanged");
                return true;
            }
        };
        if sent.as_ref() == Some(&policies) {
            return true;
        }
        tracing::info!(
            groups = policies.len(),
            "restart policies of the deployed topology"
        );
        sent = Some(policies.clone());
        supervisor
            .cast(TaskSupervisorMsg::SetRestartPolicies(policies))
            .is_ok()
    }))
}

/// Each group's restart policy, by group name.
pub(crate) fn policies_of(topology: &Topology) -> HashMap<String, RestartPolicy> {
    topology
        .groups
        .iter()
        .map(|group| (group.name.clone(), group.restart.clone()))
        .collect()
}
