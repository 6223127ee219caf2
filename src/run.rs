//! `andon run`: the production job. Wires the policy, Prometheus, Docker and the HTTP
//! face around the reconcile loop, and stops cleanly on SIGTERM/SIGINT after the tick.

use crate::act::admission::AdmissionClient;
use crate::control::{Controller, Options};
use crate::observe::prometheus::{Auth, PromSource};
use crate::policy;
use crate::record::metrics::Metrics;
use crate::record::server::{self, Shared};
use crate::record::status::Status;
use crate::swarm::Swarm;
use crate::{Error, Result};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

#[derive(Debug, Clone)]
pub struct RunArgs {
    pub policy: String,
    pub prometheus: String,
    pub prometheus_timeout: Duration,
    pub bearer_token_file: Option<String>,
    pub basic_auth_file: Option<String>,
    pub interval: Duration,
    pub dry_run: bool,
    pub listen: SocketAddr,
    pub json_logs: bool,
    pub admission_port: u16,
    /// Prefix policy service names with `STACK_`, as `docker stack deploy` names them.
    pub stack: Option<String>,
    /// HAProxy in front of the services (`--haproxy-socket`); backends with no service
    /// yet (`service` empty) follow the policy's one service.
    pub edge: Option<crate::act::haproxy::Edge>,
}

/// Logs go to stderr; RUST_LOG filters them (default info, rmcp and hyper quieter).
/// rmcp logs a WARN for every request it answers with an error (an unknown tool or
/// method), so at `warn` any client of the stand-in could fill its log: errors only.
pub fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,rmcp=error,hyper=warn"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = if json {
        b.json().flatten_event(true).try_init()
    } else {
        b.try_init()
    };
}

/// The runtime of the one-thread jobs (`run`, `drill`, `probe`): a current-thread
/// runtime keeps each at most one core, by construction.
pub fn single_thread_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Environment(format!("cannot start the runtime: {e}")))
}

/// Runs until a signal, then returns `Ok`. An error when the configuration or the
/// environment does not allow starting.
pub fn run(args: RunArgs) -> Result<()> {
    init_logging(args.json_logs);
    let mut policy = policy::load(&args.policy)?;
    if let Some(stack) = &args.stack {
        for s in &mut policy.services {
            s.name = format!("{stack}_{}", s.name);
        }
    }
    let runtime = single_thread_runtime()?;
    runtime.block_on(async move {
        let auth = Auth::from_files(
            args.bearer_token_file.as_deref(),
            args.basic_auth_file.as_deref(),
        )?;
        let prom = PromSource::new(&args.prometheus, args.prometheus_timeout, &auth)?;
        // A week of range queries may take longer than an instant query.
        let history_prom = PromSource::new(
            &args.prometheus,
            args.prometheus_timeout
                .max(crate::observe::history::TIMEOUT),
            &auth,
        )?;
        let swarm = Swarm::connect().await.map_err(|e| {
            Error::Environment(format!(
                "cannot reach Docker (DOCKER_HOST={}): {e}",
                std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unset: the local socket".into())
            ))
        })?;
        let admission = AdmissionClient::new(args.admission_port, Duration::from_secs(1))?;
        let edge = match args.edge.clone() {
            Some(e) => Some(edge_for(e, &policy, args.admission_port)?),
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| Error::Environment(format!("--listen {}: {e}", args.listen)))?;
        let shared = Arc::new(Shared {
            metrics: Metrics::new(),
            status: RwLock::new(Status {
                policy: policy.source.clone(),
                prometheus: args.prometheus.clone(),
                dry_run: args.dry_run,
                interval_s: args.interval.as_secs_f64(),
                ..Status::default()
            }),
        });
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let app = server::router(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop_rx.wait_for(|s| *s).await;
                })
                .await;
        });
        tracing::info!(
            policy = %policy.source,
            services = policy.services.len(),
            prometheus = %args.prometheus,
            docker_api = %swarm.docker.client_version(),
            listen = %args.listen,
            interval = ?args.interval,
            dry_run = args.dry_run,
            "andon run: started"
        );
        let mut controller = Controller::new(
            policy,
            prom,
            swarm,
            admission,
            Options {
                dry_run: args.dry_run,
            },
            shared,
        )
        .with_history_source(history_prom)
        .with_edge(edge);
        let (mut term, mut int) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(t), Ok(i)) => (t, i),
            _ => return Err(Error::Environment("cannot install signal handlers".into())),
        };
        let mut ticker = tokio::time::interval(args.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // A signal that arrives during a tick waits here: the tick finishes first.
                _ = term.recv() => { tracing::info!("SIGTERM: stopping after the tick"); break; }
                _ = int.recv() => { tracing::info!("SIGINT: stopping after the tick"); break; }
                _ = ticker.tick() => controller.tick().await,
            }
        }
        let _ = stop_tx.send(true);
        let _ = server.await;
        tracing::info!("andon run: stopped");
        Ok(())
    })
}

/// `andon probe URL`: `Ok` when URL answers 2xx within 2 s (exit 0), a runtime error
/// otherwise (exit 1). For healthchecks in an image that has no curl.
pub fn probe(url: &str) -> Result<()> {
    let rt = single_thread_runtime()?;
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .no_proxy()
            .build()
            .map_err(|e| Error::Runtime(format!("{url}: {e}")))?;
        match client.get(url).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(Error::Runtime(format!("{url}: {}", r.status()))),
            Err(e) => Err(Error::Runtime(format!("{url}: {e}"))),
        }
    })
}

/// The edge's backends, bound to the policy's services: with none given, the backend
/// `erlmcp` follows the policy's one service on the admission port (8080, erlmcp's HTTP
/// and WebSocket port).
fn edge_for(
    mut edge: crate::act::haproxy::Edge,
    policy: &policy::Policy,
    port: u16,
) -> Result<crate::act::haproxy::Edge> {
    let names: Vec<&str> = policy.services.iter().map(|s| s.name.as_str()).collect();
    if edge.backends.is_empty() {
        let [only] = names.as_slice() else {
            return Err(Error::Config(format!(
                "--haproxy-socket: the policy has {} services; say which backend follows which with --haproxy-backend BACKEND=SERVICE:PORT",
                names.len()
            )));
        };
        edge.backends.push(crate::act::haproxy::EdgeBackend {
            backend: "erlmcp".into(),
            service: only.to_string(),
            port: if port == 0 { 8080 } else { port },
        });
    }
    if edge.admit_map.is_some() {
        let mut services: Vec<&str> = edge.backends.iter().map(|b| b.service.as_str()).collect();
        services.dedup();
        if services.len() > 1 {
            return Err(Error::Config(format!(
                "--haproxy-admit-map: one map holds one per-session limit, but the backends follow {} services ({}); give each its own HAProxy, or drop the map",
                services.len(),
                services.join(", ")
            )));
        }
    }
    for b in &edge.backends {
        if !names.contains(&b.service.as_str()) {
            return Err(Error::Config(format!(
                "--haproxy-backend {}={}:{}: {} is not a service of the policy (it has: {})",
                b.backend,
                b.service,
                b.port,
                b.service,
                names.join(", ")
            )));
        }
    }
    Ok(edge)
}
