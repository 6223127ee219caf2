//! What the core is told each tick: one reading per signal and the service's replicas.

use crate::policy::SignalKind;
use serde::{Deserialize, Serialize};

/// One signal's latest reading as the source returned it. The core classifies it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Reading {
    /// A sample: its value (canonical unit) and when it was taken (ms since the epoch, or
    /// virtual ms in the simulator).
    Value { value: f64, at_ms: u64 },
    /// The query ran but returned no series (KEDA's "empty result read as 0" bug lives here).
    Missing,
    /// The query failed.
    Error { message: String },
    /// Several series where one per service is expected (a query without
    /// `sum by (service)`, or a relabelling that added `instance`): picking one would be a
    /// guess, so it is bad data unless the signal says how to combine them.
    Ambiguous { series: u32 },
}

/// The quality of a reading at decision time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "quality")]
pub enum Quality {
    Good {
        value: f64,
    },
    Missing,
    Stale {
        age_s: f64,
    },
    NotFinite,
    Error,
    /// Several series for one service.
    Ambiguous {
        series: u32,
    },
}

impl Quality {
    pub fn value(self) -> Option<f64> {
        match self {
            Quality::Good { value } => Some(value),
            _ => None,
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Quality::Good { .. } => "good",
            Quality::Missing => "missing",
            Quality::Stale { .. } => "stale",
            Quality::NotFinite => "NaN/Inf",
            Quality::Error => "error",
            Quality::Ambiguous { .. } => "several series",
        }
    }
}

/// Everything observed for one service in one tick.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Observations {
    /// Readings by signal; a signal of the policy that is absent here counts as missing.
    pub readings: Vec<(SignalKind, Reading)>,
    /// Set when the metrics source as a whole failed this tick (e.g. Prometheus unreachable).
    pub source_error: Option<String>,
    /// Scrape targets of the service that reported recently (`jidoka.targets`); `None`
    /// when the policy does not check them. Fewer than the running tasks means the sums
    /// cover part of the service: bad data for a scale-down (HPA: pods without metrics).
    #[serde(default)]
    pub targets: Option<u32>,
    /// The policy's fast demand signal (`behavior.panic.fast`), read for panic only.
    #[serde(default)]
    pub fast: Option<Reading>,
    /// Seasonal forecasts from history, per demand signal (`behavior.predict.seasonal`);
    /// the reconcile step fills them from its profiles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seasonal: Vec<(SignalKind, super::predict::SeasonalReading)>,
}

impl Observations {
    pub fn get(&self, kind: SignalKind) -> Option<&Reading> {
        self.readings
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, r)| r)
    }

    /// Good readings of all given signals, taken now.
    pub fn values(now_ms: u64, values: &[(SignalKind, f64)]) -> Self {
        Observations {
            fast: None,
            seasonal: Vec::new(),
            readings: values
                .iter()
                .map(|(k, v)| {
                    (
                        *k,
                        Reading::Value {
                            value: *v,
                            at_ms: now_ms,
                        },
                    )
                })
                .collect(),
            source_error: None,
            targets: None,
        }
    }
}

/// A rolling update of the service, as the core needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdatePhase {
    /// No update, or a finished one.
    #[default]
    None,
    /// An update (or its rollback) is progressing, within `behavior.update_hold`:
    /// replicas are held, but a tier floor and panic still get through.
    Progressing,
    /// Paused (Docker's default `failure_action: pause`) or rolled back and paused: it
    /// will not finish by itself, so scaling goes on.
    Paused,
    /// Progressing for longer than `behavior.update_hold`: scaling goes on.
    Overdue,
}

/// The Swarm service as the core needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replicas {
    /// Replicas the service spec asks for.
    pub current: u32,
    /// Tasks running and ready.
    pub ready: u32,
    pub update: UpdatePhase,
    /// Tasks that found no node, or sit on one that is down or draining.
    #[serde(default)]
    pub placement: super::placement::Placement,
}

impl Replicas {
    pub fn steady(n: u32) -> Self {
        Replicas {
            current: n,
            ready: n,
            update: UpdatePhase::None,
            placement: Default::default(),
        }
    }
}
