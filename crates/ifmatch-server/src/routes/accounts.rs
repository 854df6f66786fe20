//! `/v1/users` (register, list, delete), `/v1/sessions` (login, logout),
//! `/v1/me` and `/v1/me/password`: the CLI's `ifmatch user` over HTTP.
//!
//! - `POST /v1/users` `{"username", "password", "name"?}`: **201** with the
//!   user, including their account `id` and the `prefix` of their own keys.
//!   Who may register: anyone when the server has open registration
//!   (`ifmatch serve --open-registration`), else only the operator (a
//!   session user gets 403, no credentials 401). A taken username is 409
//!   `user_exists`; a username or password that breaks the rules is 400.
//! - `GET /v1/users?limit=N&page_token=T` (operator): **200** `{"users",
//!   "next_page_token"}`, one page of at most `limit` (1–1000, default 100)
//!   users in username order; follow `next_page_token` until it is `null`.
//! - `DELETE /v1/users/{name}` (operator): **204**; 404 `user_not_found`.
//!   The account's sessions end at once; its data stays under its account
//!   id, out of reach of anyone who registers the name later.
//! - `POST /v1/sessions` `{"username", "password"}` (no credentials needed):
//!   **201** `{"token", "token_type": "Bearer", "expires_at", "expires_in"}`.
//!   The token is opaque and random, shown once; the server keeps only its
//!   hash (see [`crate::sessions`]). A wrong username or password is 401
//!   `invalid_credentials` (same answer, same cost, for both). Failed logins
//!   back off per username and per client address, and password hashing has
//!   a bounded capacity: both answer 429 `too_many_requests` with
//!   `Retry-After` (see [`ifmatch::accounts::ThrottleConfig`]).
//! - `DELETE /v1/sessions` with `Authorization: Bearer <token>`: logout,
//!   **204**; the token is refused from then on.
//! - `GET /v1/me`: who the credentials belong to.
//! - `PUT /v1/me/password` `{"old_password", "new_password"}` (a session
//!   user): **200** with the user. A wrong old password is 403
//!   `wrong_password` (and counts as a failed login). Every other session of
//!   the user ends; the one that made the change goes on.

use axum::Json;
use axum::extract::{Path, State};
use axum::routing::{delete, get, post, put};
use http::header::AUTHORIZATION;
use http::{HeaderMap, StatusCode};
use ifmatch::accounts::{AccountsError, User, rfc3339};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::{Caller, ClientIp, MaybeCaller, Principal, bearer_token};
use crate::error::{ApiError, ErrorBody};
use crate::routes::extract::{JsonBody, QueryParams};

/// The routes of this group.
pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/v1/users", post(register).get(list_users))
        .route("/v1/users/{name}", delete(delete_user))
        .route("/v1/sessions", post(login).delete(logout))
        .route("/v1/me", get(me))
        .route("/v1/me/password", put(change_password))
}

/// The default page size of `GET /v1/users`.
pub const DEFAULT_PAGE_LIMIT: usize = 100;

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
    /// The account id: immutable and never reused; the user's data is keyed by it.
    #[schema(example = "u5f0c2b9e8d7a41f6b3c2d1e0f9a8b7c6")]
    pub id: String,
    /// The key prefix of the user's own objects, leases and idempotency keys
    /// (`users/<id>/`), where `--user-prefixes` lets them write.
    #[schema(example = "users/u5f0c2b9e8d7a41f6b3c2d1e0f9a8b7c6/")]
    pub prefix: String,
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
            prefix: u.data_prefix(),
            id: u.id,
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
        (status = 429, description = "Password hashing is at capacity (`too_many_requests`); see `Retry-After`", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
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
        (status = 429, description = "Too many failed logins for this username or from this address, or password hashing at capacity (`too_many_requests`); see `Retry-After`", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ),
    security(())
)]
pub async fn login(
    State(app): State<AppState>,
    ClientIp(client): ClientIp,
    JsonBody(req): JsonBody<LoginRequest>,
) -> Result<(StatusCode, Json<SessionBody>), ApiError> {
    let user = app
        .accounts()
        .login(&req.username, &req.password, client)
        .await?;
    let session = app
        .sessions()
        .create(&user)
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
pub async fn me(caller: Caller) -> Result<Json<MeBody>, ApiError> {
    Ok(Json(match caller.0 {
        Principal::Operator => MeBody {
            principal: "operator",
            user: None,
        },
        // The account as authentication read it for this request.
        Principal::User(user) => MeBody {
            principal: "user",
            user: Some(user.into()),
        },
    }))
}

/// The query of `GET /v1/users`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListUsersQuery {
    /// The most users on this page (1–1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// The `next_page_token` of the previous page.
    pub page_token: Option<String>,
}

