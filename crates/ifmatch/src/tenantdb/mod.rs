//! Tenant databases: one SQLite database per tenant, living in a [`Store`](crate::Store),
//! opened by any worker through a local disk cache. Reads never upload; a
//! commit is one conditional write that carries only the pages it changed.
//!
//! ```no_run
//! # async fn demo(store: ifmatch::DynStore) -> Result<(), ifmatch::tenantdb::TenantDbError> {
//! use ifmatch::tenantdb::{TenantDbs, TenantDbsConfig, anki};
//! let dbs = TenantDbs::open(store, TenantDbsConfig::new("cache-dir").with_schema(anki::schema_hook()))?;
//! dbs.write("alice", |tx| {
//!     tx.execute("INSERT INTO notes VALUES (1,'g',1,0,0,'','front\x1fback','front',0,0,'')", [])?;
//!     Ok(())
//! }).await?;
//! let n: i64 = dbs.read("alice", |c| Ok(c.query_row("SELECT count(*) FROM notes", [], |r| r.get(0))?)).await?;
//! # let _ = n; Ok(()) }
//! ```
//!
//! ## Storage format
//!
//! Under `<prefix>/<tenant>/` (prefix `tenants` by default):
//!
//! - `checkpoint/<seq:020>` — a full database image as of `seq` (magic, seq,
//!   page size, the commit records it keeps (see "Idempotent commits"), the
//!   pages, SHA-256). `checkpoint/0…0` is written with
//!   `If-None-Match: *` when the tenant is created: that create is the
//!   creation's commit point, and it is never garbage-collected (it is the
//!   tenant's existence marker, so a stale creator can never fork a tenant).
//! - `log/<seq:020>` — one commit: the pages it changed, the page count after
//!   it, a random writer id, the commit id and result of an idempotent commit
//!   (if any) and a SHA-256. Written with `If-None-Match: *`:
//!   **the create is the commit point**. Exactly one writer can claim the seq
//!   after the head, so commits are totally ordered without any lock.
//! - `head` — JSON `{"checkpoints": [[seq, written_ms], ...], "floor": f}`,
//!   updated with `If-Match`. Readers start from its newest checkpoint; it may
//!   lag (a crash after a checkpoint), which only costs a longer replay.
//!   `floor` is the highest seq whose log entries may have been deleted.
//!
//! The database at seq `n` is checkpoint `c ≤ n` with entries `c+1..=n`
//! applied (each entry writes its pages, then truncates or extends the file
//! to its page count). All workers therefore hold byte-identical files.
//!
//! ## Commits
//!
//! The cached file is a SQLite database in WAL mode. A write opens it with
//! automatic checkpoints off, runs the closure in an immediate transaction
//! and commits; the WAL now holds exactly the pages the transaction changed
//! (nothing at all if it changed nothing: then nothing is uploaded). Those
//! pages become `log/<n+1>`, put with `Condition::Absent`. If it lands, the
//! pages are written into the cached file; if another writer claimed `n+1`
//! first, the WAL is dropped (the cached file is still at `n`), the missing
//! entries are fetched and applied, and **the closure runs again** — so it
//! may run more than once and should only touch the database. Retries follow
//! the [`RetryPolicy`] (full jitter); when it is spent the write fails with
//! [`TenantDbError::Conflict`]. The code is in `commit.rs`.
//!
//! ## Exactly once
//!
//! A commit is applied at most once, and an acknowledged commit is applied
//! exactly once, under errors before a request, lost answers, late delivery
//! (a create that lands after its writer gave up on it), duplicated delivery
//! (a create that lands and then answers 412 to its own writer), S3's 409
//! `ConditionalRequestConflict` (which the S3 backend reports as
//! `Unavailable`: nothing written) and brownouts (a lost answer followed by
//! failing requests of every kind). The argument:
//!
//! - an entry can only ever land at the seq its writer claimed (the seq is
//!   the key), and re-sending the *identical* bytes with `If-None-Match: *`
//!   is idempotent;
//! - so an ambiguous or unanswered create of `log/<n+1>` is settled by
//!   re-sending the same bytes to the same key, with backoff, until an answer
//!   decides: created → ours; `Conflict` → read it back: our bytes → ours
//!   (a duplicated or late delivery of ours), another writer's entry → ours
//!   can never land, and only then does the closure run again;
//! - `Unavailable` (S3's 409 included) proves nothing was written by that
//!   request, so it is always "send again", never "exists";
//! - when the retry budget runs out undecided, the write fails with
//!   [`Error::Ambiguous`] (its [`kind`](TenantDbError::kind) is
//!   `Ambiguous`): the outcome is unknown, and nothing is re-run on a hunch.
//!   The instance remembers the seq and writer id of such a commit and, when
//!   a later catch-up applies that seq, counts whether it landed
//!   ([`TenantDbStats::undecided_landed`]) or lost its seq
//!   ([`TenantDbStats::undecided_lost`]). The cached copy stays at `n` and
//!   simply catches up: a late landing is then applied once, like any entry;
//! - checkpoint uploads, head updates and garbage collection treat
//!   `Unavailable` and lost answers as "try again" too (checkpoints are
//!   claimed like log entries; the head update re-reads and re-applies;
//!   deletes are idempotent).
//!
//! ## Idempotent commits
//!
//! [`TenantDbs::write_once`] (and [`TenantDbs::execute_once`] for SQL
//! batches) commit with a caller's commit id: the log entry carries the id
//! and the JSON of the result. A later call with the same id for the same
//! tenant that finds the commit landed returns the stored result without
//! running anything; one that finds it has not landed commits normally —
//! safe even while the earlier attempt is in flight, because that attempt can
//! only land at the seq it claimed: committing at head+1 either wins that seq
//! (and the earlier attempt can never land) or loses it and, catching up,
//! finds the id. This is what lets an HTTP client that got no answer, or an
//! `Ambiguous` one, retry with the same `Idempotency-Key`.
//!
//! **How long an id is found.** Every cached copy keeps the commit records
//! of the entries it applied, and every checkpoint carries the records of
//! its copy, dropping only those sent more than `R` ago, where `R` is
//! [`TenantDbsConfig::commit_id_retention`] (24 h by default), raised to the
//! GC grace window if that is longer. A reader sees a checkpoint plus the log
//! after it, so an id is found, by every process and from a cold cache, for
//! at least `R` after its commit was sent (by the committing writer's clock;
//! clocks are assumed to agree to within a small fraction of `R`), through
//! any number of checkpoints and collections. After that it may be
//! forgotten, and a call with that id runs again. Results are capped at
//! [`MAX_COMMIT_RESULT_BYTES`]. A commit that changes nothing still lands a
//! page-less entry, so its id is recorded too.
//!
//! ## Checkpoints, off the request path
//!
//! When the commits since the last checkpoint carry page bytes of half the
//! database (or number `checkpoint_every`), the committing writer queues a
//! checkpoint **after the commit landed and before it is acknowledged, but
//! makes no request for it**: a bounded background task per [`TenantDbs`]
//! (at most 256 tenants queued, 2 running) reads `head` (another writer may
//! have checkpointed), copies the image under the tenant's lock (no store
//! request while holding it), uploads `checkpoint/<seq>` (claimed like a log
//! entry), records it in `head` and collects. So a commit's latency holds
//! exactly one store request; checkpoints cost at most about twice what the
//! commits themselves uploaded — amortised O(k) per commit — except where
//! the `checkpoint_every` bound comes first (a large database with tiny
//! commits: N bytes every `checkpoint_every` commits). [`TenantDbs::flush`]
//! waits for the queued work (tests use it instead of sleeping; a process
//! that is about to exit calls it). A crash loses at most a queued
//! checkpoint: the log is intact, the next commit queues it again, and the
//! crash points and crash test cover the commit path as before. The code is
//! in `checkpoint.rs`; background requests are counted apart
//! ([`TenantDbStats::requests_background`]).
//!
//! ## Freshness and garbage collection
//!
//! A cached copy at seq `n` is current when `log/<n+1>` does not exist. A
//! read checks that with one GET that transfers no body when nothing changed
//! (with a maximum staleness, reads within that window of the last check make
//! no request at all). **A write makes no check before committing**: the
//! conditional create of `log/<n+1>` is the check. When it lands, the copy
//! was current; when another writer's entry holds `n+1`, the writer reads it
//! back (that read is the first entry of its catch-up), probes `n+2` and so
//! on, and commits again: a stale cache pays for being stale, a current one
//! pays nothing. A warm write therefore costs one request.
//!
//! Garbage collection deletes log entries `≤ floor` and checkpoints `< floor`
//! (except the creation checkpoint), where `floor` is the newest checkpoint
//! that has been in `head` for at least the grace window (`gc_grace`). The
//! danger without a probe is a copy so old that `log/<n+1>` was collected:
//! its create would then *succeed* at a seq nobody reads again, and the
//! commit would be lost although acknowledged. Why that cannot happen: every
//! copy carries the time `V` at which it was last known current (a probe
//! found `log/<n+1>` absent, or the copy's own create of `log/<n>` was sent
//! at `V`, or a catch-up ended at `V`). For `log/<n+1>` to be collected, a
//! checkpoint `c ≥ n+1` must exist, which needs `log/<n+1>` to have been
//! created after `V`, and `c` must then have been in `head` for a whole grace
//! window: so no collection of `n+1` happens before `V + gc_grace`. A write
//! commits without a check only while `now − V < gc_grace / 2` (and the
//! attempt re-checks that right before sending), so its create reaches the
//! store before `V + gc_grace` as long as it is in flight for less than half
//! a grace window (5 minutes by default; a settling re-send is bounded by the
//! retry deadline, 30 s by default). A copy older than that re-reads `head`
//! first and replays only when no checkpoint is newer than it (else it loads
//! the newest checkpoint). A create that finds `log/<n+1>` existing and then
//! gone was collected under it: the copy is dropped and reloaded, never
//! re-sent. This assumes worker clocks agree to within a fraction of the
//! grace window. A zero grace window (tests) always goes through `head`, but
//! that check and the commit after it are two steps: with **concurrent
//! writers** (separate caches) a collector can delete `log/<n+1>` between
//! them, the commit then claims that seq again and is lost although
//! acknowledged. Zero, or any grace shorter than a check-to-commit round trip,
//! is safe only with one writer at a time.
//!
//! A **cold open** lists the tenant's keys (one request while they fit in a
//! page), then fetches the newest listed checkpoint and every listed entry
//! after it in parallel: two sequential round trips and 2 + tail requests
//! when the listed tail is contiguous (else it replays the rest in parallel
//! windows of up to 16). It does not read `head`: a listed checkpoint is
//! complete (it was created whole, conditionally) whether or not `head`
//! records it yet, and the newest one is not collected until a newer one
//! has aged past the grace window. The copy is current as of the listing,
//! which came after the open began. The code is in `sync.rs`.
//!
//! ## Cache
//!
//! One file per tenant (named by a hash of the tenant id) plus a sidecar with
//! its seq and a hash of every page. A copy is verified page by page on its
//! first use in a process, so a torn or corrupt file (or one left between an
//! upload and its bookkeeping by a crash) is re-fetched, never served. The
//! cache holds at most `cache_budget` bytes, evicting the least recently used
//! tenants first, and drops tenants unused for `cache_max_age`; a tenant in
//! use is never evicted. One [`TenantDbs`] owns a cache directory at a time
//! (an exclusive `flock`).
//!
//! ## Concurrency
//!
//! Within one process, all work on one tenant queues on a per-tenant lock
//! (so writers never conflict with each other locally); different tenants
//! proceed in parallel. SQLite and file work runs on blocking threads.
//!
//! Reads run on a `query_only` connection, and whatever a read might still
//! write lands only in a WAL that is dropped afterwards: a read can never
//! change the cached copy, let alone the stored one. Reads of one tenant
//! queue behind each other too (a read may have to apply the log first).
//!
//! ## Limits
//!
//! A commit may change at most [`TenantDbsConfig::max_commit_bytes`] of
//! pages (64 MiB by default) and a tenant database may grow to at most
//! [`TenantDbsConfig::max_tenant_bytes`] (1 GiB by default). Both are checked
//! after the transaction committed to the local WAL and **before anything is
//! uploaded**: the WAL's frame headers are read first (its pages are not held
//! in memory), so a refused commit costs its disk I/O and nothing else, and
//! fails with [`TenantDbError::LimitExceeded`] naming the limit
//! ([`LimitKind::CommitBytes`], [`LimitKind::TenantBytes`]). A commit that
//! shrinks (or keeps the size of) an oversized database is allowed; an import
//! is held to the quota too.
//!
//! Memory: a commit holds its changed pages about twice (the pages read from
//! the WAL and the encoded log entry), so its peak is O(cap) with a small
//! constant. A checkpoint reads the cached file straight into the record it
//! uploads (one copy of the image, as the store takes whole values); a cold
//! open installs the image from the downloaded record without another copy;
//! an export copies files on disk.
//!
//! A log entry holds the changed pages in one value and a checkpoint the
//! whole image, so the store must accept values that large: `s3://`,
//! `file://` and `memory://` do; `dynamodb://` (400 KB) suits only tiny
//! databases. Checkpoints are uncompressed.
//!
//! ## Metrics
//!
//! [`TenantDbs::stats`] returns counters; the same are emitted through the
//! `metrics` facade as `ifmatch_tenantdb_*_total` (requests by `kind`).
//!
//! ## Crash points (tests only)
//!
//! Built with the `failpoints` feature (only the crate's own tests enable
//! it), the environment variable `IFMATCH_CRASH_AT=NAME[@N]` makes the
//! process SIGKILL itself the `N`th time (default the first) it reaches crash
//! point `NAME`, so a test can crash exactly between two steps of a commit:
//!
//! - `tenantdb-commit-landed`: the log entry is in the store (the commit
//!   stands) but the cached copy has not been touched yet;
//! - `tenantdb-pages-applied`: log entries (a commit's own, or a catch-up's)
//!   are written into the cached file but its sidecar still names the old seq.
//!
//! Without the feature the points compile to nothing.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::clock::{DynClock, SharedRng, SystemClock};
use crate::error::{BoxError, Error};
use crate::retry::RetryPolicy;
use crate::store::{Condition, DynStore, PutOptions, Version};

