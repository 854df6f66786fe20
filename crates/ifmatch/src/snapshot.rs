//! Snapshots: publish a derived artifact as version n+1 with compare-and-swap,
//! and read the latest one through a small in-process cache.
//!
//! This is seed ECS-30 done properly: a cache (say, the quotes cache JSON
//! built from a database) is rebuilt by whichever worker notices it is stale,
//! and read by every worker.
//!
//! ## Publishing
//!
//! [`Snapshots::publish`] calls your `build` closure (which gets a
//! [`BuildContext`] naming the version it is building, so the version can be
//! written into the artifact itself) and commits the bytes as version n+1 with
//! a conditional write against version n. No two publishes share a version
//! number and none is lost: the head pointer (below) is the commit point and
//! only one write can follow a given head version.
//!
//! When another publisher commits first, the publish does not rebuild blindly:
//! if the winner *started building at or after* our build started, its
//! artifact is at least as fresh as ours, so we stop with
//! [`PublishOutcome::Superseded`]. Otherwise we rebuild on top of the winner
//! and retry with capped exponential backoff and full jitter (by default 5
//! attempts, delays capped at 10 s, like the seed's phase 2 but with full
//! jitter and a bound). Build start times come from each worker's
//! [`Clock`](crate::clock::Clock);
//! across machines the comparison is only as good as their clock sync, and a
//! wrong call costs at most a redundant rebuild or a skipped one whose data
//! was at most the clock skew older — never a lost or duplicated version.
//!
//! Optionally a [`BuildGuard`] lets only one worker rebuild at a time while
//! the others wait for its result (seed 001, phase 3). A waiter whose request
//! is answered by a build that started after it asked returns
//! [`PublishOutcome::Superseded`] without building at all. The guard is an
//! optimisation only: correctness still rests on the conditional head write,
//! so an expired guard costs a duplicate build, never a lost version.
//! [`StoreBuildGuard`] is a simple implementation on any [`Store`](crate::store::Store).
//!
//! The last [`SnapshotConfig::keep`] versions are kept; [`Snapshots::rollback`]
//! republishes one of them as a new version n+1.
//!
//! ## Storage layout
//!
//! Under a prefix (default `snapshots`), for a snapshot named `NAME`:
//!
//! | key | what | written with |
//! |---|---|---|
//! | `snapshots/NAME/head` | the head record: JSON with the retained versions, newest (current) first: version, body key, size, build start, publish time, publish id, rollback origin | `If-Match` on the previous head (`If-None-Match: *` for the first): **the commit point** |
//! | `snapshots/NAME/v/000000000042-<publish id>` | the immutable body of version 42 | `If-None-Match: *`, before the head flips |
//! | `snapshots/NAME/building` | the [`StoreBuildGuard`] marker, while a guarded build runs | `If-None-Match: *`, takeover with `If-Match`, removed with a conditional delete |
//!
//! The head's metadata also carries `snapshot-version` and
//! `snapshot-build-started` (milliseconds since the epoch) so waiters can
//! poll it with a cheap HEAD; each body's metadata carries its version, build
//! start and publish id.
//!
//! A body key carries a random publish id besides the version number, so a
//! publisher that crashes between writing its body and flipping the head
//! leaves an orphan that blocks nobody. After a successful publish, bodies
//! of versions that fell out of the retained window are deleted, and so is
//! every unreferenced body numbered at or below the new version (those can
//! never be committed any more, since the head has moved past them); bodies
//! numbered above it may belong to a publish in flight and are left alone.
//!
//! ## Reading
//!
//! A [`SnapshotReader`] keeps the latest snapshot in memory and checks the
//! head with a conditional GET
//! ([`Store::get_if_changed`](crate::store::Store::get_if_changed)) at most once per
//! [`SnapshotConfig::check_interval`]. Concurrent callers that find it stale
//! share **one** refresh (single flight: the first takes a refresh lock, the
//! rest wait on it and take its result), so a burst of requests after a
//! publish costs one small head request and one body download per process,
//! not one per request. If the store is unavailable the last good snapshot
//! is served, with its age and the error ([`Served::stale`]). A failed check
//! counts against the interval too, so a struggling store is not hammered;
//! [`SnapshotReader::refresh`] checks at once (still single flight).
//! [`JsonSnapshotReader`] parses each version once and shares the parsed
//! `Arc<T>`.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use ifmatch::snapshot::{PublishOutcome, Snapshots};
//!
//! let store = ifmatch::store::open("memory://").await?;
//! let snapshots = Snapshots::new(store);
//! let outcome = snapshots
//!     .publish("quotes", |ctx| async move {
//!         Ok(format!(r#"{{"version":{},"quotes":[]}}"#, ctx.version).into())
//!     })
//!     .await?;
//! assert!(matches!(outcome, PublishOutcome::Published(ref p) if p.version() == 1));
//!
//! let reader = snapshots.reader("quotes")?;
//! let latest = reader.latest().await?;
//! assert_eq!(latest.version, 1);
//! # Ok::<(), ifmatch::snapshot::SnapshotError>(()) }).unwrap();
//! ```

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::clock::{DynClock, SharedRng};
use crate::error::{BoxError, Error, ErrorKind};
use crate::retry::RetryPolicy;
use crate::store::{Condition, DynStore, Fetch, Metadata, Object, PutOptions, Version};

/// The default key prefix under which snapshots live.
pub const DEFAULT_PREFIX: &str = "snapshots";

/// Metadata name of a snapshot's version number (on the head and on each body).
pub const META_VERSION: &str = "snapshot-version";
/// Metadata name of a snapshot's build start, in milliseconds since the Unix epoch.
pub const META_BUILD_STARTED: &str = "snapshot-build-started";
/// Metadata name of the random id of the publish that wrote a body.
pub const META_PUBLISH_ID: &str = "snapshot-publish-id";
/// Metadata name of the version a rollback republished.
pub const META_ROLLED_BACK_FROM: &str = "snapshot-rolled-back-from";

/// The longest snapshot name accepted.
pub const MAX_NAME_LEN: usize = 128;

const HEAD_FORMAT: u32 = 1;

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Why a snapshot operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The snapshot name is not valid (1–128 characters of `A-Z a-z 0-9 . _ -`).
    #[error("invalid snapshot name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why.
        reason: String,
    },
    /// Nothing has been published under this name yet.
    #[error("no snapshot named '{name}' has been published")]
    NotFound {
        /// The snapshot name.
        name: String,
    },
    /// The requested version is not (or no longer) retained.
    #[error("snapshot '{name}' has no retained version {version} (retained: {retained:?})")]
    VersionNotRetained {
        /// The snapshot name.
        name: String,
        /// The version asked for.
        version: u64,
        /// The versions that are retained, newest first.
        retained: Vec<u64>,
    },
    /// The build closure failed; nothing was published.
    #[error("building snapshot '{name}' failed: {source}")]
    Build {
        /// The snapshot name.
        name: String,
        /// The closure's error.
        source: BoxError,
    },
    /// Other publishers kept winning until the retry budget ran out.
    #[error(
        "publishing snapshot '{name}' gave up after {attempts} attempts ({conflicts} conflicts)"
    )]
    Conflict {
        /// The snapshot name.
        name: String,
        /// Attempts made.
        attempts: u32,
        /// Conflicts among them.
        conflicts: u32,
        /// The last conflict the store reported.
        #[source]
        last: Error,
    },
    /// A head write's response was lost and so many versions were published
    /// since that its outcome can no longer be told.
    #[error(
        "publishing snapshot '{name}' version {version}: the response was lost and the outcome cannot be determined"
    )]
    Ambiguous {
        /// The snapshot name.
        name: String,
        /// The version the lost write would have created.
        version: u64,
    },
    /// A stored record is not what this module writes.
    #[error("snapshot '{name}': record '{key}' is corrupt: {reason}")]
    Corrupt {
        /// The snapshot name.
        name: String,
        /// The key of the bad record.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The snapshot body is not valid JSON for the requested type.
    #[error("snapshot '{name}' version {version} does not parse as the requested type: {source}")]
    Decode {
        /// The snapshot name.
        name: String,
        /// The version that failed to parse.
        version: u64,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] Error),
    /// An error shared by several callers of one refresh (see [`SnapshotReader`]).
    #[error(transparent)]
    Shared(Arc<SnapshotError>),
}

