//! The long horizon: a demand signal's profile over earlier periods (days, or weeks),
//! read from Prometheus' history, so that a known daily peak is met before it starts.
//!
//! The forecast for a time is the median of the same time in the earlier periods
//! ("same time yesterday", made robust: one odd day among seven moves a median little).
//! Before it is used, the profile is tested on its own history: each of the last periods
//! (up to three) is forecast from the ones before it, and the error (absolute error over
//! demand) says whether the season holds. A day of zeros, a counter reset or a changed
//! pattern shows there, and the seasonal forecast stays off with that reason.
//!
//! Times are signed milliseconds on the caller's clock, so that the simulator can place
//! history before its virtual time 0.

use crate::policy::SeasonalParams;

/// The most earlier periods a backtest scores.
const BACKTEST_PERIODS: i64 = 3;

#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    start_ms: i64,
    step_ms: i64,
    period_ms: i64,
    /// On the grid from `start_ms`; NaN where history has no sample.
    values: Vec<f64>,
    /// Complete periods of history.
    pub periods: u32,
    /// The backtest's error over demand.
    pub backtest: f64,
}

impl Profile {
    /// A profile from a history series (time, value), or why there is none. `floor` is the
    /// least demand an error is measured against (one replica's capacity).
    pub fn build(points: &[(i64, f64)], p: &SeasonalParams, floor: f64) -> Result<Profile, String> {
        let step_ms = (p.step.as_millis() as i64).max(1);
        let period_ms = (p.period.as_millis() as i64).max(step_ms);
        let good: Vec<(i64, f64)> = points
            .iter()
            .copied()
            .filter(|(_, v)| v.is_finite() && *v >= 0.0)
            .collect();
        let (Some(first), Some(last)) = (
            good.iter().map(|x| x.0).min(),
            good.iter().map(|x| x.0).max(),
        ) else {
            return Err("no history: the range query returned no samples".into());
        };
        let n = ((last - first) / step_ms + 1) as usize;
        let mut values = vec![f64::NAN; n];
        for (t, v) in good {
            let i = ((t - first + step_ms / 2) / step_ms) as usize;
            if let Some(slot) = values.get_mut(i) {
                *slot = v;
            }
        }
        let span = (n as i64 - 1) * step_ms;
        let periods = (span / period_ms) as u32;
        if periods < p.min_periods {
            return Err(format!(
                "{:.1} periods of history, fewer than min_periods {}",
                span as f64 / period_ms as f64,
                p.min_periods
            ));
        }
        let mut profile = Profile {
            start_ms: first,
            step_ms,
            period_ms,
            values,
            periods,
            backtest: 0.0,
        };
        profile.backtest = profile.score_history(floor);
        Ok(profile)
    }

    fn end_ms(&self) -> i64 {
        self.start_ms + (self.values.len() as i64 - 1) * self.step_ms
    }

    /// History at a time, between grid points linearly; `None` outside it or in a gap.
    fn at(&self, t: i64) -> Option<f64> {
        if t < self.start_ms || t > self.end_ms() {
            return None;
        }
        let off = t - self.start_ms;
        let i = (off / self.step_ms) as usize;
        let frac = (off % self.step_ms) as f64 / self.step_ms as f64;
        let a = *self.values.get(i)?;
        let v = match self.values.get(i + 1) {
            Some(b) if frac > 0.0 => a + (b - a) * frac,
            _ => a,
        };
        v.is_finite().then_some(v)
    }

    /// The median of the same time in the earlier periods the history holds.
    pub fn forecast(&self, t: i64) -> Option<f64> {
        let mut same: Vec<f64> = (1..=self.periods as i64 + 1)
            .filter_map(|k| self.at(t - k * self.period_ms))
            .collect();
        if same.is_empty() {
            return None;
        }
        same.sort_by(f64::total_cmp);
        let m = same.len() / 2;
        Some(if same.len() % 2 == 1 {
            same[m]
        } else {
            (same[m - 1] + same[m]) / 2.0
        })
    }

