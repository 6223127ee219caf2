//! Scenario files, shared by `simulate` and `drill`: load phases, faults at given times,
//! and the `expect:` block, the steady-state hypothesis that gives the verdict.

mod check;
pub mod expect;
pub mod file;
pub mod history;

use crate::policy::units::{self, Unit};
use crate::policy::validate::Checker;
use crate::policy::yaml::{self, FileErrors, PositionIndex};
use crate::policy::Tier;
use file::*;
use std::time::Duration;

pub use expect::{Expectation, Metric, Verdict, Window};

/// The longest scenario: a month of 1 s ticks is 2.7 million steps.
pub const MAX_SCENARIO: Duration = Duration::from_secs(31 * 24 * 3600);

/// Prometheus' default scrape interval.
pub const DEFAULT_SCRAPE_INTERVAL: Duration = Duration::from_secs(15);

/// The fault kinds a scenario may name.
pub const FAULT_KINDS: [&str; 10] = [
    "kill_tasks",
    "pause_tasks",
    "prometheus_down",
    "restart_controller",
    "write_failures",
    "rolling_update",
    "scrape_gap",
    "prometheus_stale",
    "node_down",
    "node_drain",
];

/// MCP methods a mix may name: what erlmcp and the stand-in answer.
pub const METHODS: [&str; 6] = [
    "ping",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/read",
    "prompts/list",
];

