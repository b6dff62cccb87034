//! `ResourceManagerActor`: runs on every node that has a resource manager backend, acts only on the
//! scheduler leader.
//!
//! It watches the scheduler's [`CapacityDemand`] and membership; every [`TICK`] it polls the
//! backend (on the backend's own thread) and decides with the pure [`plan::decide`] how many
//! containers to request or which to release. It owns no state that matters: the containers it
//! asked for are kept in the registry, and a new leader adopts them. A container that ends while
//! its instances are still needed is replaced through the demand, after a back-off that doubles
//! with every failure in a row.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use lathe_resources::{ContainerEvent, ContainerId, ContainerState, ResourceError};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;
use tokio::sync::watch;
use tokio::time::Instant;

use super::plan::{self, ContainerView};
use super::records::{self, ContainerRecord};
use super::worker::{Job, Outcome, Worker};
use super::ResourceManagerSpec;
use crate::follow::follow;
use crate::membership::{MemberStatus, MemberView, MembershipHandle};
use crate::registry::{RegistryError, RegistryHandle};
use crate::scheduler::demand::CapacityDemand;

/// How often the backend is polled and the demand looked at again.
pub const TICK: Duration = Duration::from_secs(1);
/// The first pause after a failure before the next request; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Failures older than this are forgiven: the back-off starts over.
const FAILURE_MEMORY: Duration = Duration::from_secs(120);
/// At most this many `--join` seeds on a container's command line.
const MAX_SEEDS: usize = 3;

#[derive(RactorMessage)]
pub enum ResourceManagerMsg {
    MembersChanged(Vec<MemberView>),
    DemandChanged(CapacityDemand),
    Tick,
    RecordsRead {
        epoch: u64,
        result: Result<Vec<ContainerRecord>, RegistryError>,
    },
    Worker {
        epoch: u64,
        outcome: Outcome,
    },
}

pub struct ResourceManagerActor;

pub struct ResourceManagerArgs {
    pub node: String,
    pub spec: ResourceManagerSpec,
    pub registry: RegistryHandle,
    pub membership: MembershipHandle,
    pub demand: watch::Receiver<CapacityDemand>,
}

/// One container the leader owns.
struct Tracked {
    node: String,
    state: ContainerState,
    /// When it was requested, or granted once it runs.
    since: Instant,
    requested_at_ms: u64,
    released: bool,
}

pub struct ResourceManagerState {
    node: String,
    spec: ResourceManagerSpec,
    registry: RegistryHandle,
    membership: MembershipHandle,
    worker: Worker,
    watchers: Vec<tokio::task::JoinHandle<()>>,
    leading: bool,
    /// Bumped whenever leadership is gained or lost; outcomes of an older epoch are dropped.
    epoch: u64,
    members: Vec<MemberView>,
    demand: CapacityDemand,
    /// The registry's records were read and adopted in this epoch.
    adopted: bool,
    reading: bool,
    containers: BTreeMap<ContainerId, Tracked>,
    /// Nodes whose request is on the backend's thread.
    requesting: BTreeSet<String>,
    polling: bool,
    /// The text of the last poll error, logged once until polls work again.
    poll_error: Option<String>,
    next_index: u64,
    failures: u32,
    last_failure: Option<Instant>,
    next_request_at: Instant,
}

