//! `Scheduler`: runs on every node, acts only on the leader.
//!
//! Leadership comes from membership (the oldest ZooKeeper member node, or the node holding the
//! embedded registry), so a dead leader is replaced as soon as its ZooKeeper session ends. The
//! scheduler keeps almost no state of its own (when it became leader, which instances it just
//! moved): each reconcile reads one [`ClusterView`], computes a [`Plan`](super::plan::Plan) with
//! the pure [`plan`] function and [`apply`]s it. A new leader therefore just carries on.
//!
//! Reconciles run off the handler, one at a time; triggers that arrive meanwhile coalesce into one
//! more run. Triggers: the topology changed, a roll-out or traffic-shift record changed (a
//! `lathe rollout` command), membership changed, a periodic safety net, and the wake-up the last
//! plan asked for (a roll-out or a rebalance moving, a shift step due, the settle window ending).
//!
//! After each reconcile the leader publishes its [`CapacityDemand`] — how many instances are
//! pending because every node that can run them is full — for the node's resource manager, which
//! asks for more nodes.

use std::collections::BTreeMap;

use lathe::layout;
use lathe::KeyPath;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;

use super::apply::apply;
use super::demand::{CapacityDemand, DemandSender};
use super::error::SchedulerError;
use super::metrics::SchedulerMetrics;
use super::plan::{plan, Clock, Leadership};
use super::settings::SchedulerSettings;
use super::traffic::TrafficSource;
use super::view::ClusterView;
use crate::follow::follow;
use crate::membership::{MemberView, MembershipHandle};
use crate::registry::RegistryHandle;

pub use super::plan::ReconcileReport;

#[derive(RactorMessage)]
pub enum SchedulerMsg {
    MembersChanged(Vec<MemberView>),
    TopologyChanged,
    Reconcile,
    Reconciled(Result<ReconcileReport, SchedulerError>),
}

pub struct Scheduler;

pub struct SchedulerArgs {
    pub node: String,
    pub registry: RegistryHandle,
    pub membership: MembershipHandle,
    /// Where to publish the capacity demand after each reconcile (the node's resource manager
    /// listens), if anyone listens.
    pub demand: Option<DemandSender>,
    /// Where metric gates read response counters: the nodes, or Prometheus.
    pub traffic_source: TrafficSource,
    /// Timings and limits ([`SchedulerSettings::default`] in production).
    pub settings: SchedulerSettings,
    /// Where lost compare-and-sets are counted, if anywhere.
    pub metrics: Option<SchedulerMetrics>,
}

pub struct SchedulerState {
    node: String,
    registry: RegistryHandle,
    membership: MembershipHandle,
    members: Vec<MemberView>,
    /// When this node became leader (for the settle window); `None` while it does not lead.
    leading_since: Option<tokio::time::Instant>,
    running: bool,
    /// The reconcile in flight, aborted if the scheduler stops (its writes are compare-and-set:
    /// a plan cut short is what a crashed leader leaves, and the next reconcile finishes it).
    reconcile: Option<tokio::task::JoinHandle<()>>,
    again: bool,
    /// Instances moved by rebalancing, held still until the instant given.
    held: BTreeMap<(String, u32), tokio::time::Instant>,
    watchers: Vec<tokio::task::JoinHandle<()>>,
    demand: Option<DemandSender>,
    traffic_source: TrafficSource,
    settings: SchedulerSettings,
    metrics: Option<SchedulerMetrics>,
}

