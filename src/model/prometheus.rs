//! The modelled Prometheus: what a controller reads of the modelled cluster.
//!
//! It scrapes every `scrape_interval`; each scrape turns the true figures into what the
//! shipped queries give: rates averaged over the `rate(...[1m])` window, p95 as the
//! quantile of the window's pooled latencies (as `histogram_quantile` over those rates),
//! gauges as they are. Between scrapes a query answers the last scrape's values. Faults:
//! - down: every query fails (connection refused);
//! - stale: scrapes stop; gauges keep their last values for Prometheus' 5-minute lookback,
//!   rates vanish once the rate window holds no samples;
//! - a scrape gap: some tasks are not scraped; sums read low, averages and ratios do not,
//!   and the targets query counts fewer targets.
//!
//! Like a real instant query, a reading is dated at evaluation time, unless the policy
//! checks its targets (`jidoka.targets`): then it is dated by the last scrape, which is
//! how the live source dates it too.

use super::replica::{mixture_quantile, Component, ReplicaParams};
use super::TickMetrics;
use crate::core::{Observations, Reading};
use crate::policy::{Policy, SignalKind};
use std::collections::VecDeque;

/// Prometheus' default lookback: a gauge with no newer sample is gone after this long.
const LOOKBACK_MS: u64 = 5 * 60 * 1000;

/// The largest finite bucket of the default Prometheus histogram: `histogram_quantile`
/// answers no more than this.
const HISTOGRAM_TOP_S: f64 = 10.0;

/// The values of one scrape.
#[derive(Debug, Clone, Copy)]
struct Scrape {
    at_ms: u64,
    values: [f64; 7],
    /// The throughput over the fast window (`behavior.panic.fast`).
    fast_throughput: f64,
    targets: u32,
}

pub struct ModelPrometheus {
    window: VecDeque<TickMetrics>,
    len: usize,
    sum_offered: f64,
    sum_failed: f64,
    sum_admitted: f64,
    sigma: f64,
    p95_factor: f64,
    rate_window_ms: u64,
    scrape_every_ms: u64,
    last: Option<Scrape>,
    pub down_until_ms: u64,
    pub stale_until_ms: u64,
    /// Targets not scraped, until when.
    pub gap: Option<(u32, u64)>,
    /// Model ticks in the fast panic signal's window (its query's `[30s]`); the model
    /// answers a fast throughput over them, and any other fast signal as the signal.
    pub fast_ticks: usize,
}

impl ModelPrometheus {
    /// `window_ticks` model ticks make the rate window of `rate_window_ms`.
    pub fn new(
        window_ticks: usize,
        rate_window_ms: u64,
        scrape_every_ms: u64,
        params: &ReplicaParams,
    ) -> Self {
        ModelPrometheus {
            window: VecDeque::with_capacity(window_ticks + 1),
            len: window_ticks.max(1),
            sum_offered: 0.0,
            sum_failed: 0.0,
            sum_admitted: 0.0,
            sigma: params.sigma,
            p95_factor: params.p95_factor(),
            rate_window_ms,
            scrape_every_ms: scrape_every_ms.max(1),
            last: None,
            down_until_ms: 0,
            stale_until_ms: 0,
            gap: None,
            fast_ticks: 1,
        }
    }

    fn add(&mut self, m: &TickMetrics, sign: f64) {
        self.sum_offered += sign * m.offered_rps;
        self.sum_failed += sign * (m.error_rps + m.shed_rps);
        self.sum_admitted += sign * m.admitted_rps;
    }

    /// One model tick's true figures; scrapes when a scrape is due.
    pub fn push(&mut self, m: TickMetrics, now_ms: u64) {
        self.add(&m, 1.0);
        self.window.push_back(m);
        if self.window.len() > self.len {
            if let Some(old) = self.window.pop_front() {
                self.add(&old, -1.0);
            }
        }
        let due = self
            .last
            .is_none_or(|s| now_ms >= s.at_ms + self.scrape_every_ms);
        if due && now_ms >= self.stale_until_ms {
            self.last = Some(self.scrape(now_ms));
        }
    }

