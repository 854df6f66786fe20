//! Conformance through the fault-injecting wrapper: the update loop stays exact
//! under injected errors and lost responses.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ifmatch::clock::SharedRng;
use ifmatch::store::fault::{FaultConfig, FaultStore};
use ifmatch::store::memory::MemoryStore;
use ifmatch::store::{PutOptions, Store};
use ifmatch::{DynStore, Error};

use crate::suite::{Caps, conformance as run, race as run_race};

#[tokio::test]
async fn conformance_without_faults() {
    let store = FaultStore::new(
        Arc::new(MemoryStore::new()),
        FaultConfig::default(),
        SharedRng::seeded(1),
    );
    run(
        Arc::new(store),
        Caps {
            large_values: false,
            sorted_listing: true,
        },
    )
    .await;
}

// The fault races run 8 concurrent workers on one thread with a paused clock:
// injected latency makes them interleave at every store call, the seeded
// generators make the schedule the same on every run, and no OS preemption
// can stretch the time between a lost write and its re-read (on a loaded
// machine, a preempted worker may find more than `update::HISTORY` writes in
// between and must then report the outcome as unknown rather than guess).

#[tokio::test(start_paused = true)]
async fn race_with_ten_percent_lost_responses() {
    let faulty = FaultStore::new(
        Arc::new(MemoryStore::new()),
        FaultConfig {
            lost_response_rate: 0.10,
            latency: (Duration::from_micros(100), Duration::from_millis(2)),
            ..FaultConfig::default()
        },
        SharedRng::seeded(42),
    );
    let store: DynStore = Arc::new(faulty.clone());
    run_race(store, 8, 50).await;
    let lost = faulty.counters().lost_responses.load(Ordering::Relaxed);
    assert!(
        lost > 10,
        "the schedule should have lost responses, lost {lost}"
    );
}

#[tokio::test(start_paused = true)]
async fn race_with_errors_latency_and_lost_responses() {
    let faulty = FaultStore::new(
        Arc::new(MemoryStore::new()),
        FaultConfig {
            error_rate: 0.10,
            lost_response_rate: 0.10,
            latency: (Duration::from_micros(100), Duration::from_millis(2)),
            ..FaultConfig::default()
        },
        SharedRng::seeded(7),
    );
    run_race(Arc::new(faulty.clone()), 8, 50).await;
    assert!(faulty.counters().errors.load(Ordering::Relaxed) > 0);
}

/// The same race on real threads: exactness must hold whatever the schedule,
/// but a preempted worker may legitimately report an unknown outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn race_on_threads_with_lost_responses_is_never_wrong() {
    use ifmatch::update::{UpdateError, update_json};
    let inner: DynStore = Arc::new(MemoryStore::new());
    let faulty: DynStore = Arc::new(FaultStore::new(
        inner.clone(),
        FaultConfig {
            lost_response_rate: 0.10,
            ..FaultConfig::default()
        },
        SharedRng::seeded(11),
    ));
    let mut tasks = Vec::new();
    for w in 0..8u64 {
        let store = faulty.clone();
        tasks.push(tokio::spawn(async move {
            let policy = crate::suite::race_policy(500 + w);
            let (mut acked, mut unknown) = (Vec::new(), 0u64);
            for _ in 0..50 {
                match update_json(&*store, "n", &policy, |n: Option<u64>| {
                    Ok(Some(n.unwrap_or(0) + 1))
                })
                .await
                {
                    Ok(r) => acked.push(r.value.unwrap()),
                    Err(UpdateError::Ambiguous { .. }) => unknown += 1,
                    Err(e) => panic!("worker {w}: {e}"),
                }
            }
            (acked, unknown)
        }));
    }
    let (mut acked, mut unknown) = (Vec::new(), 0);
    for t in tasks {
        let (a, u) = t.await.unwrap();
        acked.extend(a);
        unknown += u;
    }
    let n: u64 = serde_json::from_slice(&inner.get("n").await.unwrap().body).unwrap();
    // Every acknowledged increment landed once; an unknown one landed at most once.
    let mut sorted = acked.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        acked.len(),
        "two increments acknowledged the same value"
    );
    assert!(acked.iter().all(|v| *v <= n));
    assert!(
        n >= acked.len() as u64 && n <= acked.len() as u64 + unknown,
        "final {n}, acked {}, unknown {unknown}",
        acked.len()
    );
}

#[tokio::test]
async fn a_lost_response_still_lands() {
    let inner: DynStore = Arc::new(MemoryStore::new());
    let faulty = FaultStore::new(
        inner.clone(),
        FaultConfig {
            lost_response_rate: 1.0,
            ..FaultConfig::default()
        },
        SharedRng::seeded(3),
    );
    let r = faulty.put("k", "v".into(), PutOptions::if_absent()).await;
    assert!(matches!(r, Err(Error::Ambiguous { .. })), "{r:?}");
    assert_eq!(inner.get("k").await.unwrap().body, "v");
}

#[tokio::test]
async fn same_seed_same_faults() {
    async fn schedule(seed: u64) -> Vec<bool> {
        let s = FaultStore::new(
            Arc::new(MemoryStore::new()),
            FaultConfig {
                error_rate: 0.5,
                ..FaultConfig::default()
            },
            SharedRng::seeded(seed),
        );
        let mut out = Vec::new();
        for i in 0..64 {
            out.push(
                s.put(&format!("k{i}"), "v".into(), PutOptions::any())
                    .await
                    .is_ok(),
            );
        }
        out
    }
    assert_eq!(schedule(9).await, schedule(9).await);
    assert_ne!(schedule(9).await, schedule(10).await);
}
