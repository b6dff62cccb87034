//! The scheduler's timings and limits, with today's values as defaults; tests shorten them.

use std::time::Duration;

/// How often and how gently the scheduler acts. [`Default`] gives the production values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerSettings {
    /// A reconcile also runs this often without a trigger, to repair failed writes.
    pub safety_net: Duration,
    /// For this long after gaining leadership, a node that holds assignments but has not shown up
    /// in membership yet keeps them: a restarted leader hears from its peers only after they
    /// reconnect, and moving everything onto the first node up would put every instance on it.
    /// (Longer than membership's default dead_after, so a really dead node is known dead by then.)
    pub settle: Duration,
    /// At most this many running instances move per reconcile when rebalancing.
    pub max_moves: usize,
    /// An instance that moved stays put this long, so rebalancing settles instead of chasing.
    pub hold_after_move: Duration,
    /// After a reconcile that moved instances, the next one comes this soon.
    pub next_step: Duration,
    /// After a failed reconcile, or one that lost a compare-and-set, the next one comes this soon.
    pub retry_after_error: Duration,
    /// While a roll-out moves, the next reconcile comes this soon (it judges the batch's health).
    pub rollout_tick: Duration,
    /// How often a traffic shift under a metric gate is judged between its steps.
    pub gate_watch: Duration,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        SchedulerSettings {
            safety_net: Duration::from_secs(5),
            settle: Duration::from_secs(5),
            max_moves: 2,
            hold_after_move: Duration::from_secs(60),
            next_step: Duration::from_secs(1),
            retry_after_error: Duration::from_secs(1),
            rollout_tick: Duration::from_millis(500),
            gate_watch: Duration::from_secs(1),
        }
    }
}
