//! `ifmatch db export|import|query|stats` on a `file://` store.

use std::process::{Command, Output};

use ifmatch::tenantdb::{TenantDbs, TenantDbsConfig, anki};

fn ifmatch(store: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ifmatch"))
        .env_remove("RUST_LOG")
        .args(["--store", store])
        .args(args)
        .output()
        .expect("run ifmatch")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_query_import_and_stats() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("store").display());
    // A tenant with two notes, written through the library as a worker would.
    {
        let store = ifmatch::store::open(&url).await.unwrap();
        let dbs = TenantDbs::open(
            store,
            TenantDbsConfig::new(dir.path().join("cache")).with_schema(anki::schema_hook()),
        )
        .unwrap();
        for (id, front) in [(1, "hello"), (2, "world")] {
            dbs.write("alice", move |tx| Ok(anki::add_note(tx, id, front)?))
                .await
                .unwrap();
        }
    }

    // query: columns, then tab-separated rows.
    let o = ifmatch(
        &url,
        &["db", "query", "alice", "SELECT id FROM notes ORDER BY id"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "id\n1\n2\n");
    // Writes are refused: the query connection is read-only.
    let o = ifmatch(&url, &["db", "query", "alice", "DELETE FROM notes"]);
    assert!(!o.status.success(), "{}", text(&o));
    let o = ifmatch(
        &url,
        &["db", "query", "alice", "SELECT count(*) FROM notes"],
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "count(*)\n2\n",
        "{}",
        text(&o)
    );

    // export: a plain SQLite file.
    let file = dir.path().join("alice.sqlite3");
    let o = ifmatch(&url, &["db", "export", "alice", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let bytes = std::fs::read(&file).unwrap();
    assert!(bytes.starts_with(b"SQLite format 3\0"));

    // import: creates a tenant only if absent, unless --force.
    let o = ifmatch(&url, &["db", "import", "bob", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let o = ifmatch(&url, &["db", "query", "bob", "SELECT count(*) FROM notes"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "count(*)\n2\n",
        "{}",
        text(&o)
    );
    let o = ifmatch(&url, &["db", "import", "bob", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let o = ifmatch(
        &url,
        &["db", "import", "bob", file.to_str().unwrap(), "--force"],
    );
    assert!(o.status.success(), "{}", text(&o));

    // stats: size and what the open cost.
    let o = ifmatch(&url, &["db", "stats", "alice"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("page_size: ") && out.contains("requests: get "),
        "{out}"
    );

    // A missing tenant is "not found"; a bad tenant id is a usage error.
    let o = ifmatch(&url, &["db", "query", "nobody", "SELECT 1"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let o = ifmatch(&url, &["db", "stats", "../x"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).lines().count(),
        1,
        "{}",
        text(&o)
    );
}
