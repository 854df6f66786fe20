//! What an operation costs in store requests (issue 14): a warm write is one
//! request when nothing else writes, with checkpoints in the background; a
//! stale cache pays the conflict and its catch-up; a cold open is two
//! sequential round trips and 2 + tail requests (one listing of the
//! tenant's keys, then the checkpoint and the tail).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use ifmatch::store::memory::MemoryStore;
use ifmatch::store::{
    Condition, Fetch, ListPage, ListResult, Object, ObjectMeta, PutOptions, Store, Version,
};
use ifmatch::tenantdb::TenantDbs;
use ifmatch::{DynStore, Result};

use crate::suite::{TempDir, add_note, config, note_ids};

/// Records when each request starts and ends, on one event clock, to find
/// the longest chain of requests that had to wait for each other.
#[derive(Debug)]
struct RoundTrips {
    inner: DynStore,
    clock: AtomicU64,
    spans: Mutex<Vec<(u64, u64)>>,
}

impl RoundTrips {
    fn new(inner: DynStore) -> Arc<RoundTrips> {
        Arc::new(RoundTrips {
            inner,
            clock: AtomicU64::new(0),
            spans: Mutex::new(Vec::new()),
        })
    }
    async fn timed<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        let start = self.clock.fetch_add(1, Ordering::SeqCst);
        // Let requests sent together all start before any ends.
        tokio::task::yield_now().await;
        let out = f.await;
        let end = self.clock.fetch_add(1, Ordering::SeqCst);
        self.spans.lock().unwrap().push((start, end));
        out
    }
    /// Requests and sequential round trips since the last call.
    fn take(&self) -> (usize, usize) {
        let mut spans = std::mem::take(&mut *self.spans.lock().unwrap());
        spans.sort();
        let mut depth = vec![1usize; spans.len()];
        for i in 0..spans.len() {
            for j in 0..i {
                if spans[j].1 < spans[i].0 {
                    depth[i] = depth[i].max(depth[j] + 1);
                }
            }
        }
        (spans.len(), depth.into_iter().max().unwrap_or(0))
    }
}

#[async_trait]
impl Store for RoundTrips {
    fn describe(&self) -> String {
        format!("round-trips({})", self.inner.describe())
    }
    async fn get(&self, key: &str) -> Result<Object> {
        self.timed(self.inner.get(key)).await
    }
    async fn get_if_changed(&self, key: &str, known: &Version) -> Result<Fetch> {
        self.timed(self.inner.get_if_changed(key, known)).await
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.timed(self.inner.head(key)).await
    }
    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> Result<Version> {
        self.timed(self.inner.put(key, body, opts)).await
    }
    async fn delete(&self, key: &str, condition: Condition) -> Result<()> {
        self.timed(self.inner.delete(key, condition)).await
    }
    async fn list(&self, prefix: &str, page: ListPage) -> Result<ListResult> {
        self.timed(self.inner.list(prefix, page)).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_writes_cost_one_request_and_cold_opens_two_round_trips() {
    let rt = RoundTrips::new(Arc::new(MemoryStore::new()));
    let (d1, d2, d3) = (
        TempDir::new("tdb-cost-a"),
        TempDir::new("tdb-cost-b"),
        TempDir::new("tdb-cost-c"),
    );
    let a = TenantDbs::open(rt.clone(), config(&d1)).expect("open");
    add_note(&a, "c", 1).await;
    a.flush().await;
    rt.take();
    // Warm writes: one conditional create each; checkpoints run after the
    // acknowledgement and are counted apart.
    let before = a.stats();
    for id in 2..=11 {
        add_note(&a, "c", id).await;
        let (requests, trips) = rt.take();
        // Background requests of a checkpoint may overlap; the write's own is one.
        assert!(requests >= 1 && trips >= 1);
        a.flush().await;
        rt.take();
    }
    let after = a.stats();
    let total = |s: &ifmatch::tenantdb::TenantDbStats| {
        s.requests_get + s.requests_put + s.requests_delete + s.requests_list
    };
    let foreground =
        (total(&after) - total(&before)) - (after.requests_background - before.requests_background);
    assert_eq!(foreground, 10, "one request per warm write");
    assert!(
        after.checkpoints > before.checkpoints,
        "checkpoints ran, in the background"
    );
    // A stale cache pays only when it is stale: another instance commits, and
    // the next write here conflicts once, catches up and lands.
    let b = TenantDbs::open(rt.clone(), config(&d2)).expect("open b");
    add_note(&b, "c", 100).await;
    b.flush().await;
    a.flush().await;
    rt.take();
    let s0 = a.stats();
    add_note(&a, "c", 101).await;
    let s1 = a.stats();
    let fg = (total(&s1) - total(&s0)) - (s1.requests_background - s0.requests_background);
    assert_eq!(s1.conflicts - s0.conflicts, 1);
    // The losing create, its read-back (which is the first catch-up entry),
    // one probe past it, and the winning create.
    assert_eq!(fg, 4, "a stale write");
    a.flush().await;
    rt.take();
    // A cold open: one listing, then the checkpoint and the tail.
    let tail = tail_after_newest_checkpoint(&*rt.inner, "c").await;
    let c = TenantDbs::open(rt.clone(), config(&d3)).expect("open c");
    let ids = note_ids(&c, "c").await;
    assert_eq!(ids.len(), 13);
    let (requests, trips) = rt.take();
    println!("cold open: {requests} requests in {trips} sequential round trips, tail {tail}");
    assert_eq!(trips, 2, "cold open round trips");
    assert_eq!(
        requests,
        2 + tail,
        "a listing, the checkpoint and each tail entry"
    );
    for d in [&a, &b, &c] {
        d.flush().await;
    }
}

/// The log entries of `tenant` after its newest checkpoint, as stored.
async fn tail_after_newest_checkpoint(store: &dyn Store, tenant: &str) -> usize {
    let keys = ifmatch::store::list_all(store, "").await.expect("list");
    let seqs = |kind: &str| -> Vec<u64> {
        let part = format!("/{tenant}/{kind}/");
        keys.iter()
            .filter_map(|e| Some(e.key.split_once(&part)?.1.parse().expect("a seq")))
            .collect()
    };
    let newest = seqs("checkpoint").into_iter().max().expect("a checkpoint");
    seqs("log").into_iter().filter(|s| *s > newest).count()
}
