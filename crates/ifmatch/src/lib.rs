//! # ifmatch
//!
//! Compare-and-swap on versioned keys, for fleets of stateless workers
//! (Lambda functions, containers, pods) that share storage and must not lose
//! a write.
//!
//! Every feature rests on one idea: a key holds bytes, a little metadata and
//! an opaque [`Version`]; a write names the condition under which it may land
//! (any, absent, or "still at version V"); whoever loses the race gets a typed
//! [`Error::Conflict`], re-reads and tries again — or gives up with a clear
//! error. Nothing is ever silently overwritten.
//!
//! - [`store`]: the [`Store`] trait and its backends (`file://`, `memory://`,
//!   `s3://`, `dynamodb://`, and a fault-injecting wrapper), opened by URL.
//! - [`retry`]: capped exponential backoff with full jitter, attempt limits, deadlines.
//! - [`update`]: the retrying read-modify-write loop that never loses or
//!   double-applies a write.
//! - [`lease`]: named distributed locks with TTL, renewal, owner-only release
//!   and fencing tokens that strictly increase per name.
//! - [`fence`]: fenced put, delete and update with a precondition (what the
//!   HTTP server's `Fencing-Token` header runs).
//! - [`idempotency`]: run a handler once per key however often a message is
//!   delivered; duplicates get the stored result.
//! - [`snapshot`]: publish a derived artifact as version n+1 with
//!   compare-and-swap (superseded builds stop, others rebuild with backoff;
//!   optional build guard; keep-last-K and rollback), and read it through a
//!   single-flight cache checked with conditional GETs.
//! - [`artifact`]: snapshots built outside the process: publish an upload
//!   over an expected version, read only when stale, take the build lease.
//! - [`tenantdb`]: per-tenant SQLite databases in the store, with a local
//!   cache; commits upload only the pages they change.
//! - [`clock`]: injected time and randomness, so tests never sleep.
//! - [`sim`]: deterministic simulation support (seeded fault weather, simulated
//!   clients, exactly-once bookkeeping) for testing code on top of ifmatch.
//! - [`accounts`]: users with an immutable account id, a conditional create,
//!   argon2id password hashes on a bounded pool of threads (older bcrypt
//!   hashes verify and are upgraded on login), a failed-login back-off and
//!   paginated listing.
//! - [`gc`]: removal of expired leases, idempotency records and sessions on
//!   backends without TTL, in bounded sweeps that never delete a record
//!   renewed meanwhile.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use ifmatch::{store, update::update_json, retry::RetryPolicy};
//!
//! let store = store::open("memory://").await?;
//! let policy = RetryPolicy::default();
//! // Increment a counter safely, however many workers do it at once.
//! let n: u64 = update_json(&*store, "counter", &policy, |n: Option<u64>| {
//!     Ok(Some(n.unwrap_or(0) + 1))
//! })
//! .await?
//! .value
//! .unwrap();
//! assert_eq!(n, 1);
//! # Ok::<(), ifmatch::update::UpdateError>(()) }).unwrap();
//! ```

#![warn(missing_docs)]

pub mod accounts;
pub mod artifact;
pub mod clock;
pub mod error;
pub mod fence;
pub mod gc;
pub mod idempotency;
pub mod key;
pub mod lease;
pub mod retry;
pub mod sim;
pub mod snapshot;
pub mod store;
pub mod tenantdb;
pub mod update;

pub use error::{Error, ErrorKind, Result};
pub use store::{Condition, DynStore, Object, ObjectMeta, PutOptions, Store, Version};
