//! The one restart policy of Lathe's supervisors: restart intensity and exponential back-off.
//!
//! - Intensity: at most `max_restarts` restarts within `window`; the crash after that means the
//!   supervisor gives up (a task instance is marked `failed`, a subsystem fails its node, the
//!   agent stops) — as OTP's `intensity` and `period`.
//! - Back-off: the first restart in a window is immediate, the second waits `backoff`, each
//!   further one twice as long, up to `max_backoff`. Subsystems and the agent restart at once
//!   ([`RestartLimits::immediate`]); task instances take the back-off of their topology's
//!   `restart` table.
//!
//! [`RestartBudget`] is the bookkeeping of one supervised child; it is pure (the caller passes
//! the time), so the policy is unit-tested without clocks.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How often, and how fast, a child may be restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartLimits {
    /// Restarts allowed within `window`.
    pub max_restarts: u32,
    pub window: Duration,
    /// The wait before the second restart of a window; doubles for each further one.
    pub backoff: Duration,
    /// The longest wait.
    pub max_backoff: Duration,
}

impl RestartLimits {
    /// At most `max_restarts` within `window`, each one at once.
    pub const fn immediate(max_restarts: u32, window: Duration) -> Self {
        RestartLimits {
            max_restarts,
            window,
            backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
        }
    }

    /// The wait before the `restart`-th restart of the current window (1-based): the first is
    /// immediate, then `backoff`, doubling each time, capped at `max_backoff`.
    pub fn backoff(&self, restart: u32) -> Duration {
        if restart <= 1 {
            return Duration::ZERO;
        }
        let doublings = (restart - 2).min(31);
        self.backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff)
    }
}

/// What a supervisor does after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterCrash {
    /// Restart the child after this wait.
    RestartAfter(Duration),
    /// Past the intensity: stop restarting it.
    GiveUp,
}

/// The restart bookkeeping of one supervised child: its crashes within the window.
#[derive(Debug, Clone)]
pub struct RestartBudget {
    limits: RestartLimits,
    recent: VecDeque<Instant>,
}

impl RestartBudget {
    pub fn new(limits: RestartLimits) -> Self {
        RestartBudget {
            limits,
            recent: VecDeque::new(),
        }
    }

    pub fn limits(&self) -> &RestartLimits {
        &self.limits
    }

    /// Takes new limits (a redeployed topology), keeping the crashes already counted.
    pub fn set_limits(&mut self, limits: RestartLimits) {
        self.limits = limits;
    }

    /// Records a crash at `now`: restart after the back-off, or give up past the intensity.
    pub fn on_crash(&mut self, now: Instant) -> AfterCrash {
        let window = self.limits.window;
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.limits.max_restarts as usize {
            return AfterCrash::GiveUp;
        }
        self.recent.push_back(now);
        let restart = u32::try_from(self.recent.len()).unwrap_or(u32::MAX);
        AfterCrash::RestartAfter(self.limits.backoff(restart))
    }

    /// Records a crash at `now`; `true` when the child may be restarted at once (for supervisors
    /// without back-off).
    pub fn allow(&mut self, now: Instant) -> bool {
        matches!(self.on_crash(now), AfterCrash::RestartAfter(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_restarts: u32, window_secs: u64) -> RestartLimits {
        RestartLimits {
            max_restarts,
            window: Duration::from_secs(window_secs),
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
        }
    }

    #[test]
    fn the_first_restart_is_immediate_then_the_back_off_doubles_to_its_cap_then_it_gives_up() {
        let mut budget = RestartBudget::new(limits(5, 30));
        let t0 = Instant::now();
        let delays: Vec<AfterCrash> = (0..6)
            .map(|i| budget.on_crash(t0 + Duration::from_secs(i)))
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
        let mut budget = RestartBudget::new(limits(2, 10));
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(
            budget.on_crash(at(0)),
            AfterCrash::RestartAfter(Duration::ZERO)
        );
        assert_eq!(
            budget.on_crash(at(1)),
            AfterCrash::RestartAfter(Duration::from_millis(100))
        );
        assert_eq!(budget.on_crash(at(2)), AfterCrash::GiveUp);
        // Both earlier crashes left the window: immediate again.
        assert_eq!(
            budget.on_crash(at(12)),
            AfterCrash::RestartAfter(Duration::ZERO)
        );
    }

    #[test]
    fn zero_restarts_gives_up_at_the_first_crash_and_new_limits_keep_the_history() {
        let t0 = Instant::now();
        assert_eq!(
            RestartBudget::new(limits(0, 10)).on_crash(t0),
            AfterCrash::GiveUp
        );
        let mut budget = RestartBudget::new(limits(1, 10));
        assert_eq!(
            budget.on_crash(t0),
            AfterCrash::RestartAfter(Duration::ZERO)
        );
        budget.set_limits(limits(1, 60));
        assert_eq!(
            budget.on_crash(t0 + Duration::from_secs(30)),
            AfterCrash::GiveUp
        );
    }

    #[test]
    fn immediate_limits_allow_r_restarts_per_window_at_once() {
        let mut budget = RestartBudget::new(RestartLimits::immediate(2, Duration::from_secs(10)));
        let t0 = Instant::now();
        assert!(budget.allow(t0));
        assert!(budget.allow(t0 + Duration::from_secs(1)));
        assert!(!budget.allow(t0 + Duration::from_secs(2)));
        assert!(budget.allow(t0 + Duration::from_secs(12)));
        assert_eq!(budget.limits().backoff(5), Duration::ZERO);
    }

    #[test]
    fn back_off_never_overflows() {
        let limits = RestartLimits {
            max_restarts: u32::MAX,
            window: Duration::from_secs(1),
            backoff: Duration::from_secs(u64::MAX / 2),
            max_backoff: Duration::from_secs(60),
        };
        assert_eq!(limits.backoff(u32::MAX), Duration::from_secs(60));
    }
}
