//! The policy: which services andon governs, the signals it reads, the Andon tiers and
//! what each does, the Heijunka behaviour and the Jidoka rules.
//!
//! `file.rs` mirrors the YAML, `validate.rs` checks it and builds the types below, which
//! are what the rest of andon uses. `rules.rs` renders Prometheus alerting rules from them.

pub mod file;
pub mod predict;
pub mod promql;
pub mod rules;
pub mod units;
pub mod validate;
pub mod yaml;

use serde::Serialize;
use std::fmt;
use std::time::Duration;

pub use validate::load;
pub use yaml::{FileError, FileErrors};

/// The placeholder a signal's PromQL uses for the Swarm service name.
pub const SERVICE_PLACEHOLDER: &str = "$service";

/// The signals andon knows. The order is the order of reasons and tables.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    ErrorRate,
    P95Latency,
    Cpu,
    Memory,
    Connections,
    Throughput,
    QueueDepth,
}

impl SignalKind {
    pub const ALL: [SignalKind; 7] = [
        SignalKind::ErrorRate,
        SignalKind::P95Latency,
        SignalKind::Cpu,
        SignalKind::Memory,
        SignalKind::Connections,
        SignalKind::Throughput,
        SignalKind::QueueDepth,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SignalKind::ErrorRate => "error_rate",
            SignalKind::P95Latency => "p95_latency",
            SignalKind::Cpu => "cpu",
            SignalKind::Memory => "memory",
            SignalKind::Connections => "connections",
            SignalKind::Throughput => "throughput",
            SignalKind::QueueDepth => "queue_depth",
        }
    }

    pub fn from_name(name: &str) -> Option<SignalKind> {
        SignalKind::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// The unit andon works in for this signal; thresholds and readings are converted to it.
    pub fn canonical_unit(self) -> units::Unit {
        use units::Unit;
        match self {
            SignalKind::ErrorRate | SignalKind::Cpu => Unit::Ratio,
            SignalKind::P95Latency => Unit::Seconds,
            SignalKind::Memory => Unit::Bytes,
            SignalKind::Connections | SignalKind::QueueDepth => Unit::Count,
            SignalKind::Throughput => Unit::PerSecond,
        }
    }

    /// Formats a value of this signal in its canonical unit for people.
    pub fn format(self, v: f64) -> String {
        self.canonical_unit().format(v)
    }
}

impl fmt::Display for SignalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The Andon tiers, ordered: green < yellow < red < emergency.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    #[default]
    Green,
    Yellow,
    Red,
    Emergency,
}

impl Tier {
    pub const ALL: [Tier; 4] = [Tier::Green, Tier::Yellow, Tier::Red, Tier::Emergency];
    /// The tiers that have entry thresholds.
    pub const RAISED: [Tier; 3] = [Tier::Yellow, Tier::Red, Tier::Emergency];

