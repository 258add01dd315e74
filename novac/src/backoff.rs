//! Reconnect delays: exponential with jitter, so that agents do not return
//! in lockstep when a NOVAS restarts, and reset after a stable period.

use std::time::Duration;

use rand::Rng;

pub const INITIAL: Duration = Duration::from_millis(500);
/// A tunnel that stayed up this long counts as healthy; the next failure
/// starts again from [`INITIAL`].
pub const STABLE_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct Backoff {
    current: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(max: Duration) -> Self {
        Self {
            current: INITIAL.min(max),
            max,
        }
    }

    pub fn reset(&mut self) {
        self.current = INITIAL.min(self.max);
    }

    /// The next delay: uniformly in [d/2, d] where d doubles up to the max.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = d / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(8));
        let delays: Vec<_> = (0..10).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(250) && delays[0] <= INITIAL);
        for d in &delays {
            assert!(*d <= Duration::from_secs(8));
        }
        assert!(delays[9] >= Duration::from_secs(4), "{delays:?}");
        b.reset();
        assert!(b.next_delay() <= INITIAL);
        // Jitter: many agents do not all pick the same delay.
        let picks: std::collections::HashSet<_> = (0..20)
            .map(|_| Backoff::new(Duration::from_secs(8)).next_delay())
            .collect();
        assert!(picks.len() > 1);
    }
}
