//! A scenario's history: the days before the run, as the modelled Prometheus holds them,
//! for the seasonal forecast (`behavior.predict.seasonal`).
//!
//! ```yaml
//! history:
//!   days: 7          # earlier days the modelled Prometheus holds
//!   period: 24h      # a day's length (the default; a policy's seasonal period must match)
//!   jitter: 5%       # each earlier day's load is scaled by up to ± this (a fixed pattern)
//!   zero_days: [1]   # these days (1 = the day before the run) read 0: a broken history
//! ```
//!
//! Each earlier day replays the scenario's own load from its start: the run is "today",
//! and it must last at least one period.

use super::{Checker, Scenario};
use crate::policy::file::Quantity;
use crate::policy::{Policy, SignalKind};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryFile {
    pub days: i64,
    pub period: Option<String>,
    pub jitter: Option<Quantity>,
    #[serde(default)]
    pub zero_days: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct History {
    pub days: u32,
    pub period: Duration,
    pub jitter: f64,
    pub zero_days: Vec<u32>,
}

/// At most this many days of history (a quarter).
pub const MAX_DAYS: i64 = 92;

/// A fixed pattern of day-to-day variation, in [-1, 1].
const PATTERN: [f64; 7] = [0.6, -0.8, 0.2, 1.0, -0.4, -1.0, 0.5];

pub(super) fn build(c: &mut Checker, raw: &HistoryFile, duration: Duration) -> Option<History> {
    let days = if (1..=MAX_DAYS).contains(&raw.days) {
        raw.days as u32
    } else {
        c.error(
            "history.days",
            format!(
                "{} is out of range; allowed: a whole number from 1 to {MAX_DAYS}",
                raw.days
            ),
        );
        return None;
    };
    let period = match &raw.period {
        Some(t) => c.positive_duration("history.period", t),
        None => Duration::from_secs(24 * 3600),
    };
    if duration < period {
        c.error(
            "history",
            format!(
                "the scenario lasts {}, less than one period ({}): earlier days replay the scenario, so it must cover a whole day; allowed: phases of at least one period",
                humantime::format_duration(duration),
                humantime::format_duration(period)
            ),
        );
        return None;
    }
    let jitter = match &raw.jitter {
        None => 0.0,
        Some(q) => super::ratio(c, "history.jitter", q).unwrap_or(0.0),
    };
    let mut zero_days = Vec::new();
    for (i, d) in raw.zero_days.iter().enumerate() {
        if (1..=raw.days).contains(d) {
            zero_days.push(*d as u32);
        } else {
            c.error(
                &format!("history.zero_days[{i}]"),
                format!(
                    "day {d} is not in the history; allowed: 1 (the day before the run) to {days}"
                ),
            );
        }
    }
    Some(History {
        days,
        period,
        jitter,
        zero_days,
    })
}

impl History {
    /// A demand signal's history as Prometheus would answer the range query andon sends:
    /// one point every `step` over the last `window` (the policy's `history`, and no more
    /// than `days` periods) before the run (ms, negative: the run starts at 0).
    /// Connections are the gauge; throughput is the offered rate averaged over the
    /// signal's rate window, as `rate(...[1m])` reads it.
    pub fn series(
        &self,
        scenario: &Scenario,
        policy: &Policy,
        kind: SignalKind,
        step: Duration,
        window: Duration,
    ) -> Vec<(i64, f64)> {
        let period_ms = self.period.as_millis() as i64;
        let step_ms = (step.as_millis() as i64).max(1000);
        let window_s = policy
            .signal(kind)
            .and_then(|s| crate::policy::promql::longest_range(&s.query))
            .map_or(0, |d| d.as_secs() as i64);
        let offered = |t_s: i64| -> (f64, f64) {
            let t = Duration::from_secs(t_s.max(0) as u64);
            match scenario.phase_at(t) {
                Some((i, into)) => {
                    let p = &scenario.phases[i];
                    let c = p.connections_at(into);
                    (c as f64, c as f64 * p.rate_per_connection(c))
                }
                None => (0.0, 0.0),
            }
        };
        let span = (self.days as i64 * period_ms).min(window.as_millis() as i64);
        // Validation bounds history / step; this bounds a scenario's own numbers too.
        let points = (span / step_ms).min(crate::policy::predict::MAX_HISTORY_POINTS as i64);
        let start = -points * step_ms;
        (0..points)
            .map(|i| {
                let t = start + i * step_ms;
                let day = ((-t + period_ms - 1) / period_ms) as u32;
                let tod_s = t.rem_euclid(period_ms) / 1000;
                let scale = 1.0 + self.jitter * PATTERN[day as usize % PATTERN.len()];
                let v = if self.zero_days.contains(&day) {
                    0.0
                } else {
                    match kind {
                        SignalKind::Connections => offered(tod_s).0,
                        SignalKind::Throughput if window_s > 0 => {
                            (0..window_s).map(|s| offered(tod_s - s).1).sum::<f64>()
                                / window_s as f64
                        }
                        _ => offered(tod_s).1,
                    }
                };
                (t, v * scale)
            })
            .collect()
    }
}
