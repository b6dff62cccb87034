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

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub use lathe::topology::{RestartPolicy, RestartStrategy};

/// What to do after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterCrash {
    RestartAfter(Duration),
    GiveUp,
}

/// The restart bookkeeping of one instance: its crashes within the policy's window.
#[derive(Debug, Clone)]
pub(crate) struct RestartTracker {
    policy: RestartPolicy,
    recent: VecDeque<Instant>,
}

impl RestartTracker {
    pub(crate) fn new(policy: RestartPolicy) -> Self {
        RestartTracker {
            policy,
            recent: VecDeque::new(),
        }
    }

    pub(crate) fn policy(&self) -> &RestartPolicy {
        &self.policy
    }

    /// Takes a new policy (a redeployed topology), keeping the crashes already counted.
    pub(crate) fn set_policy(&mut self, policy: RestartPolicy) {
        self.policy = policy;
    }

    /// Records a crash at `now`: restart after the back-off, or give up past the intensity.
    pub(crate) fn on_crash(&mut self, now: Instant) -> AfterCrash {
        let window = self.policy.window();
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.policy.max_restarts as usize {
            return AfterCrash::GiveUp;
        }
        self.recent.push_back(now);
        let restart = u32::try_from(self.recent.len()).unwrap_or(u32::MAX);
        AfterCrash::RestartAfter(self.policy.backoff(restart))
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
    fn the_first_restart_is_immediate_then_the_back_off_doubles_to_its_cap_then_it_gives_up() {
        let mut tracker = RestartTracker::new(policy(5, 30));
        let t0 = Instant::now();
        let delays: Vec<AfterCrash> = (0..6)
            .map(|i| tracker.on_crash(t0 + Duration::from_secs(i)))
            .collect();
        let ms = |n| AfterCrash::RestartAfter(Duration::from_millis(n));
        assert_eq!(
            delays,
            vec![
                ms(0),
                ms(100),
                ms(200),
                ms(300),
                ms(300),
                AfterCrash::GiveUp
            ]
        );
    }

    #[test]
    fn crashes_older_than_the_window_no_longer_count() {
        let mut tracker = RestartTracker::new(policy(2, 10));
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(
            tracker.on_crash(at(0)),
            AfterCrash::RestartAfter(Duration::ZERO)
        );
        assert_eq!(
            tracker.on_crash(at(1)),
            AfterCrash::RestartAfter(Duration::from_millis(100))
        );
        assert_eq!(tracker.on_crash(at(2)), AfterCrash::GiveUp);
        // Both earlier crashes left the window: immediate again.
        assert_eq!(
            tracker.on_crash(at(12)),
            AfterCrash::RestartAfter(Duration::ZERO)
        );
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
