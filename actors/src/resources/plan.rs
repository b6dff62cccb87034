//! What the leader's resource manager does about capacity — a pure function over plain data, so it
//! is tested without actors, processes or YARN.
//!
//! The rules, for one moment:
//! 1. **Wanted.** `ceil(pending / per_container)` containers would place every instance pending
//!    for want of room (each container's node takes `per_container` instances).
//! 2. **On their way.** A container counts as on its way while its node has not been counted by
//!    the scheduler yet (not among the demand's nodes) and is not dead, and so do requests not
//!    answered yet. Only `wanted - on their way` more are requested, and never more than
//!    `max_containers` in all: a request storm is impossible by construction.
//! 3. **Surplus.** When fewer are wanted than are on their way, the newest containers still
//!    waiting for the cluster (requested, not running, their node unheard of) are released.
//! 4. **Dead or stuck.** A container whose node membership holds dead, or that runs without its
//!    node joining within [`JOIN_DEADLINE`], is released: its instances already went elsewhere,
//!    and the next demand asks for a replacement.
//! 5. **No demand, no decision.** Until the scheduler of this leader has counted (a demand
//!    names at least one node), nothing is requested or released for capacity: a new leader
//!    waits for its first reconcile before judging the containers it adopted.

use std::time::Duration;

use lathe_resources::ContainerId;

use crate::membership::{MemberStatus, MemberView};
use crate::scheduler::demand::CapacityDemand;

/// How long a running container's node may take to join before it is released.
pub const JOIN_DEADLINE: Duration = Duration::from_secs(90);

/// How big the fleet may grow, and what one container holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizing {
    /// The most containers this cluster asks for at once (`--yarn-max-containers`).
    pub max_containers: usize,
    /// The instances one container's node takes (its `--max-instances`).
    pub per_container: u32,
}

/// One container the leader owns, as the decision sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContainerView {
    pub(crate) id: ContainerId,
    pub(crate) node: String,
    /// The backend granted it (its process runs), rather than still waiting for the cluster.
    pub(crate) granted: bool,
    /// Since when it runs (granted) or was requested.
    pub(crate) age: Duration,
    /// Already asked to stop.
    pub(crate) released: bool,
}

/// What to do now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Decision {
    /// How many more containers to request.
    pub(crate) request: usize,
    /// Containers to release, and why.
    pub(crate) release: Vec<(ContainerId, &'static str)>,
}

