//! `s3://` on LocalStack's S3: the concurrent leg.
//!
//! moto decides conditional puts without a lock, so `scripts/test-servers`
//! serves it one request at a time (see `scripts/moto_server_serial.py`): the
//! `s3` leg's race therefore never has two conditional writes in flight at
//! once. LocalStack's S3 (`localstack-core`, started by `scripts/test-servers`
//! without docker) serves requests concurrently and decides each conditional
//! put under a per-object lock: measured here, 16 writers racing on one key
//! with `If-None-Match: *`, then with `If-Match`, had exactly one winner in
//! each of 300 rounds, and it never answered 409 ConditionalRequestConflict.
//! This leg runs the increment race with many writers truly in flight, and
//! the single-client checks it supports.
//!
//! LocalStack has no conditional DELETE: `If-Match` on DeleteObject is
//! answered 501 NotImplemented (it is only for directory buckets, which it
//! does not have). So the suite's delete checks (`deletes`,
//! `versions_never_repeat`) are not part of this leg; they run on moto, in
//! the `s3` leg. What is checked here instead is that such a server makes
//! our conditional delete fail as [`Error::Unsupported`], deleting nothing,
//! never an unconditional delete.

use std::sync::Arc;

use bytes::Bytes;
use ifmatch::store::s3::S3Store;
use ifmatch::store::{Condition, PutOptions, Version};
use ifmatch::{DynStore, Error};

use crate::suite::{Caps, conformance_without_conditional_delete, race as run_race};

const CAPS: Caps = Caps {
    large_values: true,
    sorted_listing: true,
};

/// A store on a fresh bucket of LocalStack's S3, or `None` to skip (see [`crate::env::endpoint`]).
async fn store() -> Option<DynStore> {
    let endpoint = crate::env::endpoint(
        "IFMATCH_TEST_LOCALSTACK_S3_ENDPOINT",
        "S3 on LocalStack (the concurrent leg)",
    )?;
    let bucket = crate::env::unique("ls");
    let store = S3Store::open(&format!("s3://{bucket}/some-prefix?endpoint={endpoint}"))
        .await
        .expect("open");
    store.create_bucket().await.expect("create bucket");
    Some(Arc::new(store))
}

#[tokio::test]
async fn conformance() {
    let Some(store) = store().await else { return };
    conformance_without_conditional_delete(store, CAPS).await;
}

/// The increment race with 16 update loops whose conditional writes are in
/// flight together: none lost, none applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn race() {
    let Some(store) = store().await else { return };
    run_race(store, 16, 25).await;
}

/// A server without conditional DELETE: the delete fails as unsupported and
/// deletes nothing, whether the version is current or stale.
#[tokio::test]
async fn conditional_delete_is_refused_not_made_unconditional() {
    let Some(s) = store().await else { return };
    let v1 = s
        .put("d", "one".into(), PutOptions::if_absent())
        .await
        .unwrap();
    let stale = Version::new("0123456789abcdef0123456789abcdef");
    for version in [v1.clone(), stale] {
        match s.delete("d", Condition::Matches(version.clone())).await {
            Err(Error::Unsupported(m)) => assert!(m.contains("If-Match on DELETE"), "{m}"),
            other => panic!("If-Match DELETE ({version}): expected Unsupported, got {other:?}"),
        }
        let got = s.get("d").await.unwrap();
        assert_eq!(
            (got.body, got.meta.version),
            (Bytes::from("one"), v1.clone())
        );
    }
    // The unconditional delete works.
    s.delete("d", Condition::Any).await.unwrap();
    assert!(matches!(s.head("d").await, Err(Error::NotFound { .. })));
}