pub mod anki;
#[doc(hidden)]
pub mod format;
mod local;
pub mod sandbox;

use format::{Checkpoint, Sidecar};
use local::Paths;
pub use sandbox::{BatchResult, LimitKind, Sandbox, SqlStatement, StatementResult};

/// Result alias of this module.
pub type Result<T, E = TenantDbError> = std::result::Result<T, E>;

/// A schema hook: creates a new tenant's tables (runs once per tenant, in a transaction).
pub type SchemaHook = Arc<dyn Fn(&rusqlite::Transaction<'_>) -> rusqlite::Result<()> + Send + Sync>;

/// Why a tenant database operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TenantDbError {
    /// The tenant has no database (reads do not create one; writes do).
    #[error("tenant '{tenant}' has no database")]
    NotFound {
        /// The tenant id.
        tenant: String,
    },
    /// An import without `force` found the tenant already there.
    #[error("tenant '{tenant}' already has a database")]
    Exists {
        /// The tenant id.
        tenant: String,
    },
    /// Other writers kept winning until the retry budget ran out.
    #[error(
        "conflict on tenant '{tenant}': gave up after {attempts} attempts ({conflicts} conflicts)"
    )]
    Conflict {
        /// The tenant id.
        tenant: String,
        /// Attempts made.
        attempts: u32,
        /// Conflicts among them.
        conflicts: u32,
    },
    /// SQLite refused a statement; the message is SQLite's.
    #[error("SQL error: {message}")]
    Sql {
        /// SQLite's message.
        message: String,
        /// The rusqlite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The closure panicked; the transaction was rolled back and nothing was uploaded.
    #[error("the closure panicked: {0}")]
    Panicked(String),
    /// The closure returned its own error; the transaction was rolled back.
    #[error("aborted by the closure: {0}")]
    Aborted(#[source] BoxError),
    /// A stored record or a cached file is not what it should be.
    #[error("corrupt {what}: {message}")]
    Corrupt {
        /// Which record or file.
        what: String,
        /// What is wrong.
        message: String,
    },
    /// The local cache could not be read or written.
    #[error("cache I/O failed while {message}: {source}")]
    Io {
        /// What was being done.
        message: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Another [`TenantDbs`] holds the cache directory.
    #[error("the cache directory is in use by another TenantDbs")]
    CacheInUse,
    /// A request that is not valid (an empty batch, a parameter of the wrong shape).
    #[error("{0}")]
    InvalidInput(String),
    /// The [`Sandbox`] refused a statement (it would touch files or the connection).
    #[error("refused: {message}")]
    Denied {
        /// What was refused, and why.
        message: String,
    },
    /// A batch ran into one of the [`Sandbox`]'s limits; nothing was committed.
    #[error("{limit} exceeded: {message}")]
    LimitExceeded {
        /// Which limit.
        limit: LimitKind,
        /// What happened.
        message: String,
    },
    /// The store failed (or a tenant id is not a valid key).
    #[error(transparent)]
    Store(#[from] Error),
}

impl From<rusqlite::Error> for TenantDbError {
    fn from(e: rusqlite::Error) -> Self {
        TenantDbError::Sql {
            message: e.to_string(),
            source: e,
        }
    }
}

impl TenantDbError {
    /// The classification, for exit codes and HTTP statuses.
    pub fn kind(&self) -> crate::ErrorKind {
        use crate::ErrorKind as K;
        match self {
            TenantDbError::NotFound { .. } => K::NotFound,
            TenantDbError::Exists { .. } | TenantDbError::Conflict { .. } => K::Conflict,
            TenantDbError::Sql { .. }
            | TenantDbError::InvalidInput(_)
            | TenantDbError::Denied { .. } => K::Invalid,
            TenantDbError::LimitExceeded { .. } => K::TooLarge,
            TenantDbError::Store(e) => e.kind(),
            _ => K::Other,
        }
    }
}

/// Settings of a [`TenantDbs`].
#[derive(Clone)]
pub struct TenantDbsConfig {
    /// The local cache directory (created if missing).
    pub cache_dir: PathBuf,
    /// The most bytes the cache keeps (default 1.5 GiB).
    pub cache_budget: u64,
    /// Tenants unused for this long are dropped from the cache (default 24 h).
    pub cache_max_age: Duration,
    /// How stale a read may be without asking the store (default zero: always check).
    pub max_staleness: Duration,
    /// The most commits between two checkpoints (default 1000); a checkpoint
    /// also comes as soon as the commits since the last one carry as many
    /// page bytes as the database holds.
    pub checkpoint_every: u64,
    /// How long superseded log entries and checkpoints are kept (default 10 min).
    /// Zero is for single-writer tests only: with concurrent writers it can
    /// lose acknowledged commits (see "Freshness and garbage collection").
    pub gc_grace: Duration,
    /// Key prefix in the store (default `tenants`).
    pub prefix: String,
    /// Creates a new tenant's schema (default: no tables).
    pub schema: SchemaHook,
    /// Retry budget for conflicts and transient store errors.
    pub retry: RetryPolicy,
    /// The most page bytes one commit may change (default 64 MiB); a larger
    /// commit fails with [`TenantDbError::LimitExceeded`] before anything is
    /// uploaded. A commit's peak memory is a small multiple of this.
    pub max_commit_bytes: u64,
    /// The most bytes a tenant database may grow to (default 1 GiB); a commit
    /// or import past it fails with [`TenantDbError::LimitExceeded`] before
    /// anything is uploaded (a commit that shrinks an oversized database is allowed).
    pub max_tenant_bytes: u64,
    /// How long the id of an idempotent commit ([`TenantDbs::write_once`])
    /// is kept after it landed (default 24 h; never less than `gc_grace`).
    pub commit_id_retention: Duration,
    /// The clock for freshness, cache ages and grace windows.
    pub clock: DynClock,
}

impl std::fmt::Debug for TenantDbsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantDbsConfig")
            .field("cache_dir", &self.cache_dir)
            .field("cache_budget", &self.cache_budget)
            .field("cache_max_age", &self.cache_max_age)
            .field("max_staleness", &self.max_staleness)
            .field("checkpoint_every", &self.checkpoint_every)
            .field("gc_grace", &self.gc_grace)
            .field("prefix", &self.prefix)
            .field("commit_id_retention", &self.commit_id_retention)
            .field("max_commit_bytes", &self.max_commit_bytes)
            .field("max_tenant_bytes", &self.max_tenant_bytes)
            .finish_non_exhaustive()
    }
}

/// The default cache budget: 1.5 GiB.
pub const DEFAULT_CACHE_BUDGET: u64 = 1536 * 1024 * 1024;

/// The default cap on the page bytes one commit may change: 64 MiB.
pub const DEFAULT_MAX_COMMIT_BYTES: u64 = 64 * 1024 * 1024;

/// The default quota of one tenant database: 1 GiB.
pub const DEFAULT_MAX_TENANT_BYTES: u64 = 1024 * 1024 * 1024;

/// The largest serialized result an idempotent commit stores (1 MiB).
pub const MAX_COMMIT_RESULT_BYTES: usize = 1024 * 1024;

/// How long commit ids are kept by default (24 h).
pub const DEFAULT_COMMIT_ID_RETENTION: Duration = Duration::from_secs(24 * 3600);

impl TenantDbsConfig {
    /// Defaults with the given cache directory.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        TenantDbsConfig {
            cache_dir: cache_dir.into(),
            cache_budget: DEFAULT_CACHE_BUDGET,
            cache_max_age: Duration::from_secs(24 * 3600),
            max_staleness: Duration::ZERO,
            checkpoint_every: 1000,
            gc_grace: Duration::from_secs(600),
            prefix: "tenants".into(),
            schema: Arc::new(|_| Ok(())),
            retry: RetryPolicy::default(),
            commit_id_retention: DEFAULT_COMMIT_ID_RETENTION,
            max_commit_bytes: DEFAULT_MAX_COMMIT_BYTES,
            max_tenant_bytes: DEFAULT_MAX_TENANT_BYTES,
            clock: SystemClock::shared(),
        }
    }
    /// Sets the cache byte budget.
    pub fn with_cache_budget(mut self, bytes: u64) -> Self {
        self.cache_budget = bytes;
        self
    }
    /// Sets the cache's maximum age (since last use).
    pub fn with_cache_max_age(mut self, age: Duration) -> Self {
        self.cache_max_age = age;
        self
    }
    /// Sets the maximum staleness of reads.
    pub fn with_max_staleness(mut self, d: Duration) -> Self {
        self.max_staleness = d;
        self
    }
    /// Sets the most commits between checkpoints (at least 1).
    pub fn with_checkpoint_every(mut self, n: u64) -> Self {
        self.checkpoint_every = n.max(1);
        self
    }
    /// Sets the garbage-collection grace window (see [`TenantDbsConfig::gc_grace`]:
    /// not zero when several workers write the same tenant).
    pub fn with_gc_grace(mut self, d: Duration) -> Self {
        self.gc_grace = d;
        self
    }
    /// Sets the key prefix.
    pub fn with_prefix(mut self, p: impl Into<String>) -> Self {
        self.prefix = p.into();
        self
    }
    /// Sets the schema hook.
    pub fn with_schema(mut self, hook: SchemaHook) -> Self {
        self.schema = hook;
        self
    }
    /// Sets the retry policy.
    pub fn with_retry(mut self, r: RetryPolicy) -> Self {
        self.retry = r;
        self
    }
    /// Sets the clock.
    pub fn with_clock(mut self, c: DynClock) -> Self {
        self.clock = c;
        self
    }
    /// Sets the cap on one commit's page bytes (see [`TenantDbsConfig::max_commit_bytes`]).
    pub fn with_max_commit_bytes(mut self, bytes: u64) -> Self {
        self.max_commit_bytes = bytes;
        self
    }
    /// Sets the quota of one tenant database (see [`TenantDbsConfig::max_tenant_bytes`]).
    pub fn with_max_tenant_bytes(mut self, bytes: u64) -> Self {
        self.max_tenant_bytes = bytes;
        self
    }
    /// Sets how long commit ids are kept (see [`TenantDbsConfig::commit_id_retention`]).
    pub fn with_commit_id_retention(mut self, d: Duration) -> Self {
        self.commit_id_retention = d;
        self
    }
}

