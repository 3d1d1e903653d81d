//! Keyed rate limits (per client address, per account) for sensitive routes.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::ApiError;

/// A limit of `n` events per minute per key, with bursts up to `n`.
pub struct KeyedLimiter {
    limiter: DefaultKeyedRateLimiter<String>,
    checks: AtomicU64,
}

impl KeyedLimiter {
    /// `per_minute` of 0 disables the limit.
    pub fn per_minute(per_minute: u32) -> Option<Self> {
        let n = NonZeroU32::new(per_minute)?;
        Some(Self {
            limiter: RateLimiter::keyed(Quota::per_minute(n)),
            checks: AtomicU64::new(0),
        })
    }

    /// Counts one event for `key`; when over the limit, how long until the next one is allowed.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        // Forget idle keys now and then so memory stays bounded.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&key.to_string())
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// Checks every `(limiter, key)` pair; the first one over its limit answers 429.
pub fn enforce(limits: &[(Option<&KeyedLimiter>, &str)]) -> Result<(), ApiError> {
    for (limiter, key) in limits {
        if let Some(l) = limiter
            && let Err(wait) = l.check(key)
        {
            {
                return Err(ApiError::too_many_requests(format!(
                    "Too many attempts, try again in {} seconds",
                    wait.as_secs().max(1)
                )));
            }
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
}
