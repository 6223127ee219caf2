//! Unit tests, one or more per rule, and property tests for the invariants.

use super::*;
use crate::policy::{validate, Policy, SignalKind::*, StepKind, StepPolicy};
use proptest::prelude::*;
use std::time::Duration;

const POLICY: &str = r#"
services: [{name: svc, min_replicas: 2, max_replicas: 20}]
signals:
  p95_latency: {query: 'p95{service="$service"}', unit: seconds}
  error_rate: {query: 'err{service="$service"}', unit: ratio}
  connections: {query: 'conns{service="$service"}', unit: count}
capacity: {per_replica: {connections: 10}, target_utilization: 1.0, tolerance: 0.1}
tiers:
  yellow: {enter: {p95_latency: 150ms}, for: 30s, cooldown: 60s}
  red: {enter: {p95_latency: 250ms}, for: 10s, cooldown: 60s, action: {floor: 1.5x}}
  emergency: {enter: {p95_latency: 500ms}, for: 0s, cooldown: 60s, action: {floor: max, shed: {admit: 0.8}}}
behavior:
  scale_up: {stabilization: 0s, max_step: {replicas: 4, percent: 100, period: 15s}}
  scale_down: {stabilization: 5m, max_step: {replicas: 2, period: 1m}}
  panic: {window: 6s, threshold: 2.0, stable_window: 60s}
jidoka:
  stale_after: 30s
  stop_after_failures: 3
  flap_guard: {max_reversals: 2, window: 10m}
"#;

fn policy() -> Policy {
    validate::from_str("test.yaml", POLICY).expect("test policy is valid")
}

/// The test policy with a second demand signal, throughput (100/s per replica).
fn policy_two_demands() -> Policy {
    let text = POLICY
        .replace(
            "  connections: {query: 'conns{service=\"$service\"}', unit: count}",
            "  connections: {query: 'conns{service=\"$service\"}', unit: count}\n  throughput: {query: 'rps{service=\"$service\"}', unit: per_second}",
        )
        .replace("per_replica: {connections: 10}", "per_replica: {connections: 10, throughput: 100}");
    let mut p = validate::from_str("two.yaml", &text).expect("valid");
    p.behavior.panic = None;
    assert!(p.capacity.per_replica.len() == 2);
    p
}

fn policy_without_panic() -> Policy {
    let mut p = policy();
    p.behavior.panic = None;
    p
}

const S: u64 = 1000;

/// Drives the core like a controller: each tick the replicas become what it decided.
struct Run {
    policy: Policy,
    state: CoreState,
    replicas: u32,
    now: u64,
}

impl Run {
    fn new(policy: Policy, replicas: u32) -> Self {
        Run {
            policy,
            state: CoreState::default(),
            replicas,
            // Start well after the epoch, so that "120 s ago" exists.
            now: 1000 * S,
        }
    }
    fn tick(&mut self, obs: &Observations) -> Decision {
        let svc = self.policy.services[0].clone();
        let d = decide_in_place(
            &self.policy,
            &svc,
            obs,
            Replicas::steady(self.replicas),
            &mut self.state,
            self.now,
        );
        self.replicas = d.desired;
        self.now += S;
        d
    }
    fn good(&self, p95_s: f64, conns: f64) -> Observations {
        Observations::values(
            self.now,
            &[(P95Latency, p95_s), (ErrorRate, 0.0), (Connections, conns)],
        )
    }
    fn ticks(&mut self, n: usize, p95_s: f64, conns: f64) -> Decision {
        let mut last = None;
        for _ in 0..n {
            let o = self.good(p95_s, conns);
            last = Some(self.tick(&o));
        }
        last.expect("n > 0")
    }
}

fn has(d: &Decision, code: &str) -> bool {
    d.reasons.iter().any(|r| r.code() == code)
}

#[test]
fn tier_enters_only_after_for() {
    let mut r = Run::new(policy(), 4);
    let d = r.ticks(30, 0.2, 40.0); // t = 0..29 s above yellow
    assert_eq!(d.tier, Tier::Green);
    assert!(has(&d, "tier_pending"), "{}", d.summary());
    let d = r.ticks(1, 0.2, 40.0); // t = 30 s
    assert_eq!(d.tier, Tier::Yellow, "{}", d.summary());
    assert!(has(&d, "tier_entered"));
}

#[test]
fn a_dip_below_the_threshold_restarts_the_for_timer() {
    let mut r = Run::new(policy(), 4);
    r.ticks(20, 0.2, 40.0);
    r.ticks(1, 0.1, 40.0);
    let d = r.ticks(20, 0.2, 40.0);
    assert_eq!(d.tier, Tier::Green, "pending restarted at the dip");
}

#[test]
fn leaving_a_tier_needs_exit_level_for_the_cooldown() {
    let mut r = Run::new(policy(), 4);
    assert_eq!(r.ticks(31, 0.2, 40.0).tier, Tier::Yellow);
    // 130 ms: below entry (150) but above the exit level (0.8 × 150 = 120): held.
    let d = r.ticks(200, 0.13, 40.0);
    assert_eq!(d.tier, Tier::Yellow, "hysteresis holds the tier");
    assert!(has(&d, "tier_held"));
    // Below exit: the cool-down of 60 s runs, then the tier is left.
    assert_eq!(r.ticks(60, 0.1, 40.0).tier, Tier::Yellow);
    let d = r.ticks(1, 0.1, 40.0);
    assert_eq!(d.tier, Tier::Green, "{}", d.summary());
    assert!(has(&d, "tier_left"));
}

#[test]
fn bad_data_never_relaxes_a_tier() {
    let mut r = Run::new(policy(), 4);
    assert_eq!(r.ticks(31, 0.2, 40.0).tier, Tier::Yellow);
    for _ in 0..300 {
        let obs = Observations::values(r.now, &[(ErrorRate, 0.0), (Connections, 40.0)]);
        let d = r.tick(&obs);
        assert_eq!(d.tier, Tier::Yellow, "{}", d.summary());
    }
}

