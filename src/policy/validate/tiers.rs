//! A policy's tiers: their conditions (thresholds in each signal's unit, with
//! hysteresis), their actions (floors, headroom, shedding) and the shedding loop's goals.

use super::super::file::*;
use super::super::*;
use super::super::{promql, units};
use super::{Checker, MAX_REPLICAS};

impl Checker<'_> {
    pub(super) fn tiers(&mut self, raw: &TiersFile, defined: &[SignalKind]) -> Vec<TierSpec> {
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

    pub(super) fn tier(&mut self, tier: Tier, raw: &TierFile, defined: &[SignalKind]) -> TierSpec {
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

    pub(super) fn threshold(&mut self, path: &str, kind: SignalKind, q: &Quantity) -> Option<f64> {
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

    pub(super) fn action(&mut self, p: &str, raw: &ActionFile) -> TierAction {
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

    pub(super) fn floor(&mut self, path: &str, q: &Quantity) -> Floor {
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

    /// A shedding tier's latency goal defaults to the p95 entry threshold of the
    /// nearest lower tier that has one (emergency steers below red's), and for the lowest
    /// to its own p95 exit level; with none, or `p95_goal: static`, the limit stays at
    /// `admit`. A goal with no p95 signal to steer by is an error.
    pub(super) fn shed_goals(&mut self, tiers: &mut [TierSpec], has_p95: bool) {
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
    pub(super) fn shed(&mut self, path: &str, s: &ShedFile) -> (Option<f64>, Option<f64>) {
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
}

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
