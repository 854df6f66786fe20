//! User management over HTTP, matching the CLI: the operator lists
//! (`GET /v1/users`) and deletes (`DELETE /v1/users/{name}`) users; a user
//! changes their own password (`PUT /v1/me/password`), which ends their other
//! sessions. Failed logins back off with 429 and `Retry-After`. Expired
//! sessions are collected, by the background sweeper too.

use std::time::Duration;

use ifmatch::store::list_all;
use reqwest::Method;
use serde_json::json;

use crate::{Server, json};

#[tokio::test]
async fn the_operator_lists_and_deletes_users() {
    let s = Server::start(|_| {}).await;
    let mut tokens = Vec::new();
    for name in ["erin", "bob", "dave", "alice", "carol"] {
        tokens.push((name, s.user(name, "correct horse").await));
    }
    let mut seen = Vec::new();
    let mut path = "/v1/users?limit=2".to_string();
    loop {
        let (st, page) = json(s.op(Method::GET, &path).send().await.unwrap()).await;
        assert_eq!(st, 200, "{page}");
        let users = page["users"].as_array().unwrap();
        assert!(users.len() <= 2, "{page}");
        for u in users {
            assert!(u.get("password_hash").is_none(), "{u}");
            assert_eq!(u["prefix"], format!("users/{}/", u["id"].as_str().unwrap()));
            seen.push(u["username"].as_str().unwrap().to_string());
        }
        match page["next_page_token"].as_str() {
            Some(t) => path = format!("/v1/users?limit=2&page_token={t}"),
            None => break,
        }
    }
    assert_eq!(seen, ["alice", "bob", "carol", "dave", "erin"]);
    let (st, page) = json(s.op(Method::GET, "/v1/users").send().await.unwrap()).await;
    assert_eq!((st, page["users"].as_array().unwrap().len()), (200, 5));
    assert_eq!(page["next_page_token"], serde_json::Value::Null);
    for bad in [
        "/v1/users?limit=0",
        "/v1/users?limit=1001",
        "/v1/users?limit=x",
        "/v1/users?other=1",
    ] {
        let (st, e) = json(s.op(Method::GET, bad).send().await.unwrap()).await;
        assert_eq!(
            (st, e["error"].as_str()),
            (400, Some("bad_request")),
            "{bad}: {e}"
        );
    }

    // Users may do neither.
    let bob = &tokens[1].1;
    for (method, path) in [
        (Method::GET, "/v1/users"),
        (Method::DELETE, "/v1/users/alice"),
    ] {
        let (st, e) = json(s.as_user(bob, method, path).send().await.unwrap()).await;
        assert_eq!(
            (st, e["error"].as_str()),
            (403, Some("forbidden")),
            "{path}: {e}"
        );
    }

    let r = s.op(Method::DELETE, "/v1/users/Bob").send().await.unwrap();
    assert_eq!(r.status(), 204);
    let (st, _) = s.me_status(bob).await;
    assert_eq!(st, 401, "the deleted account's session ended");
    let (st, e) = json(s.op(Method::DELETE, "/v1/users/bob").send().await.unwrap()).await;
    assert_eq!(
        (st, e["error"].as_str(), e["key"].as_str()),
        (404, Some("user_not_found"), Some("bob")),
        "{e}"
    );
    let (st, e) = json(
        s.op(Method::DELETE, "/v1/users/a%20b")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((st, e["error"].as_str()), (400, Some("bad_request")), "{e}");
    let (_, page) = json(s.op(Method::GET, "/v1/users").send().await.unwrap()).await;
    assert_eq!(page["users"].as_array().unwrap().len(), 4);
    s.shutdown().await;
}

#[tokio::test]
async fn a_user_changes_their_password_and_their_other_sessions_end() {
    let s = Server::start(|_| {}).await;
    let here = s.user("alice", "the old password").await;
    let elsewhere = s.login("alice", "the old password").await;
    let change = |token: &str, old: &str, new: &str| {
        s.as_user(token, Method::PUT, "/v1/me/password")
            .json(&json!({"old_password": old, "new_password": new}))
            .send()
    };
    let (st, e) = json(
        change(&here, "not my password", "the new password")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (st, e["error"].as_str()),
        (403, Some("wrong_password")),
        "{e}"
    );
    let (st, e) = json(change(&here, "the old password", "short").await.unwrap()).await;
    assert_eq!((st, e["error"].as_str()), (400, Some("bad_request")), "{e}");

    let (st, u) = json(
        change(&here, "the old password", "the new password")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 200, "{u}");
    assert_eq!(u["username"], "alice");
    // This session goes on; the other one ended.
    let (st, _) = s.me_status(&here).await;
    assert_eq!(st, 200);
    let (st, _) = s.me_status(&elsewhere).await;
    assert_eq!(st, 401);
    assert_eq!(s.try_login("alice", "the old password").await.0, 401);
    s.login("alice", "the new password").await;

    // The operator has no password; no credentials is 401.
    let (st, e) = json(change(crate::KEY, "a", "the new password").await.unwrap()).await;
    assert_eq!((st, e["error"].as_str()), (400, Some("bad_request")), "{e}");
    let (st, _) = s
        .anon_json(
            Method::PUT,
            "/v1/me/password",
            json!({"old_password": "a", "new_password": "the new password"}),
        )
        .await;
    assert_eq!(st, 401);
    s.shutdown().await;
}

#[tokio::test]
async fn failed_logins_back_off_with_429_and_retry_after() {
    let s = Server::start(|_| {}).await;
    s.user("fred", "fred's password").await;
    let login = |password: &'static str| {
        s.anon(Method::POST, "/v1/sessions")
            .json(&json!({"username": "fred", "password": password}))
            .send()
    };
    for _ in 0..6 {
        assert_eq!(s.try_login("fred", "a wrong guess").await.0, 401);
    }
    // In the back-off even the right password is refused, before any hashing.
    let r = login("fred's password").await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let (_, e) = json(r).await;
    assert_eq!(e["error"], "too_many_requests", "{e}");
    s.clock.advance(Duration::from_secs(1));
    assert_eq!(s.try_login("fred", "fred's password").await.0, 201);
    s.shutdown().await;
}