#[test]
fn highest_tier_wins_and_emergency_goes_to_max() {
    let mut r = Run::new(policy(), 4);
    let d = r.ticks(1, 0.9, 40.0); // emergency has for: 0s
    assert_eq!(d.tier, Tier::Emergency);
    assert_eq!(
        d.desired,
        20,
        "floor: max, past the step limit: {}",
        d.summary()
    );
    assert_eq!(d.shed_admit, Some(0.8));
    assert!(has(&d, "tier_floor"));
}

#[test]
fn red_floor_is_relative_to_the_entry_replicas_and_does_not_compound() {
    let mut r = Run::new(policy_without_panic(), 8);
    // 300 ms: yellow pending (30 s), red pending (10 s); 80 connections keep capacity at 8.
    let d = r.ticks(11, 0.3, 80.0);
    assert_eq!(d.tier, Tier::Red);
    assert_eq!(d.desired, 12, "1.5 × 8: {}", d.summary());
    let d = r.ticks(60, 0.3, 80.0);
    assert_eq!(
        d.desired,
        12,
        "does not grow by 1.5× per tick: {}",
        d.summary()
    );
}

#[test]
fn a_tier_floor_is_levelled_down_by_the_scale_down_window() {
    let mut r = Run::new(policy_without_panic(), 8);
    assert_eq!(r.ticks(11, 0.3, 80.0).desired, 12, "red: 1.5 × 8");
    // Calm: red and yellow cool down in 60 s; the floor's 12 stays in the window 5 min.
    let d = r.ticks(200, 0.05, 80.0);
    assert_eq!(d.tier, Tier::Green, "{}", d.summary());
    assert_eq!(
        d.desired,
        12,
        "not dropped when the tier ended: {}",
        d.summary()
    );
    assert!(has(&d, "stabilized"));
    let d = r.ticks(200, 0.05, 80.0);
    assert!(d.desired < 12, "{}", d.summary());
}

/// The window's wait and the tier's cool-down run together: a floor stops entering the
/// window when its tier starts cooling down. Before, a floor held for the cool-down and
/// then for a whole window after it (overload: 1.12× HPA's replica-seconds).
#[test]
fn a_cooling_tier_floor_does_not_extend_the_window() {
    let mut r = Run::new(policy_without_panic(), 8);
    assert_eq!(r.ticks(100, 0.3, 80.0).desired, 12, "red: 1.5 × 8");
    // Calm from here: red cools down in 60 s, the window holds what entered before calm.
    let d = r.ticks(290, 0.05, 80.0);
    assert_eq!(d.desired, 12, "within the window: {}", d.summary());
    let d = r.ticks(20, 0.05, 80.0);
    assert!(
        d.desired < 12,
        "window passed since the calm began (old: held till 360 s): {}",
        d.summary()
    );
}

#[test]
fn scale_up_is_immediate_but_step_limited() {
    let mut r = Run::new(policy_without_panic(), 4);
    let d = r.ticks(1, 0.05, 150.0); // needs 15
    assert_eq!(d.desired, 8, "4 + max(4, 100%) = 8: {}", d.summary());
    assert!(has(&d, "step_limited"));
    let d = r.ticks(14, 0.05, 150.0);
    assert_eq!(d.desired, 8, "still within the 15 s period");
    let d = r.ticks(1, 0.05, 150.0);
    assert_eq!(d.desired, 15);
}

#[test]
fn scale_down_waits_for_the_window_then_steps() {
    let mut r = Run::new(policy_without_panic(), 10);
    r.ticks(10, 0.05, 100.0);
    let d = r.ticks(299, 0.05, 30.0); // wants 3
    assert_eq!(
        d.desired,
        10,
        "held by the 5-minute window: {}",
        d.summary()
    );
    assert!(has(&d, "stabilized"));
    // t = 309..313: the 10 recommended at t = 9 leaves the window at t = 310.
    let d = r.ticks(5, 0.05, 30.0);
    assert_eq!(d.desired, 8, "then at most 2 per minute: {}", d.summary());
    let d = r.ticks(56, 0.05, 30.0); // up to t = 369
    assert_eq!(d.desired, 8);
    assert_eq!(r.ticks(2, 0.05, 30.0).desired, 6);
}

#[test]
fn tolerance_band_prevents_small_changes() {
    let mut r = Run::new(policy_without_panic(), 10);
    let d = r.ticks(400, 0.05, 108.0); // 8% over capacity: within 10%
    assert_eq!(d.desired, 10);
    assert!(has(&d, "within_tolerance"));
}

#[test]
fn missing_data_never_scales_down() {
    // KEDA's worst bug: an empty result read as 0 scaled everything to min at peak.
    let mut r = Run::new(policy_without_panic(), 10);
    r.ticks(10, 0.05, 100.0);
    for i in 0..700 {
        let obs = Observations {
            seasonal: Vec::new(),
            fast: None,
            readings: vec![
                (
                    P95Latency,
                    Reading::Value {
                        value: 0.05,
                        at_ms: r.now,
                    },
                ),
                (Connections, Reading::Missing),
            ],
            source_error: None,
            targets: None,
        };
        let d = r.tick(&obs);
        assert_eq!(d.desired, 10, "tick {i}: {}", d.summary());
        assert!(has(&d, "bad_data"));
    }
}

#[test]
fn one_missing_demand_signal_blocks_scale_down_even_when_another_says_low() {
    // The KEDA case proper: connections say 2 replicas, throughput is missing. The
    // missing vote is unknown, not zero, so no scale-down however long it lasts.
    let mut r = Run::new(policy_two_demands(), 10);
    for _ in 0..700 {
        let obs = Observations {
            seasonal: Vec::new(),
            fast: None,
            readings: vec![
                (
                    P95Latency,
                    Reading::Value {
                        value: 0.05,
                        at_ms: r.now,
                    },
                ),
                (
                    ErrorRate,
                    Reading::Value {
                        value: 0.0,
                        at_ms: r.now,
                    },
                ),
                (
                    Connections,
                    Reading::Value {
                        value: 20.0,
                        at_ms: r.now,
                    },
                ),
                (Throughput, Reading::Missing),
            ],
            source_error: None,
            targets: None,
        };
        let d = r.tick(&obs);
        assert_eq!(d.desired, 10, "{}", d.summary());
    }
    // With both good and low, the same policy does scale down.
    let d = {
        let mut last = None;
        for _ in 0..400 {
            let obs = Observations::values(
                r.now,
                &[
                    (P95Latency, 0.05),
                    (ErrorRate, 0.0),
                    (Connections, 20.0),
                    (Throughput, 150.0),
                ],
            );
            last = Some(r.tick(&obs));
        }
        last.unwrap()
    };
    assert!(d.desired < 10, "{}", d.summary());
}

