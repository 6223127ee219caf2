//! Checks a policy file and builds the [`Policy`]. Every problem is reported, each with
//! its position, field, what is wrong and what is allowed.

use super::file::*;
use super::promql;
use super::units::{self, parse_duration, Unit};
use super::yaml::{self, FileError, FileErrors, PositionIndex};
use super::*;
use std::time::Duration;

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

    pub fn duration(&mut self, path: &str, text: &str) -> Duration {
        match parse_duration(text) {
            Ok(d) => d,
            Err(e) => {
                self.error(path, e);
                Duration::ZERO
            }
        }
    }

    pub fn positive_duration(&mut self, path: &str, text: &str) -> Duration {
        let d = self.duration(path, text);
        if d < Duration::from_millis(1) && parse_duration(text).is_ok() {
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

    fn tiers(&mut self, raw: &TiersFile, defined: &[SignalKind]) -> Vec<TierSpec> {
        let specs: Vec<TierSpec> = [
            (Tier::Yellow, &raw.yellow),
            (Tier::Red, &raw.red),
            (Tier::Emergency, &raw.emergency),
        ]
        .into_iter()
        .map(|(tier, t)| self.tier(tier, t, defined))
        .collect();
        // Order: for each signal, yellow < red < emergency wherever both are set.
        for kind in SignalKind::ALL {
            let mut last: Option<(Tier, f64)> = None;
            for spec in &specs {
                let Some(v) = spec.enter_threshold(kind) else {
                    continue;
                };
                if let Some((lt, lv)) = last {
                    if v <= lv {
                        self.error(
                            &format!("tiers.{}.enter.{kind}", spec.tier),
                            format!(
                                "{} is not above the {lt} threshold {}; allowed: yellow < red < emergency for each signal",
                                kind.format(v),
                                kind.format(lv)
                            ),
                        );
                    }
                }
                last = Some((spec.tier, v));
            }
        }
        specs
    }

    fn tier(&mut self, tier: Tier, raw: &TierFile, defined: &[SignalKind]) -> TierSpec {
        let p = format!("tiers.{tier}");
        let mut enter = Vec::new();
        for (name, q) in &raw.enter {
            let fp = format!("{p}.enter.{name}");
            let Some(kind) = self.signal_kind(&fp, name, defined) else {
                continue;
            };
            if let Some(v) = self.threshold(&fp, kind, q) {
                enter.push((kind, v));
            }
        }
        if raw.enter.is_empty() {
            self.error(
                &format!("{p}.enter"),
                "no entry threshold; allowed: a map from signal name to threshold",
            );
        }
        let ratio = self.fraction(&format!("{p}.exit_ratio"), raw.exit_ratio, true, 1.0);
        let mut exit: Vec<(SignalKind, f64)> = enter.iter().map(|(k, v)| (*k, v * ratio)).collect();
        for (name, q) in &raw.exit {
            let fp = format!("{p}.exit.{name}");
            let Some(kind) = self.signal_kind(&fp, name, defined) else {
                continue;
            };
            let Some(v) = self.threshold(&fp, kind, q) else {
                continue;
            };
            match enter.iter().find(|(k, _)| *k == kind) {
                None => self.error(
                    &fp,
                    format!("`{kind}` has an exit level but no entry threshold in {tier}; allowed: an exit level beside an entry threshold"),
                ),
                Some((_, e)) if v > *e => self.error(
                    &fp,
                    format!(
                        "exit level {} is above the entry threshold {}; allowed: exit ≤ enter",
                        kind.format(v),
                        kind.format(*e)
                    ),
                ),
                _ => {}
            }
            if let Some(slot) = exit.iter_mut().find(|(k, _)| *k == kind) {
                slot.1 = v;
            }
        }
        let for_ = self.duration(&format!("{p}.for"), &raw.for_);
        let cooldown = self.duration(&format!("{p}.cooldown"), &raw.cooldown);
        let action = self.action(&format!("{p}.action"), &raw.action);
        TierSpec {
            tier,
            enter,
            exit,
            for_,
            cooldown,
            action,
        }
    }

    fn threshold(&mut self, path: &str, kind: SignalKind, q: &Quantity) -> Option<f64> {
        let v = match q {
            // A bare 150 is almost surely meant as milliseconds, and would read as 150 s.
            Quantity::Number(n) if kind == SignalKind::P95Latency => {
                self.error(
                    path,
                    format!(
                        "{n} has no unit; allowed: a latency with its unit, e.g. 150ms or 0.15s"
                    ),
                );
                return None;
            }
            Quantity::Number(n) => *n,
            Quantity::Text(t) => match units::parse_in(kind.canonical_unit(), t) {
                Ok(v) => v,
                Err(e) => {
                    self.error(path, e);
                    return None;
                }
            },
        };
        if !v.is_finite() || v < 0.0 {
            self.error(
                path,
                format!("threshold {v} is negative or not finite; allowed: a number ≥ 0"),
            );
            return None;
        }
        if kind == SignalKind::ErrorRate && v > 1.0 {
            self.error(
                path,
                format!("{v} is above 1; allowed: {kind} is a fraction, 0 to 1 (0.005 or 0.5%)"),
            );
            return None;
        }
        let (max, allowed) = threshold_bound(kind);
        if v > max {
            self.error(
                path,
                format!(
                    "{} is out of range; allowed: at most {allowed}",
                    if kind == SignalKind::Memory {
                        format!("{v} bytes")
                    } else {
                        kind.format(v)
                    }
                ),
            );
            return None;
        }
        Some(v)
    }

    fn action(&mut self, p: &str, raw: &ActionFile) -> TierAction {
        let headroom = raw.headroom;
        if !(headroom.is_finite() && (0.0..=10.0).contains(&headroom)) {
            self.error(
                &format!("{p}.headroom"),
                format!("{headroom} is out of range; allowed: 0 to 10 (0.2 = +20%)"),
            );
        }
        let floor = match &raw.floor {
            None => Floor::None,
            Some(q) => self.floor(&format!("{p}.floor"), q),
        };
        let (shed_admit, shed_goal_s) = match &raw.shed {
            None => (None, None),
            Some(s) => self.shed(&format!("{p}.shed"), s),
        };
        TierAction {
            headroom: if headroom.is_finite() && headroom >= 0.0 {
                headroom
            } else {
                0.0
            },
            floor,
            shed_admit,
            shed_goal_s,
        }
    }

    fn floor(&mut self, path: &str, q: &Quantity) -> Floor {
        const ALLOWED: &str =
            "allowed: a replica count (12), a factor of the replicas held on entry (1.5x), or max";
        match q {
            Quantity::Number(n) if n.fract() == 0.0 && *n >= 0.0 && *n <= MAX_REPLICAS as f64 => {
                Floor::Replicas(*n as u32)
            }
            Quantity::Number(n) => {
                self.error(path, format!("{n} is not a replica count; {ALLOWED}"));
                Floor::None
            }
            Quantity::Text(t) if t.trim() == "max" => Floor::Max,
            Quantity::Text(t) => {
                match t.trim().strip_suffix('x').map(|f| f.trim().parse::<f64>()) {
                    Some(Ok(f)) if f.is_finite() && (1.0..=100.0).contains(&f) => Floor::Factor(f),
                    _ => {
                        self.error(
                            path,
                            format!(
                                "`{}` is not a floor; {ALLOWED} (a factor from 1 to 100)",
                                promql::shorten(t, 40)
                            ),
                        );
                        Floor::None
                    }
                }
            }
        }
    }

    /// `behavior.panic.fast`: a demand signal's fast query, with that signal's unit and
    /// combination, checked like any signal's.
    fn panic_fast(
        &mut self,
        f: &FastFile,
        signals: &[Signal],
        capacity: &Capacity,
    ) -> Option<Signal> {
        let path = "behavior.panic.fast";
        let demand: Vec<&str> = capacity.per_replica.iter().map(|(k, _)| k.name()).collect();
        let Some(base) = signals.iter().find(|s| s.kind.name() == f.signal) else {
            self.error(&format!("{path}.signal"), format!("`{}` is not a signal of this policy; allowed: a demand signal with a capacity: {}", f.signal, demand.join(", ")));
            return None;
        };
        if !demand.contains(&f.signal.as_str()) {
            self.error(
                &format!("{path}.signal"),
                format!(
                    "`{}` has no capacity.per_replica, so panic cannot weigh it; allowed: {}",
                    f.signal,
                    demand.join(", ")
                ),
            );
            return None;
        }
        if !f.query.contains(SERVICE_PLACEHOLDER) {
            self.error(&format!("{path}.query"), format!("the query does not use {SERVICE_PLACEHOLDER}; allowed: one series per service, as the signal's own query"));
            return None;
        }
        if let Err(e) = promql::check(&f.query) {
            self.error(&format!("{path}.query"), e);
            return None;
        }
        Some(Signal {
            kind: base.kind,
            query: f.query.trim().to_string(),
            unit: base.unit,
            combine: base.combine,
        })
    }

    /// A shedding tier's latency goal defaults to the p95 entry threshold of the
    /// nearest lower tier that has one (emergency steers below red's), and for the lowest
    /// to its own p95 exit level; with none, or `p95_goal: static`, the limit stays at
    /// `admit`. A goal with no p95 signal to steer by is an error.
    fn shed_goals(&mut self, tiers: &mut [TierSpec], has_p95: bool) {
        let p95_of = |levels: &[(SignalKind, f64)]| {
            levels
                .iter()
                .find(|(k, _)| *k == SignalKind::P95Latency)
                .map(|(_, v)| *v)
        };
        let mut below: Option<f64> = None;
        for t in tiers.iter_mut() {
            let lower = below;
            below = p95_of(&t.enter).or(below);
            if t.action.shed_admit.is_none() {
                continue;
            }
            let given = t.action.shed_goal_s.filter(|g| !g.is_nan());
            if given.is_some() && !has_p95 {
                self.error(
                    &format!("tiers.{}.action.shed.p95_goal", t.tier),
                    "there is no p95_latency signal to steer by; allowed: define one, or p95_goal: static",
                );
            }
            t.action.shed_goal_s = match t.action.shed_goal_s {
                Some(g) if g.is_nan() => None,
                Some(g) => Some(g),
                // The lowest tier has no tier below: aim where it would calm down.
                None => lower.or_else(|| p95_of(&t.exit)),
            };
        }
    }

    /// A tier's shedding: the starting fraction, and the goal when one is given. `None`
    /// goal with a fraction means "the default goal" until [`Self::shed_goals`] fills it.
    fn shed(&mut self, path: &str, s: &ShedFile) -> (Option<f64>, Option<f64>) {
        match s {
            ShedFile::Word(w) if w == "none" => (None, None),
            ShedFile::Word(w) => {
                self.error(path, format!("`{w}` is not a shedding level; allowed: none, or {{admit: FRACTION, p95_goal: DURATION|static}} with 0 < FRACTION ≤ 2"));
                (None, None)
            }
            ShedFile::Admit(a) => {
                let v = self.fraction(&format!("{path}.admit"), a.admit, true, 2.0);
                let goal = match a.p95_goal.as_deref() {
                    None => None,
                    Some("static") => Some(f64::NAN),
                    Some(g) => match units::parse_in(units::Unit::Seconds, g) {
                        Ok(s) if s > 0.0 && s <= 3600.0 => Some(s),
                        Ok(s) => {
                            self.error(&format!("{path}.p95_goal"), format!("{s} s is out of range; allowed: more than 0 and at most 1h, or static"));
                            None
                        }
                        Err(e) => {
                            self.error(&format!("{path}.p95_goal"), format!("{e}, or static"));
                            None
                        }
                    },
                };
                ((v > 0.0 && v <= 2.0).then_some(v), goal)
            }
        }
    }

    fn direction(&mut self, p: &str, raw: Option<&DirectionFile>, default: Direction) -> Direction {
        let Some(raw) = raw else { return default };
        let stabilization = match &raw.stabilization {
            Some(t) => self.duration(&format!("{p}.stabilization"), t),
            None => default.stabilization,
        };
        let select = match raw.select_policy.as_deref() {
            None | Some("max") => SelectPolicy::Max,
            Some("min") => SelectPolicy::Min,
            Some("disabled") => SelectPolicy::Disabled,
            Some(o) => {
                self.error(
                    &format!("{p}.select_policy"),
                    format!("`{o}` is not allowed; allowed: max, min, disabled"),
                );
                SelectPolicy::Max
            }
        };
        let mut policies = Vec::new();
        match (&raw.max_step, &raw.policies) {
            (Some(s), None) => {
                let path = format!("{p}.max_step");
                let period = self.positive_duration(&format!("{path}.period"), &s.period);
                if s.replicas.is_none() && s.percent.is_none() {
                    self.error(
                        &path,
                        "neither replicas nor percent is set; allowed: one or both",
                    );
                }
                policies.extend(
                    self.step_kinds(&path, s)
                        .into_iter()
                        .map(|kind| StepPolicy { kind, period }),
                );
            }
            (None, Some(list)) => {
                for (i, s) in list.iter().enumerate() {
                    let path = format!("{p}.policies[{i}]");
                    let period = self.positive_duration(&format!("{path}.period"), &s.period);
                    let kinds = self.step_kinds(&path, s);
                    if kinds.len() != 1 {
                        self.error(&path, "a policy sets exactly one of replicas and percent");
                    }
                    policies.extend(
                        kinds
                            .into_iter()
                            .take(1)
                            .map(|kind| StepPolicy { kind, period }),
                    );
                }
                if list.is_empty() && select != SelectPolicy::Disabled {
                    self.error(
                        &format!("{p}.policies"),
                        "no policy; allowed: at least one, or select_policy: disabled",
                    );
                }
            }
            (Some(_), Some(_)) => {
                self.error(p, "max_step and policies both set; allowed: one of them")
            }
            // Unset: the direction's default policies (HPA's).
            (None, None) => policies = default.policies.clone(),
        }
        Direction {
            stabilization,
            policies,
            select,
        }
    }

    fn step_kinds(&mut self, path: &str, s: &StepFile) -> Vec<StepKind> {
        let mut kinds = Vec::new();
        if let Some(r) = s.replicas {
            kinds.push(StepKind::Replicas(self.count(
                &format!("{path}.replicas"),
                r,
                1,
                MAX_REPLICAS,
            )));
        }
        if let Some(v) = s.percent {
            if v.is_finite() && v > 0.0 && v <= 10_000.0 {
                kinds.push(StepKind::Percent(v));
            } else {
                self.error(
                    &format!("{path}.percent"),
                    format!("{v} is out of range; allowed: a percentage above 0, at most 10000 (100 = double)"),
                );
            }
        }
        kinds
    }

    fn behavior(&mut self, raw: &BehaviorFile) -> Behavior {
        let scale_up = self.direction(
            "behavior.scale_up",
            raw.scale_up.as_ref(),
            default_scale_up(),
        );
        let scale_down = self.direction(
            "behavior.scale_down",
            raw.scale_down.as_ref(),
            default_scale_down(),
        );
        let panic = raw.panic.as_ref().map(|p| {
            let window = self.positive_duration("behavior.panic.window", &p.window);
            let stable_window = self.positive_duration("behavior.panic.stable_window", &p.stable_window);
            if !(p.threshold.is_finite() && (1.0..=100.0).contains(&p.threshold)) {
                self.error("behavior.panic.threshold", format!("{} is out of range; allowed: a factor from 1 to 100 (2.0 = demand at twice capacity)", p.threshold));
            }
            if stable_window < window {
                self.error("behavior.panic.stable_window", "is shorter than the panic window; allowed: stable_window ≥ window");
            }
            Panic {
                window,
                threshold: p.threshold,
                stable_window,
            }
        });
        let update_hold = match &raw.update_hold {
            // 0s: a rolling update never holds scaling.
            Some(t) => self.duration("behavior.update_hold", t),
            None => DEFAULT_UPDATE_HOLD,
        };
        Behavior {
            scale_up,
            scale_down,
            panic,
            update_hold,
            // Checked in `policy()`, where the signals and capacity are known.
            predict: None,
        }
    }

    fn jidoka(&mut self, raw: &JidokaFile) -> Jidoka {
        let d = DEFAULT_JIDOKA;
        let stale_after = match &raw.stale_after {
            Some(t) => self.positive_duration("jidoka.stale_after", t),
            None => d.stale_after,
        };
        let on_bad_data = match raw.on_bad_data.as_deref() {
            None | Some("hold_down") => OnBadData::HoldDown,
            Some("freeze") => OnBadData::Freeze,
            Some(o) => {
                self.error(
                    "jidoka.on_bad_data",
                    format!("`{o}` is not allowed; allowed: hold_down, freeze"),
                );
                OnBadData::HoldDown
            }
        };
        let stop_after_failures = raw
            .stop_after_failures
            .map(|n| self.count("jidoka.stop_after_failures", n, 1, 1000))
            .unwrap_or(d.stop_after_failures);
        let when_stopped = match &raw.when_stopped {
            None => d.when_stopped,
            Some(w) => match &w.shed {
                ShedFile::Word(s) if s == "keep" => StoppedShed::Keep,
                ShedFile::Word(s) if s == "none" => StoppedShed::None,
                ShedFile::Word(s) => {
                    self.error(
                        "jidoka.when_stopped.shed",
                        format!(
                            "`{s}` is not allowed; allowed: keep, none, or {{admit: FRACTION}}"
                        ),
                    );
                    StoppedShed::Keep
                }
                ShedFile::Admit(_) => match self.shed("jidoka.when_stopped.shed", &w.shed).0 {
                    Some(v) => StoppedShed::Admit(v),
                    None => StoppedShed::Keep,
                },
            },
        };
        let flap_guard = match &raw.flap_guard {
            None => d.flap_guard,
            Some(f) => FlapGuard {
                max_reversals: self.count(
                    "jidoka.flap_guard.max_reversals",
                    f.max_reversals,
                    1,
                    1000,
                ),
                window: self.positive_duration("jidoka.flap_guard.window", &f.window),
            },
        };
        Jidoka {
            stale_after,
            on_bad_data,
            stop_after_failures,
            when_stopped,
            flap_guard,
        }
    }
}

/// HPA's defaults (pkg/apis/autoscaling/v2/defaults.go): scale up at once by up to +4
/// replicas or +100% per 15 s, whichever allows more.
pub fn default_scale_up() -> Direction {
    let period = Duration::from_secs(15);
    Direction {
        stabilization: Duration::ZERO,
        policies: vec![
            StepPolicy {
                kind: StepKind::Replicas(4),
                period,
            },
            StepPolicy {
                kind: StepKind::Percent(100.0),
                period,
            },
        ],
        select: SelectPolicy::Max,
    }
}

/// HPA's defaults: scale down after a 5-minute window, up to 100% per 15 s.
pub fn default_scale_down() -> Direction {
    Direction {
        stabilization: Duration::from_secs(300),
        policies: vec![StepPolicy {
            kind: StepKind::Percent(100.0),
            period: Duration::from_secs(15),
        }],
        select: SelectPolicy::Max,
    }
}

/// The most replicas a policy may name anywhere: a Swarm service beyond this is not what
/// andon is for, and a typo of 10^9 must not reach the simulator's allocations.
pub const MAX_REPLICAS: i64 = 10_000;

/// The largest capacity per replica (connections or messages per second).
pub const MAX_CAPACITY: f64 = 1e7;

/// The most sessions per replica a session cap may name.
pub const MAX_SESSION_CAP: i64 = 1_000_000;

/// The largest threshold each signal may have, and the words for it.
pub fn threshold_bound(kind: SignalKind) -> (f64, &'static str) {
    match kind {
        SignalKind::ErrorRate => (1.0, "1 (100%)"),
        // CPU as a fraction of one core, up to 256 cores' worth.
        SignalKind::Cpu => (256.0, "256 (25,600%: 256 cores)"),
        SignalKind::Memory => (1e12, "1TB per replica"),
        SignalKind::P95Latency => (3600.0, "1h"),
        SignalKind::Connections | SignalKind::QueueDepth => (1e9, "1e9"),
        SignalKind::Throughput => (1e9, "1e9 per second"),
    }
}

/// A rolling update holds scaling at most this long by default.
pub const DEFAULT_UPDATE_HOLD: Duration = Duration::from_secs(600);

pub const DEFAULT_JIDOKA: Jidoka = Jidoka {
    stale_after: Duration::from_secs(60),
    on_bad_data: OnBadData::HoldDown,
    stop_after_failures: 3,
    when_stopped: StoppedShed::Keep,
    flap_guard: FlapGuard {
        max_reversals: 2,
        window: Duration::from_secs(600),
    },
};

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
