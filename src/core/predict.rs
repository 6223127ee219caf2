//! Heijunka's prediction half: each demand signal forecast over the time a new replica
//! needs to serve, and target tracking on the forecast beside the reading.
//!
//! Up to three forecasters per demand signal:
//! - **trend**: Holt's linear trend on the readings (a level and a slope per second,
//!   updated once per new reading with the time between readings). Two numbers of state;
//!   it believes a ramp after two or three scrapes, and its slope is zero on a level
//!   series. A moving regression needs a window of samples in the state label and
//!   lags as much; Holt-Winters' season needs days of readings a restart would lose (the
//!   seasonal forecaster below reads those from Prometheus instead);
//! - **seasonal**: the same time in earlier periods, from history ([`super::seasonal`]).
//!   The shell builds the profile; the core gets its forecast in the observations;
//! - **sessions** (throughput only, `sessions: on`): the throughput per session, kept
//!   while the connections held for the rate window and a scrape, times the connections
//!   now. The connections are a gauge and show new clients at the next scrape; the rate
//!   takes its window to count what they send. Wrong when new clients send less than
//!   the old (idle sessions): its score then rules it out, after the window.
//!
//! Never trusted blindly:
//! - a forecast only adds: it votes only when it is above the reading, with target
//!   tracking and its tolerance band (so it may hold the current replicas, or ask for
//!   more), and the reactive recommendation stands when it asks for more (desired = max
//!   of the two, then the usual windows, limits and bounds);
//! - every forecast is scored when its time comes, as error over demand (WAPE: mean
//!   error over mean demand; MAPE divides by zero on an idle service), with demand
//!   floored at one replica's capacity (a miss under one replica's worth changes nothing).
//!   Two errors are kept: the absolute one, shown, and the overshoot (how far forecasts
//!   ran above what then happened), which rules: a forecast can only add replicas, so
//!   one that falls short costs nothing the reactive path does not already pay, and one
//!   that overshoots buys replicas nobody needs. A forecaster whose overshoot is above
//!   `max_error` is ignored, with that reason: Jidoka for forecasts;
//! - a trend that adds less than twice the forecaster's typical one-step miss is noise;
//! - a rise is believed only once it has lasted longer than the signal's rate window
//!   (and two scrapes): a step read through `rate[1m]` climbs for exactly that minute
//!   and stops, and a trend extrapolated from it overshoots the top;
//! - a reading that falls to zero from a level restarts the trend (a reset, or the
//!   service emptied: either way the old slope means nothing).

use super::observation::{Quality, Reading};
use super::reason::Reason;
use super::tier::Qualities;
use crate::policy::{Policy, Predict, SignalKind};
use serde::{Deserialize, Serialize};

/// How much each scored forecast weighs in the error (about the last ten).
const SCORE_WEIGHT: f64 = 0.2;
/// Forecasts scored before the error may rule a forecaster out.
const MIN_SCORED: u32 = 2;
/// Readings before the trend forecasts.
const MIN_SAMPLES: u32 = 3;
/// Forecasts waiting for their time, per forecaster (a 1 h horizon at 1 m scrapes).
const MAX_PENDING: usize = 64;
/// The sessions forecaster's connections have held while they stay within this share of
/// where they were (a few clients coming and going is not a new population).
const SESSIONS_BAND: f64 = 0.1;

/// A forecaster's record: forecasts waiting for their time, and the error so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// (due ms, forecast value).
    pub pending: Vec<(u64, f64)>,
    pub abs_error: f64,
    /// The part of the error where the forecast ran above what happened.
    #[serde(default)]
    pub overshoot: f64,
    pub demand: f64,
    pub scored: u32,
}