#[test]
fn freeze_blocks_scale_up_too() {
    let mut p = policy_two_demands();
    p.jidoka.on_bad_data = crate::policy::OnBadData::Freeze;
    let mut r = Run::new(p, 4);
    let obs = Observations {
        seasonal: Vec::new(),
        fast: None,
        readings: vec![
            (
                P95Latency,
                Reading::Value {
                    value: 0.05,
                    at_ms: r.now,
                },
            ),
            (
                ErrorRate,
                Reading::Value {
                    value: 0.0,
                    at_ms: r.now,
                },
            ),
            (
                Connections,
                Reading::Value {
                    value: 150.0,
                    at_ms: r.now,
                },
            ),
            (
                Throughput,
                Reading::Value {
                    value: f64::NEG_INFINITY,
                    at_ms: r.now,
                },
            ),
        ],
        source_error: None,
        targets: None,
    };
    let d = r.tick(&obs);
    assert_eq!(d.desired, 4, "{}", d.summary());
    assert!(has(&d, "held_for_bad_data"));
}

#[test]
fn no_good_signal_at_all_counts_as_a_failure() {
    let mut r = Run::new(policy_without_panic(), 10);
    let empty = Observations {
        seasonal: Vec::new(),
        fast: None,
        readings: vec![
            (P95Latency, Reading::Missing),
            (Connections, Reading::Missing),
            (ErrorRate, Reading::Missing),
        ],
        source_error: None,
        targets: None,
    };
    r.tick(&empty);
    r.tick(&empty);
    let d = r.tick(&empty);
    assert!(d.stopped, "{}", d.summary());
    assert!(
        d.summary().contains("no signal has good data"),
        "{}",
        d.summary()
    );
    // Missing data does not resume the line; good data does.
    assert!(r.tick(&empty).stopped);
    assert!(!r.ticks(1, 0.05, 100.0).stopped);
}

#[test]
fn an_outage_does_not_count_toward_for_or_cooldown() {
    let mut p = policy_without_panic();
    p.jidoka.stop_after_failures = 1;
    let mut r = Run::new(p, 10);
    let down = Observations {
        seasonal: Vec::new(),
        fast: None,
        readings: vec![],
        source_error: Some("down".into()),
        targets: None,
    };
    // One tick above yellow, 60 s of outage, one tick above: not 30 s observed above.
    r.ticks(1, 0.2, 100.0);
    for _ in 0..60 {
        r.tick(&down);
    }
    assert_eq!(
        r.ticks(1, 0.2, 100.0).tier,
        Tier::Green,
        "the outage is not time above the threshold"
    );
}

#[test]
fn panic_blocks_scale_down_even_with_a_zero_window() {
    let mut p = policy();
    p.behavior.scale_down.stabilization = std::time::Duration::ZERO;
    p.behavior.scale_down.policies = vec![StepPolicy {
        kind: StepKind::Replicas(100),
        period: Duration::from_secs(60),
    }];
    let mut r = Run::new(p, 4);
    assert!(r.ticks(1, 0.05, 200.0).panic);
    let d = r.ticks(30, 0.05, 10.0);
    assert!(
        d.panic && d.desired == 20,
        "no scale-down in the stable window: {}",
        d.summary()
    );
    let d = r.ticks(40, 0.05, 10.0);
    assert!(
        !d.panic && d.desired < 20,
        "and down after it: {}",
        d.summary()
    );
}

#[test]
fn emergency_and_panic_scale_ups_pass_the_flap_guard() {
    let mut p = policy();
    p.behavior.scale_down.stabilization = std::time::Duration::ZERO;
    p.behavior.scale_down.policies = vec![StepPolicy {
        kind: StepKind::Replicas(100),
        period: Duration::from_secs(60),
    }];
    p.behavior.scale_up.policies = vec![StepPolicy {
        kind: StepKind::Replicas(100),
        period: Duration::from_secs(15),
    }];
    let mut r = Run::new(p, 10);
    // Use up the two reversals: down, up, down. The last goes from 9 to 3 at once (no
    // window here) while panic's window still holds the demand for 9: before scale-downs
    // cleared it, panic jumped straight back (3 → 7, a third reversal).
    r.ticks(20, 0.05, 50.0);
    r.ticks(20, 0.05, 90.0);
    r.ticks(20, 0.05, 30.0);
    assert_eq!(r.state.reversals_ms.len(), 2, "{:?}", r.state);
    let before = r.replicas;
    // An ordinary scale-up would be a third reversal: held.
    let d = r.ticks(1, 0.05, before as f64 * 10.0 * 1.5);
    assert!(has(&d, "flap_guard"), "{}", d.summary());
    // Panic (load averaged over the 6 s window ≥ 2× ready capacity) passes.
    let d = r.ticks(6, 0.05, before as f64 * 10.0 * 3.0);
    assert!(d.panic, "{}", d.summary());
    assert!(d.desired > before, "{}", d.summary());
}

#[test]
fn percent_only_step_limit_can_leave_zero() {
    let mut p = policy_without_panic();
    p.services[0].min_replicas = 0;
    p.behavior
        .scale_up
        .policies
        .retain(|x| matches!(x.kind, StepKind::Percent(_)));
    let mut r = Run::new(p, 0);
    assert!(r.ticks(1, 0.05, 100.0).desired >= 1);
}

