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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn race_with_ten_percent_lost_responses() {
    let faulty = FaultStore::new(
        Arc::new(MemoryStore::new()),
        FaultConfig {
            lost_response_rate: 0.10,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn race_with_errors_latency_and_lost_responses() {
    let faulty = FaultStore::new(
        Arc::new(MemoryStore::new()),
        FaultConfig {
            error_rate: 0.10,
            lost_response_rate: 0.10,
            latency: (Duration::ZERO, Duration::from_millis(2)),
        },
        SharedRng::seeded(7),
    );
    run_race(Arc::new(faulty.clone()), 8, 25).await;
    assert!(faulty.counters().errors.load(Ordering::Relaxed) > 0);
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
