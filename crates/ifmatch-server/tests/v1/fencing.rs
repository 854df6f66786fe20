//! `Fencing-Token` on object PUT, PATCH and DELETE: 409 `fenced` for a token
//! older than the key's, with preconditions as usual; fenced values read back
//! as written.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::{Server, call};

/// Acquires lease `name` for `ttl` seconds; returns its fencing token.
async fn token(s: &Server, name: &str, ttl: u64) -> u64 {
    let (st, l) = call(
        s.op(Method::POST, &format!("/v1/leases/{name}"))
            .json(&json!({"ttl": ttl})),
    )
    .await;
    assert_eq!(st, 201, "{l}");
    l["token"].as_u64().unwrap()
}

fn fenced(s: &Server, method: Method, key: &str, token: u64) -> reqwest::RequestBuilder {
    s.op(method, &format!("/v1/objects/{key}"))
        .header("Fencing-Token", token.to_string())
}

#[tokio::test]
async fn an_older_token_is_fenced_off() {
    let s = Server::start(|_| {}).await;
    let old = token(&s, "report", 5).await;
    let r = fenced(&s, Method::PUT, "report.json", old)
        .header("content-type", "application/json")
        .body(r#"{"rows":[1]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // The holder pauses past its lease; the next holder writes with its newer token.
    s.clock.advance(Duration::from_secs(10));
    let new = token(&s, "report", 5).await;
    assert!(new > old);
    let r = fenced(&s, Method::PUT, "report.json", new)
        .header("content-type", "application/json")
        .body(r#"{"rows":[2]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let current = r.headers()["etag"].to_str().unwrap().to_string();

    // The old holder wakes up: its PUT, PATCH and DELETE are refused, naming the key and version.
    let attempts = [
        fenced(&s, Method::PUT, "report.json", old).body("stale"),
        fenced(&s, Method::PATCH, "report.json", old)
            .header("content-type", "application/merge-patch+json")
            .body(r#"{"stale":true}"#),
        fenced(&s, Method::DELETE, "report.json", old),
    ];
    for req in attempts {
        let (st, e) = call(req).await;
        assert_eq!(st, 409, "{e}");
        assert_eq!(e["error"], "fenced");
        assert_eq!(e["key"], "report.json");
        assert_eq!(e["current_etag"], current.as_str());
        assert!(
            e["message"].as_str().unwrap().contains(&new.to_string()),
            "{e}"
        );
    }
    // Reads give the value as written, without the fencing header; HEAD agrees on the size.
    let r = s
        .op(Method::GET, "/v1/objects/report.json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["etag"], current.as_str());
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.text().await.unwrap(), r#"{"rows":[2]}"#);
    let r = s
        .op(Method::HEAD, "/v1/objects/report.json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-length"], "12");

    // The new holder patches (fenced) and deletes.
    let (st, v): (u16, Value) = call(
        fenced(&s, Method::PATCH, "report.json", new)
            .header("content-type", "application/merge-patch+json")
            .body(r#"{"done":true}"#),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v, json!({"rows": [2], "done": true}));
    let r = fenced(&s, Method::DELETE, "report.json", new)
        .header("If-Match", "\"nope\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412, "a precondition still applies");
    let r = fenced(&s, Method::DELETE, "report.json", new)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = s
        .op(Method::GET, "/v1/objects/report.json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    s.shutdown().await;
}

#[tokio::test]
async fn preconditions_and_bad_tokens() {
    let s = Server::start(|_| {}).await;
    let t = token(&s, "l", 30).await;
    // If-None-Match: * with a token: create only.
    let r = fenced(&s, Method::PUT, "k", t)
        .header("If-None-Match", "*")
        .body("a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let (st, e) = call(
        fenced(&s, Method::PUT, "k", t)
            .header("If-None-Match", "*")
            .body("b"),
    )
    .await;
    assert_eq!(
        (st, e["current_etag"].as_str()),
        (412, Some(etag.as_str())),
        "{e}"
    );
    // If-Match on the current ETag with the same token: lands.
    let r = fenced(&s, Method::PUT, "k", t)
        .header("If-Match", &etag)
        .body("c")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A stale If-Match: 412 naming the current ETag.
    let (st, _) = call(
        fenced(&s, Method::PUT, "k", t)
            .header("If-Match", &etag)
            .body("d"),
    )
    .await;
    assert_eq!(st, 412);
    // A token that is not a number.
    for bad in ["", "-1", "12a", "99999999999999999999999"] {
        let (st, e) = call(
            s.op(Method::PUT, "/v1/objects/k")
                .header("Fencing-Token", bad)
                .body("e"),
        )
        .await;
        assert_eq!(
            (st, e["error"].as_str()),
            (400, Some("bad_request")),
            "{bad:?}: {e}"
        );
    }
    // A write without a token is not checked (and stores the value unfenced).
    let r = s
        .op(Method::PUT, "/v1/objects/k")
        .body("plain")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = s.op(Method::GET, "/v1/objects/k").send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "plain");
    s.shutdown().await;
}

#[tokio::test]
async fn require_preconditions_applies_to_fenced_writes() {
    let s = Server::start(|c| c.require_preconditions = true).await;
    let t = token(&s, "l", 30).await;
    let r = fenced(&s, Method::PUT, "k", t)
        .body("a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "creating needs no precondition");
    let (st, e) = call(fenced(&s, Method::PUT, "k", t).body("b")).await;
    assert_eq!(
        (st, e["error"].as_str()),
        (428, Some("precondition_required")),
        "{e}"
    );
    let (st, _) = call(fenced(&s, Method::DELETE, "k", t)).await;
    assert_eq!(st, 428);
    s.shutdown().await;
}
