//! `andon simulate`: the decision core against a modelled erlmcp cluster, on virtual time.
//!
//! Each tick the scenario sets the load, faults strike at their times, the model serves
//! the load, and the modelled Prometheus scrapes it. Every `interval` the controller runs
//! the same reconcile step as `andon run` ([`crate::reconcile`]) on what Prometheus answers
//! and what the modelled Swarm shows, and the plan is applied to the modelled Swarm: spec
//! writes (which may fail), labels (the core's state among them, so a modelled restart
//! restores from the label), replicas, and admission at the replicas. Without control the
//! step still runs, so the timeline shows which tier the service would be in, and nothing
//! it would have done is remembered as done.

use crate::core::Decision;
use crate::model::{Cluster, Load, ModelNodes, ModelPrometheus, ModelSwarm, ReplicaParams};
use crate::policy::{Policy, ServiceSpec, Tier};
use crate::reconcile::Reconciler;
use crate::scenario::expect::{Outcome, Point};
use crate::scenario::{FaultKind, Scenario, Verdict};
use serde::Serialize;
use std::time::Duration;

mod forecasts;
pub use forecasts::check_history;
use forecasts::{history_series, load_history, ForecasterStates};

#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Let the decisions act on the cluster.
    pub controlled: bool,
    /// Model time step.
    pub tick: Duration,
    /// Controller reconcile interval (`andon run --interval`).
    pub interval: Duration,
    /// Window of the modelled `rate(...[1m])` queries.
    pub rate_window: Duration,
    /// Keep the per-tick timeline (off for bulk benchmarks).
    pub record: bool,
    /// Swarm's restart delay for killed tasks.
    pub restart_delay: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            controlled: true,
            tick: Duration::from_secs(1),
            interval: Duration::from_secs(5),
            rate_window: Duration::from_secs(60),
            record: true,
            restart_delay: Duration::from_secs(5),
        }
    }
}

/// One tick of the timeline, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct TimelinePoint {
    pub t_s: f64,
    pub phase: String,
    pub tier: Tier,
    pub replicas: u32,
    pub ready: u32,
    pub connections: u32,
    /// What the clients want to send: those at the session cap's door too.
    pub offered_rps: f64,
    /// Client-side latency of admitted requests (capped at the client timeout).
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// p95 as the server measures it, past the client's timeout too.
    pub server_p95_ms: f64,
    /// Failures other than sheds, over offered.
    pub error_rate: f64,
    /// Refused fast (a 503, or the demand of clients at the session cap's door), over
    /// offered.
    pub shed_rate: f64,
    pub timeout_rate: f64,
    pub cpu: f64,
    pub memory_bytes: f64,
    pub shed_admit: Option<f64>,
    pub stopped: bool,
    /// The throughput forecast at its horizon (`behavior.predict`), the largest of the
    /// trend's, the seasonal and the sessions one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forecast_rps: Option<f64>,
    /// How far ahead that forecast looks: it is a forecast for `t_s` + this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forecast_horizon_s: Option<f64>,
}

/// Something worth a line: a decision that changed something, or a fault.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub t_s: f64,
    pub kind: &'static str,
    pub text: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub max_tier: Tier,
    pub peak_p95_ms: f64,
    pub peak_error_rate: f64,
    pub max_replicas: u32,
    pub scale_actions: u32,
    pub shed_requests: f64,
    /// Service updates that failed (the `write_failures` fault).
    pub failed_writes: u32,
    /// The integral of the replicas in the spec over the run: what the run cost.
    pub replica_seconds: f64,
    /// Time the service really was at or past yellow / red, by the policy's entry
    /// thresholds on the modelled figures (the same yardstick for every controller).
    pub seconds_yellow_or_worse: f64,
    pub seconds_red_or_worse: f64,
    /// Service updates that went through.
    pub updates: u32,
    /// Scale-ups followed by scale-downs and the other way round.
    pub direction_changes: u32,
    /// Refused fast (shed with a 503, or the demand of clients at the session cap's
    /// door), over what the clients wanted to send.
    pub shed_fraction: f64,
    pub timeout_rate: f64,
    /// Session attempts refused by the session cap (fast 503s at the door; not requests).
    pub sessions_refused: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SimResult {
    pub scenario: String,
    pub policy: String,
    pub controlled: bool,
    pub verdict: Verdict,
    pub summary: Summary,
    pub expectations: Vec<Outcome>,
    pub timeline: Vec<TimelinePoint>,
    pub events: Vec<Event>,
    /// The same scenario under a baseline controller (`--baseline hpa`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Baseline>,
}