impl Actor for ResourceManagerActor {
    type Msg = ResourceManagerMsg;
    type State = ResourceManagerState;
    type Arguments = ResourceManagerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ResourceManagerMsg>,
        args: ResourceManagerArgs,
    ) -> Result<ResourceManagerState, ActorProcessingErr> {
        let reply_to = myself.clone();
        let worker = Worker::start(args.spec.factory.clone(), move |epoch, outcome| {
            reply_to
                .cast(ResourceManagerMsg::Worker { epoch, outcome })
                .is_ok()
        })?;
        let watchers = vec![
            follow(
                args.membership.subscribe(),
                myself.clone(),
                ResourceManagerMsg::MembersChanged,
            ),
            follow(
                args.demand,
                myself.clone(),
                ResourceManagerMsg::DemandChanged,
            ),
        ];
        myself.send_interval(TICK, || ResourceManagerMsg::Tick);
        tracing::info!(
            backend = args.spec.backend,
            max_containers = args.spec.sizing.max_containers,
            per_container = args.spec.sizing.per_container,
            "resource manager ready (acts while this node leads)"
        );
        Ok(ResourceManagerState {
            node: args.node,
            spec: args.spec,
            registry: args.registry,
            membership: args.membership,
            worker,
            watchers,
            leading: false,
            epoch: 0,
            members: Vec::new(),
            demand: CapacityDemand::default(),
            adopted: false,
            reading: false,
            containers: BTreeMap::new(),
            requesting: BTreeSet::new(),
            polling: false,
            poll_error: None,
            next_index: 1,
            failures: 0,
            last_failure: None,
            next_request_at: Instant::now(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ResourceManagerMsg>,
        message: ResourceManagerMsg,
        state: &mut ResourceManagerState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ResourceManagerMsg::MembersChanged(members) => {
                let leading =
                    members.iter().any(|m| m.is_self && m.leader) && !state.membership.is_fenced();
                state.members = members;
                state.note_names();
                if leading != state.leading {
                    state.change_leadership(leading);
                }
                state.act();
            }
            ResourceManagerMsg::DemandChanged(demand) => {
                state.demand = demand;
                state.act();
            }
            ResourceManagerMsg::Tick => {
                if state.leading && !state.adopted && !state.reading {
                    state.read_records(&myself);
                }
                if state.leading && state.adopted && !state.polling {
                    state.polling = true;
                    state.worker.send(state.epoch, Job::Poll);
                }
                state.act();
            }
            ResourceManagerMsg::RecordsRead { epoch, result } => {
                if epoch == state.epoch && state.leading {
                    state.reading = false;
                    state.adopt(result);
                    state.act();
                }
            }
            ResourceManagerMsg::Worker { epoch, outcome } => {
                if epoch == state.epoch && state.leading {
                    state.outcome(outcome);
                    state.act();
                }
            }
        }
        state.update_metrics();
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ResourceManagerMsg>,
        state: &mut ResourceManagerState,
    ) -> Result<(), ActorProcessingErr> {
        state.watchers.iter().for_each(|w| w.abort());
        state.spec.metrics.set_containers([0, 0, 0]);
        Ok(())
    }
}

impl ResourceManagerState {
    /// Gaining leadership starts from the registry's records; losing it forgets everything (the
    /// containers live on as cluster members, and the next leader adopts them).
    fn change_leadership(&mut self, leading: bool) {
        tracing::info!(node = %self.node, leading, backend = self.spec.backend,
            "resource manager leadership changed");
        self.leading = leading;
        self.epoch += 1;
        self.adopted = false;
        self.reading = false;
        self.polling = false;
        self.containers.clear();
        self.requesting.clear();
        self.worker.send(self.epoch, Job::Reset);
    }

    fn read_records(&mut self, myself: &ActorRef<ResourceManagerMsg>) {
        self.reading = true;
        let (registry, backend, epoch, me) = (
            self.registry.clone(),
            self.spec.backend,
            self.epoch,
            myself.clone(),
        );
        tokio::spawn(async move {
            let result = records::read(&registry, backend).await;
            let _ = me.cast(ResourceManagerMsg::RecordsRead { epoch, result });
        });
    }

    /// Takes over the containers a previous leader asked for.
    fn adopt(&mut self, result: Result<Vec<ContainerRecord>, RegistryError>) {
        let records = match result {
            Ok(records) => records,
            Err(error) => {
                // The next tick reads again.
                return tracing::warn!(%error, "cannot read the container records: retrying");
            }
        };
        let ids: Vec<ContainerId> = records.iter().map(|r| r.container.clone()).collect();
        for record in records {
            let state = if record.state == "running" {
                ContainerState::Running
            } else {
                ContainerState::Requested
            };
            self.bump_index(&record.node);
            self.containers.insert(
                record.container,
                Tracked {
                    node: record.node,
                    state,
                    since: Instant::now(),
                    requested_at_ms: record.requested_at_ms,
                    released: false,
                },
            );
        }
        if !ids.is_empty() {
            tracing::info!(
                containers = ids.len(),
                "adopting the containers of the previous leader"
            );
            self.worker.send(self.epoch, Job::Adopt(ids));
        }
        self.adopted = true;
    }

    fn outcome(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Polled(Ok(events)) => {
                self.polling = false;
                if let Some(error) = self.poll_error.take() {
                    tracing::info!(%error, "the resource manager answers again");
                }
                events
                    .into_iter()
                    .for_each(|event| self.container_changed(event));
            }
            Outcome::Polled(Err(error)) => {
                self.polling = false;
                let error = error.to_string();
                if self.poll_error.as_ref() != Some(&error) {
                    tracing::warn!(%error, "cannot poll the resource manager");
                    self.poll_error = Some(error);
                }
            }
            Outcome::Requested { node, result } => {
                self.requesting.remove(&node);
                self.spec.metrics.requested(result.is_ok());
                match result {
                    Ok(id) => {
                        tracing::info!(%node, container = %id, "container requested");
                        let tracked = Tracked {
                            node,
                            state: ContainerState::Requested,
                            since: Instant::now(),
                            requested_at_ms: unix_ms(),
                            released: false,
                        };
                        self.write_record(&id, &tracked);
                        self.containers.insert(id, tracked);
                    }
                    Err(error) => {
                        tracing::warn!(%node, %error, "container request failed");
                        self.failed();
                    }
                }
            }
            Outcome::Released { id, result } => match result {
                Ok(()) => tracing::info!(container = %id, "container release asked"),
                Err(ResourceError::UnknownContainer(_)) => {
                    tracing::info!(container = %id, "released container already gone");
                    self.forget(&id);
                }
                Err(error) => {
                    tracing::warn!(container = %id, %error, "container release failed: retrying");
                    if let Some(tracked) = self.containers.get_mut(&id) {
                        tracked.released = false;
                    }
                }
            },
            Outcome::Adopted(results) => {
                for (id, result) in results {
                    if let Err(error) = result {
                        tracing::warn!(container = %id, %error, "cannot adopt container");
                        self.forget(&id);
                    }
                }
            }
        }
    }

    fn container_changed(&mut self, event: ContainerEvent) {
        let Some(tracked) = self.containers.get_mut(&event.id) else {
            return;
        };
        let node = tracked.node.clone();
        match &event.state {
            ContainerState::Requested => tracked.state = event.state,
            ContainerState::Running => {
                if tracked.state != ContainerState::Running {
                    tracing::info!(%node, container = %event.id,
                        "container running: its node is starting");
                    tracked.state = ContainerState::Running;
                    tracked.since = Instant::now();
                    let tracked = &self.containers[&event.id];
                    self.write_record(&event.id, tracked);
                }
            }
            ended => {
                let diagnostics = ended.diagnostics().unwrap_or_default();
                if tracked.released {
                    self.spec.metrics.ended("released");
                    tracing::info!(%node, container = %event.id, state = ended.name(), %diagnostics,
                        "container released");
                } else {
                    self.spec.metrics.ended(ended.name());
                    tracing::warn!(%node, container = %event.id, state = ended.name(), %diagnostics,
                        "container ended: its node is gone and will be replaced if still needed");
                    self.failed();
                }
                self.forget(&event.id);
            }
        }
    }

    fn forget(&mut self, id: &ContainerId) {
        if self.containers.remove(id).is_some() {
            records::delete(self.registry.clone(), self.spec.backend, id.clone());
        }
    }

    /// A request failed or a container ended on its own: wait longer before the next request.
    fn failed(&mut self) {
        let now = Instant::now();
        if self
            .last_failure
            .is_some_and(|at| now.duration_since(at) > FAILURE_MEMORY)
        {
            self.failures = 0;
        }
        self.failures += 1;
        self.last_failure = Some(now);
        let delay = backoff(self.failures);
        self.next_request_at = now + delay;
        tracing::info!(failures = self.failures, delay = ?delay,
            "next container request backs off");
    }

    /// Requests and releases what [`plan::decide`] says, if this node leads.
    fn act(&mut self) {
        if !self.leading || !self.adopted {
            return;
        }
        let now = Instant::now();
        let views: Vec<ContainerView> = self
            .containers
            .iter()
            .map(|(id, t)| ContainerView {
                id: id.clone(),
                node: t.node.clone(),
                granted: t.state == ContainerState::Running,
                age: now.duration_since(t.since),
                released: t.released,
            })
            .collect();
        let decision = plan::decide(
            self.spec.sizing,
            &self.demand,
            &views,
            self.requesting.len(),
            &self.members,
        );
        for (id, why) in decision.release {
            if let Some(tracked) = self.containers.get_mut(&id) {
                tracing::info!(node = %tracked.node, container = %id, why, "releasing container");
                tracked.released = true;
                self.worker.send(self.epoch, Job::Release(id));
            }
        }
        if decision.request == 0 || now < self.next_request_at {
            return;
        }
        let seeds = self.seeds();
        if seeds.is_empty() {
            return;
        }
        tracing::info!(
            containers = decision.request,
            pending = self.demand.pending,
            per_container = self.spec.sizing.per_container,
            "instances pending for want of capacity: requesting containers"
        );
        for _ in 0..decision.request {
            let node = format!("{}-{}", self.spec.backend, self.next_index);
            self.next_index += 1;
            let launch = self.spec.template.launch(&node, &seeds);
            self.requesting.insert(node);
            self.worker.send(self.epoch, Job::Request(launch));
        }
    }

    /// The cluster addresses a container node joins: this node's first, then other alive ones.
    fn seeds(&self) -> Vec<SocketAddr> {
        let mut alive: Vec<&MemberView> = self
            .members
            .iter()
            .filter(|m| m.is_self || m.status == MemberStatus::Alive)
            .collect();
        alive.sort_by_key(|m| !m.is_self);
        alive
            .into_iter()
            .take(MAX_SEEDS)
            .map(|m| m.cluster_addr)
            .collect()
    }

    /// Container node names are never reused: the next index is past every `<backend>-<n>` seen.
    fn note_names(&mut self) {
        let names: Vec<String> = self.members.iter().map(|m| m.name.clone()).collect();
        names.iter().for_each(|name| self.bump_index(name));
    }

    fn bump_index(&mut self, name: &str) {
        let index = name
            .strip_prefix(self.spec.backend)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(index) = index {
            self.next_index = self.next_index.max(index + 1);
        }
    }

    fn write_record(&self, id: &ContainerId, tracked: &Tracked) {
        records::write(
            self.registry.clone(),
            ContainerRecord {
                backend: self.spec.backend.to_string(),
                container: id.clone(),
                node: tracked.node.clone(),
                state: tracked.state.name().to_string(),
                requested_at_ms: tracked.requested_at_ms,
                requested_by: self.node.clone(),
            },
        );
    }

    fn update_metrics(&self) {
        if !self.leading {
            return self.spec.metrics.set_containers([0, 0, 0]);
        }
        let alive: BTreeSet<&str> = self
            .members
            .iter()
            .filter(|m| m.status == MemberStatus::Alive)
            .map(|m| m.name.as_str())
            .collect();
        let mut counts = [self.requesting.len(), 0, 0];
        for tracked in self.containers.values() {
            let slot = match (&tracked.state, alive.contains(tracked.node.as_str())) {
                (_, true) => 2,
                (ContainerState::Running, false) => 1,
                _ => 0,
            };
            counts[slot] += 1;
        }
        self.spec.metrics.set_containers(counts);
    }
}

/// The pause before the next request after `failures` failures in a row.
fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (BACKOFF_MIN * 2u32.pow(doublings)).min(BACKOFF_MAX)
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn the_backoff_doubles_up_to_a_minute() {
        let delays: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff(1000), Duration::from_secs(60));
    }
}
