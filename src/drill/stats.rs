//! What the drill measures: latency histograms per phase and per method (HdrHistogram,
//! microseconds, measured from the *intended* send time as wrk2 does), errors by class,
//! and a per-second timeline beside what the watcher saw.

use super::mcp::ErrorClass;
use crate::policy::Tier;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;

/// 1 µs to 10 min, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // Constant bounds that HdrHistogram accepts: this cannot fail.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid constant bounds")
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// Requests due by the schedule (the offered load).
    pub scheduled: u64,
    /// Answered successfully.
    pub ok: u64,
    pub errors: BTreeMap<ErrorClass, u64>,
}

impl Counts {
    pub fn error_total(&self, include_shed: bool) -> u64 {
        self.errors
            .iter()
            .filter(|(c, _)| include_shed || **c != ErrorClass::Shed)
            .map(|(_, n)| n)
            .sum()
    }
    pub fn answered(&self) -> u64 {
        self.ok + self.error_total(true)
    }
    /// Requests finished, less those the generator did not send at its in-flight bound:
    /// the achieved rate's count. (Requests for a session that is not open, `refused`,
    /// are in it: the schedule offered them, and the server's refusal caused them.)
    pub fn attempted(&self) -> u64 {
        self.answered()
            .saturating_sub(of_class(&self.errors, ErrorClass::Generator))
    }
}

pub struct PhaseStats {
    pub name: String,
    pub overall: Histogram<u64>,
    pub per_method: BTreeMap<String, Histogram<u64>>,
    pub counts: Counts,
    pub duration_s: f64,
}

/// Percentiles of a histogram in milliseconds.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p75_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            p50_ms: q(0.5),
            p75_ms: q(0.75),
            p90_ms: q(0.9),
            p95_ms: q(0.95),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: h.max() as f64 / 1000.0,
        }
    }
}

/// One second of the run: the client's view and the watcher's, side by side.
#[derive(Debug, Clone, Serialize)]
pub struct Second {
    pub t_s: f64,
    pub phase: String,
    pub sessions: u32,
    pub offered_rps: f64,
    pub achieved_rps: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Failures other than sheds over answered-or-failed.
    pub error_rate: f64,
    pub shed_rate: f64,
    pub timeout_rate: f64,
    pub errors: BTreeMap<ErrorClass, u64>,
    pub replicas: Option<u32>,
    pub ready: Option<u32>,
    pub tier: Option<Tier>,
    pub shed_admit: Option<f64>,
    pub stopped: Option<bool>,
    /// How far the generator's schedule ran behind, at worst, in this second.
    pub generator_lag_ms: f64,
}

impl Second {
    /// Any request finished in this second: answered, failed, or not sent at the
    /// generator's bound (a second of those is all errors, not a second with no reading).
    pub fn finished_any(&self) -> bool {
        self.achieved_rps > 0.0 || of_class(&self.errors, ErrorClass::Generator) > 0
    }
}

/// How many of `errors` are of `class` (0 when none is).
pub fn of_class(errors: &BTreeMap<ErrorClass, u64>, class: ErrorClass) -> u64 {
    errors.get(&class).copied().unwrap_or(0)
}

pub struct Stats {
    pub phases: Vec<PhaseStats>,
    pub window: Histogram<u64>,
    pub window_counts: Counts,
    pub window_lag_ms: f64,
    pub timeline: Vec<Second>,
    pub total: Counts,
    pub overall: Histogram<u64>,
    /// Connections the server closed (stream wires), by WebSocket close code ("eof" for
    /// a connection that just ended).
    pub closed_by_server: BTreeMap<String, u64>,
}

impl Stats {
    pub fn new(phases: &[(String, f64)]) -> Stats {
        Stats {
            phases: phases
                .iter()
                .map(|(n, d)| PhaseStats {
                    name: n.clone(),
                    overall: new_histogram(),
                    per_method: BTreeMap::new(),
                    counts: Counts::default(),
                    duration_s: *d,
                })
                .collect(),
            window: new_histogram(),
            window_counts: Counts::default(),
            window_lag_ms: 0.0,
            timeline: Vec::new(),
            total: Counts::default(),
            overall: new_histogram(),
            closed_by_server: BTreeMap::new(),
        }
    }

    pub fn closed_by_server(&mut self, code: &str) {
        *self.closed_by_server.entry(code.to_string()).or_default() += 1;
    }

    pub fn scheduled(&mut self, phase: usize) {
        if let Some(p) = self.phases.get_mut(phase) {
            p.counts.scheduled += 1;
        }
        self.window_counts.scheduled += 1;
        self.total.scheduled += 1;
    }

    /// Records an outcome: a latency in µs for a success, or an error class.
    pub fn record(&mut self, phase: usize, method: &str, micros: u64, outcome: Option<ErrorClass>) {
        let v = micros.max(1);
        match outcome {
            None => {
                if let Some(p) = self.phases.get_mut(phase) {
                    let _ = p.overall.record(v);
                    // Looked up before inserting: a String per answer was a malloc each.
                    match p.per_method.get_mut(method) {
                        Some(h) => {
                            let _ = h.record(v);
                        }
                        None => {
                            let mut h = new_histogram();
                            let _ = h.record(v);
                            p.per_method.insert(method.to_string(), h);
                        }
                    }
                    p.counts.ok += 1;
                }
                let _ = self.window.record(v);
                let _ = self.overall.record(v);
                self.window_counts.ok += 1;
                self.total.ok += 1;
            }
            Some(c) => {
                if let Some(p) = self.phases.get_mut(phase) {
                    *p.counts.errors.entry(c).or_default() += 1;
                }
                *self.window_counts.errors.entry(c).or_default() += 1;
                *self.total.errors.entry(c).or_default() += 1;
            }
        }
    }

    /// Closes the current second into the timeline.
    pub fn close_second(&mut self, mut s: Second) {
        let c = &self.window_counts;
        let answered = c.answered().max(1) as f64;
        s.offered_rps = c.scheduled as f64;
        s.achieved_rps = c.attempted() as f64;
        if !self.window.is_empty() {
            s.p50_ms = Some(self.window.value_at_quantile(0.5) as f64 / 1000.0);
            s.p95_ms = Some(self.window.value_at_quantile(0.95) as f64 / 1000.0);
            s.p99_ms = Some(self.window.value_at_quantile(0.99) as f64 / 1000.0);
        }
        s.error_rate = c.error_total(false) as f64 / answered;
        s.shed_rate = c.errors.get(&ErrorClass::Shed).copied().unwrap_or(0) as f64 / answered;
        s.timeout_rate = c.errors.get(&ErrorClass::Timeout).copied().unwrap_or(0) as f64 / answered;
        s.errors = c.errors.clone();
        s.generator_lag_ms = self.window_lag_ms;
        self.timeline.push(s);
        self.window.reset();
        self.window_counts = Counts::default();
        self.window_lag_ms = 0.0;
    }
}
