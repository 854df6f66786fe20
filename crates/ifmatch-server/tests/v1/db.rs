//! `POST /v1/db`: tenant isolation, the SQL sandbox, read-only batches that
//! never upload, and the limits.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::{Server, json};

fn batch(statements: &[(&str, Value)]) -> Value {
    json!({
        "statements": statements
            .iter()
            .map(|(sql, params)| json!({"sql": sql, "params": params}))
            .collect::<Vec<_>>()
    })
}

/// PUTs so far, once background checkpoints (which put too) are done.
async fn puts(s: &Server) -> u64 {
    let dbs = s.state.tenant_dbs().unwrap();
    dbs.flush().await;
    dbs.stats().requests_put
}

#[tokio::test]
async fn tenants_sandbox_and_limits() {
    let s = Server::start(|c| {
        c.sandbox.max_rows = 50;
        c.sandbox.time_limit = Duration::from_millis(300);
    })
    .await;
    let alice = s.user("alice", "correct horse").await;
    let bob = s.user("bob", "battery staple").await;
    let run =
        |token: &str, body: Value| s.as_user(token, Method::POST, "/v1/db").json(&body).send();

    let (st, w) = json(
        run(
            &alice,
            batch(&[
                (
                    "CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT, raw BLOB)",
                    json!([]),
                ),
                (
                    "INSERT INTO notes(body, raw) VALUES (?, ?), (?, ?)",
                    json!(["hi", {"blob": "00ff"}, "there", null]),
                ),
            ]),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(st, 200, "{w}");
    assert_eq!(w["read_only"], false);
    assert_eq!(w["results"][1]["changes"], 2);

    // A read-only batch: answered, and nothing uploaded.
    let before = puts(&s).await;
    assert!(before > 0);
    let (st, r) = json(
        run(
            &alice,
            batch(&[
                (
                    "SELECT id, body, raw FROM notes WHERE id >= ? ORDER BY id",
                    json!([1]),
                ),
                ("SELECT count(*) AS n FROM notes", json!([])),
            ]),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["read_only"], true);
    assert_eq!(r["results"][0]["columns"], json!(["id", "body", "raw"]));
    assert_eq!(
        r["results"][0]["rows"],
        json!([[1, "hi", {"blob": "00ff"}], [2, "there", null]])
    );
    assert_eq!(r["results"][1]["rows"], json!([[2]]));
    assert_eq!(puts(&s).await, before, "a read-only batch must not upload");

    // Isolation: bob has his own (empty) database and cannot name alice's.
    let (st, e) = json(
        run(&bob, batch(&[("SELECT * FROM notes", json!([]))]))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((st, e["error"].as_str()), (400, Some("sql_error")), "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("no such table"),
        "{e}"
    );
    // Alice's database is named by her account id; bob may name neither.
    let alice_id = s.me(&alice).await["id"].as_str().unwrap().to_string();
    let mut other = batch(&[("SELECT * FROM notes", json!([]))]);
    other["tenant"] = json!("alice");
    let (st, e) = json(run(&bob, other.clone()).await.unwrap()).await;
    assert_eq!((st, e["error"].as_str()), (403, Some("forbidden")), "{e}");
    other["tenant"] = json!(alice_id);
    let (st, e) = json(run(&bob, other.clone()).await.unwrap()).await;
    assert_eq!((st, e["error"].as_str()), (403, Some("forbidden")), "{e}");
    assert_eq!(puts(&s).await, before, "bob's reads created nothing");
    // The operator must name the tenant, and may.
    let (st, e) = json(
        s.op(Method::POST, "/v1/db")
            .json(&batch(&[("SELECT 1", json!([]))]))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 400, "{e}");
    let (st, r) = json(
        s.op(Method::POST, "/v1/db")
            .json(&other)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["results"][0]["rows"].as_array().unwrap().len(), 2);

    // The sandbox: nothing that touches files or the connection.
    for sql in [
        "ATTACH '/etc/passwd' AS p",
        "ATTACH DATABASE 'file:/etc/passwd?mode=ro' AS p",
        "VACUUM INTO '/tmp/ifmatch-stolen.db'",
        "vacuum",
        "SELECT load_extension('/tmp/evil.so')",
        "PRAGMA journal_mode=DELETE",
        "PRAGMA temp_store_directory='/tmp'",
        "PRAGMA wal_checkpoint(TRUNCATE)",
        "SELECT * FROM pragma_database_list",
        "COMMIT",
    ] {
        let (st, e) = json(run(&alice, batch(&[(sql, json!([]))])).await.unwrap()).await;
        assert_eq!(
            (st, e["error"].as_str()),
            (403, Some("sql_denied")),
            "{sql}: {e}"
        );
    }
    // A refused statement after a write rolls the whole batch back.
    let (st, _) = json(
        run(
            &alice,
            batch(&[
                ("INSERT INTO notes(body) VALUES ('lost')", json!([])),
                ("ATTACH '/etc/passwd' AS p", json!([])),
            ]),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(st, 403);
    let (_, r) = json(
        run(&alice, batch(&[("SELECT count(*) FROM notes", json!([]))]))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r["results"][0]["rows"], json!([[2]]));
    assert!(!std::path::Path::new("/tmp/ifmatch-stolen.db").exists());

    // Limits: rows, then time.
    let (st, e) = json(
        run(
            &alice,
            batch(&[(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 100) SELECT i FROM n",
                json!([]),
            )]),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        (st, e["error"].as_str()),
        (422, Some("limit_exceeded")),
        "{e}"
    );
    assert!(e["message"].as_str().unwrap().contains("row limit"), "{e}");
    let (st, e) = json(
        run(
            &alice,
            batch(&[(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n",
                json!([]),
            )]),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        (st, e["error"].as_str()),
        (422, Some("limit_exceeded")),
        "{e}"
    );
    assert!(e["message"].as_str().unwrap().contains("time limit"), "{e}");
    // Malformed batches.
    let (st, _) = json(run(&alice, json!({"statements": []})).await.unwrap()).await;
    assert_eq!(st, 400);
    let (st, _) = json(
        run(&alice, batch(&[("SELECT 1; SELECT 2", json!([]))]))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 400);
    let (st, _) = json(
        run(&alice, batch(&[("SELECT ?", json!([[1, 2]]))]))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 400);
    s.shutdown().await;
}
