//! Group commit (`ifmatch::update::Updater`): concurrent updates of one key
//! in one process land as one conditional write each batch, each caller gets
//! its own result, a failing closure fails only its caller, a conflict with
//! another process re-applies the whole batch, caller-chosen write ids are
//! found again after replays, batches never outgrow the metadata budget, and
//! a batch starts from the object the previous one landed (no read).
//!
//! A [`Gated`] store holds every put until the test lets it through, so a
//! test can queue updates behind a write in flight deterministically.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use ifmatch::clock::{SharedRng, SystemClock};
use ifmatch::key::MAX_METADATA_BYTES;
use ifmatch::retry::RetryPolicy;
use ifmatch::store::intercept;
use ifmatch::store::memory::MemoryStore;
use ifmatch::store::{DynStore, Metadata, Object, Store};
use ifmatch::update::{
    Decision, MAX_BATCH, META_SEQ, META_WRITE_ID, UpdateError, UpdatedJson, Updater, update_json,
};
use ifmatch::{ErrorKind, PutOptions, Version};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::backends::local_backends;

fn policy() -> RetryPolicy {
    RetryPolicy::default()
        .with_clock(SystemClock::shared())
        .with_rng(SharedRng::seeded(11))
        .with_max_attempts(20)
}

/// A store whose puts wait for a permit; counts gets and puts; can let a rival
/// process (another handle on the inner store) increment the counter just
/// before its put number `rival_at` (counting from 1).
#[derive(Debug)]
struct Gated {
    inner: DynStore,
    gate: Semaphore,
    gets: AtomicU64,
    puts: AtomicU64,
    rival_at: AtomicU64,
}

impl Gated {
    fn new(inner: DynStore) -> Arc<Self> {
        Arc::new(Gated {
            inner,
            gate: Semaphore::new(0),
            gets: AtomicU64::new(0),
            puts: AtomicU64::new(0),
            rival_at: AtomicU64::new(0),
        })
    }
    fn open(&self) {
        self.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    }
}

#[async_trait]
impl intercept::Intercept for Gated {
    fn inner(&self) -> &dyn Store {
        &*self.inner
    }
    async fn get(&self, key: &str) -> ifmatch::Result<Object> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get(key).await
    }
    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> ifmatch::Result<Version> {
        let n = self.puts.fetch_add(1, Ordering::SeqCst) + 1;
        self.gate
            .acquire()
            .await
            .expect("the gate stays open")
            .forget();
        if n == self.rival_at.load(Ordering::SeqCst) {
            update_json(&*self.inner, key, &policy(), |n: Option<u64>| {
                Ok(Some(n.unwrap_or(0) + 1))
            })
            .await
            .expect("the rival's increment");
        }
        self.inner.put(key, body, opts).await
    }
}

/// Lets every spawned task run until it waits.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

fn incr(updater: &Updater, key: &str) -> JoinHandle<Result<UpdatedJson<u64>, UpdateError>> {
    let updater = updater.clone();
    let key = key.to_string();
    tokio::spawn(async move {
        updater
            .update_json(&key, |n: Option<u64>| Ok(Some(n.unwrap_or(0) + 1)))
            .await
    })
}

async fn counter(store: &dyn Store, key: &str) -> u64 {
    serde_json::from_slice(&store.get(key).await.unwrap().body).unwrap()
}

/// Starts one increment and waits until its put is held at the gate.
async fn first_write_in_flight(
    gated: &Arc<Gated>,
    updater: &Updater,
) -> JoinHandle<Result<UpdatedJson<u64>, UpdateError>> {
    let first = incr(updater, "n");
    while gated.puts.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    first
}

