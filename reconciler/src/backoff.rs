//! Per-object exponential backoff with jitter for transient errors. The failure count of an
//! object resets when it reconciles successfully.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;

/// Backoff parameters.
#[derive(Debug, Clone, Copy)]
pub struct BackoffPolicy {
    pub base: Duration,
    pub max: Duration,
    /// Fraction of the delay added or removed at random (0.5 = ±50%).
    pub jitter: f64,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            base: Duration::from_secs(1),
            max: Duration::from_secs(300),
            jitter: 0.5,
        }
    }
}

impl BackoffPolicy {
    /// Delay before retry number `failures` (1 = first failure), before jitter.
    pub fn nominal(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(31);
        self.base
            .checked_mul(1u32 << exp)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// Applies jitter from a uniform sample `u` in `[0, 1)`.
    pub fn jittered(&self, failures: u32, u: f64) -> Duration {
        let nominal = self.nominal(failures).as_secs_f64();
        let factor = 1.0 + self.jitter * (2.0 * u - 1.0);
        Duration::from_secs_f64((nominal * factor).max(0.0))
    }
}

/// Failure counts per object key (`namespace/name`).
#[derive(Debug, Default)]
pub struct BackoffTracker {
    policy: BackoffPolicy,
    failures: Mutex<HashMap<String, u32>>,
}

impl BackoffTracker {
    pub fn new(policy: BackoffPolicy) -> Self {
        BackoffTracker {
            policy,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Records a failure and returns how long to wait before retrying.
    pub fn next_delay(&self, key: &str) -> Duration {
        let failures = {
            let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            let n = map.entry(key.to_owned()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        self.policy.jittered(failures, rand::rng().random::<f64>())
    }

    /// Forgets the failures of an object after it reconciled successfully.
    pub fn reset(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// Current failure count (for tests and metrics).
    pub fn failures(&self, key: &str) -> u32 {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_up_to_the_cap() {
        let p = BackoffPolicy::default();
        let secs: Vec<u64> = (1..=12).map(|n| p.nominal(n).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(p.nominal(1000), Duration::from_secs(300));
    }

    #[test]
    fn jitter_stays_within_half_either_side() {
        let p = BackoffPolicy::default();
        assert_eq!(p.jittered(3, 0.0), Duration::from_secs(2));
        assert_eq!(p.jittered(3, 0.5), Duration::from_secs(4));
        assert!(p.jittered(3, 0.999_999) < Duration::from_secs(6));
    }

    #[test]
    fn backoff_grows_per_object_and_resets_on_success() {
        let t = BackoffTracker::new(BackoffPolicy {
            jitter: 0.0,
            ..Default::default()
        });
        assert_eq!(t.next_delay("ns/a"), Duration::from_secs(1));
        assert_eq!(t.next_delay("ns/a"), Duration::from_secs(2));
        assert_eq!(t.next_delay("ns/a"), Duration::from_secs(4));
        assert_eq!(
            t.next_delay("ns/b"),
            Duration::from_secs(1),
            "other objects unaffected"
        );
        t.reset("ns/a");
        assert_eq!(t.failures("ns/a"), 0);
        assert_eq!(t.next_delay("ns/a"), Duration::from_secs(1));
    }
}
