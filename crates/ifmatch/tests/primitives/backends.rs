//! The one place where the primitives' tests make stores.
//!
//! [`backends`] returns a fresh, empty store of each kind. A `file://` store
//! lives in a new directory under the system temp dir, removed when the last
//! handle to the store is dropped. S3 and DynamoDB join here later.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use ifmatch::Result;
use ifmatch::store::file::FileStore;
use ifmatch::store::memory::MemoryStore;
use ifmatch::store::{
    Condition, DynStore, Fetch, ListPage, ListResult, Object, ObjectMeta, PutOptions, Store,
    Version,
};

/// A fresh, empty store of every kind under test, by name.
pub fn backends() -> Vec<(&'static str, DynStore)> {
    vec![
        ("memory", Arc::new(MemoryStore::new()) as DynStore),
        ("file", Arc::new(TempFileStore::new()) as DynStore),
    ]
}

/// A [`FileStore`] in a temporary directory that it removes when dropped.
#[derive(Debug)]
struct TempFileStore {
    inner: FileStore,
    dir: PathBuf,
}

impl TempFileStore {
    fn new() -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ifmatch-primitives-{}-{}",
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

#[async_trait]
impl Store for TempFileStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn max_value_size(&self) -> Option<u64> {
        self.inner.max_value_size()
    }
    async fn get(&self, key: &str) -> Result<Object> {
        self.inner.get(key).await
    }
    async fn get_if_changed(&self, key: &str, known: &Version) -> Result<Fetch> {
        self.inner.get_if_changed(key, known).await
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.inner.head(key).await
    }
    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> Result<Version> {
        self.inner.put(key, body, opts).await
    }
    async fn delete(&self, key: &str, condition: Condition) -> Result<()> {
        self.inner.delete(key, condition).await
    }
    async fn list(&self, prefix: &str, page: ListPage) -> Result<ListResult> {
        self.inner.list(prefix, page).await
    }
}
