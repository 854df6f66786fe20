//! Garbage collection of expired records (leases, idempotency records,
//! sessions), on every backend.
//!
//! Every expiring record carries its expiry as the store's `expires_at`
//! ([`crate::PutOptions::expires_at`]): the time after which its writer says
//! it may be removed. DynamoDB removes such records itself (TTL); the other
//! backends keep them for ever unless something deletes them. A
//! [`Collector`] does, with the same rule as DynamoDB TTL: a record under one
//! of its prefixes is removed once its `expires_at` (plus a grace period for
//! clock skew, [`Collector::with_grace`]) has passed. A record without an
//! `expires_at` is never touched.
//!
//! What each primitive's `expires_at` means, so what collection removes:
//!
//! - a **lease** record: its expiry (or release) plus the lease retention
//!   (a day by default, [`crate::lease::Leases::with_retention`]), late
//!   enough that a later holder's clock-based fencing token is greater;
//! - an **idempotency** record: a completed one when its result expires, an
//!   in-progress one when its claim goes stale (after which it could be taken
//!   over anyway);
//! - a **session** (the HTTP server's): when the token expires.
//!
//! ## Never deleting a record renewed meanwhile
//!
//! For each key the collector reads the record's metadata (a HEAD), and
//! deletes it only with a delete conditional on the version that HEAD
//! returned (`If-Match`). A record renewed, re-acquired or re-claimed
//! between the read and the delete has a new version: the delete fails and
//! the record stays ([`SweepReport::renewed`]).
//!
//! ## Bounded work
//!
//! [`Collector::sweep`] examines at most `budget` records, continuing where
//! the previous sweep of the same collector stopped (a cursor over the
//! prefixes and the store's continuation token), so a background task can
//! run a small sweep every interval and still cover every record in turn.
//! [`Collector::collect_all`] makes one whole pass. Each examined record
//! costs one HEAD, each removed one a conditional DELETE, each page of up to
//! [`Collector::with_page_size`] keys one LIST (a Scan on DynamoDB, where
//! TTL makes collection unnecessary).
//!
//! Counters (through the `metrics` facade, by prefix):
//! `ifmatch_gc_examined_total`, `ifmatch_gc_deleted_total`,
//! `ifmatch_gc_renewed_total`, `ifmatch_gc_errors_total`.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use ifmatch::gc::Collector;
//! use ifmatch::PutOptions;
//!
//! let store = ifmatch::store::open("memory://").await?;
//! // A record that expired in 1970, and one that never expires.
//! store.put("leases/old", "{}".into(), PutOptions::any().with_expiry(Some(1))).await?;
//! store.put("leases/kept", "{}".into(), PutOptions::any()).await?;
//! let report = Collector::new(store.clone()).collect_all().await?;
//! assert_eq!((report.examined, report.deleted), (2, 1));
//! assert!(store.head("leases/kept").await.is_ok());
//! # Ok::<(), ifmatch::Error>(()) }).unwrap();
//! ```

use std::time::{Duration, UNIX_EPOCH};

use tokio::sync::Mutex;

use crate::clock::DynClock;
use crate::error::{Error, Result};
use crate::retry::RetryPolicy;
use crate::store::{Condition, DynStore, ListPage};

/// The default grace period after a record's `expires_at` before it is removed.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(60);

/// The default number of keys listed per request.
pub const DEFAULT_PAGE_SIZE: usize = 500;

/// What one sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Records examined (one HEAD each).
    pub examined: u64,
    /// Expired records removed.
    pub deleted: u64,
    /// Records not yet expired, or without an expiry: left alone.
    pub live: u64,
    /// Expired records that changed between the read and the conditional
    /// delete (renewed, re-acquired, re-claimed; or removed by someone
    /// else): left alone.
    pub renewed: u64,
    /// Records gone before they were examined or deleted (someone else removed them).
    pub gone: u64,
    /// Records that could not be examined or deleted (store errors); tried
    /// again in a later pass.
    pub errors: u64,
    /// Whole passes over every prefix that this sweep completed.
    pub passes: u64,
}

impl SweepReport {
    fn add(&mut self, other: &SweepReport) {
        self.examined += other.examined;
        self.deleted += other.deleted;
        self.live += other.live;
        self.renewed += other.renewed;
        self.gone += other.gone;
        self.errors += other.errors;
        self.passes += other.passes;
    }
}

/// Where the next sweep starts: a prefix, and a continuation token in it.
#[derive(Debug, Default)]
struct Cursor {
    prefix: usize,
    token: Option<String>,
}

/// Removes expired records under some prefixes; see the module docs.
#[derive(Debug)]
pub struct Collector {
    store: DynStore,
    prefixes: Vec<String>,
    grace: Duration,
    page_size: usize,
    retry: RetryPolicy,
    cursor: Mutex<Cursor>,
}

impl Collector {
    /// A collector of the leases (`leases/`) and idempotency records
    /// (`idempotency/`) in `store`, with a [`DEFAULT_GRACE`] grace period.
    pub fn new(store: DynStore) -> Self {
        Collector {
            store,
            prefixes: vec![
                crate::lease::DEFAULT_PREFIX.to_string(),
                crate::idempotency::DEFAULT_PREFIX.to_string(),
            ],
            grace: DEFAULT_GRACE,
            page_size: DEFAULT_PAGE_SIZE,
            retry: RetryPolicy::default(),
            cursor: Mutex::default(),
        }
    }

