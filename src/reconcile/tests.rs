//! The reconcile step on its own: first sight, failed writes, observe-only runs, updates.

use super::*;
use crate::core::Observations;
use crate::policy::{validate, SignalKind::*, Tier};

const POLICY: &str = r#"
services: [{name: svc, min_replicas: 2, max_replicas: 20}]
signals:
  p95_latency: {query: 'p95{service="$service"}', unit: seconds}
  connections: {query: 'conns{service="$service"}', unit: count}
capacity: {per_replica: {connections: 10}, target_utilization: 1.0}
tiers:
  yellow: {enter: {p95_latency: 150ms}, for: 30s, cooldown: 60s}
  red: {enter: {p95_latency: 250ms}, for: 10s, cooldown: 60s, action: {floor: 1.5x, shed: {admit: 1.0}}}
  emergency: {enter: {p95_latency: 500ms}, for: 0s, cooldown: 60s, action: {floor: max, shed: {admit: 0.8}}}
behavior:
  scale_up: {stabilization: 0s, max_step: {replicas: 4, percent: 100, period: 15s}}
  scale_down: {stabilization: 5m, max_step: {replicas: 2, period: 1m}}
"#;

const S: u64 = 1000;

fn policy() -> Policy {
    validate::from_str("test.yaml", POLICY).expect("valid")
}

fn obs(now: u64, p95: f64, conns: f64) -> Observations {
    Observations::values(now, &[(P95Latency, p95), (Connections, conns)])
}

fn view(replicas: u32) -> ServiceView {
    ServiceView {
        replicas,
        running: replicas,
        ..Default::default()
    }
}

/// Before: a controller with no state label at 20 replicas and load for 10 scaled down on
/// its first tick (the windows started empty). HPA seeds them with the current replicas.
#[test]
fn cold_start_waits_out_the_scale_down_window() {
    let p = policy();
    let svc = &p.services[0];
    let mut r = Reconciler::new();
    let mut v = view(20);
    let first = r.step(&p, svc, &obs(0, 0.05, 100.0), &v, 0, true);
    assert_eq!(first.restored, Some(Restored::Seeded));
    assert!(first
        .decision
        .reasons
        .iter()
        .any(|x| x.code() == "window_seeded"));
    let mut down_at = None;
    for i in 0..400 {
        let now = i * S;
        let plan = r.step(&p, svc, &obs(now, 0.05, 100.0), &v, now, true);
        if plan.decision.desired < 20 && down_at.is_none() {
            down_at = Some(now);
        }
        if let Some(n) = plan.write.replicas {
            v.replicas = n;
            v.running = n;
        }
        r.committed(true);
    }
    let down_at = down_at.expect("it scales down after the window");
    assert!(
        down_at > 300 * S,
        "scaled down at {down_at} ms, inside the 5 m window"
    );
}

#[test]
fn a_restart_restores_from_the_written_label() {
    let p = policy();
    let svc = &p.services[0];
    let mut a = Reconciler::new();
    let mut v = view(2);
    // Demand for 20 from 2: the step limit allows 2 → 6 per 15 s; the plan carries the state.
    let plan = a.step(&p, svc, &obs(0, 0.05, 200.0), &v, 0, true);
    assert_eq!(plan.write.replicas, Some(6));
    let json = plan.write.labels[STATE_LABEL]
        .clone()
        .expect("state written with a scale");
    v.labels.insert(STATE_LABEL.into(), json);
    v.replicas = 6;
    v.running = 6;
    a.committed(true);
    // A new controller (restart) reads the label: it knows the step was taken 5 s ago,
    // so the period still starts at 2 and holds it at 6; a cold one would go to 12.
    let mut b = Reconciler::new();
    let plan = b.step(&p, svc, &obs(5 * S, 0.05, 200.0), &v, 5 * S, true);
    assert_eq!(plan.restored, Some(Restored::Label));
    assert_eq!(plan.decision.desired, 6, "{}", plan.decision.summary());
    let mut cold = Reconciler::new();
    v.labels.clear();
    let plan = cold.step(&p, svc, &obs(5 * S, 0.05, 200.0), &v, 5 * S, true);
    assert_eq!(plan.decision.desired, 12, "{}", plan.decision.summary());
}

/// A controller whose writes keep failing still escalates tiers and asks for shedding;
/// the steps it could not take are not counted by step limits or the flap guard.
#[test]
fn failed_writes_forget_the_step_and_keep_the_tiers() {
    let p = policy();
    let svc = &p.services[0];
    let mut r = Reconciler::new();
    let v = view(4);
    let mut last = None;
    for i in 0..30 {
        let now = i * S;
        let plan = r.step(&p, svc, &obs(now, 0.3, 40.0), &v, now, true);
        r.committed(false);
        last = Some(plan);
    }
    let plan = last.unwrap();
    assert_eq!(plan.decision.tier, Tier::Red, "{}", plan.decision.summary());
    // Red sheds from its admit; the loop waits a window before cutting further.
    assert_eq!(plan.admission.admit, Some(1.0));
    assert!(r.state().events.is_empty(), "no step was taken");
    assert_eq!(r.state().last_direction, 0);
    // The red floor wants 6 (1.5 × 4) and nothing caps it: no phantom step in the period.
    assert_eq!(plan.write.replicas, Some(6), "{}", plan.decision.summary());
}

