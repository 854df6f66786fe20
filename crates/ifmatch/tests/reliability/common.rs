//! Shared helpers: seeds, temporary directories, environment knobs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use ifmatch::clock::{ManualClock, SharedRng};
use ifmatch::retry::RetryPolicy;

/// The seed of a test: `RELIABILITY_SEED` if set, else a fresh one.
/// Printed, so a failing run (cargo shows a failing test's output) can be replayed.
pub fn seed(test: &str) -> u64 {
    let seed = match std::env::var("RELIABILITY_SEED") {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("RELIABILITY_SEED={s:?} is not a u64")),
        Err(_) => rand::random::<u64>() >> 1,
    };
    println!("{test}: seed {seed} (replay with RELIABILITY_SEED={seed})");
    seed
}

/// A number from the environment, or `default`.
pub fn env_u64(var: &str, default: u64) -> u64 {
    match std::env::var(var) {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("{var}={s:?} is not a number")),
        Err(_) => default,
    }
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "ifmatch-rel-{tag}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("keeping {} for inspection", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A retry policy on a manual clock (backoff never sleeps) with a seeded rng.
pub fn fast_policy(seed: u64, attempts: u32) -> RetryPolicy {
    RetryPolicy::default()
        .with_clock(Arc::new(ManualClock::new(
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        )))
        .with_rng(SharedRng::seeded(seed))
        .with_max_attempts(attempts)
        .with_deadline(None)
}
