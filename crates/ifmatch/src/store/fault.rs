//! A fault-injecting wrapper over any store, driven by a seeded RNG.
//!
//! [`FaultStore`] sits in front of a real backend and, with configured
//! probabilities, makes calls fail the ways networks and services fail:
//!
//! - **errors**: the call fails with [`Error::Unavailable`] before reaching the store;
//! - **lost responses**: a write or delete *lands* in the inner store, but the
//!   caller sees [`Error::Ambiguous`] (the response was lost on the way back);
//! - **latency**: a delay drawn uniformly from a range, slept on the injected clock.
//!
//! The same seed gives the same fault sequence for the same call order, so a
//! failing schedule can be replayed. Counters report what was injected.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    Condition, DynStore, Fetch, ListPage, ListResult, Object, ObjectMeta, PutOptions, Store,
    Version,
};
use crate::clock::{DynClock, SharedRng, SystemClock};
use crate::error::{Error, Result};

/// What to inject, and how often.
#[derive(Clone, Debug)]
pub struct FaultConfig {
    /// Probability that a call fails with `Unavailable` without reaching the store.
    pub error_rate: f64,
    /// Probability that a write or delete lands but reports `Ambiguous`.
    pub lost_response_rate: f64,
    /// Added latency range (uniform); `(0, 0)` for none.
    pub latency: (Duration, Duration),
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            error_rate: 0.0,
            lost_response_rate: 0.0,
            latency: (Duration::ZERO, Duration::ZERO),
        }
    }
}

/// Counts of what a [`FaultStore`] injected.
#[derive(Debug, Default)]
pub struct FaultCounters {
    /// Calls failed before reaching the store.
    pub errors: AtomicU64,
    /// Writes and deletes that landed but reported `Ambiguous`.
    pub lost_responses: AtomicU64,
    /// Calls passed through.
    pub calls: AtomicU64,
}

/// A store wrapper that injects faults; see the module docs.
#[derive(Debug, Clone)]
pub struct FaultStore {
    inner: DynStore,
    config: FaultConfig,
    rng: SharedRng,
    clock: DynClock,
    counters: Arc<FaultCounters>,
}

impl FaultStore {
    /// Wraps `inner`, drawing faults from `rng`.
    pub fn new(inner: DynStore, config: FaultConfig, rng: SharedRng) -> Self {
        FaultStore {
            inner,
            config,
            rng,
            clock: SystemClock::shared(),
            counters: Arc::default(),
        }
    }

    /// Sleeps latency on this clock instead of the real one.
    pub fn with_clock(mut self, clock: DynClock) -> Self {
        self.clock = clock;
        self
    }

    /// What has been injected so far.
    pub fn counters(&self) -> &FaultCounters {
        &self.counters
    }

    /// The wrapped store.
    pub fn inner(&self) -> &DynStore {
        &self.inner
    }

    async fn before(&self, op: &str, key: &str) -> Result<()> {
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        let (lo, hi) = self.config.latency;
        if hi > Duration::ZERO {
            let span = hi.saturating_sub(lo).as_nanos().min(u64::MAX as u128) as u64;
            let d = lo + Duration::from_nanos(self.rng.up_to(span));
            self.clock.sleep(d).await;
        }
        if self.config.error_rate > 0.0 && self.rng.unit() < self.config.error_rate {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            return Err(Error::Unavailable {
                message: format!("injected fault: {op} '{key}' failed"),
                source: None,
            });
        }
        Ok(())
    }

    fn lose_response(&self) -> bool {
        let lost = self.config.lost_response_rate > 0.0
            && self.rng.unit() < self.config.lost_response_rate;
        if lost {
            self.counters.lost_responses.fetch_add(1, Ordering::Relaxed);
        }
        lost
    }
}

#[async_trait]
impl Store for FaultStore {
    fn describe(&self) -> String {
        format!("fault({})", self.inner.describe())
    }

    fn max_value_size(&self) -> Option<u64> {
        self.inner.max_value_size()
    }

    async fn get(&self, key: &str) -> Result<Object> {
        self.before("get", key).await?;
        self.inner.get(key).await
    }

    async fn get_if_changed(&self, key: &str, known: &Version) -> Result<Fetch> {
        self.before("get", key).await?;
        self.inner.get_if_changed(key, known).await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.before("head", key).await?;
        self.inner.head(key).await
    }

    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> Result<Version> {
        self.before("put", key).await?;
        let result = self.inner.put(key, body, opts).await;
        // A lost response hides the outcome, whatever it was.
        if self.lose_response() {
            return Err(Error::Ambiguous {
                key: key.to_string(),
                message: "injected fault: the response to a put was lost".into(),
            });
        }
        result
    }

    async fn delete(&self, key: &str, condition: Condition) -> Result<()> {
        self.before("delete", key).await?;
        let result = self.inner.delete(key, condition).await;
        if self.lose_response() {
            return Err(Error::Ambiguous {
                key: key.to_string(),
                message: "injected fault: the response to a delete was lost".into(),
            });
        }
        result
    }

    async fn list(&self, prefix: &str, page: ListPage) -> Result<ListResult> {
        self.before("list", prefix).await?;
        self.inner.list(prefix, page).await
    }
}
