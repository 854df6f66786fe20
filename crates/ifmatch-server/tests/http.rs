//! Black-box HTTP tests: a real server on an ephemeral 127.0.0.1 port, driven with reqwest.

use std::sync::Arc;
use std::time::Duration;

use ifmatch::clock::SharedRng;
use ifmatch::store::fault::{FaultConfig, FaultStore};
use ifmatch::store::memory::MemoryStore;
use ifmatch::{DynStore, store};
use ifmatch_server::{AppState, ServerConfig};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const KEY: &str = "s3cret";

/// A running server: its base URL, and a way to stop it gracefully.
struct Server {
    base: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ifmatch_server::ServerError>>,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    async fn start_on(store: DynStore, config: ServerConfig) -> Server {
        let listener = ifmatch_server::bind("127.0.0.1:0".parse().unwrap(), &config)
            .await
            .unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = AppState::new(store, config).unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(ifmatch_server::serve(listener, state, async {
            let _ = rx.await;
        }));
        Server {
            base,
            stop: Some(tx),
            task,
            _dir: None,
        }
    }

    /// A server with the operator key on a memory store.
    async fn start(config: ServerConfig) -> Server {
        Server::start_on(Arc::new(MemoryStore::new()), config).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        Client::new()
            .request(method, self.url(path))
            .bearer_auth(KEY)
    }

    async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

fn keyed() -> ServerConfig {
    ServerConfig {
        api_key: Some(KEY.into()),
        ..ServerConfig::default()
    }
}

fn etag(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("etag")
        .expect("an ETag")
        .to_str()
        .unwrap()
        .to_string()
}

async fn put(s: &Server, key: &str, body: &str) -> String {
    let r = s
        .req(Method::PUT, &format!("/v1/objects/{key}"))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    etag(&r)
}

#[tokio::test]
async fn seed_002_two_editors_on_a_file_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("store").display());
    let store = store::open(&url).await.unwrap();
    let mut s = Server::start_on(store, keyed()).await;
    s._dir = Some(dir);
    let path = "/v1/objects/archive/CHG-12345.json";

    // Creation with duplicate prevention (If-None-Match: *): the second create loses.
    let change = json!({"changeId": "CHG-12345", "changeTitle": "Deploy", "modifications": []});
    let r = s
        .req(Method::PUT, path)
        .header("if-none-match", "*")
        .header("content-type", "application/json")
        .json(&change)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let created = etag(&r);
    let r = s
        .req(Method::PUT, path)
        .header("if-none-match", "*")
        .json(&change)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);

    // A and B open the edit page: same ETag.
    let a = s.req(Method::GET, path).send().await.unwrap();
    let b = s.req(Method::GET, path).send().await.unwrap();
    let (ea, eb) = (etag(&a), etag(&b));
    assert_eq!(ea, created);
    assert_eq!(ea, eb);
    assert_eq!(a.headers()["content-type"], "application/json");
    let mut doc_a: Value = a.json().await.unwrap();
    let mut doc_b: Value = b.json().await.unwrap();

    // A saves.
    doc_a["changeTitle"] = json!("Deploy (A)");
    let r = s
        .req(Method::PUT, path)
        .header("if-match", &ea)
        .json(&doc_a)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let after_a = etag(&r);
    assert_ne!(after_a, ea);

    // B saves on the stale ETag: 412 naming the current one; nothing is lost.
    doc_b["customers"] = json!(["customer-c"]);
    let r = s
        .req(Method::PUT, path)
        .header("if-match", &eb)
        .json(&doc_b)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"], "precondition_failed");
    assert_eq!(err["key"], "archive/CHG-12345.json");
    assert_eq!(err["current_etag"], after_a.as_str());

    // B re-reads (sees A's title), merges and saves.
    let r = s.req(Method::GET, path).send().await.unwrap();
    let fresh = etag(&r);
    let mut doc: Value = r.json().await.unwrap();
    assert_eq!(doc["changeTitle"], "Deploy (A)");
    doc["customers"] = json!(["customer-c"]);
    let r = s
        .req(Method::PUT, path)
        .header("if-match", &fresh)
        .json(&doc)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let doc: Value = s
        .req(Method::GET, path)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["changeTitle"], "Deploy (A)");
    assert_eq!(doc["customers"], json!(["customer-c"]));
    s.shutdown().await;
}