/// A baseline's run, side by side with the policy's.
#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    pub name: &'static str,
    pub summary: Summary,
    /// Its replicas and p95 over time, for the chart's overlay (not in `--json`: the
    /// policy's timeline is the one to read).
    #[serde(skip)]
    pub timeline: Vec<TimelinePoint>,
    /// The faults its run could not inject: a comparison with a run that was spared a
    /// fault is no comparison, so the policy's verdict carries them.
    #[serde(skip)]
    pub not_injected: Vec<Outcome>,
}

impl Summary {
    /// A field by its name in the JSON, for `better_than` (see
    /// [`crate::scenario::expect::COMPARABLE`]).
    pub fn field(&self, name: &str) -> Option<f64> {
        // By its JSON name, so that the names `better_than` checks cannot drift from it.
        serde_json::to_value(self).ok()?.get(name)?.as_f64()
    }
}

/// [`run`], then the HPA baseline when asked (`--baseline hpa`) or when the scenario
/// compares itself with it (`better_than`).
pub fn run_compared(
    scenario: &Scenario,
    policy: &Policy,
    service: &ServiceSpec,
    opts: Options,
    baseline: bool,
) -> SimResult {
    let mut result = run(scenario, policy, service, opts);
    if baseline || wants_baseline(scenario) {
        let b = hpa_baseline(scenario, policy, service, opts);
        judge_against(&mut result, scenario, b);
    }
    result
}

/// Whether a scenario compares itself with a baseline (`better_than`).
pub fn wants_baseline(scenario: &Scenario) -> bool {
    scenario
        .expect
        .iter()
        .any(|e| matches!(e.metric, crate::scenario::Metric::BetterThan { .. }))
}

/// Sets the baseline's run and checks the `better_than` expectations against it.
pub fn judge_against(result: &mut SimResult, scenario: &Scenario, baseline: Baseline) {
    let ours = result.summary.clone();
    for (e, o) in scenario.expect.iter().zip(result.expectations.iter_mut()) {
        let field = |f: &str, theirs: bool| {
            if theirs {
                baseline.summary.field(f)
            } else {
                ours.field(f)
            }
        };
        if let Some(checked) = e.metric.better_than(&e.text, field) {
            *o = checked;
        }
    }
    result
        .expectations
        .extend(baseline.not_injected.iter().map(|o| Outcome {
            text: format!("{} baseline: {}", baseline.name, o.text),
            ..o.clone()
        }));
    result.verdict = Verdict::of(&result.expectations);
    result.baseline = Some(baseline);
}

/// The same scenario, cluster and yardstick under Kubernetes HPA's defaults
/// ([`crate::baseline`]), reconciling every 15 s.
pub fn hpa_baseline(
    scenario: &Scenario,
    policy: &Policy,
    service: &ServiceSpec,
    opts: Options,
) -> Baseline {
    let hpa = crate::baseline::hpa_policy(policy);
    let opts = Options {
        interval: crate::baseline::HPA_SYNC.max(opts.tick),
        controlled: true,
        ..opts
    };
    let r = run_judged(
        scenario,
        &hpa,
        policy,
        service,
        opts,
        ReplicaParams::default(),
    );
    Baseline {
        name: "hpa",
        summary: r.summary,
        timeline: r.timeline,
        not_injected: r.expectations[scenario.expect.len()..].to_vec(),
    }
}

/// The most model ticks one run may take (11.5 days at 1 s; a month at a 3 s tick). The
/// expectations keep a sample per tick (~80 bytes), so this bounds memory.
pub const MAX_TICKS: u64 = 1_000_000;

