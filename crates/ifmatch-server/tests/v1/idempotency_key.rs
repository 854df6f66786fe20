//! The `Idempotency-Key` header on POST, PATCH and snapshot publishes: a
//! retry with the same key gets the first answer and applies nothing twice,
//! also after `504 outcome_unknown`; the same key with a different request
//! is refused; malformed keys are refused; keys are per caller. (The retries
//! after lost answers, dropped connections and unknown outcomes are
//! exercised under the whole fault model in `tests/sim.rs`.)

use std::sync::Arc;

use ifmatch::store::memory::MemoryStore;
use reqwest::Method;
use serde_json::{Value, json};

use crate::lost_answer::LostAnswer;
use crate::{Server, json};

const LIST: &str = "/v1/objects/archive/CHG-7.json";

async fn seed_list(s: &Server) {
    let r = s
        .op(Method::PUT, LIST)
        .body(json!({"items": []}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

fn append(s: &Server, key: &str, item: &str) -> reqwest::RequestBuilder {
    s.op(Method::PATCH, LIST)
        .header("content-type", "application/json-patch+json")
        .header("idempotency-key", key)
        .body(json!([{"op": "add", "path": "/items/-", "value": item}]).to_string())
}

async fn items(s: &Server) -> Value {
    let (st, body) = json(s.op(Method::GET, LIST).send().await.unwrap()).await;
    assert_eq!(st, 200);
    body["items"].clone()
}

#[tokio::test]
async fn a_patch_retried_with_its_key_is_answered_again_not_applied_again() {
    let s = Server::start(|_| {}).await;
    seed_list(&s).await;
    let first = append(&s, "\"chg-7-save-1\"", "a").send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let etag = first.headers()["etag"].clone();
    let (_, first_body) = json(first).await;

    // The same request again (a client that lost the answer), bare key form.
    let again = append(&s, "chg-7-save-1", "a").send().await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["etag"], etag);
    let (_, again_body) = json(again).await;
    assert_eq!(again_body, first_body);
    assert_eq!(items(&s).await, json!(["a"]));

    // A new key is a new change.
    let other = append(&s, "chg-7-save-2", "a").send().await.unwrap();
    assert_eq!(other.status(), 200);
    assert_eq!(items(&s).await, json!(["a", "a"]));
    s.shutdown().await;
}

#[tokio::test]
async fn a_key_reused_for_a_different_request_is_refused() {
    let s = Server::start(|_| {}).await;
    seed_list(&s).await;
    assert_eq!(append(&s, "k1", "a").send().await.unwrap().status(), 200);
    let (st, body) = json(append(&s, "k1", "b").send().await.unwrap()).await;
    assert_eq!(st, 422, "{body}");
    assert_eq!(body["error"], "idempotency_key_reused");
    assert_eq!(items(&s).await, json!(["a"]));
    s.shutdown().await;
}

#[tokio::test]
async fn malformed_keys_and_logins_with_a_key_are_refused() {
    let s = Server::start(|_| {}).await;
    seed_list(&s).await;
    for bad in ["", "\"\"", &"x".repeat(256), "\"unterminated", "caf\u{e9}"] {
        let r = s
            .op(Method::PATCH, LIST)
            .header("content-type", "application/json-patch+json")
            .header("idempotency-key", bad.as_bytes())
            .body(json!([{"op": "add", "path": "/items/-", "value": "x"}]).to_string())
            .send()
            .await
            .unwrap();
        let (st, body) = json(r).await;
        assert_eq!(st, 400, "key {bad:?}: {body}");
        assert_eq!(body["error"], "bad_request");
    }
    assert_eq!(items(&s).await, json!([]));
    let (st, body) = json(
        s.anon(Method::POST, "/v1/sessions")
            .header("idempotency-key", "login-1")
            .json(&json!({"username": "u", "password": "p"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 400, "{body}");
    s.shutdown().await;
}

#[tokio::test]
async fn a_sql_batch_retried_with_its_key_commits_once() {
    let s = Server::start(|_| {}).await;
    let alice = s.user("alice", "correct horse").await;
    let batch = json!({"statements": [
        {"sql": "CREATE TABLE IF NOT EXISTS notes(body TEXT)"},
        {"sql": "INSERT INTO notes(body) VALUES (?)", "params": ["hello"]},
    ]});
    for attempt in 0..2 {
        let r = s
            .as_user(&alice, Method::POST, "/v1/db")
            .header("idempotency-key", "\"note-1\"")
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers().get("idempotent-replayed").is_some(),
            attempt == 1
        );
    }
    let (st, body) = json(
        s.as_user(&alice, Method::POST, "/v1/db")
            .json(&json!({"statements": [{"sql": "SELECT count(*) FROM notes"}]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["results"][0]["rows"], json!([[1]]));
    s.shutdown().await;
}

#[tokio::test]
async fn keys_belong_to_their_caller() {
    let s = Server::start(|_| {}).await;
    let alice = s.user("alice", "correct horse").await;
    let bob = s.user("bob", "battery staple").await;
    let batch = json!({"statements": [
        {"sql": "CREATE TABLE IF NOT EXISTS notes(body TEXT)"},
        {"sql": "INSERT INTO notes(body) VALUES ('mine')"},
    ]});
    for token in [&alice, &bob] {
        let r = s
            .as_user(token, Method::POST, "/v1/db")
            .header("idempotency-key", "same-key")
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // Bob's first use of the key is not Alice's answer.
        assert!(r.headers().get("idempotent-replayed").is_none());
    }
    s.shutdown().await;
}

/// A snapshot publish (PUT) and a rollback whose head write landed but whose
/// answer was lost, with the store failing after it: the server cannot tell
/// and answers `504 outcome_unknown`. Retried with the same key they are
/// answered 201 with the version the first request created
/// (`Idempotent-Replayed: true`), and exactly one new version exists.
#[tokio::test]
async fn snapshot_publishes_and_rollbacks_retried_after_an_unknown_outcome_land_once() {
    for rollback in [false, true] {
        let store = Arc::new(LostAnswer::new(
            Arc::new(MemoryStore::new()),
            "snapshots/",
            "/head",
        ));
        let s = Server::start_on(store.clone(), |_| {}).await;
        let publish = |body: &'static str| s.op(Method::PUT, "/v1/snapshots/quotes").body(body);
        let before = if rollback {
            // Two versions to roll back over, with every answer delivered.
            store.restore();
            for body in ["one", "two"] {
                assert_eq!(publish(body).send().await.unwrap().status(), 201);
            }
            store.arm();
            2
        } else {
            0
        };
        let send = || {
            let b = if rollback {
                s.op(Method::POST, "/v1/snapshots/quotes/rollback")
                    .json(&json!({"version": 1}))
            } else {
                publish("the artifact")
            };
            b.header("idempotency-key", "\"publish-1\"")
        };
        let (st, body) = json(send().send().await.unwrap()).await;
        assert_eq!(
            (st, body["error"].as_str()),
            (504, Some("outcome_unknown")),
            "{body}"
        );
        assert_eq!(store.lost(), 1, "the head write's answer was lost");
        store.restore();

        let r = send().send().await.unwrap();
        assert_eq!(
            r.headers()
                .get("idempotent-replayed")
                .map(|v| v.to_str().unwrap()),
            Some("true")
        );
        let (st, body) = json(r).await;
        assert_eq!(st, 201, "rollback {rollback}: {body}");
        assert_eq!(body["version"], before + 1, "{body}");
        // And again: the stored answer.
        let (st, again) = json(send().send().await.unwrap()).await;
        assert_eq!((st, &again), (201, &body));

        let (st, versions) = json(
            s.op(Method::GET, "/v1/snapshots/quotes/versions")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(st, 200);
        let numbers: Vec<u64> = versions["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_u64().unwrap())
            .collect();
        let expected: Vec<u64> = (1..=before + 1).rev().collect();
        assert_eq!(
            numbers, expected,
            "rollback {rollback}: exactly one new version"
        );
        let r = s
            .op(Method::GET, "/v1/snapshots/quotes")
            .send()
            .await
            .unwrap();
        let want = if rollback { "one" } else { "the artifact" };
        assert_eq!(r.text().await.unwrap(), want);
        s.shutdown().await;
    }
}
