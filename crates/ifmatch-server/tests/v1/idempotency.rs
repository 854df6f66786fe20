//! `/v1/idempotency/{key}`: 201 claimed, 409 in progress, 422 payload mismatch,
//! 200 completed with the stored result; abandon.

use reqwest::Method;
use serde_json::json;

use crate::{Server, json};

#[tokio::test]
async fn claim_complete_and_duplicates() {
    let s = Server::start(|_| {}).await;
    let payload = json!({"payload": {"url": "https://example.com", "n": 1}});
    let (st, c) = json(
        s.op(Method::POST, "/v1/idempotency/orders/42")
            .json(&payload)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 201, "{c}");
    assert_eq!(c["state"], "claimed");
    let claim = c["claim_id"].as_str().unwrap().to_string();

    // The same request again, while the first runs.
    let (st, e) = json(
        s.op(Method::POST, "/v1/idempotency/orders/42")
            .json(&payload)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((st, e["error"].as_str()), (409, Some("in_progress")), "{e}");
    assert_eq!(e["key"], "orders/42");
    // The key reused for something else.
    let (st, e) = json(
        s.op(Method::POST, "/v1/idempotency/orders/42")
            .json(&json!({"payload": {"url": "https://example.org"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (st, e["error"].as_str()),
        (422, Some("payload_mismatch")),
        "{e}"
    );

    // Only the claim's holder completes it.
    let (st, e) = json(
        s.op(Method::PUT, "/v1/idempotency/orders/42")
            .header("Idempotency-Claim", "0000")
            .json(&json!({"result": "nope"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (st, e["error"].as_str()),
        (409, Some("not_claim_holder")),
        "{e}"
    );
    let (st, d) = json(
        s.op(Method::PUT, "/v1/idempotency/orders/42")
            .header("Idempotency-Claim", &claim)
            .json(&json!({"result": {"shot": "s3://shots/42.png"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 200, "{d}");
    assert_eq!(d["state"], "completed");

    // Every later claim gets the stored result (key order does not matter).
    let (st, r) = json(
        s.op(Method::POST, "/v1/idempotency/orders/42")
            .json(&json!({"payload": {"n": 1, "url": "https://example.com"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["state"], "completed");
    assert_eq!(r["result"], json!({"shot": "s3://shots/42.png"}));
    assert!(r.get("claim_id").is_none());
    s.shutdown().await;
}

#[tokio::test]
async fn abandon_lets_a_retry_claim() {
    let s = Server::start(|_| {}).await;
    let (st, c) = json(
        s.op(Method::POST, "/v1/idempotency/k")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 201, "{c}");
    let claim = c["claim_id"].as_str().unwrap().to_string();
    let (st, e) = json(
        s.op(Method::DELETE, "/v1/idempotency/k")
            .header("Idempotency-Claim", "someone-else")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (st, e["error"].as_str()),
        (409, Some("not_claim_holder")),
        "{e}"
    );
    let r = s
        .op(Method::DELETE, "/v1/idempotency/k")
        .header("Idempotency-Claim", &claim)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (st, c2) = json(
        s.op(Method::POST, "/v1/idempotency/k")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 201, "{c2}");
    assert_ne!(c2["claim_id"], c["claim_id"]);
    // The abandoned claim cannot complete any more.
    let (st, _) = json(
        s.op(Method::PUT, "/v1/idempotency/k")
            .header("Idempotency-Claim", &claim)
            .json(&json!({"result": 1}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 409);
    // Without the header: 400.
    let (st, _) = json(
        s.op(Method::DELETE, "/v1/idempotency/k")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 400);
    s.shutdown().await;
}
