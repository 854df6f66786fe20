//! The router: one file per route group, assembled here with the shared middleware.
//!
//! - [`objects`] — `/v1/objects/{key}`;
//! - [`leases`] — `/v1/leases/{name}`;
//! - [`idempotency`] — `/v1/idempotency/{key}`;
//! - [`accounts`] — `/v1/users`, `/v1/sessions`, `/v1/me`;
//! - [`db`] — `/v1/db` (tenant SQL);
//! - [`snapshots`] — `/v1/snapshots/{name}` and its versions, rollback and build lease;
//! - [`listing`] — `GET /v1/objects` (keys by prefix, a page at a time);
//! - [`inspect`] — `GET /v1/leases/{name}` and `GET /v1/idempotency/{key}`;
//! - [`db_files`] — `/v1/db/export`, `/v1/db/import`, `/v1/db/info`;
//! - [`ops`] — `/healthz`, `/metrics`, `/openapi.json` (open);
//! - [`extract`] — extractors shared by the groups (key, body, JSON) that answer in JSON.
//!
//! `/v1` groups go into `v1`, behind [`auth::authenticate`]; each handler
//! says what caller it needs with the [`auth::Caller`] extractor.

pub mod accounts;
pub mod db;
pub mod db_files;
pub mod extract;
pub mod idempotency;
pub mod inspect;
pub mod leases;
pub mod listing;
pub mod objects;
pub mod ops;
pub mod snapshots;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::IntoResponse;

use crate::AppState;
use crate::error::ApiError;
use crate::{auth, telemetry};

/// The whole application: routes, authentication, limits, timeouts, request ids and metrics.
pub fn router(state: AppState) -> Router {
    // Install the recorder before the first request, so the library's counters are kept.
    let _ = telemetry::prometheus();
    let v1 = Router::new()
        .merge(objects::routes())
        .merge(leases::routes())
        .merge(idempotency::routes())
        .merge(accounts::routes())
        .merge(db::routes())
        .merge(snapshots::routes())
        .merge(listing::routes())
        .merge(inspect::routes())
        .merge(db_files::routes())
        // Inside authentication, which it needs to scope the keys to the caller.
        .route_layer(from_fn_with_state(
            state.clone(),
            crate::idempotency_key::middleware,
        ))
        .route_layer(from_fn_with_state(state.clone(), auth::authenticate));
    Router::new()
        .merge(ops::routes())
        .merge(v1)
        .fallback(not_found)
        .route_layer(from_fn(telemetry::track))
        .layer(DefaultBodyLimit::max(state.config().body_limit))
        .layer(from_fn_with_state(state.clone(), telemetry::timeout))
        .layer(from_fn(telemetry::request_context))
        .with_state(state)
}

/// A JSON 404 for paths no route serves.
async fn not_found(uri: http::Uri) -> axum::response::Response {
    ApiError::NoRoute(uri.path().to_string()).into_response()
}
