//! Checks a policy file and builds the [`Policy`]. Every problem is reported, each with
//! its position, field, what is wrong and what is allowed.

use super::file::*;
use super::promql;
use super::units::{parse_duration, Unit};
use super::yaml::{self, FileError, FileErrors, PositionIndex};
use super::*;
use std::time::Duration;

mod behavior;
mod tiers;

pub use behavior::{default_scale_down, default_scale_up, DEFAULT_JIDOKA, DEFAULT_UPDATE_HOLD};
pub use tiers::threshold_bound;

/// Reads and checks a policy file.
pub fn load(path: &str) -> Result<Policy, FileErrors> {
    from_str(path, &yaml::read(path, "policy")?)
}

/// Checks policy text; `file` names it in messages.
pub fn from_str(file: &str, text: &str) -> Result<Policy, FileErrors> {
    let raw: PolicyFile = yaml::parse(file, text, "services, signals, capacity and tiers")
        .map_err(|e| FileErrors(vec![e]))?;
    let mut c = Checker {
        file,
        index: PositionIndex::build(text),
        errors: Vec::new(),
    };
    let policy = c.policy(raw);
    c.errors.sort_by_key(|e| (e.pos.line, e.pos.col));
    if c.errors.is_empty() {
        Ok(policy)
    } else {
        Err(FileErrors(c.errors))
    }
}

/// Collects errors while building; values that fail a check are replaced by a harmless
/// default so that checking goes on and every problem is reported at once.
pub(crate) struct Checker<'a> {
    pub file: &'a str,
    pub index: PositionIndex,
    pub errors: Vec<FileError>,
}

