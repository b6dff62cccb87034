//! Debounce as consul-template does it: act `min` after the last change (quiet period), but no
//! later than `max` after the first change of a burst. Pure: the actor turns the returned delays
//! into timers and hands back their generation.

use std::time::{Duration, Instant};

use crate::config::Window;

#[derive(Debug)]
pub struct Debounce {
    window: Window,
    /// When the current burst began.
    first: Option<Instant>,
    /// Only the newest timer may fire.
    generation: u64,
}

impl Debounce {
    pub fn new(window: Window) -> Self {
        Debounce {
            window,
            first: None,
            generation: 0,
        }
    }

    /// A change at `now`: returns the generation and delay of the timer to (re)arm.
    pub fn changed(&mut self, now: Instant) -> (u64, Duration) {
        let first = *self.first.get_or_insert(now);
        self.generation += 1;
        let quiet = now + self.window.min;
        let latest = first + self.window.max;
        (
            self.generation,
            quiet.min(latest).saturating_duration_since(now),
        )
    }

    /// A timer fired: true when it is the newest and a burst is pending (the burst then ends).
    pub fn fire(&mut self, generation: u64) -> bool {
        if generation != self.generation || self.first.is_none() {
            return false;
        }
        self.first = None;
        true
    }

    pub fn is_pending(&self) -> bool {
        self.first.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn quiet_period_then_cap() {
        let mut debounce = Debounce::new(Window::new(ms(200), ms(500)));
        let t0 = Instant::now();
        let (g1, d1) = debounce.changed(t0);
        assert_eq!(d1, ms(200));
        let (g2, d2) = debounce.changed(t0 + ms(150));
        assert_eq!(d2, ms(200));
        let (g3, d3) = debounce.changed(t0 + ms(400));
        assert_eq!(d3, ms(100), "capped at first + max");
        assert!(!debounce.fire(g1) && !debounce.fire(g2));
        assert!(debounce.fire(g3));
        assert!(!debounce.fire(g3), "fires once");
        assert!(!debounce.is_pending());
        let (_, d4) = debounce.changed(t0 + ms(1000));
        assert_eq!(d4, ms(200), "a new burst");
    }
}
