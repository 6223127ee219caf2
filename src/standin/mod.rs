//! `andon stand-in`: a server that stands in for an erlmcp replica (erlmcp cannot be built
//! here, and its own /metrics is not wired up).
//!
//! - MCP streamable HTTP on POST /mcp, on rmcp (mcp.rs): sessions by `Mcp-Session-Id`,
//!   DELETE ends one; answers are SSE, as the official SDKs answer.
//! - MCP on erlmcp's own wire (stream.rs, wire.rs): WebSocket at /mcp/ws and line-delimited
//!   TCP on `--tcp-listen`, a session per connection, on the same rmcp server and model.
//! - The replica model in real time (realtime.rs): a middleware in front of rmcp sheds,
//!   delays and fails requests as an erlmcp replica at this load would.
//! - /metrics with erlmcp's own names, /healthz, and POST /admin/admission, which andon's
//!   HTTP shedding actuator drives.

pub mod mcp;
pub mod realtime;
pub mod stream;
pub mod wire;

use crate::act::admission::{Admission, ADMISSION_PATH};
use crate::core::shedding::MAX_ADMIT;
use crate::model::ReplicaParams;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::{Json, Router};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use realtime::{Admit, RealTime};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    pub method: String,
}

impl MethodLabel {
    /// The label of a method a client named: the MCP methods the stand-in knows, else
    /// "other", so that a client cannot grow /metrics without bound.
    pub fn of(method: &str) -> MethodLabel {
        let known = crate::scenario::METHODS.contains(&method)
            || matches!(
                method,
                "initialize" | "notifications/initialized" | "notifications/cancelled" | "unknown"
            );
        MethodLabel {
            method: if known { method } else { "other" }.to_string(),
        }
    }
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
    /// New sessions refused by the session cap (at the door: not requests).
    pub sessions_refused: Counter,
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
            sessions_refused: Counter::default(),
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
        registry.register(
            "erlmcp_sessions_refused",
            "New sessions refused by the session cap (503, Retry-After: 1)",
            m.sessions_refused.clone(),
        );
        m.memory
            .get_or_create(&TypeName {
                r#type: "total".into(),
            })
            .set(0);
        for transport in ["http", "ws", "tcp"] {
            m.connections
                .get_or_create(&TransportLabel {
                    transport: transport.into(),
                })
                .set(0);
        }
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

/// Options of `andon stand-in`.
#[derive(Debug, Clone)]
pub struct Options {
    pub listen: SocketAddr,
    /// Messages per second the replica serves at ρ = 1.
    pub capacity: f64,
    /// Messages per second one session is served at most.
    pub conn_capacity: f64,
    /// Median latency when idle.
    pub base_latency: Duration,
    /// Requests in flight at most; past it, 503 (overload).
    pub queue_limit: usize,
    /// No model delay (to measure the load generator).
    pub zero_latency: bool,
    /// MCP over line-delimited TCP, as erlmcp's TCP transport, on this address.
    pub tcp_listen: Option<SocketAddr>,
    /// No admission endpoint, as a real erlmcp: shedding can only happen in front of it.
    pub no_admission: bool,
    /// Sessions held at most, on every wire: past it a new one is refused as past the
    /// session cap (abandoned handshakes cannot grow the stand-in without bound).
    pub max_sessions: usize,
    /// A stream connection silent this long is closed (erlmcp's IDLE_TIMEOUT, 5 min).
    pub idle_timeout: Duration,
}

impl Options {
    /// The calibrated erlmcp model, rescaled to this replica's capacity.
    pub fn params(&self) -> ReplicaParams {
        let d = ReplicaParams::default();
        let scale = self.capacity / d.capacity_rps;
        ReplicaParams {
            capacity_rps: self.capacity,
            conn_capacity_rps: self.conn_capacity,
            base_median_s: self.base_latency.as_secs_f64(),
            cpu_scale_rps: d.cpu_scale_rps * scale,
            ..d
        }
    }
}

pub struct StandIn {
    pub metrics: ErlmcpMetrics,
    pub admission: Mutex<Admission>,
    pub model: RealTime,
    pub sessions: Arc<LocalSessionManager>,
    pub in_flight: AtomicUsize,
    pub queue_limit: usize,
    /// Open sessions on erlmcp's stream transports (a session per connection).
    pub ws_connections: AtomicUsize,
    pub tcp_connections: AtomicUsize,
    pub no_admission: bool,
    pub max_sessions: usize,
    pub idle_timeout: Duration,
}

impl StandIn {
    pub fn new(opts: &Options) -> StandIn {
        let mut sessions = LocalSessionManager::default();
        sessions.session_config.keep_alive = Some(Duration::from_secs(300));
        sessions.session_config.sse_retry = None;
        StandIn {
            metrics: ErlmcpMetrics::new(),
            admission: Mutex::new(Admission::ALL),
            model: RealTime::new(opts.params(), opts.zero_latency),
            sessions: Arc::new(sessions),
            in_flight: AtomicUsize::new(0),
            queue_limit: opts.queue_limit,
            ws_connections: AtomicUsize::new(0),
            tcp_connections: AtomicUsize::new(0),
            no_admission: opts.no_admission,
            max_sessions: opts.max_sessions,
            idle_timeout: opts.idle_timeout,
        }
    }

