//! The policy file exactly as written: serde types that mirror the YAML. Nothing here is
//! checked beyond its YAML type; `validate.rs` turns it into a [`super::Policy`].

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    pub version: Option<u32>,
    pub services: Vec<ServiceFile>,
    pub signals: SignalsFile,
    pub capacity: CapacityFile,
    pub tiers: TiersFile,
    #[serde(default)]
    pub behavior: BehaviorFile,
    #[serde(default)]
    pub jidoka: JidokaFile,
    /// Where the load sits: a query per task, summed per node for `/status`.
    pub spread: Option<TargetsFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceFile {
    pub name: String,
    pub min_replicas: i64,
    pub max_replicas: i64,
    #[serde(default)]
    pub max_replicas_per_node: Option<i64>,
}

/// The signals andon understands. Each is optional in the file, but a policy needs at
/// least one (checked in validation).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalsFile {
    pub error_rate: Option<SignalFile>,
    pub p95_latency: Option<SignalFile>,
    pub cpu: Option<SignalFile>,
    pub memory: Option<SignalFile>,
    pub connections: Option<SignalFile>,
    pub throughput: Option<SignalFile>,
    pub queue_depth: Option<SignalFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalFile {
    pub query: String,
    pub unit: String,
    /// How to combine several series for one service: sum, avg, max, min. Unset, several
    /// series are bad data.
    pub combine: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityFile {
    /// Per-replica capacity for demand signals, by signal name.
    pub per_replica: BTreeMap<String, f64>,
    pub target_utilization: f64,
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
    /// At most this many sessions per replica; past it a new one is refused at once.
    pub session_cap: Option<i64>,
}

fn default_tolerance() -> f64 {
    0.1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TiersFile {
    pub yellow: TierFile,
    pub red: TierFile,
    pub emergency: TierFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierFile {
    /// Entry threshold per signal name.
    pub enter: BTreeMap<String, Quantity>,
    #[serde(rename = "for")]
    pub for_: String,
    /// Explicit exit levels per signal; signals not named here exit at `enter × exit_ratio`.
    #[serde(default)]
    pub exit: BTreeMap<String, Quantity>,
    #[serde(default = "default_exit_ratio")]
    pub exit_ratio: f64,
    pub cooldown: String,
    #[serde(default)]
    pub action: ActionFile,
}

fn default_exit_ratio() -> f64 {
    0.8
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionFile {
    #[serde(default)]
    pub headroom: f64,
    pub floor: Option<Quantity>,
    pub shed: Option<ShedFile>,
}

/// `none` (or `keep`), or `{admit: FRACTION}`.
#[derive(Debug)]
pub enum ShedFile {
    Word(String),
    Admit(AdmitFile),
}

impl<'de> Deserialize<'de> for ShedFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ShedFile;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`none` or `{admit: FRACTION}`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ShedFile, E> {
                Ok(ShedFile::Word(v.to_string()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<ShedFile, A::Error> {
                AdmitFile::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(ShedFile::Admit)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmitFile {
    pub admit: f64,
    /// The p95 the closed loop steers what is admitted below (default: the entry p95 of
    /// the tier below), or `static` for a fixed limit.
    pub p95_goal: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BehaviorFile {
    #[serde(default)]
    pub scale_up: Option<DirectionFile>,
    #[serde(default)]
    pub scale_down: Option<DirectionFile>,
    #[serde(default)]
    pub panic: Option<PanicFile>,
    /// How long a progressing rolling update may hold scaling.
    pub update_hold: Option<String>,
    /// Demand forecasts (Heijunka's prediction half).
    pub predict: Option<PredictFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictFile {
    /// A fixed forecast horizon; unset: ready_after + scrape_interval + half the rate window.
    pub horizon: Option<String>,
    /// How long a new task takes to start and be ready.
    pub ready_after: Option<String>,
    /// Prometheus' scrape interval.
    pub scrape_interval: Option<String>,
    pub trend: Option<Switch<TrendFile>>,
    pub seasonal: Option<Switch<SeasonalFile>>,
    /// `on` or `off` (it has no settings).
    pub sessions: Option<Switch<SessionsFile>>,
    /// A ratio or a percentage (`25%`).
    pub max_error: Option<Quantity>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrendFile {
    pub alpha: Option<f64>,
    pub beta: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeasonalFile {
    pub period: Option<String>,
    pub history: Option<String>,
    pub step: Option<String>,
    pub min_periods: Option<i64>,
    pub lead: Option<String>,
}

/// `behavior.predict.sessions` has no settings: a map is refused with that said.
#[derive(Debug, Default)]
pub struct SessionsFile;

impl<'de> Deserialize<'de> for SessionsFile {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(de::Error::custom("has no settings; allowed: on, off"))
    }
}

/// A section that is either a word (`off`, `on`) or its settings.
#[derive(Debug)]
pub enum Switch<T> {
    Word(String),
    Settings(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Switch<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Switch<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`on`, `off` or a map of settings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Switch<T>, E> {
                Ok(Switch::Word(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Switch<T>, E> {
                Ok(Switch::Word(if v { "on" } else { "off" }.to_string()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Switch<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Switch::Settings)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectionFile {
    /// Unset: the direction's default (HPA's).
    pub stabilization: Option<String>,
    /// Shorthand: a replicas and a percent policy sharing one period.
    pub max_step: Option<StepFile>,
    /// HPA's form: a list of policies, each with its own period.
    pub policies: Option<Vec<StepFile>>,
    /// max (default), min, or disabled.
    pub select_policy: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepFile {
    pub replicas: Option<i64>,
    pub percent: Option<f64>,
    pub period: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PanicFile {
    pub window: String,
    pub threshold: f64,
    pub stable_window: String,
    /// A fast reading of one demand signal, read for panic only.
    pub fast: Option<FastFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FastFile {
    /// The demand signal it is a fast reading of (its unit and capacity apply).
    pub signal: String,
    pub query: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JidokaFile {
    pub stale_after: Option<String>,
    pub on_bad_data: Option<String>,
    pub stop_after_failures: Option<i64>,
    pub when_stopped: Option<WhenStoppedFile>,
    pub flap_guard: Option<FlapGuardFile>,
    pub targets: Option<TargetsFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetsFile {
    /// One series per scrape target of the service, 1 when up (e.g. `up{service="$service"}`).
    pub query: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhenStoppedFile {
    pub shed: ShedFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlapGuardFile {
    pub max_reversals: i64,
    pub window: String,
}

/// A number, or a string with a unit (`150ms`, `300MB`, `0.5%`, `1.5x`, `max`) that
/// validation resolves against the field it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub enum Quantity {
    Number(f64),
    Text(String),
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Quantity;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number or a string with a unit (e.g. 150ms, 300MB, 0.5%)")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Quantity, E> {
                Ok(Quantity::Number(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Quantity, E> {
                Ok(Quantity::Number(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Quantity, E> {
                Ok(Quantity::Number(v as f64))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Quantity, E> {
                Ok(Quantity::Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}