#[derive(Debug, Clone, PartialEq)]
pub enum Connections {
    Constant(u32),
    /// From → to; in `step`s every `every` when set, else linear.
    Ramp {
        from: u32,
        to: u32,
        step: Option<(u32, Duration)>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Rate {
    PerConnection(f64),
    Total(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    pub name: String,
    pub duration: Duration,
    pub connections: Connections,
    pub rate: Rate,
    /// Method → share, summing to 1.
    pub mix: Vec<(String, f64)>,
}

impl Phase {
    /// Connections `t` into the phase.
    pub fn connections_at(&self, t: Duration) -> u32 {
        match self.connections {
            Connections::Constant(n) => n,
            Connections::Ramp { from, to, step } => {
                let (from_f, to_f) = (from as f64, to as f64);
                let frac =
                    (t.as_secs_f64() / self.duration.as_secs_f64().max(1e-9)).clamp(0.0, 1.0);
                match step {
                    None => (from_f + (to_f - from_f) * frac).round() as u32,
                    Some((by, every)) => {
                        // +by at the end of every period: "+5 connections every 5 s".
                        let k = (t.as_secs_f64() / every.as_secs_f64()).floor();
                        let moved = (k * by as f64).min((to_f - from_f).abs());
                        if to >= from {
                            from + moved as u32
                        } else {
                            from - moved as u32
                        }
                    }
                }
            }
        }
    }

    /// Messages per second each connection offers, with `conns` open.
    pub fn rate_per_connection(&self, conns: u32) -> f64 {
        match self.rate {
            Rate::PerConnection(r) => r,
            Rate::Total(_) if conns == 0 => 0.0,
            Rate::Total(t) => t / conns as f64,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    KillTasks(u32),
    /// A node stops (its daemon, or its network): the managers mark it down, its tasks
    /// die and are placed elsewhere; back after `duration`.
    NodeDown {
        node: String,
        duration: Duration,
    },
    /// A node drained (availability `drain`): Swarm moves its tasks at once; active
    /// again after `duration`.
    NodeDrain {
        node: String,
        duration: Duration,
    },
    PauseTasks {
        count: u32,
        duration: Duration,
    },
    PrometheusDown(Duration),
    RestartController {
        down_for: Duration,
    },
    /// Every service update fails (another writer always first, or the Docker API down).
    WriteFailures(Duration),
    /// A rolling update in progress, or one paused after a failure.
    RollingUpdate {
        duration: Duration,
        paused: bool,
    },
    /// `targets` tasks stop being scraped while they go on serving.
    ScrapeGap {
        targets: u32,
        duration: Duration,
    },
    /// Prometheus answers, but its samples stop advancing.
    PrometheusStale(Duration),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub at: Duration,
    pub kind: FaultKind,
}

impl Fault {
    pub fn describe(&self) -> String {
        let at = humantime::format_duration(self.at);
        match &self.kind {
            FaultKind::KillTasks(n) => format!("{at}: kill {n} task(s)"),
            FaultKind::NodeDown { node, duration } => format!(
                "{at}: node {node} down for {}",
                humantime::format_duration(*duration)
            ),
            FaultKind::NodeDrain { node, duration } => format!(
                "{at}: node {node} drained for {}",
                humantime::format_duration(*duration)
            ),
            FaultKind::PauseTasks { count, duration } => {
                format!(
                    "{at}: pause {count} task(s) for {}",
                    humantime::format_duration(*duration)
                )
            }
            FaultKind::PrometheusDown(d) => format!(
                "{at}: Prometheus down for {}",
                humantime::format_duration(*d)
            ),
            FaultKind::RestartController { down_for } => {
                format!(
                    "{at}: SIGKILL the controller, back after {}",
                    humantime::format_duration(*down_for)
                )
            }
            FaultKind::WriteFailures(d) => format!(
                "{at}: every service update fails for {}",
                humantime::format_duration(*d)
            ),
            FaultKind::RollingUpdate { duration, paused } => format!(
                "{at}: a rolling update{} for {}",
                if *paused {
                    ", paused after a failure,"
                } else {
                    ""
                },
                humantime::format_duration(*duration)
            ),
            FaultKind::ScrapeGap { targets, duration } => format!(
                "{at}: {targets} task(s) not scraped for {}",
                humantime::format_duration(*duration)
            ),
            FaultKind::PrometheusStale(d) => format!(
                "{at}: Prometheus samples stop advancing for {}",
                humantime::format_duration(*d)
            ),
        }
    }
}

/// The wire a drill speaks (`transport:`); the simulator models no wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Streamable HTTP (POST /mcp).
    #[default]
    Http,
    /// WebSocket at /mcp/ws, erlmcp's framing.
    Ws,
    /// A message per line on TCP.
    Tcp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub source: String,
    /// The wire a drill speaks to a Swarm service (`transport:`; None: http).
    pub transport: Option<Transport>,
    pub name: String,
    pub description: String,
    pub replicas: u32,
    pub client_timeout: Duration,
    /// The modelled Prometheus scrapes this often.
    pub scrape_interval: Duration,
    pub phases: Vec<Phase>,
    pub faults: Vec<Fault>,
    pub expect: Vec<Expectation>,
    /// Earlier days for the seasonal forecast (`history:`).
    pub history: Option<history::History>,
    /// The nodes the service runs on (`nodes:`), named `n1` .. `nN`.
    pub nodes: Option<Nodes>,
}

/// `nodes:` in a scenario: how many, and how many of the service's tasks each holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nodes {
    pub count: u32,
    pub tasks_per_node: Option<u32>,
}

impl Scenario {
    pub fn duration(&self) -> Duration {
        self.phases.iter().map(|p| p.duration).sum()
    }

    /// The phase at `t` and how far into it, or `None` after the end.
    pub fn phase_at(&self, t: Duration) -> Option<(usize, Duration)> {
        let mut start = Duration::ZERO;
        for (i, p) in self.phases.iter().enumerate() {
            if t < start + p.duration {
                return Some((i, t - start));
            }
            start += p.duration;
        }
        None
    }

    /// When a phase starts and ends.
    pub fn phase_bounds(&self, index: usize) -> (Duration, Duration) {
        let start: Duration = self.phases[..index].iter().map(|p| p.duration).sum();
        (start, start + self.phases[index].duration)
    }

    pub fn phase_index(&self, name: &str) -> Option<usize> {
        self.phases.iter().position(|p| p.name == name)
    }

    /// Returns a copy with every duration divided by `speed` (the drill's `--speed`).
    pub fn compressed(&self, speed: f64) -> Scenario {
        let f = |d: Duration| d.div_f64(speed);
        let mut s = self.clone();
        for p in &mut s.phases {
            p.duration = f(p.duration);
            if let Connections::Ramp {
                step: Some((_, every)),
                ..
            } = &mut p.connections
            {
                *every = f(*every);
            }
        }
        for fault in &mut s.faults {
            fault.at = f(fault.at);
            match &mut fault.kind {
                FaultKind::PauseTasks { duration, .. } => *duration = f(*duration),
                FaultKind::PrometheusDown(d) => *d = f(*d),
                FaultKind::RestartController { down_for } => *down_for = f(*down_for),
                FaultKind::WriteFailures(d) | FaultKind::PrometheusStale(d) => *d = f(*d),
                FaultKind::RollingUpdate { duration, .. }
                | FaultKind::ScrapeGap { duration, .. }
                | FaultKind::NodeDown { duration, .. }
                | FaultKind::NodeDrain { duration, .. } => *duration = f(*duration),
                FaultKind::KillTasks(_) => {}
            }
        }
        for e in &mut s.expect {
            e.window.skip = f(e.window.skip);
            if let Metric::ReplicasBackTo { within, .. } = &mut e.metric {
                *within = f(*within);
            }
        }
        s
    }
}

/// Reads and checks a scenario file.
pub fn load(path: &str) -> Result<Scenario, FileErrors> {
    from_str(path, &yaml::read(path, "scenario")?)
}

pub fn from_str(file: &str, text: &str) -> Result<Scenario, FileErrors> {
    let raw: ScenarioFile =
        yaml::parse(file, text, "name, replicas and phases").map_err(|e| FileErrors(vec![e]))?;
    let mut c = Checker {
        file,
        index: PositionIndex::build(text),
        errors: Vec::new(),
    };
    let s = build(&mut c, raw);
    c.errors.sort_by_key(|e| (e.pos.line, e.pos.col));
    if c.errors.is_empty() {
        Ok(s)
    } else {
        Err(FileErrors(c.errors))
    }
}

fn count(c: &mut Checker, path: &str, v: i64) -> u32 {
    count_from(c, path, v, 0)
}

fn count_in(c: &mut Checker, path: &str, v: i64, min: i64, max: i64) -> u32 {
    if !(min..=max).contains(&v) {
        c.error(
            path,
            format!("{v} is out of range; allowed: {min} to {max}"),
        );
        return min as u32;
    }
    v as u32
}

/// A node a fault names: `n1` .. `nN` of the scenario's `nodes:`, which must be there.
fn node_name(c: &mut Checker, path: &str, name: &str, nodes: Option<Nodes>) -> String {
    let Some(n) = nodes else {
        c.error(
            path,
            "a node fault needs `nodes: {count, tasks_per_node}` in the scenario; allowed: a node n1 .. nN of it".to_string(),
        );
        return name.to_string();
    };
    // Spelt as the drill's node labels are (`n01` or `n+1` parsed as 1: the simulator
    // took them for n1 where a drill looks for a node labelled `n01`).
    let index = name
        .strip_prefix('n')
        .and_then(|i| i.parse::<u32>().ok())
        .filter(|i| name == format!("n{i}"));
    if !index.is_some_and(|i| (1..=n.count).contains(&i)) {
        c.error(
            path,
            format!(
                "`{}` is not a node of the scenario; allowed: n1 to n{}",
                shown(name),
                n.count
            ),
        );
    }
    name.to_string()
}

fn count_from(c: &mut Checker, path: &str, v: i64, min: i64) -> u32 {
    if !(min..=1_000_000).contains(&v) {
        c.error(
            path,
            format!("{v} is out of range; allowed: {min} to 1000000"),
        );
        return min as u32;
    }
    v as u32
}

/// The highest message rate a scenario may offer, per connection and in total.
pub const MAX_RATE_PER_CONNECTION: f64 = 1e6;
pub const MAX_RATE_TOTAL: f64 = 1e8;

/// The largest weight in a phase's `mix` (weights are relative).
const MAX_MIX_WEIGHT: f64 = 1e6;

/// The longest scenario or phase name: names are echoed in headers, reasons and errors.
const MAX_NAME: usize = 100;

/// A name from the file as messages show it: control characters escaped (a name must not
/// drive the terminal), and cut short.
pub(super) fn shown(name: &str) -> String {
    crate::policy::promql::shorten(name, 60)
}

fn check_name(c: &mut Checker, path: &str, name: &str) {
    if name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        c.error(
            path,
            format!(
                "`{}` is not a name; allowed: at most {MAX_NAME} characters, no control characters",
                shown(name)
            ),
        );
    }
}

fn build(c: &mut Checker, raw: ScenarioFile) -> Scenario {
    if raw.name.trim().is_empty() {
        c.error(
            "name",
            "is empty; allowed: a short name such as connection-flood",
        );
    }
    check_name(c, "name", &raw.name);
    let replicas = count(c, "replicas", raw.replicas);
    if replicas as i64 > crate::policy::validate::MAX_REPLICAS {
        c.error(
            "replicas",
            format!(
                "{replicas} is out of range; allowed: 0 to {}",
                crate::policy::validate::MAX_REPLICAS
            ),
        );
    }
    let client_timeout = c.positive_duration("client_timeout", &raw.client_timeout);
    let scrape_interval = match &raw.scrape_interval {
        Some(t) => c.positive_duration("scrape_interval", t),
        None => DEFAULT_SCRAPE_INTERVAL,
    };
    if raw.phases.is_empty() {
        c.error("phases", "no phase; allowed: a list of at least one phase");
    }
    let mut phases: Vec<Phase> = Vec::new();
    for (i, p) in raw.phases.iter().enumerate() {
        let path = format!("phases[{i}]");
        check_name(c, &format!("{path}.name"), &p.name);
        if phases.iter().any(|q| q.name == p.name) {
            c.error(
                &format!("{path}.name"),
                format!(
                    "phase `{}` is named twice; allowed: a name no other phase has",
                    shown(&p.name)
                ),
            );
        }
        let duration = c.positive_duration(&format!("{path}.duration"), &p.duration);
        let connections = match &p.connections {
            ConnectionsFile::Constant(n) => {
                Connections::Constant(count(c, &format!("{path}.connections"), *n))
            }
            ConnectionsFile::Ramp(r) => {
                let from = count(c, &format!("{path}.connections.from"), r.from);
                let to = count(c, &format!("{path}.connections.to"), r.to);
                let step = match (&r.step, &r.every) {
                    (None, None) => None,
                    (Some(s), Some(e)) => {
                        let s = count_from(c, &format!("{path}.connections.step"), *s, 1);
                        Some((
                            s,
                            c.positive_duration(&format!("{path}.connections.every"), e),
                        ))
                    }
                    _ => {
                        c.error(&format!("{path}.connections"), "step and every go together; allowed: both, or neither for a linear ramp");
                        None
                    }
                };
                Connections::Ramp { from, to, step }
            }
        };
        let rate = match &p.rate {
            None => Rate::PerConnection(0.0),
            Some(r) => match (r.per_connection, r.total) {
                (Some(v), None) | (None, Some(v)) if !(v.is_finite() && v >= 0.0) => {
                    c.error(
                        &format!("{path}.rate"),
                        format!("{v} is not a rate; allowed: messages per second ≥ 0"),
                    );
                    Rate::PerConnection(0.0)
                }
                (Some(v), None) if v > MAX_RATE_PER_CONNECTION => {
                    c.error(
                        &format!("{path}.rate.per_connection"),
                        format!("{v} is out of range; allowed: at most {MAX_RATE_PER_CONNECTION:e} messages per second per connection"),
                    );
                    Rate::PerConnection(0.0)
                }
                (None, Some(v)) if v > MAX_RATE_TOTAL => {
                    c.error(
                        &format!("{path}.rate.total"),
                        format!("{v} is out of range; allowed: at most {MAX_RATE_TOTAL:e} messages per second in all"),
                    );
                    Rate::PerConnection(0.0)
                }
                (Some(v), None) => Rate::PerConnection(v),
                // A total is shared among the connections: with none it would vanish.
                (None, Some(v)) if v > 0.0 && matches!(connections, Connections::Constant(0)) => {
                    c.error(
                        &format!("{path}.rate.total"),
                        format!(
                            "{v} with no connections; allowed: 0, or connections ≥ 1 to share it"
                        ),
                    );
                    Rate::PerConnection(0.0)
                }
                (None, Some(v)) => Rate::Total(v),
                _ => {
                    c.error(
                        &format!("{path}.rate"),
                        "both or neither set; allowed: exactly one of per_connection and total (messages per second)",
                    );
                    Rate::PerConnection(0.0)
                }
            },
        };
        let mut mix = Vec::new();
        for (method, w) in &p.mix {
            if !METHODS.contains(&method.as_str()) {
                c.error(
                    &format!("{path}.mix.{method}"),
                    format!("unknown method `{method}`; allowed: {}", METHODS.join(", ")),
                );
            } else if !(w.is_finite() && *w > 0.0 && *w <= MAX_MIX_WEIGHT) {
                // Bounded, so that the weights' sum stays finite (two of 1e308 made it
                // infinite and every share 0).
                c.error(
                    &format!("{path}.mix.{method}"),
                    format!(
                        "weight {}; allowed: a number above 0, at most {MAX_MIX_WEIGHT:e}",
                        if w.abs() < 1e6 {
                            format!("{w}")
                        } else {
                            format!("{w:e}")
                        }
                    ),
                );
            } else {
                mix.push((method.clone(), *w));
            }
        }
        if mix.is_empty() {
            mix.push(("tools/call".to_string(), 1.0));
        }
        let total: f64 = mix.iter().map(|(_, w)| w).sum();
        for m in &mut mix {
            m.1 /= total;
        }
        // What the phase offers at its most: connections × their rate.
        let peak_conns = match &connections {
            Connections::Constant(n) => *n,
            Connections::Ramp { from, to, .. } => (*from).max(*to),
        };
        if let Rate::PerConnection(r) = rate {
            if peak_conns as f64 * r > MAX_RATE_TOTAL {
                c.error(
                    &format!("{path}.rate.per_connection"),
                    format!("{peak_conns} connections × {r} msg/s offer more than {MAX_RATE_TOTAL:e} msg/s; allowed: at most {MAX_RATE_TOTAL:e} in all"),
                );
            }
        }
        phases.push(Phase {
            name: p.name.clone(),
            duration,
            connections,
            rate,
            mix,
        });
    }
    let total: Duration = phases.iter().map(|p| p.duration).sum();
    if total > MAX_SCENARIO {
        c.error(
            "phases",
            format!(
                "the phases last {}; allowed: at most 31 days in all",
                humantime::format_duration(total)
            ),
        );
    }
    let nodes = raw.nodes.as_ref().map(|n| Nodes {
        count: count_in(c, "nodes.count", n.count, 1, 100),
        tasks_per_node: n
            .tasks_per_node
            .map(|m| count_in(c, "nodes.tasks_per_node", m, 1, 10_000)),
    });
    let mut faults = Vec::new();
    for (i, f) in raw.faults.iter().enumerate() {
        let path = format!("faults[{i}]");
        let at = c.duration(&format!("{path}.at"), &f.at);
        // A fault at the very end would never fire: the run stops there.
        if at >= total {
            c.error(
                &format!("{path}.at"),
                format!(
                    "{} is not before the scenario ends ({}); allowed: within the phases",
                    f.at,
                    humantime::format_duration(total)
                ),
            );
        }
        let mut kinds = Vec::new();
        if let Some(n) = f.kill_tasks {
            kinds.push(FaultKind::KillTasks(count_from(
                c,
                &format!("{path}.kill_tasks"),
                n,
                1,
            )));
        }
        if let Some(p) = &f.pause_tasks {
            let count = count_from(c, &format!("{path}.pause_tasks.count"), p.count, 1);
            let duration = c.positive_duration(&format!("{path}.pause_tasks.for"), &p.for_);
            kinds.push(FaultKind::PauseTasks { count, duration });
        }
        if let Some(d) = &f.prometheus_down {
            kinds.push(FaultKind::PrometheusDown(
                c.positive_duration(&format!("{path}.prometheus_down"), d),
            ));
        }
        if let Some(r) = &f.restart_controller {
            let down_for = c.duration(&format!("{path}.restart_controller.down_for"), &r.down_for);
            kinds.push(FaultKind::RestartController { down_for });
        }
        if let Some(w) = &f.write_failures {
            kinds.push(FaultKind::WriteFailures(
                c.positive_duration(&format!("{path}.write_failures.for"), &w.for_),
            ));
        }
        if let Some(r) = &f.rolling_update {
            kinds.push(FaultKind::RollingUpdate {
                duration: c.positive_duration(&format!("{path}.rolling_update.for"), &r.for_),
                paused: r.paused,
            });
        }
        if let Some(g) = &f.scrape_gap {
            kinds.push(FaultKind::ScrapeGap {
                targets: count_from(c, &format!("{path}.scrape_gap.targets"), g.targets, 1),
                duration: c.positive_duration(&format!("{path}.scrape_gap.for"), &g.for_),
            });
        }
        for (key, nf, down) in [
            ("node_down", &f.node_down, true),
            ("node_drain", &f.node_drain, false),
        ] {
            let Some(nf) = nf else { continue };
            let node = node_name(c, &format!("{path}.{key}.node"), &nf.node, nodes);
            let duration = c.positive_duration(&format!("{path}.{key}.for"), &nf.for_);
            kinds.push(if down {
                FaultKind::NodeDown { node, duration }
            } else {
                FaultKind::NodeDrain { node, duration }
            });
        }
        if let Some(d) = &f.prometheus_stale {
            kinds.push(FaultKind::PrometheusStale(
                c.positive_duration(&format!("{path}.prometheus_stale"), d),
            ));
        }
        if kinds.len() != 1 {
            c.error(
                &path,
                format!(
                    "a fault names exactly one kind; allowed: {}",
                    FAULT_KINDS.join(", ")
                ),
            );
        }
        if let Some(kind) = kinds.into_iter().next() {
            faults.push(Fault { at, kind });
        }
    }
    faults.sort_by_key(|f| f.at);
    let expect = raw
        .expect
        .iter()
        .enumerate()
        .filter_map(|(i, e)| expect::build(c, &format!("expect[{i}]"), e, &phases))
        .collect();
    let total: Duration = phases.iter().map(|p| p.duration).sum();
    let history = raw
        .history
        .as_ref()
        .and_then(|h| history::build(c, h, total));
    Scenario {
        history,
        source: c.file.to_string(),
        name: raw.name,
        description: raw.description,
        replicas,
        client_timeout,
        scrape_interval,
        transport: raw.transport,
        nodes,
        phases,
        faults,
        expect,
    }
}

/// Parses a fraction or percentage (`0.01`, `1%`).
fn ratio(c: &mut Checker, path: &str, q: &crate::policy::file::Quantity) -> Option<f64> {
    use crate::policy::file::Quantity;
    let v = match q {
        Quantity::Number(n) => *n,
        Quantity::Text(t) => match units::parse_in(Unit::Ratio, t) {
            Ok(v) => v,
            Err(e) => {
                c.error(path, e);
                return None;
            }
        },
    };
    if !(0.0..=1.0).contains(&v) {
        c.error(
            path,
            format!("{v} is out of range; allowed: a fraction from 0 to 1, or a percentage"),
        );
        return None;
    }
    Some(v)
}

fn tier(c: &mut Checker, path: &str, name: &str) -> Option<Tier> {
    let t = Tier::from_name(name);
    if t.is_none() {
        c.error(
            path,
            format!("unknown tier `{name}`; allowed: green, yellow, red, emergency"),
        );
    }
    t
}
