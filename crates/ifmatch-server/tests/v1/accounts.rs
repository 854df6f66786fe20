//! `/v1/users`, `/v1/sessions`, `/v1/me`; session expiry; registration policy;
//! per-user prefixes. Password hashing is deliberately slow, so users are reused.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::{KEY, Server, json};

#[tokio::test]
async fn open_registration_login_me_logout_and_expiry() {
    let s = Server::start(|c| {
        c.open_registration = true;
        c.user_prefixes = true;
    })
    .await;
    // Anyone may register on an open server.
    let (st, u) = s
        .anon_json(
            Method::POST,
            "/v1/users",
            json!({"username": "Alice", "password": "correct horse", "name": "Alice A."}),
        )
        .await;
    assert_eq!(st, 201, "{u}");
    assert_eq!(u["username"], "alice");
    assert!(
        !u.to_string().contains("argon2"),
        "no hash leaves the server: {u}"
    );
    let (st, e) = s
        .anon_json(
            Method::POST,
            "/v1/users",
            json!({"username": "alice", "password": "another one"}),
        )
        .await;
    assert_eq!((st, e["error"].as_str()), (409, Some("user_exists")), "{e}");
    let (st, e) = s
        .anon_json(
            Method::POST,
            "/v1/users",
            json!({"username": "bob", "password": "short"}),
        )
        .await;
    assert_eq!((st, e["error"].as_str()), (400, Some("bad_request")), "{e}");

    // Wrong password and unknown user: the same 401.
    for (user, pw) in [("alice", "wrong password"), ("nobody", "correct horse")] {
        let (st, e) = s
            .anon_json(
                Method::POST,
                "/v1/sessions",
                json!({"username": user, "password": pw}),
            )
            .await;
        assert_eq!(
            (st, e["error"].as_str()),
            (401, Some("invalid_credentials")),
            "{e}"
        );
    }

    let (st, session) = s
        .anon_json(
            Method::POST,
            "/v1/sessions",
            json!({"username": "alice", "password": "correct horse"}),
        )
        .await;
    assert_eq!(st, 201, "{session}");
    assert_eq!(session["token_type"], "Bearer");
    assert_eq!(session["expires_in"], 24 * 3600);
    let token = session["token"].as_str().unwrap().to_string();
    // Only the token's hash is stored.
    let listed = s
        .state
        .store()
        .list("sessions/", Default::default())
        .await
        .unwrap();
    assert_eq!(listed.entries.len(), 1);
    assert!(!listed.entries[0].key.contains(&token[5..]));

    let (st, me) = json(
        s.as_user(&token, Method::GET, "/v1/me")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 200, "{me}");
    assert_eq!(me["principal"], "user");
    assert_eq!(me["user"]["username"], "alice");
    assert_eq!(me["user"]["name"], "Alice A.");
    let (_, me) = json(s.op(Method::GET, "/v1/me").send().await.unwrap()).await;
    assert_eq!(me["principal"], "operator");
    let (st, _) = json(s.anon(Method::GET, "/v1/me").send().await.unwrap()).await;
    assert_eq!(st, 401);
    let (st, _) = json(
        s.as_user(
            "ifms_0000000000000000000000000000000000000000000000000000000000000000",
            Method::GET,
            "/v1/me",
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(st, 401);

    // Per-user prefixes: objects, leases and idempotency keys under
    // users/<account id>/ only (not under the reusable username).
    let me = s.me(&token).await;
    let id = me["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 33, "a generated account id: {id}");
    assert_eq!(me["prefix"], format!("users/{id}/"));
    assert_eq!(u["id"], id.as_str(), "registration shows the id too");
    let mine = |rest: &str| format!("/v1/objects/users/{id}/{rest}");
    let r = s
        .as_user(&token, Method::PUT, &mine("notes"))
        .body("mine")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    for (method, path) in [
        (Method::PUT, "/v1/objects/users/bob/notes".to_string()),
        (Method::PUT, "/v1/objects/users/alice/notes".to_string()),
        (Method::GET, format!("/v1/objects/users/{id}")),
        (Method::GET, "/v1/objects/sessions/x".to_string()),
        (Method::GET, "/v1/objects/accounts/alice".to_string()),
        (Method::POST, "/v1/leases/shared".to_string()),
        (Method::POST, "/v1/idempotency/users/bob/k".to_string()),
    ] {
        let (st, e) = json(
            s.as_user(&token, method.clone(), &path)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (st, e["error"].as_str()),
            (403, Some("forbidden")),
            "{method} {path}: {e}"
        );
    }
    let (st, l) = json(
        s.as_user(&token, Method::POST, &format!("/v1/leases/users/{id}/job"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 201, "{l}");
    let (st, _) = json(
        s.as_user(
            &token,
            Method::POST,
            &format!("/v1/idempotency/users/{id}/k"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(st, 201);

    // Logout: the token is refused from then on.
    let r = s
        .as_user(&token, Method::DELETE, "/v1/sessions")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (st, _) = json(
        s.as_user(&token, Method::GET, "/v1/me")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 401);
    // The operator key is not a session.
    let (st, _) = json(s.op(Method::DELETE, "/v1/sessions").send().await.unwrap()).await;
    assert_eq!(st, 400);

    // A session expires after its TTL (on the server's clock).
    let token = s.login("alice", "correct horse").await;
    s.clock.advance(Duration::from_secs(24 * 3600 - 1));
    let (st, _) = json(
        s.as_user(&token, Method::GET, "/v1/me")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 200);
    s.clock.advance(Duration::from_secs(1));
    let (st, e) = json(
        s.as_user(&token, Method::GET, "/v1/me")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (st, e["error"].as_str()),
        (401, Some("unauthorized")),
        "{e}"
    );

    // A password reset ends every earlier session, on every route (not only
    // /v1/me); a login after it works.
    let old = s.login("alice", "correct horse").await;
    s.clock.advance(Duration::from_secs(1));
    s.state
        .accounts()
        .update(
            "alice",
            ifmatch::accounts::UserUpdate::password("battery staple"),
        )
        .await
        .unwrap();
    let r = s
        .as_user(&old, Method::GET, &mine("notes"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a session from before the password reset");
    let fresh = s.login("alice", "battery staple").await;
    let r = s
        .as_user(&fresh, Method::GET, &mine("notes"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Deleting the account ends its sessions at once.
    assert!(s.state.accounts().delete("alice").await.unwrap());
    let r = s
        .as_user(&fresh, Method::GET, &mine("notes"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a session of a deleted account");
    s.shutdown().await;
}

#[tokio::test]
async fn closed_registration_and_operator_scope() {
    // The defaults: registration by the operator only, no per-user prefixes.
    let s = Server::start(|_| {}).await;
    let (st, _) = s
        .anon_json(
            Method::POST,
            "/v1/users",
            json!({"username": "carol", "password": "correct horse"}),
        )
        .await;
    assert_eq!(st, 401);
    let token = s.user("carol", "correct horse").await;
    let (st, e) = json(
        s.as_user(&token, Method::POST, "/v1/users")
            .json(&json!({"username": "dave", "password": "correct horse"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((st, e["error"].as_str()), (403, Some("forbidden")), "{e}");
    // Without per-user prefixes, objects, leases and idempotency are the operator's.
    for (method, path) in [
        (Method::GET, "/v1/objects/users/carol/x"),
        (Method::POST, "/v1/leases/users/carol/x"),
        (Method::POST, "/v1/idempotency/users/carol/x"),
    ] {
        let (st, e) = json(
            s.as_user(&token, method.clone(), path)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (st, e["error"].as_str()),
            (403, Some("forbidden")),
            "{method} {path}: {e}"
        );
    }
    // A wrong operator key is still 401.
    let (st, _) = json(
        s.anon(Method::GET, "/v1/objects/x")
            .bearer_auth(format!("{KEY}x"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 401);
    s.shutdown().await;
}
