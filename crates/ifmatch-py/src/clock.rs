//! `ifmatch.ManualClock`: a clock that moves only when told to, for tests.
//!
//! Everything in the library that waits or expires reads time through an
//! injected [`Clock`]. Passing a `ManualClock` to `ifmatch.open(..., clock=)`
//! makes leases, idempotency timeouts, snapshot check intervals and retry
//! backoff run on it. Unlike the library's own `ManualClock` (whose `sleep`
//! moves time forward itself, for single-task tests), a sleep here waits
//! until `advance()` moves the clock past its deadline, so a background task
//! such as a lease's renewal does exactly what the test's clock says and no more.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ifmatch::clock::{Clock, DynClock};
use pyo3::prelude::*;
use tokio::sync::watch;

/// The shared state: the current time, published to sleepers.
#[derive(Debug)]
pub struct PausedClock {
    now: Mutex<SystemTime>,
    tick: watch::Sender<SystemTime>,
}

#[async_trait::async_trait]
impl Clock for PausedClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
    async fn sleep(&self, duration: Duration) {
        let until = self.now() + duration;
        let mut rx = self.tick.subscribe();
        // A closed channel cannot happen while `self` lives; stop waiting then anyway.
        let _ = rx.wait_for(|now| *now >= until).await;
    }
}

/// A clock for tests: starts at a given time and moves only by `advance`.
#[pyclass(module = "ifmatch", name = "ManualClock", frozen)]
pub struct ManualClock {
    pub(crate) inner: Arc<PausedClock>,
}

impl ManualClock {
    /// The clock as the library takes it.
    pub fn dyn_clock(&self) -> DynClock {
        self.inner.clone()
    }
}

#[pymethods]
impl ManualClock {
    /// A clock at `start` (seconds since the Unix epoch; default: now).
    #[new]
    #[pyo3(signature = (start=None))]
    fn new(start: Option<f64>) -> PyResult<Self> {
        let start = match start {
            Some(s) => SystemTime::UNIX_EPOCH + crate::convert::seconds(s, "start")?,
            None => SystemTime::now(),
        };
        let (tick, _) = watch::channel(start);
        Ok(ManualClock {
            inner: Arc::new(PausedClock {
                now: Mutex::new(start),
                tick,
            }),
        })
    }

    /// The current time, in seconds since the Unix epoch.
    fn now(&self) -> f64 {
        crate::convert::epoch_seconds(self.inner.now())
    }

    /// Moves the clock forward by `seconds`, waking every sleep that is now due.
    fn advance(&self, seconds: f64) -> PyResult<()> {
        let by = crate::convert::seconds(seconds, "seconds")?;
        let now = {
            let mut now = self.inner.now.lock().unwrap_or_else(|e| e.into_inner());
            *now += by;
            *now
        };
        self.inner.tick.send_replace(now);
        Ok(())
    }
}
