//! The reconcile step's seasonal half: the profiles built from the history the shell
//! reads (`set_history`), and the seasonal forecasts each step hands the core.

use super::Reconciler;
use crate::core::predict::SeasonalReading;
use crate::core::seasonal::Profile;
use crate::policy::{Policy, SignalKind};

/// Seasonal forecasts are made again at least this often (and every fifth of a step).
const MAX_CACHE_MS: u64 = 15_000;

impl Reconciler {
    /// A demand signal's history for the seasonal forecast (`behavior.predict.seasonal`),
    /// as (ms, value) on the step's clock, or why the shell has none (a failed range
    /// query). Replaces what was there: the shell reads history again now and then.
    pub fn set_history(
        &mut self,
        policy: &Policy,
        kind: SignalKind,
        history: Result<&[(i64, f64)], String>,
    ) {
        let Some(params) = policy.behavior.predict.as_ref().and_then(|p| p.seasonal) else {
            return;
        };
        let floor = policy.capacity_of(kind).unwrap_or(1.0);
        let profile = history.and_then(|h| Profile::build(h, &params, floor));
        self.profiles.retain(|(k, _)| *k != kind);
        self.profiles.push((kind, profile));
        self.seasonal_cache = None;
    }

    /// The seasonal forecasts for this step, from the profiles.
    pub(super) fn seasonal(
        &mut self,
        policy: &Policy,
        now_ms: u64,
    ) -> Vec<(SignalKind, SeasonalReading)> {
        let Some(p) = policy.behavior.predict.as_ref() else {
            return Vec::new();
        };
        let Some(params) = p.seasonal else {
            return Vec::new();
        };
        let every = (params.step.as_millis() as u64 / 5).clamp(1, MAX_CACHE_MS);
        if let Some((at, cached)) = &self.seasonal_cache {
            if now_ms >= *at && now_ms - at < every {
                return cached.clone();
            }
        }
        let fresh = self.seasonal_at(p, &policy.capacity, now_ms, every);
        self.seasonal_cache = Some((now_ms, fresh.clone()));
        fresh
    }

    /// `reused_ms`: how long the forecasts will be reused; the look ahead reaches that far
    /// past the horizon, so that a reused forecast still covers its own horizon.
    fn seasonal_at(
        &self,
        p: &crate::policy::Predict,
        capacity: &crate::policy::Capacity,
        now_ms: u64,
        reused_ms: u64,
    ) -> Vec<(SignalKind, SeasonalReading)> {
        let now = now_ms as i64;
        capacity
            .per_replica
            .iter()
            .map(|(kind, _)| {
                let h = p.horizon_ms(*kind) as i64;
                let lead = p.seasonal.map_or(0, |s| s.lead.as_millis() as i64);
                let reading = match self.profiles.iter().find(|(k, _)| k == kind) {
                    None => SeasonalReading::Off {
                        why: "history not read yet".into(),
                    },
                    Some((_, Err(why))) => SeasonalReading::Off { why: why.clone() },
                    Some((_, Ok(profile))) => {
                        match (
                            profile.ahead(now, h + lead + reused_ms as i64),
                            profile.forecast(now + h),
                            profile.forecast(now),
                        ) {
                            (Some(ahead), Some(at_horizon), Some(now)) => {
                                SeasonalReading::Forecast {
                                    ahead,
                                    at_horizon,
                                    now,
                                    backtest: profile.backtest,
                                    periods: profile.periods,
                                }
                            }
                            _ => SeasonalReading::Off {
                                why: "the history holds nothing for this time".into(),
                            },
                        }
                    }
                };
                (*kind, reading)
            })
            .collect()
    }
}