    pub fn name(self) -> &'static str {
        match self {
            Tier::Green => "green",
            Tier::Yellow => "yellow",
            Tier::Red => "red",
            Tier::Emergency => "emergency",
        }
    }

    pub fn from_name(name: &str) -> Option<Tier> {
        Tier::ALL.into_iter().find(|t| t.name() == name)
    }

    pub fn level(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceSpec {
    pub name: String,
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// At most this many replicas to a node: no scale-up past this times the nodes that
    /// take tasks (ready, neither drained nor paused), and demand past it shows red
    /// (the nodes cannot hold it). Placement constraints are not evaluated: the
    /// unplaceable rule covers what they leave pending.
    pub max_replicas_per_node: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Signal {
    pub kind: SignalKind,
    /// PromQL with [`SERVICE_PLACEHOLDER`] standing for the service name.
    pub query: String,
    /// The unit the query returns.
    pub unit: units::Unit,
    /// How several series for one service combine; `None`: several series are bad data.
    pub combine: Option<Combine>,
}

/// How several series of one signal for one service become one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    Sum,
    Avg,
    Max,
    Min,
}

impl Combine {
    pub fn from_name(s: &str) -> Option<Combine> {
        Some(match s {
            "sum" => Combine::Sum,
            "avg" => Combine::Avg,
            "max" => Combine::Max,
            "min" => Combine::Min,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Combine::Sum => "sum",
            Combine::Avg => "avg",
            Combine::Max => "max",
            Combine::Min => "min",
        }
    }

    pub fn apply(self, values: &[f64]) -> f64 {
        let n = values.len().max(1) as f64;
        match self {
            Combine::Sum => values.iter().sum(),
            Combine::Avg => values.iter().sum::<f64>() / n,
            Combine::Max => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            Combine::Min => values.iter().copied().fold(f64::INFINITY, f64::min),
        }
    }
}

impl Signal {
    /// The query for one service.
    pub fn query_for(&self, service: &str) -> String {
        self.query.replace(SERVICE_PLACEHOLDER, service)
    }
}

/// HPA-style target tracking over the demand signals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Capacity {
    /// Capacity of one replica per demand signal, in the signal's canonical unit.
    pub per_replica: Vec<(SignalKind, f64)>,
    /// The utilisation of that capacity to aim for, in (0, 1].
    pub target_utilization: f64,
    /// No change while demand / (replicas × capacity × target) is within 1 ± tolerance.
    pub tolerance: f64,
    /// At most this many sessions per replica: a new session past it is refused at once
    /// (503 with Retry-After), so its client retries onto a replica with room.
    pub session_cap: Option<u32>,
}

/// A tier's minimum replica count.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Floor {
    /// No floor.
    None,
    /// At least the replicas held when the tier was entered, times this factor.
    Factor(f64),
    /// At least this many replicas.
    Replicas(u32),
    /// The service's max_replicas.
    Max,
}

/// What a tier does while it is the current tier.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TierAction {
    /// Extra capacity on top of the target-tracking recommendation (0.2 = +20%).
    pub headroom: f64,
    pub floor: Floor,
    /// Shedding starts by admitting at most this fraction of the policy's per-replica
    /// throughput capacity; `None` = admit all.
    pub shed_admit: Option<f64>,
    /// The p95 (seconds) the closed loop steers the admitted requests below
    /// ([`crate::core::shedding`]); `None`: the limit stays at `shed_admit`.
    pub shed_goal_s: Option<f64>,
}

