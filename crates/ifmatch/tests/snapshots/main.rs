//! Snapshot tests, with seeded randomness and no real sleeping: most run on
//! the local stores on tokio's paused clock; the key behaviours also run on
//! every store from [`backends::backends`] (s3 and dynamodb included) on a
//! `ManualClock` (see [`use_manual_clock`]).
//!
//! - [`publish`]: versions, conflicts, superseded builds, rollback, pruning;
//! - [`read`]: the single-flight reader cache, outages, typed JSON;
//! - [`guard`]: the build guard (one build at a time, expiry takeover);
//! - [`repeat`]: publishes and rollbacks repeated with their request id land once.

mod artifact;
#[path = "../common/backends.rs"]
mod backends;
mod guard;
#[path = "../common/lost_answer.rs"]
mod lost_answer;
mod publish;
mod read;
mod repeat;
mod wrappers;

use ifmatch::DynStore;
use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ifmatch::clock::{DynClock, ManualClock, SharedRng, SystemClock};
use ifmatch::snapshot::{SnapshotConfig, Snapshots};

thread_local! {
    static CLOCK: RefCell<DynClock> = RefCell::new(SystemClock::shared());
}

/// The test's clock: one per test (each test runs on its own thread, on a
/// current-thread runtime), shared by all its workers so that their build
/// times compare exactly. It follows tokio's (paused) clock unless the test
/// called [`use_manual_clock`].
pub fn clock() -> DynClock {
    CLOCK.with(|c| c.borrow().clone())
}

/// Makes [`clock`] a `ManualClock` for the rest of this test: it moves only
/// when slept on, so tests can talk to s3 and dynamodb servers (whose HTTP
/// timeouts would fire at once on tokio's paused clock).
pub fn use_manual_clock() {
    let manual: DynClock = Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    ));
    CLOCK.with(|c| *c.borrow_mut() = manual);
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
