//! `GET /v1/leases/{name}` and `GET /v1/idempotency/{key}`: what the records
//! say, without the lease owner id, 404 for none, scope for users.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::{Server, call, json};

#[tokio::test]
async fn a_lease_shows_its_holder_token_and_expiry_but_not_its_owner() {
    let s = Server::start(|_| {}).await;
    let (st, e) = call(s.op(Method::GET, "/v1/leases/nightly")).await;
    assert_eq!(
        (st, e["error"].as_str(), e["key"].as_str()),
        (404, Some("not_found"), Some("nightly"))
    );
    let (_, lease) = call(
        s.op(Method::POST, "/v1/leases/nightly")
            .json(&json!({"ttl": 30})),
    )
    .await;
    s.clock.advance(Duration::from_secs(10));
    let (st, info) = call(s.op(Method::GET, "/v1/leases/nightly")).await;
    assert_eq!(st, 200, "{info}");
    assert_eq!(info["name"], "nightly");
    assert_eq!(info["holder"], lease["holder"]);
    assert_eq!(info["token"], lease["token"]);
    assert_eq!(info["released"], false);
    assert_eq!(info["expires_at_ms"], lease["expires_at_ms"]);
    assert_eq!(info["expires_in_ms"], 20_000);
    let owner = lease["owner"].as_str().unwrap();
    assert!(
        !info.to_string().contains(owner),
        "the owner id leaked: {info}"
    );
    // Released: still shown, with its last token.
    let r = s
        .op(Method::DELETE, "/v1/leases/nightly")
        .header("Lease-Owner", owner)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (_, info) = call(s.op(Method::GET, "/v1/leases/nightly")).await;
    assert_eq!(
        (info["released"].as_bool(), info["expires_in_ms"].as_u64()),
        (Some(true), Some(0))
    );
    assert_eq!(info["token"], lease["token"]);
    s.shutdown().await;
}

#[tokio::test]
async fn an_idempotency_record_shows_state_hash_and_result() {
    let s = Server::start(|_| {}).await;
    let path = "/v1/idempotency/shots/r-1";
    let (st, _) = call(s.op(Method::GET, path)).await;
    assert_eq!(st, 404);
    let (_, claim) = call(
        s.op(Method::POST, path)
            .json(&json!({"payload": {"url": "https://example.com"}})),
    )
    .await;
    let (st, info) = call(s.op(Method::GET, path)).await;
    assert_eq!(st, 200, "{info}");
    assert_eq!(info["key"], "shots/r-1");
    assert_eq!(info["state"], "in_progress");
    assert_eq!(
        info["payload_hash"],
        ifmatch::idempotency::payload_hash(&json!({"url": "https://example.com"})).unwrap()
    );
    assert_eq!(info["expires_at_ms"], claim["expires_at_ms"]);
    assert!(info.get("result").is_none(), "{info}");
    let r = s
        .op(Method::PUT, path)
        .header("Idempotency-Claim", claim["claim_id"].as_str().unwrap())
        .json(&json!({"result": {"png": "shots/r-1.png"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, info) = call(s.op(Method::GET, path)).await;
    assert_eq!(info["state"], "completed");
    assert_eq!(info["result"], json!({"png": "shots/r-1.png"}));
    s.shutdown().await;
}

#[tokio::test]
async fn users_inspect_only_their_own_records() {
    let s = Server::start(|c| c.user_prefixes = true).await;
    let alice = s.user("alice", "correct horse").await;
    let (_, own) = s.id_and_prefix(&alice).await;
    let (st, _) = call(s.as_user(&alice, Method::POST, &format!("/v1/leases/{own}job"))).await;
    assert_eq!(st, 201);
    let get = |path: String| s.as_user(&alice, Method::GET, &path).send();
    assert_eq!(
        json(get(format!("/v1/leases/{own}job")).await.unwrap())
            .await
            .0,
        200
    );
    // Another user's prefix, and a username-based one, are not hers.
    for other in [
        "/v1/leases/users/bob/job",
        "/v1/leases/users/alice/job",
        "/v1/leases/job",
    ] {
        assert_eq!(
            json(get(other.into()).await.unwrap()).await.0,
            403,
            "{other}"
        );
    }
    assert_eq!(
        json(get(format!("/v1/idempotency/{own}k")).await.unwrap())
            .await
            .0,
        404
    );
    assert_eq!(
        json(get("/v1/idempotency/k".into()).await.unwrap()).await.0,
        403
    );
    s.shutdown().await;
}
