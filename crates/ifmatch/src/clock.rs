//! Injected time and randomness.
//!
//! Everything in ifmatch that waits, expires or jitters reads time through a
//! [`Clock`] and randomness through a [`SharedRng`], so tests run on a paused
//! clock with a seeded generator instead of sleeping.
//!
//! [`SystemClock`] follows tokio's clock: under `#[tokio::test(start_paused = true)]`
//! its sleeps complete instantly and its `now()` advances by exactly the time
//! slept. [`ManualClock`] is moved by hand.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A source of wall-clock time and sleeps.
#[async_trait]
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
    /// Waits for `duration`.
    async fn sleep(&self, duration: Duration);
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A shared clock handle.
pub type DynClock = Arc<dyn Clock>;

/// The real clock, driven by tokio's timer (so it pauses with tokio's test clock).
#[derive(Debug, Clone)]
pub struct SystemClock {
    anchor_wall: SystemTime,
    anchor: tokio::time::Instant,
}

impl SystemClock {
    /// A clock anchored at the current wall time.
    pub fn new() -> Self {
        SystemClock {
            anchor_wall: SystemTime::now(),
            anchor: tokio::time::Instant::now(),
        }
    }
    /// The real clock as a shared handle.
    pub fn shared() -> DynClock {
        Arc::new(Self::new())
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        self.anchor_wall + self.anchor.elapsed()
    }
    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await
    }
}

/// A clock that moves only when told to; `sleep` advances it and returns at once.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<SystemTime>>,
}

impl ManualClock {
    /// A manual clock at `start`.
    pub fn new(start: SystemTime) -> Self {
        ManualClock {
            now: Arc::new(Mutex::new(start)),
        }
    }
    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
    }
}

#[async_trait]
impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
    async fn sleep(&self, duration: Duration) {
        self.advance(duration);
        tokio::task::yield_now().await;
    }
}

/// A shared, lockable random generator: seeded in tests, from entropy otherwise.
#[derive(Clone)]
pub struct SharedRng(Arc<Mutex<StdRng>>);

impl fmt::Debug for SharedRng {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedRng")
    }
}

impl SharedRng {
    /// A generator with a fixed seed: the same seed gives the same sequence.
    pub fn seeded(seed: u64) -> Self {
        SharedRng(Arc::new(Mutex::new(StdRng::seed_from_u64(seed))))
    }
    /// A generator seeded from the operating system.
    pub fn from_entropy() -> Self {
        SharedRng(Arc::new(Mutex::new(StdRng::from_os_rng())))
    }
    fn with<T>(&self, f: impl FnOnce(&mut StdRng) -> T) -> T {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }
    /// A uniform integer in `0..=max`.
    pub fn up_to(&self, max: u64) -> u64 {
        self.with(|r| r.random_range(0..=max))
    }
    /// A uniform float in `[0, 1)`.
    pub fn unit(&self) -> f64 {
        self.with(|r| r.random::<f64>())
    }
    /// A random 64-bit value.
    pub fn next_u64(&self) -> u64 {
        self.with(|r| r.random::<u64>())
    }
}

impl Default for SharedRng {
    fn default() -> Self {
        Self::from_entropy()
    }
}
