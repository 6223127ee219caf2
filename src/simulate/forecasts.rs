//! The simulator's side of prediction: the scenario's history as the modelled
//! Prometheus answers it, and the timeline's word when a forecaster changes state.

use crate::core::Decision;
use crate::policy::Policy;
use crate::reconcile::Reconciler;
use crate::scenario::Scenario;
use std::time::Duration;

/// The scenario's history per demand signal, as the modelled Prometheus would answer a
/// range query for it; why there is none when the policy wants it and the scenario has
/// no `history:`.
pub(super) type HistorySeries = Vec<(crate::policy::SignalKind, Result<Vec<(i64, f64)>, String>)>;

pub(super) fn history_series(scenario: &Scenario, policy: &Policy) -> HistorySeries {
    let Some(params) = policy.behavior.predict.as_ref().and_then(|p| p.seasonal) else {
        return Vec::new();
    };
    policy
        .capacity
        .per_replica
        .iter()
        .map(|(kind, _)| {
            let series = match &scenario.history {
                Some(h) => Ok(h.series(scenario, policy, *kind, params.step, params.history)),
                None => Err("the scenario has no `history:`".to_string()),
            };
            (*kind, series)
        })
        .collect()
}

pub(super) fn load_history(controller: &mut Reconciler, policy: &Policy, history: &HistorySeries) {
    for (kind, series) in history {
        let h = series.as_ref().map(|v| v.as_slice()).map_err(|e| e.clone());
        controller.set_history(policy, *kind, h);
    }
}

/// Whether each forecaster is in use, ignored or off, as last said on the timeline: a
/// change is an event ("trusted again" is news as much as "ignored").
#[derive(Default)]
pub(super) struct ForecasterStates(std::collections::BTreeMap<String, String>);

impl ForecasterStates {
    pub(super) fn changes(&mut self, d: &Decision) -> Vec<String> {
        use crate::core::Reason;
        let mut out = Vec::new();
        for o in &d.forecasts {
            for crate::core::predict::Said {
                forecaster: name,
                value,
                ..
            } in o.said()
            {
                let ignored = d.reasons.iter().find_map(|r| match r {
                    Reason::ForecastIgnored {
                        signal,
                        forecaster,
                        why,
                    } if *signal == o.signal && *forecaster == name => Some(why.clone()),
                    _ => None,
                });
                let off = o
                    .notes
                    .iter()
                    .find_map(|n| n.strip_prefix(&format!("{name}: off: ")));
                let state = match (ignored, off, value) {
                    (Some(why), _, _) => format!("ignored: {why}"),
                    (_, Some(why), _) => format!("off: {why}"),
                    (_, _, Some(_)) => "in use".to_string(),
                    _ => continue,
                };
                let key = format!("{name} forecast of {}", o.signal);
                let before = self.0.insert(key.clone(), state.clone());
                // In use from the start is the normal case, not news.
                let news = match &before {
                    None => state != "in use",
                    Some(b) => *b != state,
                };
                if news {
                    out.push(format!("{key}: {state}"));
                }
            }
        }
        out
    }
}

/// Checks a scenario's `history:` against the policy that will read it: the days must
/// be the policy's seasonal period, or the profile would fold the wrong length.
pub fn check_history(scenario: &Scenario, policy: &Policy) -> crate::Result<()> {
    let (Some(h), Some(s)) = (
        &scenario.history,
        policy.behavior.predict.as_ref().and_then(|p| p.seasonal),
    ) else {
        return Ok(());
    };
    if h.period != s.period {
        let f = |d: Duration| humantime::format_duration(d).to_string();
        return Err(crate::Error::Config(format!(
            "{}: history.period {} differs from {}'s behavior.predict.seasonal.period {}; allowed: the same period",
            scenario.source,
            f(h.period),
            policy.source,
            f(s.period)
        )));
    }
    Ok(())
}