impl Score {
    /// Keeps a forecast to score when it is due. At most [`MAX_PENDING`] wait, spaced
    /// evenly over the horizon: a long horizon keeps a sample of its forecasts, and the
    /// next one due is never the one dropped (it would never be scored).
    fn expect(&mut self, due_ms: u64, value: f64, horizon_ms: u64) {
        let spacing = horizon_ms / MAX_PENDING as u64;
        if self
            .pending
            .last()
            .is_some_and(|(last, _)| due_ms < last.saturating_add(spacing))
            || self.pending.len() >= MAX_PENDING
        {
            return;
        }
        self.pending.push((due_ms, value));
    }

    /// Scores every forecast due by `at_ms` against the reading then.
    fn settle(&mut self, at_ms: u64, actual: f64, floor: f64) {
        while let Some(&(_, f)) = self.pending.first().filter(|(due, _)| *due <= at_ms) {
            self.pending.remove(0);
            let (e, over, d) = ((f - actual).abs(), (f - actual).max(0.0), actual.max(floor));
            if self.scored == 0 {
                (self.abs_error, self.overshoot, self.demand) = (e, over, d);
            } else {
                self.abs_error += SCORE_WEIGHT * (e - self.abs_error);
                self.overshoot += SCORE_WEIGHT * (over - self.overshoot);
                self.demand += SCORE_WEIGHT * (d - self.demand);
            }
            self.scored = self.scored.saturating_add(1);
        }
    }

    /// The error over demand, once enough forecasts were scored.
    pub fn error(&self) -> Option<f64> {
        (self.scored >= MIN_SCORED && self.demand > 0.0).then(|| self.abs_error / self.demand)
    }

    /// The overshoot over demand, once enough forecasts were scored.
    pub fn overshoot(&self) -> Option<f64> {
        (self.scored >= MIN_SCORED && self.demand > 0.0).then(|| self.overshoot / self.demand)
    }
}

/// One demand signal's forecasters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SignalForecast {
    pub signal: Option<SignalKind>,
    pub level: f64,
    /// Per second.
    pub slope: f64,
    /// The reading last used.
    pub at_ms: u64,
    pub samples: u32,
    /// The typical one-step miss (what a trend must exceed to be more than noise).
    pub noise: f64,
    /// Since when every reading has been above the one before (the rise's start).
    #[serde(default)]
    pub rising_since_ms: Option<u64>,
    /// The last reading.
    #[serde(default)]
    pub last: f64,
    pub trend: Score,
    pub seasonal: Score,
    /// Throughput only, with `sessions: on`.
    #[serde(default)]
    pub sessions: SessionsForecast,
}

/// The sessions forecaster's state: the connections reading held within
/// [`SESSIONS_BAND`] of `held` since `since_ms`, the throughput per session measured
/// while they had held for a whole rate window and a scrape, and its record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionsForecast {
    pub held: f64,
    pub since_ms: Option<u64>,
    pub per_session: Option<f64>,
    pub score: Score,
}

impl SessionsForecast {
    /// Follows the connections (`c`): while they hold within [`SESSIONS_BAND`] for a
    /// whole `settle_ms` (the throughput's rate window and a scrape), the throughput
    /// reading is theirs, and its share per session is kept; when they move, the share
    /// measured before stands until they hold again. Returns the forecast: the reading
    /// itself while they hold (so it never votes then, not even by a rounding), the
    /// share measured before times `c` once they moved.
    fn follow(&mut self, c: f64, throughput: f64, now_ms: u64, settle_ms: u64) -> Option<f64> {
        let held = (c - self.held).abs() <= SESSIONS_BAND * self.held.max(1.0);
        match self.since_ms {
            Some(since) if held => {
                if now_ms.saturating_sub(since) >= settle_ms && c >= 1.0 {
                    self.per_session = Some(throughput.max(0.0) / c);
                    return Some(throughput.max(0.0));
                }
            }
            _ => (self.held, self.since_ms) = (c, Some(now_ms)),
        }
        Some(self.per_session? * c)
    }

    /// After a gap in the connections (missing, or a restart of the trend for a gap),
    /// they must hold again before their share is measured, and forecasts made before
    /// the gap are not scored against what came after it.
    fn gap(&mut self) {
        self.since_ms = None;
        self.score.pending.clear();
    }
}

