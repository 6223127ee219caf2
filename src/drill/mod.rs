//! `andon drill`: replay a scenario as real MCP traffic against a live target, inject its
//! faults, watch what the controller did, and check the scenario's expectations: before
//! the load (the steady state must hold), continuously during it, and after recovery.
//!
//! Models: wrk2 (constant rate, latency from the intended send time, HdrHistogram), k6
//! (ramps and thresholds), Pumba (container faults), Chaos Toolkit (the steady-state
//! hypothesis, exit 1 when deviated).

pub mod faults;
pub mod http;
mod http_lane;
pub mod load;
pub mod mcp;
pub mod report;
mod schedule;
pub mod stats;
pub mod stream;
mod target;
pub mod undo;
pub mod watch;

use crate::policy::Tier;
use crate::scenario::expect::{Outcome, Point};
use crate::scenario::{Scenario, Verdict};
use crate::swarm::Swarm;
use load::Engine;
use mcp::ErrorClass;
use serde::Serialize;
use stats::{Percentiles, Second, Stats};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};
pub use target::{Target, Wire, WS_PATH};
use watch::Watched;

pub struct Options {
    pub target: Target,
    /// The wire, over the scenario's `transport:`.
    pub transport: Option<crate::scenario::Transport>,
    /// Container port of the MCP endpoint, for swarm targets.
    pub target_port: u16,
    pub speed: f64,
    /// The controller's base URL, for its /status.
    pub controller: Option<String>,
    /// The controller's Swarm service, for the restart_controller fault.
    pub controller_service: Option<String>,
    /// Prometheus' pidfile, for the prometheus_down fault (SIGSTOP/SIGCONT).
    pub prometheus_pidfile: Option<String>,
    pub max_in_flight: u32,
    /// HTTP/1.1 connections per endpoint at most (None: one per request in flight).
    pub http_connections: Option<u32>,
    /// Show progress on stderr (a terminal).
    pub progress: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    pub name: String,
    pub duration_s: f64,
    pub offered_rps: f64,
    pub achieved_rps: f64,
    pub latency: Percentiles,
    pub per_method: BTreeMap<String, Percentiles>,
    pub counts: stats::Counts,
}