    /// The most the forecast reaches from `now` to `now + horizon`: a peak that starts
    /// inside the horizon is met before it starts.
    pub fn ahead(&self, now: i64, horizon_ms: i64) -> Option<f64> {
        let probes = (horizon_ms / self.step_ms).clamp(1, 64) * 2;
        (0..=probes)
            .filter_map(|i| self.forecast(now + horizon_ms * i / probes))
            .reduce(f64::max)
    }

    /// Each of the last periods forecast from the ones before it: Σ|error| / Σ demand,
    /// demand at least `floor` per point.
    fn score_history(&self, floor: f64) -> f64 {
        let (mut err, mut demand) = (0.0, 0.0);
        // At least the last period, even with one period before it.
        let back = (self.periods as i64 - 1).clamp(1, BACKTEST_PERIODS);
        let from = self.end_ms() - back * self.period_ms;
        let mut t = from;
        while t <= self.end_ms() {
            if let (Some(actual), Some(f)) = (self.at(t), self.forecast(t)) {
                err += (f - actual).abs();
                demand += actual.max(floor);
            }
            t += self.step_ms;
        }
        if demand > 0.0 {
            err / demand
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const H: i64 = 3_600_000;
    const DAY: i64 = 24 * H;

    fn params() -> SeasonalParams {
        SeasonalParams {
            period: Duration::from_secs(86_400),
            history: Duration::from_secs(7 * 86_400),
            step: Duration::from_secs(300),
            min_periods: 2,
            lead: Duration::ZERO,
        }
    }

    /// A day: 100 at night, 1,000 from 09:00 to 17:00.
    fn day(t: i64) -> f64 {
        let h = t.rem_euclid(DAY) / H;
        if (9..17).contains(&h) {
            1000.0
        } else {
            100.0
        }
    }

    fn history(days: i64, f: impl Fn(i64) -> f64) -> Vec<(i64, f64)> {
        (0..days * DAY / 300_000)
            .map(|i| {
                let t = -days * DAY + i * 300_000;
                (t, f(t))
            })
            .collect()
    }

    #[test]
    fn a_daily_peak_is_seen_ahead() {
        let p = Profile::build(&history(7, day), &params(), 10.0).unwrap();
        assert_eq!(
            p.periods, 6,
            "7 days of 5 m points span 6 whole days and a bit"
        );
        assert!(p.backtest < 0.01, "{}", p.backtest);
        // 08:55 today: the peak starts at 09:00, within a 10-minute horizon.
        let now = 9 * H - 300_000;
        assert_eq!(p.forecast(now), Some(100.0));
        assert_eq!(p.ahead(now, 600_000), Some(1000.0));
        assert_eq!(p.ahead(now - H, 600_000), Some(100.0));
    }

    #[test]
    fn a_day_of_zeros_fails_the_backtest() {
        let broken = |t: i64| if (-DAY..0).contains(&t) { 0.0 } else { day(t) };
        let p = Profile::build(&history(7, broken), &params(), 10.0).unwrap();
        assert!(
            p.backtest > 0.25,
            "yesterday's zeros must show: {}",
            p.backtest
        );
        // The median still forecasts the usual day.
        assert_eq!(p.forecast(10 * H), Some(1000.0));
    }

    #[test]
    fn too_little_history_says_how_much() {
        let e = Profile::build(&history(1, day), &params(), 10.0).unwrap_err();
        assert!(e.contains("fewer than min_periods 2"), "{e}");
        let e = Profile::build(&[], &params(), 10.0).unwrap_err();
        assert!(e.contains("no samples"), "{e}");
    }

    #[test]
    fn gaps_and_bad_samples_are_skipped() {
        let mut h = history(7, day);
        for x in h.iter_mut().step_by(7) {
            x.1 = f64::NAN;
        }
        h.push((-1, -5.0));
        let p = Profile::build(&h, &params(), 10.0).unwrap();
        assert!(p.forecast(10 * H).is_some());
    }
}
