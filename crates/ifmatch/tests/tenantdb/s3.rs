//! The tenant database suite on `s3://` against moto (the 20 MB case included).

use std::sync::Arc;

use ifmatch::DynStore;
use ifmatch::store::s3::S3Store;

async fn store() -> Option<DynStore> {
    let endpoint = crate::env::endpoint("IFMATCH_TEST_S3_ENDPOINT", "S3 (moto)")?;
    let bucket = crate::env::unique("tdb");
    let url = format!("s3://{bucket}/t?endpoint={endpoint}");
    let s = S3Store::open(&url).await.expect("open");
    s.create_bucket().await.expect("create bucket");
    Some(Arc::new(s))
}

crate::suite::backend_tests!(store(), big = true);
