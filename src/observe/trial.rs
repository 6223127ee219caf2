//! `andon check --prometheus URL`: beyond the file, try each signal's query against a
//! live Prometheus, per service, before the policy is deployed. What came back:
//! - a value (one series): fine, unless it is implausible for the unit (a ratio above 1,
//!   a latency in the thousands of seconds);
//! - nothing: fine when the service is idle (its throughput reads 0), a warning otherwise
//!   (a metric nobody exports, a label that does not match);
//! - several series where one is expected: a warning (add `sum by (service)` or set
//!   `combine`);
//! - an error (Prometheus refused the query, or cannot be reached): an error.
//!
//! The reads are the controller's own ([`super::prometheus::PromSource`]), so what this
//! says is what `andon run` will see.

use super::prometheus::{Auth, PromSource};
use crate::core::Reading;
use crate::policy::{validate::threshold_bound, Policy, SignalKind};
use crate::Result;
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Ok,
    Warning,
    Error,
}

/// What one query gave for one service.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub service: String,
    /// A signal's name, or `targets`.
    pub query: String,
    pub level: Level,
    pub text: String,
}

/// Runs every signal (and the targets query) for each service against `url`.
pub fn run(
    policy: &Policy,
    url: &str,
    services: &[String],
    timeout: Duration,
) -> Result<Vec<Finding>> {
    let source = PromSource::new(url, timeout, &Auth::None)?;
    let rt = crate::run::single_thread_runtime()?;
    let observations = rt.block_on(source.observe(policy, services));
    // The signals, then the fast panic signal: each query is tried.
    let queries: Vec<&crate::policy::Signal> =
        policy.signals.iter().chain(&policy.panic_fast).collect();
    // Per query, the metrics it names that no target exports at all.
    let named: Vec<Vec<String>> = queries
        .iter()
        .map(|s| crate::policy::promql::metric_names(&s.query))
        .collect();
    let existing = rt
        .block_on(source.existing_metrics(&named.concat()))
        .unwrap_or_default();
    let absent: Vec<Vec<String>> = named
        .into_iter()
        .map(|names| {
            names
                .into_iter()
                .filter(|m| !existing.contains(m))
                .collect()
        })
        .collect();
    let mut out = Vec::new();
    for svc in services {
        let obs = observations.get(svc).cloned().unwrap_or_default();
        if let Some(e) = &obs.source_error {
            out.push(Finding {
                service: svc.clone(),
                query: "all".into(),
                level: Level::Error,
                text: e.clone(),
            });
            continue;
        }
        let idle = matches!(
            obs.get(SignalKind::Throughput),
            Some(Reading::Value { value, .. }) if *value == 0.0
        );
        for (i, (s, missing_metrics)) in queries.iter().zip(&absent).enumerate() {
            let fast = i >= policy.signals.len();
            let reading = if fast {
                obs.fast.as_ref()
            } else {
                obs.get(s.kind)
            };
            let (level, text) = match reading {
                Some(Reading::Value { value, .. }) => plausible(s.kind, *value),
                Some(Reading::Missing) | None if !missing_metrics.is_empty() => (
                    Level::Warning,
                    format!(
                        "no series: no target exports {} at all (a typo, or an exporter not scraped?)",
                        missing_metrics.join(", ")
                    ),
                ),
                Some(Reading::Missing) | None if idle => (
                    Level::Ok,
                    "no series, and the service is idle (throughput 0/s): check again under load".into(),
                ),
                Some(Reading::Missing) | None => (
                    Level::Warning,
                    "no series: does a target export this metric, with a `service` label matching the service? (andon never reads this as 0)".into(),
                ),
                Some(Reading::Ambiguous { series }) => (
                    Level::Warning,
                    format!("{series} series where one is expected: aggregate by (service), or set combine: sum|avg|max|min"),
                ),
                Some(Reading::Error { message }) => (Level::Error, message.clone()),
            };
            out.push(Finding {
                service: svc.clone(),
                query: if fast {
                    format!("panic.fast ({})", s.kind.name())
                } else {
                    s.kind.name().into()
                },
                level,
                text,
            });
        }
        if policy.targets.is_some() {
            let (level, text) = match obs.targets {
                Some(0) | None => (
                    Level::Warning,
                    "no target of this service is up: is it scraped, with a `service` label?"
                        .into(),
                ),
                Some(n) => (Level::Ok, format!("{n} target(s) up and scraped recently")),
            };
            out.push(Finding {
                service: svc.clone(),
                query: "targets".into(),
                level,
                text,
            });
        }
    }
    Ok(out)
}

/// A value, judged against what the signal's unit allows.
fn plausible(kind: SignalKind, v: f64) -> (Level, String) {
    let (max, allowed) = threshold_bound(kind);
    let shown = kind.format(v);
    if !v.is_finite() {
        (
            Level::Warning,
            format!("{v}: NaN or infinite (a ratio or quantile of no traffic?); andon reads it as bad data"),
        )
    } else if v < 0.0 || v > max {
        (
            Level::Warning,
            format!(
                "{shown} is implausible for {kind} (allowed: 0 to {allowed}): is the unit right?"
            ),
        )
    } else {
        (Level::Ok, shown)
    }
}

/// One line per finding, aligned, for the terminal.
pub fn render(findings: &[Finding]) -> String {
    let w = findings.iter().map(|f| f.service.len()).max().unwrap_or(0);
    let mut s = String::new();
    for f in findings {
        let level = match f.level {
            Level::Ok => "ok     ",
            Level::Warning => "WARNING",
            Level::Error => "ERROR  ",
        };
        s += &format!("  {:w$}  {:12} {level} {}\n", f.service, f.query, f.text);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn implausible_values_are_warnings() {
        assert_eq!(plausible(SignalKind::ErrorRate, 0.01).0, Level::Ok);
        assert_eq!(plausible(SignalKind::ErrorRate, 3.0).0, Level::Warning);
        assert_eq!(plausible(SignalKind::P95Latency, 5000.0).0, Level::Warning);
        assert_eq!(plausible(SignalKind::Cpu, f64::NAN).0, Level::Warning);
        assert_eq!(plausible(SignalKind::Connections, -1.0).0, Level::Warning);
    }
}
