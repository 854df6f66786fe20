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
//! (an exclusive `flock`). The code is in `cache.rs`.
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
//! The code is in `stats.rs`; the settings are in `config.rs` and the errors
//! in `error.rs`.
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
use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::clock::SharedRng;
use crate::error::Error;
#[cfg(doc)]
use crate::retry::RetryPolicy;
use crate::store::{Condition, DynStore, PutOptions, Version};

// First, so that every module after it can use the `bump!` macro.
#[macro_use]
mod stats;

pub mod anki;
mod cache;
mod config;
mod error;
#[doc(hidden)]
pub mod format;
mod local;
pub mod sandbox;

mod checkpoint;
mod commit;
mod sync;

use cache::{FileLock, Slot, hold};
pub use config::{
    DEFAULT_CACHE_BUDGET, DEFAULT_COMMIT_ID_RETENTION, DEFAULT_MAX_COMMIT_BYTES,
    DEFAULT_MAX_TENANT_BYTES, MAX_COMMIT_RESULT_BYTES, SchemaHook, TenantDbsConfig,
};
pub use error::TenantDbError;
use format::Checkpoint;
pub use sandbox::{BatchResult, LimitKind, Sandbox, SqlStatement, StatementResult};
pub use stats::TenantDbStats;
use stats::{Counters, request};
use sync::Fresh;

/// Result alias of this module.
pub type Result<T, E = TenantDbError> = std::result::Result<T, E>;

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

/// A handle on the tenant databases of one store, with a local cache. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TenantDbs {
    inner: Arc<Inner>,
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
    /// Waits until the background work queued so far (checkpoints, head
    /// updates, garbage collection) is done. Work runs on the runtime this
    /// handle was used on; drop the last handle only after `flush`, or a job
    /// still running keeps the cache directory locked until it ends.
    pub async fn flush(&self) {
        self.wait_idle().await;
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
}

/// A test-only crash point; see "Crash points" in the module docs.
#[cfg(feature = "failpoints")]
pub(crate) fn crash_point(name: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
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