/// Before: `--no-control` kept every step it never took, so the step limit believed the
/// service had been scaled and logged "scale 8 → 13" then "capped to 8" over and over.
#[test]
fn observe_only_runs_record_no_step_and_log_a_wish_once() {
    let p = policy();
    let svc = &p.services[0];
    let mut r = Reconciler::new();
    let v = view(8);
    let mut changed = 0;
    for i in 0..60 {
        let now = i * S;
        let plan = r.step(&p, svc, &obs(now, 0.05, 130.0), &v, now, false);
        assert_eq!(
            plan.decision.desired,
            13,
            "tick {i}: {}",
            plan.decision.summary()
        );
        assert!(
            !plan
                .decision
                .reasons
                .iter()
                .any(|x| x.code() == "step_limited"),
            "tick {i}: {}",
            plan.decision.summary()
        );
        changed += plan.changed as u32;
    }
    assert_eq!(changed, 1, "the same wish is reported once");
    assert!(r.state().events.is_empty());
}

#[test]
fn a_progressing_update_holds_only_for_update_hold() {
    let p = policy();
    let svc = &p.services[0];
    let mut r = Reconciler::new();
    let mut v = view(4);
    v.update = UpdateState::Progressing;
    v.update_started_ms = Some(0);
    let plan = r.step(&p, svc, &obs(S, 0.05, 100.0), &v, S, true);
    assert_eq!(plan.decision.desired, 4);
    let late = p.behavior.update_hold.as_millis() as u64 + 2 * S;
    let plan = r.step(&p, svc, &obs(late, 0.05, 100.0), &v, late, true);
    assert!(plan.decision.desired > 4, "{}", plan.decision.summary());
    v.update = UpdateState::Paused;
    let mut r = Reconciler::new();
    let plan = r.step(&p, svc, &obs(S, 0.05, 100.0), &v, S, true);
    assert!(plan.decision.desired > 4, "{}", plan.decision.summary());
}

#[test]
fn nothing_to_write_when_the_service_matches() {
    let p = policy();
    let svc = &p.services[0];
    let mut r = Reconciler::new();
    let mut v = view(10);
    let plan = r.step(&p, svc, &obs(0, 0.05, 100.0), &v, 0, true);
    assert!(plan.write.labels.contains_key(STATE_LABEL));
    plan.write.apply_labels(&mut v.labels);
    r.committed(true);
    let plan = r.step(&p, svc, &obs(S, 0.05, 100.0), &v, S, true);
    assert_eq!(plan.write, Desired::default(), "{:?}", plan.write);
}

/// Which of the scale-down window's recommendations were the sessions forecaster's is not
/// in the state label: a controller restarted between a forecast and its refutation keeps
/// what the window held (it cannot tell the forecast's from the readings'), where one
/// that kept running withdraws it. Without the restore's copy the restarted one had a
/// window without the sessions forecaster holding only what it saw since the restart.
#[test]
fn a_restart_withdraws_no_forecast_it_cannot_attribute() {
    let p = validate::from_str(
        "test.yaml",
        r#"
services: [{name: svc, min_replicas: 2, max_replicas: 50}]
signals:
  throughput: {query: 'rate(rps{service="$service"}[1m])', unit: per_second}
  connections: {query: 'conns{service="$service"}', unit: count}
capacity: {per_replica: {throughput: 100, connections: 50}, target_utilization: 1.0}
tiers:
  yellow: {enter: {throughput: 1e6}, for: 30s, cooldown: 60s}
  red: {enter: {throughput: 2e6}, for: 10s, cooldown: 60s}
  emergency: {enter: {throughput: 3e6}, for: 0s, cooldown: 60s}
behavior:
  scale_up: {stabilization: 0s, max_step: {replicas: 100, period: 15s}}
  scale_down: {stabilization: 5m, max_step: {percent: 100, period: 15s}}
  predict: {trend: off, seasonal: off, sessions: on}
"#,
    )
    .expect("valid");
    let svc = &p.services[0];
    // 20 clients at 20/s each, then 100 that send 6/s each: the forecast asks for 20
    // replicas at the step, and is refuted 75 s after it.
    let reading = |t: u64| {
        let (c, v) = if t < 120 {
            (20.0, 400.0)
        } else {
            (100.0, 600.0)
        };
        Observations::values(t * S, &[(Throughput, v), (Connections, c)])
    };
    let run = |restart_at: Option<u64>| {
        let mut r = Reconciler::new();
        let mut v = view(4);
        let mut refuted = false;
        for t in (0..=240).step_by(5) {
            if restart_at == Some(t) {
                r = Reconciler::new();
            }
            let plan = r.step(&p, svc, &reading(t), &v, t * S, true);
            refuted |= plan
                .decision
                .reasons
                .iter()
                .any(|x| x.code() == "forecast_refuted");
            if let Some(json) = plan.write.labels.get(STATE_LABEL).cloned().flatten() {
                v.labels.insert(STATE_LABEL.into(), json);
            }
            if let Some(n) = plan.write.replicas {
                (v.replicas, v.running) = (n, n);
            }
            r.committed(true);
        }
        (v.replicas, refuted)
    };
    assert_eq!(run(None), (6, true), "withdrawn once refuted");
    assert_eq!(run(Some(150)), (20, true), "kept across a restart");
}
