//! `andon stand-in`: a server that stands in for an erlmcp replica. It serves erlmcp's own
//! metric names on /metrics, /healthz, and the admission endpoint that andon's HTTP
//! shedding actuator drives.

use crate::act::admission::{Admission, ADMISSION_PATH};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub error_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabel {
    pub transport: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeName {
    pub r#type: String,
}

/// erlmcp's metrics, by its own names (../shared/seed-figures.md).
pub struct ErlmcpMetrics {
    pub registry: Registry,
    pub requests: Family<MethodLabel, Counter>,
    pub errors: Family<ErrorLabel, Counter>,
    pub duration: Histogram,
    pub connections: Family<TransportLabel, Gauge>,
    pub memory: Family<TypeName, Gauge>,
    pub cpu: Gauge<f64, AtomicU64>,
    pub run_queue: Gauge,
}

impl Default for ErlmcpMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ErlmcpMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = ErlmcpMetrics {
            registry: Registry::default(),
            requests: Family::default(),
            errors: Family::default(),
            duration: Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0,
            ]),
            connections: Family::default(),
            memory: Family::default(),
            cpu: Gauge::default(),
            run_queue: Gauge::default(),
        };
        registry.register(
            "erlmcp_requests",
            "Requests received, by method (shed ones included)",
            m.requests.clone(),
        );
        registry.register(
            "erlmcp_errors",
            "Errors by type (shed = refused with 503)",
            m.errors.clone(),
        );
        registry.register(
            "erlmcp_request_duration_seconds",
            "Request latency",
            m.duration.clone(),
        );
        registry.register(
            "erlmcp_connections_total",
            "Open connections (sessions) by transport",
            m.connections.clone(),
        );
        registry.register("erlmcp_memory_bytes", "Memory by type", m.memory.clone());
        registry.register(
            "erlmcp_cpu_usage_percent",
            "CPU use of the replica, percent",
            m.cpu.clone(),
        );
        registry.register(
            "erlmcp_run_queue_length",
            "Requests waiting",
            m.run_queue.clone(),
        );
        m.memory
            .get_or_create(&TypeName {
                r#type: "total".into(),
            })
            .set(0);
        m.connections
            .get_or_create(&TransportLabel {
                transport: "http".into(),
            })
            .set(0);
        // Series exist from the start, at 0: rate() of "no errors yet" is 0, not missing.
        for method in crate::scenario::METHODS {
            m.requests
                .get_or_create(&MethodLabel {
                    method: method.into(),
                })
                .inc_by(0);
        }
        for e in ["shed", "timeout", "internal", "jsonrpc"] {
            m.errors
                .get_or_create(&ErrorLabel {
                    error_type: e.into(),
                })
                .inc_by(0);
        }
        ErlmcpMetrics { registry, ..m }
    }

    pub fn encode(&self) -> String {
        let mut s = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }
}

pub struct StandIn {
    pub metrics: ErlmcpMetrics,
    pub admission: Mutex<Admission>,
}

pub fn router(s: Arc<StandIn>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route(ADMISSION_PATH, get(get_admission).post(set_admission))
        .with_state(s)
}

async fn metrics(State(s): State<Arc<StandIn>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

async fn get_admission(State(s): State<Arc<StandIn>>) -> Response {
    match s.admission.lock() {
        Ok(a) => Json(*a).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn set_admission(State(s): State<Arc<StandIn>>, body: axum::body::Bytes) -> Response {
    let a: Admission = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("expected {{\"admit\": FRACTION or null}}: {e}"),
            )
                .into_response()
        }
    };
    if let Some(f) = a.admit {
        if !(f.is_finite() && f > 0.0 && f <= 2.0) {
            return (StatusCode::BAD_REQUEST, "admit must be in (0, 2] or null").into_response();
        }
    }
    match s.admission.lock() {
        Ok(mut cur) => {
            if *cur != a {
                tracing::info!(admit = ?a.admit, "admission limit set");
            }
            *cur = a;
            StatusCode::NO_CONTENT.into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Serves until SIGTERM/SIGINT. Returns the exit code.
pub fn serve(listen: SocketAddr) -> u8 {
    crate::run::init_logging(false);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return 2;
        }
    };
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("--listen {listen}: {e}");
                return 2;
            }
        };
        let state = Arc::new(StandIn {
            metrics: ErlmcpMetrics::new(),
            admission: Mutex::new(Admission { admit: None }),
        });
        tracing::info!(%listen, "andon stand-in: serving");
        let shutdown = async {
            use tokio::signal::unix::{signal, SignalKind};
            if let (Ok(mut t), Ok(mut i)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                tokio::select! { _ = t.recv() => {}, _ = i.recv() => {} }
            }
        };
        match axum::serve(listener, router(state))
            .with_graceful_shutdown(shutdown)
            .await
        {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("stand-in: {e}");
                1
            }
        }
    })
}
