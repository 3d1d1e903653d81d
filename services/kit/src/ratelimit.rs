//! Keyed rate limits (per client address, per account) for sensitive routes.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::error::ApiError;

/// A limit of `n` events per minute per key, with bursts up to `n`.
pub struct KeyedLimiter {
    limiter: RateLimiter<
        String,
        DefaultKeyedStateStore<String>,
        DefaultClock,
        StateInformationMiddleware,
    >,
    checks: AtomicU64,
    /// For limits on failures: keys that failed too often, until when.
    blocked: Mutex<HashMap<String, Instant>>,
    /// The time one allowed event takes to come back (a minute / n).
    replenish: Duration,
}

impl KeyedLimiter {
    /// `per_minute` of 0 disables the limit.
    pub fn per_minute(per_minute: u32) -> Option<Self> {
        let n = NonZeroU32::new(per_minute)?;
        Some(Self {
            limiter: RateLimiter::keyed(Quota::per_minute(n))
                .with_middleware::<StateInformationMiddleware>(),
            checks: AtomicU64::new(0),
            blocked: Mutex::new(HashMap::new()),
            replenish: Duration::from_secs(60) / n.get(),
        })
    }

    /// Counts one event for `key`; when over the limit, how long until the next one is allowed.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        self.check_remaining(key).map(|_| ())
    }

    /// Like [`check`](Self::check), returning how many more events are allowed right now.
    fn check_remaining(&self, key: &str) -> Result<u32, Duration> {
        // Forget idle keys now and then so memory stays bounded.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&key.to_string())
            .map(|snapshot| snapshot.remaining_burst_capacity())
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

impl KeyedLimiter {
    /// For a limit on failures: how long `key` must still wait, if it failed too often. Counts
    /// nothing, so successful attempts never use up the allowance.
    pub fn blocked(&self, key: &str) -> Option<Duration> {
        let now = Instant::now();
        let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        match blocked.get(key) {
            Some(until) if *until > now => Some(*until - now),
            Some(_) => {
                blocked.remove(key);
                None
            }
            None => None,
        }
    }

    /// Counts one failure for `key`; after the `n`-th the key is blocked until the next attempt
    /// is allowed (`n` failures at once, then one per `60 / n` seconds).
    pub fn record_failure(&self, key: &str) {
        let wait = match self.check_remaining(key) {
            Ok(remaining) if remaining > 0 => return,
            // That was the last one allowed: the next comes with the next token.
            Ok(_) => self.replenish,
            Err(wait) => wait,
        };
        let now = Instant::now();
        let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        if blocked.len() >= 4096 {
            blocked.retain(|_, until| *until > now);
        }
        blocked.insert(key.to_string(), now + wait);
    }
}

fn too_many(wait: Duration) -> ApiError {
    ApiError::too_many_requests(format!(
        "Too many attempts, try again in {} seconds",
        wait.as_secs().max(1)
    ))
}

/// For limits on failures: answers 429 when any `(limiter, key)` pair failed too often lately.
pub fn refuse_if_blocked(limits: &[(Option<&KeyedLimiter>, &str)]) -> Result<(), ApiError> {
    for (limiter, key) in limits {
        if let Some(wait) = limiter.and_then(|l| l.blocked(key)) {
            return Err(too_many(wait));
        }
    }
    Ok(())
}

/// Counts a failure against every `(limiter, key)` pair.
pub fn record_failure(limits: &[(Option<&KeyedLimiter>, &str)]) {
    for (limiter, key) in limits {
        if let Some(l) = limiter {
            l.record_failure(key);
        }
    }
}

/// Checks every `(limiter, key)` pair; the first one over its limit answers 429.
pub fn enforce(limits: &[(Option<&KeyedLimiter>, &str)]) -> Result<(), ApiError> {
    for (limiter, key) in limits {
        if let Some(l) = limiter
            && let Err(wait) = l.check(key)
        {
            return Err(too_many(wait));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_key() {
        let l = KeyedLimiter::per_minute(2).unwrap();
        assert!(l.check("a").is_ok());
        assert!(l.check("a").is_ok());
        assert!(l.check("a").is_err());
        assert!(l.check("b").is_ok());
        assert!(KeyedLimiter::per_minute(0).is_none());
    }

    #[test]
    fn failure_limits_ignore_successes() {
        let l = KeyedLimiter::per_minute(2).unwrap();
        for _ in 0..10 {
            // Successful attempts only ask.
            assert!(l.blocked("a").is_none());
        }
        l.record_failure("a");
        assert!(l.blocked("a").is_none(), "one failure of two");
        l.record_failure("a");
        let wait = l
            .blocked("a")
            .expect("after two failures the next attempt waits");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert!(l.blocked("b").is_none(), "per key");
    }
}
