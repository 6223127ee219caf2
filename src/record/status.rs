//! `/status`: per service, what andon saw, what it decided and why, as JSON. A typed
//! contract: the drill's watcher reads it back into these same structs.

use crate::core::{Decision, Observations, Quality, Reading};
use crate::policy::{SignalKind, Tier};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Status {
    pub policy: String,
    pub prometheus: String,
    pub dry_run: bool,
    pub interval_s: f64,
    /// Milliseconds since the epoch of the last completed tick.
    pub last_tick_ms: Option<u64>,
    pub ticks: u64,
    pub services: Vec<ServiceStatus>,
    /// HAProxy in front of the services (`andon run --haproxy-socket`), as of the last tick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge: Option<crate::act::haproxy::EdgeStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignalStatus {
    pub signal: SignalKind,
    pub quality: String,
    pub value: Option<f64>,
    /// Age of the sample at decision time, seconds.
    pub age_s: Option<f64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReasonStatus {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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
                    code: r.code().to_string(),
                    message: r.to_string(),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub service: String,
    /// Why andon is not acting on it, if it is not (not found, not opted in, errors).
    pub note: Option<String>,
    pub opted_in: bool,
    pub tier: Tier,
    pub stopped: bool,
    pub replicas: Option<u32>,
    pub ready: Option<u32>,
    /// Tasks that found no node, and tasks on nodes that are down or draining.
    #[serde(default)]
    pub placement: crate::core::placement::Placement,
    /// The service's tasks per node: a hot node, a dead one.
    #[serde(default)]
    pub nodes: Vec<crate::swarm::NodeTasks>,
    pub desired: Option<u32>,
    pub shed_admit: Option<f64>,
    pub version: Option<u64>,
    /// Scrape targets reporting within `stale_after` (`jidoka.targets`), against `ready`.
    #[serde(default)]
    pub targets: Option<u32>,
    pub signals: Vec<SignalStatus>,
    /// What each demand signal's forecasters say (`behavior.predict`): forecast, horizon,
    /// error, and why one is not used.
    #[serde(default)]
    pub forecasts: Vec<crate::core::predict::Outlook>,
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
            placement: Default::default(),
            nodes: Vec::new(),
            desired: None,
            shed_admit: None,
            version: None,
            targets: None,
            signals: Vec::new(),
            forecasts: Vec::new(),
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
                Some(Reading::Ambiguous { series }) => (
                    None,
                    None,
                    Some(format!(
                        "{series} series for one service where one is expected: aggregate by (service) in the query, or set the signal's combine: sum|avg|max|min"
                    )),
                ),
                _ => (None, None, obs.source_error.clone()),
            };
            SignalStatus {
                signal: *kind,
                quality: q.label().to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Decision, Quality, Reason};

    /// What `andon run` serves is what the drill's watcher reads: a round trip.
    #[test]
    fn status_round_trips_through_json() {
        let d = Decision {
            tier: Tier::Red,
            desired: 6,
            shed_admit: Some(0.9),
            session_cap: Some(40),
            stopped: false,
            panic: false,
            signals: vec![(SignalKind::P95Latency, Quality::Good { value: 0.3 })],
            reasons: vec![Reason::Scale { from: 4, to: 6 }],
            forecasts: Vec::new(),
        };
        let mut svc = ServiceStatus::new("erlmcp");
        svc.tier = d.tier;
        svc.last_decision = Some(DecisionStatus::new(&d, 4, 1));
        let obs = Observations::values(0, &[(SignalKind::P95Latency, 0.3)]);
        svc.signals = signals(&obs, &d, 1000);
        let st = Status {
            services: vec![svc],
            ..Default::default()
        };
        let json = serde_json::to_string(&st).unwrap();
        let back: Status = serde_json::from_str(&json).expect("the drill reads it");
        assert_eq!(back.services[0].tier, Tier::Red);
        assert_eq!(back.services[0].signals[0].quality, "good");
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
    }
}