#[test]
fn state_with_no_ready_replicas_still_serialises() {
    let p = policy();
    let mut st = CoreState::default();
    let obs = Observations::values(0, &[(P95Latency, 0.05), (Connections, 100.0)]);
    let reps = Replicas {
        current: 2,
        ready: 0,
        update: UpdatePhase::None,
        placement: Default::default(),
    };
    decide_in_place(&p, &p.services[0], &obs, reps, &mut st, 0);
    let json = serde_json::to_string(&st).unwrap();
    let back: CoreState = serde_json::from_str(&json).expect("round trip");
    assert_eq!(back, st);
}

#[test]
fn stale_and_nan_readings_are_bad_data() {
    let p = policy();
    let obs = Observations {
        seasonal: Vec::new(),
        fast: None,
        readings: vec![
            (
                P95Latency,
                Reading::Value {
                    value: f64::NAN,
                    at_ms: 100_000,
                },
            ),
            (
                Connections,
                Reading::Value {
                    value: 1.0,
                    at_ms: 0,
                },
            ),
            (
                ErrorRate,
                Reading::Value {
                    value: f64::INFINITY,
                    at_ms: 100_000,
                },
            ),
        ],
        source_error: None,
        targets: None,
    };
    let q = jidoka::classify(&p, &obs, 100_000);
    assert_eq!(q[P95Latency.index()], Some(Quality::NotFinite));
    assert_eq!(q[ErrorRate.index()], Some(Quality::NotFinite));
    assert!(matches!(
        q[Connections.index()],
        Some(Quality::Stale { .. })
    ));
    let mut st = CoreState::default();
    let d = decide_in_place(
        &p,
        &p.services[0],
        &obs,
        Replicas::steady(10),
        &mut st,
        100_000,
    );
    assert_eq!(
        d.desired,
        10,
        "1 connection but stale: no scale-down. {}",
        d.summary()
    );
}

#[test]
fn consecutive_failures_stop_the_line_and_good_data_resumes_it() {
    let mut r = Run::new(policy_without_panic(), 10);
    r.ticks(5, 0.3, 100.0);
    let down = Observations {
        seasonal: Vec::new(),
        fast: None,
        readings: vec![],
        source_error: Some("connection refused".into()),
        targets: None,
    };
    assert!(!r.tick(&down).stopped);
    assert!(!r.tick(&down).stopped);
    let d = r.tick(&down);
    assert!(d.stopped, "third failure stops the line");
    assert!(has(&d, "stopped"));
    assert_eq!(d.desired, 10);
    for _ in 0..100 {
        let d = r.tick(&down);
        assert!(d.stopped && d.desired == 10);
    }
    let d = r.ticks(1, 0.05, 100.0);
    assert!(!d.stopped);
    assert!(has(&d, "resumed"), "{}", d.summary());
}

#[test]
fn stopped_line_keeps_the_tier_shedding() {
    let mut r = Run::new(policy(), 10);
    assert_eq!(r.ticks(1, 0.9, 100.0).shed_admit, Some(0.8));
    let down = Observations {
        seasonal: Vec::new(),
        fast: None,
        readings: vec![],
        source_error: Some("timeout".into()),
        targets: None,
    };
    for _ in 0..5 {
        r.tick(&down);
    }
    let d = r.tick(&down);
    assert!(d.stopped);
    assert_eq!(d.tier, Tier::Emergency);
    assert_eq!(d.shed_admit, Some(0.8), "when_stopped: keep (the default)");
}

#[test]
fn flap_guard_caps_direction_changes() {
    let mut p = policy_without_panic();
    p.behavior.scale_down.stabilization = std::time::Duration::ZERO;
    p.behavior.scale_down.policies = vec![StepPolicy {
        kind: StepKind::Replicas(100),
        period: Duration::from_secs(60),
    }];
    let mut r = Run::new(p, 10);
    let mut changes = 0;
    let mut prev = 10;
    // Demand alternates between 5 and 15 replicas' worth each minute.
    for m in 0..10 {
        let conns = if m % 2 == 0 { 50.0 } else { 150.0 };
        let d = r.ticks(60, 0.05, conns);
        if d.desired != prev {
            changes += 1;
        }
        prev = d.desired;
    }
    assert!(
        r.state.reversals_ms.len() <= 2,
        "{:?}",
        r.state.reversals_ms
    );
    assert!(changes < 10, "the guard held some changes");
}

#[test]
fn panic_jumps_at_once_and_blocks_scale_down() {
    let mut r = Run::new(policy(), 4);
    // 4 ready replicas × 10 = 40; 200 connections is 5× capacity.
    let d = r.ticks(1, 0.05, 200.0);
    assert!(d.panic, "{}", d.summary());
    assert_eq!(d.desired, 20, "past the step limit of 8, to 4 × 5 = 20");
    // The reading itself drove it: the reason names nothing else.
    assert!(d.reasons.iter().any(|r| matches!(
        r,
        Reason::Panic {
            driven_by: None,
            ..
        }
    )));
    // Demand collapses: no scale-down until the stable window (60 s) passes.
    let d = r.ticks(59, 0.05, 10.0);
    assert!(d.panic && d.desired == 20, "{}", d.summary());
    assert!(has(&d, "panic_hold"));
    let d = r.ticks(2, 0.05, 10.0);
    assert!(!d.panic, "{}", d.summary());
}

/// Ticks without a demand reading (the connections missing, the rest good, so the line
/// does not stop) after a panic decide nothing. Before, the last reading stood in for
/// the window, past its end too, and its ratio was multiplied by the replicas the jump
/// had added: 4 → 20 → 100 on bad data.
#[test]
fn panic_is_not_decided_again_on_ticks_without_a_reading() {
    let mut p = policy();
    p.services[0].max_replicas = 100;
    let mut r = Run::new(p, 4);
    let d = r.ticks(1, 0.05, 200.0);
    assert!(d.panic && d.desired == 20, "{}", d.summary());
    for _ in 0..30 {
        let o = Observations::values(r.now, &[(P95Latency, 0.05), (ErrorRate, 0.0)]);
        let d = r.tick(&o);
        assert!(d.desired <= 20, "{}", d.summary());
        assert!(
            !d.reasons.iter().any(|x| matches!(x, Reason::Panic { .. })),
            "{}",
            d.summary()
        );
    }
}