impl SnapshotError {
    /// The classification, for exit codes and HTTP statuses.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SnapshotError::InvalidName { .. } => ErrorKind::Invalid,
            SnapshotError::NotFound { .. } | SnapshotError::VersionNotRetained { .. } => {
                ErrorKind::NotFound
            }
            SnapshotError::Conflict { .. } => ErrorKind::Conflict,
            SnapshotError::Ambiguous { .. } => ErrorKind::Ambiguous,
            SnapshotError::Build { .. }
            | SnapshotError::Corrupt { .. }
            | SnapshotError::Decode { .. } => ErrorKind::Other,
            SnapshotError::Store(e) => e.kind(),
            SnapshotError::Shared(e) => e.kind(),
        }
    }
}

type SResult<T> = std::result::Result<T, SnapshotError>;

// ---------------------------------------------------------------------------
// Names, keys and records
// ---------------------------------------------------------------------------

/// Checks a snapshot name: 1–128 characters of `A-Z a-z 0-9 . _ -`, not `.` or `..`.
///
/// Names are a single key segment so that one snapshot's keys can never
/// overlap another's.
pub fn validate_name(name: &str) -> SResult<()> {
    let bad = |reason: &str| {
        Err(SnapshotError::InvalidName {
            name: name.chars().take(80).collect(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return bad("a snapshot name may not be empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("a snapshot name may be at most 128 characters");
    }
    if name == "." || name == ".." {
        return bad("a snapshot name may not be '.' or '..'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return bad("a snapshot name may only contain A-Z, a-z, 0-9, '.', '_' and '-'");
    }
    Ok(())
}

/// The keys of one snapshot name.
#[derive(Debug, Clone)]
struct Keys {
    name: String,
    head: String,
    bodies: String,
}

impl Keys {
    fn new(prefix: &str, name: &str) -> SResult<Keys> {
        validate_name(name)?;
        let base = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        Ok(Keys {
            name: name.to_string(),
            head: format!("{base}/head"),
            bodies: format!("{base}/v/"),
        })
    }

    fn body(&self, version: u64, publish_id: &str) -> String {
        format!("{}{version:012}-{publish_id}", self.bodies)
    }

    /// The version number of a body key under this snapshot, if it is one.
    fn body_version(&self, key: &str) -> Option<u64> {
        let rest = key.strip_prefix(&self.bodies)?;
        let (n, _) = rest.split_once('-')?;
        n.parse().ok()
    }

    fn corrupt(&self, key: &str, reason: impl Into<String>) -> SnapshotError {
        SnapshotError::Corrupt {
            name: self.name.clone(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }
}

/// One published version, as recorded in the head.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// The snapshot version number (1, 2, 3, ...).
    pub version: u64,
    /// The key of the immutable body.
    pub body_key: String,
    /// The body's size in bytes.
    pub size: u64,
    /// When the build of this version started, in milliseconds since the Unix epoch
    /// (for a rollback: when the rollback started).
    pub build_started_ms: u64,
    /// When this version was committed (the publisher's clock), in milliseconds since the Unix epoch.
    pub published_ms: u64,
    /// The random id of the publish that wrote it.
    pub publish_id: String,
    /// For a rollback: the version whose content this version republishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_from: Option<u64>,
}

impl VersionInfo {
    /// When the build of this version started.
    pub fn build_started(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.build_started_ms)
    }
    /// When this version was committed.
    pub fn published(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.published_ms)
    }
}

/// The head record: the retained versions, newest (current) first.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct HeadRecord {
    format: u32,
    name: String,
    versions: Vec<VersionInfo>,
}

impl HeadRecord {
    fn current(&self) -> &VersionInfo {
        // Never empty: `parse` rejects an empty list and `publish` always adds one.
        &self.versions[0]
    }

    fn parse(keys: &Keys, obj: &Object) -> SResult<HeadRecord> {
        let rec: HeadRecord = serde_json::from_slice(&obj.body)
            .map_err(|e| keys.corrupt(&keys.head, format!("not a head record: {e}")))?;
        if rec.format != HEAD_FORMAT {
            return Err(keys.corrupt(
                &keys.head,
                format!(
                    "unknown head format {} (this build reads {HEAD_FORMAT})",
                    rec.format
                ),
            ));
        }
        if rec.versions.is_empty() {
            return Err(keys.corrupt(&keys.head, "the head lists no versions"));
        }
        Ok(rec)
    }

    fn metadata(&self) -> Metadata {
        let cur = self.current();
        let mut m = Metadata::new();
        m.insert(META_VERSION.into(), cur.version.to_string());
        m.insert(META_BUILD_STARTED.into(), cur.build_started_ms.to_string());
        m
    }
}

/// The head as read: the record and the store version it was read at.
#[derive(Clone, Debug)]
struct Head {
    record: HeadRecord,
    version: Version,
}

/// One snapshot: its version record and its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The snapshot name.
    pub name: String,
    /// The version record.
    pub info: VersionInfo,
    /// The artifact.
    pub body: Bytes,
}

impl Snapshot {
    /// The version number.
    pub fn version(&self) -> u64 {
        self.info.version
    }
}

// ---------------------------------------------------------------------------
// Configuration, metrics, outcomes
// ---------------------------------------------------------------------------

/// How snapshots are published and read.
#[derive(Clone, Debug)]
pub struct SnapshotConfig {
    /// The key prefix (default [`DEFAULT_PREFIX`]); `""` puts names at the top level.
    pub prefix: String,
    /// How many versions to keep, the current one included (at least 1; default 5).
    pub keep: usize,
    /// The retry budget of a publish: attempts, backoff, clock and randomness
    /// (default 5 attempts, 1 s base delay, 10 s cap, full jitter, no deadline).
    /// Its clock is also the clock of build times, guard waits and reader intervals.
    pub policy: RetryPolicy,
    /// An optional guard so that only one worker builds at a time.
    pub guard: Option<Arc<dyn BuildGuard>>,
    /// How often a publisher waiting on the guard polls (default 250 ms).
    pub guard_poll: Duration,
    /// How long a publisher waits on the guard before building anyway (default 2 min).
    pub guard_max_wait: Duration,
    /// How often a [`SnapshotReader`] asks the store whether a newer version exists (default 5 s).
    pub check_interval: Duration,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            prefix: DEFAULT_PREFIX.to_string(),
            keep: 5,
            policy: RetryPolicy::default()
                .with_max_attempts(5)
                .with_delays(Duration::from_secs(1), Duration::from_secs(10))
                .with_deadline(None),
            guard: None,
            guard_poll: Duration::from_millis(250),
            guard_max_wait: Duration::from_secs(120),
            check_interval: Duration::from_secs(5),
        }
    }
}

impl SnapshotConfig {
    /// Sets the key prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into().trim_end_matches('/').to_string();
        self
    }
    /// Sets how many versions to keep (at least 1).
    pub fn with_keep(mut self, keep: usize) -> Self {
        self.keep = keep.max(1);
        self
    }
    /// Sets the retry policy.
    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }
    /// Sets the clock (on the retry policy, which everything here reads).
    pub fn with_clock(mut self, clock: DynClock) -> Self {
        self.policy = self.policy.with_clock(clock);
        self
    }
    /// Sets the random generator (jitter and publish ids).
    pub fn with_rng(mut self, rng: SharedRng) -> Self {
        self.policy = self.policy.with_rng(rng);
        self
    }
    /// Sets a build guard.
    pub fn with_guard(mut self, guard: Arc<dyn BuildGuard>) -> Self {
        self.guard = Some(guard);
        self
    }
    /// Sets the reader check interval.
    pub fn with_check_interval(mut self, interval: Duration) -> Self {
        self.check_interval = interval;
        self
    }
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

