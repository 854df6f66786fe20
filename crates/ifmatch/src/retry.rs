//! Retry: capped exponential backoff with full jitter, an attempt limit and a deadline.
//!
//! The delay before retry `n` (counting from 0) is drawn uniformly from
//! `[0, min(max_delay, base_delay * 2^n)]` — "full jitter", which spreads
//! contending workers out instead of letting them collide again in lockstep.
//! [`Jitter::None`] (plain exponential backoff) exists for comparison benchmarks.
//!
//! Only retryable errors ([`Error::is_retryable`]) are retried by [`RetryPolicy::run`].
//! Every retry (a backoff that allows another attempt) counts in the
//! `ifmatch_retries_total` metric.

use std::future::Future;
use std::time::{Duration, SystemTime};

use crate::clock::{DynClock, SharedRng, SystemClock};
use crate::error::{Error, Result};

/// How the backoff delay is randomised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jitter {
    /// Uniform in `[0, capped exponential delay]` (the default).
    Full,
    /// No randomness: exactly the capped exponential delay.
    None,
}

/// A retry budget: attempts, delays and an overall deadline, with injected clock and randomness.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// The most attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// The delay cap before the first retry.
    pub base_delay: Duration,
    /// The largest delay between two attempts.
    pub max_delay: Duration,
    /// The time after which no new attempt starts, counted from the first.
    pub deadline: Option<Duration>,
    /// How delays are randomised.
    pub jitter: Jitter,
    /// The clock that sleeps and measures the deadline.
    pub clock: DynClock,
    /// The randomness behind the jitter.
    pub rng: SharedRng,
}

impl Default for RetryPolicy {
    /// 10 attempts, 10 ms base, 2 s cap, 30 s deadline, full jitter, real clock.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_secs(2),
            deadline: Some(Duration::from_secs(30)),
            jitter: Jitter::Full,
            clock: SystemClock::shared(),
            rng: SharedRng::from_entropy(),
        }
    }
}

