//! `/v1/leases/{name}`: acquire, 409 with the holder, renew, release by the owner only.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::{Server, json};

#[tokio::test]
async fn acquire_conflict_renew_release() {
    let s = Server::start(|_| {}).await;
    let (st, a) = json(
        s.op(Method::POST, "/v1/leases/jobs/nightly")
            .json(&json!({"ttl": 10}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 201, "{a}");
    let owner = a["owner"].as_str().unwrap().to_string();
    let token = a["token"].as_u64().unwrap();
    assert_eq!(a["name"], "jobs/nightly");
    assert_eq!(a["ttl_ms"], 10_000);
    assert_eq!(a["expires_in_ms"], 10_000);

    // Another caller is told who holds it (by fingerprint) and for how long.
    let (st, e) = json(
        s.op(Method::POST, "/v1/leases/jobs/nightly")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 409, "{e}");
    assert_eq!(e["error"], "lease_held");
    assert_eq!(e["holder"], a["holder"]);
    assert_eq!(e["expires_in_ms"], 10_000);
    assert!(
        !e.to_string().contains(&owner),
        "a 409 must not reveal the owner id: {e}"
    );

    // Renew and release need the owner id.
    let (st, e) = json(
        s.op(Method::PUT, "/v1/leases/jobs/nightly")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 400, "{e}");
    let (st, e) = json(
        s.op(Method::PUT, "/v1/leases/jobs/nightly")
            .header("Lease-Owner", "http-guess")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((st, e["error"].as_str()), (409, Some("not_owner")), "{e}");
    let (st, e) = json(
        s.op(Method::DELETE, "/v1/leases/jobs/nightly")
            .header("Lease-Owner", "http-guess")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((st, e["error"].as_str()), (409, Some("not_owner")), "{e}");

    s.clock.advance(Duration::from_secs(4));
    let (st, r) = json(
        s.op(Method::PUT, "/v1/leases/jobs/nightly")
            .header("Lease-Owner", &owner)
            .json(&json!({"ttl": 20}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["token"], token, "renewal keeps the token");
    assert_eq!(r["expires_in_ms"], 20_000);
    assert_eq!(r["owner"], owner);

    let r = s
        .op(Method::DELETE, "/v1/leases/jobs/nightly")
        .header("Lease-Owner", &owner)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // Releasing twice is fine.
    let r = s
        .op(Method::DELETE, "/v1/leases/jobs/nightly")
        .header("Lease-Owner", &owner)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // A released lease cannot be renewed.
    let (st, _) = json(
        s.op(Method::PUT, "/v1/leases/jobs/nightly")
            .header("Lease-Owner", &owner)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 409);

    // The next holder gets a greater token; the old owner cannot release it.
    let (st, b) = json(
        s.op(Method::POST, "/v1/leases/jobs/nightly")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 201);
    assert!(b["token"].as_u64().unwrap() > token);
    let (st, e) = json(
        s.op(Method::DELETE, "/v1/leases/jobs/nightly")
            .header("Lease-Owner", &owner)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((st, e["error"].as_str()), (409, Some("not_owner")), "{e}");
    s.shutdown().await;
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_with_a_greater_token() {
    let s = Server::start(|_| {}).await;
    let (_, a) = json(
        s.op(Method::POST, "/v1/leases/l")
            .json(&json!({"ttl": 5}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    // Past the TTL and the clock-skew allowance.
    s.clock.advance(Duration::from_secs(7));
    let (st, b) = json(s.op(Method::POST, "/v1/leases/l").send().await.unwrap()).await;
    assert_eq!(st, 201, "{b}");
    assert!(b["token"].as_u64() > a["token"].as_u64());
    // The paused old holder cannot renew.
    let (st, _) = json(
        s.op(Method::PUT, "/v1/leases/l")
            .header("Lease-Owner", a["owner"].as_str().unwrap())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 409);
    s.shutdown().await;
}

#[tokio::test]
async fn invalid_requests_are_400() {
    let s = Server::start(|_| {}).await;
    for body in [
        json!({"ttl": 0}),
        json!({"ttl": -1}),
        json!({"ttl": 1e9}),
        json!({"wait": 3600}),
        json!({"ttl": "soon"}),
        json!({"tll": 3}),
    ] {
        let (st, e) = json(
            s.op(Method::POST, "/v1/leases/x")
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(st, 400, "{body}: {e}");
        assert_eq!(e["error"], "bad_request");
    }
    let (st, _) = json(s.anon(Method::POST, "/v1/leases/x").send().await.unwrap()).await;
    assert_eq!(st, 401);
    s.shutdown().await;
}