    fn scrape(&self, now_ms: u64) -> Scrape {
        let last = self.window.back().copied().unwrap_or_default();
        let n = self.window.len().max(1) as f64;
        let ready = last.ready;
        let missing = match self.gap {
            Some((k, until)) if now_ms < until => k.min(ready),
            _ => 0,
        };
        // Sums over the scraped targets only.
        let part = if ready > 0 {
            (ready - missing) as f64 / ready as f64
        } else {
            1.0
        };
        let mut v = [0.0; 7];
        v[SignalKind::ErrorRate.index()] = if self.sum_offered > 1e-9 {
            (self.sum_failed / self.sum_offered).clamp(0.0, 1.0)
        } else {
            0.0
        };
        // histogram_quantile over rate(...[1m]) is the p95 of the pooled window, not an
        // average of p95s: pool each tick's latency (one log-normal with that tick's p95)
        // weighted by its requests. An idle service reads 0, as the shipped query gives. The
        // server's histogram records what it served, timed-out requests included.
        v[SignalKind::P95Latency.index()] = if self.sum_admitted > 1e-9 {
            let components: Vec<Component> = self
                .window
                .iter()
                .map(|m| Component {
                    weight: m.admitted_rps,
                    median_s: m.server_p95_s / self.p95_factor,
                })
                .collect();
            mixture_quantile(&components, self.sigma, 0.95).min(HISTOGRAM_TOP_S)
        } else {
            0.0
        };
        v[SignalKind::Cpu.index()] = last.cpu;
        v[SignalKind::Memory.index()] = last.memory_bytes;
        v[SignalKind::Connections.index()] = last.connections as f64 * part;
        v[SignalKind::Throughput.index()] = (self.sum_offered / n).max(0.0) * part;
        v[SignalKind::QueueDepth.index()] = last.queue_depth * part;
        let k = self.fast_ticks.clamp(1, self.window.len().max(1));
        let fast: f64 = self
            .window
            .iter()
            .rev()
            .take(k)
            .map(|m| m.offered_rps)
            .sum();
        Scrape {
            at_ms: now_ms,
            values: v,
            fast_throughput: (fast / k as f64).max(0.0) * part,
            targets: ready - missing,
        }
    }

    /// What the policy's queries answer at `now_ms`.
    pub fn observe(&self, policy: &Policy, now_ms: u64) -> Observations {
        if now_ms < self.down_until_ms {
            return Observations {
                fast: None,
                seasonal: Vec::new(),
                readings: Vec::new(),
                source_error: Some("Prometheus unreachable (connection refused)".into()),
                targets: None,
            };
        }
        let Some(s) = self.last else {
            return Observations::default();
        };
        let age = now_ms.saturating_sub(s.at_ms);
        let dated = policy.targets.is_some();
        let readings = policy
            .signals
            .iter()
            .map(|sig| {
                let rate_based = matches!(
                    sig.kind,
                    SignalKind::ErrorRate | SignalKind::P95Latency | SignalKind::Throughput
                );
                let gone = if rate_based {
                    age > self.rate_window_ms
                } else {
                    age > LOOKBACK_MS
                };
                let r = if gone {
                    Reading::Missing
                } else {
                    Reading::Value {
                        value: s.values[sig.kind.index()],
                        at_ms: if dated { s.at_ms } else { now_ms },
                    }
                };
                (sig.kind, r)
            })
            .collect();
        let fast = policy.panic_fast.as_ref().map(|f| {
            if age > self.rate_window_ms {
                Reading::Missing
            } else {
                Reading::Value {
                    value: match f.kind {
                        SignalKind::Throughput => s.fast_throughput,
                        k => s.values[k.index()],
                    },
                    at_ms: if dated { s.at_ms } else { now_ms },
                }
            }
        });
        Observations {
            fast,
            seasonal: Vec::new(),
            readings,
            source_error: None,
            // A target whose last scrape is older than stale_after does not count.
            targets: dated.then_some(if age > policy.jidoka.stale_after.as_millis() as u64 {
                0
            } else {
                s.targets
            }),
        }
    }
}
