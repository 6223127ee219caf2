//! The controller's HTTP face: /metrics, /healthz, /status.

use super::metrics::Metrics;
use super::status::Status;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::sync::{Arc, RwLock};

pub struct Shared {
    pub metrics: Metrics,
    pub status: RwLock<Status>,
}

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/status", get(status))
        .with_state(shared)
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

/// Healthy once the first tick has completed and ticks keep coming (within 3 intervals).
async fn healthz(State(s): State<Arc<Shared>>) -> Response {
    let st = match s.status.read() {
        Ok(st) => st,
        Err(_) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "status lock poisoned").into_response()
        }
    };
    let now = now_ms();
    let fresh = st
        .last_tick_ms
        .is_some_and(|t| now.saturating_sub(t) as f64 <= 3000.0 * st.interval_s.max(1.0) + 5000.0);
    if st.ticks == 0 {
        (StatusCode::OK, "starting").into_response()
    } else if fresh {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "reconcile loop stalled").into_response()
    }
}

async fn status(State(s): State<Arc<Shared>>) -> Response {
    match s.status.read() {
        Ok(st) => Json(st.clone()).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "status lock poisoned").into_response(),
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
