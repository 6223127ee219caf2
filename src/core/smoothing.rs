//! Heijunka: level the changes. Stabilisation windows with HPA's semantics, step limits
//! per period, and Knative's panic mode.

use super::reason::{Dir, Reason};
use super::state::{CoreState, Sample, ScaleEvent};
use crate::policy::{Behavior, Panic, StepLimit};
use std::time::Duration;

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// Pushes `value` into a monotonic deque kept for `window`. With `keep_min`, the front is
/// the window's minimum; otherwise its maximum. Amortised O(1) and at most one sample per
/// tick, so a 5-minute window at 1 s ticks costs a handful of entries, not 300.
pub fn push_window(
    deque: &mut Vec<Sample>,
    at_ms: u64,
    value: f64,
    window: Duration,
    keep_min: bool,
) {
    while let Some(last) = deque.last() {
        let dominated = if keep_min {
            last.value >= value
        } else {
            last.value <= value
        };
        if dominated {
            deque.pop();
        } else {
            break;
        }
    }
    deque.push(Sample { at_ms, value });
    // HPA keeps recommendations newer than now - window (a 0 s window keeps only now).
    let cutoff = at_ms.saturating_sub(ms(window));
    let stale = deque
        .iter()
        .take_while(|s| s.at_ms < cutoff || (window.is_zero() && s.at_ms < at_ms))
        .count();
    deque.drain(..stale);
}

/// HPA's `stabilizeRecommendationWithBehaviors`: scale up to the minimum recommendation of
/// the up window, down to the maximum of the down window.
pub fn stabilize(
    state: &mut CoreState,
    behavior: &Behavior,
    current: u32,
    recommended: u32,
    now_ms: u64,
    reasons: &mut Vec<Reason>,
) -> u32 {
    let r = recommended as f64;
    push_window(
        &mut state.up_window,
        now_ms,
        r,
        behavior.scale_up.stabilization,
        true,
    );
    push_window(
        &mut state.down_window,
        now_ms,
        r,
        behavior.scale_down.stabilization,
        false,
    );
    let up = state.up_window.first().map_or(r, |s| s.value) as u32;
    let down = state.down_window.first().map_or(r, |s| s.value) as u32;
    let mut out = current;
    if out < up {
        out = up;
    }
    if out > down {
        out = down;
    }
    if recommended > current && out < recommended {
        reasons.push(Reason::Stabilized {
            direction: Dir::Up,
            window_s: behavior.scale_up.stabilization.as_secs_f64(),
            recommended,
            stabilized: out,
        });
    } else if recommended < current && out > recommended {
        reasons.push(Reason::Stabilized {
            direction: Dir::Down,
            window_s: behavior.scale_down.stabilization.as_secs_f64(),
            recommended,
            stabilized: out,
        });
    }
    out
}

/// HPA's step policies with `selectPolicy: Max`: the most permissive of the replica and
/// percent limits, measured from the replicas at the start of the period.
pub fn limit_step(
    events: &[ScaleEvent],
    behavior: &Behavior,
    current: u32,
    desired: u32,
    now_ms: u64,
    reasons: &mut Vec<Reason>,
) -> u32 {
    if desired > current {
        let step = &behavior.scale_up.max_step;
        let start = period_start(events, step, current, now_ms, true);
        let mut limit = start;
        if let Some(n) = step.replicas {
            limit = limit.max(start.saturating_add(n));
        }
        if let Some(p) = step.percent {
            // A percentage of zero is zero: from 0, a percent-only policy may still add one.
            limit = limit.max((start.max(1) as f64 * (1.0 + p / 100.0)).ceil() as u32);
        }
        let limit = limit.max(current);
        if desired > limit {
            reasons.push(Reason::StepLimited {
                direction: Dir::Up,
                wanted: desired,
                limit,
                period_s: step.period.as_secs_f64(),
            });
            return limit;
        }
    } else if desired < current {
        let step = &behavior.scale_down.max_step;
        let start = period_start(events, step, current, now_ms, false);
        let mut limit = start;
        if let Some(n) = step.replicas {
            limit = limit.min(start.saturating_sub(n));
        }
        if let Some(p) = step.percent {
            limit = limit.min((start as f64 * (1.0 - p / 100.0)).max(0.0).ceil() as u32);
        }
        let limit = limit.min(current);
        if desired < limit {
            reasons.push(Reason::StepLimited {
                direction: Dir::Down,
                wanted: desired,
                limit,
                period_s: step.period.as_secs_f64(),
            });
            return limit;
        }
    }
    desired
}

/// Replicas at the start of the step period: current minus the changes in that direction
/// made within the period (HPA's `getReplicasChangePerPeriod`).
fn period_start(
    events: &[ScaleEvent],
    step: &StepLimit,
    current: u32,
    now_ms: u64,
    up: bool,
) -> u32 {
    let mut change: i64 = 0;
    for e in events
        .iter()
        .filter(|e| e.at_ms.saturating_add(ms(step.period)) > now_ms)
    {
        let d = e.to as i64 - e.from as i64;
        if up && d > 0 || !up && d < 0 {
            change += d;
        }
    }
    (current as i64 - change).clamp(0, u32::MAX as i64) as u32
}