/// Counters of a [`TenantDbs`] (a snapshot).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TenantDbStats {
    /// Opens served from the local cache.
    pub cache_hits: u64,
    /// Opens that downloaded a checkpoint.
    pub cache_misses: u64,
    /// Tenants evicted from the cache.
    pub evictions: u64,
    /// Commits that lost to another writer.
    pub conflicts: u64,
    /// Closure re-runs (after a conflict or a transient failure).
    pub retries: u64,
    /// Commits published.
    pub commits: u64,
    /// Checkpoints uploaded.
    pub checkpoints: u64,
    /// Bytes uploaded.
    pub bytes_up: u64,
    /// Bytes downloaded.
    pub bytes_down: u64,
    /// GET requests.
    pub requests_get: u64,
    /// PUT requests.
    pub requests_put: u64,
    /// DELETE requests.
    pub requests_delete: u64,
    /// LIST requests.
    pub requests_list: u64,
    /// Of all requests, those made by background work (checkpoints, head
    /// updates, garbage collection): never inside a caller's latency.
    pub requests_background: u64,
    /// Idempotent commits answered from a stored result, without running.
    pub replays: u64,
    /// Commits whose outcome stayed unknown (reported as `Ambiguous`).
    pub undecided: u64,
    /// Of those, the ones later seen to have landed.
    pub undecided_landed: u64,
    /// Of those, the ones later seen to have lost their seq to another writer.
    pub undecided_lost: u64,
}

