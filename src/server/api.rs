//! `GET /healthz` and the run API. Run details name private repositories, so the API needs
//! `Authorization: Bearer <SPOKEHUB_API_TOKEN>` and is off (404) when no token is configured.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use secrecy::ExposeSecret as _;
use serde_json::json;
use subtle::ConstantTimeEq as _;

use crate::engine::{CancelOutcome, Engine};
use crate::hub::HubRunId;
use crate::report::run_report;

/// The last write probe of `/healthz`: at most one a second, one at a time, whoever asks (an
/// unauthenticated flood of health checks must not queue fsyncs ahead of deliveries).
#[derive(Clone, Default)]
pub struct HealthProbe(std::sync::Arc<tokio::sync::Mutex<Option<(tokio::time::Instant, bool)>>>);

const PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// `GET /healthz`: 200 while the hub can record deliveries; 503 when its database file was
/// removed or replaced, or cannot be written (a load balancer then moves traffic away).
pub async fn healthz(
    State(engine): State<Engine>,
    axum::Extension(probe): axum::Extension<HealthProbe>,
) -> Response {
    let unhealthy = |e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "unhealthy: the database is not usable");
        (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
    };
    // The file check is a `stat`: every time.
    if let Err(e) = engine.store().check_writable() {
        return unhealthy(&e);
    }
    let mut last = probe.0.lock().await;
    let ok = match *last {
        Some((at, ok)) if at.elapsed() < PROBE_EVERY => ok,
        _ => {
            let ok = match engine.store().health().await {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(error = %e, "the health probe's write failed");
                    false
                }
            };
            *last = Some((tokio::time::Instant::now(), ok));
            ok
        }
    };
    if ok {
        (StatusCode::OK, "ok").into_response()
    } else {
        unhealthy(&"the last write probe failed")
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "message": message }))).into_response()
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is case-insensitive.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Checks the bearer token; the refusal when it does not hold.
fn refusal(engine: &Engine, headers: &HeaderMap) -> Option<Response> {
    let Some(expected) = &engine.config().api_token else {
        return Some(error(StatusCode::NOT_FOUND, "Not Found"));
    };
    (!bearer_matches(headers, expected))
        .then(|| error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token"))
}

/// Whether the headers carry `expected` as a bearer token (compared in constant time).
fn bearer_matches(headers: &HeaderMap, expected: &secrecy::SecretString) -> bool {
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .unwrap_or("");
    given
        .as_bytes()
        .ct_eq(expected.expose_secret().as_bytes())
        .into()
}

/// `GET /metrics`: Prometheus' text format. With `SPOKEHUB_METRICS_TOKEN` set, only for that
/// bearer token. The gauges of what is going on now are read from the ledger first.
pub async fn metrics(State(engine): State<Engine>, headers: HeaderMap) -> Response {
    if let Some(expected) = &engine.config().metrics_token {
        if !bearer_matches(&headers, expected) {
            return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        }
    }
    let t = engine.telemetry();
    let active = match engine.store().active_spokes_of(engine.replica()).await {
        Ok(counts) => Some(counts),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read active spokes for metrics");
            None
        }
    };
    let queued = match engine.store().queued_deliveries().await {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the queue depth for metrics");
            None
        }
    };
    let text = t.scrape(active.as_deref(), queued);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

pub async fn run(
    State(engine): State<Engine>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(denied) = refusal(&engine, &headers) {
        return denied;
    }
    let Ok(id) = id.parse::<HubRunId>() else {
        return error(StatusCode::NOT_FOUND, "no such run");
    };
    match run_report(engine.store(), &id).await {
        Ok(Some(report)) => Json(report).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "no such run"),
        Err(e) => {
            tracing::error!(error = %e, "cannot read run");
            error(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the run")
        }
    }
}

/// `POST /api/v1/runs/{id}/cancel`: nothing more is dispatched, running spokes are cancelled.
pub async fn cancel(
    State(engine): State<Engine>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(denied) = refusal(&engine, &headers) {
        return denied;
    }
    let Ok(id) = id.parse::<HubRunId>() else {
        return error(StatusCode::NOT_FOUND, "no such run");
    };
    match engine.cancel_run(&id, "the API").await {
        Ok(CancelOutcome::Cancelled { spokes }) => (
            StatusCode::ACCEPTED,
            Json(json!({ "message": "cancelled", "spokes_cancelled": spokes })),
        )
            .into_response(),
        Ok(CancelOutcome::AlreadyCompleted) => {
            error(StatusCode::CONFLICT, "the run has already completed")
        }
        Ok(CancelOutcome::NotFound) => error(StatusCode::NOT_FOUND, "no such run"),
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "cannot cancel run");
            error(StatusCode::INTERNAL_SERVER_ERROR, "cannot cancel the run")
        }
    }
}
