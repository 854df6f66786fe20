//! Snapshot tests: every test runs on every store from [`backends::backends`],
//! on tokio's paused clock with seeded randomness (no real sleeping).
//!
//! - [`publish`]: versions, conflicts, superseded builds, rollback, pruning;
//! - [`read`]: the single-flight reader cache, outages, typed JSON;
//! - [`guard`]: the build guard (one build at a time, expiry takeover).

#[path = "../common/backends.rs"]
mod backends;
mod guard;
mod publish;
mod read;
mod wrappers;

use ifmatch::DynStore;
use ifmatch::clock::{DynClock, SharedRng, SystemClock};
use ifmatch::snapshot::{SnapshotConfig, Snapshots};

thread_local! {
    static CLOCK: DynClock = SystemClock::shared();
}

/// The test's clock: one per test (each test runs on its own thread, on a
/// current-thread runtime with tokio's paused clock), shared by all its
/// workers so that their build times compare exactly.
pub fn clock() -> DynClock {
    CLOCK.with(|c| c.clone())
}

/// The configuration of test publishers: the test's clock and a seeded generator.
pub fn config(seed: u64) -> SnapshotConfig {
    SnapshotConfig::default()
        .with_clock(clock())
        .with_rng(SharedRng::seeded(seed))
}

/// A publisher on `store` with the test configuration.
pub fn snapshots(store: DynStore, seed: u64) -> Snapshots {
    Snapshots::with_config(store, config(seed))
}

/// A body that names the version it was built as (like the seed's `QuotesCacheData.version`).
pub fn body(version: u64, by: &str) -> bytes::Bytes {
    serde_json::to_vec(&serde_json::json!({ "version": version, "by": by }))
        .unwrap()
        .into()
}