/// Knative's panic mode. Returns the replicas panic demands, if panicking. The condition
/// is the demand/capacity ratio averaged over the panic window; panic lasts until the
/// stable window passes without it.
pub fn panic(
    state: &mut CoreState,
    panic: &Panic,
    ratio: Option<f64>,
    ready: u32,
    now_ms: u64,
    reasons: &mut Vec<Reason>,
) -> Option<PanicState> {
    if let Some(r) = ratio.filter(|r| r.is_finite()) {
        state.panic_samples.push(Sample {
            at_ms: now_ms,
            value: r,
        });
    }
    state
        .panic_samples
        .retain(|s| s.at_ms.saturating_add(ms(panic.window)) > now_ms || s.at_ms == now_ms);
    let n = state.panic_samples.len();
    let avg = (n > 0).then(|| state.panic_samples.iter().map(|s| s.value).sum::<f64>() / n as f64);
    if let Some(avg) = avg.filter(|a| *a >= panic.threshold) {
        state.last_panic_ms = Some(now_ms);
        // Enough ready replicas for the averaged demand at target.
        let want = (ready.max(1) as f64 * avg).ceil();
        let want = if want >= u32::MAX as f64 {
            u32::MAX
        } else {
            want as u32
        };
        reasons.push(Reason::Panic {
            ratio: avg,
            threshold: panic.threshold,
            replicas: want,
        });
        return Some(PanicState { want: Some(want) });
    }
    let last = state.last_panic_ms?;
    let since = now_ms.saturating_sub(last);
    if since < ms(panic.stable_window) {
        reasons.push(Reason::PanicHold {
            remaining_s: (ms(panic.stable_window) - since) as f64 / 1000.0,
        });
        return Some(PanicState { want: None });
    }
    state.last_panic_ms = None;
    None
}

/// In panic: replicas to jump to (when the condition holds now), and no scale-down.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PanicState {
    pub want: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::validate::{DEFAULT_SCALE_DOWN, DEFAULT_SCALE_UP};
    use crate::policy::Direction;

    fn behavior(up_window: u64, down_window: u64) -> Behavior {
        Behavior {
            scale_up: Direction {
                stabilization: Duration::from_secs(up_window),
                ..DEFAULT_SCALE_UP
            },
            scale_down: Direction {
                stabilization: Duration::from_secs(down_window),
                ..DEFAULT_SCALE_DOWN
            },
            panic: None,
        }
    }

    #[test]
    fn down_window_takes_the_max_of_recent_recommendations() {
        let b = behavior(0, 300);
        let mut s = CoreState::default();
        let mut r = vec![];
        assert_eq!(stabilize(&mut s, &b, 10, 10, 0, &mut r), 10);
        assert_eq!(
            stabilize(&mut s, &b, 10, 4, 100_000, &mut r),
            10,
            "held by the 10 recommended at t=0"
        );
        assert!(r.iter().any(|x| matches!(
            x,
            Reason::Stabilized {
                direction: Dir::Down,
                ..
            }
        )));
        assert_eq!(stabilize(&mut s, &b, 10, 6, 200_000, &mut r), 10);
        // At 300.001 s the 10 from t=0 left the window; the max is now 6.
        assert_eq!(stabilize(&mut s, &b, 10, 5, 300_001, &mut r), 6);
    }

    #[test]
    fn up_window_takes_the_min() {
        let b = behavior(60, 300);
        let mut s = CoreState::default();
        let mut r = vec![];
        assert_eq!(stabilize(&mut s, &b, 4, 4, 0, &mut r), 4);
        assert_eq!(stabilize(&mut s, &b, 4, 9, 10_000, &mut r), 4);
        assert_eq!(stabilize(&mut s, &b, 4, 8, 61_000, &mut r), 8);
    }

    #[test]
    fn zero_window_follows_the_recommendation() {
        let b = behavior(0, 0);
        let mut s = CoreState::default();
        let mut r = vec![];
        assert_eq!(stabilize(&mut s, &b, 4, 9, 0, &mut r), 9);
        assert_eq!(stabilize(&mut s, &b, 9, 2, 1000, &mut r), 2);
        assert!(s.up_window.len() <= 1 && s.down_window.len() <= 1);
    }

    #[test]
    fn step_limit_counts_changes_within_the_period() {
        let b = behavior(0, 0); // up: +4 or +100% per 15 s
        let mut r = vec![];
        // From 2: max(2 + 4, 2 × 200%) = 6.
        assert_eq!(limit_step(&[], &b, 2, 20, 0, &mut r), 6);
        // From 10: max(14, 20) = 20.
        assert_eq!(limit_step(&[], &b, 10, 30, 0, &mut r), 20);
        // 2 → 6 happened 5 s ago: the period started at 2, so 6 may go no further.
        let ev = [ScaleEvent {
            at_ms: 10_000,
            from: 2,
            to: 6,
        }];
        assert_eq!(limit_step(&ev, &b, 6, 20, 15_000, &mut r), 6);
        // After the period, 6 is the new start: max(10, 12) = 12.
        assert_eq!(limit_step(&ev, &b, 6, 20, 25_001, &mut r), 12);
        assert!(r.iter().any(|x| matches!(
            x,
            Reason::StepLimited {
                direction: Dir::Up,
                ..
            }
        )));
    }
}