/// The shortest reconcile interval a run may take. A decision's state (the panic
/// window's samples, the windows' deques) grows with its windows over the interval, so
/// a 1 ms interval made a 2-minute scenario take minutes; a controller that reconciles
/// more often than Prometheus can scrape only reads the same scrape again.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The most timeline rows a run records (a day at 1 s fits): longer runs record every
/// n-th tick, which bounds `--json` and `--report` output.
pub const MAX_TIMELINE: u64 = 100_000;

/// Checks the options against the scenario before a run: a model tick of at least 1 ms,
/// a reconcile interval of a whole number of ticks and at least [`MIN_INTERVAL`], and at
/// most [`MAX_TICKS`] ticks.
pub fn check_options(scenario: &Scenario, opts: &Options) -> crate::Result<()> {
    use crate::Error::Config;
    let f = |d: Duration| humantime::format_duration(d).to_string();
    if opts.tick < Duration::from_millis(1) {
        return Err(Config(format!(
            "--tick {}: allowed: at least 1ms",
            f(opts.tick)
        )));
    }
    if opts.tick > opts.interval {
        return Err(Config(format!(
            "--tick {} is longer than --interval {}; allowed: tick ≤ interval",
            f(opts.tick),
            f(opts.interval)
        )));
    }
    // The model decides every whole number of ticks: another interval would silently be
    // rounded to one (1.5 s at a 1 s tick decided every 2 s).
    if !opts
        .interval
        .as_nanos()
        .is_multiple_of(opts.tick.as_nanos().max(1))
    {
        return Err(Config(format!(
            "--interval {} is not a whole number of --tick {}; allowed: a multiple of the tick",
            f(opts.interval),
            f(opts.tick)
        )));
    }
    if opts.interval < MIN_INTERVAL {
        return Err(Config(format!(
            "--interval {}: allowed: at least {}",
            f(opts.interval),
            f(MIN_INTERVAL)
        )));
    }
    if scenario.duration() < opts.tick {
        return Err(Config(format!(
            "the scenario lasts {}, less than one --tick {}: nothing would be observed; allowed: tick ≤ the scenario's length",
            f(scenario.duration()),
            f(opts.tick)
        )));
    }
    let ticks = scenario.duration().as_nanos() / opts.tick.as_nanos().max(1);
    if ticks > MAX_TICKS as u128 {
        return Err(Config(format!(
            "{} at --tick {} is {ticks} model ticks; allowed: at most {MAX_TICKS} (raise --tick)",
            f(scenario.duration()),
            f(opts.tick)
        )));
    }
    Ok(())
}

/// The replicas the modelled load needs: the fewest the policy's target tracking keeps
/// for it (demand within the tolerance band of their capacity at target), max over the
/// demand signals, within the service's bounds (`ready_at_start` measures against it).
fn needed(policy: &Policy, service: &ServiceSpec, m: &crate::model::TickMetrics) -> u32 {
    use crate::policy::SignalKind;
    let cap = &policy.capacity;
    cap.per_replica
        .iter()
        .filter_map(|(kind, per)| {
            let demand = match kind {
                SignalKind::Connections => m.connections as f64,
                // What the clients want, the door's included (its connections are too).
                SignalKind::Throughput => m.client_offered_rps(),
                _ => return None,
            };
            let enough = per * cap.target_utilization * (1.0 + cap.tolerance);
            Some((demand / enough).ceil() as u32)
        })
        .max()
        .unwrap_or(0)
        .clamp(service.min_replicas, service.max_replicas)
}

/// Runs one scenario for one service of the policy.
pub fn run(
    scenario: &Scenario,
    policy: &Policy,
    service: &ServiceSpec,
    opts: Options,
) -> SimResult {
    run_with(scenario, policy, service, opts, ReplicaParams::default())
}

pub fn run_with(
    scenario: &Scenario,
    policy: &Policy,
    service: &ServiceSpec,
    opts: Options,
    params: ReplicaParams,
) -> SimResult {
    run_judged(scenario, policy, policy, service, opts, params)
}

