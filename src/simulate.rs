//! `andon simulate`: the decision core against a modelled erlmcp cluster, on virtual time.
//!
//! Each tick the scenario sets the load, faults strike at their times, the model serves
//! the load, and a model of Prometheus turns the true figures into what a controller would
//! read (rates over a window). Every `interval`, the core decides on that view; with
//! control, the cluster follows the decision (replicas, shedding). Without control the
//! core still runs, so the timeline shows which tier the service would be in.

use crate::core::{self, CoreState, Decision, Observations, Reading, Replicas};
use crate::model::replica::{mixture_quantile, Component};
use crate::model::{Cluster, Load, ReplicaParams, TickMetrics};
use crate::policy::{Policy, ServiceSpec, SignalKind, Tier};
use crate::scenario::expect::{Outcome, Point};
use crate::scenario::{FaultKind, Scenario, Verdict};
use serde::Serialize;
use std::collections::VecDeque;
use std::time::Duration;

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
    pub offered_rps: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// Failures other than sheds, over offered.
    pub error_rate: f64,
    /// Shed (fast 503) over offered.
    pub shed_rate: f64,
    pub timeout_rate: f64,
    pub cpu: f64,
    pub memory_bytes: f64,
    pub shed_admit: Option<f64>,
    pub stopped: bool,
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
}

/// The Prometheus view of the model: rate-based signals averaged over the window,
/// gauges as they are.
struct PromView {
    window: VecDeque<TickMetrics>,
    len: usize,
    sum_offered: f64,
    sum_failed: f64,
    sum_admitted: f64,
    sigma: f64,
    p95_factor: f64,
}

impl PromView {
    fn new(len: usize, params: &ReplicaParams) -> Self {
        PromView {
            window: VecDeque::with_capacity(len + 1),
            len: len.max(1),
            sum_offered: 0.0,
            sum_failed: 0.0,
            sum_admitted: 0.0,
            sigma: params.sigma,
            p95_factor: params.p95_factor(),
        }
    }

    fn add(&mut self, m: &TickMetrics, sign: f64) {
        self.sum_offered += sign * m.offered_rps;
        self.sum_failed += sign * (m.error_rps + m.shed_rps);
        self.sum_admitted += sign * m.admitted_rps;
    }

    fn push(&mut self, m: TickMetrics) {
        self.add(&m, 1.0);
        self.window.push_back(m);
        if self.window.len() > self.len {
            if let Some(old) = self.window.pop_front() {
                self.add(&old, -1.0);
            }
        }
    }

    fn observations(&self, policy: &Policy, now_ms: u64) -> Observations {
        let n = self.window.len().max(1) as f64;
        let last = self.window.back().copied().unwrap_or_default();
        let value = |kind: SignalKind| -> f64 {
            match kind {
                SignalKind::ErrorRate => {
                    if self.sum_offered > 1e-9 {
                        (self.sum_failed / self.sum_offered).clamp(0.0, 1.0)
                    } else {
                        0.0
                    }
                }
                // histogram_quantile over all-zero rates is NaN, as in Prometheus.
                // histogram_quantile over rate(...[1m]) is the p95 of the pooled window,
                // not an average of p95s: pool each tick's latency (as one log-normal
                // with that tick's p95) weighted by its requests.
                SignalKind::P95Latency => {
                    if self.sum_admitted > 1e-9 {
                        let components: Vec<Component> = self
                            .window
                            .iter()
                            .map(|m| Component {
                                weight: m.admitted_rps,
                                median_s: m.p95_s / self.p95_factor,
                            })
                            .collect();
                        mixture_quantile(&components, self.sigma, 0.95)
                    } else {
                        // The shipped policy's query answers 0 for an idle service.
                        0.0
                    }
                }
                SignalKind::Cpu => last.cpu,
                SignalKind::Memory => last.memory_bytes,
                SignalKind::Connections => last.connections as f64,
                SignalKind::Throughput => (self.sum_offered / n).max(0.0),
                SignalKind::QueueDepth => last.queue_depth,
            }
        };
        Observations {
            readings: policy
                .signals
                .iter()
                .map(|s| {
                    (
                        s.kind,
                        Reading::Value {
                            value: value(s.kind),
                            at_ms: now_ms,
                        },
                    )
                })
                .collect(),
            source_error: None,
        }
    }
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
    let dt = opts.tick.as_secs_f64();
    let ticks = (scenario.duration().as_secs_f64() / dt).round() as u64;
    let interval_ticks = ((opts.interval.as_secs_f64() / dt).round() as u64).max(1);
    let mut cluster = Cluster::new(params, scenario.replicas);
    cluster.detail = opts.record;
    let mut view = PromView::new(
        (opts.rate_window.as_secs_f64() / dt).round() as usize,
        &params,
    );
    let mut state = CoreState::default();
    let mut timeline = Vec::new();
    let mut events = Vec::new();
    let mut points = Vec::new();
    let mut next_fault = 0;
    let mut prometheus_down_until = Duration::ZERO;
    let mut controller_down_until = Duration::ZERO;
    let mut last: Option<Decision> = None;
    let mut summary = Summary {
        max_tier: Tier::Green,
        peak_p95_ms: 0.0,
        peak_error_rate: 0.0,
        max_replicas: cluster.replicas(),
        scale_actions: 0,
        shed_requests: 0.0,
    };

