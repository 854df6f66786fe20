//! The stores the snapshot tests run on — the only place they are made.
//!
//! Add a backend here (s3, dynamodb) and every snapshot test runs on it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use ifmatch::store::file::FileStore;
use ifmatch::store::memory::MemoryStore;
use ifmatch::store::{
    Condition, DynStore, Fetch, ListPage, ListResult, Object, ObjectMeta, PutOptions, Store,
    Version,
};

/// Fresh, empty stores, each with a label for assertion messages.
pub fn backends() -> Vec<(&'static str, DynStore)> {
    vec![
        ("memory", Arc::new(MemoryStore::new())),
        ("file", Arc::new(TempFileStore::new())),
    ]
}

/// A `file://` store in a fresh temporary directory, removed when the store is dropped.
#[derive(Debug)]
pub struct TempFileStore {
    inner: FileStore,
    dir: PathBuf,
}

impl TempFileStore {
    fn new() -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ifmatch-snapshots-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempFileStore {
            inner: FileStore::open(&dir).unwrap(),
            dir,
        }
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