impl SignalForecast {
    /// Holt's update on a new reading, after scoring what was due. A reading after a gap
    /// longer than `max_gap_ms` (a restart, an outage) starts the trend over: the old slope
    /// says nothing about the time not seen.
    fn observe(
        &mut self,
        value: f64,
        at_ms: u64,
        (alpha, beta): (f64, f64),
        max_gap_ms: u64,
    ) -> Option<f64> {
        if self.samples > 0 && at_ms.saturating_sub(self.at_ms) > max_gap_ms {
            self.restart(0);
        }
        if self.samples >= MIN_SAMPLES && value <= 0.0 && self.level > 0.0 {
            let from = self.level;
            // The zero is where the old series ended, not where the new one starts: the
            // climb back from it is no slope.
            self.restart(at_ms);
            return Some(from);
        }
        if self.samples == 0 {
            (self.level, self.slope) = (value, 0.0);
            self.rising_since_ms = None;
        } else {
            // A level reading ends a rise as a fall does (a scrape read again within its
            // interval never gets here: see `repeat` in `recommend`).
            if value > self.last {
                self.rising_since_ms.get_or_insert(at_ms);
            } else {
                self.rising_since_ms = None;
            }
            let dt = (at_ms.saturating_sub(self.at_ms) as f64 / 1000.0).max(1e-3);
            let expected = self.level + self.slope * dt;
            if self.samples >= 2 {
                let miss = (value - expected).abs();
                self.noise += SCORE_WEIGHT * (miss - self.noise);
            }
            let level = alpha * value + (1.0 - alpha) * expected;
            let slope = (level - self.level) / dt;
            self.slope = if self.samples == 1 {
                slope
            } else {
                beta * slope + (1.0 - beta) * self.slope
            };
            self.level = level;
        }
        self.at_ms = at_ms;
        self.last = value;
        self.samples = self.samples.saturating_add(1);
        None
    }

    /// Forgets the trend and its record (the seasonal record stays: the season did not
    /// break), as of `at_ms`.
    fn restart(&mut self, at_ms: u64) {
        *self = SignalForecast {
            signal: self.signal,
            seasonal: std::mem::take(&mut self.seasonal),
            // The sessions forecaster follows the connections, not the trend (a gap is
            // dealt with where the connections are read).
            sessions: std::mem::take(&mut self.sessions),
            at_ms,
            ..Default::default()
        };
    }

    /// The trend's forecast for `at_ms`.
    fn trend_at(&self, at_ms: u64) -> f64 {
        let dt = at_ms.saturating_sub(self.at_ms) as f64 / 1000.0;
        (self.level + self.slope * dt).max(0.0)
    }
}

/// A seasonal forecast the shell read from its profile, or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum SeasonalReading {
    Forecast {
        /// The most demand expected from now to the horizon.
        ahead: f64,
        /// Demand expected at the horizon (scored when its time comes).
        at_horizon: f64,
        /// Demand expected now: readings above it are a surprise the season cannot know.
        now: f64,
        /// The profile's error on its own history.
        backtest: f64,
        periods: u32,
    },
    Off {
        why: String,
    },
}

/// What the forecasters said for one signal this tick, for /status, /metrics and charts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outlook {
    pub signal: SignalKind,
    pub horizon_s: f64,
    /// The trend's forecast at the horizon, once it has enough readings.
    pub trend: Option<f64>,
    /// Error and overshoot of its scored forecasts, over demand.
    pub trend_error: Option<f64>,
    pub trend_overshoot: Option<f64>,
    pub seasonal: Option<f64>,
    /// For the seasonal forecaster, before any forecast was scored: its backtest.
    pub seasonal_error: Option<f64>,
    pub seasonal_overshoot: Option<f64>,
    /// The forecaster whose forecast is above the reading and votes, if one does
    /// (whether it decides depends on what the reading asks for).
    pub votes: Option<String>,
    /// How far ahead the seasonal forecast looks: the horizon plus its lead.
    #[serde(default)]
    pub seasonal_horizon_s: f64,
    /// Throughput only: the throughput per session times the connections now, once a
    /// share per session was measured.
    #[serde(default)]
    pub sessions: Option<f64>,
    #[serde(default)]
    pub sessions_error: Option<f64>,
    #[serde(default)]
    pub sessions_overshoot: Option<f64>,
    /// Why a forecaster is not used (warming up, error too high, no history).
    pub notes: Vec<String>,
}

