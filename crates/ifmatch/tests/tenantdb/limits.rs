//! Resource bounds (issue 13): a cap on the page bytes one commit may change
//! and a quota on a tenant database's size, both enforced before anything is
//! uploaded.

use std::sync::Arc;

use ifmatch::DynStore;
use ifmatch::store::Store;
use ifmatch::store::memory::MemoryStore;
use ifmatch::tenantdb::{LimitKind, TenantDbError, TenantDbs};

use crate::suite::{Counting, TempDir, config};

fn fill(bytes: usize) -> impl FnMut(&rusqlite::Transaction<'_>) -> ifmatch::tenantdb::Result<()> {
    move |tx| {
        tx.execute(
            "CREATE TABLE IF NOT EXISTS blobs (id INTEGER PRIMARY KEY, b BLOB)",
            [],
        )?;
        tx.execute(
            "INSERT INTO blobs (b) SELECT randomblob(?1)",
            [bytes as i64],
        )?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_cap_and_tenant_quota_refuse_before_upload() {
    let counting = Counting::new(Arc::new(MemoryStore::new()) as DynStore);
    let d = TempDir::new("tdb-limits");
    let cfg = config(&d)
        .with_max_commit_bytes(256 * 1024)
        .with_max_tenant_bytes(1024 * 1024);
    let dbs = TenantDbs::open(counting.clone(), cfg).expect("open");
    dbs.write("t", fill(100_000))
        .await
        .expect("under both limits");
    // Background checkpoints put too: let them finish before counting.
    dbs.flush().await;
    let (puts, _) = counting.uploads();
    // One commit over the cap: refused, nothing uploaded.
    let e = dbs
        .write("t", fill(400_000))
        .await
        .expect_err("over the cap");
    assert!(
        matches!(
            e,
            TenantDbError::LimitExceeded {
                limit: LimitKind::CommitBytes,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("commit size limit"), "{e}");
    // Nothing of it was uploaded: no second log entry exists.
    assert!(
        counting
            .head("tenants/t/log/00000000000000000002")
            .await
            .is_err(),
        "nothing uploaded"
    );
    dbs.flush().await;
    assert_eq!(counting.uploads().0, puts, "nothing uploaded");
    // Commits under the cap, until the database would pass its quota.
    let mut refused = None;
    for _ in 0..20 {
        match dbs.write("t", fill(200_000)).await {
            Ok(()) => {}
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let e = refused.expect("the quota refuses a commit");
    assert!(
        matches!(
            e,
            TenantDbError::LimitExceeded {
                limit: LimitKind::TenantBytes,
                ..
            }
        ),
        "{e}"
    );
    let info = dbs.info("t").await.expect("info");
    assert!(info.bytes <= 1024 * 1024, "{info:?}");
    // A commit that shrinks the database is allowed; the data is intact.
    dbs.write("t", |tx| {
        Ok(tx.execute("DELETE FROM blobs WHERE id > 1", [])?)
    })
    .await
    .expect("deletes pass");
    let n: i64 = dbs
        .read("t", |c| {
            Ok(c.query_row("SELECT count(*) FROM blobs", [], |r| r.get(0))?)
        })
        .await
        .expect("read");
    assert_eq!(n, 1);
}