#[derive(Debug, Clone, Serialize)]
pub struct FaultEvent {
    pub t_s: f64,
    pub fault: String,
    pub injected: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DrillResult {
    pub scenario: String,
    pub target: String,
    /// http, ws or tcp.
    pub transport: String,
    pub speed: f64,
    pub verdict: Verdict,
    /// The steady state, checked before any load.
    pub before: Vec<Outcome>,
    pub expectations: Vec<Outcome>,
    pub phases: Vec<PhaseReport>,
    pub overall: Percentiles,
    pub counts: stats::Counts,
    pub sessions_opened: u64,
    pub session_open_failures: u64,
    /// Connections the server closed (ws, tcp), by close code ("eof": no code).
    pub closed_by_server: BTreeMap<String, u64>,
    pub max_replicas: Option<u32>,
    pub max_tier: Option<Tier>,
    pub faults: Vec<FaultEvent>,
    /// Seconds in which the generator could not keep the offered rate: sends late by more
    /// than 100 ms, or not sent because --max-in-flight requests were out.
    pub generator_behind_s: u32,
    pub timeline: Vec<Second>,
    #[serde(skip)]
    pub histograms: Vec<(String, hdrhistogram::Histogram<u64>)>,
}

/// Runs a drill. Errors before the load starts (bad target, no Docker) are returned as
/// Err (exit 2); everything after is in the result.
/// On SIGINT or SIGTERM the drill stops, gives back what its faults took (a drained
/// node, paused tasks, a stopped Prometheus) and fails (exit 1); a second signal while
/// it gives back leaves at once and prints what is left, as commands.
pub fn run(scenario: &Scenario, opts: Options) -> crate::Result<DrillResult> {
    let rt = crate::run::single_thread_runtime()?;
    let local = tokio::task::LocalSet::new();
    let pending = undo::Pending::default();
    local.block_on(&rt, async {
        use tokio::signal::unix::{signal, SignalKind};
        let handler = |e: std::io::Error| crate::Error::Environment(format!("signal handler: {e}"));
        let mut int = signal(SignalKind::interrupt()).map_err(handler)?;
        let mut term = signal(SignalKind::terminate()).map_err(handler)?;
        let sig = tokio::select! {
            r = drill(scenario, opts, pending.clone()) => return r,
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        eprintln!("{sig}: stopping the drill and giving back what its faults took (again to leave at once)");
        let swarm = Swarm::connect().await.ok();
        let done = tokio::select! {
            done = pending.undo_all(swarm.as_ref()) => done,
            _ = int.recv() => vec![format!("left at once; by hand: {}", pending.by_hand().join("; "))],
            _ = term.recv() => vec![format!("left at once; by hand: {}", pending.by_hand().join("; "))],
        };
        let done = if done.is_empty() { "nothing to give back".into() } else { done.join("; ") };
        Err(crate::Error::Runtime(format!("interrupted ({sig}); the faults' effects: {done}")))
    })
}

async fn drill(
    full: &Scenario,
    opts: Options,
    pending: undo::Pending,
) -> crate::Result<DrillResult> {
    use crate::Error::Environment;
    let scenario = if (opts.speed - 1.0).abs() > 1e-9 {
        full.compressed(opts.speed)
    } else {
        full.clone()
    };
    let needs_docker = matches!(opts.target, Target::Swarm(_)) || opts.controller_service.is_some();
    let swarm = if needs_docker {
        Some(
            Swarm::connect()
                .await
                .map_err(|e| Environment(format!("cannot reach Docker (DOCKER_HOST): {e}")))?,
        )
    } else {
        None
    };
    let wire = opts.target.wire(&scenario, opts.transport)?;
    let endpoints: load::Endpoints = Rc::default();
    match &opts.target {
        Target::Url(a, _) => endpoints.borrow_mut().push(*a),
        Target::Swarm(svc) => {
            let sw = swarm
                .as_ref()
                .ok_or_else(|| Environment("no Docker connection".into()))?;
            let eps = watch::discover(sw, svc, opts.target_port)
                .await
                .map_err(|e| Environment(format!("--target swarm:{svc}: {e}")))?;
            if eps.is_empty() {
                return Err(Environment(format!(
                    "--target swarm:{svc}: no running task publishes port {} in host mode",
                    opts.target_port
                )));
            }
            *endpoints.borrow_mut() = eps;
        }
    }
    let watched: Rc<RefCell<Watched>> = Rc::default();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
        .map_err(|e| Environment(e.to_string()))?;

    // Before: the steady state must hold.
    let before = watch::steady_state(
        &wire,
        &endpoints,
        &http,
        opts.controller.as_deref(),
        opts.target.service(),
    )
    .await;

    let phase_list: Vec<(String, f64)> = scenario
        .phases
        .iter()
        .map(|p| (p.name.clone(), p.duration.as_secs_f64()))
        .collect();
    let stats = Rc::new(RefCell::new(Stats::new(&phase_list)));
    let mut engine = Engine::new(
        wire.clone(),
        endpoints.clone(),
        stats.clone(),
        scenario.client_timeout,
        opts.max_in_flight,
        opts.http_connections,
    );
    let start = Instant::now();

    // Watcher and discovery, every second.
    let stop = Rc::new(RefCell::new(false));
    {
        let (watched, stop, endpoints, http) = (
            watched.clone(),
            stop.clone(),
            endpoints.clone(),
            http.clone(),
        );
        let (swarm, target, controller, port) = (
            swarm.clone(),
            opts.target.clone(),
            opts.controller.clone(),
            opts.target_port,
        );
        tokio::task::spawn_local(async move {
            while !*stop.borrow() {
                watch::observe(
                    &watched,
                    swarm.as_ref(),
                    &target,
                    port,
                    &endpoints,
                    &http,
                    controller.as_deref(),
                )
                .await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    // Faults at their times.
    let fault_log: Rc<RefCell<Vec<FaultEvent>>> = Rc::default();
    {
        let (faults, log) = (scenario.faults.clone(), fault_log.clone());
        let ctx = faults::Context {
            swarm: swarm.clone(),
            service: opts.target.service().map(str::to_string),
            controller_service: opts.controller_service.clone(),
            prometheus_pidfile: opts.prometheus_pidfile.clone(),
            pending: pending.clone(),
        };
        let task =
            tokio::task::spawn_local(async move { faults::run(ctx, faults, start, log).await });
        pending.watch_task(task);
    }
    let progress = report::Progress::new(opts.progress, scenario.duration());
    let names: Vec<String> = scenario.phases.iter().map(|p| p.name.clone()).collect();
    let mut behind = 0u32;
    let max_in_flight = opts.max_in_flight;
    schedule::run_schedule(&mut engine, &scenario, start, |eng, pi, second| {
        let w = watched.borrow().clone();
        let sess = eng.sessions();
        let s = Second {
            t_s: (second.saturating_sub(1)) as f64,
            phase: names[pi].clone(),
            sessions: sess,
            offered_rps: 0.0,
            achieved_rps: 0.0,
            p50_ms: None,
            p95_ms: None,
            p99_ms: None,
            error_rate: 0.0,
            shed_rate: 0.0,
            timeout_rate: 0.0,
            errors: BTreeMap::new(),
            replicas: w.replicas,
            ready: w.ready,
            tier: w.tier,
            shed_admit: w.shed_admit,
            stopped: w.stopped,
            generator_lag_ms: 0.0,
        };
        let mut st = eng.stats.borrow_mut();
        st.close_second(s);
        if let Some(last) = st.timeline.last() {
            // Behind: sends went out late, or were not sent at all because the requests
            // in flight reached --max-in-flight (a server falling behind an open-loop
            // schedule). Either way the offered rate was not held.
            let unsent = stats::of_class(&last.errors, ErrorClass::Generator);
            if last.generator_lag_ms > 100.0 {
                behind += 1;
                progress.warn(&format!(
                    "WARNING: the generator is {:.0} ms behind its schedule at {:.0} s: the offered rate is not being held",
                    last.generator_lag_ms, last.t_s
                ));
            } else if unsent > 0 {
                behind += 1;
                progress.warn(&format!(
                    "WARNING: {unsent} requests not sent at {:.0} s: {max_in_flight} in flight (--max-in-flight), the server is not keeping up; the offered rate is not being held",
                    last.t_s
                ));
            }
            progress.second(last);
        }
    })
    .await;
    // Let requests in flight finish (up to the client timeout), then close the sessions.
    let drain_until = Instant::now() + scenario.client_timeout;
    while Instant::now() < drain_until
        && stats.borrow().total.answered() < stats.borrow().total.scheduled
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    engine.follow_sessions(0);
    // The closes finish (each DELETE has 2 s), and handshakes still out close what they
    // open: exiting first left the sessions open on the server.
    let close_until = Instant::now() + scenario.client_timeout + Duration::from_secs(3);
    while engine.session_work() > 0 && Instant::now() < close_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    *stop.borrow_mut() = true;
    // A fault whose `for` outlasts the drill is given back now: never leave a node
    // drained, tasks paused or Prometheus stopped behind us.
    for done in pending.undo_all(swarm.as_ref()).await {
        tracing::info!(%done, "the drill ended before a fault's end: given back");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    progress.finish();

    let st = stats.borrow();
    let points: Vec<Point> = st
        .timeline
        .iter()
        .map(|s| Point {
            t: Duration::from_secs_f64(s.t_s),
            tier: s.tier,
            replicas: s.replicas,
            // The watcher's running tasks with a published port: the ready ones it sees.
            ready: s.ready,
            // The drill does not model demand per replica: ready_at_start deviates there.
            needed: None,
            p95_s: s.p95_ms.map(|v| v / 1000.0),
            error_rate: s.finished_any().then_some(s.error_rate),
            timeout_rate: s.finished_any().then_some(s.timeout_rate),
            offered_rps: Some(s.offered_rps),
            shed_rate: Some(s.shed_rate),
            stopped: s.stopped,
        })
        .collect();
    // `better_than` compares with a modelled baseline run: simulate's business, not a drill's.
    let mut expectations: Vec<Outcome> = scenario
        .expect
        .iter()
        .filter(|e| !matches!(e.metric, crate::scenario::Metric::BetterThan { .. }))
        .map(|e| e.check(&points, |i| scenario.phase_bounds(i)))
        .collect();
    let faults = fault_log.borrow().clone();
    for f in faults.iter().filter(|f| !f.injected) {
        expectations.push(Outcome::not_injected(&f.fault, f.detail.clone()));
    }
    let all: Vec<Outcome> = before.iter().chain(expectations.iter()).cloned().collect();
    let phases = st
        .phases
        .iter()
        .map(|p| PhaseReport {
            name: p.name.clone(),
            duration_s: p.duration_s,
            offered_rps: p.counts.scheduled as f64 / p.duration_s.max(1e-9),
            achieved_rps: p.counts.attempted() as f64 / p.duration_s.max(1e-9),
            latency: Percentiles::of(&p.overall),
            per_method: p
                .per_method
                .iter()
                .map(|(m, h)| (m.clone(), Percentiles::of(h)))
                .collect(),
            counts: p.counts.clone(),
        })
        .collect();
    let mut histograms: Vec<(String, hdrhistogram::Histogram<u64>)> = Vec::new();
    for p in &st.phases {
        histograms.push((p.name.clone(), p.overall.clone()));
        for (m, h) in &p.per_method {
            histograms.push((format!("{}/{m}", p.name), h.clone()));
        }
    }
    let target = match &opts.target {
        Target::Url(a, w) => w.url(*a),
        Target::Swarm(s) => format!("swarm:{s}"),
    };
    let opened = *engine.opened.borrow();
    let open_failures = *engine.open_failures.borrow();
    Ok(DrillResult {
        scenario: scenario.name.clone(),
        target,
        transport: wire.name().into(),
        speed: opts.speed,
        verdict: Verdict::of(&all),
        before,
        expectations,
        phases,
        overall: Percentiles::of(&st.overall),
        counts: st.total.clone(),
        sessions_opened: opened,
        session_open_failures: open_failures,
        closed_by_server: st.closed_by_server.clone(),
        max_replicas: st.timeline.iter().filter_map(|s| s.replicas).max(),
        max_tier: st.timeline.iter().filter_map(|s| s.tier).max(),
        faults,
        generator_behind_s: behind,
        timeline: st.timeline.clone(),
        histograms,
    })
}