#[test]
fn rolling_update_holds_replicas() {
    let p = policy();
    let mut st = CoreState::default();
    // 60 connections on 4 replicas of 10: 150% of capacity, short of panic (200%).
    let obs = Observations::values(0, &[(P95Latency, 0.05), (Connections, 60.0)]);
    let reps = Replicas {
        current: 4,
        ready: 4,
        update: UpdatePhase::Progressing,
        placement: Default::default(),
    };
    let d = decide_in_place(&p, &p.services[0], &obs, reps, &mut st, 0);
    assert_eq!(d.desired, 4, "{}", d.summary());
    assert!(has(&d, "rolling_update"));
}

/// Before: any update state (paused included) held the replicas and skipped the tier
/// floor and panic, so a paused update froze scaling forever, emergencies included.
#[test]
fn a_paused_update_does_not_hold_and_a_progressing_one_lets_emergency_through() {
    let p = policy();
    let obs = |now| Observations::values(now, &[(P95Latency, 0.05), (Connections, 150.0)]);
    for phase in [UpdatePhase::Paused, UpdatePhase::Overdue] {
        let mut st = CoreState::default();
        let reps = Replicas {
            current: 4,
            ready: 4,
            update: phase,
            placement: Default::default(),
        };
        let d = decide_in_place(&p, &p.services[0], &obs(0), reps, &mut st, 0);
        assert!(d.desired > 4, "{phase:?}: {}", d.summary());
        assert!(has(&d, "update_not_progressing"));
    }
    // Emergency while an update progresses: the floor (max) still applies.
    let mut st = CoreState::default();
    let reps = Replicas {
        current: 4,
        ready: 4,
        update: UpdatePhase::Progressing,
        placement: Default::default(),
    };
    let mut d = None;
    for i in 0..30 {
        let now = i * S;
        let o = Observations::values(now, &[(P95Latency, 2.0), (Connections, 40.0)]);
        d = Some(decide_in_place(&p, &p.services[0], &o, reps, &mut st, now));
    }
    let d = d.unwrap();
    assert_eq!(d.tier, Tier::Emergency, "{}", d.summary());
    assert_eq!(d.desired, 20, "{}", d.summary());
}

/// Before: partial targets were not seen at all; sums over the reporting half looked
/// like half the demand and scaled down.
#[test]
fn partial_targets_block_scale_down_but_not_scale_up() {
    let p = policy_without_panic();
    let mut st = CoreState::default();
    let reps = Replicas::steady(10);
    let mut d = None;
    for i in 0..400 {
        let now = i * S;
        let mut o = Observations::values(
            now,
            &[(P95Latency, 0.05), (ErrorRate, 0.0), (Connections, 50.0)],
        );
        o.targets = Some(5);
        d = Some(decide_in_place(&p, &p.services[0], &o, reps, &mut st, now));
    }
    let d = d.unwrap();
    assert_eq!(d.desired, 10, "{}", d.summary());
    assert!(has(&d, "partial_targets"));
    // All ten report: the same demand scales down.
    let mut o = Observations::values(
        401 * S,
        &[(P95Latency, 0.05), (ErrorRate, 0.0), (Connections, 50.0)],
    );
    o.targets = Some(10);
    let d = decide_in_place(&p, &p.services[0], &o, reps, &mut st, 401 * S);
    assert!(d.desired < 10, "{}", d.summary());
    // Partial, but more demand: scale-up goes on.
    let mut o = Observations::values(
        402 * S,
        &[(P95Latency, 0.05), (ErrorRate, 0.0), (Connections, 400.0)],
    );
    o.targets = Some(5);
    let d = decide_in_place(
        &p,
        &p.services[0],
        &o,
        Replicas::steady(10),
        &mut st,
        402 * S,
    );
    assert!(d.desired > 10, "{}", d.summary());
}

/// Before: the source kept the first of several series per service and decided on it (a
/// fake Prometheus answering two series per service made `andon run --dry-run` decide
/// 6 → 4); now the source reads them as `Ambiguous`, and this is what the core makes of it.
#[test]
fn several_series_are_bad_data() {
    let p = policy_without_panic();
    let mut st = CoreState::default();
    let mut d = None;
    for i in 0..400 {
        let now = i * S;
        let mut o = Observations::values(now, &[(P95Latency, 0.05), (ErrorRate, 0.0)]);
        o.readings
            .push((Connections, Reading::Ambiguous { series: 2 }));
        d = Some(decide_in_place(
            &p,
            &p.services[0],
            &o,
            Replicas::steady(10),
            &mut st,
            now,
        ));
    }
    let d = d.unwrap();
    assert_eq!(d.desired, 10, "{}", d.summary());
    assert!(d
        .signals
        .iter()
        .any(|(k, q)| *k == Connections && q.label() == "several series"));
}

#[test]
fn bounds_clamp_an_out_of_range_service() {
    let mut r = Run::new(policy_without_panic(), 30);
    let d = r.ticks(1, 0.05, 300.0);
    assert_eq!(d.desired, 20, "{}", d.summary());
    let mut r = Run::new(policy_without_panic(), 0);
    assert_eq!(r.ticks(1, 0.05, 0.0).desired, 2);
}

#[test]
fn state_survives_a_restart_through_json() {
    // Two controllers: one runs straight through; the other is serialised and restored
    // mid-way (as after a SIGKILL with state in a service label). They must agree.
    let mut a = Run::new(policy_without_panic(), 10);
    let mut b = Run::new(policy_without_panic(), 10);
    let load = |t: usize| if t < 100 { 100.0 } else { 30.0 };
    for t in 0..400 {
        if t == 150 {
            let json = serde_json::to_string(&b.state).unwrap();
            assert!(json.len() < 2048, "state stays small: {} bytes", json.len());
            b.state = serde_json::from_str(&json).unwrap();
        }
        let (oa, ob) = (a.good(0.05, load(t)), b.good(0.05, load(t)));
        assert_eq!(a.tick(&oa).desired, b.tick(&ob).desired, "tick {t}");
    }
}