/// Runs `scenario` under `policy`, judging the service's true tier by `yardstick`'s
/// thresholds (the user's policy, also when `policy` is the HPA baseline).
pub fn run_judged(
    scenario: &Scenario,
    policy: &Policy,
    yardstick: &Policy,
    service: &ServiceSpec,
    opts: Options,
    params: ReplicaParams,
) -> SimResult {
    let dt = opts.tick.as_secs_f64();
    let ticks = (scenario.duration().as_secs_f64() / dt).round() as u64;
    let interval_ticks = ((opts.interval.as_secs_f64() / dt).round() as u64).max(1);
    // At most MAX_TIMELINE rows: a long run keeps every stride-th tick (the expectations
    // still see every tick).
    let stride = ticks.div_ceil(MAX_TIMELINE).max(1);
    let mut cluster = Cluster::new(params, scenario.replicas);
    cluster.detail = opts.record;
    // A deployment under the policy already has its cap: the first tick's sessions are
    // placed under it too, not before the first decision posts it (unless it starts at
    // its ceiling, where the cap is lifted: `core::capacity::session_cap`).
    if opts.controlled && scenario.replicas < service.max_replicas {
        cluster.set_session_cap(policy.capacity.session_cap);
    }
    let mut prom = ModelPrometheus::new(
        (opts.rate_window.as_secs_f64() / dt).round() as usize,
        opts.rate_window.as_millis() as u64,
        scenario.scrape_interval.as_millis() as u64,
        &params,
    );
    if let Some(f) = &policy.panic_fast {
        let window = crate::policy::promql::longest_range(&f.query).unwrap_or(opts.tick);
        prom.fast_ticks = (window.as_secs_f64() / dt).round().max(1.0) as usize;
    }
    let mut swarm = ModelSwarm::new().with_nodes(
        scenario
            .nodes
            .map(|n| ModelNodes::new(n.count, n.tasks_per_node)),
    );
    let history = history_series(scenario, policy);
    let mut controller = Reconciler::new();
    load_history(&mut controller, policy, &history);
    let mut timeline = Vec::new();
    let mut events = Vec::new();
    let mut points = Vec::new();
    let mut next_fault = 0;
    let mut controller_down_until = Duration::ZERO;
    let mut last: Option<Decision> = None;
    let mut forecasters = ForecasterStates::default();
    let mut last_write_ok = true;
    let mut summary = Summary {
        max_tier: Tier::Green,
        peak_p95_ms: 0.0,
        peak_error_rate: 0.0,
        max_replicas: cluster.replicas(),
        scale_actions: 0,
        shed_requests: 0.0,
        failed_writes: 0,
        replica_seconds: 0.0,
        seconds_yellow_or_worse: 0.0,
        seconds_red_or_worse: 0.0,
        updates: 0,
        direction_changes: 0,
        shed_fraction: 0.0,
        timeout_rate: 0.0,
        sessions_refused: 0.0,
    };
    let (mut offered, mut timeouts, mut last_dir) = (0.0, 0.0, 0i8);
    let mut not_injected = Vec::new();
    let mut last_tick = Duration::ZERO;

    for k in 0..ticks {
        let t = Duration::from_secs_f64(k as f64 * dt);
        last_tick = t;
        let now_ms = t.as_millis() as u64;
        let Some((pi, into)) = scenario.phase_at(t) else {
            break;
        };
        let phase = &scenario.phases[pi];
        while let Some(f) = scenario.faults.get(next_fault).filter(|f| f.at <= t) {
            let until = |d: &Duration| (t + *d).as_millis() as u64;
            let mut injected = true;
            match &f.kind {
                // All or none, as a drill kills them: fewer running than asked is a fault
                // not injected, and the run deviates (it killed what there was, silently,
                // where the drill of the same scenario refused and deviated).
                FaultKind::KillTasks(n) if cluster.ready() < *n => {
                    injected = false;
                    not_injected.push(Outcome::not_injected(
                        &f.describe(),
                        format!("only {} ready task(s) to kill", cluster.ready()),
                    ));
                }
                FaultKind::KillTasks(n) => cluster.kill(*n, opts.restart_delay.as_secs_f64()),
                FaultKind::NodeDown { node, duration }
                | FaultKind::NodeDrain { node, duration } => {
                    // `n1` .. `nN`, checked when the scenario was read.
                    let index = node[1..].parse::<usize>().unwrap_or(1).saturating_sub(1);
                    let down = matches!(f.kind, FaultKind::NodeDown { .. });
                    swarm.node_out(&mut cluster, index, (now_ms, until(duration)), down);
                }
                FaultKind::PauseTasks { count, duration } => {
                    cluster.pause(*count, duration.as_secs_f64())
                }
                FaultKind::PrometheusDown(d) => prom.down_until_ms = until(d),
                FaultKind::PrometheusStale(d) => prom.stale_until_ms = until(d),
                FaultKind::ScrapeGap { targets, duration } => {
                    prom.gap = Some((*targets, until(duration)))
                }
                FaultKind::WriteFailures(d) => swarm.fail_writes(until(d)),
                FaultKind::RollingUpdate { duration, paused } => {
                    swarm.start_update(now_ms, until(duration), *paused)
                }
                FaultKind::RestartController { down_for } => {
                    // The process is gone with everything it held in memory; the next one
                    // starts from the service's labels, as `andon run` does.
                    controller_down_until = t + *down_for;
                    controller = Reconciler::new();
                    load_history(&mut controller, policy, &history);
                }
            }
            if opts.record {
                events.push(Event {
                    t_s: t.as_secs_f64(),
                    kind: "fault",
                    text: if injected {
                        f.describe()
                    } else {
                        format!("NOT INJECTED: {}", f.describe())
                    },
                });
            }
            next_fault += 1;
        }

        let conns = phase.connections_at(into);
        let load = Load {
            connections: conns,
            rate_per_conn: phase.rate_per_connection(conns),
            timeout_s: scenario.client_timeout.as_secs_f64(),
        };
        swarm.advance(&mut cluster, now_ms);
        let m = cluster.step(dt, load);
        prom.push(m, now_ms);

        if k % interval_ticks == 0 && t >= controller_down_until {
            let obs = prom.observe(policy, now_ms);
            let view = swarm.read(&mut cluster, now_ms);
            let plan = controller.step(policy, service, &obs, view, now_ms, opts.controlled);
            let d = &plan.decision;
            if opts.record {
                for text in forecasters.changes(&plan.decision) {
                    events.push(Event {
                        t_s: t.as_secs_f64(),
                        kind: "forecast",
                        text,
                    });
                }
            }
            if opts.record && plan.changed {
                events.push(Event {
                    t_s: t.as_secs_f64(),
                    kind: "decision",
                    text: format!(
                        "{} {} → {}: {}",
                        d.tier,
                        plan.current,
                        d.desired,
                        d.summary()
                    ),
                });
            }
            if opts.controlled {
                let scaled = plan.write.replicas.is_some_and(|r| r != plan.current);
                let ok = swarm.write(&plan.write, &mut cluster, now_ms);
                controller.committed(ok);
                if ok && scaled {
                    summary.scale_actions += 1;
                    let dir = if plan.write.replicas > Some(plan.current) {
                        1
                    } else {
                        -1
                    };
                    if last_dir != 0 && dir != last_dir {
                        summary.direction_changes += 1;
                    }
                    last_dir = dir;
                }
                if opts.record && ok != last_write_ok {
                    events.push(Event {
                        t_s: t.as_secs_f64(),
                        kind: "write",
                        text: if ok {
                            "service updates go through again".into()
                        } else {
                            "service update failed (update out of sequence): nothing in it is taken as done; admission is still posted".into()
                        },
                    });
                }
                last_write_ok = ok;
                // Admission goes to the replicas whether or not the spec write succeeded.
                let a = plan.admission;
                let per_replica = a
                    .max_rps
                    .or(a.admit.map(|f| f * cluster.params.capacity_rps));
                cluster.set_shedding(per_replica);
                cluster.set_session_cap(a.max_sessions);
            }
            last = Some(plan.decision);
        }

        let (tier, shed_admit, stopped) = last.as_ref().map_or((Tier::Green, None, false), |d| {
            (d.tier, d.shed_admit, d.stopped)
        });
        let forecast_rps = last.as_ref().and_then(|d| {
            let o = d
                .forecasts
                .iter()
                .find(|o| o.signal == crate::policy::SignalKind::Throughput)?;
            // The largest forecast, at the horizon it looks to.
            o.said()
                .into_iter()
                .filter_map(|s| Some((s.value?, s.horizon_s)))
                .max_by(|a, b| a.0.total_cmp(&b.0))
        });
        let admitted_p95_ms = m.p95_s * 1000.0;
        summary.max_tier = summary.max_tier.max(tier);
        summary.peak_p95_ms = summary.peak_p95_ms.max(admitted_p95_ms);
        summary.peak_error_rate = summary.peak_error_rate.max(m.client_error_rate());
        // The replicas the service asks for, as the drill reads them (the spec): with
        // nodes that cannot hold them all, fewer run (`ready`), and that is no scale-down.
        // The replica-seconds are what ran.
        let asked = swarm.spec().unwrap_or(m.replicas);
        summary.max_replicas = summary.max_replicas.max(asked);
        // The clients' view: the door's demand is refused fast, a shed (the model's
        // TickMetrics::door_rps); without a session cap it is 0.
        summary.shed_requests += (m.shed_rps + m.door_rps) * dt;
        summary.sessions_refused += m.refused_sessions * dt;
        summary.replica_seconds += m.replicas as f64 * dt;
        offered += m.client_offered_rps() * dt;
        timeouts += m.timeout_rps * dt;
        let truly = crate::baseline::true_tier(yardstick, &m);
        if truly >= Tier::Yellow {
            summary.seconds_yellow_or_worse += dt;
        }
        if truly >= Tier::Red {
            summary.seconds_red_or_worse += dt;
        }
        let timeout_rate = m.client_timeout_rate();
        points.push(Point {
            t,
            tier: Some(tier),
            replicas: Some(asked),
            ready: Some(m.ready),
            needed: Some(needed(yardstick, service, &m)),
            p95_s: (m.admitted_rps > 0.0).then_some(m.p95_s),
            error_rate: Some(m.client_error_rate()),
            timeout_rate: Some(timeout_rate),
            offered_rps: Some(m.client_offered_rps()),
            shed_rate: Some(m.client_shed_rate()),
            stopped: Some(stopped),
        });
        if opts.record && k % stride == 0 {
            timeline.push(TimelinePoint {
                t_s: t.as_secs_f64(),
                phase: phase.name.clone(),
                tier,
                replicas: asked,
                ready: m.ready,
                connections: m.connections,
                offered_rps: m.client_offered_rps(),
                p95_ms: admitted_p95_ms,
                p99_ms: m.p99_s * 1000.0,
                server_p95_ms: m.server_p95_s * 1000.0,
                error_rate: m.client_error_rate(),
                shed_rate: m.client_shed_rate(),
                timeout_rate,
                cpu: m.cpu,
                memory_bytes: m.memory_bytes,
                shed_admit,
                stopped,
                forecast_rps: forecast_rps.map(|f| f.0),
                forecast_horizon_s: forecast_rps.map(|f| f.1),
            });
        }
    }

    summary.failed_writes = swarm.failed_writes;
    summary.updates = swarm.writes;
    if offered > 0.0 {
        summary.shed_fraction = summary.shed_requests / offered;
        summary.timeout_rate = timeouts / offered;
    }
    // A fault between the last tick and the end never fired (a drill's would have).
    for f in &scenario.faults[next_fault..] {
        not_injected.push(Outcome::not_injected(
            &f.describe(),
            format!(
                "the run's last tick was at {} (--tick)",
                humantime::format_duration(last_tick)
            ),
        ));
    }
    // The scenario's own first, in its order (`judge_against` pairs them with it).
    let expectations: Vec<Outcome> = scenario
        .expect
        .iter()
        .map(|e| e.check(&points, |i| scenario.phase_bounds(i)))
        .chain(not_injected)
        .collect();
    SimResult {
        scenario: scenario.name.clone(),
        policy: policy.source.clone(),
        controlled: opts.controlled,
        verdict: Verdict::of(&expectations),
        summary,
        expectations,
        timeline,
        events,
        baseline: None,
    }
}
