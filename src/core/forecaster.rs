//! The forecasters' state and record, one per demand signal (what [`super::predict`]
//! keeps between ticks): Holt's trend, the sessions forecaster's share per session, and
//! each forecaster's score. How they vote is `predict::recommend`'s business.

use crate::policy::SignalKind;
use serde::{Deserialize, Serialize};

/// How much each scored forecast weighs in the error (about the last ten).
const SCORE_WEIGHT: f64 = 0.2;
/// Forecasts scored before the error may rule a forecaster out.
const MIN_SCORED: u32 = 2;
/// Readings before the trend forecasts.
pub(super) const MIN_SAMPLES: u32 = 3;
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
    pub(super) fn expect(&mut self, due_ms: u64, value: f64, horizon_ms: u64) {
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
    pub(super) fn settle(&mut self, at_ms: u64, actual: f64, floor: f64) {
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
    /// The share the forecasts used since the connections moved, until they hold long
    /// enough for their own share to be measured and compared with it.
    pub trial: Option<Trial>,
    pub score: Score,
}

/// A share on trial: the one the forecasts used since the connections first moved, and
/// the most connections they were made for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    pub share: f64,
    pub peak: f64,
}

/// What the sessions forecaster makes of this tick's connections.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Followed {
    /// The throughput the connections now bring, at the share per session last measured.
    pub forecast: Option<f64>,
    /// The share its forecasts used, and the one the same connections showed once their
    /// rate could count them, when that is lower by more than `max_error`: the premise
    /// of every forecast since they moved was wrong (new clients that send little).
    pub refuted: Option<(f64, f64)>,
}

impl SessionsForecast {
    /// Follows the connections (`c`): while they hold within [`SESSIONS_BAND`] for a
    /// whole `settle_ms` (the throughput's rate window and a scrape) up to the throughput
    /// reading's own date `reading_ms`, the reading is theirs, and its share per session
    /// is kept; when they move, the share measured before stands until they hold again.
    /// The forecast: the reading itself while they hold (so it never votes then, not
    /// even by a rounding), the share measured before times `c` once they moved. The
    /// first share measured after a move tries the one the forecasts used meanwhile (see
    /// [`Followed::refuted`]), if the clients they were made for are still there.
    ///
    /// Dated by the reading, not the clock: a scrape that stopped coming (Prometheus
    /// stale, a missed rule) is a rate window that counted only part of the new clients,
    /// and a review's busy step read 7/s each where they sent 20, refuted the right
    /// forecast and scaled 20 -> 15 -> 20.
    pub(super) fn follow(
        &mut self,
        c: f64,
        throughput: f64,
        (now_ms, reading_ms, settle_ms): (u64, u64, u64),
        max_error: f64,
    ) -> Followed {
        let held = (c - self.held).abs() <= SESSIONS_BAND * self.held.max(1.0);
        match self.since_ms {
            Some(since) if held => {
                if reading_ms.saturating_sub(since) >= settle_ms && c >= 1.0 {
                    let share = throughput.max(0.0) / c;
                    self.per_session = Some(share);
                    // Only the clients the forecasts counted can refute them: after a
                    // burst that left, those who stayed (a review's 50 light clients
                    // after 200 heavy ones) say nothing about the burst's share.
                    let refuted = self
                        .trial
                        .take()
                        .filter(|t| c >= t.peak * (1.0 - SESSIONS_BAND))
                        .filter(|t| share < t.share * (1.0 - max_error))
                        .map(|t| (t.share, share));
                    return Followed {
                        forecast: Some(throughput.max(0.0)),
                        refuted,
                    };
                }
            }
            _ => {
                (self.held, self.since_ms) = (c, Some(now_ms));
                // A ramp moves them several times: the trial is of the share its first
                // move's forecasts used, for the most connections they reached.
                self.trial = match (self.trial, self.per_session) {
                    (Some(t), _) => Some(Trial {
                        peak: t.peak.max(c),
                        ..t
                    }),
                    (None, Some(share)) => Some(Trial { share, peak: c }),
                    (None, None) => None,
                };
            }
        }
        Followed {
            forecast: self.per_session.map(|s| s * c),
            refuted: None,
        }
    }

    /// After a gap in the connections (missing, or a restart of the trend for a gap),
    /// they must hold again before their share is measured, and forecasts made before
    /// the gap are not scored against what came after it.
    pub(super) fn gap(&mut self) {
        self.since_ms = None;
        self.trial = None;
        self.score.pending.clear();
    }
}

impl SignalForecast {
    /// Holt's update on a new reading, after scoring what was due. A reading after a gap
    /// longer than `max_gap_ms` (a restart, an outage) starts the trend over: the old slope
    /// says nothing about the time not seen.
    pub(super) fn observe(
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
    pub(super) fn restart(&mut self, at_ms: u64) {
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
    pub(super) fn trend_at(&self, at_ms: u64) -> f64 {
        let dt = at_ms.saturating_sub(self.at_ms) as f64 / 1000.0;
        (self.level + self.slope * dt).max(0.0)
    }
}
