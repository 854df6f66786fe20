//! `GET /v1/db/export`, `PUT /v1/db/import`, `GET /v1/db/info`: a tenant's
//! database as a SQLite file, the integrity check, tenants and scope.

use reqwest::Method;
use serde_json::{Value, json};

use crate::{Server, call, json};

async fn sql(s: &Server, token: &str, statements: Value) -> Value {
    let (st, b) = call(
        s.as_user(token, Method::POST, "/v1/db")
            .json(&json!({"statements": statements})),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    b
}

/// The rows of `SELECT body FROM notes ORDER BY id` in a SQLite file.
fn notes_in(file: &[u8]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite3");
    std::fs::write(&path, file).unwrap();
    let c = rusqlite::Connection::open(&path).unwrap();
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let mut st = c.prepare("SELECT body FROM notes ORDER BY id").unwrap();
    st.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test]
async fn export_import_and_info() {
    let s = Server::start(|_| {}).await;
    let alice = s.user("alice", "correct horse").await;
    let bob = s.user("bob", "battery staple").await;
    let (alice_id, _) = s.id_and_prefix(&alice).await;
    let (bob_id, _) = s.id_and_prefix(&bob).await;
    sql(
        &s,
        &alice,
        json!([
            {"sql": "CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT)"},
            {"sql": "INSERT INTO notes(body) VALUES (?), (?)", "params": ["front", "back"]},
        ]),
    )
    .await;

    // A user exports their own database: a plain SQLite file.
    let r = s
        .as_user(&alice, Method::GET, "/v1/db/export")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/vnd.sqlite3");
    assert_eq!(
        r.headers()["content-disposition"].to_str().unwrap(),
        format!("attachment; filename=\"{alice_id}.sqlite3\"")
    );
    let file = r.bytes().await.unwrap();
    assert!(file.starts_with(b"SQLite format 3\0"));
    assert_eq!(notes_in(&file), ["front", "back"]);
    // Not another user's; the operator names any tenant (and must name one).
    let (st, _) = call(s.as_user(&bob, Method::GET, "/v1/db/export?tenant=alice")).await;
    assert_eq!(st, 403);
    // (The operator names a user's database by account id.)
    let r = s
        .op(Method::GET, &format!("/v1/db/export?tenant={alice_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), file);
    let (st, e) = call(s.op(Method::GET, "/v1/db/export")).await;
    assert_eq!((st, e["error"].as_str()), (400, Some("bad_request")), "{e}");
    let (st, e) = call(s.as_user(&bob, Method::GET, "/v1/db/export")).await;
    assert_eq!(
        (st, e["error"].as_str(), e["key"].as_str()),
        (404, Some("not_found"), Some(bob_id.as_str()))
    );

    // Info.
    let (st, info) = call(s.as_user(&alice, Method::GET, "/v1/db/info")).await;
    assert_eq!(st, 200, "{info}");
    assert_eq!(info["tenant"], alice_id.as_str());
    assert!(info["seq"].as_u64().unwrap() >= 1, "{info}");
    assert_eq!(
        info["bytes"].as_u64(),
        Some(info["pages"].as_u64().unwrap() * info["page_size"].as_u64().unwrap())
    );

    // Bob imports alice's file as his own: only while he has none, unless forced.
    let import = |token: &str, q: &str, body: Vec<u8>| {
        s.as_user(token, Method::PUT, &format!("/v1/db/import{q}"))
            .header("content-type", "application/vnd.sqlite3")
            .body(body)
            .send()
    };
    let r = import(&bob, "", file.to_vec()).await.unwrap();
    assert_eq!(r.status(), 204);
    let rows = sql(&s, &bob, json!([{"sql": "SELECT count(*) FROM notes"}])).await;
    assert_eq!(rows["results"][0]["rows"], json!([[2]]));
    let (st, e) = json(import(&bob, "", file.to_vec()).await.unwrap()).await;
    assert_eq!(
        (st, e["error"].as_str(), e["key"].as_str()),
        (409, Some("conflict"), Some(bob_id.as_str())),
        "{e}"
    );
    sql(
        &s,
        &alice,
        json!([{"sql": "DELETE FROM notes WHERE body = 'back'"}]),
    )
    .await;
    let r = s
        .as_user(&alice, Method::GET, "/v1/db/export")
        .send()
        .await
        .unwrap();
    let smaller = r.bytes().await.unwrap().to_vec();
    let r = import(&bob, "?force=true", smaller).await.unwrap();
    assert_eq!(r.status(), 204);
    let rows = sql(&s, &bob, json!([{"sql": "SELECT body FROM notes"}])).await;
    assert_eq!(rows["results"][0]["rows"], json!([["front"]]));

    // A file that is not a sound database is refused before anything is stored.
    let (st, e) = json(
        import(&alice, "?force=true", b"not a database at all".repeat(300))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((st, e["error"].as_str()), (400, Some("bad_request")), "{e}");
    let mut torn = file.to_vec();
    torn.truncate(file.len() / 2 + 100);
    let (st, _) = json(import(&alice, "?force=true", torn).await.unwrap()).await;
    assert_eq!(st, 400);
    let rows = sql(&s, &alice, json!([{"sql": "SELECT count(*) FROM notes"}])).await;
    assert_eq!(
        rows["results"][0]["rows"],
        json!([[1]]),
        "alice's database is untouched"
    );
    s.shutdown().await;
}
