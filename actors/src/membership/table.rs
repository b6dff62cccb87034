//! The member table: pure status bookkeeping, driven by events and an injected clock (`now`).
//!
//! ```text
//!            heartbeat                 late heartbeat / session closed
//!  (new) ──────────────▶ alive ◀──────────────────────────▶ suspect
//!                          │      heartbeat within suspect_after │
//!                          └──── leave / ZK node vanished ───────┤
//!                                                                ▼ silence ≥ dead_after
//!                                                              dead ── heartbeat with a newer
//!                                                                       incarnation ──▶ alive
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::types::{MemberInfo, MemberStatus, MemberView};
use super::zookeeper::ZkListing;

/// The two thresholds that turn silence into a status.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) suspect_after: Duration,
    pub(crate) dead_after: Duration,
}

/// Why a member is dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeathCause {
    Silence,
    Left,
    ZookeeperVanished,
}

#[derive(Debug, Clone)]
struct Record {
    info: MemberInfo,
    status: MemberStatus,
    last_heartbeat: Option<Instant>,
    first_seen: Instant,
    session_closed: bool,
    in_zookeeper: bool,
    /// Set while dead: the incarnation it died at, and why.
    death: Option<(u64, DeathCause)>,
}

/// What became of a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeartbeatOutcome {
    Accepted,
    /// From an older process of that name, or from a member whose ZooKeeper node is still gone.
    Stale,
    /// From a member held dead at this incarnation: ignored; the sender should refute it.
    Refute {
        incarnation: u64,
    },
}

/// A status change, for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transition {
    pub(crate) name: String,
    pub(crate) from: Option<MemberStatus>,
    pub(crate) to: MemberStatus,
    pub(crate) cause: Option<DeathCause>,
}

/// Every member this node knows, itself included.
#[derive(Debug, Clone)]
pub(crate) struct MemberTable {
    own: MemberInfo,
    timing: Timing,
    members: BTreeMap<String, Record>,
    /// The members in the latest ZooKeeper listing with the zxids that created their nodes;
    /// `None` while ZooKeeper is not watched.
    zookeeper_view: Option<BTreeMap<String, i64>>,
    /// The members of the last ZooKeeper listing, oldest member node first (by the zxid that
    /// created it, then name), kept while ZooKeeper is unreachable: the order of succession.
    zookeeper_order: Vec<(i64, String)>,
}

impl MemberTable {
    pub(crate) fn new(own: MemberInfo, timing: Timing) -> Self {
        MemberTable {
            own,
            timing,
            members: BTreeMap::new(),
            zookeeper_view: None,
            zookeeper_order: Vec::new(),
        }
    }

    pub(crate) fn own(&self) -> &MemberInfo {
        &self.own
    }

    /// Replaces this node's own info (after an incarnation bump).
    pub(crate) fn set_own(&mut self, own: MemberInfo) {
        self.own = own;
    }

    pub(crate) fn on_heartbeat(
        &mut self,
        info: MemberInfo,
        now: Instant,
    ) -> (HeartbeatOutcome, Vec<Transition>) {
        if info.name == self.own.name {
            return (HeartbeatOutcome::Stale, Vec::new());
        }
        let Some(record) = self.members.get_mut(&info.name) else {
            return (
                HeartbeatOutcome::Accepted,
                self.admit(Record::from_heartbeat(info, now), now),
            );
        };
        if let Some((dead_at, cause)) = record.death {
            if info.incarnation <= dead_at {
                return (
                    HeartbeatOutcome::Refute {
                        incarnation: dead_at,
                    },
                    Vec::new(),
                );
            }
            let vanished = cause == DeathCause::ZookeeperVanished
                && self
                    .zookeeper_view
                    .as_ref()
                    .is_some_and(|v| !v.contains_key(&info.name));
            if vanished {
                return (HeartbeatOutcome::Stale, Vec::new());
            }
            record.death = None;
            record.status = MemberStatus::Suspect;
        } else if info.incarnation < record.info.incarnation {
            return (HeartbeatOutcome::Stale, Vec::new());
        }
        record.info = info;
        record.last_heartbeat = Some(now);
        record.session_closed = false;
        let name = record.info.name.clone();
        (HeartbeatOutcome::Accepted, self.evaluate(&name, now))
    }

    /// Inserts a member not known before (or back from the dead) and reports it as new.
    fn admit(&mut self, record: Record, now: Instant) -> Vec<Transition> {
        let name = record.info.name.clone();
        self.members.insert(name.clone(), record);
        self.evaluate(&name, now);
        let to = self.members[&name].status;
        vec![Transition {
            name,
            from: None,
            to,
            cause: None,
        }]
    }

    /// The last authenticated cluster session to `name` closed.
    pub(crate) fn on_session_closed(&mut self, name: &str, now: Instant) -> Vec<Transition> {
        match self.members.get_mut(name) {
            Some(record) => record.session_closed = true,
            None => return Vec::new(),
        }
        self.evaluate(name, now)
    }

