//! The remote stores a test binary's `backends()` adds to memory and file:
//! `s3://` on moto and `dynamodb://` on dynalite, started by
//! `scripts/test-servers start`. Shared by the primitive test binaries through
//! `#[path = "../common/remote.rs"] mod remote;`.
//!
//! On a developer machine without the servers they are left out with a printed
//! reason; under `CI=true` a missing server is a failure, never a skip. Each
//! call returns stores under a fresh key prefix, in one bucket and one table
//! per test process.

#![allow(dead_code)]

use std::sync::Arc;

use ifmatch::DynStore;
use ifmatch::store::dynamodb::DynamoStore;
use ifmatch::store::prefix::PrefixStore;
use ifmatch::store::s3::S3Store;
use tokio::sync::OnceCell;

/// The endpoint in `var`, `None` (skip) on a developer machine without it; panics under CI.
pub fn endpoint(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                panic!(
                    "{var} is not set but CI=true: {what} tests must run in CI (start scripts/test-servers)"
                );
            }
            eprintln!(
                "SKIPPED: {what} tests need {var}; run `eval \"$(scripts/test-servers start)\"` first"
            );
            None
        }
    }
}

/// A name unique to this process and call (lowercase, digits, '-').
pub fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{tag}-{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

static S3: OnceCell<Option<DynStore>> = OnceCell::const_new();
static DYNAMO: OnceCell<Option<DynStore>> = OnceCell::const_new();

async fn s3_root() -> Option<DynStore> {
    S3.get_or_init(|| async {
        let ep = endpoint("IFMATCH_TEST_S3_ENDPOINT", "S3 (moto)")?;
        let url = format!("s3://{}?endpoint={ep}", unique("t"));
        let s = S3Store::open(&url).await.expect("open s3");
        s.create_bucket().await.expect("create bucket");
        Some(Arc::new(s) as DynStore)
    })
    .await
    .clone()
}

async fn dynamo_root() -> Option<DynStore> {
    DYNAMO
        .get_or_init(|| async {
            let ep = endpoint("IFMATCH_TEST_DYNAMODB_ENDPOINT", "DynamoDB (dynalite)")?;
            let url = format!("dynamodb://{}?create=true&endpoint={ep}", unique("t"));
            let s = DynamoStore::open(&url).await.expect("open dynamodb");
            Some(Arc::new(s) as DynStore)
        })
        .await
        .clone()
}

/// `s3` and `dynamodb` stores under a fresh prefix each, for those whose server runs.
pub async fn remote_backends() -> Vec<(&'static str, DynStore)> {
    let mut out = Vec::new();
    if let Some(root) = s3_root().await {
        let p = PrefixStore::new(root, &unique("p")).expect("prefix");
        out.push(("s3", Arc::new(p) as DynStore));
    }
    if let Some(root) = dynamo_root().await {
        let p = PrefixStore::new(root, &unique("p")).expect("prefix");
        out.push(("dynamodb", Arc::new(p) as DynStore));
    }
    out
}
