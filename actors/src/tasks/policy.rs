//! How a crashed task instance is restarted: exponential back-off, and a restart intensity beyond
//! which the instance is `failed` and left alone. One policy per group (the topology's `restart`
//! table, issue 4), [`RestartPolicy::default`] otherwise.

use std::time::{Duration, Instant};

use lathe::supervision::RestartIntensity;

/// A group's restart policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPolicy {
    /// At most this many restarts within `window`; one more fails the instance.
    pub max_restarts: usize,
    pub window: Duration,
    /// The delay before the first restart; it doubles with every crash, up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_restarts: 5,
            window: Duration::from_secs(30),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// What to do after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterCrash {
    RestartAfter(Duration),
    GiveUp,
}

/// The restart bookkeeping of one instance.
#[derive(Debug, Clone)]
pub(crate) struct RestartTracker {
    policy: RestartPolicy,
    intensity: RestartIntensity,
    next_backoff: Duration,
    last_crash: Option<Instant>,
}

impl RestartTracker {
    pub(crate) fn new(policy: RestartPolicy) -> Self {
        RestartTracker {
            intensity: RestartIntensity::new(policy.max_restarts, policy.window),
            next_backoff: policy.initial_backoff,
            last_crash: None,
            policy,
        }
    }

    pub(crate) fn policy(&self) -> &RestartPolicy {
        &self.policy
    }

    /// Records a crash at `now`. The back-off starts over when the previous crash is older than
    /// the intensity window (the instance had been healthy for a while).
    pub(crate) fn on_crash(&mut self, now: Instant) -> AfterCrash {
        if self
            .last_crash
            .is_some_and(|last| now.duration_since(last) > self.policy.window)
        {
            self.next_backoff = self.policy.initial_backoff;
        }
        self.last_crash = Some(now);
        if !self.intensity.allow(now) {
            return AfterCrash::GiveUp;
        }
        let delay = self.next_backoff;
        self.next_backoff = (self.next_backoff * 2).min(self.policy.max_backoff);
        AfterCrash::RestartAfter(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_up_to_its_cap_then_the_intensity_gives_up() {
        let policy = RestartPolicy {
            max_restarts: 4,
            window: Duration::from_secs(30),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
        };
        let mut tracker = RestartTracker::new(policy);
        let t0 = Instant::now();
        let delays: Vec<AfterCrash> = (0..5)
            .map(|i| tracker.on_crash(t0 + Duration::from_secs(i)))
            .collect();
        let ms = |n| AfterCrash::RestartAfter(Duration::from_millis(n));
        assert_eq!(
            delays,
            vec![ms(100), ms(200), ms(300), ms(300), AfterCrash::GiveUp]
        );
    }

    #[test]
    fn a_quiet_window_resets_the_back_off() {
        let mut tracker = RestartTracker::new(RestartPolicy::default());
        let t0 = Instant::now();
        assert_eq!(
            tracker.on_crash(t0),
            AfterCrash::RestartAfter(Duration::from_millis(100))
        );
        assert_eq!(
            tracker.on_crash(t0 + Duration::from_secs(1)),
            AfterCrash::RestartAfter(Duration::from_millis(200))
        );
        assert_eq!(
            tracker.on_crash(t0 + Duration::from_secs(60)),
            AfterCrash::RestartAfter(Duration::from_millis(100))
        );
    }
}
