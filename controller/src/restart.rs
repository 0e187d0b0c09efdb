//! When to restart a node that died, and when to give up: a pure policy.
//!
//! * **Backoff**: a node slot that keeps dying waits `base * 2^n` (capped at
//!   `max`, with ±25% jitter so replacements do not restart in lockstep)
//!   before its next start; a node that stayed up for `stable_after` resets
//!   its slot's count.
//! * **Intensity** (Erlang/OTP's restart intensity): more than `intensity`
//!   restarts over all slots within `period` means restarting is not
//!   helping; the controller stops everything and exits with a distinct
//!   code instead of crash-looping.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::balance::NodeId;

/// Restart settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// First backoff delay.
    pub base: Duration,
    /// Longest backoff delay.
    pub max: Duration,
    /// Restarts allowed within `period` before escalating.
    pub intensity: u32,
    /// The window for `intensity`.
    pub period: Duration,
    /// A node up this long is considered healthy: its backoff resets.
    pub stable_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            base: Duration::from_millis(100),
            max: Duration::from_secs(10),
            intensity: 5,
            period: Duration::from_secs(60),
            stable_after: Duration::from_secs(10),
        }
    }
}

/// What to do about a node that died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start a replacement after this delay.
    RestartAfter(Duration),
    /// Too many restarts: stop the service.
    Escalate {
        /// Restarts counted within the period.
        restarts: u32,
    },
}

/// Restart bookkeeping of a controller.
#[derive(Debug, Clone)]
pub struct Restarts {
    policy: RestartPolicy,
    recent: VecDeque<Instant>,
    failures: HashMap<NodeId, u32>,
    rng: u64,
}

impl Restarts {
    /// Bookkeeping for `policy`; `seed` drives the jitter.
    pub fn new(policy: RestartPolicy, seed: u64) -> Self {
        Restarts {
            policy,
            recent: VecDeque::new(),
            failures: HashMap::new(),
            rng: seed | 1,
        }
    }

    /// Changes the policy (a reload); history is kept.
    pub fn set_policy(&mut self, policy: RestartPolicy) {
        self.policy = policy;
    }

    /// The policy.
    pub fn policy(&self) -> &RestartPolicy {
        &self.policy
    }

    fn jitter(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        // 0.75 ..= 1.25
        0.75 + (self.rng % 1001) as f64 / 2000.0
    }

    /// Node `id` died at `now` after running for `uptime`.
    pub fn on_exit(&mut self, id: NodeId, now: Instant, uptime: Duration) -> Decision {
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.policy.period)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        let restarts = self.recent.len() as u32;
        if restarts > self.policy.intensity {
            return Decision::Escalate { restarts };
        }
        let failures = self.failures.entry(id).or_insert(0);
        if uptime >= self.policy.stable_after {
            *failures = 0;
        }
        let exp = (*failures).min(20);
        *failures += 1;
        let delay = self
            .policy
            .base
            .saturating_mul(1u32 << exp)
            .min(self.policy.max);
        let jitter = self.jitter();
        Decision::RestartAfter(delay.mul_f64(jitter).min(self.policy.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            base: Duration::from_millis(100),
            max: Duration::from_secs(2),
            intensity: 5,
            period: Duration::from_secs(60),
            stable_after: Duration::from_secs(10),
        }
    }

    fn delay(d: Decision) -> Duration {
        match d {
            Decision::RestartAfter(d) => d,
            Decision::Escalate { .. } => panic!("unexpected escalation"),
        }
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let mut r = Restarts::new(
            RestartPolicy {
                intensity: 100,
                ..policy()
            },
            42,
        );
        let t = Instant::now();
        let mut last_base = Duration::ZERO;
        for n in 0..8u32 {
            let d = delay(r.on_exit(
                1,
                t + Duration::from_secs(n as u64),
                Duration::from_millis(5),
            ));
            let base = Duration::from_millis(100)
                .saturating_mul(1 << n)
                .min(Duration::from_secs(2));
            assert!(
                d >= base.mul_f64(0.75) && d <= base.mul_f64(1.25).min(Duration::from_secs(2)),
                "{n}: {d:?}"
            );
            assert!(base >= last_base);
            last_base = base;
        }
    }

    #[test]
    fn a_stable_node_resets_its_backoff() {
        let mut r = Restarts::new(
            RestartPolicy {
                intensity: 100,
                ..policy()
            },
            7,
        );
        let t = Instant::now();
        for i in 0..4 {
            r.on_exit(1, t + Duration::from_secs(i), Duration::from_millis(1));
        }
        let d = delay(r.on_exit(1, t + Duration::from_secs(10), Duration::from_secs(30)));
        assert!(d <= Duration::from_millis(125), "{d:?}");
    }

    #[test]
    fn slots_back_off_independently() {
        let mut r = Restarts::new(
            RestartPolicy {
                intensity: 100,
                ..policy()
            },
            7,
        );
        let t = Instant::now();
        for i in 0..4 {
            r.on_exit(1, t + Duration::from_secs(i), Duration::from_millis(1));
        }
        let d = delay(r.on_exit(2, t + Duration::from_secs(5), Duration::from_millis(1)));
        assert!(
            d <= Duration::from_millis(125),
            "node 2's first failure: {d:?}"
        );
    }

    #[test]
    fn more_than_intensity_restarts_in_the_period_escalate() {
        let mut r = Restarts::new(policy(), 1);
        let t = Instant::now();
        for i in 0..5 {
            assert!(matches!(
                r.on_exit(i % 3, t + Duration::from_secs(i as u64), Duration::ZERO),
                Decision::RestartAfter(_)
            ));
        }
        assert_eq!(
            r.on_exit(0, t + Duration::from_secs(6), Duration::ZERO),
            Decision::Escalate { restarts: 6 }
        );
    }

    #[test]
    fn old_restarts_leave_the_window() {
        let mut r = Restarts::new(policy(), 1);
        let t = Instant::now();
        for i in 0..5 {
            r.on_exit(0, t + Duration::from_secs(i), Duration::ZERO);
        }
        // 61 s later the first five are outside the 60 s window.
        assert!(matches!(
            r.on_exit(0, t + Duration::from_secs(66), Duration::ZERO),
            Decision::RestartAfter(_)
        ));
    }
}
