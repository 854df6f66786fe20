//! Black-box HTTP tests of the primitives' routes (leases, idempotency,
//! accounts and sessions, tenant SQL and files, snapshots, listing,
//! inspection, fenced writes): a real server on an ephemeral
//! 127.0.0.1 port, driven with reqwest. One test binary, one module per area.

mod accounts;
mod db;
mod db_files;
mod fencing;
#[path = "../../../ifmatch/tests/common/hooked.rs"]
mod hooked;
mod idempotency;
mod idempotency_key;
mod identity;
mod inspect;
mod leases;
mod listing;
#[path = "../../../ifmatch/tests/common/lost_answer.rs"]
mod lost_answer;
mod snapshots;
mod users;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ifmatch::DynStore;
use ifmatch::clock::ManualClock;
use ifmatch::store::memory::MemoryStore;
use ifmatch_server::{AppState, ServerConfig};
use reqwest::{Client, Method, Response};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The operator key of every test server.
pub const KEY: &str = "s3cret";

/// A running server.
pub struct Server {
    pub base: String,
    pub state: AppState,
    pub clock: Arc<ManualClock>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ifmatch_server::ServerError>>,
    _dir: tempfile::TempDir,
}

/// A configuration with the operator key, a manual clock and a tenant database cache.
pub fn config() -> (ServerConfig, Arc<ManualClock>, tempfile::TempDir) {
    let clock = Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ));
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        api_key: Some(KEY.into()),
        clock: clock.clone(),
        db_cache_dir: Some(dir.path().join("db-cache")),
        ..ServerConfig::default()
    };
    (config, clock, dir)
}

impl Server {
    /// A server on a fresh memory store; `tweak` adjusts the configuration.
    pub async fn start(tweak: impl FnOnce(&mut ServerConfig)) -> Server {
        Self::start_on(Arc::new(MemoryStore::new()), tweak).await
    }

    /// A server on `store`; `tweak` adjusts the configuration.
    pub async fn start_on(store: DynStore, tweak: impl FnOnce(&mut ServerConfig)) -> Server {
        let (mut config, clock, dir) = config();
        tweak(&mut config);
        let listener = ifmatch_server::bind("127.0.0.1:0".parse().unwrap(), &config)
            .await
            .unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = AppState::new(store, config).unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(ifmatch_server::serve(listener, state.clone(), async {
            let _ = rx.await;
        }));
        Server {
            base,
            state,
            clock,
            stop: Some(tx),
            task,
            _dir: dir,
        }
    }

    /// A request with the operator key.
    pub fn op(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.anon(method, path).bearer_auth(KEY)
    }

    /// A request with a session token.
    pub fn as_user(&self, token: &str, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.anon(method, path).bearer_auth(token)
    }

    /// A request without credentials.
    pub fn anon(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        Client::new().request(method, format!("{}{path}", self.base))
    }

    /// Registers (as the operator) and logs in `username`; returns the session token.
    pub async fn user(&self, username: &str, password: &str) -> String {
        let r = self
            .op(Method::POST, "/v1/users")
            .json(&serde_json::json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "register {username}: {:?}", r.text().await);
        self.login(username, password).await
    }

    /// Logs in; returns the session token.
    pub async fn login(&self, username: &str, password: &str) -> String {
        let r = self
            .anon(Method::POST, "/v1/sessions")
            .json(&serde_json::json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let body: Value = r.json().await.unwrap();
        body["token"].as_str().unwrap().to_string()
    }

    /// The account behind a session token, as `GET /v1/me` shows it
    /// (`id`, `prefix`, `username`, ...).
    pub async fn me(&self, token: &str) -> Value {
        let (st, me) = self.me_status(token).await;
        assert_eq!(st, 200, "{me}");
        me["user"].clone()
    }

    /// The account id and the key prefix (`users/<id>/`) behind a session token.
    pub async fn id_and_prefix(&self, token: &str) -> (String, String) {
        let me = self.me(token).await;
        let field = |f: &str| {
            me[f]
                .as_str()
                .unwrap_or_else(|| panic!("{f} in {me}"))
                .to_string()
        };
        (field("id"), field("prefix"))
    }

    /// The status and body of `GET /v1/me` with `token`.
    pub async fn me_status(&self, token: &str) -> (u16, Value) {
        json(
            self.as_user(token, Method::GET, "/v1/me")
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// The status and body of a login attempt.
    pub async fn try_login(&self, username: &str, password: &str) -> (u16, Value) {
        let body = serde_json::json!({"username": username, "password": password});
        self.anon_json(Method::POST, "/v1/sessions", body).await
    }

    /// The status and body of an unauthenticated request with a JSON body.
    pub async fn anon_json(&self, method: Method, path: &str, body: Value) -> (u16, Value) {
        json(self.anon(method, path).json(&body).send().await.unwrap()).await
    }

    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Sends `req`; the status and JSON body of the response (see [`json`]).
pub async fn call(req: reqwest::RequestBuilder) -> (u16, Value) {
    json(req.send().await.unwrap()).await
}

/// The status and JSON body of a response (`Null` for an empty body).
pub async fn json(r: Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    (status, body)
}

#[tokio::test]
async fn the_openapi_document_lists_the_new_routes() {
    let s = Server::start(|_| {}).await;
    let (st, doc) = json(s.anon(Method::GET, "/openapi.json").send().await.unwrap()).await;
    assert_eq!(st, 200);
    for path in [
        "/v1/leases/{name}",
        "/v1/idempotency/{key}",
        "/v1/users",
        "/v1/sessions",
        "/v1/me",
        "/v1/me/password",
        "/v1/users/{name}",
        "/v1/db",
        "/v1/objects",
        "/v1/snapshots/{name}",
        "/v1/snapshots/{name}/versions",
        "/v1/snapshots/{name}/versions/{version}",
        "/v1/snapshots/{name}/rollback",
        "/v1/snapshots/{name}/build",
        "/v1/db/export",
        "/v1/db/import",
        "/v1/db/info",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    assert!(doc["paths"]["/v1/leases/{name}"].get("delete").is_some());
    assert!(doc["paths"]["/v1/leases/{name}"].get("get").is_some());
    assert!(doc["paths"]["/v1/idempotency/{key}"].get("get").is_some());
    let header_names = |op: &Value| -> Vec<String> {
        op["parameters"]
            .as_array()
            .map(|ps| ps.iter().map(|p| p["name"].to_string()).collect())
            .unwrap_or_default()
    };
    let patch = &doc["paths"]["/v1/objects/{key}"]["patch"];
    assert!(header_names(patch).contains(&"\"Idempotency-Key\"".to_string()));
    assert!(patch["responses"].get("422").is_some());
    assert!(
        !header_names(&doc["paths"]["/v1/sessions"]["post"])
            .contains(&"\"Idempotency-Key\"".to_string())
    );
    assert!(doc["paths"]["/v1/users"].get("get").is_some());
    for method in ["put", "patch", "delete"] {
        let op = &doc["paths"]["/v1/objects/{key}"][method];
        assert!(
            header_names(op).contains(&"\"Fencing-Token\"".to_string()),
            "{method}: {op}"
        );
    }
    assert!(doc["components"]["securitySchemes"].get("bearer").is_some());
    s.shutdown().await;
}