    /// A cluster session to `name` authenticated.
    pub(crate) fn on_session_up(&mut self, name: &str, now: Instant) -> Vec<Transition> {
        match self.members.get_mut(name) {
            Some(record) => record.session_closed = false,
            None => return Vec::new(),
        }
        self.evaluate(name, now)
    }

    /// `name` announced it is leaving.
    pub(crate) fn on_leave(&mut self, name: &str, incarnation: u64) -> Vec<Transition> {
        match self.members.get_mut(name) {
            Some(record) if incarnation >= record.info.incarnation && record.death.is_none() => {
                record.info.incarnation = incarnation;
                vec![record.kill(DeathCause::Left)]
            }
            _ => Vec::new(),
        }
    }

    /// A new ZooKeeper listing (`None`: ZooKeeper is unreachable, absence proves nothing).
    pub(crate) fn on_zookeeper(
        &mut self,
        listing: Option<ZkListing>,
        now: Instant,
    ) -> Vec<Transition> {
        let Some(listing) = listing else {
            self.zookeeper_view = None;
            return Vec::new();
        };
        let mut changes = Vec::new();
        for (name, member) in &listing {
            let Some(info) = member.info.as_ref().filter(|_| *name != self.own.name) else {
                continue;
            };
            match self.members.get_mut(name) {
                Some(record)
                    if record
                        .death
                        .is_some_and(|(dead_at, _)| info.incarnation > dead_at) =>
                {
                    changes.extend(self.admit(Record::listed(info.clone(), now), now));
                }
                Some(record) => record.in_zookeeper = true,
                None => changes.extend(self.admit(Record::listed(info.clone(), now), now)),
            }
        }
        for record in self.members.values_mut() {
            if record.in_zookeeper && !listing.contains_key(&record.info.name) {
                record.in_zookeeper = false;
                if record.death.is_none() {
                    changes.push(record.kill(DeathCause::ZookeeperVanished));
                }
            }
        }
        self.zookeeper_order = listing
            .iter()
            .map(|(name, member)| (member.czxid, name.clone()))
            .collect();
        self.zookeeper_order.sort();
        self.zookeeper_view = Some(
            listing
                .into_iter()
                .map(|(name, member)| (name, member.czxid))
                .collect(),
        );
        changes
    }

    /// The scheduler leader. With ZooKeeper: the member whose ephemeral node is the oldest, passing
    /// over members this node holds dead — a SIGKILLed leader's node lingers in ZooKeeper until
    /// its session times out, while heartbeats and the closed connection tell it dead within
    /// 1.5 s. A node passes over a listed member to lead itself only while it reaches a majority
    /// of the members (`reachability`): a node cut off from the others must not lead beside the
    /// real leader. Without ZooKeeper: the live node that holds the embedded registry.
    pub(crate) fn leader(&self) -> Option<String> {
        if !self.zookeeper_order.is_empty() {
            let mut passed_over = false;
            for (_, name) in &self.zookeeper_order {
                if *name == self.own.name {
                    let (reachable, total) = self.reachability();
                    let majority = reachable * 2 >= total;
                    return (!passed_over || majority).then(|| name.clone());
                }
                match self.members.get(name) {
                    Some(record) if record.status == MemberStatus::Dead => passed_over = true,
                    _ => return Some(name.clone()),
                }
            }
            return None;
        }
        if self.own.holds_registry {
            return Some(self.own.name.clone());
        }
        self.members
            .values()
            .find(|r| r.info.holds_registry && r.status != MemberStatus::Dead)
            .map(|r| r.info.name.clone())
    }

    /// This process itself stood still for `pause` (frozen, swapped out): the silence of peers
    /// during it proves nothing, so it does not count towards suspect or dead.
    pub(crate) fn on_local_pause(&mut self, pause: Duration) {
        for record in self.members.values_mut().filter(|r| r.death.is_none()) {
            record.first_seen += pause;
            record.last_heartbeat = record.last_heartbeat.map(|t| t + pause);
        }
    }

    /// Re-evaluates every member against the clock.
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<Transition> {
        let names: Vec<String> = self.members.keys().cloned().collect();
        names
            .iter()
            .flat_map(|name| self.evaluate(name, now))
            .collect()
    }

    fn evaluate(&mut self, name: &str, now: Instant) -> Vec<Transition> {
        let timing = self.timing;
        let Some(record) = self.members.get_mut(name) else {
            return Vec::new();
        };
        if record.death.is_some() {
            return Vec::new();
        }
        let silence =
            now.saturating_duration_since(record.last_heartbeat.unwrap_or(record.first_seen));
        // A closed cluster session and silent heartbeats together are strong evidence (a killed
        // process closes its sockets at once): dead sooner than silence alone, which may be a
        // pause or a partition with the connection still open.
        let dead_after = if record.session_closed {
            timing.dead_after.min(timing.suspect_after * 3 / 2)
        } else {
            timing.dead_after
        };
        if silence >= dead_after {
            return vec![record.kill(DeathCause::Silence)];
        }
        let to = if record.session_closed
            || record.last_heartbeat.is_none()
            || silence >= timing.suspect_after
        {
            MemberStatus::Suspect
        } else {
            MemberStatus::Alive
        };
        record.transition(to).into_iter().collect()
    }