/// Counters of a [`Snapshots`] publisher (the seed's `getCacheMetrics`, and more).
#[derive(Debug, Default)]
pub struct SnapshotMetrics {
    /// Publishes and rollbacks that landed.
    pub published: AtomicU64,
    /// Publishes that stopped because a build at least as fresh landed.
    pub superseded: AtomicU64,
    /// Publishes and rollbacks that failed.
    pub failed: AtomicU64,
    /// Commit attempts (each reads the head, builds and tries to flip it).
    pub attempts: AtomicU64,
    /// Head writes that lost to another publisher.
    pub conflicts: AtomicU64,
    /// Builds run.
    pub builds: AtomicU64,
    /// Total build time, milliseconds.
    pub build_ms_total: AtomicU64,
    /// The last build's time, milliseconds.
    pub build_ms_last: AtomicU64,
    /// Bytes of bodies committed.
    pub bytes_published: AtomicU64,
    /// The size of the last committed body.
    pub bytes_last: AtomicU64,
    /// Publishes that had to wait for another worker's guarded build.
    pub guard_waits: AtomicU64,
    /// Rollbacks that landed (also counted in `published`).
    pub rollbacks: AtomicU64,
    /// Old or orphaned bodies deleted.
    pub pruned: AtomicU64,
    /// Deletions of old bodies that failed (retried by the next publish).
    pub prune_errors: AtomicU64,
}

impl SnapshotMetrics {
    /// The counters as a name → value map (for logs, JSON or an exporter).
    pub fn to_map(&self) -> BTreeMap<&'static str, u64> {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BTreeMap::from([
            ("published", g(&self.published)),
            ("superseded", g(&self.superseded)),
            ("failed", g(&self.failed)),
            ("attempts", g(&self.attempts)),
            ("conflicts", g(&self.conflicts)),
            ("builds", g(&self.builds)),
            ("build_ms_total", g(&self.build_ms_total)),
            ("build_ms_last", g(&self.build_ms_last)),
            ("bytes_published", g(&self.bytes_published)),
            ("bytes_last", g(&self.bytes_last)),
            ("guard_waits", g(&self.guard_waits)),
            ("rollbacks", g(&self.rollbacks)),
            ("pruned", g(&self.pruned)),
            ("prune_errors", g(&self.prune_errors)),
        ])
    }
}

/// What the build closure is told about the version it builds.
#[derive(Clone, Debug)]
pub struct BuildContext {
    /// The snapshot name.
    pub name: String,
    /// The version this build will be committed as, if it wins (write it into the artifact).
    pub version: u64,
    /// The version it builds on (`None` for the first).
    pub previous: Option<u64>,
    /// Which attempt this is (1 for the first build of this publish).
    pub attempt: u32,
    /// When this build started (the freshness it is judged by).
    pub started: SystemTime,
}

/// A publish that landed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The version committed.
    pub info: VersionInfo,
    /// Attempts made, the first included.
    pub attempts: u32,
    /// Conflicts met on the way.
    pub conflicts: u32,
}

impl Published {
    /// The version number committed.
    pub fn version(&self) -> u64 {
        self.info.version
    }
}

/// What a publish did: either it committed a version, or a build at least as
/// fresh as its own landed first and it stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublishOutcome {
    /// Our artifact is the new current version.
    Published(Published),
    /// Another worker's build, started at or after ours (or after we asked,
    /// when we waited on the guard), landed; ours was not needed.
    Superseded {
        /// The version that superseded ours (the current one when we stopped).
        by: u64,
        /// Attempts made (0 if we never built: we waited on the guard).
        attempts: u32,
        /// Conflicts met.
        conflicts: u32,
    },
}

impl PublishOutcome {
    /// The version that is current because of this publish: ours, or the one that superseded it.
    pub fn version(&self) -> u64 {
        match self {
            PublishOutcome::Published(p) => p.info.version,
            PublishOutcome::Superseded { by, .. } => *by,
        }
    }
    /// Whether our artifact was committed.
    pub fn is_published(&self) -> bool {
        matches!(self, PublishOutcome::Published(_))
    }
}

// ---------------------------------------------------------------------------
// Build guard
// ---------------------------------------------------------------------------

/// Proof of holding a [`BuildGuard`], returned to [`BuildGuard::release`].
/// Opaque to the publisher: each guard puts in it what it needs (a store
/// version, a lease id and fencing token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardTicket {
    /// The guard's own token.
    pub token: String,
}

/// Lets only one worker build a snapshot at a time; the others wait for its result.
///
/// An optimisation, not the safety net: the conditional head write keeps
/// versions gap-free and unique whatever the guard does, so an implementation
/// may fail open (a guard that expires mid-build costs a duplicate build).
/// The real lease module can back this trait later; [`StoreBuildGuard`] is a
/// simple store-based implementation.
#[async_trait]
pub trait BuildGuard: Send + Sync + fmt::Debug {
    /// Tries to become the one builder of `name`: `Some` if acquired, `None`
    /// if another worker holds it.
    async fn try_acquire(&self, name: &str) -> Result<Option<GuardTicket>, Error>;
    /// Gives the guard up. Releasing a guard that expired and was taken over
    /// is not an error, and must not disturb the new holder.
    async fn release(&self, name: &str, ticket: GuardTicket) -> Result<(), Error>;
}

/// The marker record of a [`StoreBuildGuard`].
#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    owner: String,
    acquired_ms: u64,
    expires_ms: u64,
}

/// A [`BuildGuard`] made of a "building" marker key in a store.
///
/// - **acquire**: create `PREFIX/NAME/building` with `If-None-Match: *`,
///   holding an owner id and an expiry (`now + ttl`, on the injected clock;
///   also passed to the store as an advisory TTL);
/// - **held by another**: if the marker has expired, take it over with
///   `If-Match` on the version read (two workers taking over the same stale
///   marker cannot both win); otherwise report it held;
/// - **release**: delete with `If-Match` on our version, so a worker whose
///   marker expired and was taken over does not delete the new holder's;
/// - **lost response** on a marker write: re-read and compare the owner id.
///
/// There is no renewal: choose a `ttl` comfortably longer than a build. If a
/// build outlives it, another worker may build too; the head's conditional
/// write still keeps versions correct.
#[derive(Clone, Debug)]
pub struct StoreBuildGuard {
    store: DynStore,
    prefix: String,
    ttl: Duration,
    clock: DynClock,
    rng: SharedRng,
}

