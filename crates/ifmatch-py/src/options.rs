//! What a Python `Store` handle carries besides the store itself: the clock,
//! the random generator and an optional retry budget, handed to every
//! primitive opened through it (`ifmatch.open(url, clock=, seed=, retry=)`).

use std::time::Duration;

use ifmatch::DynStore;
use ifmatch::clock::{DynClock, SharedRng, SystemClock};
use ifmatch::retry::RetryPolicy as LibRetryPolicy;
use pyo3::prelude::*;

use crate::convert::seconds;

/// `ifmatch.RetryPolicy`: the attempts and backoff of every retrying
/// operation (full jitter between attempts, as in the library).
#[pyclass(module = "ifmatch", name = "RetryPolicy", frozen)]
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// The most attempts in all, the first included.
    #[pyo3(get)]
    max_attempts: u32,
    base_delay: Duration,
    max_delay: Duration,
    deadline: Option<Duration>,
}

#[pymethods]
impl RetryPolicy {
    /// Attempts (at least 1), the delay cap before the first retry and the
    /// largest delay (seconds), and the overall deadline (seconds; None: none).
    #[new]
    #[pyo3(signature = (max_attempts=10, base_delay=0.01, max_delay=2.0, deadline=Some(30.0)))]
    fn new(
        max_attempts: u32,
        base_delay: f64,
        max_delay: f64,
        deadline: Option<f64>,
    ) -> PyResult<Self> {
        Ok(RetryPolicy {
            max_attempts: max_attempts.max(1),
            base_delay: seconds(base_delay, "base_delay")?,
            max_delay: seconds(max_delay, "max_delay")?,
            deadline: deadline.map(|d| seconds(d, "deadline")).transpose()?,
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "RetryPolicy(max_attempts={}, base_delay={}, max_delay={}, deadline={})",
            self.max_attempts,
            self.base_delay.as_secs_f64(),
            self.max_delay.as_secs_f64(),
            self.deadline
                .map(|d| d.as_secs_f64().to_string())
                .unwrap_or_else(|| "None".into())
        )
    }
}

/// A store with the clock, randomness and retry budget its primitives use.
#[derive(Clone, Debug)]
pub struct Context {
    /// The store.
    pub store: DynStore,
    /// The clock every primitive reads.
    pub clock: DynClock,
    /// The random generator every primitive draws from.
    pub rng: SharedRng,
    /// A retry budget overriding each primitive's default, if given.
    pub retry: Option<RetryPolicy>,
}

impl Context {
    /// A context with the real clock and entropy, and the primitives' own retry defaults.
    pub fn new(store: DynStore) -> Self {
        Context {
            store,
            clock: SystemClock::shared(),
            rng: SharedRng::from_entropy(),
            retry: None,
        }
    }

    /// `default` (a primitive's own budget) with the handle's retry settings, clock and rng.
    pub fn policy(&self, default: LibRetryPolicy) -> LibRetryPolicy {
        let mut p = default;
        if let Some(r) = &self.retry {
            p = p
                .with_max_attempts(r.max_attempts)
                .with_delays(r.base_delay, r.max_delay)
                .with_deadline(r.deadline);
        }
        p.with_clock(self.clock.clone()).with_rng(self.rng.clone())
    }

    /// The library's default budget, adjusted as [`Context::policy`] does.
    pub fn default_policy(&self) -> LibRetryPolicy {
        self.policy(LibRetryPolicy::default())
    }

    /// This context with other settings where given.
    pub fn with(
        &self,
        clock: Option<DynClock>,
        seed: Option<u64>,
        retry: Option<RetryPolicy>,
    ) -> Context {
        Context {
            store: self.store.clone(),
            clock: clock.unwrap_or_else(|| self.clock.clone()),
            rng: seed
                .map(SharedRng::seeded)
                .unwrap_or_else(|| self.rng.clone()),
            retry: retry.or_else(|| self.retry.clone()),
        }
    }
}
