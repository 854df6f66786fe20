//! The coordination primitives (leases, idempotency), tested once and run on
//! every backend that [`backends::backends`] returns.
//!
//! Time is tokio's paused clock (through `SystemClock`) or a `ManualClock`,
//! and randomness is seeded, so nothing here sleeps for real.

#[path = "../common/backends.rs"]
mod backends;
mod fence;
mod group_commit;
mod idempotency;
mod lease;
