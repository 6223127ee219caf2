//! `behavior.predict`, checked: horizons per demand signal, the trend, seasonal and
//! sessions forecasters' settings, and the error above which a forecaster is ignored.

use super::file::{PredictFile, SeasonalFile, SessionsFile, Switch, TrendFile};
use super::units::{parse_in, Unit};
use super::validate::Checker;
use super::{promql, Capacity, Predict, SeasonalParams, Signal, SignalKind, TrendParams};
use std::time::Duration;

/// Swarm starts a task in about 5 s on this machine; readiness adds a few more.
pub const DEFAULT_READY_AFTER: Duration = Duration::from_secs(10);
/// Prometheus' usual scrape interval (and the manifests').
pub const DEFAULT_SCRAPE_INTERVAL: Duration = Duration::from_secs(15);
/// Holt's factors per reading: the level follows half of each surprise; the trend moves a
/// third of the way to each new slope (a ramp is believed after two or three scrapes).
pub const DEFAULT_TREND: TrendParams = TrendParams {
    alpha: 0.5,
    beta: 0.3,
};
pub const DEFAULT_SEASONAL: SeasonalParams = SeasonalParams {
    period: Duration::from_secs(24 * 3600),
    history: Duration::from_secs(7 * 24 * 3600),
    step: Duration::from_secs(300),
    min_periods: 2,
    lead: Duration::from_secs(300),
};
/// A forecaster wrong by more than a quarter of demand is worse than none.
pub const DEFAULT_MAX_ERROR: f64 = 0.25;
/// The longest horizon: past an hour a forecast is capacity planning, not scaling.
pub const MAX_HORIZON: Duration = Duration::from_secs(3600);
/// At most this many points per history series (a week at 1 m is 10,080).
pub const MAX_HISTORY_POINTS: u64 = 11_000;

