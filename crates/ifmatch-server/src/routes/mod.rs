//! The router: one file per route group, assembled here with the shared middleware.
//!
//! - [`objects`]: `/v1/objects/{key}` (operator key required);
//! - [`ops`]: `/healthz`, `/metrics`, `/openapi.json` (open);
//! - [`extract`]: extractors shared by the groups (key, body) that answer in JSON.
//!
//! Later groups (user sessions, leases, idempotency, tenant SQL) each add a
//! file here with a `routes()` function and one `.merge(...)` line in
//! [`router`]; `/v1` groups go into `v1`, so they get the operator-key check.

pub mod extract;
pub mod objects;
pub mod ops;

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
        .route_layer(from_fn_with_state(
            state.clone(),
            auth::require_operator_key,
        ));
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
