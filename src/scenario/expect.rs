//! The steady-state hypothesis: expectations over a window of the run, each held or
//! deviated with the figure observed. One module for `simulate` and `drill`.

use super::file::ExpectFile;
use super::{ratio, tier, Phase};
use crate::policy::validate::Checker;
use crate::policy::{units, Tier};
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub enum Metric {
    TierAtMost(Tier),
    P95Below(f64),
    ErrorRateBelow(f64),
    TimeoutRateBelow(f64),
    ReplicasAtMost(u32),
    ReplicasAtLeast(u32),
    /// Replicas never go down within the window (e.g. while Prometheus is away).
    NoScaleDown,
    /// Replicas are at or below `replicas` within `within` after phase `after` ends.
    ReplicasBackTo {
        replicas: u32,
        after: usize,
        within: Duration,
    },
}

/// Which part of the run an expectation covers.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// A phase (by index), or the whole run.
    pub during: Option<usize>,
    /// Ignore this much at the start of the window.
    pub skip: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expectation {
    pub text: String,
    pub metric: Metric,
    pub window: Window,
}

/// One observation of the run, from the simulator or the drill. `None` = not observed.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Point {
    pub t: Duration,
    pub tier: Option<Tier>,
    pub replicas: Option<u32>,
    pub p95_s: Option<f64>,
    pub error_rate: Option<f64>,
    pub timeout_rate: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub text: String,
    pub held: bool,
    pub observed: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Deviated,
}

impl Verdict {
    pub fn of(outcomes: &[Outcome]) -> Verdict {
        if outcomes.iter().all(|o| o.held) {
            Verdict::Pass
        } else {
            Verdict::Deviated
        }
    }
}

pub(super) fn build(
    c: &mut Checker,
    path: &str,
    e: &ExpectFile,
    phases: &[Phase],
) -> Option<Expectation> {
    let phase = |c: &mut Checker, field: &str, name: &str| -> Option<usize> {
        let i = phases.iter().position(|p| p.name == name);
        if i.is_none() {
            let names: Vec<&str> = phases.iter().map(|p| p.name.as_str()).collect();
            c.error(
                &format!("{path}.{field}"),
                format!("no phase `{name}`; allowed: {}", names.join(", ")),
            );
        }
        i
    };
    let mut metrics = Vec::new();
    if let Some(t) = &e.tier_at_most {
        metrics.push(tier(c, &format!("{path}.tier_at_most"), t).map(Metric::TierAtMost));
    }
    if let Some(q) = &e.p95_below {
        let v = match q {
            crate::policy::file::Quantity::Number(n) => Some(*n),
            crate::policy::file::Quantity::Text(t) => units::parse_in(units::Unit::Seconds, t)
                .map_err(|m| c.error(&format!("{path}.p95_below"), m))
                .ok(),
        };
        metrics.push(v.map(Metric::P95Below));
    }
    if let Some(q) = &e.error_rate_below {
        metrics.push(ratio(c, &format!("{path}.error_rate_below"), q).map(Metric::ErrorRateBelow));
    }
    if let Some(q) = &e.timeout_rate_below {
        metrics
            .push(ratio(c, &format!("{path}.timeout_rate_below"), q).map(Metric::TimeoutRateBelow));
    }
    if let Some(n) = e.replicas_at_most {
        metrics.push(Some(Metric::ReplicasAtMost(
            n.clamp(0, u32::MAX as i64) as u32
        )));
    }
    if e.no_scale_down == Some(true) {
        metrics.push(Some(Metric::NoScaleDown));
    }
    if let Some(n) = e.replicas_at_least {
        metrics.push(Some(Metric::ReplicasAtLeast(
            n.clamp(0, u32::MAX as i64) as u32
        )));
    }
    if let Some(n) = e.replicas_back_to {
        let after = match &e.after {
            Some(a) => phase(c, "after", a),
            None => {
                c.error(
                    &format!("{path}.after"),
                    "replicas_back_to needs `after: PHASE`",
                );
                None
            }
        };
        let within = match &e.within {
            Some(w) => Some(c.positive_duration(&format!("{path}.within"), w)),
            None => {
                c.error(
                    &format!("{path}.within"),
                    "replicas_back_to needs `within: DURATION`",
                );
                None
            }
        };
        metrics.push(
            after
                .zip(within)
                .map(|(after, within)| Metric::ReplicasBackTo {
                    replicas: n.clamp(0, u32::MAX as i64) as u32,
                    after,
                    within,
                }),
        );
    }
    if metrics.len() != 1 {
        c.error(path, "name exactly one of tier_at_most, p95_below, error_rate_below, timeout_rate_below, replicas_at_most, replicas_at_least, replicas_back_to, no_scale_down");
        return None;
    }
    let metric = metrics.pop().flatten()?;
    let during = match e.during.as_deref() {
        None | Some("all") => None,
        Some(name) => Some(phase(c, "during", name)?),
    };
    let skip = match &e.skip {
        Some(s) => c.duration(&format!("{path}.skip"), s),
        None => Duration::ZERO,
    };
    let window = Window { during, skip };
    let text = e
        .text
        .clone()
        .unwrap_or_else(|| describe(&metric, &window, phases));
    Some(Expectation {
        text,
        metric,
        window,
    })
}