// ---- properties ----

#[derive(Debug, Clone)]
enum Obs {
    Good(f64, f64),
    Missing,
    Nan,
    NegInf,
    /// Connections good (and possibly low), throughput missing.
    HalfMissing(f64),
    /// A sample from long ago (older than stale_after).
    Stale(f64),
    Down,
}

fn obs_strategy() -> impl Strategy<Value = Obs> {
    prop_oneof![
        6 => (0.0f64..1.0, 0.0f64..400.0).prop_map(|(p, c)| Obs::Good(p, c)),
        1 => Just(Obs::Missing),
        1 => Just(Obs::Nan),
        1 => Just(Obs::NegInf),
        1 => (0.0f64..400.0).prop_map(Obs::HalfMissing),
        1 => (0.0f64..400.0).prop_map(Obs::Stale),
        1 => Just(Obs::Down),
    ]
}

fn to_observations(o: &Obs, now: u64) -> Observations {
    match o {
        Obs::Good(p, c) => Observations::values(
            now,
            &[
                (P95Latency, *p),
                (ErrorRate, 0.0),
                (Connections, *c),
                (Throughput, *c * 10.0),
            ],
        ),
        Obs::HalfMissing(c) => Observations {
            seasonal: Vec::new(),
            fast: None,
            readings: vec![
                (
                    P95Latency,
                    Reading::Value {
                        value: 0.05,
                        at_ms: now,
                    },
                ),
                (
                    ErrorRate,
                    Reading::Value {
                        value: 0.0,
                        at_ms: now,
                    },
                ),
                (
                    Connections,
                    Reading::Value {
                        value: *c,
                        at_ms: now,
                    },
                ),
                (Throughput, Reading::Missing),
            ],
            source_error: None,
            targets: None,
        },
        Obs::NegInf => Observations::values(
            now,
            &[
                (P95Latency, 0.05),
                (ErrorRate, 0.0),
                (Connections, f64::NEG_INFINITY),
                (Throughput, 0.0),
            ],
        ),
        Obs::Stale(c) => Observations {
            seasonal: Vec::new(),
            fast: None,
            readings: vec![
                (
                    P95Latency,
                    Reading::Value {
                        value: 0.05,
                        at_ms: now,
                    },
                ),
                (
                    ErrorRate,
                    Reading::Value {
                        value: 0.0,
                        at_ms: now,
                    },
                ),
                (
                    Connections,
                    Reading::Value {
                        value: *c,
                        at_ms: now.saturating_sub(120 * S),
                    },
                ),
                (
                    Throughput,
                    Reading::Value {
                        value: *c * 10.0,
                        at_ms: now.saturating_sub(120 * S),
                    },
                ),
            ],
            source_error: None,
            targets: None,
        },
        Obs::Missing => Observations {
            seasonal: Vec::new(),
            fast: None,
            readings: vec![
                (P95Latency, Reading::Missing),
                (Connections, Reading::Missing),
            ],
            source_error: None,
            targets: None,
        },
        Obs::Nan => Observations::values(
            now,
            &[
                (P95Latency, f64::NAN),
                (ErrorRate, 0.0),
                (Connections, f64::NAN),
            ],
        ),
        Obs::Down => Observations {
            seasonal: Vec::new(),
            fast: None,
            readings: vec![],
            source_error: Some("down".into()),
            targets: None,
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn desired_always_within_bounds(
        seq in prop::collection::vec((obs_strategy(), 0u32..40, 0u32..40, any::<bool>()), 1..200),
    ) {
        // Whatever the service reports (out of range, not ready, mid-update), and
        // whatever the data, the decision lies within [min, max].
        let p = policy();
        let mut st = CoreState::default();
        for (i, (o, current, ready, updating)) in seq.iter().enumerate() {
            let now = i as u64 * S;
            let update = if *updating { UpdatePhase::Progressing } else { UpdatePhase::None };
            let reps = Replicas { current: *current, ready: *ready, update, placement: Default::default() };
            let d = decide_in_place(&p, &p.services[0], &to_observations(o, now), reps, &mut st, now);
            prop_assert!((2..=20).contains(&d.desired), "{} out of [2, 20]: {}", d.desired, d.summary());
        }
    }

    #[test]
    fn no_scale_down_on_bad_data(seq in prop::collection::vec(obs_strategy(), 1..200), start in 2u32..=20, two in any::<bool>()) {
        // With two demand signals, a bad tick may leave one of them good and low.
        let mut r = Run::new(if two { policy_two_demands() } else { policy() }, start);
        for o in &seq {
            let before = r.replicas;
            let obs = to_observations(o, r.now);
            let d = r.tick(&obs);
            // HalfMissing is bad only where throughput is a signal of the policy.
            let bad = match o {
                Obs::Good(..) => false,
                Obs::HalfMissing(_) => two,
                _ => true,
            };
            if bad {
                prop_assert!(d.desired >= before, "{:?}: {} → {}: {}", o, before, d.desired, d.summary());
            }
        }
    }

    #[test]
    fn step_limits_hold(seq in prop::collection::vec((0.0f64..0.14, 0.0f64..400.0), 1..300), start in 2u32..=20) {
        // Below every tier threshold (p95 < 150 ms) and without panic, only windows and steps shape the
        // path: within any 15 s at most max(+4, +100%) up; within any 60 s at most -2 down.
        let mut r = Run::new(policy_without_panic(), start);
        let mut path = vec![(0u64, start)];
        for (p95, c) in &seq {
            let obs = r.good(*p95, *c);
            let now = r.now;
            let d = r.tick(&obs);
            path.push((now, d.desired));
        }
        // HPA's semantics: the limit is relative to the replicas at the start of each
        // period (changes in both directions within it undone), not to any earlier point.
        let at = |t: i64| path.iter().rev().find(|(x, _)| *x as i64 <= t).map_or(start, |p| p.1);
        for w in path.windows(2) {
            let ((_, r0), (t1, r1)) = (w[0], w[1]);
            if r1 == r0 {
                continue;
            }
            let q = at(t1 as i64 - 15 * S as i64);
            prop_assert!(r1 <= (q + 4).max(q * 2), "{q} → {r1} within 15 s (at {t1} ms)");
            let q = at(t1 as i64 - 60 * S as i64);
            prop_assert!(r1 + 2 >= q, "{q} → {r1} within 60 s (at {t1} ms)");
        }
    }

    #[test]
    fn noise_within_tolerance_stays_within_the_flap_guard(noise in prop::collection::vec(-0.09f64..0.09, 1..1200)) {
        // Demand for exactly 10 replicas, with noise inside the 10% band.
        let mut r = Run::new(policy_without_panic(), 10);
        let mut dirs: Vec<(u64, i8)> = vec![];
        let mut prev = 10u32;
        for n in &noise {
            let obs = r.good(0.05, 100.0 * (1.0 + n));
            let now = r.now;
            let d = r.tick(&obs);
            if d.desired != prev {
                dirs.push((now, if d.desired > prev { 1 } else { -1 }));
            }
            prev = d.desired;
        }
        prop_assert!(dirs.is_empty(), "noise within tolerance caused changes: {:?}", dirs);
    }

    #[test]
    fn direction_changes_stay_within_the_flap_guard(seq in prop::collection::vec(0.0f64..300.0, 1..900)) {
        // Any demand, 0 s windows: the guard alone must cap reversals per 10 minutes.
        let mut p = policy_without_panic();
        p.behavior.scale_down.stabilization = std::time::Duration::ZERO;
        let mut r = Run::new(p, 10);
        let mut reversals: Vec<u64> = vec![];
        let mut last_dir = 0i8;
        let mut prev = 10u32;
        for c in &seq {
            let obs = r.good(0.05, *c);
            let now = r.now;
            let d = r.tick(&obs);
            if d.desired != prev {
                let dir = if d.desired > prev { 1 } else { -1 };
                if last_dir != 0 && dir != last_dir {
                    reversals.push(now);
                }
                last_dir = dir;
            }
            prev = d.desired;
        }
        for (i, t) in reversals.iter().enumerate() {
            let in_window = reversals[i..].iter().filter(|u| **u < t + 600 * S).count();
            prop_assert!(in_window <= 2, "{} reversals within 10 min from {}", in_window, t);
        }
    }
}

/// The fast panic signal stands beside its slow self: a step it sees at full height
/// panics at once; a fast reading that is bad (NaN here) is ignored, never trusted.
#[test]
fn panic_weighs_the_fast_signal_and_ignores_it_when_bad() {
    let mut p = policy_two_demands();
    p.behavior.panic = policy().behavior.panic;
    p.panic_fast = Some(crate::policy::Signal {
        kind: Throughput,
        query: "rate(rps{service=\"$service\"}[30s])".into(),
        unit: p
            .signals
            .iter()
            .find(|s| s.kind == Throughput)
            .unwrap()
            .unit,
        combine: None,
    });
    let run = |fast: f64| {
        let mut r = Run::new(p.clone(), 4);
        let mut obs = Observations::values(
            r.now,
            &[
                (P95Latency, 0.05),
                (ErrorRate, 0.0),
                (Connections, 10.0),
                (Throughput, 400.0),
            ],
        );
        obs.fast = Some(Reading::Value {
            value: fast,
            at_ms: r.now,
        });
        r.tick(&obs)
    };
    let d = run(1200.0);
    assert!(
        d.panic,
        "fast 1200/s on 4 × 100/s: 300% ≥ 200%: {}",
        d.summary()
    );
    assert_eq!(d.desired, 12, "{}", d.summary());
    // The reason says the fast signal drove it (an operator sees why the jump came now).
    let panic = d.reasons.iter().find(|r| r.code() == "panic").unwrap();
    assert!(
        matches!(
            panic,
            Reason::Panic {
                driven_by: Some("fast signal"),
                ..
            }
        ),
        "{panic:?}"
    );
    assert!(
        panic.to_string().contains("from the fast signal"),
        "{panic}"
    );
    // Connections at 250% decide; the fast signal lifts throughput from 100% to 120% and
    // decides nothing, so it is not named.
    let mut r = Run::new(p.clone(), 4);
    let mut obs = Observations::values(
        r.now,
        &[
            (P95Latency, 0.05),
            (ErrorRate, 0.0),
            (Connections, 100.0),
            (Throughput, 400.0),
        ],
    );
    obs.fast = Some(Reading::Value {
        value: 480.0,
        at_ms: r.now,
    });
    let d = r.tick(&obs);
    assert!(d.panic, "{}", d.summary());
    assert!(
        d.reasons.iter().any(|r| matches!(
            r,
            Reason::Panic {
                driven_by: None,
                ..
            }
        )),
        "{}",
        d.summary()
    );
    let d = run(f64::NAN);
    assert!(!d.panic, "{}", d.summary());
    assert_eq!(
        d.desired,
        4,
        "the slow 400/s alone: 4 replicas: {}",
        d.summary()
    );
}

/// Issue 12: replicas that found no node are not capacity. With 8 asked and 2 pending,
/// demand for 12 holds at 8 (not 12: the queue would only lengthen), and the tier goes
/// to red (shedding, since the replicas cannot come); a scale-down is not held.
#[test]
fn unplaceable_tasks_stop_the_scale_up_and_raise_the_tier() {
    let p = policy_without_panic();
    let obs = Observations::values(
        0,
        &[(P95Latency, 0.05), (ErrorRate, 0.0), (Connections, 120.0)],
    );
    let reps = |unplaceable| Replicas {
        current: 8,
        ready: 8 - unplaceable,
        update: UpdatePhase::None,
        placement: placement::Placement {
            unplaceable,
            ..Default::default()
        },
    };
    let mut st = CoreState::default();
    let d = decide_in_place(&p, &p.services[0], &obs, reps(2), &mut st, 0);
    assert_eq!(d.desired, 8, "{}", d.summary());
    assert_eq!(d.tier, Tier::Red, "{}", d.summary());
    let codes: Vec<&str> = d.reasons.iter().map(|r| r.code()).collect();
    assert!(
        codes.contains(&"unplaceable") && codes.contains(&"cannot_place"),
        "{codes:?}"
    );
    // Placed: it scales up again, and the tier is the signals' own.
    let mut st = CoreState::default();
    let d = decide_in_place(&p, &p.services[0], &obs, reps(0), &mut st, 0);
    assert_eq!((d.desired, d.tier), (12, Tier::Green), "{}", d.summary());
    // Demand the nodes hold (50 connections: 5 replicas of the 6 that fit): no tier.
    let calm = Observations::values(
        0,
        &[(P95Latency, 0.05), (ErrorRate, 0.0), (Connections, 50.0)],
    );
    let mut st = CoreState::default();
    let d = decide_in_place(&p, &p.services[0], &calm, reps(2), &mut st, 0);
    assert_eq!(d.tier, Tier::Green, "{}", d.summary());
}

/// Issue 12: the red for want of nodes has hysteresis. 6 fit (10 connections each at
/// target): entered past the tolerance band (70 > 66), kept while demand is past what
/// fits (64), left once it fits (58); never entered from calm at 64.
#[test]
fn the_red_for_want_of_nodes_is_left_only_once_demand_fits() {
    let p = policy_without_panic();
    let reps = Replicas {
        current: 8,
        ready: 6,
        update: UpdatePhase::None,
        placement: placement::Placement {
            unplaceable: 2,
            ..Default::default()
        },
    };
    let at = |conns: f64, t: u64| {
        Observations::values(
            t * S,
            &[(P95Latency, 0.05), (ErrorRate, 0.0), (Connections, conns)],
        )
    };
    let mut st = CoreState::default();
    let tiers: Vec<Tier> = [70.0, 64.0, 58.0, 64.0]
        .iter()
        .enumerate()
        .map(|(i, c)| {
            decide_in_place(
                &p,
                &p.services[0],
                &at(*c, i as u64),
                reps,
                &mut st,
                i as u64 * S,
            )
            .tier
        })
        .collect();
    assert_eq!(tiers, [Tier::Red, Tier::Red, Tier::Green, Tier::Green]);
}

/// Issue 12: a policy's `max_replicas_per_node` (3) on 2 serving nodes: demand for 12
/// stops at 6, shown red (the nodes cannot hold the demand); a third node lifts it.
#[test]
fn replicas_per_node_bound_the_scale_up_by_the_serving_nodes() {
    let mut p = policy_without_panic();
    p.services[0].max_replicas_per_node = Some(3);
    let obs = Observations::values(
        0,
        &[(P95Latency, 0.05), (ErrorRate, 0.0), (Connections, 120.0)],
    );
    let reps = |nodes| Replicas {
        current: 4,
        ready: 4,
        update: UpdatePhase::None,
        placement: placement::Placement {
            serving_nodes: Some(nodes),
            ..Default::default()
        },
    };
    let mut st = CoreState::default();
    let d = decide_in_place(&p, &p.services[0], &obs, reps(2), &mut st, 0);
    assert_eq!((d.desired, d.tier), (6, Tier::Red), "{}", d.summary());
    let codes: Vec<&str> = d.reasons.iter().map(|r| r.code()).collect();
    assert!(
        codes.contains(&"nodes_hold") && codes.contains(&"cannot_place"),
        "{codes:?}"
    );
    // 12 running on 3 nodes of 4, one of them paused: the bound counts 2 nodes (8), but
    // the 12 serve, and demand for 12 is no red.
    p.services[0].max_replicas_per_node = Some(4);
    let twelve = Replicas {
        current: 12,
        ready: 12,
        ..reps(2)
    };
    let mut st = CoreState::default();
    let d = decide_in_place(&p, &p.services[0], &obs, twelve, &mut st, 0);
    assert_eq!((d.desired, d.tier), (12, Tier::Green), "{}", d.summary());
    p.services[0].max_replicas_per_node = Some(3);
    let mut st = CoreState::default();
    let d = decide_in_place(&p, &p.services[0], &obs, reps(4), &mut st, 0);
    // 12 fit: only the step limit (4 → 8) stands in the way.
    assert_eq!((d.desired, d.tier), (8, Tier::Green), "{}", d.summary());
    assert!(
        d.reasons.iter().all(|r| r.code() != "nodes_hold"),
        "{}",
        d.summary()
    );
}

/// Issue 12: while Swarm moves tasks (a node lost or drained), their metrics are out of
/// the sums: demand reads low, and that is no reason to scale down.
#[test]
fn moving_tasks_and_a_lost_node_hold_the_scale_down() {
    let mut p = policy_without_panic();
    p.behavior.scale_down.stabilization = Duration::ZERO;
    let low = Observations::values(
        100 * S,
        &[(P95Latency, 0.05), (ErrorRate, 0.0), (Connections, 30.0)],
    );
    let reps = |placement| Replicas {
        current: 6,
        ready: 6,
        update: UpdatePhase::None,
        placement,
    };
    let moving = placement::Placement {
        moving: 2,
        ..Default::default()
    };
    let lost = |at| placement::Placement {
        node_lost_ms: Some(at),
        ..Default::default()
    };
    for (what, pl, held) in [
        ("tasks moving", moving, true),
        ("a node lost 10 s ago", lost(90 * S), true),
        ("a node lost 2 min ago", lost(0), false),
        ("nothing", placement::Placement::default(), false),
    ] {
        let mut st = CoreState::default();
        let d = decide_in_place(&p, &p.services[0], &low, reps(pl), &mut st, 100 * S);
        assert_eq!(d.desired == 6, held, "{what}: {}", d.summary());
    }
}