    /// Status of a member (this node is always alive).
    #[cfg(test)]
    pub(crate) fn status(&self, name: &str) -> Option<MemberStatus> {
        if name == self.own.name {
            return Some(MemberStatus::Alive);
        }
        self.members.get(name).map(|r| r.status)
    }

    /// Whether `name` is this node or a member it knows (alive, suspect or dead).
    pub(crate) fn knows(&self, name: &str) -> bool {
        name == self.own.name || self.members.contains_key(name)
    }

    /// Other members with their status, for reconnecting and leaving.
    pub(crate) fn peers(&self) -> impl Iterator<Item = (&MemberInfo, MemberStatus)> {
        self.members.values().map(|r| (&r.info, r.status))
    }

    /// The `/v1/members` list, sorted by name.
    pub(crate) fn views(&self, now: Instant) -> Vec<MemberView> {
        let leader = self.leader();
        let own = view(&self.own, MemberStatus::Alive, None, true);
        // A node known only from its ZooKeeper member node has not authenticated on the
        // cluster yet (or never will: a wrong cookie): it is not listed until it is heard.
        let others = self.members.values().filter(|r| r.heard()).map(|r| {
            let ago = r
                .last_heartbeat
                .map(|t| now.saturating_duration_since(t).as_millis() as u64);
            view(&r.info, r.status, ago, false)
        });
        let mut all: Vec<MemberView> = std::iter::once(own).chain(others).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        for member in &mut all {
            member.leader = leader.as_deref() == Some(member.name.as_str());
        }
        all
    }

    /// How many members this node reaches (itself and the alive peers) out of how many it counts:
    /// itself, the peers not dead, and the dead ones still listed in ZooKeeper (the last listing,
    /// kept while ZooKeeper is away). A member that left, or whose member node is gone from
    /// ZooKeeper, no longer counts: released YARN nodes and long-dead ones must not turn the live
    /// nodes into a minority.
    pub(crate) fn reachability(&self) -> (usize, usize) {
        let counted = self.members.values().filter(|r| match r.death {
            Some((_, DeathCause::Left)) => false,
            Some(_) => r.in_zookeeper,
            None => true,
        });
        let (mut reachable, mut total) = (1, 1);
        for record in counted {
            total += 1;
            if record.status == MemberStatus::Alive {
                reachable += 1;
            }
        }
        (reachable, total)
    }

    /// How many members have each status (this node counts as alive).
    pub(crate) fn counts(&self) -> [(MemberStatus, usize); 3] {
        let count = |s| {
            self.members
                .values()
                .filter(|r| r.heard() && r.status == s)
                .count()
        };
        [
            (MemberStatus::Alive, count(MemberStatus::Alive) + 1),
            (MemberStatus::Suspect, count(MemberStatus::Suspect)),
            (MemberStatus::Dead, count(MemberStatus::Dead)),
        ]
    }
}

impl Record {
    /// Whether this member ever sent a heartbeat over an authenticated cluster session.
    fn heard(&self) -> bool {
        self.last_heartbeat.is_some()
    }

    fn from_heartbeat(info: MemberInfo, now: Instant) -> Self {
        Record {
            last_heartbeat: Some(now),
            in_zookeeper: false,
            ..Record::listed(info, now)
        }
    }

    fn listed(info: MemberInfo, now: Instant) -> Self {
        Record {
            info,
            status: MemberStatus::Suspect,
            last_heartbeat: None,
            first_seen: now,
            session_closed: false,
            in_zookeeper: true,
            death: None,
        }
    }

    fn kill(&mut self, cause: DeathCause) -> Transition {
        self.death = Some((self.info.incarnation, cause));
        let from = self.status;
        self.status = MemberStatus::Dead;
        Transition {
            name: self.info.name.clone(),
            from: Some(from),
            to: MemberStatus::Dead,
            cause: Some(cause),
        }
    }

    fn transition(&mut self, to: MemberStatus) -> Option<Transition> {
        if self.status == to {
            return None;
        }
        let from = std::mem::replace(&mut self.status, to);
        Some(Transition {
            name: self.info.name.clone(),
            from: Some(from),
            to,
            cause: None,
        })
    }
}

fn view(info: &MemberInfo, status: MemberStatus, ago: Option<u64>, is_self: bool) -> MemberView {
    MemberView {
        name: info.name.clone(),
        pid: info.pid,
        cluster_addr: info.cluster_addr,
        http_addr: info.http_addr,
        tags: info.tags.clone(),
        status,
        leader: false,
        catalog: info.catalog.clone(),
        max_instances: info.max_instances,
        version: info.version.clone(),
        last_heartbeat_ms_ago: ago,
        is_self,
        incarnation: info.incarnation,
        started_at_ms: info.started_at_ms,
    }
}
