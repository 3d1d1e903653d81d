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
    /// For limits on failures: per key, the allowance left and the attempts in flight.
    failures: Mutex<HashMap<String, Bucket>>,
    /// The allowance: `n` failures at once, one more per `60 / n` seconds.
    capacity: f64,
    /// The time one allowed event takes to come back (a minute / n).
    replenish: Duration,
}

/// A key's failure allowance: `tokens` left (refilled over time up to the capacity), and
/// attempts reserved but not settled yet. An attempt may start only while
/// `tokens - pending >= 1`, so concurrent attempts cannot outnumber the allowance.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    pending: u32,
    at: Instant,
}

impl KeyedLimiter {
    /// `per_minute` of 0 disables the limit.
    pub fn per_minute(per_minute: u32) -> Option<Self> {
        let n = NonZeroU32::new(per_minute)?;
        Some(Self {
            limiter: RateLimiter::keyed(Quota::per_minute(n))
                .with_middleware::<StateInformationMiddleware>(),
            checks: AtomicU64::new(0),
            failures: Mutex::new(HashMap::new()),
            capacity: f64::from(n.get()),
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
    /// Runs `f` on `key`'s bucket, refilled to now.
    fn with_bucket<T>(&self, key: &str, f: impl FnOnce(&mut Bucket) -> T) -> T {
        let now = Instant::now();
        let mut all = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if all.len() >= 4096 {
            // Forget keys that are back to a full allowance with nothing in flight.
            let (cap, per) = (self.capacity, self.replenish.as_secs_f64());
            all.retain(|_, b| {
                b.pending > 0 || b.tokens + now.duration_since(b.at).as_secs_f64() / per < cap
            });
        }
        let b = all.entry(key.to_string()).or_insert(Bucket {
            tokens: self.capacity,
            pending: 0,
            at: now,
        });
        let refill = now.duration_since(b.at).as_secs_f64() / self.replenish.as_secs_f64();
        b.tokens = (b.tokens + refill).min(self.capacity);
        b.at = now;
        f(b)
    }

    /// How long until `b` allows one more attempt.
    fn wait(&self, b: &Bucket) -> Duration {
        let missing = (1.0 + f64::from(b.pending) - b.tokens).max(0.0);
        self.replenish
            .mul_f64(missing)
            .max(Duration::from_millis(1))
    }

    /// For a limit on failures: how long `key` must still wait, if it failed too often (counting
    /// attempts in flight as failures until they settle). Counts nothing.
    pub fn blocked(&self, key: &str) -> Option<Duration> {
        self.with_bucket(key, |b| {
            (b.tokens - f64::from(b.pending) < 1.0).then(|| self.wait(b))
        })
    }

    /// Reserves one attempt for `key` before the work that decides it (e.g. a password hash),
    /// or says how long to wait. Settle it with [`settle`](Self::settle).
    fn reserve(&self, key: &str) -> Result<(), Duration> {
        self.with_bucket(key, |b| {
            if b.tokens - f64::from(b.pending) >= 1.0 {
                b.pending += 1;
                Ok(())
            } else {
                Err(self.wait(b))
            }
        })
    }

    /// Settles a reserved attempt: a failure uses up one of the allowance, a success nothing.
    fn settle(&self, key: &str, failed: bool) {
        self.with_bucket(key, |b| {
            b.pending = b.pending.saturating_sub(1);
            if failed {
                b.tokens = (b.tokens - 1.0).max(0.0);
            }
        })
    }

    /// Counts one failure for `key` (without a reservation); after `n` in a row the key waits
    /// until the allowance refills (one per `60 / n` seconds).
    pub fn record_failure(&self, key: &str) {
        self.with_bucket(key, |b| b.tokens = (b.tokens - 1.0).max(0.0));
    }
}

/// Attempts reserved on failure limits, settled when the outcome is known. Dropped unsettled
/// (the request was cancelled or failed for another reason), they count as nothing.
pub struct Attempt<'a> {
    reserved: Vec<(&'a KeyedLimiter, &'a str)>,
}

impl Attempt<'_> {
    /// The attempt failed: it counts against every limit.
    pub fn failed(mut self) {
        for (l, key) in self.reserved.drain(..) {
            l.settle(key, true);
        }
    }

    /// The attempt succeeded: it uses up nothing.
    pub fn succeeded(self) {}
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        for (l, key) in self.reserved.drain(..) {
            l.settle(key, false);
        }
    }
}

/// Reserves an attempt on every `(limiter, key)` pair before the work that decides it, so that
/// concurrent attempts cannot escape a limit on failures; 429 when any pair has no allowance left
/// (counting attempts still in flight).
pub fn reserve_attempt<'a>(
    limits: &[(Option<&'a KeyedLimiter>, &'a str)],
) -> Result<Attempt<'a>, ApiError> {
    let mut attempt = Attempt {
        reserved: Vec::with_capacity(limits.len()),
    };
    for (limiter, key) in limits {
        if let Some(l) = limiter {
            // On refusal, dropping `attempt` releases what was reserved so far.
            l.reserve(key).map_err(too_many)?;
            attempt.reserved.push((l, key));
        }
    }
    Ok(attempt)
}

fn too_many(wait: Duration) -> ApiError {
    ApiError::too_many_requests(format!(
        "Too many attempts, try again in {} seconds",
        wait.as_secs().max(1)
    ))
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

    #[test]
    fn attempts_in_flight_count_until_they_settle() {
        let l = KeyedLimiter::per_minute(3).unwrap();
        let limits = [(Some(&l), "acct")];
        // Three concurrent attempts take the whole allowance; a fourth is refused at once.
        let a: Vec<Attempt<'_>> = (0..3).map(|_| reserve_attempt(&limits).unwrap()).collect();
        assert!(reserve_attempt(&limits).is_err());
        assert!(l.blocked("acct").is_some());
        let mut a = a.into_iter();
        // A success gives its slot back; failures use theirs up.
        a.next().unwrap().succeeded();
        let d = reserve_attempt(&limits).expect("a success frees its slot");
        a.next().unwrap().failed();
        a.next().unwrap().failed();
        d.failed();
        assert!(reserve_attempt(&limits).is_err(), "three failures: blocked");
        // An attempt dropped unsettled (a cancelled request) counts as nothing.
        let l2 = KeyedLimiter::per_minute(1).unwrap();
        let limits2 = [(Some(&l2), "x")];
        drop(reserve_attempt(&limits2).unwrap());
        assert!(reserve_attempt(&limits2).is_ok());
    }
}
