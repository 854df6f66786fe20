//! `GET /v1/objects?prefix=&after=&limit=`: pages, sizes and ETags, the
//! cursor, bad queries, and a session user's scope.

use reqwest::Method;
use serde_json::{Value, json};

use crate::{Server, call, json};

/// Writes `key` with `body` as `token` would, returning the ETag.
async fn put(s: &Server, token: Option<&str>, key: &str, body: &'static str) -> String {
    let path = format!("/v1/objects/{key}");
    let req = match token {
        Some(t) => s.as_user(t, Method::PUT, &path),
        None => s.op(Method::PUT, &path),
    };
    let r = req.body(body).send().await.unwrap();
    assert!(r.status().is_success(), "{key}: {}", r.status());
    r.headers()["etag"].to_str().unwrap().to_string()
}

fn keys(page: &Value) -> Vec<&str> {
    page["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["key"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn pages_follow_the_cursor() {
    let s = Server::start(|_| {}).await;
    let e1 = put(&s, None, "jobs/1", "one").await;
    put(&s, None, "jobs/2", "two!").await;
    put(&s, None, "jobs/3", "three").await;
    put(&s, None, "other/1", "x").await;
    let list = |q: &str| s.op(Method::GET, &format!("/v1/objects{q}")).send();

    let (st, p1) = json(list("?prefix=jobs/&limit=2").await.unwrap()).await;
    assert_eq!(st, 200, "{p1}");
    assert_eq!(keys(&p1), ["jobs/1", "jobs/2"]);
    assert_eq!(
        p1["objects"][0],
        json!({"key": "jobs/1", "size": 3, "etag": e1})
    );
    assert_eq!(p1["objects"][1]["size"], 4);
    assert_eq!(p1["prefix"], "jobs/");
    let next = p1["next"].as_str().unwrap();
    let (st, p2) = json(
        list(&format!("?prefix=jobs/&limit=2&after={next}"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 200, "{p2}");
    assert_eq!(keys(&p2), ["jobs/3"]);
    assert_eq!(p2["next"], Value::Null);
    // Everything, with the default limit.
    let (_, all) = json(list("").await.unwrap()).await;
    assert_eq!(keys(&all), ["jobs/1", "jobs/2", "jobs/3", "other/1"]);

    for bad in ["?limit=0", "?limit=1001", "?limit=x", "?prefix=/x"] {
        let (st, e) = json(list(bad).await.unwrap()).await;
        assert_eq!(
            (st, e["error"].as_str()),
            (400, Some("bad_request")),
            "{bad}: {e}"
        );
    }
    s.shutdown().await;
}

#[tokio::test]
async fn users_list_only_their_own_prefix() {
    let s = Server::start(|c| c.user_prefixes = true).await;
    let alice = s.user("alice", "correct horse").await;
    let bob = s.user("bob", "battery staple").await;
    let (_, pa) = s.id_and_prefix(&alice).await;
    let (_, pb) = s.id_and_prefix(&bob).await;
    let (a1, a2, b1) = (
        format!("{pa}notes/1"),
        format!("{pa}notes/2"),
        format!("{pb}notes/1"),
    );
    put(&s, Some(&alice), &a1, "a").await;
    put(&s, Some(&alice), &a2, "b").await;
    put(&s, Some(&bob), &b1, "c").await;
    let list = |q: &str| {
        s.as_user(&alice, Method::GET, &format!("/v1/objects{q}"))
            .send()
    };
    // No prefix, or one above their own: all of their own, nobody else's.
    let above = format!("?prefix={}", &pa[..pa.len() - 3]);
    for q in ["", "?prefix=users/", above.as_str()] {
        let (st, p) = json(list(q).await.unwrap()).await;
        assert_eq!(st, 200, "{q}: {p}");
        assert_eq!(keys(&p), [a1.as_str(), a2.as_str()], "{q}");
        assert_eq!(p["prefix"], pa.as_str(), "{q}");
    }
    let (st, p) = json(list(&format!("?prefix={a2}")).await.unwrap()).await;
    assert_eq!((st, keys(&p)), (200, vec![a2.as_str()]));
    for q in [format!("?prefix={pb}"), "?prefix=jobs/".into()] {
        let (st, e) = json(list(&q).await.unwrap()).await;
        assert_eq!(
            (st, e["error"].as_str()),
            (403, Some("forbidden")),
            "{q}: {e}"
        );
    }
    // The operator sees everyone's.
    let (_, p) = call(s.op(Method::GET, "/v1/objects?prefix=users/")).await;
    assert!(keys(&p).contains(&b1.as_str()), "{p}");
    s.shutdown().await;

    // Without per-user prefixes a user may not list at all.
    let s = Server::start(|_| {}).await;
    let alice = s.user("alice", "correct horse").await;
    let (st, _) = call(s.as_user(&alice, Method::GET, "/v1/objects")).await;
    assert_eq!(st, 403);
    s.shutdown().await;
}
