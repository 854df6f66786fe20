//! The counters of a [`TenantDbs`](super::TenantDbs): the live atomic
//! [`Counters`], the [`TenantDbStats`] snapshot, and the `bump!` macro and
//! [`request`] helper that count (and emit through the `metrics` facade as
//! `ifmatch_tenantdb_*_total`) every event and store request.
//!
//! Counting is relaxed and never blocks: a snapshot is a consistent value of
//! each counter, not of all of them at one instant.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::{TenantDbs, checkpoint};

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
pub(super) struct Counters {
    pub(super) cache_hits: AtomicU64,
    pub(super) cache_misses: AtomicU64,
    pub(super) evictions: AtomicU64,
    pub(super) conflicts: AtomicU64,
    pub(super) retries: AtomicU64,
    pub(super) commits: AtomicU64,
    pub(super) checkpoints: AtomicU64,
    pub(super) bytes_up: AtomicU64,
    pub(super) bytes_down: AtomicU64,
    pub(super) requests_get: AtomicU64,
    pub(super) requests_put: AtomicU64,
    pub(super) requests_delete: AtomicU64,
    pub(super) requests_list: AtomicU64,
    pub(super) requests_background: AtomicU64,
    pub(super) replays: AtomicU64,
    pub(super) undecided: AtomicU64,
    pub(super) undecided_landed: AtomicU64,
    pub(super) undecided_lost: AtomicU64,
}

macro_rules! bump {
    ($c:expr, $field:ident, $n:expr) => {{
        let n: u64 = $n;
        $c.$field.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        metrics::counter!(concat!("ifmatch_tenantdb_", stringify!($field), "_total")).increment(n);
    }};
}

pub(super) fn request(c: &Counters, kind: &'static str) {
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

impl TenantDbs {
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
}