/// A forecaster's overshoot is within what the policy allows.
fn trusted(overshoot: f64, max_error: f64) -> bool {
    overshoot <= max_error
}

/// One forecaster's say in an [`Outlook`].
pub struct Said {
    pub forecaster: &'static str,
    pub value: Option<f64>,
    pub error: Option<f64>,
    pub overshoot: Option<f64>,
    pub horizon_s: f64,
}

impl Outlook {
    /// Every forecaster's say, in one list for /metrics, the simulator's events and its
    /// chart.
    pub fn said(&self) -> [Said; 3] {
        [
            Said {
                forecaster: "trend",
                value: self.trend,
                error: self.trend_error,
                overshoot: self.trend_overshoot,
                horizon_s: self.horizon_s,
            },
            Said {
                forecaster: "seasonal",
                value: self.seasonal,
                error: self.seasonal_error,
                overshoot: self.seasonal_overshoot,
                horizon_s: self.seasonal_horizon_s,
            },
            Said {
                forecaster: "sessions",
                value: self.sessions,
                error: self.sessions_error,
                overshoot: self.sessions_overshoot,
                // Demand already connected, not a forecast ahead.
                horizon_s: 0.0,
            },
        ]
    }

    /// The sessions forecast when it is trusted: demand already connected that the
    /// rate has not counted yet (panic weighs it).
    pub fn connected_demand(&self, max_error: f64) -> Option<f64> {
        self.sessions.filter(|_| {
            self.sessions_overshoot
                .is_none_or(|e| trusted(e, max_error))
        })
    }
}

