//! The tenant database suite on `file://`.

use std::sync::Arc;

use ifmatch::DynStore;
use ifmatch::store::file::FileStore;

use crate::suite::{Counting, TempDir};

/// A file store in a fresh temporary directory, removed with the store.
fn store() -> DynStore {
    let dir = TempDir::new("tdb-file-store");
    let s = FileStore::open(dir.path()).expect("file store");
    Counting::keeping(Arc::new(s), Some(dir))
}

crate::suite::backend_tests!(async { Some(store()) }, big = true);