impl Checker<'_> {
    pub(super) fn predict(
        &mut self,
        raw: &PredictFile,
        signals: &[Signal],
        capacity: &Capacity,
    ) -> Option<Predict> {
        let p = "behavior.predict";
        let dur = |c: &mut Self, key: &str, v: &Option<String>, default: Duration| match v {
            Some(t) => {
                let d = c.duration(&format!("{p}.{key}"), t);
                if d > MAX_HORIZON {
                    c.error(
                        &format!("{p}.{key}"),
                        format!("`{t}` is longer than an hour; allowed: 0 to 1h"),
                    );
                }
                d
            }
            None => default,
        };
        let fixed = raw
            .horizon
            .as_ref()
            .map(|_| dur(self, "horizon", &raw.horizon, Duration::ZERO));
        let ready = dur(self, "ready_after", &raw.ready_after, DEFAULT_READY_AFTER);
        let scrape = dur(
            self,
            "scrape_interval",
            &raw.scrape_interval,
            DEFAULT_SCRAPE_INTERVAL,
        );
        if raw.scrape_interval.is_some() && scrape.is_zero() {
            self.error(
                &format!("{p}.scrape_interval"),
                "is 0; allowed: Prometheus' scrape interval, at least 1s",
            );
        }
        if fixed.is_some() && (raw.ready_after.is_some() || raw.scrape_interval.is_some()) {
            self.error(
                &format!("{p}.horizon"),
                "is set together with ready_after or scrape_interval, which only make the default horizon; allowed: one or the other",
            );
        }
        let range = |kind: SignalKind| {
            signals
                .iter()
                .find(|s| s.kind == kind)
                .and_then(|s| promql::longest_range(&s.query))
                .unwrap_or_default()
        };
        let horizons = capacity
            .per_replica
            .iter()
            .map(|(kind, _)| (*kind, fixed.unwrap_or(ready + scrape + range(*kind) / 2)))
            .collect();
        let persist = capacity
            .per_replica
            .iter()
            .map(|(kind, _)| (*kind, (range(*kind) + scrape).max(2 * scrape)))
            .collect();
        let trend = match &raw.trend {
            None => Some(DEFAULT_TREND),
            Some(s) => self.switch(&format!("{p}.trend"), s, |c, t| c.trend(t)),
        };
        let seasonal = match &raw.seasonal {
            None => Some(DEFAULT_SEASONAL),
            Some(s) => self.switch(&format!("{p}.seasonal"), s, |c, t| c.seasonal(t)),
        };
        let max_error = match &raw.max_error {
            None => DEFAULT_MAX_ERROR,
            Some(q) => {
                let path = format!("{p}.max_error");
                let v = match q {
                    super::file::Quantity::Number(v) => Ok(*v),
                    super::file::Quantity::Text(t) => parse_in(Unit::Ratio, t),
                };
                match v {
                    Ok(v) if v.is_finite() && v > 0.0 && v <= 10.0 => v,
                    Ok(v) => {
                        let shown = if v.abs() < 1e6 {
                            format!("{v}")
                        } else {
                            format!("{v:.3e}")
                        };
                        self.error(&path, format!("{shown} is out of range; allowed: above 0, at most 10 (1000%): the forecaster's error over demand"));
                        DEFAULT_MAX_ERROR
                    }
                    Err(e) => {
                        self.error(&path, e.0);
                        DEFAULT_MAX_ERROR
                    }
                }
            }
        };
        // Off unless asked for: it is wrong when new clients send less than the ones before
        // (idle sessions), and a policy that did not ask should not change on an upgrade.
        let both = [SignalKind::Throughput, SignalKind::Connections]
            .iter()
            .all(|k| capacity.per_replica.iter().any(|(c, _)| c == k));
        let asked = match &raw.sessions {
            None => false,
            Some(Switch::Word(w)) if w == "on" => true,
            Some(Switch::Word(w)) if w == "off" => false,
            Some(Switch::Word(w)) => {
                let path = format!("{p}.sessions");
                self.error(&path, format!("`{w}` is not allowed; allowed: on, off"));
                false
            }
            // Never built: a map is refused as it is read.
            Some(Switch::Settings(SessionsFile)) => true,
        };
        if asked && !both {
            self.error(
                &format!("{p}.sessions"),
                "is on, but it needs both `throughput` and `connections` in capacity.per_replica; allowed: off, or add both",
            );
        }
        let sessions = asked && both;
        // (Sessions asked for without both signals is its own error, said above.)
        if trend.is_none() && seasonal.is_none() && !asked {
            self.error(
                p,
                "turns every forecaster off; allowed: leave `behavior.predict` out to predict nothing",
            );
        }
        Some(Predict {
            horizons,
            persist,
            scrape_interval: scrape.max(Duration::from_secs(1)),
            trend,
            seasonal,
            sessions,
            max_error,
        })
    }

    fn switch<T, R: Copy>(
        &mut self,
        path: &str,
        s: &Switch<T>,
        settings: impl FnOnce(&mut Self, &T) -> R,
    ) -> Option<R>
    where
        T: Default,
    {
        match s {
            Switch::Word(w) if w == "off" => None,
            Switch::Word(w) if w == "on" => Some(settings(self, &T::default())),
            Switch::Word(w) => {
                self.error(
                    path,
                    format!("`{w}` is not allowed; allowed: on, off, or a map of settings"),
                );
                None
            }
            Switch::Settings(t) => Some(settings(self, t)),
        }
    }

    fn trend(&mut self, t: &TrendFile) -> TrendParams {
        let mut f = |key: &str, v: Option<f64>, d: f64| match v {
            Some(v) if v.is_finite() && v > 0.0 && v <= 1.0 => v,
            Some(v) => {
                self.error(
                    &format!("behavior.predict.trend.{key}"),
                    format!("{v} is out of range; allowed: above 0, at most 1 (the weight of each new reading)"),
                );
                d
            }
            None => d,
        };
        TrendParams {
            alpha: f("alpha", t.alpha, DEFAULT_TREND.alpha),
            beta: f("beta", t.beta, DEFAULT_TREND.beta),
        }
    }

    fn seasonal(&mut self, s: &SeasonalFile) -> SeasonalParams {
        let p = "behavior.predict.seasonal";
        let d = DEFAULT_SEASONAL;
        let mut dur = |key: &str, v: &Option<String>, default: Duration| match v {
            Some(t) => self.positive_duration(&format!("{p}.{key}"), t),
            None => default,
        };
        let period = dur("period", &s.period, d.period);
        let history = dur("history", &s.history, d.history);
        let step = dur("step", &s.step, d.step);
        let lead = match &s.lead {
            Some(t) => self.duration(&format!("{p}.lead"), t),
            None => d.lead,
        };
        if lead > MAX_HORIZON {
            self.error(
                &format!("{p}.lead"),
                "is longer than an hour; allowed: 0 to 1h",
            );
        }
        let min_periods = match s.min_periods {
            Some(n) if (1..=52).contains(&n) => n as u32,
            Some(n) => {
                self.error(
                    &format!("{p}.min_periods"),
                    format!("{n} is out of range; allowed: a whole number from 1 to 52"),
                );
                d.min_periods
            }
            None => d.min_periods,
        };
        let ms = |d: Duration| d.as_millis() as u64;
        // A duration that did not parse reads 0 and has its own error already.
        if ms(period) > 0 && ms(step) > 0 && ms(history) > 0 {
            if ms(step) > ms(period) / 4 {
                self.error(
                    &format!("{p}.step"),
                    "is longer than a quarter of the period; allowed: at least 4 points per period",
                );
            } else if ms(history) / ms(step) > MAX_HISTORY_POINTS {
                self.error(
                    &format!("{p}.step"),
                    format!("{} points of history; allowed: at most {MAX_HISTORY_POINTS} (a longer step or a shorter history)", ms(history) / ms(step)),
                );
            }
            if ms(history) < ms(period) * min_periods as u64 {
                self.error(
                    &format!("{p}.history"),
                    format!("holds fewer than min_periods ({min_periods}) periods; allowed: history ≥ period × min_periods"),
                );
            }
        }
        SeasonalParams {
            period,
            history,
            step,
            min_periods,
            lead,
        }
    }
}
