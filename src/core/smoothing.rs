//! Heijunka: level the changes. Stabilisation windows with HPA's semantics, step limits
//! per period, and Knative's panic mode.

use super::reason::{Dir, Reason};
use super::state::{CoreState, Sample, ScaleEvent};
use crate::policy::{Behavior, Panic, SelectPolicy, StepKind};
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

/// HPA's scaling policies (`calculateScaleUpLimitWithScalingRules`,
/// `calculateScaleDownLimitWithBehaviors`): each policy proposes a limit from the replicas
/// at the start of *its* period (current − added + removed within it); `select` takes the
/// most permissive (max), the least (min), or none (disabled). Percent rounds up for a
/// scale-up and truncates for a scale-down, as HPA does. One deliberate difference: from 0
/// replicas a percent policy still allows one (HPA never scales from 0).
pub fn limit_step(
    events: &[ScaleEvent],
    behavior: &Behavior,
    current: u32,
    desired: u32,
    now_ms: u64,
    reasons: &mut Vec<Reason>,
) -> u32 {
    let up = desired > current;
    if desired == current {
        return desired;
    }
    let dir = if up {
        &behavior.scale_up
    } else {
        &behavior.scale_down
    };
    let mut chosen: Option<(i64, Duration)> = None;
    if dir.select != SelectPolicy::Disabled {
        for p in &dir.policies {
            let start = period_start(events, p.period, current, now_ms);
            let proposed = match (p.kind, up) {
                (StepKind::Replicas(n), true) => start + n as i64,
                (StepKind::Replicas(n), false) => start - n as i64,
                (StepKind::Percent(pct), true) => {
                    (start.max(1) as f64 * (1.0 + pct / 100.0)).ceil() as i64
                }
                (StepKind::Percent(pct), false) => (start as f64 * (1.0 - pct / 100.0)) as i64,
            };
            // For a scale-up, max selects the largest limit; for a scale-down, the smallest.
            let more_permissive = |a: i64, b: i64| if up { a > b } else { a < b };
            let better = match (chosen, dir.select) {
                (None, _) => true,
                (Some((c, _)), SelectPolicy::Max) => more_permissive(proposed, c),
                (Some((c, _)), _) => more_permissive(c, proposed),
            };
            if better {
                chosen = Some((proposed, p.period));
            }
        }
    }
    let (limit, period) = chosen.unwrap_or((current as i64, Duration::ZERO));
    // Never past the current replicas the other way (HPA clamps the same).
    let limit = if up {
        limit.max(current as i64)
    } else {
        limit.min(current as i64)
    }
    .clamp(0, u32::MAX as i64) as u32;
    let capped = if up { desired > limit } else { desired < limit };
    if !capped {
        return desired;
    }
    reasons.push(Reason::StepLimited {
        direction: if up { Dir::Up } else { Dir::Down },
        wanted: desired,
        limit,
        period_s: period.as_secs_f64(),
    });
    limit
}

/// Replicas at the start of a period: current minus the replicas added plus those removed
/// within it (HPA's `getReplicasChangePerPeriod` over both directions).
fn period_start(events: &[ScaleEvent], period: Duration, current: u32, now_ms: u64) -> i64 {
    let change: i64 = events
        .iter()
        .filter(|e| e.at_ms.saturating_add(ms(period)) > now_ms)
        .map(|e| e.to as i64 - e.from as i64)
        .sum();
    (current as i64 - change).max(0)
}