#[derive(Debug, Default)]
struct Counters {
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    evictions: AtomicU64,
    conflicts: AtomicU64,
    retries: AtomicU64,
    commits: AtomicU64,
    checkpoints: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    requests_get: AtomicU64,
    requests_put: AtomicU64,
    requests_delete: AtomicU64,
    requests_list: AtomicU64,
    requests_background: AtomicU64,
    replays: AtomicU64,
    undecided: AtomicU64,
    undecided_landed: AtomicU64,
    undecided_lost: AtomicU64,
}

macro_rules! bump {
    ($c:expr, $field:ident, $n:expr) => {{
        let n: u64 = $n;
        $c.$field.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        metrics::counter!(concat!("ifmatch_tenantdb_", stringify!($field), "_total")).increment(n);
    }};
}

// After the macro, so that the submodules can use it.
mod checkpoint;
mod commit;
mod sync;

use sync::Fresh;

fn request(c: &Counters, kind: &'static str) {
    if checkpoint::in_background() {
        c.requests_background.fetch_add(1, Ordering::Relaxed);
    }
    let a = match kind {
        "get" => &c.requests_get,
        "put" => &c.requests_put,
        "delete" => &c.requests_delete,
        _ => &c.requests_list,
    };
    a.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("ifmatch_tenantdb_requests_total", "kind" => kind).increment(1);
}