/// The proactive recommendation: replicas for the forecast demand, when it asks for more
/// than `current` past the tolerance band, with its reason (the caller adds the reason
/// when the forecast decides). Updates the forecasters on new readings.
#[allow(clippy::too_many_arguments)]
pub fn recommend(
    policy: &Policy,
    predict: &Predict,
    state: &mut Vec<SignalForecast>,
    readings: (&Qualities, &[(SignalKind, Reading)]),
    seasonal: &[(SignalKind, SeasonalReading)],
    current: u32,
    headroom: f64,
    now_ms: u64,
    reasons: &mut Vec<Reason>,
) -> (Option<(u32, Reason)>, Vec<Outlook>) {
    let (q, raw) = readings;
    let cap = &policy.capacity;
    let mut best: Option<(u32, Reason)> = None;
    let mut outlooks = Vec::new();
    for &(signal, per_replica) in &cap.per_replica {
        let h = predict.horizon_ms(signal);
        let lead_ms = predict.seasonal.map_or(0, |s| s.lead.as_millis() as u64);
        let idx = match state.iter().position(|f| f.signal == Some(signal)) {
            Some(i) => i,
            None => {
                state.push(SignalForecast {
                    signal: Some(signal),
                    ..Default::default()
                });
                state.len() - 1
            }
        };
        let f = &mut state[idx];
        let season = seasonal.iter().find(|(k, _)| *k == signal).map(|(_, s)| s);
        let mut o = Outlook {
            signal,
            horizon_s: h as f64 / 1000.0,
            trend: None,
            trend_error: None,
            trend_overshoot: None,
            seasonal: None,
            seasonal_error: None,
            seasonal_overshoot: None,
            votes: None,
            seasonal_horizon_s: (h + lead_ms) as f64 / 1000.0,
            sessions: None,
            sessions_error: None,
            sessions_overshoot: None,
            notes: Vec::new(),
        };
        let Some(Quality::Good { value }) = q[signal.index()] else {
            o.notes
                .push("no good reading: the reactive path decides".into());
            outlooks.push(o);
            continue;
        };
        let at_ms = match raw.iter().find(|(k, _)| *k == signal) {
            Some((_, Reading::Value { at_ms, .. })) => (*at_ms).min(now_ms),
            _ => now_ms,
        };
        // The same value again within a scrape interval is the same scrape read again
        // (readings dated at the tick, without `jidoka.targets`): not a new sample.
        let repeat = f.samples > 0
            && value == f.last
            && at_ms.saturating_sub(f.at_ms) < predict.scrape_interval.as_millis() as u64;
        // Sessions: the connections now, at the throughput per session they last showed.
        let sessions_now = match q[SignalKind::Connections.index()] {
            Some(Quality::Good { value: c })
                if predict.sessions && signal == SignalKind::Throughput =>
            {
                Some(c.max(0.0))
            }
            _ => None,
        };
        let max_gap =
            (4 * predict.scrape_interval.as_millis() as u64).max(predict.persist_ms(signal));
        if signal == SignalKind::Throughput && predict.sessions {
            let gap = f.samples > 0 && at_ms.saturating_sub(f.at_ms) > max_gap;
            if sessions_now.is_none() || gap {
                f.sessions.gap();
            }
        }
        let sessions_forecast = sessions_now.and_then(|c| {
            f.sessions
                .follow(c, value, now_ms, predict.persist_ms(signal))
        });
        if at_ms > f.at_ms && !repeat {
            f.trend.settle(at_ms, value, per_replica);
            f.seasonal.settle(at_ms, value, per_replica);
            f.sessions.score.settle(at_ms, value, per_replica);
            // Due when the rate has had its window to count the sessions there now.
            if let Some(s) = sessions_forecast {
                let due = predict.persist_ms(signal);
                f.sessions.score.expect(at_ms + due, s, due);
            }
            let (alpha, beta) = predict.trend.map_or((1.0, 0.0), |t| (t.alpha, t.beta));
            if let Some(from) = f.observe(value.max(0.0), at_ms, (alpha, beta), max_gap) {
                reasons.push(Reason::ForecastReset {
                    signal,
                    from,
                    to: value,
                });
            }
            if f.samples >= MIN_SAMPLES {
                f.trend.expect(at_ms + h, f.trend_at(at_ms + h), h);
            }
            if let Some(SeasonalReading::Forecast { at_horizon, .. }) = season {
                f.seasonal.expect(now_ms + h, *at_horizon, h);
            }
        }
        let mut candidates: Vec<(&'static str, f64, u64)> = Vec::new();
        // The season first: where it is trusted and the readings run as it expects, it
        // knows when a rise ends and the trend does not.
        let mut season_expects = false;
        match season {
            Some(SeasonalReading::Forecast {
                ahead,
                backtest,
                now,
                ..
            }) => {
                o.seasonal = Some(*ahead);
                o.seasonal_error = f.seasonal.error().or(Some(*backtest));
                o.seasonal_overshoot = f.seasonal.overshoot();
                // History must pass its backtest (an absolute error: it shows what a day
                // of zeros or a changed pattern would do in either direction) for as long
                // as it is what the profile is made of, and the forecasts must not
                // overshoot once they are scored.
                let (e, what) = match o.seasonal_overshoot {
                    _ if *backtest > predict.max_error => {
                        (*backtest, "its error on its own history is")
                    }
                    Some(e) => (e, "its forecasts overshot by"),
                    None => (*backtest, "its error on its own history is"),
                };
                if e > predict.max_error {
                    reasons.push(Reason::ForecastIgnored {
                        signal,
                        forecaster: "seasonal",
                        why: format!(
                            "{what} {:.0}% of demand, above max_error {:.0}%",
                            e * 100.0,
                            predict.max_error * 100.0
                        ),
                    });
                } else {
                    candidates.push(("seasonal", *ahead, h + lead_ms));
                    season_expects = value <= now.max(per_replica) * (1.0 + predict.max_error);
                }
            }
            Some(SeasonalReading::Off { why }) => o.notes.push(format!("seasonal: off: {why}")),
            None => {}
        }
        if let Some(forecast) = sessions_forecast {
            o.sessions = Some(forecast);
            o.sessions_error = f.sessions.score.error();
            o.sessions_overshoot = f.sessions.score.overshoot();
            match o.sessions_overshoot {
                Some(e) if !trusted(e, predict.max_error) => {
                    reasons.push(Reason::ForecastIgnored {
                        signal,
                        forecaster: "sessions",
                        why: format!(
                            "its forecasts overshot by {:.0}% of demand, above max_error {:.0}%",
                            e * 100.0,
                            predict.max_error * 100.0
                        ),
                    })
                }
                // Demand already connected: due now, not at the horizon (the rate
                // catches up with it over its window).
                _ if forecast > value => candidates.push(("sessions", forecast, 0)),
                _ => {}
            }
        }
        if predict.trend.is_some() {
            o.trend_error = f.trend.error();
            o.trend_overshoot = f.trend.overshoot();
            if f.samples < MIN_SAMPLES {
                o.notes.push(format!(
                    "trend: warming up ({} of {MIN_SAMPLES} readings)",
                    f.samples
                ));
            } else {
                let forecast = f.trend_at(now_ms + h);
                o.trend = Some(forecast);
                let rise = forecast - value;
                match o.trend_overshoot {
                    Some(e) if e > predict.max_error => {
                        reasons.push(Reason::ForecastIgnored {
                            signal,
                            forecaster: "trend",
                            why: format!("its forecasts overshot by {:.0}% of demand, above max_error {:.0}%", e * 100.0, predict.max_error * 100.0),
                        });
                    }
                    _ if rise <= 2.0 * f.noise => {
                        o.notes.push("trend: within its own noise".into())
                    }
                    _ if f
                        .rising_since_ms
                        .is_none_or(|t| at_ms.saturating_sub(t) < predict.persist_ms(signal)) =>
                    {
                        o.notes.push(format!(
                            "trend: believed after rising for {}s",
                            predict.persist_ms(signal) / 1000
                        ))
                    }
                    _ if season_expects => o
                        .notes
                        .push("trend: the season expects this reading; it decides".into()),
                    _ => candidates.push(("trend", forecast, h)),
                }
            }
        }
        if let Some((source, forecast, ahead_ms)) =
            candidates.into_iter().max_by(|a, b| a.1.total_cmp(&b.1))
        {
            let per = per_replica * cap.target_utilization;
            let demand = forecast * (1.0 + headroom);
            // Target tracking on the forecast, with the same tolerance band as on the
            // reading: a forecast the current replicas already serve asks to keep them
            // (a scale-down in the middle of a rise the forecast sees is the flap the
            // band exists to prevent), and only a rise past the band asks for more.
            let within_band =
                current > 0 && (demand / (current as f64 * per) - 1.0).abs() <= cap.tolerance;
            if forecast > value {
                let r = if within_band {
                    current
                } else {
                    (demand / per).ceil().min(u32::MAX as f64) as u32
                };
                if best.as_ref().is_none_or(|(b, _)| r > *b) {
                    best = Some((
                        r,
                        Reason::Forecast {
                            signal,
                            forecaster: source,
                            value: forecast,
                            horizon_s: ahead_ms as f64 / 1000.0,
                            replicas: r,
                        },
                    ));
                }
                o.votes = Some(source.to_string());
            }
        }
        outlooks.push(o);
    }
    (best, outlooks)
}

#[cfg(test)]
#[path = "predict_tests.rs"]
mod tests;
