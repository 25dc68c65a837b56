//! How long to wait before restarting a unikernel that failed.

use std::time::Duration;

/// Doubling delays from `first` up to `max`; a run that lasted `reset_after`
/// clears the count; `crash_loop_after` failures in a row are a crash loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
    pub reset_after: Duration,
    pub crash_loop_after: u32,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            first: Duration::from_secs(1),
            max: Duration::from_secs(60),
            reset_after: Duration::from_secs(300),
            crash_loop_after: 5,
        }
    }
}

impl Backoff {
    /// The consecutive-failure count after a run that lasted `ran`.
    pub fn failures_after(&self, previous: u32, ran: Duration) -> u32 {
        if ran >= self.reset_after {
            1
        } else {
            previous.saturating_add(1)
        }
    }

    /// The wait before the next start after `failures` failures in a row (1 or more).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.first.saturating_mul(1 << doublings).min(self.max)
    }

    pub fn is_crash_loop(&self, failures: u32) -> bool {
        failures >= self.crash_loop_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_one_second_to_a_minute() {
        let b = Backoff::default();
        let secs: Vec<u64> = (1..=9).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(b.delay(u32::MAX), b.max);
    }

    #[test]
    fn a_long_run_resets_the_count() {
        let b = Backoff::default();
        assert_eq!(b.failures_after(4, Duration::from_secs(299)), 5);
        assert_eq!(b.failures_after(4, Duration::from_secs(300)), 1);
        assert!(!b.is_crash_loop(4));
        assert!(b.is_crash_loop(5));
    }
}
