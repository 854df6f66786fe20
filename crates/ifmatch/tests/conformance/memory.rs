//! Conformance on `memory://`.

use std::sync::Arc;

use crate::suite::{Caps, conformance as run, group_race, race as run_race};
use ifmatch::store::memory::MemoryStore;

const CAPS: Caps = Caps {
    large_values: true,
    sorted_listing: true,
};

#[tokio::test]
async fn conformance() {
    run(Arc::new(MemoryStore::new()), CAPS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn race() {
    run_race(Arc::new(MemoryStore::new()), 8, 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_race() {
    group_race(Arc::new(MemoryStore::new()), 64, 20).await;
}

#[tokio::test]
async fn opened_by_url() {
    let s = ifmatch::store::open("memory://").await.unwrap();
    assert_eq!(s.describe(), "memory://");
    assert!(ifmatch::store::open("memory://somewhere").await.is_err());
}