fn describe(m: &Metric, w: &Window, phases: &[Phase]) -> String {
    let what = match m {
        Metric::TierAtMost(t) => format!("tier at most {t}"),
        Metric::P95Below(s) => format!("p95 < {:.0} ms", s * 1000.0),
        Metric::ErrorRateBelow(r) => format!("errors < {}%", r * 100.0),
        Metric::TimeoutRateBelow(r) => format!("timeouts < {}%", r * 100.0),
        Metric::ReplicasAtMost(n) => format!("replicas ≤ {n}"),
        Metric::ReplicasAtLeast(n) => format!("replicas ≥ {n}"),
        Metric::NoScaleDown => "no scale-down".to_string(),
        Metric::ReplicasBackTo {
            replicas,
            after,
            within,
        } => {
            return format!(
                "replicas back to {replicas} within {} after {}",
                humantime::format_duration(*within),
                phases[*after].name
            )
        }
    };
    let when = match w.during {
        None => "over the whole run".to_string(),
        Some(i) => format!("during {}", phases[i].name),
    };
    if w.skip.is_zero() {
        format!("{what} {when}")
    } else {
        format!(
            "{what} {when} after the first {}",
            humantime::format_duration(w.skip)
        )
    }
}

impl Expectation {
    /// Checks the expectation against the run's points. `phase_bounds` gives a phase's
    /// start and end. A window with no observation deviates: what was not seen did not hold.
    pub fn check(
        &self,
        points: &[Point],
        phase_bounds: impl Fn(usize) -> (Duration, Duration),
    ) -> Outcome {
        let outcome = |held: bool, observed: String| Outcome {
            text: self.text.clone(),
            held,
            observed,
        };
        if let Metric::ReplicasBackTo {
            replicas,
            after,
            within,
        } = self.metric
        {
            let end = phase_bounds(after).1;
            let back = points
                .iter()
                .filter(|p| p.t >= end)
                .find(|p| p.replicas.is_some_and(|r| r <= replicas));
            return match back {
                Some(p) if p.t - end <= within => outcome(
                    true,
                    format!("back after {:.0} s", (p.t - end).as_secs_f64()),
                ),
                Some(p) => outcome(
                    false,
                    format!("back only after {:.0} s", (p.t - end).as_secs_f64()),
                ),
                None => {
                    let last = points.iter().filter_map(|p| p.replicas).next_back();
                    outcome(
                        false,
                        format!(
                            "not back by the end (last {})",
                            last.map_or("unknown".into(), |r| r.to_string())
                        ),
                    )
                }
            };
        }
        let (start, end) = match self.window.during {
            Some(i) => phase_bounds(i),
            None => (Duration::ZERO, Duration::MAX),
        };
        let from = start + self.window.skip;
        if self.metric == Metric::NoScaleDown {
            let reps: Vec<(Duration, u32)> = points
                .iter()
                .filter(|p| p.t >= from && p.t < end)
                .filter_map(|p| p.replicas.map(|r| (p.t, r)))
                .collect();
            let Some(&(_, first)) = reps.first() else {
                return outcome(false, "no observation in the window".into());
            };
            let drop = reps.windows(2).find(|w| w[1].1 < w[0].1);
            return match drop {
                None => outcome(
                    true,
                    format!("held at ≥ {first} for {} samples", reps.len()),
                ),
                Some(w) => outcome(
                    false,
                    format!("{} → {} at {:.0} s", w[0].1, w[1].1, w[1].0.as_secs_f64()),
                ),
            };
        }
        let window = points.iter().filter(|p| p.t >= from && p.t < end);
        // Worst observation in the window, and when.
        let mut worst: Option<(f64, Duration)> = None;
        let mut seen = 0usize;
        for p in window {
            let v = match self.metric {
                Metric::TierAtMost(_) => p.tier.map(|t| t.level() as f64),
                Metric::P95Below(_) => p.p95_s,
                Metric::ErrorRateBelow(_) => p.error_rate,
                Metric::TimeoutRateBelow(_) => p.timeout_rate,
                Metric::ReplicasAtMost(_) => p.replicas.map(f64::from),
                Metric::ReplicasAtLeast(_) => p.replicas.map(|r| -(r as f64)),
                Metric::ReplicasBackTo { .. } | Metric::NoScaleDown => None,
            };
            let Some(v) = v else { continue };
            seen += 1;
            if worst.is_none_or(|(w, _)| v > w) {
                worst = Some((v, p.t));
            }
        }
        let Some((w, at)) = worst else {
            return outcome(false, "no observation in the window".into());
        };
        let at = at.as_secs_f64();
        match self.metric {
            Metric::TierAtMost(t) => {
                let seen_tier = Tier::ALL[w as usize];
                outcome(seen_tier <= t, format!("max {seen_tier} (at {at:.0} s)"))
            }
            Metric::P95Below(b) => outcome(
                w < b,
                format!("max p95 {:.0} ms (at {at:.0} s)", w * 1000.0),
            ),
            Metric::ErrorRateBelow(b) => {
                outcome(w < b, format!("max {:.2}% (at {at:.0} s)", w * 100.0))
            }
            Metric::TimeoutRateBelow(b) => {
                outcome(w < b, format!("max {:.2}% (at {at:.0} s)", w * 100.0))
            }
            Metric::ReplicasAtMost(n) => {
                outcome(w <= n as f64, format!("max {w:.0} (at {at:.0} s)"))
            }
            Metric::ReplicasAtLeast(n) => outcome(
                -w >= n as f64,
                format!("min {:.0} (at {at:.0} s); {seen} samples", -w),
            ),
            Metric::ReplicasBackTo { .. } | Metric::NoScaleDown => {
                outcome(false, "not a window metric".into())
            }
        }
    }
}
