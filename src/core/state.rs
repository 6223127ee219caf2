//! What the core remembers between ticks. Serialisable, so the live controller can keep
//! it in a service label and a restarted controller carries on as if it never stopped.
//! Every list is pruned to its window, so the state stays a few hundred bytes.

use serde::{Deserialize, Serialize};

/// Per raised tier (yellow, red, emergency): the Prometheus-alert-like state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TierTrack {
    /// Since when the entry condition holds (an alert's "pending").
    pub pending_since_ms: Option<u64>,
    /// The tier is active (an alert's "firing").
    pub active: bool,
    /// Replicas held when the tier became active, for `floor: 1.5x`.
    pub entry_replicas: u32,
    /// Since when every signal is at or below its exit level (cool-down running).
    pub calm_since_ms: Option<u64>,
}

/// One sample kept in a window: when, and the value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub at_ms: u64,
    pub value: f64,
}

/// One change of replicas the core asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleEvent {
    pub at_ms: u64,
    pub from: u32,
    pub to: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CoreState {
    /// Yellow, red, emergency.
    pub tiers: [TierTrack; 3],
    /// Scale-up window: a monotonic deque whose front is the window's minimum.
    pub up_window: Vec<Sample>,
    /// Scale-down window: a monotonic deque whose front is the window's maximum.
    pub down_window: Vec<Sample>,
    /// The same without the sessions forecaster's votes (`behavior.predict.sessions`):
    /// the window once its premise is refuted. Not in the state label: a restart starts
    /// it from the window (`reconcile`'s load).
    #[serde(skip)]
    pub down_window_without_sessions: Vec<Sample>,
    /// Demand in replicas at target within the panic window (and the one before it).
    pub panic_samples: Vec<Sample>,
    /// Last time the panic condition held.
    pub last_panic_ms: Option<u64>,
    /// Changes within the longest step period and the flap-guard window.
    pub events: Vec<ScaleEvent>,
    /// Times of direction reversals within the flap-guard window.
    pub reversals_ms: Vec<u64>,
    /// Direction of the last change, +1 or -1, however old.
    pub last_direction: i8,
    /// Consecutive ticks with a failed source.
    pub failures: u32,
    pub stopped: bool,
    /// The shedding loop, while a tier sheds.
    #[serde(default)]
    pub shed: Option<ShedLoop>,
    /// The tier is shown red for want of nodes ([`super::placement::tier_floor`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cannot_place: bool,
    /// Since when the session cap has waited for replicas that are starting, and for
    /// how many ([`super::capacity::session_cap`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_wait: Option<super::capacity::CapWait>,
    /// The demand forecasters (`behavior.predict`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub predict: Vec<super::predict::SignalForecast>,
}

/// The closed shedding loop's memory ([`super::shedding`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ShedLoop {
    /// The fraction of the policy's per-replica throughput capacity admitted now.
    pub admit: f64,
    /// The current tier's starting fraction.
    pub start: f64,
    /// The time of the p95 reading last used: each reading moves the limit once.
    pub reading_at_ms: u64,
    /// When the limit last changed.
    pub changed_at_ms: u64,
    /// The last p95 reading used (seconds), to tell rising latency.
    #[serde(default)]
    pub last_p95: f64,
    /// Calm at the cap: nothing is shed until latency rises again.
    #[serde(default)]
    pub released: bool,
    /// The p95 goal last steered toward, kept for the gradual release after the tier
    /// that shed has gone.
    #[serde(default)]
    pub goal_s: Option<f64>,
}
