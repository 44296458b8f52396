//! Reconnect delays: capped exponential backoff with full jitter.
//!
//! Attempt `n` waits a uniformly random time in `[0, min(cap, base * 2^n))`. The randomness
//! spreads thousands of agents that lost the same server over the whole window instead of
//! letting them return in lock-step waves. After a connection has stayed healthy for
//! `reset_after`, the next outage starts again from the base delay.

use rand::Rng;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    reset_after: Duration,
    attempt: u32,
    /// The smallest ceiling, set from the server's `reconnect_window_secs`.
    window: Duration,
}

impl Default for Backoff {
    /// Base 1 s, cap 60 s, reset after a minute healthy.
    fn default() -> Self {
        Self::new(
            Duration::from_secs(1),
            Duration::from_secs(60),
            Duration::from_secs(60),
        )
    }
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration, reset_after: Duration) -> Self {
        Self {
            base,
            cap,
            reset_after,
            attempt: 0,
            window: Duration::ZERO,
        }
    }

    /// Spreads even the first attempts over at least `window` (the server's advice, sized to
    /// its fleet so a restart is not met by every agent in the same second).
    pub fn set_window(&mut self, window: Duration) {
        self.window = window.min(self.cap);
    }

    /// The upper bound of the next delay, before jitter.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base
            .saturating_mul(factor)
            .max(self.window)
            .min(self.cap)
    }

    /// The delay before the next attempt; each call moves one step up the curve.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let millis = ceiling.as_millis() as u64;
        Duration::from_millis(rand::thread_rng().gen_range(0..=millis))
    }

    /// Call when a connection ends; a connection that lasted `reset_after` resets the curve.
    pub fn connection_ended(&mut self, lasted: Duration) {
        if lasted >= self.reset_after {
            self.attempt = 0;
        }
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_up_to_the_cap_and_stay_within_it() {
        let mut backoff = Backoff::default();
        let ceilings: Vec<u64> = (0..9)
            .map(|_| {
                let ceiling = backoff.ceiling();
                let delay = backoff.next_delay();
                assert!(delay <= ceiling);
                ceiling.as_secs()
            })
            .collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn jitter_spreads_delays_over_the_whole_window() {
        let mut backoff = Backoff::new(
            Duration::from_secs(60),
            Duration::from_secs(60),
            Duration::MAX,
        );
        let delays: Vec<Duration> = (0..200).map(|_| backoff.next_delay()).collect();
        let early = delays.iter().filter(|d| d.as_secs() < 20).count();
        let late = delays.iter().filter(|d| d.as_secs() >= 40).count();
        assert!(early > 30 && late > 30, "early {early}, late {late}");
    }

    #[test]
    fn a_healthy_minute_resets_the_curve_and_a_short_one_does_not() {
        let mut backoff = Backoff::default();
        for _ in 0..5 {
            backoff.next_delay();
        }
        backoff.connection_ended(Duration::from_secs(5));
        assert_eq!(backoff.ceiling(), Duration::from_secs(32));
        backoff.connection_ended(Duration::from_secs(61));
        assert_eq!(backoff.ceiling(), Duration::from_secs(1));
    }

    #[test]
    fn the_servers_window_widens_the_first_attempts() {
        let mut backoff = Backoff::default();
        backoff.set_window(Duration::from_secs(25));
        assert_eq!(backoff.ceiling(), Duration::from_secs(25));
        for _ in 0..6 {
            backoff.next_delay();
        }
        assert_eq!(
            backoff.ceiling(),
            Duration::from_secs(60),
            "it never exceeds the cap"
        );
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut backoff = Backoff::default();
        for _ in 0..100 {
            backoff.next_delay();
        }
        assert_eq!(backoff.ceiling(), Duration::from_secs(60));
    }
}
