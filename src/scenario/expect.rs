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
    /// Every observation in the window is at or past the tier (the Andon lit up).
    TierAtLeast(Tier),
    /// Replicas change direction (up then down, or down then up) at most N times.
    MaxDirectionChanges(u32),
    /// The first scale-up comes at most this long after the window starts.
    ReactionWithin(Duration),
    /// Shed requests over offered, over the window.
    ShedFractionBelow(f64),
    /// At the window's start, the ready replicas are at least this fraction of the most
    /// the window's load needs (by the policy's capacity at target): capacity in place
    /// before the load.
    ReadyAtStart(f64),
    /// The line stopped (Jidoka) somewhere in the window, or (false) never did.
    LineStopped(bool),
    /// The run's summary against the same scenario under a baseline controller: each
    /// named field (lower is better) at most `tolerance` above the baseline's. Only
    /// `simulate` runs baselines; it checks these with [`Metric::better_than`].
    BetterThan {
        baseline: String,
        fields: Vec<String>,
        tolerance: f64,
    },
}

/// The summary fields `better_than` may compare; lower is better for each.
pub const COMPARABLE: [&str; 10] = [
    "seconds_red_or_worse",
    "seconds_yellow_or_worse",
    "replica_seconds",
    "updates",
    "scale_actions",
    "direction_changes",
    "timeout_rate",
    "peak_p95_ms",
    "peak_error_rate",
    "failed_writes",
];

/// The baselines `better_than` knows.
pub const BASELINES: [&str; 1] = ["hpa"];

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
    /// Replicas running and ready.
    pub ready: Option<u32>,
    /// The replicas the load needs: the fewest the policy's target tracking keeps for it
    /// (within its tolerance band, and the service's bounds); what `ready_at_start`
    /// measures against.
    pub needed: Option<u32>,
    pub p95_s: Option<f64>,
    pub error_rate: Option<f64>,
    pub timeout_rate: Option<f64>,
    /// Offered requests per second and the share of them refused fast (a 503, or in the
    /// simulator the demand of clients at the session cap's door).
    pub offered_rps: Option<f64>,
    pub shed_rate: Option<f64>,
    /// Jidoka stopped the line.
    pub stopped: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub text: String,
    pub held: bool,
    pub observed: String,
}

