//! `ifmatch db export|import|query|exec|stats` on a `file://` store.

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

/// `db exec` writes through the tenant-database retry; an export of the
/// result opens in Python's `sqlite3` (the "fresh clone" check: run
/// in the store's own directory, as a user would, with the default store).
#[test]
fn exec_writes_and_the_export_opens_in_python() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ifmatch"))
            .current_dir(dir.path())
            .env_remove("RUST_LOG")
            .env_remove("IFMATCH_STORE")
            .args(args)
            .output()
            .expect("run ifmatch")
    };
    let o = run(&[
        "db",
        "exec",
        "alice",
        "CREATE TABLE notes(id INTEGER PRIMARY KEY, flds TEXT, due INTEGER)",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "changes: 0\n");
    let o = run(&[
        "db",
        "exec",
        "alice",
        "INSERT INTO notes(flds, due) VALUES (?, ?), (?, ?)",
        "--param",
        "bonjour",
        "--param",
        "7",
        "--param",
        "-1",
        "--param",
        "null",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "changes: 2\n");
    // Rows come back like `db query` prints them, then the changes.
    let o = run(&[
        "db",
        "exec",
        "alice",
        "UPDATE notes SET due = due + 1 WHERE id = ? RETURNING flds, due",
        "--param",
        "1",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "flds\tdue\nbonjour\t8\nchanges: 1\n"
    );
    // A SQL error: SQLite's message on one line, exit 1, nothing written.
    let o = run(&["db", "exec", "alice", "INSERT INTO nope VALUES (1)"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{}", text(&o));
    assert!(err.contains("no such table: nope"), "{}", text(&o));
    let o = run(&["db", "exec", "alice", "ATTACH DATABASE 'x' AS x"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));

    let o = run(&["db", "export", "alice", "out.sqlite"]);
    assert!(o.status.success(), "{}", text(&o));
    let py = Command::new("python3")
        .current_dir(dir.path())
        .args([
            "-c",
            "import sqlite3; c = sqlite3.connect('out.sqlite'); \
             print(c.execute('PRAGMA integrity_check').fetchone()[0]); \
             print(c.execute('SELECT id, flds, due FROM notes ORDER BY id').fetchall())",
        ])
        .output()
        .expect("python3 is part of the set-up (README)");
    assert!(py.status.success(), "{}", text(&py));
    assert_eq!(
        String::from_utf8_lossy(&py.stdout),
        "ok\n[(1, 'bonjour', 8), (2, '-1', None)]\n"
    );
}
