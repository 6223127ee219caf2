//! The scenario file as written (serde types mirroring the YAML).

use crate::policy::file::Quantity;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Replicas of the modelled service at the start.
    pub replicas: i64,
    #[serde(default = "default_timeout")]
    pub client_timeout: String,
    /// The modelled Prometheus' scrape interval (default 15 s, Prometheus' own).
    pub scrape_interval: Option<String>,
    pub phases: Vec<PhaseFile>,
    #[serde(default)]
    pub faults: Vec<FaultFile>,
    #[serde(default)]
    pub expect: Vec<ExpectFile>,
    /// Earlier days, for the seasonal forecast.
    pub history: Option<super::history::HistoryFile>,
    /// The wire a drill speaks to a Swarm service: http (default), ws or tcp.
    pub transport: Option<super::Transport>,
    /// The nodes the service runs on, for node faults.
    pub nodes: Option<NodesFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodesFile {
    pub count: i64,
    /// Tasks of the service one node holds; without it, as many as asked.
    pub tasks_per_node: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFaultFile {
    /// `n1` .. `nN` (a real node: its `andon.node` label).
    pub node: String,
    #[serde(rename = "for")]
    pub for_: String,
}

fn default_timeout() -> String {
    "5s".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseFile {
    pub name: String,
    pub duration: String,
    pub connections: ConnectionsFile,
    #[serde(default)]
    pub rate: Option<RateFile>,
    #[serde(default)]
    pub mix: BTreeMap<String, f64>,
}

/// A constant count, or a ramp.
#[derive(Debug)]
pub enum ConnectionsFile {
    Constant(i64),
    Ramp(RampFile),
}

impl<'de> Deserialize<'de> for ConnectionsFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ConnectionsFile;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "a number of connections, or a ramp {from, to} or {from, to, step, every}",
                )
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ConnectionsFile, E> {
                Ok(ConnectionsFile::Constant(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ConnectionsFile, E> {
                Ok(ConnectionsFile::Constant(v.min(i64::MAX as u64) as i64))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<ConnectionsFile, A::Error> {
                RampFile::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(ConnectionsFile::Ramp)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RampFile {
    pub from: i64,
    pub to: i64,
    /// Change by this many connections ...
    pub step: Option<i64>,
    /// ... every this long; without step/every the ramp is linear.
    pub every: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateFile {
    pub per_connection: Option<f64>,
    pub total: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultFile {
    pub at: String,
    pub kill_tasks: Option<i64>,
    pub pause_tasks: Option<PauseFile>,
    pub prometheus_down: Option<String>,
    pub restart_controller: Option<RestartFile>,
    pub write_failures: Option<ForFile>,
    pub rolling_update: Option<RollingUpdateFile>,
    pub scrape_gap: Option<ScrapeGapFile>,
    pub prometheus_stale: Option<String>,
    pub node_down: Option<NodeFaultFile>,
    pub node_drain: Option<NodeFaultFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForFile {
    #[serde(rename = "for")]
    pub for_: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollingUpdateFile {
    #[serde(rename = "for")]
    pub for_: String,
    #[serde(default)]
    pub paused: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeGapFile {
    pub targets: i64,
    #[serde(rename = "for")]
    pub for_: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseFile {
    pub count: i64,
    #[serde(rename = "for")]
    pub for_: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartFile {
    pub down_for: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectFile {
    /// Optional words for the report; a sentence is made from the fields otherwise.
    pub text: Option<String>,
    pub tier_at_most: Option<String>,
    pub p95_below: Option<Quantity>,
    pub error_rate_below: Option<Quantity>,
    pub timeout_rate_below: Option<Quantity>,
    pub replicas_at_most: Option<i64>,
    pub replicas_at_least: Option<i64>,
    pub replicas_back_to: Option<i64>,
    pub no_scale_down: Option<bool>,
    pub tier_at_least: Option<String>,
    pub max_direction_changes: Option<i64>,
    /// From the start of the `during` phase to the first scale-up.
    pub reaction_within: Option<String>,
    pub shed_fraction_below: Option<Quantity>,
    /// At the start of the `during` phase, this fraction of the replicas it goes on to
    /// need is ready.
    pub ready_at_start: Option<Quantity>,
    pub line_stopped: Option<bool>,
    /// `hpa`: compare the run's summary with the same scenario under the HPA baseline.
    pub better_than: Option<String>,
    /// For better_than: the summary fields compared (lower is better) ...
    pub on: Option<Vec<String>>,
    /// ... each within this much of the baseline's (default 0).
    pub tolerance: Option<Quantity>,
    /// Window: a phase name or `all` (the default).
    pub during: Option<String>,
    /// Ignore the first part of the window.
    pub skip: Option<String>,
    /// For replicas_back_to: within this long after the `after` phase ends.
    pub within: Option<String>,
    pub after: Option<String>,
}