/// What [`TenantDbs::info`] reports about one tenant's cached copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantInfo {
    /// The sequence number of the copy.
    pub seq: u64,
    /// The page size in bytes.
    pub page_size: u32,
    /// The number of pages.
    pub pages: u64,
    /// The database size in bytes.
    pub bytes: u64,
}

/// The rows of [`TenantDbs::query`], every value rendered as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueryResult {
    /// Column names.
    pub columns: Vec<String>,
    /// Rows (`NULL`, numbers, text, and blobs as `x'hex'`).
    pub rows: Vec<Vec<String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Head {
    checkpoints: Vec<(u64, u64)>,
    floor: u64,
}

impl Head {
    fn newest(&self) -> u64 {
        self.checkpoints.iter().map(|c| c.0).max().unwrap_or(0)
    }
}

type TenantLock = Arc<tokio::sync::Mutex<Option<Sidecar>>>;

#[derive(Debug)]
struct Slot {
    lock: TenantLock,
    users: usize,
    last_used_ms: u64,
    bytes: u64,
}

type FileLock = Arc<Mutex<()>>;

fn hold(l: &FileLock) -> std::sync::MutexGuard<'_, ()> {
    l.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug)]
struct Inner {
    files: Mutex<HashMap<String, FileLock>>,
    store: DynStore,
    cfg: TenantDbsConfig,
    counters: Counters,
    slots: Mutex<HashMap<String, Slot>>,
    rng: SharedRng,
    /// Commits of ours whose outcome stayed unknown: tenant → (seq, writer id).
    undecided: Mutex<HashMap<String, Vec<(u64, u64)>>>,
    /// Background checkpoints.
    bg: Arc<checkpoint::Background>,
    _lock_file: File,
}

impl Inner {
    fn file_lock(&self, stem: &str) -> FileLock {
        let mut m = self.files.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(stem.to_string()).or_default().clone()
    }
}

/// A handle on the tenant databases of one store, with a local cache. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TenantDbs {
    inner: Arc<Inner>,
}

/// Holds a tenant's slot in use (never evicted) until dropped.
struct InUse {
    inner: Arc<Inner>,
    stem: String,
    lock: TenantLock,
}

impl Drop for InUse {
    fn drop(&mut self) {
        let now = self.inner.cfg.clock.now_ms();
        let mut slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = slots.get_mut(&self.stem) {
            s.users = s.users.saturating_sub(1);
            s.last_used_ms = now;
        }
    }
}

fn blocking_err(e: tokio::task::JoinError) -> TenantDbError {
    TenantDbError::Panicked(format!("blocking task failed: {e}"))
}

async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f).await.map_err(blocking_err)?
}

fn corrupt(what: String, e: format::FormatError) -> TenantDbError {
    TenantDbError::Corrupt { what, message: e.0 }
}

