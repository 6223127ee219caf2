//! A policy's `behavior` (scale-up and scale-down windows and steps, panic mode and its
//! fast signal, the update hold) and `jidoka`, with HPA's defaults where a policy is silent.

use super::super::file::*;
use super::super::promql;
use super::super::*;
use super::{Checker, MAX_REPLICAS};
use std::time::Duration;

impl Checker<'_> {
    /// `behavior.panic.fast`: a demand signal's fast query, with that signal's unit and
    /// combination, checked like any signal's.
    pub(super) fn panic_fast(
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

    pub(super) fn direction(
        &mut self,
        p: &str,
        raw: Option<&DirectionFile>,
        default: Direction,
    ) -> Direction {
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

    pub(super) fn step_kinds(&mut self, path: &str, s: &StepFile) -> Vec<StepKind> {
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

    pub(super) fn behavior(&mut self, raw: &BehaviorFile) -> Behavior {
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

    pub(super) fn jidoka(&mut self, raw: &JidokaFile) -> Jidoka {
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
