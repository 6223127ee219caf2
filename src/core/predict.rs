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

use super::forecaster::MIN_SAMPLES;
pub use super::forecaster::{Score, SessionsForecast, SignalForecast, Trial};
use super::observation::{Quality, Reading};
use super::reason::Reason;
use super::tier::Qualities;
use crate::policy::{Policy, Predict, SignalKind};
use serde::{Deserialize, Serialize};

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

/// What the forecasts ask for this tick.
#[derive(Debug, Default)]
pub struct Votes {
    /// The most replicas a forecast asks for past the reading, with its reason.
    pub best: Option<(u32, Reason)>,
    /// The same without the sessions forecaster: what the scale-down window would hold
    /// had it never voted (see `refuted`).
    pub without_sessions: Option<u32>,
    /// The sessions forecaster's premise failed this tick: the share per session its
    /// forecasts used was not what the same connections sent once counted. Its votes
    /// are withdrawn from the scale-down window.
    pub refuted: bool,
}

/// The proactive recommendation: replicas for the forecast demand, when it asks for more
/// than `current` past the tolerance band, with its reason (the caller adds the reason
/// when the forecast decides). Updates the forecasters on new readings. `ready` and
/// `calm` (the tier is green) say whether a share measured now can refute a forecast.
#[allow(clippy::too_many_arguments)]
pub fn recommend(
    policy: &Policy,
    predict: &Predict,
    state: &mut Vec<SignalForecast>,
    readings: (&Qualities, &[(SignalKind, Reading)]),
    seasonal: &[(SignalKind, SeasonalReading)],
    (current, ready, calm): (u32, u32, bool),
    headroom: f64,
    now_ms: u64,
    reasons: &mut Vec<Reason>,
) -> (Votes, Vec<Outlook>) {
    let (q, raw) = readings;
    let cap = &policy.capacity;
    let mut votes = Votes::default();
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
        let followed = sessions_now.map_or_else(Default::default, |c| {
            let settle = (now_ms, at_ms, predict.persist_ms(signal));
            f.sessions.follow(c, value, settle, predict.max_error)
        });
        // A share measured while the ready replicas ran at or past their target, or while
        // the tier was past green, may be what the service could serve, not what the
        // clients want (closed-loop clients slow down with it; sessions stuck on the
        // replicas that were ready saturate them with room elsewhere, which the p95 and
        // the tier see): no evidence against the forecast then.
        let had_room = calm && value < ready as f64 * per_replica * cap.target_utilization;
        if let Some((used, measured)) = followed.refuted.filter(|_| had_room) {
            reasons.push(Reason::ForecastRefuted {
                signal,
                used,
                measured,
            });
            votes.refuted = true;
        }
        let sessions_forecast = followed.forecast;
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
        // Target tracking on the forecast, with the same tolerance band as on the
        // reading: a forecast the current replicas already serve asks to keep them (a
        // scale-down in the middle of a rise the forecast sees is the flap the band
        // exists to prevent), and only a rise past the band asks for more.
        let replicas_for = |forecast: f64| {
            let per = per_replica * cap.target_utilization;
            let demand = forecast * (1.0 + headroom);
            let within_band =
                current > 0 && (demand / (current as f64 * per) - 1.0).abs() <= cap.tolerance;
            if within_band {
                current
            } else {
                (demand / per).ceil().min(u32::MAX as f64) as u32
            }
        };
        // The highest forecast above the reading, leaving out one forecaster's.
        let top = |skip: Option<&str>| {
            candidates
                .iter()
                .copied()
                .filter(|(source, forecast, _)| Some(*source) != skip && *forecast > value)
                .max_by(|a, b| a.1.total_cmp(&b.1))
        };
        if let Some((_, forecast, _)) = top(Some("sessions")) {
            let r = replicas_for(forecast);
            votes.without_sessions = Some(votes.without_sessions.map_or(r, |b| b.max(r)));
        }
        if let Some((source, forecast, ahead_ms)) = top(None) {
            let r = replicas_for(forecast);
            if votes.best.as_ref().is_none_or(|(b, _)| r > *b) {
                votes.best = Some((
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
        outlooks.push(o);
    }
    (votes, outlooks)
}

#[cfg(test)]
#[path = "predict_tests.rs"]
mod tests;