impl TenantDbs {
    /// Opens the tenant databases of `store` with a cache in `cfg.cache_dir`.
    ///
    /// Cached copies left by an earlier process are kept and re-validated on first use.
    pub fn open(store: DynStore, cfg: TenantDbsConfig) -> Result<TenantDbs> {
        fs::create_dir_all(&cfg.cache_dir)
            .map_err(|e| local::io("creating the cache directory", e))?;
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(cfg.cache_dir.join(".lock"))
            .map_err(|e| local::io("opening the cache lock", e))?;
        // SAFETY: flock on a valid, owned file descriptor.
        let rc = unsafe { libc::flock(lock_file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(TenantDbError::CacheInUse);
        }
        let mut slots = HashMap::new();
        let entries =
            fs::read_dir(&cfg.cache_dir).map_err(|e| local::io("listing the cache", e))?;
        let entries: Vec<fs::DirEntry> = entries.flatten().collect();
        let names: std::collections::HashSet<String> = entries
            .iter()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        for entry in &entries {
            let name = entry.file_name().to_string_lossy().to_string();
            // Leftovers of a crash: temporary files, and databases without a sidecar.
            let orphan = name
                .strip_suffix(".db")
                .is_some_and(|stem| !names.contains(&format!("{stem}.meta")));
            if name.ends_with(".tmp")
                || name.contains(".new.")
                || name.contains(".import.")
                || orphan
            {
                if let Err(e) = fs::remove_file(entry.path()) {
                    tracing::warn!(file = %name, error = %e, "could not remove a cache leftover");
                }
                continue;
            }
            let Some(stem) = name.strip_suffix(".meta") else {
                continue;
            };
            let paths = Paths::new(&cfg.cache_dir, stem);
            let last_used_ms = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            slots.insert(
                stem.to_string(),
                Slot {
                    lock: Arc::new(tokio::sync::Mutex::new(None)),
                    users: 0,
                    last_used_ms,
                    bytes: paths.bytes(),
                },
            );
        }
        Ok(TenantDbs {
            inner: Arc::new(Inner {
                store,
                rng: cfg.retry.rng.clone(),
                cfg,
                counters: Counters::default(),
                files: Mutex::new(HashMap::new()),
                slots: Mutex::new(slots),
                undecided: Mutex::new(HashMap::new()),
                bg: Arc::default(),
                _lock_file: lock_file,
            }),
        })
    }

    /// The counters so far.
    pub fn stats(&self) -> TenantDbStats {
        let c = &self.inner.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TenantDbStats {
            cache_hits: g(&c.cache_hits),
            cache_misses: g(&c.cache_misses),
            evictions: g(&c.evictions),
            conflicts: g(&c.conflicts),
            retries: g(&c.retries),
            commits: g(&c.commits),
            checkpoints: g(&c.checkpoints),
            bytes_up: g(&c.bytes_up),
            bytes_down: g(&c.bytes_down),
            requests_get: g(&c.requests_get),
            requests_put: g(&c.requests_put),
            requests_delete: g(&c.requests_delete),
            requests_list: g(&c.requests_list),
            requests_background: g(&c.requests_background),
            replays: g(&c.replays),
            undecided: g(&c.undecided),
            undecided_landed: g(&c.undecided_landed),
            undecided_lost: g(&c.undecided_lost),
        }
    }

    /// Waits until the background work queued so far (checkpoints, head
    /// updates, garbage collection) is done. Work runs on the runtime this
    /// handle was used on; drop the last handle only after `flush`, or a job
    /// still running keeps the cache directory locked until it ends.
    pub async fn flush(&self) {
        self.wait_idle().await;
    }

    /// The bytes the cache holds now.
    pub fn cache_bytes(&self) -> u64 {
        let slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.values().map(|s| s.bytes).sum()
    }

    /// Whether a tenant currently has a copy in the cache.
    pub fn is_cached(&self, tenant: &str) -> bool {
        let slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.contains_key(&local::stem(tenant))
    }

    /// Runs `f` on a read-only connection to the tenant's current database.
    /// Never uploads. [`TenantDbError::NotFound`] if the tenant has no database.
    pub async fn read<T, F>(&self, tenant: &str, f: F) -> Result<T>
    where
        F: FnOnce(&rusqlite::Connection) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let use_ = self.enter(tenant)?;
        let mut local = use_.lock.clone().lock_owned().await;
        let res = async {
            if !self.ensure_current(tenant, &mut local, Fresh::Read).await? {
                return Err(TenantDbError::NotFound {
                    tenant: tenant.to_string(),
                });
            }
            let (paths, files) = self.paths_locked(tenant);
            blocking(move || {
                let _g = hold(&files);
                local::run_read(&paths, f)
            })
            .await
        }
        .await;
        self.finish(tenant, &mut local, &res);
        drop(local);
        drop(use_);
        self.evict().await;
        res
    }

    /// Runs `f` in a transaction on the tenant's database and commits it to the
    /// store (creating the tenant with the schema hook if it has no database).
    ///
    /// **`f` may run more than once**: when another writer commits first, the
    /// local state is dropped, the winner's changes are applied and `f` runs
    /// again on the new state. A closure that changes nothing uploads nothing;
    /// a closure that fails or panics rolls back and uploads nothing.
    ///
    /// The closure never runs again once its commit may have landed: when the
    /// outcome cannot be settled within the retry budget, the write fails with
    /// an error whose [`kind`](TenantDbError::kind) is `Ambiguous` (see
    /// "Exactly once" in the module docs, and [`TenantDbs::write_once`] for
    /// commits that a retry can settle).
    pub async fn write<T, F>(&self, tenant: &str, f: F) -> Result<T>
    where
        F: FnMut(&rusqlite::Transaction<'_>) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.write_inner(tenant, f, None).await
    }

