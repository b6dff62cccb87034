//! How crashed task instances are restarted: the group's [`RestartPolicy`] (the topology's
//! `restart` table; [`RestartPolicy::default`] for groups without one), applied per instance.
//!
//! - Intensity: at most `max_restarts` restarts within `within_seconds`; the crash after that
//!   marks the instance `failed` instead of restarting it. A failed instance is retried after
//!   [`FAILED_RETRY`](super::FAILED_RETRY) with a fresh budget, and at once when its assignment
//!   is rewritten (a redeploy).
//! - Back-off: the first restart in a window is immediate, the second waits `backoff_ms`, each
//!   further one twice as long, up to `max_backoff_ms`.
//! - Strategy, among the group's instances on this node: `one-for-one` restarts only the crashed
//!   instance; `one-for-all` also restarts every other instance of the group; `rest-for-one` also
//!   restarts those with a higher index. A crash is charged to the crashed instance's intensity
//!   only; the others restart as soon as they have stopped (drained), the crashed one after its
//!   back-off. An instance that crashed beyond its intensity fails alone: the others keep running.

use std::time::Instant;

pub use lathe::topology::{RestartPolicy, RestartStrategy};
pub(crate) use lathe_supervisors::policy::AfterCrash;
use lathe_supervisors::policy::{RestartBudget, RestartLimits};

/// The intensity and back-off of a group's `restart` table, as the supervision layer takes them.
pub(crate) fn limits_of(policy: &RestartPolicy) -> RestartLimits {
    RestartLimits {
        max_restarts: policy.max_restarts,
        window: policy.window(),
        backoff: policy.backoff(),
        max_backoff: policy.max_backoff(),
    }
}

/// The restart bookkeeping of one instance: its group's policy and its crashes in the window.
#[derive(Debug, Clone)]
pub(crate) struct RestartTracker {
    policy: RestartPolicy,
    budget: RestartBudget,
}

impl RestartTracker {
    pub(crate) fn new(policy: RestartPolicy) -> Self {
        RestartTracker {
            budget: RestartBudget::new(limits_of(&policy)),
            policy,
        }
    }

    pub(crate) fn policy(&self) -> &RestartPolicy {
        &self.policy
    }

    /// Takes a new policy (a redeployed topology), keeping the crashes already counted.
    pub(crate) fn set_policy(&mut self, policy: RestartPolicy) {
        self.budget.set_limits(limits_of(&policy));
        self.policy = policy;
    }

    /// Records a crash at `now`: restart after the back-off, or give up past the intensity.
    pub(crate) fn on_crash(&mut self, now: Instant) -> AfterCrash {
        self.budget.on_crash(now)
    }
}

/// The other instances of a group (by index, on this node) that restart with the `crashed` one.
pub(crate) fn restarted_with(
    strategy: RestartStrategy,
    crashed: u32,
    group_indexes: impl IntoIterator<Item = u32>,
) -> Vec<u32> {
    group_indexes
        .into_iter()
        .filter(|&index| index != crashed)
        .filter(|&index| match strategy {
            RestartStrategy::OneForOne => false,
            RestartStrategy::OneForAll => true,
            RestartStrategy::RestForOne => index > crashed,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn policy(max_restarts: u32, within_seconds: u32) -> RestartPolicy {
        RestartPolicy {
            max_restarts,
            within_seconds,
            backoff_ms: 100,
            max_backoff_ms: 300,
            ..RestartPolicy::default()
        }
    }

    #[test]
    fn zero_restarts_fails_at_the_first_crash_and_a_new_policy_keeps_the_history() {
        let mut tracker = RestartTracker::new(policy(0, 10));
        let t0 = Instant::now();
        assert_eq!(tracker.on_crash(t0), AfterCrash::GiveUp);
        let mut tracker = RestartTracker::new(policy(1, 10));
        assert_eq!(
            tracker.on_crash(t0),
            AfterCrash::RestartAfter(Duration::ZERO)
        );
        tracker.set_policy(policy(1, 60));
        assert_eq!(
            tracker.on_crash(t0 + Duration::from_secs(30)),
            AfterCrash::GiveUp
        );
    }

    #[test]
    fn the_default_topology_policy_backs_off_from_100_ms_to_5_s() {
        let limits = limits_of(&RestartPolicy::default());
        let waits: Vec<u128> = (1..=8).map(|n| limits.backoff(n).as_millis()).collect();
        assert_eq!(waits, [0, 100, 200, 400, 800, 1600, 3200, 5000]);
        assert_eq!(limits.backoff(u32::MAX).as_millis(), 5000);
        assert_eq!(limits.max_restarts, 5);
    }

    #[test]
    fn strategies_pick_the_instances_that_restart_along() {
        let group = [0, 1, 2, 3];
        assert!(restarted_with(RestartStrategy::OneForOne, 1, group).is_empty());
        assert_eq!(
            restarted_with(RestartStrategy::OneForAll, 1, group),
            vec![0, 2, 3]
        );
        assert_eq!(
            restarted_with(RestartStrategy::RestForOne, 1, group),
            vec![2, 3]
        );
        assert!(restarted_with(RestartStrategy::RestForOne, 3, group).is_empty());
    }
}
