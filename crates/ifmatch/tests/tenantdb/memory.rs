//! The tenant database suite on `memory://`.

use std::sync::Arc;

use ifmatch::DynStore;
use ifmatch::store::memory::MemoryStore;

fn store() -> DynStore {
    Arc::new(MemoryStore::new())
}

crate::suite::backend_tests!(async { Some(store()) }, big = true);