    /// Collects under exactly these prefixes (e.g. those of leases or
    /// idempotency records kept under a custom prefix). Only prefixes whose
    /// records are written by ifmatch's primitives belong here.
    pub fn with_prefixes<I, S>(mut self, prefixes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.prefixes = prefixes.into_iter().map(Into::into).collect();
        self
    }

    /// Collects under one more prefix (such as the HTTP server's `sessions/`).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefixes.push(prefix.into());
        self
    }

    /// How long after its `expires_at` a record is removed (allowance for
    /// writers whose clocks run behind the collector's).
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// How many keys one LIST asks for (at least 1).
    pub fn with_page_size(mut self, page_size: usize) -> Self {
        self.page_size = page_size.max(1);
        self
    }

    /// The retry policy of reads; its clock is the one expiry is judged by.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the clock expiry is judged by (also the retry policy's).
    pub fn with_clock(mut self, clock: DynClock) -> Self {
        self.retry.clock = clock;
        self
    }

    /// The prefixes collected.
    pub fn prefixes(&self) -> &[String] {
        &self.prefixes
    }

    /// Examines at most `budget` records, from where the previous sweep
    /// stopped, and removes the expired ones; stops early after one whole
    /// pass over every prefix. A failed LIST ends the sweep with the error
    /// (the cursor stays, so the next sweep retries that page); a failed
    /// HEAD or DELETE is counted in [`SweepReport::errors`] and skipped.
    pub async fn sweep(&self, budget: usize) -> Result<SweepReport> {
        let mut report = SweepReport::default();
        if self.prefixes.is_empty() {
            return Ok(report);
        }
        let mut cursor = self.cursor.lock().await;
        let mut left = budget;
        let mut prefixes_done = 0;
        while left > 0 && prefixes_done < self.prefixes.len() {
            let prefix = &self.prefixes[cursor.prefix % self.prefixes.len()];
            let page = self
                .retry
                .run(|| {
                    self.store.list(
                        prefix,
                        ListPage {
                            token: cursor.token.clone(),
                            limit: left.min(self.page_size),
                        },
                    )
                })
                .await?;
            for entry in &page.entries {
                self.examine(prefix, &entry.key, &mut report).await;
            }
            left = left.saturating_sub(page.entries.len().max(1));
            match page.next {
                Some(token) => cursor.token = Some(token),
                None => {
                    cursor.token = None;
                    cursor.prefix = (cursor.prefix + 1) % self.prefixes.len();
                    prefixes_done += 1;
                    if cursor.prefix == 0 {
                        report.passes += 1;
                    }
                }
            }
        }
        Ok(report)
    }

    /// One whole pass over every prefix, from the beginning.
    pub async fn collect_all(&self) -> Result<SweepReport> {
        {
            let mut cursor = self.cursor.lock().await;
            *cursor = Cursor::default();
        }
        let mut total = SweepReport::default();
        while total.passes == 0 {
            let r = self.sweep(self.page_size).await?;
            total.add(&r);
        }
        Ok(total)
    }

    /// Examines one record and removes it if it has expired.
    async fn examine(&self, prefix: &str, key: &str, report: &mut SweepReport) {
        report.examined += 1;
        metrics::counter!("ifmatch_gc_examined_total", "prefix" => prefix.to_string()).increment(1);
        let meta = match self.retry.run(|| self.store.head(key)).await {
            Ok(meta) => meta,
            Err(Error::NotFound { .. }) => {
                report.gone += 1;
                return;
            }
            Err(e) => {
                self.error(prefix, key, "read", &e, report);
                return;
            }
        };
        let now = self
            .retry
            .clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let expired = meta
            .expires_at
            .is_some_and(|at| now >= at.saturating_add(self.grace.as_secs()));
        if !expired {
            report.live += 1;
            return;
        }
        match self
            .store
            .delete(key, Condition::Matches(meta.version))
            .await
        {
            Ok(()) => {
                report.deleted += 1;
                metrics::counter!("ifmatch_gc_deleted_total", "prefix" => prefix.to_string())
                    .increment(1);
                tracing::debug!(key, "expired record removed");
            }
            // Renewed (or removed) meanwhile: the conditional delete changed nothing.
            Err(Error::Conflict { .. }) => {
                report.renewed += 1;
                metrics::counter!("ifmatch_gc_renewed_total", "prefix" => prefix.to_string())
                    .increment(1);
            }
            Err(Error::NotFound { .. }) => report.gone += 1,
            Err(e) => self.error(prefix, key, "delete", &e, report),
        }
    }

    fn error(&self, prefix: &str, key: &str, what: &str, e: &Error, report: &mut SweepReport) {
        report.errors += 1;
        metrics::counter!("ifmatch_gc_errors_total", "prefix" => prefix.to_string()).increment(1);
        tracing::warn!(key, error = %e, "garbage collection could not {what} a record");
    }
}
