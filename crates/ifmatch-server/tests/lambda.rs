//! API Gateway v2 (HTTP API) events fed to the router as the Lambda runtime would.
//! Run with `cargo test -p ifmatch-server --features lambda --test lambda`.

#![cfg(feature = "lambda")]

use std::sync::Arc;

use axum::body::to_bytes;
use ifmatch::store::memory::MemoryStore;
use ifmatch_server::{AppState, ServerConfig, router};
use serde_json::{Value, json};
use tower::ServiceExt;

/// An API Gateway HTTP API (payload v2) event: the fixture shared with
/// `deploy/aws/measure_init.py`, with this request.
fn event(method: &str, path: &str, headers: Value, body: Option<&str>) -> String {
    let mut event: Value = serde_json::from_str(include_str!(
        "../../../deploy/aws/api-gateway-v2-event.json"
    ))
    .expect("the event fixture is JSON");
    event["rawPath"] = json!(path);
    event["headers"] = headers;
    event["body"] = json!(body);
    event["requestContext"]["http"]["method"] = json!(method);
    event["requestContext"]["http"]["path"] = json!(path);
    event.to_string()
}

#[tokio::test]
async fn api_gateway_v2_events_reach_the_router() {
    let state = AppState::new(
        Arc::new(MemoryStore::new()),
        ServerConfig {
            api_key: Some("s3cret".into()),
            ..ServerConfig::default()
        },
    )
    .unwrap();
    let app = router(state);
    let call = |ev: String| {
        let app = app.clone();
        async move {
            let req = lambda_http::request::from_str(&ev).expect("a valid API Gateway v2 event");
            app.oneshot(req).await.expect("infallible")
        }
    };
    let auth = "Bearer s3cret";

    // Create with If-None-Match: *.
    let resp = call(event(
        "PUT",
        "/v1/objects/archive/CHG-1.json",
        json!({"authorization": auth, "if-none-match": "*", "content-type": "application/json"}),
        Some(r#"{"modifications":[]}"#),
    ))
    .await;
    assert_eq!(resp.status(), 201);
    let etag = resp.headers()["etag"].to_str().unwrap().to_string();

    // A conditional GET with the current ETag: 304.
    let resp = call(event(
        "GET",
        "/v1/objects/archive/CHG-1.json",
        json!({"authorization": auth, "if-none-match": etag}),
        None,
    ))
    .await;
    assert_eq!(resp.status(), 304);

    // A JSON patch append, then a stale If-Match: 412 naming the current ETag.
    let resp = call(event(
        "PATCH",
        "/v1/objects/archive/CHG-1.json",
        json!({"authorization": auth, "content-type": "application/json-patch+json"}),
        Some(r#"[{"op":"add","path":"/modifications/-","value":"A"}]"#),
    ))
    .await;
    assert_eq!(resp.status(), 200);
    let current = resp.headers()["etag"].to_str().unwrap().to_string();
    let resp = call(event(
        "PUT",
        "/v1/objects/archive/CHG-1.json",
        json!({"authorization": auth, "if-match": etag}),
        Some("{}"),
    ))
    .await;
    assert_eq!(resp.status(), 412);
    let body: Value =
        serde_json::from_slice(&to_bytes(resp.into_body(), 1 << 20).await.unwrap()).unwrap();
    assert_eq!(body["current_etag"], current.as_str());

    // No operator key: 401.
    let resp = call(event(
        "GET",
        "/v1/objects/archive/CHG-1.json",
        json!({}),
        None,
    ))
    .await;
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn lambda_refuses_to_run_without_an_operator_key() {
    let err = ifmatch_server::lambda::run(Arc::new(MemoryStore::new()), ServerConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ifmatch_server::lambda::LambdaError::NoKey));
}