    for k in 0..ticks {
        let t = Duration::from_secs_f64(k as f64 * dt);
        let Some((pi, into)) = scenario.phase_at(t) else {
            break;
        };
        let phase = &scenario.phases[pi];
        while let Some(f) = scenario.faults.get(next_fault).filter(|f| f.at <= t) {
            match &f.kind {
                FaultKind::KillTasks(n) => cluster.kill(*n, opts.restart_delay.as_secs_f64()),
                FaultKind::PauseTasks { count, duration } => {
                    cluster.pause(*count, duration.as_secs_f64())
                }
                FaultKind::PrometheusDown(d) => prometheus_down_until = t + *d,
                FaultKind::RestartController { down_for } => controller_down_until = t + *down_for,
            }
            if opts.record {
                events.push(Event {
                    t_s: t.as_secs_f64(),
                    kind: "fault",
                    text: f.describe(),
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
        let m = cluster.step(dt, load);
        view.push(m);

        if k % interval_ticks == 0 && t >= controller_down_until {
            let now_ms = t.as_millis() as u64;
            let obs = if t < prometheus_down_until {
                Observations {
                    readings: Vec::new(),
                    source_error: Some("Prometheus unreachable (connection refused)".into()),
                }
            } else {
                view.observations(policy, now_ms)
            };
            let replicas = Replicas {
                current: cluster.replicas(),
                ready: cluster.ready(),
                updating: false,
            };
            let d = core::decide_in_place(policy, service, &obs, replicas, &mut state, now_ms);
            // Worth a line: the first decision, a change of what it asks for, or a change made.
            let changed = (opts.controlled && d.desired != replicas.current)
                || last.as_ref().is_none_or(|l| {
                    l.desired != d.desired
                        || l.tier != d.tier
                        || l.stopped != d.stopped
                        || l.shed_admit != d.shed_admit
                });
            if d.desired != replicas.current && opts.controlled {
                summary.scale_actions += 1;
            }
            if opts.record && changed {
                events.push(Event {
                    t_s: t.as_secs_f64(),
                    kind: "decision",
                    text: format!(
                        "{} {} → {}: {}",
                        d.tier,
                        replicas.current,
                        d.desired,
                        d.summary()
                    ),
                });
            }
            if opts.controlled {
                cluster.scale(d.desired);
                cluster.set_shedding(d.shed_admit);
            }
            last = Some(d);
        }

        let (tier, shed_admit, stopped) = last.as_ref().map_or((Tier::Green, None, false), |d| {
            (d.tier, d.shed_admit, d.stopped)
        });
        let admitted_p95_ms = m.p95_s * 1000.0;
        summary.max_tier = summary.max_tier.max(tier);
        summary.peak_p95_ms = summary.peak_p95_ms.max(admitted_p95_ms);
        summary.peak_error_rate = summary.peak_error_rate.max(m.error_rate());
        summary.max_replicas = summary.max_replicas.max(m.replicas);
        summary.shed_requests += m.shed_rps * dt;
        let timeout_rate = if m.offered_rps > 0.0 {
            m.timeout_rps / m.offered_rps
        } else {
            0.0
        };
        points.push(Point {
            t,
            tier: Some(tier),
            replicas: Some(m.replicas),
            p95_s: (m.admitted_rps > 0.0).then_some(m.p95_s),
            error_rate: Some(m.error_rate()),
            timeout_rate: Some(timeout_rate),
        });
        if opts.record {
            timeline.push(TimelinePoint {
                t_s: t.as_secs_f64(),
                phase: phase.name.clone(),
                tier,
                replicas: m.replicas,
                ready: m.ready,
                connections: m.connections,
                offered_rps: m.offered_rps,
                p95_ms: admitted_p95_ms,
                p99_ms: m.p99_s * 1000.0,
                error_rate: m.error_rate(),
                shed_rate: if m.offered_rps > 0.0 {
                    m.shed_rps / m.offered_rps
                } else {
                    0.0
                },
                timeout_rate,
                cpu: m.cpu,
                memory_bytes: m.memory_bytes,
                shed_admit,
                stopped,
            });
        }
    }

    let expectations: Vec<Outcome> = scenario
        .expect
        .iter()
        .map(|e| e.check(&points, |i| scenario.phase_bounds(i)))
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
    }
}
