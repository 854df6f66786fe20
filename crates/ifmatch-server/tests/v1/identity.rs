//! Identity: a user's data belongs to their account id, not to their reusable
//! username, and a session belongs to the account as it was when the
//! password was checked.
//!
//! - [`a_freed_username_hands_over_nothing`]: after an account is deleted,
//!   whoever registers the same name reaches none of the old account's SQL
//!   rows, objects, leases or idempotency keys.
//! - [`a_login_racing_a_password_reset_gets_no_lasting_session`]: a login that
//!   checked the old password while an operator reset it gets a session that
//!   the server refuses.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ifmatch::store::memory::MemoryStore;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::hooked::{Hook, Hooked, Write};
use crate::{Server, json};

/// The key prefix a session user may use, as `/v1/me` reports it.
async fn scope(s: &Server, token: &str) -> String {
    s.me(token).await["prefix"].as_str().unwrap().to_string()
}

async fn sql(s: &Server, token: &str, statements: &[&str]) -> (u16, Value) {
    let body = json!({
        "statements": statements.iter().map(|q| json!({"sql": q})).collect::<Vec<_>>()
    });
    json(
        s.as_user(token, Method::POST, "/v1/db")
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// Finding 1 of the security review: with the data keyed by username, the
/// second "carol" read the first one's SQL rows and objects, found her lease
/// held and got her stored idempotency result.
#[tokio::test]
async fn a_freed_username_hands_over_nothing() {
    let s = Server::start(|c| {
        c.open_registration = true;
        c.user_prefixes = true;
    })
    .await;
    let old = s.user("carol", "first carol's password").await;
    let old_scope = scope(&s, &old).await;
    let put = |token: &str, path: String, body: &'static str| {
        s.as_user(token, Method::PUT, &format!("/v1/objects/{path}"))
            .body(body)
            .send()
    };
    assert_eq!(
        put(&old, format!("{old_scope}notes"), "first carol's notes")
            .await
            .unwrap()
            .status(),
        201
    );
    let (st, l) = json(
        s.as_user(&old, Method::POST, &format!("/v1/leases/{old_scope}job"))
            .json(&json!({"ttl": 3600}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 201, "{l}");
    let payload = json!({"payload": {"order": 7}});
    let (st, c) = json(
        s.as_user(
            &old,
            Method::POST,
            &format!("/v1/idempotency/{old_scope}charge"),
        )
        .json(&payload)
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(st, 201, "{c}");
    let (st, d) = json(
        s.as_user(
            &old,
            Method::PUT,
            &format!("/v1/idempotency/{old_scope}charge"),
        )
        .header("Idempotency-Claim", c["claim_id"].as_str().unwrap())
        .json(&json!({"result": "charged first carol"}))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(st, 200, "{d}");
    let (st, w) = sql(
        &s,
        &old,
        &[
            "CREATE TABLE secrets(s TEXT)",
            "INSERT INTO secrets VALUES ('first carol''s secret')",
        ],
    )
    .await;
    assert_eq!(st, 200, "{w}");

    // The operator deletes the account; someone else registers the name.
    assert!(s.state.accounts().delete("carol").await.unwrap());
    let new = s.user("carol", "second carol's password").await;
    let new_scope = scope(&s, &new).await;

    // What the new account reaches of the old one's data, by the old names:
    // nothing (they are out of its scope), and its SQL database is new.
    let mut seen = Vec::new();
    for (what, method, path, body) in [
        (
            "object",
            Method::GET,
            format!("/v1/objects/{old_scope}notes"),
            json!(null),
        ),
        (
            "lease",
            Method::POST,
            format!("/v1/leases/{old_scope}job"),
            json!({"ttl": 60}),
        ),
        (
            "idempotency key",
            Method::POST,
            format!("/v1/idempotency/{old_scope}charge"),
            payload.clone(),
        ),
    ] {
        let r = s
            .as_user(&new, method, &path)
            .json(&body)
            .send()
            .await
            .unwrap();
        seen.push((what, r.status().as_u16(), r.text().await.unwrap()));
    }
    let (st, e) = sql(&s, &new, &["SELECT s FROM secrets"]).await;
    seen.push(("database", st, e.to_string()));
    let outcome: Vec<(&str, u16, bool)> = seen
        .iter()
        .map(|(what, st, body)| {
            let refused = match *what {
                "database" => body.contains("no such table: secrets"),
                _ => body.contains("\"error\":\"forbidden\""),
            };
            (*what, *st, refused)
        })
        .collect();
    assert_eq!(
        outcome,
        [
            ("object", 403, true),
            ("lease", 403, true),
            ("idempotency key", 403, true),
            ("database", 400, true),
        ],
        "the second carol reached the first one's data: {seen:#?}"
    );
    // Its own scope is new and empty.
    assert_ne!(new_scope, old_scope);
    let (st, _) = json(
        s.as_user(&new, Method::GET, &format!("/v1/objects/{new_scope}notes"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 404);
    let (st, l) = json(
        s.as_user(&new, Method::POST, &format!("/v1/leases/{new_scope}job"))
            .json(&json!({"ttl": 60}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 201, "{l}");
    let (st, c) = json(
        s.as_user(
            &new,
            Method::POST,
            &format!("/v1/idempotency/{new_scope}charge"),
        )
        .json(&payload)
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!((st, c["state"].as_str()), (201, Some("claimed")), "{c}");
    s.shutdown().await;
}

/// Holds back the first write under `sessions/` until released, so a test
/// can act between a login's password check and its session write.
#[derive(Default)]
struct SessionGate {
    armed: AtomicBool,
    reached: Notify,
    release: Notify,
}

impl SessionGate {
    fn hook(self: &Arc<Self>) -> Hook {
        let gate = self.clone();
        Arc::new(move |key, write| {
            let hold = write == Write::Put
                && key.starts_with("sessions/")
                && gate.armed.swap(false, Ordering::SeqCst);
            let gate = gate.clone();
            Box::pin(async move {
                if hold {
                    gate.reached.notify_one();
                    gate.release.notified().await;
                }
            })
        })
    }
}

/// Finding 4 of the security review: sessions compared their creation time
/// with the account's `updated_at`, so a login that checked the old password
/// just before a reset, and wrote its session just after, kept a session
/// that outlived the reset.
#[tokio::test]
async fn a_login_racing_a_password_reset_gets_no_lasting_session() {
    let gate = Arc::new(SessionGate::default());
    let store = Hooked::new(Arc::new(MemoryStore::new()), gate.hook());
    let s = Server::start_on(store, |_| {}).await;
    let before = s.user("dora", "the old password").await;

    gate.armed.store(true, Ordering::SeqCst);
    let login = s
        .anon(Method::POST, "/v1/sessions")
        .json(&json!({"username": "dora", "password": "the old password"}))
        .send();
    let login = tokio::spawn(login);
    // The login has checked the old password and is about to write its session.
    gate.reached.notified().await;
    s.state
        .accounts()
        .set_password("dora", "the new password")
        .await
        .unwrap();
    gate.release.notify_one();
    let (st, session) = json(login.await.unwrap().unwrap()).await;
    assert_eq!(st, 201, "{session}");
    let raced = session["token"].as_str().unwrap();

    for (what, token) in [("raced", raced), ("earlier", before.as_str())] {
        let (st, e) = s.me_status(token).await;
        assert_eq!(
            (st, e["error"].as_str()),
            (401, Some("unauthorized")),
            "the {what} session outlived the reset: {e}"
        );
    }
    // A login with the new password works.
    let fresh = s.login("dora", "the new password").await;
    let (st, _) = s.me_status(&fresh).await;
    assert_eq!(st, 200);
    s.shutdown().await;
}
