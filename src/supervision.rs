//! Restart policies shared by Lathe's supervisors: restart intensity (at most R restarts in T).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// At most `max_restarts` within `window`; one more means the supervisor gives up and escalates.
#[derive(Debug, Clone)]
pub struct RestartIntensity {
    max_restarts: usize,
    window: Duration,
    recent: VecDeque<Instant>,
}

impl RestartIntensity {
    pub fn new(max_restarts: usize, window: Duration) -> Self {
        RestartIntensity {
            max_restarts,
            window,
            recent: VecDeque::new(),
        }
    }

    /// Records a restart at `now`; `false` when it goes over the intensity.
    pub fn allow(&mut self, now: Instant) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.window)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        self.recent.len() <= self.max_restarts
    }

    pub fn max_restarts(&self) -> usize {
        self.max_restarts
    }

    pub fn window(&self) -> Duration {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_r_restarts_per_window() {
        let mut intensity = RestartIntensity::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(intensity.allow(t0));
        assert!(intensity.allow(t0 + Duration::from_secs(1)));
        assert!(!intensity.allow(t0 + Duration::from_secs(2)));
        // the first two fall out of the window
        assert!(intensity.allow(t0 + Duration::from_secs(12)));
    }
}