/// Decides, for the latest `demand`, the leader's `containers`, the `requesting` requests not
/// answered yet and the cluster's `members`.
pub(crate) fn decide(
    sizing: Sizing,
    demand: &CapacityDemand,
    containers: &[ContainerView],
    requesting: usize,
    members: &[MemberView],
) -> Decision {
    let status = |node: &str| members.iter().find(|m| m.name == node).map(|m| m.status);
    let mut decision = Decision::default();
    let mut kept: Vec<&ContainerView> = Vec::new();
    for container in containers.iter().filter(|c| !c.released) {
        if status(&container.node) == Some(MemberStatus::Dead) {
            decision
                .release
                .push((container.id.clone(), "its node is dead"));
        } else if container.granted
            && status(&container.node).is_none()
            && container.age >= JOIN_DEADLINE
        {
            decision
                .release
                .push((container.id.clone(), "its node never joined"));
        } else {
            kept.push(container);
        }
    }
    if demand.nodes.is_empty() {
        return decision;
    }
    let on_the_way: Vec<&ContainerView> = kept
        .iter()
        .copied()
        .filter(|c| !demand.nodes.contains(&c.node))
        .collect();
    let per_container = sizing.per_container.max(1) as usize;
    let wanted = demand.pending.div_ceil(per_container);
    let coming = on_the_way.len() + requesting;
    let active = kept.len() + requesting;
    if wanted > coming {
        let room = sizing.max_containers.saturating_sub(active);
        decision.request = (wanted - coming).min(room);
    } else if wanted < coming {
        let mut waiting: Vec<&ContainerView> = on_the_way
            .into_iter()
            .filter(|c| !c.granted && status(&c.node).is_none())
            .collect();
        waiting.sort_by_key(|c| c.age);
        decision.release.extend(
            waiting
                .into_iter()
                .take(coming - wanted)
                .map(|c| (c.id.clone(), "no longer needed")),
        );
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZING: Sizing = Sizing {
        max_containers: 4,
        per_container: 3,
    };

    fn demand(pending: usize, nodes: &[&str]) -> CapacityDemand {
        CapacityDemand {
            pending,
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
        }
    }

    fn container(n: u32, granted: bool, age_s: u64) -> ContainerView {
        ContainerView {
            id: ContainerId(format!("application_1_{n:04}")),
            node: format!("yarn-{n}"),
            granted,
            age: Duration::from_secs(age_s),
            released: false,
        }
    }

    fn member(name: &str, status: MemberStatus) -> MemberView {
        MemberView {
            name: name.to_string(),
            pid: 1,
            cluster_addr: "127.0.0.1:1".parse().unwrap(),
            http_addr: "127.0.0.1:2".parse().unwrap(),
            tags: Vec::new(),
            status,
            leader: false,
            catalog: Vec::new(),
            max_instances: Some(3),
            version: String::new(),
            last_heartbeat_ms_ago: None,
            is_self: false,
            incarnation: 1,
            started_at_ms: 1,
        }
    }

    #[test]
    fn asks_for_enough_containers_for_the_pending_instances() {
        let decision = decide(SIZING, &demand(7, &["n0"]), &[], 0, &[]);
        assert_eq!(decision.request, 3);
        assert!(decision.release.is_empty());
        assert_eq!(
            decide(SIZING, &demand(0, &["n0"]), &[], 0, &[]),
            Decision::default()
        );
    }

    #[test]
    fn containers_on_their_way_and_requests_in_flight_count() {
        let coming = [container(1, false, 1), container(2, true, 5)];
        let decision = decide(SIZING, &demand(7, &["n0"]), &coming, 0, &[]);
        assert_eq!(decision.request, 1);
        let decision = decide(SIZING, &demand(7, &["n0"]), &coming, 1, &[]);
        assert_eq!(decision, Decision::default());
    }

    #[test]
    fn a_joined_node_counted_by_the_scheduler_is_not_on_its_way() {
        // yarn-1 joined and is full like the rest: 7 still pending means 3 more.
        let joined = [container(1, true, 30)];
        let members = [member("yarn-1", MemberStatus::Alive)];
        let counted = decide(SIZING, &demand(7, &["n0", "yarn-1"]), &joined, 0, &members);
        assert_eq!(counted.request, 3);
        // Alive but not counted yet: the demand predates it, so it is still on its way.
        let stale = decide(SIZING, &demand(7, &["n0"]), &joined, 0, &members);
        assert_eq!(stale.request, 2);
    }

    #[test]
    fn never_more_than_the_maximum() {
        let decision = decide(SIZING, &demand(100, &["n0"]), &[], 0, &[]);
        assert_eq!(decision.request, 4);
        let running: Vec<ContainerView> = (1..=4).map(|n| container(n, true, 10)).collect();
        let members: Vec<MemberView> = (1..=4)
            .map(|n| member(&format!("yarn-{n}"), MemberStatus::Alive))
            .collect();
        let names: Vec<String> = (1..=4).map(|n| format!("yarn-{n}")).collect();
        let nodes: Vec<&str> = names.iter().map(String::as_str).collect();
        let decision = decide(SIZING, &demand(100, &nodes), &running, 0, &members);
        assert_eq!(decision, Decision::default());
    }

    #[test]
    fn surplus_waiting_containers_are_released_newest_first() {
        let waiting = [
            container(1, false, 30),
            container(2, false, 5),
            container(3, true, 10),
        ];
        let decision = decide(SIZING, &demand(3, &["n0"]), &waiting, 0, &[]);
        assert_eq!(decision.request, 0);
        let released: Vec<&str> = decision.release.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(released, ["application_1_0002", "application_1_0001"]);
    }

    #[test]
    fn dead_and_stuck_nodes_are_released() {
        let containers = [
            container(1, true, 10),
            container(2, true, 200),
            container(3, true, 5),
        ];
        let members = [member("yarn-1", MemberStatus::Dead)];
        let decision = decide(SIZING, &demand(0, &["n0"]), &containers, 0, &members);
        assert_eq!(
            decision.release,
            vec![
                (ContainerId("application_1_0001".into()), "its node is dead"),
                (
                    ContainerId("application_1_0002".into()),
                    "its node never joined"
                ),
            ]
        );
        // A dead node's container is replaced when the demand says so.
        let decision = decide(SIZING, &demand(2, &["n0"]), &containers, 0, &members);
        assert_eq!(decision.request, 0, "yarn-3 is on its way");
    }

    #[test]
    fn nothing_is_decided_for_capacity_before_the_scheduler_counted() {
        // A new leader adopted containers its predecessor recorded as requested.
        let adopted = [container(1, false, 0), container(2, false, 0)];
        assert_eq!(
            decide(SIZING, &CapacityDemand::default(), &adopted, 0, &[]),
            Decision::default()
        );
    }

    #[test]
    fn a_container_whose_node_is_a_member_is_never_surplus() {
        // Recorded as requested, but its node already joined: it is not waiting for anything.
        let joined = [container(1, false, 0)];
        let members = [member("yarn-1", MemberStatus::Suspect)];
        let decision = decide(SIZING, &demand(0, &["n0"]), &joined, 0, &members);
        assert_eq!(decision, Decision::default());
    }

    #[test]
    fn released_containers_count_for_nothing() {
        let mut gone = container(1, true, 10);
        gone.released = true;
        let decision = decide(SIZING, &demand(3, &["n0"]), &[gone], 0, &[]);
        assert_eq!(decision.request, 1);
    }
}
