//! Operational routes, open without the operator key: `/healthz`, `/metrics`, `/openapi.json`.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::StatusCode;
use http::header::CONTENT_TYPE;
use serde::Serialize;
use utoipa::OpenApi;

use crate::AppState;
use crate::openapi::ApiDoc;
use crate::telemetry;

/// The routes of this group.
pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

/// The body of `/healthz`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `"ok"` when the process answers.
    pub status: &'static str,
}

/// Liveness: the process answers (the store is not contacted).
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Metrics in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics() -> Response {
    match telemetry::prometheus() {
        Some(handle) => {
            handle.run_upkeep();
            (
                [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                handle.render(),
            )
                .into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed\n",
        )
            .into_response(),
    }
}

/// The OpenAPI document of this server, with this server's limits.
#[utoipa::path(get, path = "/openapi.json", tag = "ops", responses((status = 200, description = "OpenAPI 3.1 JSON", content_type = "application/json")))]
pub async fn openapi(State(app): State<AppState>) -> Json<utoipa::openapi::OpenApi> {
    let mut doc = ApiDoc::openapi();
    set_wait_limit(&mut doc, app.config().request_timeout.as_secs_f64());
    Json(doc)
}

/// A lease acquire's `wait` must be shorter than the request timeout, which
/// `ifmatch serve --request-timeout` sets: say so in the served document.
fn set_wait_limit(doc: &mut utoipa::openapi::OpenApi, timeout_secs: f64) {
    use utoipa::openapi::{RefOr, Schema};
    let wait = doc
        .components
        .as_mut()
        .and_then(|c| c.schemas.get_mut("AcquireRequest"))
        .and_then(|s| match s {
            RefOr::T(Schema::Object(o)) => o.properties.get_mut("wait"),
            _ => None,
        });
    if let Some(RefOr::T(Schema::Object(wait))) = wait {
        wait.exclusive_maximum = Some(utoipa::Number::Float(timeout_secs));
    }
}
