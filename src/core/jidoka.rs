//! Jidoka: stop the line by itself when something is abnormal. Readings are classified
//! (good, missing, stale, NaN/Inf, error); consecutive source failures stop the line; the
//! flap guard caps direction changes per window.

use super::observation::{Observations, Quality, Reading};
use super::reason::Reason;
use super::state::CoreState;
use super::tier::Qualities;
use crate::policy::{Jidoka, Policy};

/// Classifies each of the policy's signals at `now_ms`.
pub fn classify(policy: &Policy, obs: &Observations, now_ms: u64) -> Qualities {
    let stale_ms = policy.jidoka.stale_after.as_millis() as u64;
    let mut q: Qualities = [None; 7];
    for signal in &policy.signals {
        q[signal.kind.index()] = Some(quality(obs, obs.get(signal.kind), stale_ms, now_ms));
    }
    q
}

/// One reading's quality: the same rules for the signals and the fast panic signal.
pub fn quality(obs: &Observations, r: Option<&Reading>, stale_ms: u64, now_ms: u64) -> Quality {
    match (&obs.source_error, r) {
        (Some(_), _) => Quality::Error,
        (None, None) | (None, Some(Reading::Missing)) => Quality::Missing,
        (None, Some(Reading::Error { .. })) => Quality::Error,
        (None, Some(Reading::Ambiguous { series })) => Quality::Ambiguous { series: *series },
        (None, Some(Reading::Value { value, at_ms })) => {
            if !value.is_finite() {
                Quality::NotFinite
            } else if now_ms.saturating_sub(*at_ms) > stale_ms {
                Quality::Stale {
                    age_s: now_ms.saturating_sub(*at_ms) as f64 / 1000.0,
                }
            } else {
                Quality::Good { value: *value }
            }
        }
    }
}

/// Counts source failures: a tick fails when the source errored as a whole or no signal
/// has a good reading (all missing, stale, NaN or errored). Only good data resumes the
/// line. Returns true while the line is stopped.
pub fn track_failures(
    j: &Jidoka,
    state: &mut CoreState,
    obs: &Observations,
    q: &Qualities,
    reasons: &mut Vec<Reason>,
) -> bool {
    let any_good = q
        .iter()
        .flatten()
        .any(|x| matches!(x, Quality::Good { .. }));
    let failed = obs.source_error.is_some() || !any_good;
    if failed {
        state.failures = state.failures.saturating_add(1);
        if state.failures >= j.stop_after_failures {
            state.stopped = true;
            let error = obs.source_error.clone().unwrap_or_else(|| {
                obs.readings
                    .iter()
                    .find_map(|(_, r)| match r {
                        Reading::Error { message } => Some(message.clone()),
                        _ => None,
                    })
                    .unwrap_or_else(|| "no signal has good data".into())
            });
            reasons.push(Reason::Stopped {
                failures: state.failures,
                error,
            });
        }
    } else {
        if state.stopped {
            reasons.push(Reason::Resumed {
                after_failures: state.failures,
            });
        }
        state.failures = 0;
        state.stopped = false;
    }
    state.stopped
}

/// Would changing from `current` to `desired` exceed the flap guard? A reversal is a
/// change whose direction differs from the last change's.
pub fn flap_guard_blocks(
    j: &Jidoka,
    state: &CoreState,
    current: u32,
    desired: u32,
    now_ms: u64,
) -> Option<Reason> {
    let dir: i8 = if desired > current {
        1
    } else if desired < current {
        -1
    } else {
        return None;
    };
    if state.last_direction == 0 || state.last_direction == dir {
        return None;
    }
    let window = j.flap_guard.window.as_millis() as u64;
    let recent = state
        .reversals_ms
        .iter()
        .filter(|t| t.saturating_add(window) > now_ms)
        .count() as u32;
    (recent >= j.flap_guard.max_reversals).then_some(Reason::FlapGuard {
        reversals: recent,
        window_s: j.flap_guard.window.as_secs_f64(),
    })
}
