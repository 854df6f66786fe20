//! `/v1/users` (register), `/v1/sessions` (login, logout) and `/v1/me`.
//!
//! - `POST /v1/users` `{"username", "password", "name"?}`: **201** with the
//!   user. Who may register: anyone when the server has open registration
//!   (`ifmatch serve --open-registration`), else only the operator (a
//!   session user gets 403, no credentials 401). A taken username is 409
//!   `user_exists`; a username or password that breaks the rules is 400.
//! - `POST /v1/sessions` `{"username", "password"}` (no credentials needed):
//!   **201** `{"token", "token_type": "Bearer", "expires_at", "expires_in"}`.
//!   The token is opaque and random, shown once; the server keeps only its
//!   hash (see [`crate::sessions`]). A wrong username or password is 401
//!   `invalid_credentials` (same answer, same cost, for both).
//! - `DELETE /v1/sessions` with `Authorization: Bearer <token>`: logout,
//!   **204**; the token is refused from then on.
//! - `GET /v1/me`: who the credentials belong to.

use axum::Json;
use axum::extract::State;
use axum::routing::{get, post};
use http::header::AUTHORIZATION;
use http::{HeaderMap, StatusCode};
use ifmatch::accounts::{User, rfc3339};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::{Caller, MaybeCaller, Principal, bearer_token};
use crate::error::{ApiError, ErrorBody};
use crate::routes::extract::JsonBody;

/// The routes of this group.
pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/v1/users", post(register))
        .route("/v1/sessions", post(login).delete(logout))
        .route("/v1/me", get(me))
}

/// The body of a registration.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// 3–32 characters of a-z, 0-9, '_', '.', '-', starting with a letter or
    /// digit (ASCII letters are folded to lowercase).
    #[schema(
        min_length = 3,
        max_length = 32,
        pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        example = "alice"
    )]
    pub username: String,
    /// At least 8 characters, at most 1024 bytes of UTF-8.
    #[schema(
        min_length = 8,
        max_length = 1024,
        example = "correct horse battery staple"
    )]
    pub password: String,
    /// A display name (optional): at most 256 characters, no control characters.
    #[serde(default)]
    #[schema(
        max_length = 256,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*$",
        example = "Alice"
    )]
    pub name: String,
}

/// The body of a login.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The username (folded to lowercase).
    #[schema(example = "alice")]
    pub username: String,
    /// The password (at most 1024 bytes of UTF-8).
    #[schema(max_length = 1024, example = "correct horse battery staple")]
    pub password: String,
}

/// A user (never with a password hash).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserBody {
    /// The username, folded to lowercase.
    pub username: String,
    /// The display name.
    pub name: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

impl From<User> for UserBody {
    fn from(u: User) -> Self {
        UserBody {
            username: u.username,
            name: u.name,
            created_at: rfc3339(u.created_at),
            updated_at: rfc3339(u.updated_at),
        }
    }
}

/// A new session.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionBody {
    /// The bearer token: send it as `Authorization: Bearer <token>`.
    pub token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Whose session it is.
    pub username: String,
    /// When the token stops being accepted (RFC 3339).
    pub expires_at: String,
    /// Seconds until then.
    pub expires_in: u64,
}

/// Who the caller is.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MeBody {
    /// `operator` or `user`.
    pub principal: &'static str,
    /// The user (for `user`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<UserBody>,
}

/// Registers a user.
#[utoipa::path(
    post,
    path = "/v1/users",
    tag = "accounts",
    request_body(content = RegisterRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Registered", body = UserBody),
        (status = 400, description = "A rule broken (username, password, name), or invalid JSON (`bad_request`)", body = ErrorBody),
        (status = 401, description = "No credentials, and registration is not open", body = ErrorBody),
        (status = 403, description = "A session user, and registration is not open", body = ErrorBody),
        (status = 409, description = "The username is taken (`user_exists`)", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn register(
    State(app): State<AppState>,
    MaybeCaller(caller): MaybeCaller,
    JsonBody(req): JsonBody<RegisterRequest>,
) -> Result<(StatusCode, Json<UserBody>), ApiError> {
    if !app.config().open_registration {
        match caller {
            None => return Err(ApiError::Unauthorized),
            Some(p) => Caller(p)
                .require_operator("registration (the server is not --open-registration)")?,
        }
    }
    let user = app
        .accounts()
        .create(&req.username, &req.name, &req.password)
        .await?;
    Ok((StatusCode::CREATED, Json(user.into())))
}

/// Logs in: a new session token.
#[utoipa::path(
    post,
    path = "/v1/sessions",
    tag = "accounts",
    request_body(content = LoginRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Logged in", body = SessionBody),
        (status = 400, description = "A password longer than 1024 bytes, or invalid JSON (`bad_request`)", body = ErrorBody),
        (status = 401, description = "Wrong username or password (`invalid_credentials`)", body = ErrorBody),
    ),
    security(())
)]
pub async fn login(
    State(app): State<AppState>,
    JsonBody(req): JsonBody<LoginRequest>,
) -> Result<(StatusCode, Json<SessionBody>), ApiError> {
    let user = app
        .accounts()
        .authenticate(&req.username, &req.password)
        .await?;
    let session = app
        .sessions()
        .create(&user.username)
        .await
        .map_err(|e| ApiError::from_store(e, false))?;
    let now = app.config().clock.now();
    Ok((
        StatusCode::CREATED,
        Json(SessionBody {
            token: session.token,
            token_type: "Bearer",
            username: user.username,
            expires_at: rfc3339(session.expires_at),
            expires_in: session
                .expires_at
                .duration_since(now)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }),
    ))
}

/// Logs out: the session token in `Authorization` is refused from now on.
#[utoipa::path(
    delete,
    path = "/v1/sessions",
    tag = "accounts",
    responses(
        (status = 204, description = "Logged out"),
        (status = 400, description = "The credentials are the operator key, not a session", body = ErrorBody),
        (status = 401, description = "No valid session", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn logout(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|v| bearer_token(v.as_bytes()));
    match (&caller.0, token) {
        (Principal::User(_), Some(token)) => {
            app.sessions()
                .delete(token)
                .await
                .map_err(|e| ApiError::from_store(e, false))?;
            Ok(StatusCode::NO_CONTENT)
        }
        _ => Err(ApiError::BadRequest(
            "logout ends a session: send its token as the bearer token".into(),
        )),
    }
}

/// Who the credentials belong to.
#[utoipa::path(
    get,
    path = "/v1/me",
    tag = "accounts",
    responses(
        (status = 200, description = "The caller", body = MeBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn me(State(app): State<AppState>, caller: Caller) -> Result<Json<MeBody>, ApiError> {
    Ok(Json(match caller.0 {
        Principal::Operator => MeBody {
            principal: "operator",
            user: None,
        },
        Principal::User(username) => {
            let user = app.accounts().get(&username).await?.ok_or_else(|| {
                // The account was deleted while the session lived.
                ApiError::Unauthorized
            })?;
            MeBody {
                principal: "user",
                user: Some(user.into()),
            }
        }
    }))
}