/// One page of users.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserListBody {
    /// The users, in username order.
    pub users: Vec<UserBody>,
    /// Pass as `page_token` for the next page; `null` on the last one.
    #[schema(required = true)]
    pub next_page_token: Option<String>,
}

/// Lists users, a page at a time (operator only).
#[utoipa::path(
    get,
    path = "/v1/users",
    tag = "accounts",
    params(ListUsersQuery),
    responses(
        (status = 200, description = "One page of users", body = UserListBody),
        (status = 400, description = "A limit out of range, or a malformed query (`bad_request`)", body = ErrorBody),
        (status = 403, description = "A session user: listing users needs the operator key", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_users(
    State(app): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<ListUsersQuery>,
) -> Result<Json<UserListBody>, ApiError> {
    caller.require_operator("listing users")?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE_LIMIT);
    let page = app.accounts().list(q.page_token.as_deref(), limit).await?;
    Ok(Json(UserListBody {
        users: page.users.into_iter().map(UserBody::from).collect(),
        next_page_token: page.next,
    }))
}

/// Deletes a user (operator only); their sessions end at once.
#[utoipa::path(
    delete,
    path = "/v1/users/{name}",
    tag = "accounts",
    params(("name" = String, Path, description = "The username (folded to lowercase)", min_length = 3, max_length = 32, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "A username that breaks the rules (`bad_request`)", body = ErrorBody),
        (status = 403, description = "A session user: deleting users needs the operator key", body = ErrorBody),
        (status = 404, description = "No such user (`user_not_found`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete_user(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_operator("deleting users")?;
    if app.accounts().delete(&name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AccountsError::UserNotFound {
            username: name.to_ascii_lowercase(),
        }
        .into())
    }
}

/// The body of a password change.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    /// The current password.
    #[schema(max_length = 1024, example = "correct horse battery staple")]
    pub old_password: String,
    /// The new password: at least 8 characters, at most 1024 bytes of UTF-8.
    #[schema(
        min_length = 8,
        max_length = 1024,
        example = "battery staple horse correct"
    )]
    pub new_password: String,
}

/// Changes the caller's own password; their other sessions end.
#[utoipa::path(
    put,
    path = "/v1/me/password",
    tag = "accounts",
    request_body(content = ChangePasswordRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Changed; this session goes on, the others ended", body = UserBody),
        (status = 400, description = "A new password that breaks the rules, the operator key (it has no password), or invalid JSON (`bad_request`)", body = ErrorBody),
        (status = 403, description = "The old password is wrong (`wrong_password`)", body = ErrorBody),
        (status = 409, description = "The account changed meanwhile (`conflict`): try again", body = ErrorBody),
        (status = 429, description = "Too many failed attempts, or password hashing at capacity (`too_many_requests`); see `Retry-After`", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ),
    security(("bearer" = []))
)]
pub async fn change_password(
    State(app): State<AppState>,
    caller: Caller,
    ClientIp(client): ClientIp,
    headers: HeaderMap,
    JsonBody(req): JsonBody<ChangePasswordRequest>,
) -> Result<Json<UserBody>, ApiError> {
    let Principal::User(user) = &caller.0 else {
        return Err(ApiError::BadRequest(
            "the operator has no password to change; use a session token".into(),
        ));
    };
    let changed = app
        .accounts()
        .change_password(&user.username, &req.old_password, &req.new_password, client)
        .await
        .map_err(|e| match e {
            AccountsError::InvalidCredentials => ApiError::refused(
                StatusCode::FORBIDDEN,
                "wrong_password",
                "the old password is wrong",
                None,
            ),
            other => other.into(),
        })?;
    // This session goes on at the new revision; every other one has ended.
    if let Some(token) = headers
        .get(AUTHORIZATION)
        .and_then(|v| bearer_token(v.as_bytes()))
    {
        app.sessions()
            .rebind(token, &changed)
            .await
            .map_err(|e| ApiError::from_store(e, false))?;
    }
    Ok(Json(changed.into()))
}
