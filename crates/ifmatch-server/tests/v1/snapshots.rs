//! `/v1/snapshots/{name}`: publish with preconditions, conditional reads
//! (304), versions, rollback, the build lease, and per-user scope.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use ifmatch::store::{DynStore, PutOptions, Store, intercept};
use ifmatch::{Result, Version};
use reqwest::Method;
use serde_json::json;
use tokio::sync::{Notify, oneshot};

use crate::{Server, call, json};

/// A memory store that holds the first write of a snapshot head until
/// released, so a test can let another publish land in between.
#[derive(Debug)]
struct HoldFirstHead {
    inner: DynStore,
    release: Mutex<Option<oneshot::Receiver<()>>>,
    arrived: Notify,
}

#[async_trait]
impl intercept::Intercept for HoldFirstHead {
    fn inner(&self) -> &dyn Store {
        &*self.inner
    }
    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> Result<Version> {
        let held = if key.ends_with("/head") {
            self.release.lock().unwrap().take()
        } else {
            None
        };
        if let Some(release) = held {
            self.arrived.notify_one();
            let _ = release.await;
        }
        self.inner.put(key, body, opts).await
    }
}

/// The status, ETag and body bytes of a response.
async fn raw(r: reqwest::Response) -> (u16, Option<String>, Vec<u8>) {
    let status = r.status().as_u16();
    let etag = r
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_string());
    (status, etag, r.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn publish_poll_versions_and_rollback() {
    let s = Server::start(|_| {}).await;
    let put = |body: &'static str| {
        s.op(Method::PUT, "/v1/snapshots/quotes")
            .body(body)
            .header("content-type", "application/json")
    };
    // The first version: only if nothing is published yet.
    let r = put(r#"{"v":1}"#)
        .header("If-None-Match", "*")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["etag"], "\"1\"");
    let (st, b) = json(r).await;
    assert_eq!(st, 201, "{b}");
    assert_eq!(
        b,
        json!({"name": "quotes", "outcome": "published", "version": 1, "etag": "\"1\""})
    );
    let (st, e) = call(put("again").header("If-None-Match", "*")).await;
    assert_eq!(st, 412, "{e}");
    assert_eq!(e["error"], "precondition_failed");
    assert_eq!(
        (e["key"].as_str(), e["current_etag"].as_str()),
        (Some("quotes"), Some("\"1\""))
    );

    // Read it: the ETag is the version; a reader holding it gets a 304 and no body.
    let r = s
        .op(Method::GET, "/v1/snapshots/quotes")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert_eq!(
        raw(r).await,
        (200, Some("\"1\"".into()), br#"{"v":1}"#.to_vec())
    );
    let poll = |etag: &'static str| {
        s.op(Method::GET, "/v1/snapshots/quotes")
            .header("If-None-Match", etag)
            .send()
    };
    assert_eq!(
        raw(poll("\"1\"").await.unwrap()).await,
        (304, Some("\"1\"".into()), vec![])
    );

    // Publish over version 1 only: lands as 2; a second builder that started from 1 gets 412.
    let (st, b) = call(put(r#"{"v":2}"#).header("If-Match", "\"1\"")).await;
    assert_eq!((st, b["version"].as_u64()), (201, Some(2)), "{b}");
    let (st, e) = call(put("late").header("If-Match", "\"1\"")).await;
    assert_eq!(st, 412, "{e}");
    assert_eq!(e["current_etag"], "\"2\"");
    // The poller sees the change.
    assert_eq!(
        raw(poll("\"1\"").await.unwrap()).await,
        (200, Some("\"2\"".into()), br#"{"v":2}"#.to_vec())
    );
    // If-Match on a read: 412 naming the current version.
    let (st, e) = call(
        s.op(Method::GET, "/v1/snapshots/quotes")
            .header("If-Match", "\"1\""),
    )
    .await;
    assert_eq!(
        (st, e["current_etag"].as_str()),
        (412, Some("\"2\"")),
        "{e}"
    );

    // Versions, newest first; an old one by number.
    let (st, v) = call(s.op(Method::GET, "/v1/snapshots/quotes/versions")).await;
    assert_eq!(st, 200, "{v}");
    let nums: Vec<u64> = v["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["version"].as_u64().unwrap())
        .collect();
    assert_eq!(nums, vec![2, 1]);
    assert_eq!(v["versions"][1]["etag"], "\"1\"");
    assert_eq!(v["versions"][1]["size"], 7);
    let r = s
        .op(Method::GET, "/v1/snapshots/quotes/versions/1")
        .send()
        .await
        .unwrap();
    assert_eq!(
        raw(r).await,
        (200, Some("\"1\"".into()), br#"{"v":1}"#.to_vec())
    );
    let (st, e) = call(s.op(Method::GET, "/v1/snapshots/quotes/versions/9")).await;
    assert_eq!(
        (st, e["error"].as_str(), e["key"].as_str()),
        (404, Some("not_found"), Some("quotes"))
    );
    let (st, _) = call(s.op(Method::GET, "/v1/snapshots/quotes/versions/x")).await;
    assert_eq!(st, 400);

    // Roll back to 1: republished as 3.
    let (st, b) = call(
        s.op(Method::POST, "/v1/snapshots/quotes/rollback")
            .json(&json!({"version": 1})),
    )
    .await;
    assert_eq!(st, 201, "{b}");
    assert_eq!(
        (b["version"].as_u64(), b["rolled_back_from"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(
        raw(poll("\"2\"").await.unwrap()).await,
        (200, Some("\"3\"".into()), br#"{"v":1}"#.to_vec())
    );
    let (st, _) = call(
        s.op(Method::POST, "/v1/snapshots/quotes/rollback")
            .json(&json!({"version": 42})),
    )
    .await;
    assert_eq!(st, 404);

    // Nothing published, a bad name.
    let (st, e) = call(s.op(Method::GET, "/v1/snapshots/nothing")).await;
    assert_eq!((st, e["error"].as_str()), (404, Some("not_found")), "{e}");
    let (st, e) = call(s.op(Method::GET, "/v1/snapshots/a%20b")).await;
    assert_eq!((st, e["error"].as_str()), (400, Some("bad_request")), "{e}");
    s.shutdown().await;
}

#[tokio::test]
async fn the_build_lease_coalesces_builders() {
    let s = Server::start(|_| {}).await;
    let (st, a) = call(
        s.op(Method::POST, "/v1/snapshots/quotes/build")
            .json(&json!({"ttl": 60})),
    )
    .await;
    assert_eq!(st, 201, "{a}");
    assert_eq!(a["name"], "snapshot-build/quotes");
    let owner = a["owner"].as_str().unwrap().to_string();
    // A second builder is told someone is building (and by whom, as a fingerprint).
    let (st, e) = call(s.op(Method::POST, "/v1/snapshots/quotes/build")).await;
    assert_eq!(st, 409, "{e}");
    assert_eq!(
        (e["error"].as_str(), &e["holder"]),
        (Some("lease_held"), &a["holder"])
    );
    // It is the lease the Rust LeaseBuildGuard takes: visible under /v1/leases.
    let (st, l) = call(s.op(Method::GET, "/v1/leases/snapshot-build/quotes")).await;
    assert_eq!((st, l["token"].as_u64()), (200, a["token"].as_u64()), "{l}");
    // Only the owner gives it back.
    let release = |owner: &str| {
        s.op(Method::DELETE, "/v1/snapshots/quotes/build")
            .header("Lease-Owner", owner)
            .send()
    };
    let (st, e) = json(release("http-guess").await.unwrap()).await;
    assert_eq!((st, e["error"].as_str()), (409, Some("not_owner")), "{e}");
    let (st, _) = json(release(&owner).await.unwrap()).await;
    assert_eq!(st, 204);
    let (st, _) = call(s.op(Method::POST, "/v1/snapshots/quotes/build")).await;
    assert_eq!(st, 201);
    s.shutdown().await;
}

#[tokio::test]
async fn users_have_their_own_snapshots() {
    let s = Server::start(|c| c.user_prefixes = true).await;
    let alice = s.user("alice", "correct horse").await;
    let bob = s.user("bob", "battery staple").await;
    let (_, pa) = s.id_and_prefix(&alice).await;
    let put = |token: &str, body: &'static str| {
        s.as_user(token, Method::PUT, "/v1/snapshots/deck")
            .body(body)
            .send()
    };
    assert_eq!(json(put(&alice, "a1").await.unwrap()).await.0, 201);
    assert_eq!(json(put(&bob, "b1").await.unwrap()).await.0, 201);
    assert_eq!(json(put(&bob, "b2").await.unwrap()).await.0, 201);
    let get = |token: &str| s.as_user(token, Method::GET, "/v1/snapshots/deck").send();
    assert_eq!(
        raw(get(&alice).await.unwrap()).await,
        (200, Some("\"1\"".into()), b"a1".to_vec())
    );
    assert_eq!(
        raw(get(&bob).await.unwrap()).await,
        (200, Some("\"2\"".into()), b"b2".to_vec())
    );
    // The operator's "deck" is a third one; the user's lives under their prefix.
    let (st, _) = call(s.op(Method::GET, "/v1/snapshots/deck")).await;
    assert_eq!(st, 404);
    let head = format!("{pa}snapshots/deck/head");
    let (st, l) = call(s.op(Method::GET, &format!("/v1/objects?prefix={head}"))).await;
    assert_eq!(st, 200, "{l}");
    assert_eq!(l["objects"][0]["key"], head.as_str(), "{l}");
    // A user's build lease is under their prefix too.
    let (st, l) = call(s.as_user(&alice, Method::POST, "/v1/snapshots/deck/build")).await;
    assert_eq!(st, 201, "{l}");
    let (st, _) = call(s.as_user(
        &alice,
        Method::GET,
        &format!("/v1/leases/{pa}snapshot-build/deck"),
    ))
    .await;
    assert_eq!(st, 200);
    s.shutdown().await;

    // Without per-user prefixes, snapshots are the operator's.
    let s = Server::start(|_| {}).await;
    let alice = s.user("alice", "correct horse").await;
    let (st, e) = call(s.as_user(&alice, Method::GET, "/v1/snapshots/deck")).await;
    assert_eq!((st, e["error"].as_str()), (403, Some("forbidden")), "{e}");
    s.shutdown().await;
}

/// A PUT whose publish loses to an upload that reached the server later is
/// told it was superseded (200), and the later upload is current.
#[tokio::test]
async fn a_publish_overtaken_by_a_later_upload_is_superseded() {
    let (release, held) = oneshot::channel();
    let store = Arc::new(HoldFirstHead {
        inner: Arc::new(ifmatch::store::memory::MemoryStore::new()),
        release: Mutex::new(Some(held)),
        arrived: Notify::new(),
    });
    let s = Server::start_on(store.clone(), |_| {}).await;
    let first = tokio::spawn(s.op(Method::PUT, "/v1/snapshots/q").body("early").send());
    // The first upload has built and is about to commit; a later one lands first.
    store.arrived.notified().await;
    s.clock.advance(Duration::from_secs(1));
    let (st, b) = call(s.op(Method::PUT, "/v1/snapshots/q").body("later")).await;
    assert_eq!((st, b["version"].as_u64()), (201, Some(1)), "{b}");
    release.send(()).unwrap();
    let r = first.await.unwrap().unwrap();
    assert_eq!(r.headers()["etag"], "\"1\"");
    let (st, b) = json(r).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(
        b,
        json!({"name": "q", "outcome": "superseded", "version": 1, "etag": "\"1\""})
    );
    let r = s.op(Method::GET, "/v1/snapshots/q").send().await.unwrap();
    assert_eq!(raw(r).await, (200, Some("\"1\"".into()), b"later".to_vec()));
    s.shutdown().await;
}
