//! Request ids, logs, metrics and the request timeout, as middleware.
//!
//! - [`request_context`]: takes the client's `x-request-id` (or makes one),
//!   runs the request inside a `tracing` span carrying it, logs one line per
//!   request and returns the id in the response's `x-request-id`;
//! - [`track`]: counts requests and measures their latency by route template
//!   and status: `ifmatch_http_requests_total{method,route,status}` and
//!   `ifmatch_http_request_duration_seconds{method,route,status}` (a histogram);
//! - [`timeout`]: answers 504 (JSON) when a request takes longer than the
//!   configured timeout;
//! - [`prometheus`]: the process-wide Prometheus recorder behind `/metrics`,
//!   which also renders the library's `ifmatch_update_*` counters.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::HeaderValue;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::Instrument;

use crate::AppState;
use crate::error::ApiError;

/// The request id header, in and out.
pub const REQUEST_ID: &str = "x-request-id";

/// The latency histogram's name.
pub const DURATION_METRIC: &str = "ifmatch_http_request_duration_seconds";

/// The request counter's name.
pub const REQUESTS_METRIC: &str = "ifmatch_http_requests_total";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use (`None` if another
/// metrics recorder was installed first by the embedding program).
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ];
            let built = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(DURATION_METRIC.to_string()), &buckets)
                .and_then(|b| b.install_recorder());
            match built {
                Ok(handle) => Some(handle),
                Err(e) => {
                    // Expected where the embedding program installs its own
                    // recorder (EMF on Lambda): not worth a warning per cold start.
                    tracing::info!(error = %e, "another metrics recorder is installed; /metrics will be empty");
                    None
                }
            }
        })
        .as_ref()
}

/// Describes the HTTP metrics to the installed recorder (their units reach
/// CloudWatch through [`crate::emf`]).
pub fn describe() {
    metrics::describe_counter!(
        REQUESTS_METRIC,
        metrics::Unit::Count,
        "HTTP requests answered"
    );
    metrics::describe_histogram!(
        DURATION_METRIC,
        metrics::Unit::Seconds,
        "HTTP request latency"
    );
}

/// A client's request id if it is short printable ASCII, else a fresh UUID.
fn request_id(req: &Request) -> String {
    req.headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Middleware: request id, tracing span and one log line per request.
pub async fn request_context(req: Request, next: Next) -> Response {
    let id = request_id(&req);
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path(),
    );
    let started = Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(
            status = resp.status().as_u16(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "answered"
        )
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    resp
}

/// Middleware (per route): request counter and latency histogram by route and status.
pub async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    let labels = [
        ("method", method),
        ("route", route),
        ("status", resp.status().as_u16().to_string()),
    ];
    metrics::counter!(REQUESTS_METRIC, &labels).increment(1);
    metrics::histogram!(DURATION_METRIC, &labels).record(started.elapsed().as_secs_f64());
    resp
}

/// Middleware: 504 when the request takes longer than the configured timeout.
pub async fn timeout(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = state.config().request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::Timeout(limit).into_response(),
    }
}