impl Outcome {
    /// A fault the run could not inject (`fault` as `Fault::describe` gives it): the run
    /// deviates, in a drill as in `simulate`.
    pub fn not_injected(fault: &str, why: String) -> Outcome {
        Outcome {
            text: format!("fault injected: {fault}"),
            held: false,
            observed: why,
        }
    }
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
            let names: Vec<String> = phases.iter().map(|p| super::shown(&p.name)).collect();
            c.error(
                &format!("{path}.{field}"),
                format!(
                    "no phase `{}`; allowed: {}",
                    super::shown(name),
                    crate::policy::promql::shorten(&names.join(", "), 400)
                ),
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
            // As in a policy: a bare 100 is almost surely meant as milliseconds, and would
            // read as 100 s, an expectation that always holds.
            crate::policy::file::Quantity::Number(n) => {
                c.error(
                    &format!("{path}.p95_below"),
                    format!(
                        "{n} has no unit; allowed: a latency with its unit, e.g. 150ms or 0.15s"
                    ),
                );
                None
            }
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
        metrics.push(count(c, path, "replicas_at_most", n).map(Metric::ReplicasAtMost));
    }
    match e.no_scale_down {
        Some(true) => metrics.push(Some(Metric::NoScaleDown)),
        Some(false) => {
            c.error(
                &format!("{path}.no_scale_down"),
                "false checks nothing; allowed: true",
            );
            metrics.push(None);
        }
        None => {}
    }
    if let Some(n) = e.replicas_at_least {
        metrics.push(count(c, path, "replicas_at_least", n).map(Metric::ReplicasAtLeast));
    }
    if e.replicas_back_to.is_none() && (e.within.is_some() || e.after.is_some()) {
        let field = if e.within.is_some() {
            "within"
        } else {
            "after"
        };
        c.error(
            &format!("{path}.{field}"),
            format!("`{field}` belongs to replicas_back_to; allowed here: during, skip"),
        );
    }
    if let Some(n) = e.replicas_back_to {
        let after = match &e.after {
            Some(a) => phase(c, "after", a),
            None => {
                c.error(
                    &format!("{path}.after"),
                    "missing; allowed: `after: PHASE`, the phase after which replicas_back_to counts",
                );
                None
            }
        };
        let within = match &e.within {
            Some(w) => Some(c.positive_duration(&format!("{path}.within"), w)),
            None => {
                c.error(
                    &format!("{path}.within"),
                    "replicas_back_to needs `within: DURATION`; allowed: add `within:`, e.g. 2m",
                );
                None
            }
        };
        metrics.push(
            after
                .zip(within)
                .zip(count(c, path, "replicas_back_to", n))
                .map(|((after, within), replicas)| Metric::ReplicasBackTo {
                    replicas,
                    after,
                    within,
                }),
        );
    }
    if let Some(t) = &e.tier_at_least {
        metrics.push(tier(c, &format!("{path}.tier_at_least"), t).map(Metric::TierAtLeast));
    }
    if let Some(n) = e.max_direction_changes {
        metrics.push(count(c, path, "max_direction_changes", n).map(Metric::MaxDirectionChanges));
    }
    if let Some(d) = &e.reaction_within {
        needs_during(
            c,
            path,
            e,
            "reaction_within",
            "the phase whose start it times from",
        );
        let d = c.positive_duration(&format!("{path}.reaction_within"), d);
        metrics.push(Some(Metric::ReactionWithin(d)));
    }
    if let Some(q) = &e.shed_fraction_below {
        let field = format!("{path}.shed_fraction_below");
        let r = positive_ratio(c, &field, q, "0 can never hold (nothing is below 0%)");
        metrics.push(r.map(Metric::ShedFractionBelow));
    }
    if let Some(q) = &e.ready_at_start {
        needs_during(
            c,
            path,
            e,
            "ready_at_start",
            "the phase whose start it looks at",
        );
        let field = format!("{path}.ready_at_start");
        let r = positive_ratio(c, &field, q, "0 always holds");
        metrics.push(r.map(Metric::ReadyAtStart));
    }
    if let Some(b) = e.line_stopped {
        metrics.push(Some(Metric::LineStopped(b)));
    }
    if let Some(b) = &e.better_than {
        metrics.push(better_than(c, path, b, e));
    } else if e.on.is_some() || e.tolerance.is_some() {
        c.error(
            &format!("{path}.on"),
            "`on` and `tolerance` belong to better_than",
        );
    }
    if metrics.len() != 1 {
        c.error(
            path,
            format!(
                "no form or more than one; allowed: exactly one of {}",
                FORMS.join(", ")
            ),
        );
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

/// A form that looks at a phase's start without `during:` is an error that says so.
fn needs_during(c: &mut Checker, path: &str, e: &ExpectFile, form: &str, what: &str) {
    if e.during.is_none() {
        c.error(
            &format!("{path}.during"),
            format!(
                "{form} needs `during: PHASE` ({what}); allowed: add `during:` with a phase's name"
            ),
        );
    }
}

/// A fraction above 0 (`why_not_zero` says what 0 would mean).
fn positive_ratio(
    c: &mut Checker,
    field: &str,
    q: &crate::policy::file::Quantity,
    why_not_zero: &str,
) -> Option<f64> {
    let r = ratio(c, field, q)?;
    if r > 0.0 {
        Some(r)
    } else {
        c.error(
            field,
            format!("{why_not_zero}; allowed: more than 0, up to 1 or 100%"),
        );
        None
    }
}

/// A count an expectation names: 0 or more.
fn count(c: &mut Checker, path: &str, field: &str, n: i64) -> Option<u32> {
    if (0..=u32::MAX as i64).contains(&n) {
        Some(n as u32)
    } else {
        c.error(
            &format!("{path}.{field}"),
            format!("{n} is out of range; allowed: 0 to {}", u32::MAX),
        );
        None
    }
}

/// The expectation forms, as a scenario names them.
pub const FORMS: [&str; 15] = [
    "tier_at_most",
    "tier_at_least",
    "p95_below",
    "error_rate_below",
    "timeout_rate_below",
    "shed_fraction_below",
    "replicas_at_most",
    "replicas_at_least",
    "replicas_back_to",
    "no_scale_down",
    "max_direction_changes",
    "reaction_within",
    "ready_at_start",
    "line_stopped",
    "better_than",
];

fn better_than(c: &mut Checker, path: &str, baseline: &str, e: &ExpectFile) -> Option<Metric> {
    if !BASELINES.contains(&baseline) {
        c.error(
            &format!("{path}.better_than"),
            format!(
                "unknown baseline `{baseline}`; allowed: {}",
                BASELINES.join(", ")
            ),
        );
        return None;
    }
    let Some(on) = &e.on else {
        c.error(
            &format!("{path}.on"),
            format!(
                "better_than needs `on: [FIELD, ...]`; allowed fields: {}",
                COMPARABLE.join(", ")
            ),
        );
        return None;
    };
    if on.is_empty() {
        c.error(
            &format!("{path}.on"),
            format!(
                "is empty; allowed: one or more of {}",
                COMPARABLE.join(", ")
            ),
        );
        return None;
    }
    for (i, f) in on.iter().enumerate() {
        if !COMPARABLE.contains(&f.as_str()) {
            c.error(
                &format!("{path}.on[{i}]"),
                format!("unknown field `{f}`; allowed: {}", COMPARABLE.join(", ")),
            );
            return None;
        }
    }
    let tolerance = match &e.tolerance {
        Some(q) => ratio(c, &format!("{path}.tolerance"), q)?,
        None => 0.0,
    };
    if e.during.as_deref().is_some_and(|d| d != "all") || e.skip.is_some() {
        c.error(
            &format!("{path}.during"),
            "better_than compares whole runs; allowed: no `during` or `skip`",
        );
        return None;
    }
    Some(Metric::BetterThan {
        baseline: baseline.to_string(),
        fields: on.clone(),
        tolerance,
    })
}

impl Metric {
    /// Checks `better_than` against the two summaries' fields, read by `field`.
    pub fn better_than(
        &self,
        text: &str,
        field: impl Fn(&str, bool) -> Option<f64>,
    ) -> Option<Outcome> {
        let Metric::BetterThan {
            baseline,
            fields,
            tolerance,
        } = self
        else {
            return None;
        };
        let mut held = true;
        let mut seen = Vec::new();
        for f in fields {
            let (Some(ours), Some(theirs)) = (field(f, false), field(f, true)) else {
                held = false;
                seen.push(format!("{f}: no {baseline} run"));
                continue;
            };
            let ok = ours <= theirs * (1.0 + tolerance) + 1e-9;
            held &= ok;
            let ratio = if theirs > 0.0 {
                format!(" ({:.2}×)", ours / theirs)
            } else {
                String::new()
            };
            seen.push(format!(
                "{f} {} vs {baseline} {}{ratio}{}",
                fmt_figure(ours),
                fmt_figure(theirs),
                if ok { "" } else { " ✗" }
            ));
        }
        Some(Outcome {
            text: text.to_string(),
            held,
            observed: seen.join("; "),
        })
    }
}

fn fmt_figure(v: f64) -> String {
    if (v == v.trunc() && v.abs() < 1e12) || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    }
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
        Metric::TierAtLeast(t) => format!("tier at least {t}"),
        Metric::MaxDirectionChanges(n) => format!("at most {n} direction changes"),
        Metric::ReactionWithin(d) => {
            format!("first scale-up within {}", humantime::format_duration(*d))
        }
        Metric::ShedFractionBelow(r) => format!("shed < {}%", r * 100.0),
        Metric::ReadyAtStart(r) => format!("≥ {}% of the replicas ready at the start", r * 100.0),
        Metric::LineStopped(true) => "the line stops".to_string(),
        Metric::LineStopped(false) => "the line never stops".to_string(),
        Metric::BetterThan {
            baseline,
            fields,
            tolerance,
        } => {
            return if *tolerance > 0.0 {
                format!(
                    "no worse than {baseline} (+{}%) on {}",
                    tolerance * 100.0,
                    fields.join(", ")
                )
            } else {
                format!("no worse than {baseline} on {}", fields.join(", "))
            }
        }
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
