//! The settings of a [`TenantDbs`](super::TenantDbs): [`TenantDbsConfig`],
//! its builders and the default limits.
//!
//! A config is plain data: building one makes no request and touches no
//! file; [`TenantDbs::open`](super::TenantDbs::open) takes it as it is (the
//! builders only clamp `checkpoint_every` to at least 1).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[cfg(doc)]
use super::{TenantDbError, TenantDbs};
use crate::clock::{DynClock, SystemClock};
use crate::retry::RetryPolicy;

/// A schema hook: creates a new tenant's tables (runs once per tenant, in a transaction).
pub type SchemaHook = Arc<dyn Fn(&rusqlite::Transaction<'_>) -> rusqlite::Result<()> + Send + Sync>;

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