#[tokio::test]
async fn updates_queued_behind_a_write_land_in_one_write_each_with_its_own_result() {
    for (name, inner) in local_backends() {
        let gated = Gated::new(inner.clone());
        let updater = Updater::new(gated.clone(), policy());
        let first = first_write_in_flight(&gated, &updater).await;
        let queued: Vec<_> = (0..10).map(|_| incr(&updater, "n")).collect();
        settle().await;
        gated.open();
        assert_eq!(first.await.unwrap().unwrap().value, Some(1), "{name}");
        let mut values = Vec::new();
        for q in queued {
            let r = q.await.unwrap().unwrap();
            assert!(r.updated.changed, "{name}");
            values.push(r.value.unwrap());
        }
        // In arrival order, each caller told the value its own closure made.
        assert_eq!(values, (2..=11).collect::<Vec<u64>>(), "{name}");
        assert_eq!(
            gated.puts.load(Ordering::SeqCst),
            2,
            "{name}: one write per batch"
        );
        assert_eq!(
            gated.gets.load(Ordering::SeqCst),
            1,
            "{name}: the second batch starts from the object the first landed"
        );
        let o = inner.get("n").await.unwrap();
        assert_eq!(o.meta.metadata[META_SEQ], "11", "{name}");
        assert_eq!(
            o.meta.metadata[META_WRITE_ID].split(',').count(),
            10,
            "{name}"
        );
        assert_eq!(counter(&*inner, "n").await, 11, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_on_one_key_end_exact_in_far_fewer_writes() {
    for (name, inner) in local_backends() {
        let gated = Gated::new(inner.clone());
        gated.open();
        let updater = Updater::new(gated.clone(), policy());
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let updater = updater.clone();
                tokio::spawn(async move {
                    for _ in 0..10 {
                        updater
                            .update_json("n", |n: Option<u64>| Ok(Some(n.unwrap_or(0) + 1)))
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(counter(&*inner, "n").await, 640, "{name}");
        let puts = gated.puts.load(Ordering::SeqCst);
        assert!(puts < 640 / 4, "{name}: {puts} writes for 640 changes");
    }
}

#[tokio::test]
async fn a_failing_closure_fails_only_its_own_caller() {
    let inner: DynStore = Arc::new(MemoryStore::new());
    let gated = Gated::new(inner.clone());
    let updater = Updater::new(gated.clone(), policy());
    let first = first_write_in_flight(&gated, &updater).await;
    let a = incr(&updater, "n");
    let b = {
        let updater = updater.clone();
        tokio::spawn(async move {
            updater
                .update_json("n", |_: Option<u64>| Err("b refuses".into()))
                .await
        })
    };
    let c = incr(&updater, "n");
    settle().await;
    gated.open();
    first.await.unwrap().unwrap();
    assert_eq!(a.await.unwrap().unwrap().value, Some(2));
    let e = b.await.unwrap().unwrap_err();
    assert!(matches!(e, UpdateError::Aborted { .. }), "{e}");
    assert!(e.to_string().contains("b refuses"), "{e}");
    // c applied to a's value, as if b had never asked.
    assert_eq!(c.await.unwrap().unwrap().value, Some(3));
    assert_eq!(counter(&*inner, "n").await, 3);
    assert_eq!(gated.puts.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_conflict_with_another_process_re_applies_the_whole_batch() {
    let inner: DynStore = Arc::new(MemoryStore::new());
    let gated = Gated::new(inner.clone());
    let updater = Updater::new(gated.clone(), policy());
    let first = first_write_in_flight(&gated, &updater).await;
    let runs = Arc::new(AtomicU64::new(0));
    let batch: Vec<_> = (0..3)
        .map(|_| {
            let updater = updater.clone();
            let runs = runs.clone();
            tokio::spawn(async move {
                updater
                    .update_json("n", move |n: Option<u64>| {
                        runs.fetch_add(1, Ordering::SeqCst);
                        Ok(Some(n.unwrap_or(0) + 1))
                    })
                    .await
            })
        })
        .collect();
    settle().await;
    // The batch's first write meets a rival increment from another handle.
    gated.rival_at.store(2, Ordering::SeqCst);
    gated.open();
    first.await.unwrap().unwrap();
    let mut values = Vec::new();
    for t in batch {
        let r = t.await.unwrap().unwrap();
        assert_eq!(r.updated.conflicts, 1);
        values.push(r.value.unwrap());
    }
    // 1 (first) + 1 (rival) + the batch of 3, re-applied on the rival's value.
    assert_eq!(values, vec![3, 4, 5]);
    assert_eq!(runs.load(Ordering::SeqCst), 6, "every closure ran twice");
    assert_eq!(counter(&*inner, "n").await, 5);
    assert_eq!(inner.get("n").await.unwrap().meta.metadata[META_SEQ], "5");
}

#[tokio::test]
async fn a_caller_chosen_write_id_is_found_again_in_a_batch() {
    let inner: DynStore = Arc::new(MemoryStore::new());
    let gated = Gated::new(inner.clone());
    gated.open();
    let updater = Updater::new(gated.clone(), policy());
    let plus_one = |n: Option<u64>| Ok(Some(n.unwrap_or(0) + 1));
    let r = updater
        .update_json_with_id("n", "req-1", plus_one)
        .await
        .unwrap();
    assert_eq!((r.value, r.updated.replayed), (Some(1), false));
    // The retry of req-1 queued in a batch with a new change: found, not re-applied.
    let gated2 = Gated::new(inner.clone());
    let updater = Updater::new(gated2.clone(), policy());
    let first = first_write_in_flight(&gated2, &updater).await;
    let retry = {
        let updater = updater.clone();
        tokio::spawn(async move {
            updater
                .update_with_id("n", "req-1", |_| {
                    panic!("a replayed change must not run again")
                })
                .await
        })
    };
    let other = incr(&updater, "n");
    settle().await;
    gated2.open();
    assert_eq!(first.await.unwrap().unwrap().value, Some(2));
    let r = retry.await.unwrap().unwrap();
    assert!(r.replayed);
    assert_eq!(other.await.unwrap().unwrap().value, Some(3));
    assert_eq!(counter(&*inner, "n").await, 3);
    // Bad ids are refused up front.
    let e = updater
        .update_with_id("n", "a,b", |_| Ok(Decision::Keep))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
}

// A batch larger than the history can hold: more changes than MAX_BATCH,
// 32-character ids, and user metadata that leaves room for few of them.
// They land in several writes, each within the metadata budget, every
// change exactly once.
#[tokio::test]
async fn batches_larger_than_the_history_are_split_within_the_metadata_budget() {
    let inner: DynStore = Arc::new(MemoryStore::new());
    let gated = Gated::new(inner.clone());
    let updater = Updater::new(gated.clone(), policy());
    let mut md = Metadata::new();
    md.insert("note".into(), "x".repeat(1200));
    let write = move |md: Metadata| {
        move |cur: Option<&ifmatch::Object>| {
            let n: u64 = cur.map_or(0, |o| serde_json::from_slice(&o.body).unwrap());
            Ok(Decision::Write {
                body: serde_json::to_vec(&(n + 1)).unwrap().into(),
                metadata: md.clone(),
            })
        }
    };
    let first = {
        let updater = updater.clone();
        let f = write(md.clone());
        tokio::spawn(async move { updater.update("n", f).await })
    };
    while gated.puts.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let changes = MAX_BATCH + 36;
    let queued: Vec<_> = (0..changes)
        .map(|i| {
            let updater = updater.clone();
            let f = write(md.clone());
            let id = format!("{i:0>32}");
            tokio::spawn(async move { updater.update_with_id("n", &id, f).await })
        })
        .collect();
    settle().await;
    gated.open();
    first.await.unwrap().unwrap();
    for q in queued {
        assert!(q.await.unwrap().unwrap().changed);
    }
    assert_eq!(counter(&*inner, "n").await, changes as u64 + 1);
    let o = inner.get("n").await.unwrap();
    assert_eq!(o.meta.metadata[META_SEQ], (changes + 1).to_string());
    let size: usize = o.meta.metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
    assert!(size <= MAX_METADATA_BYTES, "{size}");
    let puts = gated.puts.load(Ordering::SeqCst) as usize;
    // 1200 bytes of user metadata leave room for about 20 long ids per write.
    assert!(
        (changes / 40..=changes / 5).contains(&(puts - 1)),
        "{puts} writes"
    );
}
