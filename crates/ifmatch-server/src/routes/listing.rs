//! `GET /v1/objects?prefix=&after=&limit=`: one page of the keys that start
//! with `prefix`, over the store's own listing ([`ifmatch::Store::list`]).
//!
//! The answer is `{"prefix", "objects": [{"key", "size", "etag"}], "next"}`:
//! keys in key order (DynamoDB: its scan order), each with its size in bytes
//! as stored (a fenced value's includes its fencing header) and its strong
//! ETag; `next` is the cursor of the next page (send it as `after`), `null`
//! on the last page. `limit` is 1 to 1000 (default 100).
//!
//! Scope: the operator lists anything. With `--user-prefixes` a user lists
//! under their own prefix: an empty `prefix` (or one above it) lists all of
//! it, a `prefix` elsewhere is 403 ([`crate::auth::Caller::list_prefix`]).

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use ifmatch::store::ListPage;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::precondition::etag_for;
use crate::routes::extract::Query;

/// The page size when the request names none.
pub const DEFAULT_LIMIT: usize = 100;

/// The largest page.
pub const MAX_LIMIT: usize = 1000;

/// The routes of this group.
pub fn routes() -> axum::Router<AppState> {
    axum::Router::new().route("/v1/objects", get(list_objects))
}

/// The query of a listing.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// List only keys that start with this (default: all the caller may see).
    #[param(max_length = 1024)]
    pub prefix: Option<String>,
    /// Start after this key: the `next` of the previous page.
    #[param(max_length = 1024)]
    pub after: Option<String>,
    /// The most keys to return (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// One listed key.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ListedObject {
    /// The key.
    pub key: String,
    /// Its size in bytes, as stored.
    pub size: u64,
    /// Its strong ETag when listed.
    pub etag: String,
}

/// One page of a listing.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ListBody {
    /// The prefix listed (a user's is narrowed to their own prefix).
    pub prefix: String,
    /// The keys of this page.
    pub objects: Vec<ListedObject>,
    /// The cursor of the next page (send it as `after`); `null` on the last page.
    #[schema(required = true)]
    pub next: Option<String>,
}

/// Lists keys by prefix, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/objects",
    tag = "objects",
    params(ListQuery),
    responses(
        (status = 200, description = "One page of keys, with their sizes and ETags", body = ListBody),
        (status = 400, description = "An invalid prefix, cursor or limit (`bad_request`)", body = ErrorBody),
        (status = 403, description = "A prefix outside the caller's scope (`forbidden`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_objects(
    State(app): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<ListBody>, ApiError> {
    let prefix = caller.list_prefix(&app, q.prefix.as_deref().unwrap_or(""))?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    let page = ListPage {
        token: q.after,
        limit,
    };
    let result = app
        .store()
        .list(&prefix, page)
        .await
        .map_err(|e| ApiError::from_store(e, false))?;
    Ok(Json(ListBody {
        prefix,
        objects: result
            .entries
            .into_iter()
            .map(|e| ListedObject {
                etag: etag_for(&e.version),
                key: e.key,
                size: e.size,
            })
            .collect(),
        next: result.next,
    }))
}