#[tokio::test]
async fn twenty_concurrent_patch_appends_without_if_match_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("store").display());
    let store = store::open(&url).await.unwrap();
    let s = Server::start_on(store, keyed()).await;
    let path = "/v1/objects/archive/CHG-1.json";
    put(&s, "archive/CHG-1.json", r#"{"modifications":[]}"#).await;
    let client = Client::new();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let req = client
            .patch(s.url(path))
            .bearer_auth(KEY)
            .header("content-type", "application/json-patch+json")
            .body(
                json!([{"op": "add", "path": "/modifications/-", "value": {"by": i}}]).to_string(),
            );
        tasks.push(tokio::spawn(
            async move { req.send().await.unwrap().status() },
        ));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    let doc: Value = s
        .req(Method::GET, path)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut by: Vec<i64> = doc["modifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["by"].as_i64().unwrap())
        .collect();
    by.sort();
    assert_eq!(by, (0..20).collect::<Vec<_>>());
    // The update loop's counters reach /metrics.
    let m = Client::new()
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("ifmatch_update_attempts_total"), "{m}");
    s.shutdown().await;
}

#[tokio::test]
async fn patch_is_strict_with_if_match_and_reports_what_does_not_apply() {
    let s = Server::start(keyed()).await;
    let path = "/v1/objects/doc";
    let v1 = put(&s, "doc", r#"{"a":1,"list":[]}"#).await;
    let merge = |tag: Option<&str>, body: &str| {
        let mut r = s
            .req(Method::PATCH, path)
            .header("content-type", "application/merge-patch+json")
            .body(body.to_string());
        if let Some(t) = tag {
            r = r.header("if-match", t);
        }
        r.send()
    };
    let r = merge(Some(&v1), r#"{"a":2}"#).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v2 = etag(&r);
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc, json!({"a": 2, "list": []}));
    // The stale tag: 412 naming the current one.
    let r = merge(Some(&v1), r#"{"a":3}"#).await.unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["current_etag"], v2.as_str());
    // A failed test op: 422; the value is unchanged.
    let r = s
        .req(Method::PATCH, path)
        .header("content-type", "application/json-patch+json")
        .body(r#"[{"op":"test","path":"/a","value":99}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "patch_failed");
    let r = s
        .req(Method::PATCH, path)
        .header("content-type", "application/json-patch+json")
        .body(r#"[{"op":"remove","path":"/nope"}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // Not a patch document: 400; not a patch type: 415; a missing key: 404.
    let r = merge(None, "{not json").await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = s
        .req(Method::PATCH, path)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = s
        .req(Method::PATCH, "/v1/objects/missing")
        .header("content-type", "application/merge-patch+json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // A value that is not JSON: 409 not_json.
    put(&s, "bin", "\u{1}\u{2}").await;
    let r = s
        .req(Method::PATCH, "/v1/objects/bin")
        .header("content-type", "application/merge-patch+json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "not_json");
    let current: Value = s
        .req(Method::GET, path)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(current, json!({"a": 2, "list": []}));
    s.shutdown().await;
}

#[tokio::test]
async fn conditional_header_edge_cases() {
    let s = Server::start(keyed()).await;
    let path = "/v1/objects/k";
    let v = put(&s, "k", "one").await;
    let bare = v.trim_matches('"').to_string();
    let get = |h: &'static str, val: String| s.req(Method::GET, path).header(h, val).send();
    let put_with =
        |h: &'static str, val: String| s.req(Method::PUT, path).header(h, val).body("same").send();

    // Lists: any listed strong tag matches.
    assert_eq!(
        get("if-match", format!("\"nope\", {v}"))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        get("if-match", "\"a\", \"b\"".into())
            .await
            .unwrap()
            .status(),
        StatusCode::PRECONDITION_FAILED
    );
    // Weak tags never match under If-Match (strong comparison)...
    assert_eq!(
        get("if-match", format!("W/{v}")).await.unwrap().status(),
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(
        put_with("if-match", format!("W/{v}"))
            .await
            .unwrap()
            .status(),
        StatusCode::PRECONDITION_FAILED
    );
    // ...but do under If-None-Match (weak comparison).
    let r = get("if-none-match", format!("W/{v}")).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(etag(&r), v);
    assert_eq!(
        get("if-none-match", format!("\"x\", W/{v}"))
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_MODIFIED
    );
    // 304 only for GET/HEAD: a PUT with a matching If-None-Match is 412.
    assert_eq!(
        put_with("if-none-match", format!("W/{v}"))
            .await
            .unwrap()
            .status(),
        StatusCode::PRECONDITION_FAILED
    );
    // *: If-Match: * holds when the key exists, If-None-Match: * when it does not.
    assert_eq!(
        get("if-none-match", "*".into()).await.unwrap().status(),
        StatusCode::NOT_MODIFIED
    );
    let r = put_with("if-match", "*".into()).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v2 = etag(&r);
    let r = s
        .req(Method::PUT, "/v1/objects/fresh")
        .header("if-match", "*")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    // If-Match is evaluated before If-None-Match (RFC 9110 §13.2.2).
    let r = s
        .req(Method::GET, path)
        .header("if-match", "\"stale\"")
        .header("if-none-match", v2.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    // Several header lines form one list.
    let r = s
        .req(Method::PUT, path)
        .header("if-match", "\"stale\"")
        .header("if-match", v2.clone())
        .body("three")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v3 = etag(&r);
    // If-Unmodified-Since / If-Modified-Since are ignored (no dates).
    let r = s
        .req(Method::GET, path)
        .header("if-modified-since", "Sun, 06 Nov 2094 08:49:37 GMT")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Malformed: unquoted, * in a list, unterminated → 400.
    for bad in [bare.as_str(), "*, \"a\"", "\"open", "W/"] {
        for h in ["if-match", "if-none-match"] {
            let r = get(h, bad.to_string()).await.unwrap();
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{h}: {bad}");
            assert_eq!(r.json::<Value>().await.unwrap()["error"], "bad_request");
        }
    }
    // Conditional DELETE: stale tag 412, current tag 204, then GET 404.
    let r = s
        .req(Method::DELETE, path)
        .header("if-match", v.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        r.json::<Value>().await.unwrap()["current_etag"],
        v3.as_str()
    );
    let r = s
        .req(Method::DELETE, path)
        .header("if-match", v3)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // A missing key is 404 whatever the preconditions (RFC 9110 §13.2.1).
    let r = get("if-match", "*".into()).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    s.shutdown().await;
}

#[tokio::test]
async fn get_head_304_metadata_and_request_ids() {
    let s = Server::start(keyed()).await;
    let r = s
        .req(Method::PUT, "/v1/objects/cfg/app.json")
        .header("content-type", "application/json")
        .header("x-ifmatch-meta-owner", "team-a")
        .body(r#"{"x":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let v = etag(&r);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["etag"], v.as_str());
    let r = s
        .req(Method::GET, "/v1/objects/cfg/app.json")
        .header("x-request-id", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-request-id"], "req-42");
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["x-ifmatch-meta-owner"], "team-a");
    assert!(r.headers().get("x-ifmatch-meta-ifmatch-wid").is_none());
    let r = s
        .req(Method::GET, "/v1/objects/cfg/app.json")
        .header("if-none-match", v.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(etag(&r), v);
    assert!(!r.headers()["x-request-id"].is_empty());
    let r = s
        .req(Method::HEAD, "/v1/objects/cfg/app.json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(etag(&r), v);
    let r = s
        .req(Method::HEAD, "/v1/objects/cfg/app.json")
        .header("if-none-match", v.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = s.req(Method::GET, "/v1/objects/none").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"], "not_found");
    assert_eq!(e["key"], "none");
    // An invalid key is 400 JSON.
    let r = s
        .req(Method::GET, "/v1/objects/a/../b")
        .send()
        .await
        .unwrap();
    assert!(r.status() == StatusCode::BAD_REQUEST || r.status() == StatusCode::NOT_FOUND);
    s.shutdown().await;
}

#[tokio::test]
async fn require_preconditions_gives_428_on_existing_keys() {
    let s = Server::start(ServerConfig {
        require_preconditions: true,
        ..keyed()
    })
    .await;
    // Creating without a precondition is fine: nothing can be overwritten.
    let v = put(&s, "k", "one").await;
    let r = s
        .req(Method::PUT, "/v1/objects/k")
        .body("two")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_REQUIRED);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"], "precondition_required");
    assert_eq!(e["current_etag"], v.as_str());
    let r = s.req(Method::DELETE, "/v1/objects/k").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_REQUIRED);
    let r = s
        .req(Method::PUT, "/v1/objects/k")
        .header("if-match", v.clone())
        .body("two")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = s
        .req(Method::DELETE, "/v1/objects/k")
        .header("if-match", etag(&r))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    s.shutdown().await;
}

#[tokio::test]
async fn body_limit_gives_413_json() {
    let s = Server::start(ServerConfig {
        body_limit: 1024,
        ..keyed()
    })
    .await;
    let r = s
        .req(Method::PUT, "/v1/objects/big")
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "payload_too_large"
    );
    put(&s, "small", "ok").await;
    s.shutdown().await;
}

#[tokio::test]
async fn the_operator_key_is_required_on_v1_only() {
    let s = Server::start(keyed()).await;
    let c = Client::new();
    let url = s.url("/v1/objects/k");
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Basic czNjcmV0"),
        Some(KEY),
    ] {
        let mut r = c.get(&url);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        assert!(r.headers().contains_key("www-authenticate"));
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "unauthorized");
    }
    let r = c.put(&url).body("x").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c.get(&url).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        c.get(s.url("/healthz")).send().await.unwrap().status(),
        StatusCode::OK
    );
    s.shutdown().await;
}

#[tokio::test]
async fn without_a_key_only_loopback() {
    let err = ifmatch_server::bind("0.0.0.0:0".parse().unwrap(), &ServerConfig::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("without an operator key"), "{err}");
    // On loopback it runs, open.
    let s = Server::start(ServerConfig::default()).await;
    let r = Client::new()
        .put(s.url("/v1/objects/k"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    s.shutdown().await;
}

#[tokio::test]
async fn openapi_and_metrics() {
    let s = Server::start(keyed()).await;
    put(&s, "m", "1").await;
    let doc: Value = Client::new()
        .get(s.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for p in ["/v1/objects/{key}", "/healthz", "/metrics", "/openapi.json"] {
        assert!(paths.contains_key(p), "{p} missing from {paths:?}");
    }
    for m in ["get", "head", "put", "patch", "delete"] {
        assert!(paths["/v1/objects/{key}"].get(m).is_some(), "{m}");
    }
    let r = Client::new().get(s.url("/metrics")).send().await.unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let m = r.text().await.unwrap();
    assert!(m.contains("ifmatch_http_requests_total{"), "{m}");
    assert!(m.contains("route=\"/v1/objects/{*key}\""), "{m}");
    assert!(
        m.contains("ifmatch_http_request_duration_seconds_bucket"),
        "{m}"
    );
    s.shutdown().await;
}

fn slow_store(latency: Duration) -> DynStore {
    Arc::new(FaultStore::new(
        Arc::new(MemoryStore::new()),
        FaultConfig {
            latency: (latency, latency),
            ..FaultConfig::default()
        },
        SharedRng::seeded(1),
    ))
}

#[tokio::test]
async fn graceful_shutdown_finishes_the_request_in_flight() {
    let s = Server::start_on(slow_store(Duration::from_millis(400)), keyed()).await;
    let req = s.req(Method::PUT, "/v1/objects/slow").body("v");
    let in_flight = tokio::spawn(async move { req.send().await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let Server { mut stop, task, .. } = s;
    let _ = stop.take().unwrap().send(());
    let resp = in_flight.await.unwrap().unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the server stops after the request")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn slow_requests_time_out_with_504_json() {
    let s = Server::start_on(
        slow_store(Duration::from_millis(500)),
        ServerConfig {
            request_timeout: Duration::from_millis(100),
            ..keyed()
        },
    )
    .await;
    let r = s.req(Method::GET, "/v1/objects/k").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "timeout");
    s.shutdown().await;
}