impl Actor for Scheduler {
    type Msg = SchedulerMsg;
    type State = SchedulerState;
    type Arguments = SchedulerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SchedulerMsg>,
        args: SchedulerArgs,
    ) -> Result<SchedulerState, ActorProcessingErr> {
        let retry = args.settings.retry_after_error;
        let watchers = vec![
            follow(
                args.membership.subscribe(),
                myself.clone(),
                SchedulerMsg::MembersChanged,
            ),
            // The topology, and the records `lathe rollout` commands change: a resume or an undo
            // acts at once rather than at the next safety-net pass.
            watch(
                myself.clone(),
                args.registry.clone(),
                layout::TOPOLOGY,
                retry,
            ),
            watch(
                myself.clone(),
                args.registry.clone(),
                layout::ROLLOUTS,
                retry,
            ),
            watch(myself.clone(), args.registry.clone(), layout::SHIFTS, retry),
        ];
        myself.send_interval(args.settings.safety_net, || SchedulerMsg::Reconcile);
        Ok(SchedulerState {
            node: args.node,
            registry: args.registry,
            membership: args.membership,
            members: Vec::new(),
            leading_since: None,
            running: false,
            reconcile: None,
            again: false,
            held: BTreeMap::new(),
            watchers,
            demand: args.demand,
            traffic_source: args.traffic_source,
            settings: args.settings,
            metrics: args.metrics,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SchedulerMsg>,
        message: SchedulerMsg,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SchedulerMsg::MembersChanged(members) => {
                let leading =
                    members.iter().any(|m| m.is_self && m.leader) && !state.membership.is_fenced();
                if leading != state.leading_since.is_some() {
                    tracing::info!(node = %state.node, leading, "scheduler leadership changed");
                    state.leading_since = leading.then(tokio::time::Instant::now);
                    if let (false, Some(demand)) = (leading, &state.demand) {
                        // A demand counted while leading means nothing once another node leads.
                        demand.publish(CapacityDemand::default());
                    }
                }
                state.members = members;
                state.start_reconcile(&myself);
            }
            SchedulerMsg::TopologyChanged | SchedulerMsg::Reconcile => {
                state.start_reconcile(&myself)
            }
            SchedulerMsg::Reconciled(result) => {
                state.running = false;
                match result {
                    Ok(report) => state.reconciled(&myself, report),
                    Err(error) => {
                        tracing::warn!(%error, "reconcile failed: retrying");
                        let retry = state.settings.retry_after_error;
                        myself.send_after(retry, || SchedulerMsg::Reconcile);
                    }
                }
                if std::mem::take(&mut state.again) {
                    state.start_reconcile(&myself);
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SchedulerMsg>,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        state.watchers.iter().for_each(|w| w.abort());
        if let Some(reconcile) = state.reconcile.take() {
            reconcile.abort();
        }
        Ok(())
    }
}

impl SchedulerState {
    fn start_reconcile(&mut self, myself: &ActorRef<SchedulerMsg>) {
        let Some(since) = self.leading_since else {
            return;
        };
        if self.membership.is_fenced() {
            return;
        }
        if self.running {
            self.again = true;
            return;
        }
        self.running = true;
        let now = tokio::time::Instant::now();
        self.held.retain(|_, until| *until > now);
        let leadership = Leadership {
            node: self.node.clone(),
            since,
            held: self.held.clone(),
        };
        let (registry, members, source) = (
            self.registry.clone(),
            self.members.clone(),
            self.traffic_source.clone(),
        );
        let (settings, metrics) = (self.settings.clone(), self.metrics.clone());
        let scheduler = myself.clone();
        self.reconcile = Some(tokio::spawn(async move {
            // A panic must still report back: otherwise `running` stays set and the leader
            // schedules nothing more (failover included) until the process restarts.
            let result = crate::panics::caught(async {
                let view = ClusterView::read(&registry, &members, &source).await?;
                let plan = plan(&view, &leadership, Clock::now(), &settings);
                apply(plan, &registry, metrics.as_ref()).await
            })
            .await
            .unwrap_or_else(|panic| {
                tracing::error!(%panic, "reconcile panicked: it will run again");
                Err(SchedulerError::Panicked(panic.message))
            });
            let _ = scheduler.cast(SchedulerMsg::Reconciled(result));
        }));
    }

    /// Publishes what a reconcile found, holds what it moved and comes back when it asked to.
    fn reconciled(&mut self, myself: &ActorRef<SchedulerMsg>, report: ReconcileReport) {
        if let (true, Some(demand)) = (self.leading_since.is_some(), &self.demand) {
            demand.publish(report.demand.clone());
        }
        if report.placed + report.removed > 0 {
            tracing::info!(
                placed = report.placed,
                removed = report.removed,
                pending = report.pending,
                pending_for_capacity = report.demand.pending,
                moved = report.moved.len(),
                conflicts = report.conflicts,
                stopped = report.stopped,
                "assignments reconciled"
            );
        }
        let mut wake = report.wake_after;
        if report.conflicts > 0 {
            // Something changed under the plan: read it again soon.
            let retry = self.settings.retry_after_error;
            wake = Some(wake.map_or(retry, |w| w.min(retry)));
        }
        if let Some(wake) = wake {
            myself.send_after(wake, || SchedulerMsg::Reconcile);
        }
        if !report.stopped && !report.moved.is_empty() {
            let until = tokio::time::Instant::now() + self.settings.hold_after_move;
            self.held
                .extend(report.moved.into_iter().map(|moved| (moved, until)));
        }
    }
}

/// Casts `TopologyChanged` on every change under `prefix` (the topology, roll-outs, shifts).
fn watch(
    scheduler: ActorRef<SchedulerMsg>,
    registry: RegistryHandle,
    prefix: &'static str,
    retry: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(key) = KeyPath::parse(prefix) else {
            return;
        };
        let mut from = None;
        loop {
            let Ok(mut subscription) = registry.subscribe(&key, from).await else {
                tokio::time::sleep(retry).await;
                continue;
            };
            while let Some(event) = subscription.next().await {
                from = Some(event.index());
                if scheduler.cast(SchedulerMsg::TopologyChanged).is_err() {
                    return;
                }
            }
        }
    })
}