    /// Like [`TenantDbs::write`], but idempotent under `commit_id`: the log
    /// entry of the commit carries `commit_id` and the JSON of the closure's
    /// result, and a later call with the same id for the same tenant that finds
    /// that commit landed returns the stored result **without running `f`**.
    /// One that finds it has not landed commits normally.
    ///
    /// This is safe while an earlier attempt with the same id is still in
    /// flight: that attempt can only land at the seq it claimed, so this call
    /// either wins that seq (and the earlier attempt can never land) or loses
    /// it, catches up and finds the id. A caller that got `Ambiguous` (or no
    /// answer at all) therefore retries with the same id and gets the original
    /// outcome, never a second application.
    ///
    /// How long an id is found: see "Idempotent commits" in the module docs
    /// ([`TenantDbsConfig::commit_id_retention`], 24 h by default, and never
    /// less than the GC grace window), in every process and from a cold cache.
    /// A commit that changes nothing still lands a (page-less) entry, so its
    /// id is recorded too. The serialized result may be at most
    /// [`MAX_COMMIT_RESULT_BYTES`]; a larger one fails before anything is
    /// uploaded. `commit_id` must be 1 to 200 bytes.
    pub async fn write_once<T, F>(&self, tenant: &str, commit_id: &str, f: F) -> Result<T>
    where
        F: FnMut(&rusqlite::Transaction<'_>) -> Result<T> + Send + 'static,
        T: Serialize + serde::de::DeserializeOwned + Send + 'static,
    {
        if commit_id.is_empty() || commit_id.len() > 200 {
            return Err(TenantDbError::InvalidInput(format!(
                "a commit id must be 1 to 200 bytes, not {}",
                commit_id.len()
            )));
        }
        let once = commit::Once {
            id: commit_id.to_string(),
            encode: |v: &T| serde_json::to_vec(v),
            decode: |b: &[u8]| serde_json::from_slice(b),
        };
        self.write_inner(tenant, f, Some(once)).await
    }

    /// Writes a standalone SQLite file of the tenant's current database to
    /// `dest` (rollback-journal mode; the `sqlite3` shell opens it and
    /// `PRAGMA integrity_check` passes).
    pub async fn export(&self, tenant: &str, dest: impl AsRef<Path>) -> Result<()> {
        let dest = dest.as_ref().to_path_buf();
        let use_ = self.enter(tenant)?;
        let mut local = use_.lock.clone().lock_owned().await;
        let res = async {
            if !self.ensure_current(tenant, &mut local, Fresh::Read).await? {
                return Err(TenantDbError::NotFound {
                    tenant: tenant.to_string(),
                });
            }
            let (paths, files) = self.paths_locked(tenant);
            blocking(move || {
                let _g = hold(&files);
                local::export_to(&paths, &dest)
            })
            .await
        }
        .await;
        self.finish(tenant, &mut local, &res);
        drop(local);
        drop(use_);
        self.evict().await;
        res
    }

    /// Creates a tenant from a SQLite file (integrity-checked first). Without
    /// `force` only if the tenant has no database ([`TenantDbError::Exists`]
    /// otherwise); with `force` an existing database is replaced by one commit
    /// of the pages that differ.
    pub async fn import(&self, tenant: &str, src: impl AsRef<Path>, force: bool) -> Result<()> {
        let src = src.as_ref().to_path_buf();
        let dir = self.inner.cfg.cache_dir.clone();
        let stem = local::stem(tenant);
        let use_ = self.enter(tenant)?;
        let mut local = use_.lock.clone().lock_owned().await;
        let res = async {
            let (_, files) = self.paths_locked(tenant);
            let (page_size, image) = blocking(move || {
                let _g = hold(&files);
                local::import_image(&dir, &stem, &src)
            })
            .await?;
            self.import_locked(tenant, &mut local, page_size, image, force)
                .await
        }
        .await;
        self.finish(tenant, &mut local, &res);
        drop(local);
        drop(use_);
        self.evict().await;
        res
    }

    /// Runs one read-only SQL statement and returns its rows as text.
    pub async fn query(&self, tenant: &str, sql: &str) -> Result<QueryResult> {
        let sql = sql.to_string();
        self.read(tenant, move |c| {
            let mut st = c.prepare(&sql)?;
            let columns: Vec<String> = st.column_names().iter().map(|s| s.to_string()).collect();
            let n = columns.len();
            let mut rows = Vec::new();
            let mut q = st.query([])?;
            while let Some(r) = q.next()? {
                let mut row = Vec::with_capacity(n);
                for i in 0..n {
                    use rusqlite::types::ValueRef;
                    row.push(match r.get_ref(i)? {
                        ValueRef::Null => "NULL".to_string(),
                        ValueRef::Integer(v) => v.to_string(),
                        ValueRef::Real(v) => v.to_string(),
                        ValueRef::Text(t) => String::from_utf8_lossy(t).to_string(),
                        ValueRef::Blob(b) => {
                            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                            format!("x'{hex}'")
                        }
                    });
                }
                rows.push(row);
            }
            Ok(QueryResult { columns, rows })
        })
        .await
    }

    /// Runs a batch of untrusted SQL statements against the tenant's database
    /// inside `sandbox`, as one transaction; see [`sandbox`].
    ///
    /// A batch of read-only statements goes through [`TenantDbs::read`] and
    /// never uploads (for a tenant without a database, it runs on the empty
    /// database the schema hook makes, and does not create the tenant); any
    /// other batch goes through [`TenantDbs::write`], so it is re-run on a conflict.
    pub async fn execute(
        &self,
        tenant: &str,
        statements: Vec<SqlStatement>,
        sandbox: &Sandbox,
    ) -> Result<BatchResult> {
        self.execute_with(tenant, statements, sandbox, None).await
    }

    /// [`TenantDbs::execute`] with an idempotent commit: a batch that writes is
    /// committed through [`TenantDbs::write_once`] under `commit_id`, so a
    /// retry with the same id returns the original results without running the
    /// batch again. A read-only batch commits nothing and simply runs again.
    pub async fn execute_once(
        &self,
        tenant: &str,
        statements: Vec<SqlStatement>,
        sandbox: &Sandbox,
        commit_id: &str,
    ) -> Result<BatchResult> {
        self.execute_with(tenant, statements, sandbox, Some(commit_id))
            .await
    }

    async fn execute_with(
        &self,
        tenant: &str,
        statements: Vec<SqlStatement>,
        sandbox: &Sandbox,
        commit_id: Option<&str>,
    ) -> Result<BatchResult> {
        sandbox::check_batch(&statements, sandbox)?;
        let deadline = std::time::Instant::now() + sandbox.time_limit;
        let statements = Arc::new(statements);
        let sb = Arc::new(sandbox.clone());
        let read_only = {
            let (st, sb) = (statements.clone(), sb.clone());
            self.read(tenant, move |c| {
                if sandbox::all_read_only(c, &st, &sb, deadline)? {
                    sandbox::run_batch(c, &st, &sb, deadline).map(Some)
                } else {
                    Ok(None)
                }
            })
            .await
        };
        let read_only = match read_only {
            Err(TenantDbError::NotFound { .. }) => {
                let (st, sb) = (statements.clone(), sb.clone());
                let schema = self.inner.cfg.schema.clone();
                blocking(move || {
                    let mut c = rusqlite::Connection::open_in_memory()?;
                    let tx = c.transaction()?;
                    schema(&tx)?;
                    tx.commit()?;
                    c.execute_batch("PRAGMA query_only=ON;")?;
                    if sandbox::all_read_only(&c, &st, &sb, deadline)? {
                        sandbox::run_batch(&c, &st, &sb, deadline).map(Some)
                    } else {
                        Ok(None)
                    }
                })
                .await?
            }
            other => other?,
        };
        if let Some(results) = read_only {
            return Ok(BatchResult {
                read_only: true,
                results,
            });
        }
        let run = move |tx: &rusqlite::Transaction<'_>| {
            sandbox::run_batch(tx, &statements, &sb, deadline)
        };
        let results = match commit_id {
            Some(id) => self.write_once(tenant, id, run).await?,
            None => self.write(tenant, run).await?,
        };
        Ok(BatchResult {
            read_only: false,
            results,
        })
    }

    /// The seq and size of the tenant's current database.
    pub async fn info(&self, tenant: &str) -> Result<TenantInfo> {
        let use_ = self.enter(tenant)?;
        let mut local = use_.lock.clone().lock_owned().await;
        let res = async {
            if !self.ensure_current(tenant, &mut local, Fresh::Read).await? {
                return Err(TenantDbError::NotFound {
                    tenant: tenant.to_string(),
                });
            }
            let sc = local.as_ref().ok_or_else(|| TenantDbError::NotFound {
                tenant: tenant.to_string(),
            })?;
            Ok(TenantInfo {
                seq: sc.seq,
                page_size: sc.page_size,
                pages: sc.hashes.len() as u64,
                bytes: sc.hashes.len() as u64 * sc.page_size as u64,
            })
        }
        .await;
        self.finish(tenant, &mut local, &res);
        res
    }

    // ---- internals -------------------------------------------------------

    fn key(&self, tenant: &str, rest: &str) -> String {
        format!("{}/{tenant}/{rest}", self.inner.cfg.prefix)
    }
    fn log_key(&self, tenant: &str, seq: u64) -> String {
        self.key(tenant, &format!("log/{seq:020}"))
    }
    fn ckp_key(&self, tenant: &str, seq: u64) -> String {
        self.key(tenant, &format!("checkpoint/{seq:020}"))
    }
    /// The tenant's cache files and the lock that every blocking task on them
    /// holds: a cancelled operation's blocking task may still be running when
    /// the next operation starts, and must finish first.
    fn paths_locked(&self, tenant: &str) -> (Paths, FileLock) {
        let stem = local::stem(tenant);
        let paths = Paths::new(&self.inner.cfg.cache_dir, &stem);
        (paths, self.inner.file_lock(&stem))
    }

