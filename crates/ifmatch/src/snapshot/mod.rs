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
//! A publish or rollback that must not land twice when repeated (a retry
//! after a lost answer or an [`SnapshotError::Ambiguous`]) takes a
//! caller-chosen request id: [`Snapshots::publish_once`],
//! [`Snapshots::rollback_once`]. The repeat is answered with the version the
//! first request created ([`Published::replayed`]) instead of adding one.
//!
//! ## Storage layout
//!
//! Under a prefix (default `snapshots`), for a snapshot named `NAME`:
//!
//! | key | what | written with |
//! |---|---|---|
//! | `snapshots/NAME/head` | the head record: JSON with the retained versions, newest (current) first: version, body key, size, build start, publish time, publish id, rollback origin, request id; and the last [`REQUEST_HISTORY`] versions created with a request id before those | `If-Match` on the previous head (`If-None-Match: *` for the first): **the commit point** |
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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::clock::{DynClock, SharedRng};
use crate::error::{BoxError, Error, ErrorKind};
use crate::retry::RetryPolicy;
use crate::store::{Metadata, Object, Version};

mod guard;
mod publish;
mod read;

pub use guard::{BuildGuard, GuardTicket, LeaseBuildGuard, StoreBuildGuard};
pub use publish::{BuildContext, PublishOutcome, Published, Snapshots};
pub use read::{JsonSnapshotReader, ReaderMetrics, Served, SnapshotReader};

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

/// How many versions created with a request id the head remembers beyond
/// the retained window (see [`Snapshots::publish_once`]).
pub const REQUEST_HISTORY: usize = 32;

/// The longest request id accepted by [`Snapshots::publish_once`] and [`Snapshots::rollback_once`].
pub const MAX_REQUEST_ID_LEN: usize = 128;

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
    /// The request id is not valid (1–128 printable ASCII characters).
    #[error("invalid snapshot request id {id:?}: {reason}")]
    InvalidRequestId {
        /// The rejected id (at most its first 80 characters).
        id: String,
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
            SnapshotError::InvalidName { .. } | SnapshotError::InvalidRequestId { .. } => {
                ErrorKind::Invalid
            }
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

/// Checks a request id: 1–128 printable ASCII characters.
fn validate_request_id(id: &str) -> SResult<()> {
    if id.is_empty()
        || id.len() > MAX_REQUEST_ID_LEN
        || !id.bytes().all(|b| (0x20..0x7f).contains(&b))
    {
        return Err(SnapshotError::InvalidRequestId {
            id: id.chars().take(80).collect(),
            reason: format!("a request id is 1 to {MAX_REQUEST_ID_LEN} printable ASCII characters"),
        });
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
    /// The caller-chosen request id of the publish or rollback that created
    /// this version ([`Snapshots::publish_once`], [`Snapshots::rollback_once`]),
    /// by which a repeated request is recognised as already landed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
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
    /// Versions created with a request id that fell out of `versions`, newest
    /// first, at most [`REQUEST_HISTORY`]: a repeated request is still
    /// recognised after its version is no longer retained. (Older builds
    /// ignore the field; a head they write forgets these entries.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    requests: Vec<VersionInfo>,
}

impl HeadRecord {
    fn current(&self) -> &VersionInfo {
        // Never empty: `parse` rejects an empty list and `publish` always adds one.
        &self.versions[0]
    }

    /// The retained versions, then the remembered requests: every version this head knows.
    fn known(&self) -> impl Iterator<Item = &VersionInfo> {
        self.versions.iter().chain(&self.requests)
    }

    /// The version that request `id` created, if this head knows it.
    fn created_by(&self, id: &str) -> Option<&VersionInfo> {
        self.known().find(|i| i.request_id.as_deref() == Some(id))
    }

    /// The head that follows this one (`None`: the first) when `info` is
    /// committed, keeping `keep` versions and moving the request ids of the
    /// versions that fall out of the window into the request history.
    fn next(base: Option<&HeadRecord>, name: &str, info: VersionInfo, keep: usize) -> HeadRecord {
        let mut versions = Vec::with_capacity(keep);
        versions.push(info);
        let mut requests = Vec::new();
        if let Some(b) = base {
            let mut older = b.versions.iter().cloned();
            versions.extend(older.by_ref().take(keep.saturating_sub(1)));
            requests.extend(older.filter(|i| i.request_id.is_some()));
            requests.extend(b.requests.iter().cloned());
            requests.truncate(REQUEST_HISTORY);
        }
        HeadRecord {
            format: HEAD_FORMAT,
            name: name.to_string(),
            versions,
            requests,
        }
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
// Configuration and metrics
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
    /// Repeated requests answered with the version their request id created
    /// (not counted in `published`).
    pub replayed: AtomicU64,
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
            ("replayed", g(&self.replayed)),
            ("pruned", g(&self.pruned)),
            ("prune_errors", g(&self.prune_errors)),
        ])
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DynStore;

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
    fn request_ids_outlive_the_retained_window_up_to_the_history() {
        let info = |version: u64, id: Option<&str>| VersionInfo {
            version,
            body_key: format!("b{version}"),
            size: 0,
            build_started_ms: 0,
            published_ms: 0,
            publish_id: format!("p{version}"),
            rolled_back_from: None,
            request_id: id.map(str::to_string),
        };
        let mut head = HeadRecord::next(None, "q", info(1, Some("r1")), 2);
        head = HeadRecord::next(Some(&head), "q", info(2, None), 2);
        head = HeadRecord::next(Some(&head), "q", info(3, Some("r3")), 2);
        // Version 1 left the window (keep 2) but its request id is remembered;
        // version 2 had none.
        let versions = |h: &HeadRecord| h.versions.iter().map(|i| i.version).collect::<Vec<_>>();
        assert_eq!(versions(&head), vec![3, 2]);
        assert_eq!(head.requests.len(), 1);
        assert_eq!(head.created_by("r1").map(|i| i.version), Some(1));
        assert_eq!(head.created_by("r3").map(|i| i.version), Some(3));
        assert_eq!(head.created_by("r2"), None);
        for v in 4..=(REQUEST_HISTORY as u64 + 10) {
            head = HeadRecord::next(Some(&head), "q", info(v, Some(&format!("r{v}"))), 2);
        }
        assert_eq!(head.requests.len(), REQUEST_HISTORY);
        assert_eq!(head.created_by("r1"), None, "the oldest id was forgotten");
        let last = REQUEST_HISTORY as u64 + 10;
        assert!(
            head.created_by(&format!("r{}", last - 1 - REQUEST_HISTORY as u64))
                .is_some()
        );
        // The field is left out when empty, and optional when read.
        let plain = HeadRecord::next(None, "q", info(1, None), 2);
        let json = serde_json::to_string(&plain).unwrap();
        assert!(
            !json.contains("requests") && !json.contains("request_id"),
            "{json}"
        );
        let back: HeadRecord = serde_json::from_str(&json).unwrap();
        assert!(back.requests.is_empty());
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
