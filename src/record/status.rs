//! `/status`: per service, what andon saw, what it decided and why, as JSON.

use crate::core::{Decision, Observations, Quality, Reading};
use crate::policy::{SignalKind, Tier};
use serde::Serialize;

#[derive(Debug, Clone, Serialize, Default)]
pub struct Status {
    pub policy: String,
    pub prometheus: String,
    pub dry_run: bool,
    pub interval_s: f64,
    /// Milliseconds since the epoch of the last completed tick.
    pub last_tick_ms: Option<u64>,
    pub ticks: u64,
    pub services: Vec<ServiceStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SignalStatus {
    pub signal: SignalKind,
    pub quality: &'static str,
    pub value: Option<f64>,
    /// Age of the sample at decision time, seconds.
    pub age_s: Option<f64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReasonStatus {
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DecisionStatus {
    pub at_ms: u64,
    pub tier: Tier,
    pub from: u32,
    pub to: u32,
    pub shed_admit: Option<f64>,
    pub stopped: bool,
    pub panic: bool,
    pub summary: String,
    pub reasons: Vec<ReasonStatus>,
}

impl DecisionStatus {
    pub fn new(d: &Decision, current: u32, at_ms: u64) -> Self {
        DecisionStatus {
            at_ms,
            tier: d.tier,
            from: current,
            to: d.desired,
            shed_admit: d.shed_admit,
            stopped: d.stopped,
            panic: d.panic,
            summary: d.summary(),
            reasons: d
                .reasons
                .iter()
                .map(|r| ReasonStatus {
                    code: r.code(),
                    message: r.to_string(),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    pub service: String,
    /// Why andon is not acting on it, if it is not (not found, not opted in, errors).
    pub note: Option<String>,
    pub opted_in: bool,
    pub tier: Tier,
    pub stopped: bool,
    pub replicas: Option<u32>,
    pub ready: Option<u32>,
    pub desired: Option<u32>,
    pub shed_admit: Option<f64>,
    pub version: Option<u64>,
    pub signals: Vec<SignalStatus>,
    pub last_decision: Option<DecisionStatus>,
    /// The last decision that changed replicas, tier or shedding.
    pub last_change: Option<DecisionStatus>,
    /// The last write to Swarm that failed, if any since.
    pub last_error: Option<String>,
}

impl ServiceStatus {
    pub fn new(service: &str) -> Self {
        ServiceStatus {
            service: service.to_string(),
            note: None,
            opted_in: false,
            tier: Tier::Green,
            stopped: false,
            replicas: None,
            ready: None,
            desired: None,
            shed_admit: None,
            version: None,
            signals: Vec::new(),
            last_decision: None,
            last_change: None,
            last_error: None,
        }
    }
}

/// Each signal's value, age and quality as the core classified it.
pub fn signals(obs: &Observations, d: &Decision, now_ms: u64) -> Vec<SignalStatus> {
    d.signals
        .iter()
        .map(|(kind, q)| {
            let (value, age_s, error) = match obs.get(*kind) {
                Some(Reading::Value { value, at_ms }) => (
                    Some(*value).filter(|v| v.is_finite()),
                    Some(now_ms.saturating_sub(*at_ms) as f64 / 1000.0),
                    None,
                ),
                Some(Reading::Error { message }) => (None, None, Some(message.clone())),
                _ => (None, None, obs.source_error.clone()),
            };
            SignalStatus {
                signal: *kind,
                quality: q.label(),
                value: if matches!(q, Quality::Good { .. }) {
                    value
                } else {
                    value.or(None)
                },
                age_s,
                error,
            }
        })
        .collect()
}
