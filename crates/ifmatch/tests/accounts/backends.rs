//! The stores the accounts tests run on: the only place they are made.
//!
//! Every test loops over [`backends`], so a backend added here runs the whole suite.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use ifmatch::store::file::FileStore;
use ifmatch::store::memory::MemoryStore;
use ifmatch::store::{
    Condition, DynStore, Fetch, ListPage, ListResult, Object, ObjectMeta, PutOptions, Store,
    Version,
};

/// A fresh store per backend, named for assertion messages: memory, file, and
/// s3 (moto) and dynamodb (dynalite) when their servers run (see [`crate::remote`]).
pub async fn backends() -> Vec<(&'static str, DynStore)> {
    let mut out = vec![
        ("memory", Arc::new(MemoryStore::new()) as DynStore),
        ("file", Arc::new(TempFileStore::new()) as DynStore),
    ];
    out.extend(crate::remote::remote_backends().await);
    out
}

/// A `file://` store in a fresh temporary directory, removed when the last handle drops.
#[derive(Debug)]
struct TempFileStore {
    inner: FileStore,
    dir: PathBuf,
}

impl TempFileStore {
    fn new() -> TempFileStore {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ifmatch-accounts-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let inner = FileStore::open(&dir).expect("file store");
        TempFileStore { inner, dir }
    }
}

impl Drop for TempFileStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[async_trait]
impl Store for TempFileStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn max_value_size(&self) -> Option<u64> {
        self.inner.max_value_size()
    }
    async fn get(&self, key: &str) -> ifmatch::Result<Object> {
        self.inner.get(key).await
    }
    async fn get_if_changed(&self, key: &str, known: &Version) -> ifmatch::Result<Fetch> {
        self.inner.get_if_changed(key, known).await
    }
    async fn head(&self, key: &str) -> ifmatch::Result<ObjectMeta> {
        self.inner.head(key).await
    }
    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> ifmatch::Result<Version> {
        self.inner.put(key, body, opts).await
    }
    async fn delete(&self, key: &str, condition: Condition) -> ifmatch::Result<()> {
        self.inner.delete(key, condition).await
    }
    async fn list(&self, prefix: &str, page: ListPage) -> ifmatch::Result<ListResult> {
        self.inner.list(prefix, page).await
    }
}