    /// Validates the tenant id and marks its slot in use.
    fn enter(&self, tenant: &str) -> Result<InUse> {
        crate::key::validate_key(&self.key(tenant, "head"))?;
        // Keeps one tenant's keys from nesting inside another's: tenant `a`
        // keeps `a/head`, `a/log/<seq>` and `a/checkpoint/<seq>`, so a nested
        // tenant `a/log` (or `a/head/..`) would land among them. Only a later
        // segment can do that; a first segment can be any name (a user
        // called `log` still gets a database).
        if tenant
            .split('/')
            .skip(1)
            .any(|s| s == "log" || s == "checkpoint" || s == "head")
        {
            return Err(Error::InvalidKey {
                key: tenant.chars().take(80).collect(),
                reason: "a nested tenant id may not have a 'log', 'checkpoint' or 'head' \
                         segment after its first"
                    .into(),
            }
            .into());
        }
        let stem = local::stem(tenant);
        let now = self.inner.cfg.clock.now_ms();
        let mut slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
        let slot = slots.entry(stem.clone()).or_insert_with(|| Slot {
            lock: Arc::new(tokio::sync::Mutex::new(None)),
            users: 0,
            last_used_ms: now,
            bytes: 0,
        });
        slot.users += 1;
        slot.last_used_ms = now;
        Ok(InUse {
            inner: self.inner.clone(),
            stem,
            lock: slot.lock.clone(),
        })
    }

    /// After an operation: on a local failure drop the cached copy (it is
    /// re-fetched next time); record the slot's size.
    fn finish<T>(&self, tenant: &str, local: &mut Option<Sidecar>, res: &Result<T>) {
        let (paths, files) = self.paths_locked(tenant);
        if matches!(
            res,
            Err(TenantDbError::Io { .. }) | Err(TenantDbError::Corrupt { .. })
        ) {
            *local = None;
            let _g = hold(&files);
            if let Err(e) = paths.remove_all() {
                tracing::warn!(tenant, error = %e, "could not drop a bad cached copy");
            }
        }
        let bytes = paths.bytes();
        let mut slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = slots.get_mut(&local::stem(tenant)) {
            s.bytes = bytes;
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let c = &self.inner.counters;
        let r = self
            .inner
            .cfg
            .retry
            .run(|| async {
                request(c, "get");
                self.inner.store.get(key).await
            })
            .await;
        match r {
            Ok(o) => {
                bump!(c, bytes_down, o.body.len() as u64);
                Ok(Some(o.body))
            }
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// One GET, no retries (the caller has its own loop).
    async fn get_once(&self, key: &str) -> crate::Result<Option<Bytes>> {
        let c = &self.inner.counters;
        request(c, "get");
        match self.inner.store.get(key).await {
            Ok(o) => {
                bump!(c, bytes_down, o.body.len() as u64);
                Ok(Some(o.body))
            }
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Commit records sent at or before this time are dropped from copies and checkpoints.
    fn records_keep_after(&self) -> u64 {
        let cfg = &self.inner.cfg;
        let keep = cfg.commit_id_retention.max(cfg.gc_grace).as_millis() as u64;
        cfg.clock.now_ms().saturating_sub(keep)
    }

    async fn get_versioned(&self, key: &str) -> Result<Option<(Bytes, Version)>> {
        let c = &self.inner.counters;
        let r = self
            .inner
            .cfg
            .retry
            .run(|| async {
                request(c, "get");
                self.inner.store.get(key).await
            })
            .await;
        match r {
            Ok(o) => {
                bump!(c, bytes_down, o.body.len() as u64);
                let v = o.meta.version.clone();
                Ok(Some((o.body, v)))
            }
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn put(&self, key: &str, body: Bytes, cond: Condition) -> crate::Result<Version> {
        let c = &self.inner.counters;
        request(c, "put");
        bump!(c, bytes_up, body.len() as u64);
        let opts = PutOptions {
            condition: cond,
            ..PutOptions::default()
        };
        self.inner.store.put(key, body, opts).await
    }

    /// Evicts tenants past the maximum age, then least recently used ones
    /// while the cache is over budget. Tenants in use are skipped.
    async fn evict(&self) {
        let inner = self.inner.clone();
        let r = blocking(move || {
            let now = inner.cfg.clock.now_ms();
            let max_age = inner.cfg.cache_max_age.as_millis() as u64;
            let mut slots = inner.slots.lock().unwrap_or_else(|e| e.into_inner());
            let mut total: u64 = slots.values().map(|s| s.bytes).sum();
            let mut order: Vec<(u64, String)> = slots
                .iter()
                .filter(|(_, s)| s.users == 0)
                .map(|(k, s)| (s.last_used_ms, k.clone()))
                .collect();
            order.sort();
            for (last, stem) in order {
                let too_old = now.saturating_sub(last) > max_age;
                if !too_old && total <= inner.cfg.cache_budget {
                    continue;
                }
                let Some(slot) = slots.get(&stem) else {
                    continue;
                };
                let Ok(mut guard) = slot.lock.try_lock() else {
                    continue;
                };
                let files = inner.file_lock(&stem);
                let Ok(_g) = files.try_lock() else {
                    continue;
                };
                Paths::new(&inner.cfg.cache_dir, &stem).remove_all()?;
                *guard = None;
                drop(guard);
                total = total.saturating_sub(slot.bytes);
                slots.remove(&stem);
                bump!(inner.counters, evictions, 1);
            }
            Ok(())
        })
        .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "cache eviction failed");
        }
    }
}

/// A test-only crash point; see "Crash points" in the module docs.
#[cfg(feature = "failpoints")]
pub(crate) fn crash_point(name: &str) {
    static HITS: AtomicU64 = AtomicU64::new(0);
    let Ok(spec) = std::env::var("IFMATCH_CRASH_AT") else {
        return;
    };
    let (want, nth) = match spec.split_once('@') {
        Some((n, k)) => (n, k.parse::<u64>().unwrap_or(1)),
        None => (spec.as_str(), 1),
    };
    if want == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == nth {
        // SAFETY: sends a signal to our own process; nothing is borrowed.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// Without the `failpoints` feature a crash point is nothing.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn crash_point(_name: &str) {}