impl TierAction {
    pub const NOMINAL: TierAction = TierAction {
        headroom: 0.0,
        floor: Floor::None,
        shed_admit: None,
        shed_goal_s: None,
    };
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TierSpec {
    pub tier: Tier,
    /// Entry threshold per signal (canonical units): the tier is entered when a signal is
    /// above its threshold continuously for `for_`.
    pub enter: Vec<(SignalKind, f64)>,
    /// Exit level per signal: the tier is left when every signal is at or below its exit
    /// level continuously for `cooldown`.
    pub exit: Vec<(SignalKind, f64)>,
    #[serde(with = "humantime_serde_compat")]
    pub for_: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub cooldown: Duration,
    pub action: TierAction,
}

impl TierSpec {
    pub fn enter_threshold(&self, kind: SignalKind) -> Option<f64> {
        self.enter.iter().find(|(k, _)| *k == kind).map(|(_, v)| *v)
    }
    pub fn exit_level(&self, kind: SignalKind) -> Option<f64> {
        self.exit.iter().find(|(k, _)| *k == kind).map(|(_, v)| *v)
    }
}

/// One of HPA's scaling policies: at most this many replicas (or this percentage of the
/// replicas at the start of the period) per period.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    Replicas(u32),
    Percent(f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StepPolicy {
    pub kind: StepKind,
    #[serde(with = "humantime_serde_compat")]
    pub period: Duration,
}

/// HPA's `selectPolicy`: the policy allowing the largest change, the smallest, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectPolicy {
    Max,
    Min,
    Disabled,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Direction {
    #[serde(with = "humantime_serde_compat")]
    pub stabilization: Duration,
    pub policies: Vec<StepPolicy>,
    pub select: SelectPolicy,
}

impl Direction {
    /// The longest period of its policies: how long scale events must be remembered.
    pub fn longest_period(&self) -> Duration {
        self.policies
            .iter()
            .map(|p| p.period)
            .max()
            .unwrap_or_default()
    }
}

/// Knative-style panic mode.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Panic {
    /// Demand is averaged over this short window.
    #[serde(with = "humantime_serde_compat")]
    pub window: Duration,
    /// Panic when averaged demand ≥ threshold × the capacity of the ready replicas.
    pub threshold: f64,
    /// Panic ends (and scale-down may resume) after this long without a panic reading.
    #[serde(with = "humantime_serde_compat")]
    pub stable_window: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Behavior {
    pub scale_up: Direction,
    pub scale_down: Direction,
    pub panic: Option<Panic>,
    /// A progressing rolling update holds scaling at most this long (a paused one never).
    #[serde(with = "humantime_serde_compat")]
    pub update_hold: Duration,
    /// Heijunka's other half: demand forecasts that may add replicas ahead of need.
    pub predict: Option<Predict>,
}

/// `behavior.predict`: forecast each demand signal over the time a new replica needs to
/// serve, and track target on the forecast beside the reading ([`crate::core::predict`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Predict {
    /// How far ahead each demand signal is forecast: `horizon` when set, else
    /// `ready_after` + `scrape_interval` + half the signal's rate window (a `rate[1m]`
    /// reading is the rate of 30 s ago).
    pub horizons: Vec<(SignalKind, Duration)>,
    /// How long a demand signal must have risen, reading after reading, before its trend
    /// is believed: longer than its rate window (a step read through `rate[1m]` rises for
    /// exactly a minute, then stops) and at least two scrapes (a gauge's step is one jump).
    pub persist: Vec<(SignalKind, Duration)>,
    /// Prometheus' scrape interval: readings closer than this are one scrape read twice.
    #[serde(with = "humantime_serde_compat")]
    pub scrape_interval: Duration,
    /// Short horizon: Holt's linear trend on recent readings; `None` = off.
    pub trend: Option<TrendParams>,
    /// Long horizon: the same time of day on earlier days, from Prometheus' history.
    pub seasonal: Option<SeasonalParams>,
    /// Throughput from sessions: the throughput per session, measured while the
    /// connections held, times the connections now (a gauge, read at once, where the
    /// throughput is a rate that takes its window to show new sessions). Needs both
    /// signals in the capacity.
    #[serde(default)]
    pub sessions: bool,
    /// A forecaster whose recent error (absolute error over actual demand, [`crate::core::predict`]) is above this is ignored.
    pub max_error: f64,
}

impl Predict {
    pub fn persist_ms(&self, kind: SignalKind) -> u64 {
        self.persist
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, d)| d.as_millis() as u64)
    }

    pub fn horizon_ms(&self, kind: SignalKind) -> u64 {
        self.horizons
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, d)| d.as_millis() as u64)
    }
}

/// Holt's smoothing factors: `alpha` for the level, `beta` for the trend (per reading).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TrendParams {
    pub alpha: f64,
    pub beta: f64,
}

/// The daily (or weekly) profile read from Prometheus' history.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SeasonalParams {
    /// The season: 1d for a daily pattern, 7d for a weekly one.
    #[serde(with = "humantime_serde_compat")]
    pub period: Duration,
    /// How much history to read (a whole number of periods).
    #[serde(with = "humantime_serde_compat")]
    pub history: Duration,
    /// The range query's resolution.
    #[serde(with = "humantime_serde_compat")]
    pub step: Duration,
    /// Fewer complete periods than this in the history: the seasonal forecast stays off.
    pub min_periods: u32,
    /// How long before a known rise its replicas are asked for, on top of the signal's
    /// horizon (AWS predictive scaling's SchedulingBufferTime): time for the step limits
    /// to climb and the tasks to start.
    #[serde(with = "humantime_serde_compat")]
    pub lead: Duration,
}

