//! The stores the primitives' test binaries run on, made in this one place
//! and shared through `#[path = "../common/backends.rs"] mod backends;`.
//!
//! - [`local_backends`]: a fresh `memory://` store and a `file://` store in a
//!   temporary directory (removed when the last handle drops);
//! - [`backends`]: those, plus `s3://` on moto and `dynamodb://` on dynalite,
//!   started by `scripts/test-servers start`, each under a fresh key prefix in
//!   one bucket and one table per test process. On a developer machine
//!   without the servers they are left out with a printed reason; under
//!   `CI=true` a missing server is a failure, never a skip.
//!
//! Tests on tokio's paused clock use [`local_backends`]: with the clock
//! paused, tokio jumps time forward whenever the runtime waits for a socket,
//! which would fire the HTTP clients' timeouts at once.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ifmatch::DynStore;
use ifmatch::store::Store;
use ifmatch::store::dynamodb::DynamoStore;
use ifmatch::store::file::FileStore;
use ifmatch::store::intercept;
use ifmatch::store::memory::MemoryStore;
use ifmatch::store::prefix::PrefixStore;
use ifmatch::store::s3::S3Store;
use tokio::sync::OnceCell;

/// A fresh memory store and a fresh file store, by name.
pub fn local_backends() -> Vec<(&'static str, DynStore)> {
    vec![
        ("memory", Arc::new(MemoryStore::new()) as DynStore),
        ("file", Arc::new(TempFileStore::new()) as DynStore),
    ]
}

/// Every backend whose server runs: memory, file, s3, dynamodb.
pub async fn backends() -> Vec<(&'static str, DynStore)> {
    let mut out = local_backends();
    out.extend(remote_backends().await);
    out
}

/// A [`FileStore`] in a temporary directory that it removes when dropped.
#[derive(Debug)]
pub struct TempFileStore {
    inner: FileStore,
    dir: PathBuf,
}

impl TempFileStore {
    /// A store in a new, empty temporary directory.
    pub fn new() -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ifmatch-tests-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let inner = FileStore::open(&dir).expect("temporary file store");
        TempFileStore { inner, dir }
    }
}

impl Drop for TempFileStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl intercept::Intercept for TempFileStore {
    fn inner(&self) -> &dyn Store {
        &self.inner
    }
}

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

// One bucket and one table per test process, made once. Only their URLs are
// kept: each test opens its own clients, since a client's connection pool
// belongs to the tokio runtime it was made on, and every test has its own.
static S3_URL: OnceCell<Option<String>> = OnceCell::const_new();
static DYNAMO_URL: OnceCell<Option<String>> = OnceCell::const_new();

async fn s3_root() -> Option<DynStore> {
    let url = S3_URL
        .get_or_init(|| async {
            let ep = endpoint("IFMATCH_TEST_S3_ENDPOINT", "S3 (moto)")?;
            let url = format!("s3://{}?endpoint={ep}", unique("t"));
            let s = S3Store::open(&url).await.expect("open s3");
            s.create_bucket().await.expect("create bucket");
            Some(url)
        })
        .await
        .clone()?;
    Some(Arc::new(S3Store::open(&url).await.expect("open s3")) as DynStore)
}

async fn dynamo_root() -> Option<DynStore> {
    let url = DYNAMO_URL
        .get_or_init(|| async {
            let ep = endpoint("IFMATCH_TEST_DYNAMODB_ENDPOINT", "DynamoDB (dynalite)")?;
            let url = format!("dynamodb://{}?endpoint={ep}", unique("t"));
            DynamoStore::open(&format!("{url}&create=true"))
                .await
                .expect("create the dynamodb table");
            Some(url)
        })
        .await
        .clone()?;
    Some(Arc::new(DynamoStore::open(&url).await.expect("open dynamodb")) as DynStore)
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