    pub fn stream_connections(&self, wire: stream::Wire) -> &AtomicUsize {
        match wire {
            stream::Wire::Ws => &self.ws_connections,
            stream::Wire::Tcp => &self.tcp_connections,
        }
    }

    /// Sessions open on every transport.
    pub async fn sessions_open(&self) -> usize {
        self.sessions.sessions.read().await.len()
            + self.ws_connections.load(Ordering::Relaxed)
            + self.tcp_connections.load(Ordering::Relaxed)
    }

    /// Sessions allowed: the admission's cap, within --max-sessions.
    pub fn session_cap(&self) -> usize {
        let cap = self.admission.lock().ok().and_then(|a| a.max_sessions);
        cap.map_or(self.max_sessions, |c| (c as usize).min(self.max_sessions))
    }

    /// Whether a new session would go past the session cap.
    pub async fn session_cap_reached(&self) -> bool {
        self.sessions_open().await >= self.session_cap()
    }
}

pub fn router(s: Arc<StandIn>) -> Router {
    let mut config = StreamableHttpServerConfig::default()
        // Containers are reached as 127.0.0.1:PORT or a node's address: accept any Host.
        .disable_allowed_hosts()
        .with_sse_keep_alive(None)
        .with_sse_retry(None);
    config = config.with_legacy_session_mode(true);
    let service =
        StreamableHttpService::new(|| Ok(mcp::StandInMcp::new()), s.sessions.clone(), config);
    let mcp = Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn_with_state(s.clone(), model_layer));
    let mut r = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/mcp/ws", get(wire::ws_upgrade));
    if !s.no_admission {
        r = r.route(ADMISSION_PATH, get(get_admission).post(set_admission));
    }
    r.with_state(s).merge(mcp)
}

/// In front of rmcp: count, shed, delay and fail as the model says, then time the answer.
async fn model_layer(State(s): State<Arc<StandIn>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let session = req
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if req.method() == axum::http::Method::DELETE {
        if let Some(id) = &session {
            s.model.forget_session(id);
            // rmcp answers 202 to any id; an unknown session is a 404, as the spec and
            // the reference servers have it.
            let known = s.sessions.sessions.read().await.keys().any(|k| **k == **id);
            if !known {
                return (StatusCode::NOT_FOUND, "no such session\n").into_response();
            }
        }
        return next.run(req).await;
    }
    if req.method() != axum::http::Method::POST {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "body over 1 MiB").into_response();
    };
    // Not JSON at all: JSON-RPC's parse error with a 400 (rmcp answers 415 in plain text).
    let Ok(peek) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        let body = serde_json::json!({
            "jsonrpc": "2.0", "id": null,
            "error": {"code": -32700, "message": "Parse error: the body is not JSON"},
        });
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    };
    let method = peek
        .get("method")
        .and_then(|m| m.as_str())
        .unwrap_or("unknown")
        .to_string();
    // The session cap: a new session past it is refused at once, before it is a request,
    // so that its client retries (Retry-After) onto a replica with room.
    if method == "initialize" && session.is_none() && s.session_cap_reached().await {
        s.metrics.sessions_refused.inc();
        let body = serde_json::json!({
            "jsonrpc": "2.0",
            "id": peek.get("id").cloned().unwrap_or(serde_json::Value::Null),
            "error": {"code": -32000, "message": format!("session cap of {} reached: try again later", s.session_cap())},
        });
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            Json(body),
        )
            .into_response();
    }
    let req = Request::from_parts(parts, Body::from(bytes));
    s.metrics
        .requests
        .get_or_create(&MethodLabel::of(&method))
        .inc();
    let error = |t: &str| {
        s.metrics
            .errors
            .get_or_create(&ErrorLabel {
                error_type: t.into(),
            })
            .inc();
    };
    // Notifications and the handshake are not work: only requests meet the model.
    let modelled = method != "initialize" && !method.starts_with("notifications/");
    if modelled {
        match s.model.request(session.as_deref()) {
            Admit::Shed => {
                error("shed");
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, "1")],
                    "shed: over the admission limit\n",
                )
                    .into_response();
            }
            Admit::Serve { delay, fail } => {
                let n = s.in_flight.fetch_add(1, Ordering::Relaxed);
                let _guard = InFlight(&s.in_flight);
                if n >= s.queue_limit {
                    error("overload");
                    return (StatusCode::SERVICE_UNAVAILABLE, "overload: queue full\n")
                        .into_response();
                }
                tokio::time::sleep(delay).await;
                if fail {
                    error("internal");
                    return (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal error (modelled)\n",
                    )
                        .into_response();
                }
            }
        }
    }
    let resp = next.run(req).await;
    if resp.status() == StatusCode::NOT_FOUND {
        error("session");
    }
    s.metrics.duration.observe(started.elapsed().as_secs_f64());
    resp
}

struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn metrics(State(s): State<Arc<StandIn>>) -> Response {
    let live = s.sessions.sessions.read().await.len();
    s.metrics
        .connections
        .get_or_create(&TransportLabel {
            transport: "http".into(),
        })
        .set(live as i64);
    for wire in [stream::Wire::Ws, stream::Wire::Tcp] {
        s.metrics
            .connections
            .get_or_create(&TransportLabel {
                transport: wire.label().into(),
            })
            .set(s.stream_connections(wire).load(Ordering::Relaxed) as i64);
    }
    let live = s.sessions_open().await;
    let (cpu, queued) = s.model.gauges();
    s.metrics.cpu.set(cpu * 100.0);
    s.metrics
        .run_queue
        .set(s.in_flight.load(Ordering::Relaxed) as i64);
    let p = &s.model.params;
    s.metrics
        .memory
        .get_or_create(&TypeName {
            r#type: "total".into(),
        })
        .set(p.memory(live as f64, queued) as i64);
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
                format!("expected {{\"admit\": FRACTION or null, \"max_rps\": RATE, \"max_sessions\": N}} (the last two optional): {e}"),
            )
                .into_response()
        }
    };
    if let Some(f) = a.admit {
        if !(f.is_finite() && f > 0.0 && f <= MAX_ADMIT) {
            return (
                StatusCode::BAD_REQUEST,
                format!("admit must be in (0, {MAX_ADMIT}] or null"),
            )
                .into_response();
        }
    }
    if a.max_sessions == Some(0) {
        return (
            StatusCode::BAD_REQUEST,
            "max_sessions must be at least 1, or absent",
        )
            .into_response();
    }
    if let Some(r) = a.max_rps {
        if !(r.is_finite() && r > 0.0 && r <= 1e7) || a.admit.is_none() {
            return (
                StatusCode::BAD_REQUEST,
                "max_rps must be in (0, 1e7], with admit set",
            )
                .into_response();
        }
    }
    match s.admission.lock() {
        Ok(mut cur) => {
            if *cur != a {
                tracing::info!(admit = ?a.admit, max_rps = ?a.max_rps, "admission limit set");
            }
            *cur = a;
            s.model.set_admit(a);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Serves until SIGTERM/SIGINT.
pub fn serve(opts: Options) -> crate::Result<()> {
    use crate::Error;
    crate::run::init_logging(false);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Environment(format!("cannot start the runtime: {e}")))?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(|e| Error::Environment(format!("--listen {}: {e}", opts.listen)))?;
        let state = Arc::new(StandIn::new(&opts));
        if let Some(addr) = opts.tcp_listen {
            let tcp = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| Error::Environment(format!("--tcp-listen {addr}: {e}")))?;
            tokio::spawn(wire::serve_tcp(state.clone(), tcp));
        }
        tracing::info!(listen = %opts.listen, tcp_listen = ?opts.tcp_listen, capacity = opts.capacity, conn_capacity = opts.conn_capacity, zero_latency = opts.zero_latency, "andon stand-in: serving MCP on /mcp (streamable HTTP) and /mcp/ws (WebSocket)");
        let shutdown = async {
            use tokio::signal::unix::{signal, SignalKind};
            if let (Ok(mut t), Ok(mut i)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
                tokio::select! { _ = t.recv() => {}, _ = i.recv() => {} }
            }
        };
        // Small SSE writes need TCP_NODELAY, or Nagle and delayed ACKs add ~40 ms each.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, router(state))
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|e| Error::Runtime(format!("stand-in: {e}")))
    })
}