impl RetryPolicy {
    /// Sets the attempt limit.
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }
    /// Sets the base and maximum delays.
    pub fn with_delays(mut self, base: Duration, max: Duration) -> Self {
        self.base_delay = base;
        self.max_delay = max.max(base);
        self
    }
    /// Sets (or clears) the overall deadline.
    pub fn with_deadline(mut self, deadline: Option<Duration>) -> Self {
        self.deadline = deadline;
        self
    }
    /// Sets the jitter mode.
    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }
    /// Sets the clock.
    pub fn with_clock(mut self, clock: DynClock) -> Self {
        self.clock = clock;
        self
    }
    /// Sets the random generator.
    pub fn with_rng(mut self, rng: SharedRng) -> Self {
        self.rng = rng;
        self
    }

    /// The delay before retry number `retry` (0 for the first retry).
    pub fn delay(&self, retry: u32) -> Duration {
        let exp = self
            .base_delay
            .checked_mul(1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX))
            .unwrap_or(self.max_delay);
        let cap = exp.min(self.max_delay);
        match self.jitter {
            Jitter::None => cap,
            Jitter::Full => {
                let nanos = cap.as_nanos().min(u64::MAX as u128) as u64;
                Duration::from_nanos(self.rng.up_to(nanos))
            }
        }
    }

    /// Starts tracking one retried operation.
    pub fn start(&self) -> Attempts<'_> {
        Attempts {
            policy: self,
            started: self.clock.now(),
            made: 0,
        }
    }

    /// Runs `op` until it succeeds, fails with a non-retryable error, or the budget is spent
    /// (then the last error is returned, its message naming the attempts made).
    pub async fn run<T, F, Fut>(&self, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut attempts = self.start();
        loop {
            attempts.begin();
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() => {
                    if !attempts.backoff().await {
                        return Err(exhausted(e, attempts.made()));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The state of one retried operation: how many attempts were made, and when it started.
#[derive(Debug)]
pub struct Attempts<'a> {
    policy: &'a RetryPolicy,
    started: SystemTime,
    made: u32,
}

impl Attempts<'_> {
    /// Records that an attempt starts.
    pub fn begin(&mut self) {
        self.made += 1;
    }
    /// The attempts made so far.
    pub fn made(&self) -> u32 {
        self.made
    }
    /// Whether another attempt is allowed (attempt limit and deadline).
    pub fn may_retry(&self) -> bool {
        if self.made >= self.policy.max_attempts {
            return false;
        }
        match self.policy.deadline {
            Some(d) => self.elapsed() < d,
            None => true,
        }
    }
    /// Time since the first attempt.
    pub fn elapsed(&self) -> Duration {
        self.policy
            .clock
            .now()
            .duration_since(self.started)
            .unwrap_or_default()
    }
    /// If another attempt is allowed, sleeps the backoff delay and returns true;
    /// otherwise returns false at once. An attempt that would start at or after
    /// the deadline is not made: no sleep runs into the deadline.
    pub async fn backoff(&mut self) -> bool {
        if !self.may_retry() {
            return false;
        }
        let delay = self.policy.delay(self.made.saturating_sub(1));
        if let Some(d) = self.policy.deadline
            && self.elapsed() + delay >= d
        {
            return false;
        }
        metrics::counter!("ifmatch_retries_total").increment(1);
        self.policy.clock.sleep(delay).await;
        true
    }
}

/// Turns a retried error into a message naming the attempts made.
pub(crate) fn exhausted(err: Error, attempts: u32) -> Error {
    match err {
        Error::Unavailable { message, source } => Error::Unavailable {
            message: format!("{message} (gave up after {attempts} attempts)"),
            source,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn policy() -> (RetryPolicy, ManualClock) {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH);
        let p = RetryPolicy::default()
            .with_clock(Arc::new(clock.clone()))
            .with_rng(SharedRng::seeded(7))
            .with_delays(Duration::from_millis(100), Duration::from_secs(1));
        (p, clock)
    }

    #[test]
    fn full_jitter_stays_within_the_capped_exponential() {
        let (p, _) = policy();
        for retry in 0..20 {
            let cap =
                Duration::from_millis(100 * 2u64.pow(retry.min(10))).min(Duration::from_secs(1));
            for _ in 0..50 {
                assert!(p.delay(retry) <= cap);
            }
        }
        // Full jitter really spreads: over many draws both halves of the range occur.
        let draws: Vec<_> = (0..200).map(|_| p.delay(5)).collect();
        assert!(draws.iter().any(|d| *d < Duration::from_millis(500)));
        assert!(draws.iter().any(|d| *d > Duration::from_millis(500)));
    }

    #[test]
    fn no_jitter_is_plain_capped_exponential() {
        let (p, _) = policy();
        let p = p.with_jitter(Jitter::None);
        assert_eq!(p.delay(0), Duration::from_millis(100));
        assert_eq!(p.delay(2), Duration::from_millis(400));
        assert_eq!(p.delay(30), Duration::from_secs(1));
    }

    #[test]
    fn same_seed_same_delays() {
        let (a, _) = policy();
        let (b, _) = policy();
        let x: Vec<_> = (0..10).map(|i| a.delay(i)).collect();
        let y: Vec<_> = (0..10).map(|i| b.delay(i)).collect();
        assert_eq!(x, y);
    }

    #[tokio::test]
    async fn retries_only_retryable_errors_up_to_the_limit() {
        let (p, _) = policy();
        let p = p.with_max_attempts(4).with_deadline(None);
        let calls = AtomicU32::new(0);
        let r: Result<()> = p
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Error::Unavailable {
                    message: "down".into(),
                    source: None,
                })
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 4);

        let calls = AtomicU32::new(0);
        let r: Result<()> = p
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Error::not_found("k"))
            })
            .await;
        assert!(matches!(r, Err(Error::NotFound { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn deadline_stops_retrying() {
        let (p, clock) = policy();
        let p = p
            .with_max_attempts(1000)
            .with_jitter(Jitter::None)
            .with_deadline(Some(Duration::from_secs(5)));
        let calls = AtomicU32::new(0);
        let r: Result<()> = p
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Error::Unavailable {
                    message: "down".into(),
                    source: None,
                })
            })
            .await;
        assert!(r.is_err());
        // Sleeps of 100, 200, 400, 800 ms, then 1 s each: after 4.5 s the next
        // attempt would start at 5.5 s, past the deadline, so 8 attempts are made.
        assert_eq!(calls.load(Ordering::SeqCst), 8);
        let waited = clock.now().duration_since(SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(waited, Duration::from_millis(4500));
    }

    #[tokio::test]
    async fn succeeds_after_transient_failures() {
        let (p, _) = policy();
        let calls = AtomicU32::new(0);
        let r = p
            .run(|| async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(Error::Unavailable {
                        message: "blip".into(),
                        source: None,
                    })
                } else {
                    Ok(42)
                }
            })
            .await
            .unwrap();
        assert_eq!(r, 42);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}