impl StoreBuildGuard {
    /// A guard in `store` whose markers expire after `ttl`, under [`DEFAULT_PREFIX`],
    /// on the real clock.
    pub fn new(store: DynStore, ttl: Duration) -> Self {
        StoreBuildGuard {
            store,
            prefix: DEFAULT_PREFIX.to_string(),
            ttl,
            clock: crate::clock::SystemClock::shared(),
            rng: SharedRng::from_entropy(),
        }
    }
    /// Sets the key prefix (use the publisher's, so the marker sits next to the head).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into().trim_end_matches('/').to_string();
        self
    }
    /// Sets the clock that stamps and judges expiry.
    pub fn with_clock(mut self, clock: DynClock) -> Self {
        self.clock = clock;
        self
    }
    /// Sets the random generator of owner ids.
    pub fn with_rng(mut self, rng: SharedRng) -> Self {
        self.rng = rng;
        self
    }

    fn key(&self, name: &str) -> Result<String, Error> {
        validate_name(name).map_err(|e| Error::InvalidInput(e.to_string()))?;
        Ok(if self.prefix.is_empty() {
            format!("{name}/building")
        } else {
            format!("{}/{name}/building", self.prefix)
        })
    }

    /// After a lost response: is the marker ours?
    async fn check_owner(&self, key: &str, owner: &str) -> Result<Option<GuardTicket>, Error> {
        match self.store.get(key).await {
            Ok(obj) => match serde_json::from_slice::<Marker>(&obj.body) {
                Ok(m) if m.owner == owner => Ok(Some(GuardTicket {
                    token: obj.meta.version.as_str().to_string(),
                })),
                _ => Ok(None),
            },
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl BuildGuard for StoreBuildGuard {
    async fn try_acquire(&self, name: &str) -> Result<Option<GuardTicket>, Error> {
        let key = self.key(name)?;
        let owner = format!("{:016x}", self.rng.next_u64());
        let now = self.clock.now_ms();
        let expires_ms = now.saturating_add(ms(self.ttl));
        let marker = Marker {
            owner: owner.clone(),
            acquired_ms: now,
            expires_ms,
        };
        let body = Bytes::from(
            serde_json::to_vec(&marker).map_err(|e| Error::other("encoding a guard marker", e))?,
        );
        let expiry = Some(expires_ms / 1000 + 1);
        let ticket = |v: Version| {
            Some(GuardTicket {
                token: v.as_str().to_string(),
            })
        };
        // A marker released between our create and our read sends us round again.
        for _ in 0..3 {
            let create = PutOptions::if_absent().with_expiry(expiry);
            match self.store.put(&key, body.clone(), create).await {
                Ok(v) => return Ok(ticket(v)),
                Err(Error::Ambiguous { .. }) => return self.check_owner(&key, &owner).await,
                Err(Error::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
            let held = match self.store.get(&key).await {
                Ok(obj) => obj,
                Err(Error::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            // An unreadable marker is treated as expired: taking it over is safe.
            let expired = serde_json::from_slice::<Marker>(&held.body)
                .map(|m| m.expires_ms <= now)
                .unwrap_or(true);
            if !expired {
                return Ok(None);
            }
            debug!(key, "taking over an expired build marker");
            let takeover = PutOptions::if_matches(held.meta.version.clone()).with_expiry(expiry);
            return match self.store.put(&key, body.clone(), takeover).await {
                Ok(v) => Ok(ticket(v)),
                Err(Error::Conflict { .. }) => Ok(None),
                Err(Error::Ambiguous { .. }) => self.check_owner(&key, &owner).await,
                Err(e) => Err(e),
            };
        }
        Ok(None)
    }

    async fn release(&self, name: &str, ticket: GuardTicket) -> Result<(), Error> {
        let key = self.key(name)?;
        match self
            .store
            .delete(&key, Condition::Matches(Version::new(ticket.token)))
            .await
        {
            Ok(()) => Ok(()),
            // Expired and taken over (or already gone): not ours to delete.
            Err(Error::Conflict { .. }) | Err(Error::NotFound { .. }) => {
                debug!(key, "build marker was taken over before release");
                Ok(())
            }
            // Either it was deleted or it will expire.
            Err(Error::Ambiguous { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// A [`BuildGuard`] backed by a real lease ([`crate::lease`]): the builder
/// holds the lease `snapshot-build/NAME` for `ttl` and releases it when done.
///
/// Unlike [`StoreBuildGuard`], the lease carries a fencing token and its
/// takeover after expiry honours the configured clock-skew allowance. A
/// release that finds the lease expired and taken over is not an error (the
/// new holder is left alone), as [`BuildGuard::release`] requires.
#[derive(Debug, Clone)]
pub struct LeaseBuildGuard {
    leases: crate::lease::Leases,
    ttl: Duration,
}

impl LeaseBuildGuard {
    /// A guard taking leases from `leases`, each for `ttl`.
    pub fn new(leases: crate::lease::Leases, ttl: Duration) -> Self {
        LeaseBuildGuard { leases, ttl }
    }

    fn lease_name(name: &str) -> String {
        format!("snapshot-build/{name}")
    }
}

fn lease_error(e: crate::lease::LeaseError) -> Error {
    match e {
        crate::lease::LeaseError::Store { source, .. } => source,
        other => Error::msg(other.to_string()),
    }
}

#[async_trait]
impl BuildGuard for LeaseBuildGuard {
    async fn try_acquire(&self, name: &str) -> Result<Option<GuardTicket>, Error> {
        match self
            .leases
            .acquire(&Self::lease_name(name), self.ttl, Duration::ZERO)
            .await
        {
            Ok(lease) => {
                let token = serde_json::to_string(&lease)
                    .map_err(|e| Error::msg(format!("cannot encode a lease: {e}")))?;
                Ok(Some(GuardTicket { token }))
            }
            Err(crate::lease::LeaseError::Held { .. }) => Ok(None),
            Err(e) => Err(lease_error(e)),
        }
    }

    async fn release(&self, _name: &str, ticket: GuardTicket) -> Result<(), Error> {
        let lease: crate::lease::Lease = serde_json::from_str(&ticket.token)
            .map_err(|e| Error::msg(format!("not a lease ticket: {e}")))?;
        match self.leases.release(&lease).await {
            Ok(()) | Err(crate::lease::LeaseError::NotOwner { .. }) => Ok(()),
            Err(e) => Err(lease_error(e)),
        }
    }
}

// ---------------------------------------------------------------------------
// Publisher
// ---------------------------------------------------------------------------

/// The outcome of a head write.
enum Flip {
    /// Our head landed; `ours` is true when it is still the current head
    /// (false when a lost response was resolved after others published on top).
    Landed { ours: bool },
    /// Another publisher's head landed first.
    Lost(Error),
}

/// Whether it is our turn to build, under a guard.
enum Turn {
    Build(Option<GuardTicket>),
    Superseded(u64),
}

/// Publishes, lists, reads and rolls back snapshots in a store; makes readers.
///
/// Cheap to clone (clones share metrics). Each CLI command is one call:
/// `publish` → [`Snapshots::publish`], `get` → [`Snapshots::get`] (or
/// [`Snapshots::latest`]), `versions` → [`Snapshots::versions`], `rollback`
/// → [`Snapshots::rollback`].
#[derive(Clone, Debug)]
pub struct Snapshots {
    store: DynStore,
    config: Arc<SnapshotConfig>,
    metrics: Arc<SnapshotMetrics>,
}

impl Snapshots {
    /// Snapshots in `store` with the default configuration.
    pub fn new(store: DynStore) -> Self {
        Self::with_config(store, SnapshotConfig::default())
    }

    /// Snapshots in `store` with `config`.
    pub fn with_config(store: DynStore, mut config: SnapshotConfig) -> Self {
        config.keep = config.keep.max(1);
        Snapshots {
            store,
            config: Arc::new(config),
            metrics: Arc::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SnapshotConfig {
        &self.config
    }

    /// The publisher's counters.
    pub fn metrics(&self) -> &SnapshotMetrics {
        &self.metrics
    }

    fn clock(&self) -> &DynClock {
        &self.config.policy.clock
    }

    fn keys(&self, name: &str) -> SResult<Keys> {
        Keys::new(&self.config.prefix, name)
    }

    /// Builds and publishes a new version of `name`; see the module docs.
    ///
    /// `build` gets a [`BuildContext`] and returns the artifact's bytes. It
    /// runs once per attempt, so it may run several times (each time for a
    /// new version number), or not at all when a guarded build by another
    /// worker answers the request. A build error stops the publish.
    pub async fn publish<F, Fut>(&self, name: &str, mut build: F) -> SResult<PublishOutcome>
    where
        F: FnMut(BuildContext) -> Fut,
        Fut: Future<Output = Result<Bytes, BoxError>>,
    {
        let keys = self.keys(name)?;
        let asked_ms = self.clock().now_ms();
        let ticket = match &self.config.guard {
            None => None,
            Some(guard) => match self.take_turn(guard.as_ref(), &keys, asked_ms).await {
                Ok(Turn::Build(t)) => t,
                Ok(Turn::Superseded(by)) => {
                    inc(&self.metrics.superseded);
                    info!(
                        snapshot = name,
                        by, "a build started after our request landed; not rebuilding"
                    );
                    return Ok(PublishOutcome::Superseded {
                        by,
                        attempts: 0,
                        conflicts: 0,
                    });
                }
                Err(e) => {
                    inc(&self.metrics.failed);
                    return Err(e);
                }
            },
        };
        let result = self.commit_loop(&keys, None, true, &mut build).await;
        if let (Some(guard), Some(ticket)) = (&self.config.guard, ticket)
            && let Err(e) = guard.release(name, ticket).await
        {
            warn!(snapshot = name, error = %e, "releasing the build guard failed; it will expire");
        }
        self.count(&result);
        result
    }

    /// Republishes retained version `version` of `name` as a new version n+1
    /// (with [`VersionInfo::rolled_back_from`] set). Retries on conflict; a
    /// rollback is never superseded.
    pub async fn rollback(&self, name: &str, version: u64) -> SResult<Published> {
        let result = self.rollback_inner(name, version).await;
        match &result {
            Ok(_) => {
                inc(&self.metrics.published);
                inc(&self.metrics.rollbacks);
            }
            Err(_) => inc(&self.metrics.failed),
        }
        result
    }

    async fn rollback_inner(&self, name: &str, version: u64) -> SResult<Published> {
        let keys = self.keys(name)?;
        let old = self.get(name, Some(version)).await?;
        let body = old.body;
        let mut build = |_ctx: BuildContext| {
            let body = body.clone();
            async move { Ok::<Bytes, BoxError>(body) }
        };
        match self
            .commit_loop(&keys, Some(version), false, &mut build)
            .await?
        {
            PublishOutcome::Published(p) => {
                info!(
                    snapshot = name,
                    from = version,
                    to = p.info.version,
                    "rolled back"
                );
                Ok(p)
            }
            // commit_loop never supersedes when told not to.
            PublishOutcome::Superseded { .. } => Err(SnapshotError::Corrupt {
                name: name.to_string(),
                key: keys.head,
                reason: "a rollback was reported superseded".into(),
            }),
        }
    }

    /// The retained versions of `name`, newest (current) first.
    pub async fn versions(&self, name: &str) -> SResult<Vec<VersionInfo>> {
        let keys = self.keys(name)?;
        match self.read_head(&keys).await? {
            Some(h) => Ok(h.record.versions),
            None => Err(SnapshotError::NotFound {
                name: name.to_string(),
            }),
        }
    }

    /// Reads version `version` of `name` (the current one for `None`) from the store, uncached.
    pub async fn get(&self, name: &str, version: Option<u64>) -> SResult<Snapshot> {
        let keys = self.keys(name)?;
        // A reader racing the pruning of old bodies re-reads the head.
        for _ in 0..3 {
            let head = self
                .read_head(&keys)
                .await?
                .ok_or_else(|| SnapshotError::NotFound {
                    name: name.to_string(),
                })?;
            let info = match version {
                None => head.record.current().clone(),
                Some(v) => match head.record.versions.iter().find(|i| i.version == v) {
                    Some(i) => i.clone(),
                    None => {
                        return Err(SnapshotError::VersionNotRetained {
                            name: name.to_string(),
                            version: v,
                            retained: head.record.versions.iter().map(|i| i.version).collect(),
                        });
                    }
                },
            };
            match self.read_body(&keys, &info).await {
                Ok(body) => {
                    return Ok(Snapshot {
                        name: name.to_string(),
                        info,
                        body,
                    });
                }
                Err(SnapshotError::Store(Error::NotFound { .. })) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(SnapshotError::Store(Error::Unavailable {
            message: format!("snapshot '{name}' kept changing while being read"),
            source: None,
        }))
    }

    /// Reads the current version of `name` from the store, uncached (see [`Snapshots::reader`] for a cache).
    pub async fn latest(&self, name: &str) -> SResult<Snapshot> {
        self.get(name, None).await
    }

    /// A cached reader of `name`'s latest version, checking at most once per
    /// [`SnapshotConfig::check_interval`].
    pub fn reader(&self, name: &str) -> SResult<SnapshotReader> {
        SnapshotReader::new(
            self.store.clone(),
            &self.config.prefix,
            name,
            self.clock().clone(),
            self.config.check_interval,
        )
    }

    /// A cached reader that parses `name`'s latest version as JSON, once per version.
    pub fn json_reader<T: DeserializeOwned + Send + Sync>(
        &self,
        name: &str,
    ) -> SResult<JsonSnapshotReader<T>> {
        Ok(JsonSnapshotReader::new(self.reader(name)?))
    }

    fn count(&self, result: &SResult<PublishOutcome>) {
        match result {
            Ok(PublishOutcome::Published(_)) => inc(&self.metrics.published),
            Ok(PublishOutcome::Superseded { .. }) => inc(&self.metrics.superseded),
            Err(_) => inc(&self.metrics.failed),
        }
    }

    /// Waits until it is our turn to build, or a build started after we asked lands.
    async fn take_turn(&self, guard: &dyn BuildGuard, keys: &Keys, asked_ms: u64) -> SResult<Turn> {
        let clock = self.clock().clone();
        let started = clock.now();
        let mut waited = false;
        loop {
            match guard.try_acquire(&keys.name).await {
                Ok(Some(ticket)) => {
                    // Whoever held the guard may have published a build started
                    // after we asked: then there is nothing left for us to do.
                    if waited && let Some(by) = self.fresh_since(keys, asked_ms).await? {
                        if let Err(e) = guard.release(&keys.name, ticket).await {
                            warn!(snapshot = keys.name, error = %e, "releasing the build guard failed; it will expire");
                        }
                        return Ok(Turn::Superseded(by));
                    }
                    return Ok(Turn::Build(Some(ticket)));
                }
                Ok(None) => {
                    if !waited {
                        inc(&self.metrics.guard_waits);
                        debug!(
                            snapshot = keys.name,
                            "another worker is building; waiting for its result"
                        );
                    }
                    waited = true;
                }
                Err(e) => {
                    // The guard is an optimisation: without it we still publish safely.
                    warn!(snapshot = keys.name, error = %e, "build guard unavailable; building unguarded");
                    return Ok(Turn::Build(None));
                }
            }
            if let Some(by) = self.fresh_since(keys, asked_ms).await? {
                return Ok(Turn::Superseded(by));
            }
            let waited_for = clock.now().duration_since(started).unwrap_or_default();
            if waited_for >= self.config.guard_max_wait {
                warn!(
                    snapshot = keys.name,
                    "waited too long for the build guard; building unguarded"
                );
                return Ok(Turn::Build(None));
            }
            clock.sleep(self.config.guard_poll).await;
        }
    }

    /// The current version, if its build started at or after `since_ms` (a cheap HEAD).
    async fn fresh_since(&self, keys: &Keys, since_ms: u64) -> SResult<Option<u64>> {
        let policy = &self.config.policy;
        let meta = policy
            .run(|| async {
                match self.store.head(&keys.head).await {
                    Ok(m) => Ok(Some(m)),
                    Err(Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await?;
        let Some(meta) = meta else { return Ok(None) };
        let num = |name: &str| meta.metadata.get(name).and_then(|s| s.parse::<u64>().ok());
        let (version, started) = match (num(META_VERSION), num(META_BUILD_STARTED)) {
            (Some(v), Some(s)) => (v, s),
            // A head without our metadata: read the record itself.
            _ => match self.read_head(keys).await? {
                Some(h) => {
                    let c = h.record.current();
                    (c.version, c.build_started_ms)
                }
                None => return Ok(None),
            },
        };
        Ok((started >= since_ms).then_some(version))
    }

    /// Reads and parses the head, `None` if nothing was published; transient errors are retried.
    async fn read_head(&self, keys: &Keys) -> SResult<Option<Head>> {
        let obj = self
            .config
            .policy
            .run(|| async {
                match self.store.get(&keys.head).await {
                    Ok(o) => Ok(Some(o)),
                    Err(Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await?;
        match obj {
            None => Ok(None),
            Some(o) => Ok(Some(Head {
                record: HeadRecord::parse(keys, &o)?,
                version: o.meta.version,
            })),
        }
    }

    async fn read_body(&self, keys: &Keys, info: &VersionInfo) -> SResult<Bytes> {
        let obj = self
            .config
            .policy
            .run(|| self.store.get(&info.body_key))
            .await?;
        check_body(keys, info, &obj)?;
        Ok(obj.body)
    }

    /// Build, write the body, flip the head; on conflict supersede or rebuild.
    async fn commit_loop<F, Fut>(
        &self,
        keys: &Keys,
        rolled_back_from: Option<u64>,
        may_supersede: bool,
        build: &mut F,
    ) -> SResult<PublishOutcome>
    where
        F: FnMut(BuildContext) -> Fut,
        Fut: Future<Output = Result<Bytes, BoxError>>,
    {
        let policy = &self.config.policy;
        let clock = self.clock().clone();
        let name = keys.name.as_str();
        let mut attempts = policy.start();
        let mut conflicts = 0u32;
        loop {
            attempts.begin();
            inc(&self.metrics.attempts);
            let base = self.read_head(keys).await?;
            let previous = base.as_ref().map(|h| h.record.current().version);
            let version = previous.unwrap_or(0) + 1;

            let started = clock.now();
            let started_ms = clock.now_ms();
            debug!(
                snapshot = name,
                version,
                attempt = attempts.made(),
                "building"
            );
            let body = build(BuildContext {
                name: name.to_string(),
                version,
                previous,
                attempt: attempts.made(),
                started,
            })
            .await
            .map_err(|source| SnapshotError::Build {
                name: name.to_string(),
                source,
            })?;
            let build_ms = ms(clock.now().duration_since(started).unwrap_or_default());
            inc(&self.metrics.builds);
            self.metrics
                .build_ms_total
                .fetch_add(build_ms, Ordering::Relaxed);
            self.metrics
                .build_ms_last
                .store(build_ms, Ordering::Relaxed);

            let publish_id = format!("{:016x}", policy.rng.next_u64());
            let info = VersionInfo {
                version,
                body_key: keys.body(version, &publish_id),
                size: body.len() as u64,
                build_started_ms: started_ms,
                published_ms: 0,
                publish_id,
                rolled_back_from,
            };
            self.write_body(&info, body).await?;

            let mut info = info;
            info.published_ms = clock.now_ms();
            let mut versions = Vec::with_capacity(self.config.keep);
            versions.push(info.clone());
            if let Some(h) = &base {
                versions.extend(h.record.versions.iter().take(self.config.keep - 1).cloned());
            }
            let record = HeadRecord {
                format: HEAD_FORMAT,
                name: name.to_string(),
                versions,
            };
            let condition = match &base {
                Some(h) => Condition::Matches(h.version.clone()),
                None => Condition::Absent,
            };
            match self.flip(keys, &record, condition).await {
                Ok(Flip::Landed { ours }) => {
                    info!(
                        snapshot = name,
                        version,
                        attempts = attempts.made(),
                        conflicts,
                        build_ms,
                        bytes = info.size,
                        "published"
                    );
                    self.metrics
                        .bytes_published
                        .fetch_add(info.size, Ordering::Relaxed);
                    self.metrics.bytes_last.store(info.size, Ordering::Relaxed);
                    if ours {
                        self.prune(keys, base.as_ref(), &record).await;
                    }
                    return Ok(PublishOutcome::Published(Published {
                        info,
                        attempts: attempts.made(),
                        conflicts,
                    }));
                }
                Ok(Flip::Lost(err)) => {
                    conflicts += 1;
                    inc(&self.metrics.conflicts);
                    // Our body can never be committed now: remove it.
                    self.delete_body(&info.body_key).await;
                    let winner = self.read_head(keys).await?;
                    if may_supersede && let Some(w) = &winner {
                        let cur = w.record.current();
                        if cur.build_started_ms >= started_ms {
                            info!(
                                snapshot = name,
                                ours = version,
                                by = cur.version,
                                "superseded by a build at least as fresh"
                            );
                            return Ok(PublishOutcome::Superseded {
                                by: cur.version,
                                attempts: attempts.made(),
                                conflicts,
                            });
                        }
                    }
                    if !attempts.backoff().await {
                        warn!(
                            snapshot = name,
                            attempts = attempts.made(),
                            "giving up after repeated conflicts"
                        );
                        return Err(SnapshotError::Conflict {
                            name: name.to_string(),
                            attempts: attempts.made(),
                            conflicts,
                            last: err,
                        });
                    }
                    warn!(
                        snapshot = name,
                        attempt = attempts.made(),
                        "conflict with an older build; rebuilding"
                    );
                    // The head may have moved again while we slept: the next attempt reads it afresh.
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes an immutable body with `If-None-Match: *`.
    async fn write_body(&self, info: &VersionInfo, body: Bytes) -> SResult<()> {
        let mut metadata = Metadata::new();
        metadata.insert(META_VERSION.into(), info.version.to_string());
        metadata.insert(META_BUILD_STARTED.into(), info.build_started_ms.to_string());
        metadata.insert(META_PUBLISH_ID.into(), info.publish_id.clone());
        if let Some(from) = info.rolled_back_from {
            metadata.insert(META_ROLLED_BACK_FROM.into(), from.to_string());
        }
        let opts = PutOptions::if_absent().with_metadata(metadata);
        let mut lost = false;
        for _ in 0..self.config.policy.max_attempts.max(2) {
            let r = self
                .config
                .policy
                .run(|| self.store.put(&info.body_key, body.clone(), opts.clone()))
                .await;
            match r {
                Ok(_) => return Ok(()),
                // The key is ours alone (it carries our random publish id): after a
                // lost response, "already exists" means our write landed.
                Err(Error::Conflict { .. }) if lost => return Ok(()),
                Err(Error::Ambiguous { .. }) => lost = true,
                Err(e) => return Err(e.into()),
            }
        }
        Err(SnapshotError::Store(Error::Ambiguous {
            key: info.body_key.clone(),
            message: "repeated lost responses while writing a snapshot body".into(),
        }))
    }

    /// Flips the head: the commit point. Resolves lost responses by re-reading.
    async fn flip(&self, keys: &Keys, record: &HeadRecord, condition: Condition) -> SResult<Flip> {
        let ours = record.current();
        let body = Bytes::from(
            serde_json::to_vec(record)
                .map_err(|e| SnapshotError::Store(Error::other("encoding a head record", e)))?,
        );
        let opts = PutOptions {
            condition,
            metadata: record.metadata(),
            expires_at: None,
        };
        for _ in 0..self.config.policy.max_attempts.max(2) {
            let r = self
                .config
                .policy
                .run(|| self.store.put(&keys.head, body.clone(), opts.clone()))
                .await;
            match r {
                Ok(_) => return Ok(Flip::Landed { ours: true }),
                Err(e @ Error::Conflict { .. }) => return Ok(Flip::Lost(e)),
                Err(Error::Ambiguous { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            // The response was lost: did our head land?
            let now = self.read_head(keys).await?;
            let Some(now) = now else {
                // Nothing there: our create did not land (we only create when absent).
                if opts.condition == Condition::Absent {
                    continue;
                }
                return Err(SnapshotError::Ambiguous {
                    name: keys.name.clone(),
                    version: ours.version,
                });
            };
            let cur = now.record.current();
            if cur.version < ours.version {
                // The head has not moved past our base: our write did not land; send it again.
                continue;
            }
            match now
                .record
                .versions
                .iter()
                .find(|i| i.version == ours.version)
            {
                Some(i) if i.publish_id == ours.publish_id => {
                    return Ok(Flip::Landed {
                        ours: cur.publish_id == ours.publish_id,
                    });
                }
                Some(_) => {
                    return Ok(Flip::Lost(Error::conflict(
                        &keys.head,
                        opts.condition.clone(),
                        Some(now.version),
                    )));
                }
                None => {
                    return Err(SnapshotError::Ambiguous {
                        name: keys.name.clone(),
                        version: ours.version,
                    });
                }
            }
        }
        Err(SnapshotError::Ambiguous {
            name: keys.name.clone(),
            version: ours.version,
        })
    }

    async fn delete_body(&self, key: &str) {
        match self.store.delete(key, Condition::Any).await {
            Ok(()) => inc(&self.metrics.pruned),
            Err(e) => {
                inc(&self.metrics.prune_errors);
                debug!(key, error = %e, "could not delete a snapshot body; a later publish will");
            }
        }
    }

    /// After our head landed: delete bodies that fell out of the window, and
    /// orphans that can never be committed. Best effort.
    async fn prune(&self, keys: &Keys, base: Option<&Head>, record: &HeadRecord) {
        let kept: HashSet<&str> = record
            .versions
            .iter()
            .map(|i| i.body_key.as_str())
            .collect();
        if let Some(base) = base {
            for old in &base.record.versions {
                if !kept.contains(old.body_key.as_str()) {
                    self.delete_body(&old.body_key).await;
                }
            }
        }
        let current = record.current().version;
        let listed = match crate::store::list_all(self.store.as_ref(), &keys.bodies).await {
            Ok(l) => l,
            Err(e) => {
                inc(&self.metrics.prune_errors);
                debug!(snapshot = keys.name, error = %e, "could not list snapshot bodies for pruning");
                return;
            }
        };
        for entry in listed {
            if kept.contains(entry.key.as_str()) {
                continue;
            }
            match keys.body_version(&entry.key) {
                Some(n) if n <= current => self.delete_body(&entry.key).await,
                _ => {}
            }
        }
    }
}

/// Checks that a body is the one the head names.
fn check_body(keys: &Keys, info: &VersionInfo, obj: &Object) -> SResult<()> {
    let md = &obj.meta.metadata;
    let version = md.get(META_VERSION).and_then(|s| s.parse::<u64>().ok());
    let id = md.get(META_PUBLISH_ID);
    if version != Some(info.version) || id.map(String::as_str) != Some(info.publish_id.as_str()) {
        return Err(keys.corrupt(
            &info.body_key,
            format!(
                "the body's metadata names version {version:?} / publish {id:?}, the head names {} / {}",
                info.version, info.publish_id
            ),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------

/// Counters of a [`SnapshotReader`].
#[derive(Debug, Default)]
pub struct ReaderMetrics {
    /// Freshness checks sent to the store.
    pub checks: AtomicU64,
    /// Checks answered "unchanged" (no body transferred).
    pub unchanged: AtomicU64,
    /// Bodies downloaded.
    pub downloads: AtomicU64,
    /// Bytes of bodies downloaded.
    pub bytes_downloaded: AtomicU64,
    /// Checks that failed.
    pub errors: AtomicU64,
    /// Answers served from a cache whose last check failed.
    pub stale_served: AtomicU64,
    /// JSON parses (by [`JsonSnapshotReader`]).
    pub parses: AtomicU64,
}

impl ReaderMetrics {
    /// The counters as a name → value map.
    pub fn to_map(&self) -> BTreeMap<&'static str, u64> {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BTreeMap::from([
            ("checks", g(&self.checks)),
            ("unchanged", g(&self.unchanged)),
            ("downloads", g(&self.downloads)),
            ("bytes_downloaded", g(&self.bytes_downloaded)),
            ("errors", g(&self.errors)),
            ("stale_served", g(&self.stale_served)),
            ("parses", g(&self.parses)),
        ])
    }
}

/// A value served from a reader's cache.
#[derive(Debug, Clone)]
pub struct Served<T> {
    /// The value (shared; cloning is cheap).
    pub value: Arc<T>,
    /// The snapshot version it comes from.
    pub version: u64,
    /// Time since the store last confirmed this was the latest version.
    pub age: Duration,
    /// Set when the last check failed (the store is unavailable): the value
    /// is the last good one, possibly out of date; this is why.
    pub stale: Option<Arc<SnapshotError>>,
}

impl<T> Served<T> {
    /// Whether the last check failed and this may be out of date.
    pub fn is_stale(&self) -> bool {
        self.stale.is_some()
    }
}

#[derive(Debug)]
struct Cached {
    snapshot: Arc<Snapshot>,
    /// The store version of the head this snapshot was read from.
    head_version: Version,
    /// When the store last confirmed it current.
    verified: SystemTime,
}

#[derive(Debug, Default)]
struct ReaderState {
    current: Option<Cached>,
    /// When the last check finished (successful or not).
    checked: Option<SystemTime>,
    /// The last check's error, if it failed.
    error: Option<Arc<SnapshotError>>,
    /// Checks started / finished (a check that started after a caller arrived answers it).
    started: u64,
    finished: u64,
}

/// An in-process cache of a snapshot's latest version; see the module docs.
///
/// Share one reader (in an `Arc`) per process and name: callers within one
/// check interval are answered from memory; callers that find it stale share
/// one refresh.
#[derive(Debug)]
pub struct SnapshotReader {
    store: DynStore,
    keys: Keys,
    clock: DynClock,
    interval: Duration,
    state: Mutex<ReaderState>,
    refresh: tokio::sync::Mutex<()>,
    metrics: ReaderMetrics,
}

impl SnapshotReader {
    /// A reader of snapshot `name` under `prefix` in `store`, checking at most once per `interval`.
    pub fn new(
        store: DynStore,
        prefix: &str,
        name: &str,
        clock: DynClock,
        interval: Duration,
    ) -> SResult<Self> {
        Ok(SnapshotReader {
            store,
            keys: Keys::new(prefix.trim_end_matches('/'), name)?,
            clock,
            interval,
            state: Mutex::new(ReaderState::default()),
            refresh: tokio::sync::Mutex::new(()),
            metrics: ReaderMetrics::default(),
        })
    }

    /// The snapshot name.
    pub fn name(&self) -> &str {
        &self.keys.name
    }

    /// The reader's counters.
    pub fn metrics(&self) -> &ReaderMetrics {
        &self.metrics
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ReaderState> {
        // Every update of the state is a few plain assignments: poisoning cannot
        // leave it half-written in a harmful way.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The latest snapshot, from memory if checked within the interval, else
    /// after one (shared) conditional check. Serves the last good snapshot,
    /// marked [`Served::stale`], when the store fails.
    pub async fn latest(&self) -> SResult<Served<Snapshot>> {
        self.get(false).await
    }

    /// Like [`SnapshotReader::latest`], but checks the store now (still shared
    /// with concurrent callers: one check that starts after this call answers all of them).
    pub async fn refresh(&self) -> SResult<Served<Snapshot>> {
        self.get(true).await
    }

    /// The answer from the state, if it is recent enough (`None`: check).
    fn answer(
        &self,
        st: &ReaderState,
        force: bool,
        arrived: u64,
    ) -> Option<SResult<Served<Snapshot>>> {
        let now = self.clock.now();
        let answered = st.finished > arrived;
        let recent = !force
            && st
                .checked
                .map(|c| now.duration_since(c).unwrap_or_default() < self.interval)
                .unwrap_or(false);
        if !(answered || recent) {
            return None;
        }
        match (&st.current, &st.error) {
            (Some(c), err) => {
                if err.is_some() {
                    inc(&self.metrics.stale_served);
                }
                Some(Ok(Served {
                    value: c.snapshot.clone(),
                    version: c.snapshot.info.version,
                    age: now.duration_since(c.verified).unwrap_or_default(),
                    stale: err.clone(),
                }))
            }
            (None, Some(e)) => Some(Err(share(e))),
            (None, None) => None,
        }
    }

    async fn get(&self, force: bool) -> SResult<Served<Snapshot>> {
        let arrived = {
            let st = self.state();
            if !force && let Some(a) = self.answer(&st, false, u64::MAX) {
                return a;
            }
            st.started
        };
        let _flight = self.refresh.lock().await;
        {
            let mut st = self.state();
            if let Some(a) = self.answer(&st, force, arrived) {
                return a;
            }
            st.started += 1;
        }
        let result = self.check().await;
        let mut st = self.state();
        st.finished = st.started;
        st.checked = Some(self.clock.now());
        match result {
            Ok(Some(fresh)) => {
                st.current = Some(fresh);
                st.error = None;
            }
            Ok(None) => {
                if let Some(c) = st.current.as_mut() {
                    c.verified = self.clock.now();
                }
                st.error = None;
            }
            Err(e) => {
                inc(&self.metrics.errors);
                warn!(snapshot = self.keys.name, error = %e, "snapshot check failed; serving the last good version if any");
                st.error = Some(Arc::new(e));
            }
        }
        match self.answer(&st, force, arrived) {
            Some(a) => a,
            // Unreachable: a check just finished, so it answers us.
            None => Err(SnapshotError::NotFound {
                name: self.keys.name.clone(),
            }),
        }
    }

    /// One freshness check: `Ok(None)` if unchanged, `Ok(Some)` with a new snapshot.
    async fn check(&self) -> SResult<Option<Cached>> {
        let known = {
            let st = self.state();
            st.current
                .as_ref()
                .map(|c| (c.head_version.clone(), c.snapshot.clone()))
        };
        inc(&self.metrics.checks);
        // Old bodies may be pruned between reading the head and the body: re-read then.
        for round in 0..3 {
            let head_obj = match (&known, round) {
                (Some((v, _)), 0) => match self.store.get_if_changed(&self.keys.head, v).await {
                    Ok(Fetch::Unchanged) => {
                        inc(&self.metrics.unchanged);
                        return Ok(None);
                    }
                    Ok(Fetch::Changed(o)) => o,
                    Err(e) => return Err(self.not_found_or(e)),
                },
                _ => self
                    .store
                    .get(&self.keys.head)
                    .await
                    .map_err(|e| self.not_found_or(e))?,
            };
            let record = HeadRecord::parse(&self.keys, &head_obj)?;
            let info = record.current().clone();
            if let Some((_, snap)) = &known
                && snap.info == info
            {
                // The head was rewritten without a new version (cannot happen
                // with this module's writers, but cheap to allow).
                return Ok(Some(Cached {
                    snapshot: snap.clone(),
                    head_version: head_obj.meta.version,
                    verified: self.clock.now(),
                }));
            }
            let body = match self.store.get(&info.body_key).await {
                Ok(o) => o,
                Err(Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            check_body(&self.keys, &info, &body)?;
            inc(&self.metrics.downloads);
            self.metrics
                .bytes_downloaded
                .fetch_add(body.body.len() as u64, Ordering::Relaxed);
            debug!(
                snapshot = self.keys.name,
                version = info.version,
                "downloaded a new snapshot version"
            );
            return Ok(Some(Cached {
                snapshot: Arc::new(Snapshot {
                    name: self.keys.name.clone(),
                    info,
                    body: body.body,
                }),
                head_version: head_obj.meta.version,
                verified: self.clock.now(),
            }));
        }
        Err(SnapshotError::Store(Error::Unavailable {
            message: format!(
                "snapshot '{}' kept changing while being read",
                self.keys.name
            ),
            source: None,
        }))
    }

    fn not_found_or(&self, e: Error) -> SnapshotError {
        match e {
            Error::NotFound { .. } => SnapshotError::NotFound {
                name: self.keys.name.clone(),
            },
            e => e.into(),
        }
    }
}

/// The error to hand to every caller of one failed refresh.
fn share(e: &Arc<SnapshotError>) -> SnapshotError {
    match e.as_ref() {
        SnapshotError::NotFound { name } => SnapshotError::NotFound { name: name.clone() },
        _ => SnapshotError::Shared(e.clone()),
    }
}

/// A [`SnapshotReader`] that parses the body as JSON into `T`, once per version.
#[derive(Debug)]
pub struct JsonSnapshotReader<T> {
    reader: SnapshotReader,
    parsed: tokio::sync::Mutex<Option<(u64, String, Arc<T>)>>,
    _t: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned + Send + Sync> JsonSnapshotReader<T> {
    /// Wraps a reader.
    pub fn new(reader: SnapshotReader) -> Self {
        JsonSnapshotReader {
            reader,
            parsed: tokio::sync::Mutex::new(None),
            _t: PhantomData,
        }
    }

    /// The underlying byte reader (its metrics count parses too).
    pub fn reader(&self) -> &SnapshotReader {
        &self.reader
    }

    /// The latest value: parsed once per version and shared.
    pub async fn latest(&self) -> SResult<Served<T>> {
        let s = self.reader.latest().await?;
        self.parse(s).await
    }

    /// Like [`JsonSnapshotReader::latest`], checking the store now.
    pub async fn refresh(&self) -> SResult<Served<T>> {
        let s = self.reader.refresh().await?;
        self.parse(s).await
    }

    async fn parse(&self, s: Served<Snapshot>) -> SResult<Served<T>> {
        let mut parsed = self.parsed.lock().await;
        let value = match &*parsed {
            Some((v, id, value)) if *v == s.version && *id == s.value.info.publish_id => {
                value.clone()
            }
            _ => {
                let value: Arc<T> =
                    Arc::new(serde_json::from_slice(&s.value.body).map_err(|source| {
                        SnapshotError::Decode {
                            name: self.reader.keys.name.clone(),
                            version: s.version,
                            source,
                        }
                    })?);
                inc(&self.reader.metrics.parses);
                *parsed = Some((s.version, s.value.info.publish_id.clone(), value.clone()));
                value
            }
        };
        Ok(Served {
            value,
            version: s.version,
            age: s.age,
            stale: s.stale,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["quotes", "quotes-cache.v2", "A_b-9"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "é", &"x".repeat(129)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn body_keys_sort_by_version_and_parse_back() {
        let k = Keys::new("snapshots", "quotes").unwrap();
        assert_eq!(k.head, "snapshots/quotes/head");
        let a = k.body(42, "00ff");
        assert_eq!(a, "snapshots/quotes/v/000000000042-00ff");
        assert_eq!(k.body_version(&a), Some(42));
        assert!(k.body(9, "z") < k.body(10, "a"));
        assert_eq!(k.body_version("snapshots/quotes/head"), None);
        let top = Keys::new("", "q").unwrap();
        assert_eq!(top.head, "q/head");
    }

    #[test]
    fn publish_and_read_futures_are_send() {
        fn assert_send<T: Send>(_: &T) {}
        let store: DynStore = Arc::new(crate::store::memory::MemoryStore::new());
        let s = Snapshots::new(store);
        let publish = s.publish("q", |_| async { Ok(Bytes::new()) });
        assert_send(&publish);
        let rollback = s.rollback("q", 1);
        assert_send(&rollback);
        let reader = s.reader("q").unwrap();
        let latest = reader.latest();
        assert_send(&latest);
    }
}
