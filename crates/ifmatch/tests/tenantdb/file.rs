//! The tenant database suite on `file://`.

use std::sync::Arc;

use ifmatch::DynStore;
use ifmatch::store::file::FileStore;

fn store() -> DynStore {
    let dir = crate::suite::TempDir::new("tdb-file-store");
    let s = FileStore::open(dir.path()).expect("file store");
    // The directory lives as long as the test process (removed at exit by the OS temp cleaner).
    std::mem::forget(dir);
    Arc::new(s)
}

crate::suite::backend_tests!(async { Some(store()) }, big = true);