/// Knative's panic mode. Returns the replicas panic demands, if panicking. The condition:
/// the demand (in replicas at target) averaged over the panic window by time (see
/// [`window_average`]), over the replicas ready now, at or past the threshold; panic lasts
/// until the stable window passes without it.
pub fn panic(
    state: &mut CoreState,
    panic: &Panic,
    demand: PanicDemand,
    ready: u32,
    now_ms: u64,
    reasons: &mut Vec<Reason>,
) -> Option<PanicState> {
    let PanicDemand {
        ratio,
        driven_by,
        needed,
    } = demand;
    // Samples are demand in replicas (the ratio times the ready replicas of their tick), so
    // a window that straddles a scale-up is not multiplied by the new replicas again.
    let ready = ready.max(1) as f64;
    if let Some(r) = ratio.filter(|r| r.is_finite()) {
        let sample = Sample {
            at_ms: now_ms,
            value: r * ready,
        };
        match state.panic_samples.last_mut() {
            Some(last) if last.at_ms == now_ms => *last = sample,
            _ => state.panic_samples.push(sample),
        }
    }
    // Keep the window's readings and the last one before it (where the oldest in the
    // window starts is where that one ended); none from the future (a clock set back, or
    // a label from a controller whose clock was ahead).
    let window = ms(panic.window);
    let samples = &mut state.panic_samples;
    samples.retain(|s| s.at_ms <= now_ms);
    samples.sort_by_key(|s| s.at_ms);
    let inside = samples.partition_point(|s| s.at_ms.saturating_add(window) <= now_ms);
    samples.drain(..inside.saturating_sub(1));
    // A tick with no reading (bad data) averages what the window still holds; a window
    // with no reading in it has no average, and panic is not decided on it.
    let avg = window_average(samples, now_ms, window).map(|replicas| replicas / ready);
    if let Some(avg) = avg.filter(|a| *a >= panic.threshold) {
        state.last_panic_ms = Some(now_ms);
        // Enough ready replicas for the averaged demand at target, or what this tick's
        // readings and forecasts need if more: a step limit is for ordinary rises, and
        // panic is the case it was not made for, so it no longer caps the jump.
        let want = (ready * avg).ceil();
        let want = if want >= u32::MAX as f64 {
            u32::MAX
        } else {
            want as u32
        };
        let want = want.max(needed.unwrap_or(0));
        reasons.retain(|r| {
            !matches!(r, Reason::StepLimited { direction: Dir::Up, wanted, .. } if *wanted <= want)
        });
        reasons.push(Reason::Panic {
            ratio: avg,
            threshold: panic.threshold,
            replicas: want,
            driven_by,
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

/// The average over the window `(now - window, now]` of readings (oldest first) that each
/// stand for the time since the one before: a tick's reading is what it saw since the last
/// tick. The very first reading, with none before it, stands for as long as the gap to the
/// next. Knative averages per-second buckets over its 6 s window; a plain mean of ticks
/// 5 s apart weighed the reading before the window's last second as much as the one after
/// it, which made the 6 s window a 10 s one. Samples oldest first. No reading in the
/// window: None (never a reading from before it); readings of no width: the latest.
pub fn window_average(samples: &[Sample], now_ms: u64, window_ms: u64) -> Option<f64> {
    // Signed, so that a window reaching back past the epoch is not cut short.
    let (now, start) = (now_ms as i128, now_ms as i128 - window_ms as i128);
    let (mut sum, mut weight, mut latest) = (0.0, 0.0, None);
    for (i, s) in samples.iter().enumerate() {
        let at = s.at_ms as i128;
        if at <= start || at > now {
            continue;
        }
        let from = match (i.checked_sub(1), samples.get(i + 1)) {
            (Some(p), _) => samples[p].at_ms as i128,
            (None, Some(next)) => 2 * at - next.at_ms as i128,
            (None, None) => at,
        };
        let w = (at - from.max(start)).max(0) as f64;
        sum += s.value * w;
        weight += w;
        latest = Some(s.value);
    }
    if weight > 0.0 {
        Some(sum / weight)
    } else {
        latest
    }
}

/// This tick's demand, as panic reads it.
#[derive(Debug, Clone, Copy)]
pub struct PanicDemand {
    /// Demand over the ready replicas' capacity at target (the fast signal and the
    /// sessions forecast weighed in).
    pub ratio: Option<f64>,
    /// What lifted the ratio above the reading's, for the reason.
    pub driven_by: Option<&'static str>,
    /// The replicas this tick's readings and forecasts ask for, before windows and limits.
    pub needed: Option<u32>,
}

/// In panic: replicas to jump to (when the condition holds now), and no scale-down.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PanicState {
    pub want: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::validate::{default_scale_down, default_scale_up, DEFAULT_UPDATE_HOLD};
    use crate::policy::{Direction, StepPolicy};

    fn behavior(up_window: u64, down_window: u64) -> Behavior {
        Behavior {
            scale_up: Direction {
                stabilization: Duration::from_secs(up_window),
                ..default_scale_up()
            },
            scale_down: Direction {
                stabilization: Duration::from_secs(down_window),
                ..default_scale_down()
            },
            panic: None,
            update_hold: DEFAULT_UPDATE_HOLD,
            predict: None,
        }
    }

    fn policy(kind: StepKind, period_s: u64) -> StepPolicy {
        StepPolicy {
            kind,
            period: Duration::from_secs(period_s),
        }
    }

    /// Each reading stands for the time since the one before, so with ticks 5 s apart a
    /// 6 s window is 5 s of the latest and 1 s of the one before (the plain mean made it
    /// half and half, a 10 s window).
    #[test]
    fn the_window_average_weighs_readings_by_the_time_they_stand_for() {
        let s = |at_ms, value| Sample { at_ms, value };
        let ticks = [s(185_000, 0.24), s(190_000, 0.24), s(195_000, 2.4)];
        let avg = window_average(&ticks, 195_000, 6_000);
        assert!((avg.unwrap() - (0.24 + 5.0 * 2.4) / 6.0).abs() < 1e-9);
        // The first reading ever stands for a tick, like the others.
        let avg = window_average(&ticks[1..], 195_000, 6_000);
        assert!((avg.unwrap() - (0.24 + 5.0 * 2.4) / 6.0).abs() < 1e-9);
        let avg = window_average(&[s(4_000, 5.0), s(5_000, 0.05)], 5_000, 6_000);
        assert!((avg.unwrap() - 2.525).abs() < 1e-9);
        // One reading: itself, whatever the window.
        assert_eq!(window_average(&[s(10, 3.0)], 10, 6_000), Some(3.0));
        // Readings 1 s apart over a 3 s window: the plain mean of the last three.
        let per_second: Vec<_> = (1..=5).map(|i| s(i * 1000, i as f64)).collect();
        assert_eq!(window_average(&per_second, 5000, 3000), Some(4.0));
        // Nothing in the window is nothing, never a reading from before it.
        assert_eq!(window_average(&[s(95_000, 3.0)], 110_000, 6_000), None);
        assert_eq!(window_average(&[], 9, 6000), None);
        // A window reaching back past the epoch: the first reading still counts.
        let avg = window_average(&[s(0, 10.0), s(5_000, 0.0)], 5_000, 6_000).unwrap();
        assert!((avg - 10.0 / 6.0).abs() < 1e-9, "{avg}");
    }

    /// Before: the period start counted only changes in the same direction, percent
    /// scale-downs rounded up, and every policy shared one period; HPA does none of these.
    #[test]
    fn step_limits_follow_hpa() {
        let mut b = behavior(0, 0);
        let mut r = vec![];
        // Scale-down 25% of 15 truncates: 15 × 0.75 = 11.25 → 11 (rounding up gave 12).
        b.scale_down.policies = vec![policy(StepKind::Percent(25.0), 60)];
        assert_eq!(limit_step(&[], &b, 15, 1, 0, &mut r), 11);
        // A scale-up 10 s ago (10 → 15) counts in the scale-down's period start: 15 − 5 = 10,
        // so 25% of 10 → 7 (counting only scale-downs gave 11).
        let ev = [ScaleEvent {
            at_ms: 0,
            from: 10,
            to: 15,
        }];
        assert_eq!(limit_step(&ev, &b, 15, 1, 10_000, &mut r), 7);
        // Each policy has its own period: +2 per 10 s and +50% per 60 s, select max.
        b.scale_up.policies = vec![
            policy(StepKind::Replicas(2), 10),
            policy(StepKind::Percent(50.0), 60),
        ];
        let ev = [ScaleEvent {
            at_ms: 0,
            from: 10,
            to: 12,
        }];
        // 20 s on: the 2-per-10 s period starts at 12 (→ 14); the 60 s one at 10 (→ 15).
        assert_eq!(limit_step(&ev, &b, 12, 30, 20_000, &mut r), 15);
        // select min: the smaller of 14 and 15.
        b.scale_up.select = SelectPolicy::Min;
        assert_eq!(limit_step(&ev, &b, 12, 30, 20_000, &mut r), 14);
        // disabled: no change in that direction at all.
        b.scale_up.select = SelectPolicy::Disabled;
        assert_eq!(limit_step(&ev, &b, 12, 30, 20_000, &mut r), 12);
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