impl Checker<'_> {
    pub fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(FileError {
            file: self.file.to_string(),
            pos: self.index.find(path),
            field: path.to_string(),
            message: message.into(),
        });
    }

    /// A duration in whole milliseconds: andon counts time in milliseconds (the rules'
    /// `for:`, the summaries, the model's tick), and `1500us` used to become `1ms` in the
    /// rules and `0s` in `check`'s summary.
    pub fn duration(&mut self, path: &str, text: &str) -> Duration {
        match parse_duration(text) {
            Ok(d) if d.subsec_nanos() % 1_000_000 != 0 => {
                self.error(
                    path,
                    format!(
                        "`{}` is not a whole number of milliseconds; allowed: a multiple of 1ms, e.g. 2ms, 1500ms, 30s",
                        text.trim()
                    ),
                );
                // Rounded up, so that a check for zero does not report it a second time.
                Duration::from_millis(d.as_millis() as u64 + 1)
            }
            Ok(d) => d,
            Err(e) => {
                self.error(path, e);
                Duration::ZERO
            }
        }
    }

    pub fn positive_duration(&mut self, path: &str, text: &str) -> Duration {
        let errors = self.errors.len();
        let d = self.duration(path, text);
        if d < Duration::from_millis(1) && self.errors.len() == errors {
            self.error(
                path,
                format!("`{}` is too short; allowed: at least 1ms", text.trim()),
            );
        }
        d
    }

    fn fraction(&mut self, path: &str, v: f64, lo_open: bool, hi: f64) -> f64 {
        let ok = v.is_finite() && if lo_open { v > 0.0 } else { v >= 0.0 } && v <= hi;
        if !ok {
            let lo = if lo_open {
                "greater than 0"
            } else {
                "at least 0"
            };
            self.error(
                path,
                format!("{v} is out of range; allowed: {lo} and at most {hi}"),
            );
        }
        v
    }

    /// A query that must select one service by `$service` and parse; returns it trimmed.
    fn per_service_query(&mut self, path: &str, query: &str, allowed: &str) -> String {
        if !query.contains(SERVICE_PLACEHOLDER) {
            self.error(
                path,
                format!("the query does not use {SERVICE_PLACEHOLDER}; allowed: {allowed}"),
            );
        } else if let Err(e) = promql::check(query) {
            self.error(path, e);
        }
        query.trim().to_string()
    }

    fn count(&mut self, path: &str, v: i64, min: i64, max: i64) -> u32 {
        if v < min || v > max {
            self.error(
                path,
                format!("{v} is out of range; allowed: a whole number from {min} to {max}"),
            );
            return min.max(0) as u32;
        }
        v as u32
    }

    fn policy(&mut self, raw: PolicyFile) -> Policy {
        if let Some(v) = raw.version {
            if v != 1 {
                self.error(
                    "version",
                    format!("version {v} is not supported; allowed: 1"),
                );
            }
        }
        let services = self.services(&raw.services);
        let signals = self.signals(&raw.signals);
        let defined: Vec<SignalKind> = signals.iter().map(|s| s.kind).collect();
        let capacity = self.capacity(&raw.capacity, &defined);
        let mut tiers = self.tiers(&raw.tiers, &defined);
        let has_p95 = signals.iter().any(|s| s.kind == SignalKind::P95Latency);
        self.shed_goals(&mut tiers, has_p95);
        let mut behavior = self.behavior(&raw.behavior);
        behavior.predict = raw
            .behavior
            .predict
            .as_ref()
            .and_then(|p| self.predict(p, &signals, &capacity));
        let jidoka = self.jidoka(&raw.jidoka);
        // A floor above a service's maximum can never be met.
        for t in &tiers {
            if let Floor::Replicas(n) = t.action.floor {
                for (i, svc) in services.iter().enumerate() {
                    if n > svc.max_replicas {
                        self.error(
                            &format!("tiers.{}.action.floor", t.tier),
                            format!(
                                "floor {n} is above services[{i}].max_replicas {} (`{}`); allowed: a floor ≤ every service's max_replicas, or `max`",
                                svc.max_replicas,
                                promql::shorten(&svc.name, 63)
                            ),
                        );
                    }
                }
            }
        }
        let targets = raw.jidoka.targets.as_ref().map(|t| {
            self.per_service_query(
                "jidoka.targets.query",
                &t.query,
                &format!("one series per scrape target of the service, e.g. up{{service=\"{SERVICE_PLACEHOLDER}\"}}"),
            )
        });
        let spread = raw.spread.as_ref().map(|t| {
            self.per_service_query(
                "spread.query",
                &t.query,
                &format!("one series per task of the service with its `task` label, e.g. sum by (task) (rate(erlmcp_requests_total{{service=\"{SERVICE_PLACEHOLDER}\"}}[1m]))"),
            )
        });
        let panic_fast = raw
            .behavior
            .panic
            .as_ref()
            .and_then(|p| p.fast.as_ref())
            .and_then(|f| self.panic_fast(f, &signals, &capacity));
        let latency_window = signals
            .iter()
            .find(|s| s.kind == SignalKind::P95Latency)
            .and_then(|s| promql::longest_range(&s.query))
            .unwrap_or(Duration::from_secs(60));
        // What a vanished task's counters leave in the demand sums: the longest range of a
        // demand signal's query (1 m when none has one).
        let demand_window = signals
            .iter()
            .filter(|s| capacity.per_replica.iter().any(|(k, _)| *k == s.kind))
            .filter_map(|s| promql::longest_range(&s.query))
            .max()
            .unwrap_or(Duration::from_secs(60));
        Policy {
            source: self.file.to_string(),
            services,
            signals,
            capacity,
            tiers,
            behavior,
            jidoka,
            targets,
            spread,
            latency_window,
            demand_window,
            panic_fast,
        }
    }

    fn services(&mut self, raw: &[ServiceFile]) -> Vec<ServiceSpec> {
        if raw.is_empty() {
            self.error(
                "services",
                "no service is named; allowed: a list of at least one service",
            );
        }
        let mut out: Vec<ServiceSpec> = Vec::new();
        for (i, s) in raw.iter().enumerate() {
            let p = format!("services[{i}]");
            let name_ok = !s.name.is_empty()
                && s.name.len() <= 63
                && s.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
                && s.name
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphanumeric());
            if !name_ok {
                self.error(
                    &format!("{p}.name"),
                    format!("`{}` is not a Swarm service name; allowed: 1-63 letters, digits, '-', '_' or '.', starting with a letter or digit", promql::shorten(&s.name, 63)),
                );
            }
            if out.iter().any(|o| o.name == s.name) {
                self.error(
                    &format!("{p}.name"),
                    format!(
                        "service `{}` is named twice; allowed: each service once",
                        promql::shorten(&s.name, 63)
                    ),
                );
            }
            let min = self.count(
                &format!("{p}.min_replicas"),
                s.min_replicas,
                0,
                MAX_REPLICAS,
            );
            let max = self.count(
                &format!("{p}.max_replicas"),
                s.max_replicas,
                1,
                MAX_REPLICAS,
            );
            if s.min_replicas > s.max_replicas && s.max_replicas >= 1 && s.min_replicas >= 0 {
                self.error(
                    &format!("{p}.min_replicas"),
                    format!("min_replicas {min} is above max_replicas {max}; allowed: min_replicas ≤ max_replicas"),
                );
            }
            let per_node = s
                .max_replicas_per_node
                .map(|n| self.count(&format!("{p}.max_replicas_per_node"), n, 1, MAX_REPLICAS));
            out.push(ServiceSpec {
                name: s.name.clone(),
                min_replicas: min,
                max_replicas: max.max(min),
                max_replicas_per_node: per_node,
            });
        }
        out
    }

    fn signals(&mut self, raw: &SignalsFile) -> Vec<Signal> {
        let all = [
            (SignalKind::ErrorRate, &raw.error_rate),
            (SignalKind::P95Latency, &raw.p95_latency),
            (SignalKind::Cpu, &raw.cpu),
            (SignalKind::Memory, &raw.memory),
            (SignalKind::Connections, &raw.connections),
            (SignalKind::Throughput, &raw.throughput),
            (SignalKind::QueueDepth, &raw.queue_depth),
        ];
        let mut out = Vec::new();
        for (kind, s) in all {
            let Some(s) = s else { continue };
            let p = format!("signals.{kind}");
            if s.query.trim().is_empty() {
                self.error(
                    &format!("{p}.query"),
                    "the PromQL query is empty; allowed: a PromQL expression using $service",
                );
            } else if !s.query.contains(SERVICE_PLACEHOLDER) {
                self.error(
                    &format!("{p}.query"),
                    format!("the query does not use {SERVICE_PLACEHOLDER}; allowed: a PromQL expression that selects the service with {SERVICE_PLACEHOLDER}, e.g. {{service=\"{SERVICE_PLACEHOLDER}\"}}"),
                );
            } else if let Err(e) = promql::check(&s.query) {
                self.error(&format!("{p}.query"), e);
            }
            let unit = match Unit::from_name(&s.unit) {
                Some(u) if u.canonical().0 == kind.canonical_unit() => u,
                Some(u) => {
                    self.error(
                        &format!("{p}.unit"),
                        format!(
                            "unit `{}` does not fit {kind}; allowed: {}",
                            u.name(),
                            compatible_units(kind)
                        ),
                    );
                    kind.canonical_unit()
                }
                None => {
                    self.error(
                        &format!("{p}.unit"),
                        format!(
                            "unknown unit `{}`; allowed: {}",
                            s.unit,
                            compatible_units(kind)
                        ),
                    );
                    kind.canonical_unit()
                }
            };
            let combine = s.combine.as_deref().and_then(|c| {
                let v = Combine::from_name(c);
                if v.is_none() {
                    self.error(
                        &format!("{p}.combine"),
                        format!("`{c}` is not allowed; allowed: sum, avg, max, min"),
                    );
                }
                v
            });
            out.push(Signal {
                kind,
                query: s.query.trim().to_string(),
                unit,
                combine,
            });
        }
        if out.is_empty() {
            self.error("signals", "no signal is defined; allowed: error_rate, p95_latency, cpu, memory, connections, throughput, queue_depth");
        }
        out
    }

    fn signal_kind(
        &mut self,
        path: &str,
        name: &str,
        defined: &[SignalKind],
    ) -> Option<SignalKind> {
        match SignalKind::from_name(name) {
            Some(k) if defined.contains(&k) => Some(k),
            Some(k) => {
                self.error(
                    path,
                    format!("signal `{k}` is not defined under signals; allowed: a signal defined there"),
                );
                None
            }
            None => {
                self.error(
                    path,
                    format!("unknown signal `{name}`; allowed: {}", names(defined)),
                );
                None
            }
        }
    }

    fn capacity(&mut self, raw: &CapacityFile, defined: &[SignalKind]) -> Capacity {
        let mut per_replica = Vec::new();
        for (name, v) in &raw.per_replica {
            let p = format!("capacity.per_replica.{name}");
            if !(v.is_finite() && *v > 0.0 && *v <= MAX_CAPACITY) {
                self.error(
                    &p,
                    format!("capacity {v} is out of range; allowed: a number > 0 and at most {MAX_CAPACITY:e} per replica"),
                );
            }
            let Some(kind) = self.signal_kind(&p, name, defined) else {
                continue;
            };
            if !matches!(kind, SignalKind::Connections | SignalKind::Throughput) {
                self.error(
                    &p,
                    format!("`{kind}` is not a demand signal; allowed: connections, throughput"),
                );
                continue;
            }
            if !(v.is_finite() && *v > 0.0 && *v <= MAX_CAPACITY) {
                continue;
            }
            per_replica.push((kind, *v));
        }
        if raw.per_replica.is_empty() {
            self.error(
                "capacity.per_replica",
                "no demand signal has a capacity; allowed: connections and/or throughput",
            );
        }
        let target = self.fraction(
            "capacity.target_utilization",
            raw.target_utilization,
            true,
            1.0,
        );
        let tolerance = self.fraction("capacity.tolerance", raw.tolerance, false, 0.99);
        let session_cap = raw.session_cap.and_then(|n| {
            if !defined.contains(&SignalKind::Connections) {
                // The cap is sized each tick by the sessions that want a replica; without
                // the reading it could only be a fixed ceiling.
                self.error(
                    "capacity.session_cap",
                    "needs a `connections` signal (the sessions it is shared over); allowed: define signals.connections, or remove the cap",
                );
                None
            } else if (1..=MAX_SESSION_CAP).contains(&n) {
                Some(n as u32)
            } else {
                self.error(
                    "capacity.session_cap",
                    format!(
                        "{n} is out of range; allowed: 1 to {MAX_SESSION_CAP} sessions per replica"
                    ),
                );
                None
            }
        });
        Capacity {
            per_replica,
            target_utilization: if target > 0.0 && target <= 1.0 {
                target
            } else {
                1.0
            },
            tolerance,
            session_cap,
        }
    }
}

/// The most replicas a policy may name anywhere: a Swarm service beyond this is not what
/// andon is for, and a typo of 10^9 must not reach the simulator's allocations.
pub const MAX_REPLICAS: i64 = 10_000;

/// The largest capacity per replica (connections or messages per second).
pub const MAX_CAPACITY: f64 = 1e7;

/// The most sessions per replica a session cap may name.
pub const MAX_SESSION_CAP: i64 = 1_000_000;

fn compatible_units(kind: SignalKind) -> String {
    let units = [
        Unit::Ratio,
        Unit::Percent,
        Unit::Seconds,
        Unit::Milliseconds,
        Unit::Bytes,
        Unit::Count,
        Unit::PerSecond,
    ];
    units
        .iter()
        .filter(|u| u.canonical().0 == kind.canonical_unit())
        .map(|u| u.name())
        .collect::<Vec<_>>()
        .join(", ")
}

fn names(kinds: &[SignalKind]) -> String {
    if kinds.is_empty() {
        return "(no signal is defined)".into();
    }
    kinds
        .iter()
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(", ")
}