/// What a missing, stale, NaN or errored reading does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnBadData {
    /// Block scale-down; good signals may still scale up (HPA's rule).
    HoldDown,
    /// Block every replica change until the data is good again.
    Freeze,
}

/// Shedding while the line is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StoppedShed {
    /// Keep the shedding of the tier held when the line stopped.
    Keep,
    /// Stop shedding.
    None,
    /// Admit this fraction of capacity.
    Admit(f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FlapGuard {
    pub max_reversals: u32,
    #[serde(with = "humantime_serde_compat")]
    pub window: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Jidoka {
    #[serde(with = "humantime_serde_compat")]
    pub stale_after: Duration,
    pub on_bad_data: OnBadData,
    /// Consecutive ticks with a failed source before the line stops.
    pub stop_after_failures: u32,
    pub when_stopped: StoppedShed,
    pub flap_guard: FlapGuard,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    /// Where it was loaded from, for messages.
    pub source: String,
    pub services: Vec<ServiceSpec>,
    pub signals: Vec<Signal>,
    pub capacity: Capacity,
    /// Yellow, red, emergency, in that order.
    pub tiers: Vec<TierSpec>,
    pub behavior: Behavior,
    pub jidoka: Jidoka,
    /// `jidoka.targets.query`: one series per scrape target, 1 when up. With it, andon
    /// compares the targets that report with the running tasks, and dates every reading by
    /// its targets' last scrape (an instant query is dated at evaluation time).
    pub targets: Option<String>,
    /// `spread.query`: one series per task (its `task` label, the task id), the load on
    /// it. Summed per node in `/status` (`nodes[].load`), so a hot node shows. Read only
    /// for the operator's eye: no decision uses it.
    pub spread: Option<String>,
    /// `behavior.panic.fast`: a fast reading of one demand signal (e.g. a 30 s rate where
    /// the signal has 1 m), which panic mode reads beside the signals.
    pub panic_fast: Option<Signal>,
    /// How long the p95 signal remembers the past: its query's longest range (`[1m]`),
    /// 1 m when it has none. The shedding loop waits this long before cutting again.
    pub latency_window: std::time::Duration,
    /// How long the demand signals remember the past: the longest range of their
    /// queries (1 m when none has one). After a node is lost, its tasks' counters take
    /// this long to leave the sums.
    pub demand_window: std::time::Duration,
}

impl Policy {
    /// How long Swarm's moves may hold a scale-down: the demand window and a quarter more
    /// for the scrape ([`crate::core::placement`]).
    pub fn placement_grace_ms(&self) -> u64 {
        self.demand_window.as_millis() as u64 * 5 / 4
    }

    pub fn latency_window_ms(&self) -> u64 {
        self.latency_window.as_millis() as u64
    }

    pub fn tier(&self, tier: Tier) -> Option<&TierSpec> {
        self.tiers.iter().find(|t| t.tier == tier)
    }

    /// What the given tier does; green is nominal.
    pub fn action(&self, tier: Tier) -> TierAction {
        self.tier(tier)
            .map(|t| t.action)
            .unwrap_or(TierAction::NOMINAL)
    }

    pub fn service(&self, name: &str) -> Option<&ServiceSpec> {
        self.services.iter().find(|s| s.name == name)
    }

    pub fn signal(&self, kind: SignalKind) -> Option<&Signal> {
        self.signals.iter().find(|s| s.kind == kind)
    }

    pub fn capacity_of(&self, kind: SignalKind) -> Option<f64> {
        self.capacity
            .per_replica
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, v)| *v)
    }
}

/// Serialises durations as humantime strings (`30s`) in JSON output.
mod humantime_serde_compat {
    use serde::Serializer;
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}