/// Behind a proxy the operator names (`client_ip_header`), the per-address
/// back-off keys on the address the proxy appended, the header's last one.
#[tokio::test]
async fn behind_a_proxy_the_back_off_keys_on_the_forwarded_address() {
    let s = Server::start(|c| {
        c.client_ip_header = Some(http::HeaderName::from_static("x-forwarded-for"));
    })
    .await;
    let login = |username: String, forwarded: &'static str| {
        s.anon(Method::POST, "/v1/sessions")
            .header("x-forwarded-for", forwarded)
            .json(&json!({"username": username, "password": "a wrong guess"}))
            .send()
    };
    for i in 0..21 {
        let r = login(format!("nobody{i}"), "203.0.113.1").await.unwrap();
        assert_eq!(r.status(), 401);
    }
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(login("other".into(), "203.0.113.1").await.unwrap()),
        429
    );
    // A client cannot escape by prepending an address of its own ...
    assert_eq!(
        status(
            login("other".into(), "198.51.100.7, 203.0.113.1")
                .await
                .unwrap()
        ),
        429
    );
    // ... and another address is not throttled.
    assert_eq!(
        status(login("other".into(), "198.51.100.7").await.unwrap()),
        401
    );
    s.shutdown().await;
}

async fn sessions(s: &Server) -> usize {
    list_all(&**s.state.store(), "sessions/")
        .await
        .unwrap()
        .len()
}

/// Before collection, every login left a session record behind for ever on
/// every backend but DynamoDB.
#[tokio::test]
async fn expired_sessions_are_collected() {
    let s = Server::start(|c| {
        c.session_ttl = Duration::from_secs(3600);
    })
    .await;
    s.user("gina", "gina's password").await;
    for _ in 0..9 {
        s.login("gina", "gina's password").await;
    }
    assert_eq!(sessions(&s).await, 10);
    let r = s.state.collector().collect_all().await.unwrap();
    assert_eq!((r.deleted, r.live), (0, 10), "{r:?}");
    // An hour for the tokens, a minute of grace.
    s.clock.advance(Duration::from_secs(3600 + 60));
    let live = s.login("gina", "gina's password").await;
    let r = s.state.collector().collect_all().await.unwrap();
    assert_eq!((r.deleted, r.live), (10, 1), "{r:?}");
    assert_eq!(sessions(&s).await, 1);
    let (st, _) = s.me_status(&live).await;
    assert_eq!(st, 200);
    s.shutdown().await;
}

#[tokio::test]
async fn the_background_sweeper_collects_them_without_being_asked() {
    let s = Server::start(|c| {
        c.session_ttl = Duration::from_secs(60);
        c.gc = Some(ifmatch_server::sweeper::GcSchedule {
            interval: Duration::from_millis(20),
            budget: 2,
        });
    })
    .await;
    s.user("hank", "hank's password").await;
    for _ in 0..4 {
        s.login("hank", "hank's password").await;
    }
    assert_eq!(sessions(&s).await, 5);
    s.clock.advance(Duration::from_secs(60 + 60));
    // Two records per sweep, a sweep every 20 ms: gone within a few sweeps.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sessions(&s).await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the sweeper did not collect"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s.shutdown().await;
}
